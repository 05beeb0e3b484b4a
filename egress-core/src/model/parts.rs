//! [`Parts`]: what a router is made of — its links, addresses, gateways, routes, ruleset and
//! crash record —, learnt from a spec ([`Parts::of`]) or read back from what the kernel proves
//! to be the router ([`Parts::read`]). Either way the same [`Desired`](super::Desired) is
//! built from it: the model has one shape, both ways.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netlink_packet_route::route::RouteType;

use crate::{
    kernel::procfs::{ConfEntry, Family, Knob, SysctlKey},
    objects::{
        addr,
        link::{group_marker, LinkRef},
        nat::NatRules,
        record::{Record, RecordSpec, Stores},
        role::Claim,
        route::{self, Route},
        Current,
    },
    spec::{Announce, External, Macvlan, RouterSpec, DEFAULT_ANNOUNCE_INTERVAL},
};

/// What a router is made of.
#[derive(Debug, Clone)]
pub(crate) struct Parts {
    /// Its name.
    pub name: String,
    /// Its namespace, as named (for the plan's text).
    pub netns: String,
    /// Its external link.
    pub external: LinkRef,
    /// The macvlan it creates, as the spec sets it (`None`: adopted, or read back — then the
    /// link is as the kernel has it).
    pub macvlan: Option<Macvlan>,
    /// Its internal link (`None`: read back without identity notes).
    pub internal: Option<String>,
    /// The egress addresses.
    pub sources: Vec<IpNetwork>,
    /// The gateways, IPv4 first.
    pub gateways: Vec<IpAddr>,
    /// Its other routes (a spec's kept routes through the internal link; read back, every
    /// route of ours in the main table that is not a gateway's): destination, next hop, link.
    pub routes: Vec<(IpNetwork, Option<IpAddr>, String)>,
    /// The stable MAC that moves with the egress IP, if any.
    pub stable_mac: Option<[u8; 6]>,
    /// The external link's own MAC, when set (by the spec, or kept by the identity notes).
    pub own_mac: Option<[u8; 6]>,
    /// The announcements after a claim of the egress identity.
    pub announce: Announce,
    /// The ruleset (`None`: read back, the table as the kernel holds it).
    pub rules: Option<NatRules>,
    /// What its crash record is made of.
    pub record: RecordSpec,
}

impl Parts {
    /// The parts of the router `spec` describes.
    pub(crate) fn of(spec: &RouterSpec) -> Parts {
        let (external, macvlan) = external(spec);
        let gateways: Vec<IpAddr> = spec
            .gateway4()
            .map(IpAddr::from)
            .into_iter()
            .chain(spec.gateway6().map(IpAddr::from))
            .collect();
        let record = record_spec(spec.name(), &external, &gateways, Some(Claim::of(spec)));
        Parts {
            name: spec.name().to_string(),
            netns: spec.netns().to_string(),
            own_mac: macvlan.as_ref().and_then(|m| m.mac),
            external,
            macvlan,
            internal: Some(spec.internal().to_string()),
            sources: spec.sources().to_vec(),
            gateways,
            routes: spec
                .kept_routes()
                .iter()
                .map(|k| (k.to, k.via, spec.internal().to_string()))
                .collect(),
            stable_mac: spec.stable_mac(),
            announce: spec.announcements(),
            rules: Some(nat_rules(spec)),
            record,
        }
    }

    /// Router `name` as the kernel proves it (its crash record proven, and what the record
    /// ties to it): the identity notes say what it claims (its addresses, gateways, stable
    /// MAC, announcements, internal link); what carries its markers adds to them (an address
    /// of ours on its link, a route of ours in the main table). `None` without a proven
    /// record: then nothing is the router's.
    pub(crate) fn read(now: &Current, name: &str) -> Option<(Parts, Record)> {
        let record = Stores::of(now, name).proven(now)?.clone();
        let claim = Claim::in_kernel(now, name)
            .map(|(c, _)| c)
            .filter(|c| c.link == record.link);
        let external = LinkRef {
            name: record.link.to_string(),
            marker: record.created.then(|| group_marker(name)),
        };
        let ext = now.link(record.link.as_str());
        let mut sources = claim
            .as_ref()
            .map(|c| c.sources.clone())
            .unwrap_or_default();
        for a in ext.iter().flat_map(|l| {
            now.addrs
                .iter()
                .filter(move |a| a.index == l.index && addr::marked(now, a, name))
        }) {
            if !sources.contains(&a.net) {
                sources.push(a.net);
            }
        }
        let ours = ours_in_main(now);
        let gateways = match &claim {
            Some(c) => c.gateways.clone(),
            None => gateways_of(&ours, ext.map(|l| l.index)),
        };
        let names = now.names();
        let routes = ours
            .iter()
            .filter(|r| !is_gateways(r, &gateways, ext.map(|l| l.index)))
            .map(|r| {
                let link = r
                    .oif
                    .and_then(|i| names.get(&i).cloned())
                    .unwrap_or_default();
                (r.dst, r.via, link)
            })
            .collect();
        let parts = Parts {
            name: name.to_string(),
            netns: now.netns.clone(),
            record: record_spec(name, &external, &gateways, claim.clone()),
            external,
            macvlan: None,
            internal: claim.as_ref().map(|c| c.internal.to_string()),
            sources,
            gateways,
            routes,
            stable_mac: claim.as_ref().and_then(|c| c.stable_mac),
            own_mac: claim.as_ref().and_then(|c| c.own_mac),
            // Without identity notes there is nothing to announce.
            announce: claim.as_ref().map_or(
                Announce {
                    count: 0,
                    interval: DEFAULT_ANNOUNCE_INTERVAL,
                },
                |c| c.announce,
            ),
            rules: None,
        };
        Some((parts, record))
    }

