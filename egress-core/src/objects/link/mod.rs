//! Links: find, create the macvlan (directly inside the router namespace), change it, set it
//! up or down, delete it, and have the kernel announce its addresses; the [`ExternalLink`]
//! object (the macvlan a router creates, or the link it adopts).

use std::collections::BTreeMap;

use futures::TryFutureExt;
use netlink_packet_route::{
    link::{
        AfSpecInet, AfSpecInet6, AfSpecUnspec, InfoData, InfoKind, InfoMacVlan, LinkAttribute,
        LinkExtentMask, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
    },
    AddressFamily,
};
use rtnetlink::{Handle, LinkGetRequest, LinkMacVlan, LinkMessageBuilder, LinkUnspec};

mod change;

pub(crate) use self::change::{Announce, DeleteLink, Pending, SetLinkDown};
use super::{Current, Inverse, KernelObject, Step};
use crate::{
    drift::Drift,
    error::{is_gone, Error, Result},
    kernel::netlink::{dump, errno},
    kernel::procfs::{ConfEntry, Family, Knob, SysctlKey},
    spec::{format_mac, Macvlan, MacvlanMode},
};

/// What the library needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub up: bool,
    pub kind: Option<String>,
    pub macvlan_mode: Option<MacvlanMode>,
    pub mac: Vec<u8>,
    pub group: u32,
    /// The link's own sysctls, as the link dump reports them (`IFLA_AF_SPEC`): none of a
    /// family the link does not have.
    pub conf: LinkConf,
}

/// A link's values of `net/ipv4/conf/<link>/…` and `net/ipv6/conf/<link>/…` for each
/// [`Knob`] of each family the link has: the same numbers as the files under `/proc/sys`, read
/// without opening them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LinkConf(BTreeMap<(Family, Knob), i64>);

impl LinkConf {
    /// `(key, value)` of the sysctls of link `name` (a name the kernel gave) this holds.
    pub(crate) fn sysctls(&self, name: &str) -> Vec<(SysctlKey, i64)> {
        let Some(entry) = ConfEntry::link(name) else {
            return Vec::new();
        };
        self.0
            .iter()
            .map(|(&(family, knob), v)| (SysctlKey::knob(family, entry.clone(), knob), *v))
            .collect()
    }

    /// The values of a link the kernel just made, with both families (what the dry run
    /// assumes).
    pub(crate) fn new_link() -> LinkConf {
        let mut conf = LinkConf::default();
        for family in [Family::V4, Family::V6] {
            conf.take(family, |knob| {
                knob.exists_in(family).then_some(knob.row().new_link)
            });
        }
        conf
    }

    /// Each knob's value in `family`, as `get` gives it.
    fn take(&mut self, family: Family, get: impl Fn(Knob) -> Option<i64>) {
        for knob in Knob::ALL {
            if let Some(v) = get(*knob) {
                self.0.insert((family, *knob), v);
            }
        }
    }

