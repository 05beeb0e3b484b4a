//! The checks of a diagnosis, made from what was read and probed ([`Seen`]): each one's status,
//! one-line summary, evidence and, when something is wrong, the hint that says what to change.
//! The router's own state (`state`, `link`, `sysctl`), its neighbours on the external network
//! (`gateway`, `l2_filter`, `duplicate_address`), and where its traffic goes (`destination`,
//! `traffic`).

mod destination;
mod neighbours;
mod router;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde_json::{json, Value};

use super::{
    conntrack::Flow,
    probe::{Probes, Reply},
    reads::{LinkFacts, Neighbour, Parent, RouteSeen},
    socket::Heard,
    subject::{tcp_targets, Subject},
    Check, Status,
};
use crate::{drift::Drift, objects::Current, spec::format_mac, Stats};

/// At most this many clients of the tracked connections have their route checked.
const MAX_CLIENTS: usize = 32;

/// What a diagnosis read and probed.
pub(super) struct Seen<'a> {
    pub subject: &'a Subject,
    pub now: &'a Current,
    pub drift: Vec<Drift>,
    pub link: Option<LinkFacts>,
    pub parent: Result<Parent, String>,
    /// Sysctl values, path form.
    pub sysctls: BTreeMap<String, String>,
    /// The kernel's neighbour entries on the external link.
    pub neighbours: BTreeMap<IpAddr, Neighbour>,
    /// The route to each destination and client: (output link index, next hop) or an errno.
    pub routes: Vec<(IpAddr, RouteSeen)>,
    pub stats: Option<Stats>,
    /// The DNAT-ed connections conntrack holds, or why they could not be read.
    pub flows: Result<Vec<Flow>, String>,
    pub probes: Probes,
    pub timeout: Duration,
    pub fallback_ports: &'a [u16],
}

/// Every destination address: the redirects' and the fallbacks', each once.
pub(super) fn destinations(subject: &Subject) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for to in subject
        .redirects
        .iter()
        .map(|r| r.to)
        .chain(subject.fallback.iter().copied())
    {
        if !out.contains(&to) {
            out.push(to);
        }
    }
    out
}

/// The clients of the tracked connections, each once (at most [`MAX_CLIENTS`]).
pub(super) fn clients(flows: &[Flow]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for f in flows {
        if out.len() == MAX_CLIENTS {
            break;
        }
        if !out.contains(&f.client) {
            out.push(f.client);
        }
    }
    out
}

/// The TCP destinations a diagnosis connects to: each TCP redirect's, and each fallback at
/// each of `fallback_ports`.
pub(super) fn tcp_destinations(subject: &Subject, fallback_ports: &[u16]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = tcp_targets(&subject.redirects)
        .into_iter()
        .map(|(to, port, _)| SocketAddr::new(to, port))
        .collect();
    for f in &subject.fallback {
        for p in fallback_ports {
            let s = SocketAddr::new(*f, *p);
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// Every check, in order.
pub(super) fn all(s: &Seen) -> Vec<Check> {
    let mut out = vec![router::state(s)];
    if !s.subject.exists {
        for name in [
            "link",
            "sysctl",
            "gateway",
            "l2_filter",
            "duplicate_address",
            "destination",
            "traffic",
        ] {
            out.push(skipped(
                name,
                format!("not run: router {} is not configured here", s.subject.name),
                json!({}),
            ));
        }
        return out;
    }
    out.push(router::link(s));
    out.push(router::sysctl(s));
    out.extend(neighbours::gateways(s));
    out.extend(neighbours::l2_filters(s));
    out.extend(neighbours::duplicates(s));
    out.extend(destination::destinations(s));
    out.extend(destination::traffic(s));
    out
}

fn check(
    name: &str,
    status: Status,
    summary: String,
    hint: Option<String>,
    evidence: Value,
) -> Check {
    Check {
        name: name.to_string(),
        status,
        summary,
        hint,
        evidence,
    }
}

fn ok(name: &str, summary: String, evidence: Value) -> Check {
    check(name, Status::Ok, summary, None, evidence)
}

fn skipped(name: &str, summary: String, evidence: Value) -> Check {
    check(name, Status::Skipped, summary, None, evidence)
}

fn fail(name: &str, summary: String, hint: String, evidence: Value) -> Check {
    check(name, Status::Fail, summary, Some(hint), evidence)
}

fn warn(name: &str, summary: String, hint: String, evidence: Value) -> Check {
    check(name, Status::Warn, summary, Some(hint), evidence)
}

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn heard_json(heard: &[Heard]) -> Value {
    heard
        .iter()
        .map(|h| json!({"mac": format_mac(&h.mac), "reply_ms": ms(h.after)}))
        .collect()
}

fn macs(heard: &[Heard]) -> String {
    heard
        .iter()
        .map(|h| format_mac(&h.mac))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a who-has question for `ip` is called, sent from an address or from none.
fn question(ip: IpAddr, from_address: bool) -> &'static str {
    match (ip.is_ipv4(), from_address) {
        (true, true) => "ARP request",
        (true, false) => "ARP probe (sender 0.0.0.0)",
        (false, true) => "neighbour solicitation",
        (false, false) => "DAD solicitation (source ::)",
    }
}

/// `q` with its article: `an ARP request`, `a neighbour solicitation`.
fn a(q: &str) -> String {
    match q.starts_with("ARP") {
        true => format!("an {q}"),
        false => format!("a {q}"),
    }
}

impl Seen<'_> {
    fn link_name(&self) -> &str {
        self.subject.link.as_deref().unwrap_or("(unknown)")
    }

    fn link_mac(&self) -> String {
        self.link
            .as_ref()
            .map_or_else(|| "(unknown)".into(), LinkFacts::mac_text)
    }

    fn link_name_of(&self, index: u32) -> String {
        self.now
            .links
            .iter()
            .find(|l| l.index == index)
            .map_or_else(|| format!("#{index}"), |l| l.name.clone())
    }

    fn route(&self, to: IpAddr) -> Option<&RouteSeen> {
        self.routes.iter().find(|(a, _)| *a == to).map(|(_, r)| r)
    }

    /// Whether the route to `to` goes out of another link than the external one: that link's
    /// name.
    fn routed_elsewhere(&self, to: IpAddr) -> Option<String> {
        let ext = self.link.as_ref()?.index;
        match self.route(to)? {
            Ok((Some(oif), _)) if *oif != ext => Some(self.link_name_of(*oif)),
            _ => None,
        }
    }

    fn gateway_answer(&self, i: usize) -> Reply {
        self.probes
            .gateways
            .get(i)
            .cloned()
            .unwrap_or_else(|| Reply::NotAsked("not probed".into()))
    }
}

fn parent_json(p: &Result<Parent, String>) -> Value {
    match p {
        Ok(p) => json!({
            "name": p.link.name,
            "index": p.link.index,
            "netns": p.ns.label(),
            "place": p.place(),
            "mac": p.link.mac_text(),
            "up": p.link.up,
            "carrier": p.link.carrier,
            "operstate": p.link.operstate,
        }),
        Err(why) => json!({ "unknown": why }),
    }
}