    /// The families the router uses (IPv4, IPv6): those of its gateways.
    pub(crate) fn families(&self) -> (bool, bool) {
        self.record.families
    }
}

/// The crash record of router `name` with external link `link` and these gateways.
fn record_spec(
    name: &str,
    link: &LinkRef,
    gateways: &[IpAddr],
    claim: Option<Claim>,
) -> RecordSpec {
    let families = (
        gateways.iter().any(IpAddr::is_ipv4),
        gateways.iter().any(IpAddr::is_ipv6),
    );
    RecordSpec {
        router: name.to_string(),
        link: link.clone(),
        families,
        link_sysctls: external_link_sysctls(&link.name, families),
        claim,
    }
}

/// Which routers set one of the external link's own sysctls.
#[derive(Debug, Clone, Copy)]
enum Whose {
    /// Those that use IPv4.
    Ipv4,
    /// Those that use IPv6.
    Ipv6,
    /// Every router.
    Any,
}

/// The external link's own sysctls a router sets, and their values: the one list of them. An
/// adopted link's values before are kept in the crash record and written back at teardown
/// (a created link's go with it).
const EXTERNAL_LINK_SYSCTLS: &[(Whose, Family, Knob, i64)] = &[
    // The kernel announces the link's addresses when it comes up or its MAC changes.
    (Whose::Ipv4, Family::V4, Knob::ArpNotify, 1),
    (Whose::Ipv6, Family::V6, Knob::NdiscNotify, 1),
    // No router advertisement gives the link an address or a route nobody planned (an
    // IPv4-only router's macvlan has IPv6, and does not forward it).
    (Whose::Any, Family::V6, Knob::AcceptRa, 0),
];

/// The sysctls of external link `link` a router that uses `families` (IPv4, IPv6) sets, with
/// their values ([`EXTERNAL_LINK_SYSCTLS`]); none for a name that is not a link name (a
/// spec's names are).
pub(crate) fn external_link_sysctls(link: &str, families: (bool, bool)) -> Vec<(SysctlKey, i64)> {
    let Some(entry) = ConfEntry::link(link) else {
        return Vec::new();
    };
    EXTERNAL_LINK_SYSCTLS
        .iter()
        .filter(|(whose, ..)| match whose {
            Whose::Ipv4 => families.0,
            Whose::Ipv6 => families.1,
            Whose::Any => true,
        })
        .map(|(_, family, knob, value)| (SysctlKey::knob(*family, entry.clone(), *knob), *value))
        .collect()
}

/// The routes of ours in the main table.
fn ours_in_main(now: &Current) -> Vec<&Route> {
    now.routes
        .iter()
        .filter(|r| r.is_ours() && r.table == route::main_table())
        .collect()
}

/// The gateways the routes of ours through link `ext` name (a default route's next hop, a
/// host route's destination), IPv4 first: what a router without identity notes is read back
/// with.
fn gateways_of(ours: &[&Route], ext: Option<u32>) -> Vec<IpAddr> {
    let mut gateways: Vec<IpAddr> = Vec::new();
    for r in ours
        .iter()
        .filter(|r| ext.is_some() && r.oif == ext && r.kind == RouteType::Unicast)
    {
        let gateway = match (r.dst.prefix(), r.via) {
            (0, Some(via)) => Some(via),
            (32, None) if r.dst.is_ipv4() => Some(r.dst.ip()),
            (128, None) if r.dst.is_ipv6() => Some(r.dst.ip()),
            _ => None,
        };
        if let Some(g) = gateway.filter(|g| !gateways.contains(g)) {
            gateways.push(g);
        }
    }
    gateways.sort_by_key(IpAddr::is_ipv6);
    gateways
}

/// Whether `r` is a gateway's route through link `ext`: its host route, or the default route
/// via it.
fn is_gateways(r: &Route, gateways: &[IpAddr], ext: Option<u32>) -> bool {
    ext.is_some()
        && r.oif == ext
        && gateways.iter().any(|g| {
            (r.dst.prefix() == 0 && r.via == Some(*g))
                || (r.via.is_none() && r.dst == IpNetwork::from(*g))
        })
}

/// The external link of `spec`: how to find it, and the macvlan to create, if any.
fn external(spec: &RouterSpec) -> (LinkRef, Option<Macvlan>) {
    match spec.external() {
        External::Macvlan(m) => (
            LinkRef {
                name: m.name().to_string(),
                marker: Some(group_marker(spec.name())),
            },
            Some(m.clone()),
        ),
        External::Adopt(name) => (LinkRef::named(name), None),
    }
}

/// The NAT ruleset of a spec.
pub(crate) fn nat_rules(spec: &RouterSpec) -> NatRules {
    NatRules {
        table: spec.table_name(),
        internal: spec.internal().to_string(),
        external: spec.external().link_name().to_string(),
        snat4: spec.snat4(),
        snat6: spec.snat6(),
        redirects: spec.redirects().to_vec(),
        local_ports: spec.local_ports().to_vec(),
        fallback4: spec.fallback4(),
        fallback6: spec.fallback6(),
    }
}
