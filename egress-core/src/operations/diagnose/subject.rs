//! What a diagnosis looks at ([`Subject`]): the router as its spec describes it, or, by name,
//! as the kernel holds it — its crash record names the external link, its addresses carry the
//! address marker, its routes through that link name the gateways, its ruleset holds the
//! redirects and the fallback.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netlink_packet_route::route::RouteType;

use crate::{
    drift::Drift,
    model::desired::Desired,
    objects::{
        addr,
        link::{group_marker, ExternalLink, LinkRef},
        record::{Journal, RecordSpec, Stores},
        role::role_in,
        route::{DefaultRoute, OurRoute},
        sysctl::{self, Forwarding, Sysctl},
        Current, KernelObject,
    },
    role::Role,
    spec::{table_name, External, Protocol, Redirect, RouterSpec},
    Stats,
};

/// The router a diagnosis looks at.
#[derive(Debug)]
pub(super) struct Subject {
    /// Its name.
    pub name: String,
    /// Its spec, when the caller gave one.
    pub spec: Option<RouterSpec>,
    /// Whether the namespace holds the router at all.
    pub exists: bool,
    /// The external link's name, if known.
    pub link: Option<String>,
    /// Whether the router creates its external link (a macvlan), as opposed to adopting it.
    pub created: bool,
    /// The egress addresses.
    pub sources: Vec<IpNetwork>,
    /// The egress addresses this instance holds ([`held_sources`]): the only ones a probe may
    /// send from.
    pub held: Vec<IpAddr>,
    /// The gateways, IPv4 first.
    pub gateways: Vec<IpAddr>,
    /// The redirects.
    pub redirects: Vec<Redirect>,
    /// The fallback destinations.
    pub fallback: Vec<IpAddr>,
    /// The internal link (from a spec), or every other link that is up but `lo` (by name: the
    /// ruleset names it, but only in its rules' bytes).
    pub internal: Vec<String>,
}

impl Subject {
    /// The router `spec` describes.
    pub(super) fn of_spec(spec: &RouterSpec, now: &Current) -> Subject {
        Subject {
            name: spec.name().to_string(),
            exists: spec.desired().exists_in(now),
            link: Some(spec.external().link_name().to_string()),
            created: matches!(spec.external(), External::Macvlan(_)),
            sources: spec.sources().to_vec(),
            held: held_sources(
                now,
                spec.name(),
                spec.external().link_name(),
                spec.sources(),
            ),
            gateways: spec
                .gateway4()
                .map(IpAddr::from)
                .into_iter()
                .chain(spec.gateway6().map(IpAddr::from))
                .collect(),
            redirects: spec.redirects().to_vec(),
            fallback: spec
                .fallback4()
                .map(IpAddr::from)
                .into_iter()
                .chain(spec.fallback6().map(IpAddr::from))
                .collect(),
            internal: vec![spec.internal().to_string()],
            spec: Some(spec.clone()),
        }
    }

