//! What a diagnosis looks at ([`Subject`]): the router as its spec describes it, or, by name,
//! its read-back model (what the kernel proves to be the router) with the redirects and the
//! fallback its ruleset's counters hold.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::{
    drift::Drift,
    model::desired::Desired,
    objects::{role::role_in, Current},
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

    /// Router `name` as `now` and its traffic counters (`stats`) hold it: its read-back model
    /// ([`Desired::read`]) — the external link its crash record names, the egress addresses and
    /// gateways its identity notes and marked objects say —, with the SNAT sources, redirects
    /// and fallback its counters name.
    pub(super) fn by_name(name: &str, now: &Current, stats: Option<&Stats>) -> Subject {
        let read = Desired::read(now, name);
        let parts = read.as_ref().map(|(model, _)| model.parts());
        let link = parts.map(|p| p.external.name.clone());
        let mut sources: Vec<IpNetwork> = parts.map(|p| p.sources.clone()).unwrap_or_default();
        for s in stats.into_iter().flat_map(|s| &s.snat) {
            if !sources.iter().any(|n| n.ip() == s.source) {
                sources.push(IpNetwork::from(s.source));
            }
        }
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
            exists: read.is_some(),
            created: parts.is_some_and(|p| p.external.created()),
            gateways: parts.map(|p| p.gateways.clone()).unwrap_or_default(),
            link,
            sources,
            held,
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

    /// How `now` differs from the router: with a spec, what `check` reports; by name, how
    /// it differs from its read-back model, the spec the kernel records (its crash record in
    /// both places, its link, its addresses and routes, its sysctls, its table and its role).
    /// Empty when nothing differs.
    pub(super) fn drift(&self, now: &Current) -> Vec<Drift> {
        let model = match &self.spec {
            Some(spec) => Some(Desired::with_role(spec, role_in(now, &self.name))),
            None => Desired::read(now, &self.name).map(|(model, _)| model),
        };
        match model {
            Some(model) => model.compare(now),
            None => vec![Drift::RouterMissing {
                table: table_name(&self.name),
            }],
        }
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
