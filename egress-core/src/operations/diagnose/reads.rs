//! What a diagnosis reads that the router's own model does not hold: the external link's
//! carrier and parent ([`LinkFacts`], [`find_parent`]), the kernel's neighbour entries, the
//! route to a destination, sysctls. Only reads.

use std::{
    collections::BTreeMap,
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
};

use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_route::{
    link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState},
    nsid::{NsidAttribute, NsidMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage},
    AddressFamily, RouteNetlinkMessage,
};
use rtnetlink::Handle;

use crate::{
    kernel::netns::NsHandle,
    spec::{format_mac, Netns},
};

/// What the external link's message says beyond what the router keeps of it: its carrier,
/// its operational state, and where its parent is.
#[derive(Debug, Clone)]
pub(super) struct LinkFacts {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    pub up: bool,
    pub carrier: bool,
    pub operstate: String,
    pub kind: Option<String>,
    /// The parent's ifindex (`IFLA_LINK`), in its own namespace.
    pub parent_index: Option<u32>,
    /// The parent namespace's id as the router's namespace knows it (`IFLA_LINK_NETNSID`);
    /// `None`: the parent is in the router's namespace.
    pub parent_nsid: Option<i32>,
}

impl LinkFacts {
    fn from_message(m: &LinkMessage) -> LinkFacts {
        let mut f = LinkFacts {
            name: String::new(),
            index: m.header.index,
            mac: [0; 6],
            up: m.header.flags.contains(LinkFlags::Up),
            carrier: m.header.flags.contains(LinkFlags::LowerUp),
            operstate: "unknown".into(),
            kind: None,
            parent_index: None,
            parent_nsid: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => f.name = n.clone(),
                LinkAttribute::Address(mac) if mac.len() == 6 => f.mac.copy_from_slice(mac),
                LinkAttribute::Carrier(c) => f.carrier = *c != 0,
                LinkAttribute::OperState(s) => f.operstate = operstate(*s),
                LinkAttribute::Link(i) => f.parent_index = Some(*i),
                LinkAttribute::LinkNetNsId(id) => f.parent_nsid = Some(*id),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            f.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        f
    }

    /// Whether the link sits on a parent link (macvlan, ipvlan, VLAN) whose frames are the
    /// same wire's.
    pub(super) fn has_parent(&self) -> bool {
        let kinds = [
            InfoKind::MacVlan.to_string(),
            InfoKind::MacVtap.to_string(),
            InfoKind::IpVlan.to_string(),
            InfoKind::Vlan.to_string(),
        ];
        self.parent_index.is_some() && self.kind.as_ref().is_some_and(|k| kinds.contains(k))
    }

    /// Its MAC as text.
    pub(super) fn mac_text(&self) -> String {
        format_mac(&self.mac)
    }
}

fn operstate(s: State) -> String {
    s.to_string().to_ascii_lowercase()
}

/// `ip link show dev NAME` (or by index), with what [`LinkFacts`] holds; `None` when there is
/// no such link.
pub(super) async fn link_facts(
    h: &Handle,
    name: Option<&str>,
    index: Option<u32>,
) -> Option<LinkFacts> {
    let mut req = h.link().get();
    if let Some(n) = name {
        req = req.match_name(n.to_string());
    }
    if let Some(i) = index {
        req = req.match_index(i);
    }
    let mut replies = req.execute();
    match replies.try_next().await {
        Ok(Some(m)) => Some(LinkFacts::from_message(&m)),
        _ => None,
    }
}

/// The parent link of the external link, as seen from its own namespace.
#[derive(Debug)]
pub(super) struct Parent {
    /// Its namespace.
    pub ns: NsHandle,
    /// What its link message says.
    pub link: LinkFacts,
}

impl Parent {
    /// Where it is, for messages: `namespace /run/netns/node`, or `the caller's namespace`.
    pub(super) fn place(&self) -> String {
        match self.ns.label() {
            "(current)" => "the caller's namespace".into(),
            label => format!("namespace {label}"),
        }
    }
}

/// Where the parent is to be found.
#[derive(Debug)]
pub(super) enum ParentHint {
    /// The spec's macvlan names it: its namespace (opened as the caller means it) and name.
    Spec { ns: NsHandle, name: String },
    /// Search for the namespace whose id the external link names, among the caller's own
    /// namespace, `/proc/1/ns/net` and the namespaces under `/run/netns`.
    Search { caller: NsHandle },
}

/// The parent of `link` (a macvlan's lower link), or why it is not known.
pub(super) async fn find_parent(
    router: &NsHandle,
    rt: &Handle,
    link: &LinkFacts,
    hint: ParentHint,
) -> std::result::Result<Parent, String> {
    match hint {
        ParentHint::Spec { ns, name } => {
            let h = ns.route_connection().map_err(|e| e.to_string())?;
            match link_facts(&h, Some(&name), None).await {
                Some(link) => Ok(Parent { ns, link }),
                None => Err(format!(
                    "no link {name} in namespace {ns} (the spec's parent)"
                )),
            }
        }
        ParentHint::Search { caller } => {
            if !link.has_parent() {
                return Err(format!(
                    "{} is a {} link, not one with a parent (macvlan, ipvlan, VLAN)",
                    link.name,
                    link.kind.as_deref().unwrap_or("plain")
                ));
            }
            let index = link.parent_index.expect("has_parent");
            let Some(nsid) = link.parent_nsid else {
                return match link_facts(rt, None, Some(index)).await {
                    Some(l) => Ok(Parent {
                        ns: router.clone(),
                        link: l,
                    }),
                    None => Err(format!(
                        "no link with index {index} in the router's namespace"
                    )),
                };
            };
            for ns in candidates(caller) {
                if ns.same_as(router) || nsid_of(rt, &ns).await != Some(nsid) {
                    continue;
                }
                let h = ns.route_connection().map_err(|e| e.to_string())?;
                return match link_facts(&h, None, Some(index)).await {
                    Some(l) => Ok(Parent { ns, link: l }),
                    None => Err(format!("no link with index {index} in namespace {ns}")),
                };
            }
            Err(format!(
                "its parent is link {index} of the namespace with id {nsid} in the router's \
                 namespace, which is neither this process's, nor pid 1's, nor one under \
                 /run/netns: diagnose with the router's spec, which names it"
            ))
        }
    }
}

/// The namespaces the parent is looked for in: the caller's own, pid 1's, every one under
/// `/run/netns`.
fn candidates(caller: NsHandle) -> impl Iterator<Item = NsHandle> {
    let named: Vec<PathBuf> = fs::read_dir("/run/netns")
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    let fixed = [Path::new("/proc/1/ns/net").to_path_buf()];
    std::iter::once(caller).chain(
        fixed
            .into_iter()
            .chain(named)
            .filter_map(|p| NsHandle::open(&Netns::Path(p), "netns").ok()),
    )
}

/// The id the namespace of `rt` gives namespace `ns` (`ip netns list-id`), if any; asking
/// never assigns one.
async fn nsid_of(rt: &Handle, ns: &NsHandle) -> Option<i32> {
    let mut msg = NsidMessage::default();
    msg.attributes.push(NsidAttribute::Fd(ns.raw_fd() as u32));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
    req.header.flags = NLM_F_REQUEST;
    let mut replies = rt.clone().request(req).ok()?;
    while let Some(m) = replies.next().await {
        if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(r)) = m.payload {
            return r.attributes.iter().find_map(|a| match a {
                NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                _ => None,
            });
        }
    }
    None
}