    /// Router `name` as `now` and its traffic counters (`stats`) hold it.
    pub(super) fn by_name(name: &str, now: &Current, stats: Option<&Stats>) -> Subject {
        let stores = Stores::of(now, name);
        let record = stores.proven(now);
        let link = record.map(|r| r.link.to_string());
        let ext = link.as_deref().and_then(|l| now.link(l));
        let mut sources: Vec<IpNetwork> = ext
            .map(|l| {
                now.addrs
                    .iter()
                    .filter(|a| a.index == l.index && addr::marked(now, a, name))
                    .map(|a| a.net)
                    .collect()
            })
            .unwrap_or_default();
        for s in stats.into_iter().flat_map(|s| &s.snat) {
            if !sources.iter().any(|n| n.ip() == s.source) {
                sources.push(IpNetwork::from(s.source));
            }
        }
        let mut gateways: Vec<IpAddr> = Vec::new();
        if let Some(l) = ext {
            let main = crate::objects::route::main_table();
            for r in now.routes.iter().filter(|r| {
                r.is_ours()
                    && r.table == main
                    && r.oif == Some(l.index)
                    && r.kind == RouteType::Unicast
            }) {
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
        }
        gateways.sort_by_key(IpAddr::is_ipv6);
        let redirects = stats
            .map(|s| {
                s.redirects
                    .iter()
                    .map(|r| Redirect {
                        protocol: r.protocol,
                        port: r.port,
                        to: r.to,
                        to_port: r.to_port,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let fallback = stats
            .map(|s| s.fallback.iter().map(|f| f.to).collect())
            .unwrap_or_default();
        let internal = now
            .links
            .iter()
            .filter(|l| l.up && l.name != "lo" && Some(&l.name) != link.as_ref())
            .map(|l| l.name.clone())
            .collect();
        let held = match &link {
            Some(l) => held_sources(now, name, l, &sources),
            None => Vec::new(),
        };
        Subject {
            name: name.to_string(),
            spec: None,
            exists: record.is_some(),
            created: record.is_some_and(|r| r.created),
            link,
            sources,
            held,
            gateways,
            redirects,
            fallback,
            internal,
        }
    }

    /// The egress source of `ip`'s family (the SNAT source: the first one).
    pub(super) fn source_for(&self, ip: IpAddr) -> Option<IpAddr> {
        self.sources
            .iter()
            .map(IpNetwork::ip)
            .find(|s| s.is_ipv6() == ip.is_ipv6())
    }

    /// The sender address of a question about `ip` (a gateway): the egress source of its
    /// family when this instance holds it, else `None` — the unspecified address (an ARP
    /// probe, a DAD solicitation), from which nobody learns anything.
    pub(super) fn sender_for(&self, ip: IpAddr) -> Option<IpAddr> {
        self.source_for(ip).filter(|s| self.held.contains(s))
    }

    /// How `now` differs from the router: with a spec, what `check` reports; by name, what
    /// the router's own records say it must hold (its crash record in both places, its link
    /// up, a default route and a host route through it per gateway, its link's announcement
    /// sysctls and forwarding, its table). Empty when nothing differs.
    pub(super) fn drift(&self, now: &Current) -> Vec<Drift> {
        if let Some(spec) = &self.spec {
            return Desired::with_role(spec, role_in(now, &self.name)).compare(now);
        }
        let table = table_name(&self.name);
        let Some(record) = Stores::of(now, &self.name).proven(now).cloned() else {
            return vec![Drift::RouterMissing { table }];
        };
        let link = LinkRef {
            name: record.link.to_string(),
            marker: record.created.then(|| group_marker(&self.name)),
        };
        let (v4, v6) = (
            self.gateways.iter().any(IpAddr::is_ipv4),
            self.gateways.iter().any(IpAddr::is_ipv6),
        );
        let link_sysctls = sysctl::announcing(&link.name, (v4, v6));
        let mut objects: Vec<Box<dyn KernelObject>> = vec![
            Box::new(Journal {
                spec: RecordSpec {
                    router: self.name.clone(),
                    link: link.clone(),
                    families: (v4, v6),
                    link_sysctls: link_sysctls.clone(),
                    // By name, whatever the kernel holds (none: reported as missing).
                    claim: None,
                },
            }),
            Box::new(ExternalLink {
                link: link.clone(),
                macvlan: None,
                netns: now.netns.clone(),
            }),
        ];
        for key in link_sysctls {
            objects.push(Box::new(Sysctl {
                link: link.clone(),
                key,
                value: 1,
            }));
        }
        for g in &self.gateways {
            objects.push(Box::new(OurRoute {
                dst: IpNetwork::from(*g),
                via: None,
                link: link.clone(),
            }));
            objects.push(Box::new(DefaultRoute {
                via: *g,
                link: link.clone(),
                held: role_in(now, &self.name) == Role::Active,
            }));
        }
        for (used, ipv6) in [(v4, false), (v6, true)] {
            if used {
                objects.push(Box::new(Forwarding {
                    ipv6,
                    links: vec![link.clone()],
                }));
            }
        }
        let mut drift = Vec::new();
        for o in &objects {
            o.compare(now, &mut drift);
        }
        if now.table.is_none() {
            drift.push(Drift::NatChanged {
                table,
                detail: "the table is missing (and with it the redirects and the fallback)".into(),
            });
        } else if Stores::of(now, &self.name).comment.as_ref() != Some(&record) {
            drift.push(Drift::JournalDamaged {
                store: "table comment".into(),
                detail: format!(
                    "the comment of table inet {table} does not hold the router's record"
                ),
            });
        }
        drift
    }
}

/// The egress addresses among `sources` that this instance holds in `now`: router `name` is
/// active (as its role marker says) and the address is on its external link `link`. A question
/// sent from an address teaches whoever answers it that the address is here: from a standby
/// (or while the address is absent) it would move the gateway's neighbour entry for the egress
/// IP away from the active router.
pub(super) fn held_sources(
    now: &Current,
    name: &str,
    link: &str,
    sources: &[IpNetwork],
) -> Vec<IpAddr> {
    let Some(index) = now.link(link).map(|l| l.index) else {
        return Vec::new();
    };
    if role_in(now, name) != Role::Active {
        return Vec::new();
    }
    sources
        .iter()
        .map(IpNetwork::ip)
        .filter(|ip| {
            now.addrs
                .iter()
                .any(|a| a.index == index && a.net.ip() == *ip)
        })
        .collect()
}

/// The TCP destinations among `redirects`: each `(to, to_port)` once, with the local ports
/// that lead there.
pub(super) fn tcp_targets(redirects: &[Redirect]) -> Vec<(IpAddr, u16, Vec<u16>)> {
    let mut out: Vec<(IpAddr, u16, Vec<u16>)> = Vec::new();
    for r in redirects.iter().filter(|r| r.protocol == Protocol::Tcp) {
        match out
            .iter_mut()
            .find(|(to, p, _)| *to == r.to && *p == r.to_port)
        {
            Some((_, _, ports)) => ports.push(r.port),
            None => out.push((r.to, r.to_port, vec![r.port])),
        }
    }
    out
}