    fn read(&mut self, specs: &[AfSpecUnspec]) {
        for spec in specs {
            match spec {
                AfSpecUnspec::Inet(inet) => {
                    for a in inet {
                        if let AfSpecInet::DevConf(c) = a {
                            self.take(Family::V4, |k| Some(k.row().ipv4?(c).into()));
                        }
                    }
                }
                AfSpecUnspec::Inet6(inet6) => {
                    for a in inet6 {
                        if let AfSpecInet6::DevConf(c) = a {
                            self.take(Family::V6, |k| Some(k.row().ipv6?(c).into()));
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

impl Link {
    fn from_message(m: &LinkMessage) -> Self {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mtu: 0,
            up: m.header.flags.contains(LinkFlags::Up),
            kind: None,
            macvlan_mode: None,
            mac: Vec::new(),
            group: 0,
            conf: LinkConf::default(),
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Mtu(v) => link.mtu = *v,
                LinkAttribute::Address(mac) => link.mac = mac.clone(),
                LinkAttribute::Group(g) => link.group = *g,
                LinkAttribute::AfSpecUnspec(specs) => link.conf.read(specs),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => link.kind = Some(k.to_string()),
                            LinkInfo::Data(InfoData::MacVlan(d)) => {
                                for x in d {
                                    if let InfoMacVlan::Mode(mode) = x {
                                        link.macvlan_mode = from_kernel_mode(*mode);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// The group number that marks a link created for router `name`.
///
/// `IFLA_IFALIAS` is ignored in a create message but `IFLA_GROUP` is applied, so the group is
/// the one marker that exists from the link's first instant: a crash right after the create
/// still leaves a link that teardown-by-name recognises as its own.
pub fn group_marker(name: &str) -> u32 {
    // FNV-1a, folded to 16 bits, under a fixed prefix ("eg").
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    0x6567_0000 | ((h >> 16) ^ (h & 0xffff))
}

fn to_kernel_mode(mode: MacvlanMode) -> MacVlanMode {
    match mode {
        MacvlanMode::Bridge => MacVlanMode::Bridge,
        MacvlanMode::Private => MacVlanMode::Private,
        MacvlanMode::Vepa => MacVlanMode::Vepa,
        MacvlanMode::Passthru => MacVlanMode::Passthrough,
    }
}

fn from_kernel_mode(mode: MacVlanMode) -> Option<MacvlanMode> {
    match mode {
        MacVlanMode::Bridge => Some(MacvlanMode::Bridge),
        MacVlanMode::Private => Some(MacvlanMode::Private),
        MacVlanMode::Vepa => Some(MacvlanMode::Vepa),
        MacVlanMode::Passthrough => Some(MacvlanMode::Passthru),
        _ => None,
    }
}

/// A link request whose answer leaves out the packet counters (`RTEXT_FILTER_SKIP_STATS`):
/// nothing here reads them, and they are most of a link message (about 1 kB with IPv6).
fn without_stats(req: LinkGetRequest) -> LinkGetRequest {
    req.set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::SkipStats])
}

/// `ip link show dev NAME`; `None` when there is no such link.
pub(crate) async fn get(h: &Handle, name: &str) -> Result<Option<Link>> {
    let mut req = without_stats(h.link().get().match_name(name.to_string())).execute();
    match futures::TryStreamExt::try_next(&mut req).await {
        Ok(Some(m)) => Ok(Some(Link::from_message(&m))),
        Ok(None) => Ok(None),
        Err(e) if matches!(errno(&e), libc::ENODEV | libc::ENOENT) => Ok(None),
        Err(e) => Err(Error::kernel(format!("ip link show dev {name}"), errno(&e))),
    }
}

/// `ip link show`: every link of the namespace.
pub(crate) async fn list(h: &Handle) -> Result<Vec<Link>> {
    let msgs = dump("ip link show", || without_stats(h.link().get()).execute()).await?;
    Ok(msgs.iter().map(Link::from_message).collect())
}

/// The router namespace a macvlan is created in: a socket of it, its fd, and its name for
/// messages.
#[derive(Clone, Copy)]
pub(crate) struct RouterNs<'a> {
    /// A route netlink socket inside it.
    pub rt: &'a Handle,
    /// Its namespace file.
    pub fd: i32,
    /// How the caller named it.
    pub label: &'a str,
}

/// `ip link add NAME link PARENT netns NS type macvlan mode MODE group G up [mtu] [address]`,
/// sent on `parent_ns`, a socket of the parent's namespace: one message creates the macvlan,
/// up, directly inside the router namespace, so nothing can be left in the parent's namespace.
/// Returns the created link.
///
/// The kernel does not answer a create with the link it made, and asking (`ip link show`) is
/// a round trip of its own, so the message fixes what the router needs to know: the MAC (the
/// spec's, or a random locally administered one, as the kernel would pick) and the ifindex
/// (`free_index`, one the router namespace does not use). A kernel that cannot take that
/// index (EEXIST: the index is taken, or an older kernel looked it up in the parent's
/// namespace) gets the message again without it, and the link is then read back on
/// `router_ns`; so is one in passthru mode, which takes its parent's MAC whatever it is given.
pub(crate) async fn create_macvlan(
    parent_ns: &Handle,
    router: &RouterNs<'_>,
    m: &Macvlan,
    parent: &Link,
    group: u32,
    free_index: Option<u32>,
) -> Result<Link> {
    let RouterNs {
        rt: router_ns,
        fd: router_ns_fd,
        label: netns,
    } = *router;
    let passthru = m.mode == MacvlanMode::Passthru;
    let mac = match (m.mac, passthru) {
        (Some(mac), _) => Some(mac),
        (None, false) => random_mac(),
        (None, true) => None,
    };
    let message = |index: Option<u32>| {
        let mut b = LinkMessageBuilder::<LinkMacVlan>::new(&m.name)
            .link(parent.index)
            .mode(to_kernel_mode(m.mode))
            .setns_by_fd(router_ns_fd)
            .link_group(group)
            .up();
        if let Some(mtu) = m.mtu {
            b = b.mtu(mtu);
        }
        if let Some(mac) = mac {
            b = b.address(mac.to_vec());
        }
        let mut msg = b.build();
        msg.header.index = index.unwrap_or(0);
        msg
    };
    let create = |index: Option<u32>| {
        parent_ns
            .link()
            .add(message(index))
            .execute()
            .map_err(|e| match errno(&e) {
                libc::EEXIST => Error::AlreadyExists {
                    object: "link",
                    value: m.name.clone(),
                    netns: netns.to_string(),
                    hint: None,
                },
                n => Error::kernel(create_macvlan_command(m, netns), n),
            })
    };
    let chosen = match free_index {
        Some(index) => match create(Some(index)).await {
            Ok(()) => Some(index),
            Err(Error::AlreadyExists { .. }) => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    let (Some(index), Some(mac), false) = (chosen, mac, passthru) else {
        if chosen.is_none() {
            create(None).await?;
        }
        return get(router_ns, &m.name)
            .await?
            .ok_or_else(|| Error::kernel(format!("ip link show dev {}", m.name), libc::ENODEV));
    };
    Ok(Link {
        index,
        name: m.name.clone(),
        mtu: m.mtu.unwrap_or(parent.mtu),
        up: true,
        kind: Some(InfoKind::MacVlan.to_string()),
        macvlan_mode: Some(m.mode),
        mac: mac.to_vec(),
        group,
        conf: LinkConf::default(),
    })
}

/// A random locally administered unicast MAC (what the kernel gives a macvlan created
/// without one); `None` when the kernel has no random bytes to give.
pub(crate) fn random_mac() -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    // SAFETY: getrandom(2) writes at most `mac.len()` bytes into `mac`.
    let n = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    (n == mac.len() as isize).then(|| {
        mac[0] = (mac[0] & 0xfe) | 0x02;
        mac
    })
}

/// `ip link add NAME link PARENT netns NETNS type macvlan mode MODE [mtu N] [address MAC] up`.
pub(crate) fn create_macvlan_command(m: &Macvlan, netns: &str) -> String {
    let mut s = format!(
        "ip link add {} link {} netns {netns} type macvlan mode {}",
        m.name,
        m.parent,
        m.mode.as_str()
    );
    if let Some(mtu) = m.mtu {
        s += &format!(" mtu {mtu}");
    }
    if let Some(mac) = m.mac {
        s += &format!(" address {}", format_mac(&mac));
    }
    s + " up"
}

/// `ip link set dev NAME up|down`.
pub(crate) async fn set_up(h: &Handle, index: u32, name: &str, up: bool) -> Result<()> {
    let b = LinkUnspec::new_with_index(index);
    let msg = if up { b.up() } else { b.down() }.build();
    h.link().set(msg).execute().await.map_err(|e| {
        Error::kernel(
            format!("ip link set dev {name} {}", if up { "up" } else { "down" }),
            errno(&e),
        )
    })
}

/// `ip link del dev NAME`; Ok(false) when it was already gone.
pub(crate) async fn delete(h: &Handle, index: u32, name: &str) -> Result<bool> {
    match h.link().del(index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if is_gone(errno(&e)) => Ok(false),
        Err(e) => Err(Error::kernel(format!("ip link del dev {name}"), errno(&e))),
    }
}

/// Whether `link` is a macvlan.
pub(crate) fn is_macvlan(link: &Link) -> bool {
    link.kind.as_deref() == Some(&InfoKind::MacVlan.to_string())
}

/// `ip link set dev NAME [mtu N] [address MAC] [type macvlan mode MODE]`: puts the created
/// macvlan's properties back in place, in one message.
pub(crate) async fn set_props(
    h: &Handle,
    index: u32,
    name: &str,
    mtu: Option<u32>,
    mac: Option<[u8; 6]>,
    mode: Option<MacvlanMode>,
) -> Result<()> {
    let mut b =
        LinkMessageBuilder::<LinkMacVlan>::new_with_info_kind(InfoKind::MacVlan).index(index);
    if let Some(mode) = mode {
        b = b.mode(to_kernel_mode(mode));
    }
    if let Some(mtu) = mtu {
        b = b.mtu(mtu);
    }
    if let Some(mac) = mac {
        b = b.address(mac.to_vec());
    }
    // RTM_NEWLINK on the existing link, as `ip link set … type macvlan` sends it: the kernel
    // applies IFLA_LINKINFO (the mode) only there, never in RTM_SETLINK.
    h.link()
        .change(b.build())
        .execute()
        .await
        .map_err(|e| Error::kernel(set_command(name, mtu, mac, mode), errno(&e)))
}

/// The command of [`set_props`].
pub(crate) fn set_command(
    name: &str,
    mtu: Option<u32>,
    mac: Option<[u8; 6]>,
    mode: Option<MacvlanMode>,
) -> String {
    let mut s = format!("ip link set dev {name}");
    if let Some(mtu) = mtu {
        s += &format!(" mtu {mtu}");
    }
    if let Some(mac) = mac {
        s += &format!(" address {}", format_mac(&mac));
    }
    if let Some(mode) = mode {
        s += &format!(" type macvlan mode {}", mode.as_str());
    }
    s
}

/// Has the kernel announce every address of link `index`: setting a link's MAC address (to
/// the one it has) raises `NETDEV_CHANGEADDR`, on which the kernel sends a gratuitous ARP for
/// each IPv4 address (with `arp_notify` on) and an unsolicited neighbour advertisement for
/// each IPv6 address (with `ndisc_notify` on). No packet socket is opened: closing one waits
/// for an RCU grace period (10-20 ms, at the exit of a short-lived process). It also flushes
/// the link's neighbour entries, which the next packet learns again.
pub(crate) async fn announce(h: &Handle, index: u32, name: &str, mac: &[u8]) -> Result<()> {
    let msg = LinkUnspec::new_with_index(index)
        .address(mac.to_vec())
        .build();
    h.link()
        .set(msg)
        .execute()
        .await
        .map_err(|e| Error::kernel(announce_command(name), errno(&e)))
}

/// `ip link set dev NAME address MAC`.
pub(crate) async fn set_mac(h: &Handle, index: u32, name: &str, mac: [u8; 6]) -> Result<()> {
    let msg = LinkUnspec::new_with_index(index)
        .address(mac.to_vec())
        .build();
    h.link().set(msg).execute().await.map_err(|e| {
        Error::kernel(
            format!("ip link set dev {name} address {}", format_mac(&mac)),
            errno(&e),
        )
    })
}

/// The command of [`announce`].
pub(crate) fn announce_command(name: &str) -> String {
    format!("ip link set dev {name} address <its own>")
}

/// Which link of the namespace an object is on: by name and, for the macvlan the router
/// creates, its ownership marker (a link of that name without the marker is not it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkRef {
    /// The link's name.
    pub name: String,
    /// The group marker of a created macvlan; `None` for a link the router only uses.
    pub marker: Option<u32>,
}

impl LinkRef {
    /// A link found by name only (the internal link, an adopted link).
    pub(crate) fn named(name: &str) -> LinkRef {
        LinkRef {
            name: name.to_string(),
            marker: None,
        }
    }

    /// The link in `now`, if it is there (with its marker, for a created one).
    pub(crate) fn find<'a>(&self, now: &'a Current) -> Option<&'a Link> {
        now.links.iter().find(|l| {
            l.name == self.name && self.marker.is_none_or(|m| l.group == m && is_macvlan(l))
        })
    }

    /// Whether the router creates this link.
    pub(crate) fn created(&self) -> bool {
        self.marker.is_some()
    }
}

/// The router's external link: the macvlan it creates (properties as the spec sets them, up),
/// or the link it adopts (up).
#[derive(Debug, Clone)]
pub(crate) struct ExternalLink {
    /// Which link.
    pub link: LinkRef,
    /// What to create; `None` for an adopted link.
    pub macvlan: Option<Macvlan>,
    /// The router namespace, as the spec names it (for the plan).
    pub netns: String,
}

impl KernelObject for ExternalLink {
    fn render(&self) -> String {
        match (&self.macvlan, self.link.marker) {
            (Some(m), Some(group)) => format!(
                "{} group {group:#x}",
                create_macvlan_command(m, &self.netns)
            ),
            _ => format!("ip link set dev {} up (adopted)", self.link.name),
        }
    }

    fn compare(&self, now: &Current, drift: &mut Vec<Drift>) {
        let name = &self.link.name;
        let Some(l) = self.link.find(now) else {
            drift.push(Drift::LinkMissing { link: name.clone() });
            return;
        };
        if !l.up {
            drift.push(Drift::LinkDown { link: name.clone() });
        }
        if let Some(m) = &self.macvlan {
            for (field, expected, actual) in changed(m, l) {
                drift.push(Drift::LinkChanged {
                    link: name.clone(),
                    field,
                    expected,
                    actual,
                });
            }
        }
    }

    fn repair(&self, now: &Current, steps: &mut Vec<Step>) -> Result<()> {
        let name = &self.link.name;
        match (self.link.find(now), &self.macvlan, self.link.marker) {
            (None, Some(m), Some(group)) => steps.push(Step::CreateMacvlan {
                macvlan: m.clone(),
                netns: self.netns.clone(),
                group,
            }),
            (None, _, _) => {
                return Err(Error::NotFound {
                    field: "external.adopt".into(),
                    object: "link",
                    value: name.clone(),
                    netns: now.netns.clone(),
                })
            }
            (Some(l), macvlan, _) => {
                if let Some(m) = macvlan {
                    let wrong = changed(m, l);
                    let is = |f: &str| wrong.iter().any(|(field, ..)| *field == f);
                    if !wrong.is_empty() {
                        steps.push(Step::SetLink {
                            link: name.clone(),
                            mtu: m.mtu.filter(|_| is("mtu")),
                            mac: m.mac.filter(|_| is("mac")),
                            mode: is("mode").then_some(m.mode),
                        });
                    }
                }
                if !l.up {
                    steps.push(Step::SetLinkUp { link: name.clone() });
                }
            }
        }
        Ok(())
    }

    /// The macvlan the router created deleted (with its addresses and the routes through
    /// it); an adopted link that was down set down again.
    fn remove(&self, now: &Current, inverse: &mut Inverse<'_>) {
        let record = inverse.record;
        match (self.link.created(), now.link(&self.link.name)) {
            (true, _) => {
                if let Some(l) = self.link.find(now).filter(|_| record.created) {
                    inverse.undo(Box::new(DeleteLink {
                        index: l.index,
                        name: l.name.clone(),
                    }));
                }
            }
            (false, Some(l)) if !record.created && !record.was_up => {
                inverse.undo(Box::new(SetLinkDown {
                    index: l.index,
                    name: l.name.clone(),
                }))
            }
            _ => {}
        }
    }
}

/// The properties of created macvlan `l` that differ from `m`: (field, expected, actual).
fn changed(m: &Macvlan, l: &Link) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    let actual_mode = l.macvlan_mode.map_or("?", MacvlanMode::as_str);
    if m.mode.as_str() != actual_mode {
        out.push(("mode", m.mode.as_str().to_string(), actual_mode.to_string()));
    }
    if let Some(mtu) = m.mtu.filter(|mtu| *mtu != l.mtu) {
        out.push(("mtu", mtu.to_string(), l.mtu.to_string()));
    }
    if let Some(mac) = m.mac.filter(|mac| mac[..] != l.mac[..]) {
        out.push(("mac", format_mac(&mac), format_mac(&l.mac)));
    }
    out
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::link::{Inet6DevConf, InetDevConf};

    use super::*;

    #[test]
    fn random_mac_is_unicast_and_locally_administered() {
        let macs: Vec<[u8; 6]> = (0..64)
            .map(|_| random_mac().expect("random bytes"))
            .collect();
        for mac in &macs {
            assert_eq!(mac[0] & 0x01, 0, "multicast bit set: {mac:02x?}");
            assert_eq!(mac[0] & 0x02, 0x02, "not locally administered: {mac:02x?}");
        }
        // Random, not one fixed address: 64 draws of 46 random bits do not all agree.
        assert!(macs.iter().any(|m| m != &macs[0]));
    }

    #[test]
    fn link_conf_names_the_sysctls_it_holds_and_only_those() {
        let mut v4 = InetDevConf::default();
        (v4.forwarding, v4.arp_notify) = (1, 1);
        let mut v6 = Inet6DevConf::default();
        (v6.forwarding, v6.ndisc_notify) = (0, 1);
        let mut conf = LinkConf::default();
        conf.read(&[AfSpecUnspec::Inet6(vec![AfSpecInet6::DevConf(v6)])]);
        let paths: Vec<(String, i64)> = conf
            .sysctls("eth0.100")
            .into_iter()
            .map(|(k, v)| (k.path(), v))
            .collect();
        // Every knob of the family, and no other family's.
        let v6_knobs: Vec<_> = Knob::ALL
            .iter()
            .filter(|k| k.exists_in(Family::V6))
            .collect();
        assert_eq!(paths.len(), v6_knobs.len());
        assert!(paths.contains(&("net/ipv6/conf/eth0.100/forwarding".to_string(), 0)));
        assert!(paths.contains(&("net/ipv6/conf/eth0.100/ndisc_notify".to_string(), 1)));
        conf.read(&[AfSpecUnspec::Inet(vec![AfSpecInet::DevConf(v4)])]);
        let keys = conf.sysctls("eth0.100");
        assert!(keys.contains(&("net/ipv4/conf/eth0.100/arp_notify".parse().unwrap(), 1)));
        assert!(keys.contains(&("net/ipv4/conf/eth0.100/forwarding".parse().unwrap(), 1)));
        assert!(LinkConf::default().sysctls("lo").is_empty());
        assert!(LinkConf::new_link().sysctls("not/a link").is_empty());
    }
}