/// The kernel's neighbour entry for an address on one link: its state (`reachable`, `stale`,
/// `failed`, `incomplete`, …) and MAC (`ip neigh show ADDR dev LINK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Neighbour {
    pub state: String,
    pub mac: Option<String>,
}

/// The neighbour entries of link `index`, by address.
pub(super) async fn neighbours(h: &Handle, index: u32) -> BTreeMap<IpAddr, Neighbour> {
    let mut out = BTreeMap::new();
    let mut dump = h.neighbours().get().execute();
    while let Ok(Some(m)) = dump.try_next().await {
        if m.header.ifindex != index {
            continue;
        }
        let mut ip = None;
        let mut mac = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => {
                    ip = Some((*v).into())
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => {
                    ip = Some((*v).into())
                }
                NeighbourAttribute::LinkLayerAddress(l) => mac = Some(format_mac(l)),
                _ => {}
            }
        }
        if let Some(ip) = ip {
            out.insert(
                ip,
                Neighbour {
                    state: neighbour_state(m.header.state),
                    mac,
                },
            );
        }
    }
    out
}

fn neighbour_state(s: NeighbourState) -> String {
    match s {
        NeighbourState::Incomplete => "incomplete".into(),
        NeighbourState::Reachable => "reachable".into(),
        NeighbourState::Stale => "stale".into(),
        NeighbourState::Delay => "delay".into(),
        NeighbourState::Probe => "probe".into(),
        NeighbourState::Failed => "failed".into(),
        NeighbourState::Noarp => "noarp".into(),
        NeighbourState::Permanent => "permanent".into(),
        NeighbourState::None => "none".into(),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

/// The route the kernel picks to an address: its output link's index and its next hop; or the
/// errno it refuses with (ENETUNREACH: no route).
pub(super) type RouteSeen = Result<(Option<u32>, Option<IpAddr>), i32>;

/// The route the kernel picks to `to` from `from` (`ip route get TO from FROM`).
pub(super) async fn route_to(h: &Handle, to: IpAddr, from: Option<IpAddr>) -> RouteSeen {
    let mut m = RouteMessage::default();
    m.header.address_family = if to.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.destination_prefix_length = if to.is_ipv4() { 32 } else { 128 };
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(to)));
    if let Some(from) = from {
        m.header.source_prefix_length = m.header.destination_prefix_length;
        m.attributes
            .push(RouteAttribute::Source(RouteAddress::from(from)));
    }
    let mut req = h.route().get(m).execute();
    match req.try_next().await {
        Ok(Some(r)) => {
            let mut oif = None;
            let mut via = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Gateway(RouteAddress::Inet(v)) => via = Some((*v).into()),
                    RouteAttribute::Gateway(RouteAddress::Inet6(v)) => via = Some((*v).into()),
                    _ => {}
                }
            }
            Ok((oif, via))
        }
        Ok(None) => Err(libc::ENETUNREACH),
        Err(e) => Err(crate::kernel::netlink::errno(&e)),
    }
}
