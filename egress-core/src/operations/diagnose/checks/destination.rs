//! Where the router's traffic goes: `destination` (each destination accepts the egress
//! address) and `traffic` (each redirect and fallback is used, and answered).

use std::net::{IpAddr, SocketAddr};

use serde_json::{json, Value};

use super::{fail, ms, ok, skipped, warn, Seen};
use crate::{
    objects::role::role_in,
    operations::diagnose::{
        conntrack::{tally, Flow},
        probe::Reply,
        socket::Reached,
        subject::tcp_targets,
        Check,
    },
    role::Role,
    spec::Protocol,
};

/// One destination a `destination` check is about.
struct Dest {
    protocol: Protocol,
    to: IpAddr,
    /// The port tried or redirected to; `None`: a fallback without a port to try.
    port: Option<u16>,
    /// The local ports of the redirects that lead there; empty for a fallback.
    from_ports: Vec<u16>,
}

fn dests(s: &Seen) -> Vec<Dest> {
    let sub = s.subject;
    let mut out: Vec<Dest> = tcp_targets(&sub.redirects)
        .into_iter()
        .map(|(to, port, from_ports)| Dest {
            protocol: Protocol::Tcp,
            to,
            port: Some(port),
            from_ports,
        })
        .collect();
    for r in sub.redirects.iter().filter(|r| r.protocol != Protocol::Tcp) {
        match out
            .iter_mut()
            .find(|d| d.protocol == r.protocol && d.to == r.to && d.port == Some(r.to_port))
        {
            Some(d) => d.from_ports.push(r.port),
            None => out.push(Dest {
                protocol: r.protocol,
                to: r.to,
                port: Some(r.to_port),
                from_ports: vec![r.port],
            }),
        }
    }
    for f in &sub.fallback {
        if s.fallback_ports.is_empty() {
            out.push(Dest {
                protocol: Protocol::Tcp,
                to: *f,
                port: None,
                from_ports: Vec::new(),
            });
        }
        for p in s.fallback_ports {
            out.push(Dest {
                protocol: Protocol::Tcp,
                to: *f,
                port: Some(*p),
                from_ports: Vec::new(),
            });
        }
    }
    out
}

/// A destination is tried from the egress identity: the egress address, the default route
/// through the gateway. A standby holds neither (its active instance does): its destinations
/// are not tried, and say so.
pub(super) fn destinations(s: &Seen) -> Vec<Check> {
    let ext = s.link_name();
    let timeout_ms = s.timeout.as_millis() as u64;
    let standby = role_in(s.now, &s.subject.name) == Role::Standby;
    let gateway_silent = |to: IpAddr| {
        s.subject
            .gateways
            .iter()
            .enumerate()
            .any(|(i, g)| g.is_ipv6() == to.is_ipv6() && s.gateway_answer(i) == Reply::Silent)
    };
    dests(s)
        .into_iter()
        .map(|d| {
            let source = s.subject.source_for(d.to);
            let fallback = d.from_ports.is_empty();
            let target = match d.port {
                Some(p) => format!("{} {}", d.protocol, SocketAddr::new(d.to, p)),
                None => format!("fallback {}", d.to),
            };
            let what = match (fallback, d.port) {
                (true, Some(_)) => format!("fallback {target}"),
                _ => target.clone(),
            };
            let mut evidence = json!({
                "target": d.to,
                "port": d.port,
                "protocol": d.port.map(|_| d.protocol),
                "redirects": d.from_ports.iter().map(|p| format!("{}/{p}", d.protocol)).collect::<Vec<_>>(),
                "fallback": fallback,
                "source": source,
                "timeout_ms": timeout_ms,
            });
            if standby {
                evidence["role"] = "standby".into();
                return skipped(
                    "destination",
                    format!(
                        "{what}: not tried: router {} is a standby, without the egress \
                         address and the default route to try it from (its active instance \
                         has them: diagnose that one)",
                        s.subject.name
                    ),
                    evidence,
                );
            }
            let route = match s.route(d.to) {
                Some(Ok((oif, via))) => {
                    let dev = oif.map(|i| s.link_name_of(i));
                    evidence["route"] = json!({"dev": dev, "via": via});
                    let mut r = String::from("route");
                    if let Some(v) = via {
                        r += &format!(" via {v}");
                    }
                    if let Some(dev) = &dev {
                        r += &format!(" dev {dev}");
                    }
                    r
                }
                Some(Err(errno)) => {
                    let e = nix::errno::Errno::from_raw(*errno).desc();
                    evidence["route"] = json!({"error": e});
                    return fail(
                        "destination",
                        format!("{what}: no route from {} ({e})", source.map_or_else(|| "the egress address".into(), |a| a.to_string())),
                        "the router's default route through the gateway is missing: see state"
                            .into(),
                        evidence,
                    );
                }
                None => "route not read".to_string(),
            };
            if let Some(other) = s.routed_elsewhere(d.to) {
                return fail(
                    "destination",
                    format!(
                        "{what}: the route to {} goes out of {other}, not {ext}: the traffic \
                         leaves without the egress address",
                        d.to
                    ),
                    format!(
                        "take {} out of the routes kept through {other} (kept_routes), or \
                         redirect to another address",
                        d.to
                    ),
                    evidence,
                );
            }
            let Some(port) = d.port.filter(|_| d.protocol == Protocol::Tcp) else {
                evidence["probe"] = "route".into();
                let why = match d.port {
                    None => "no port to try (give fallback ports to try one)".to_string(),
                    Some(_) => format!("{} has no handshake to try: only the route is checked", d.protocol),
                };
                return ok("destination", format!("{what}: {route}; {why}"), evidence);
            };
            evidence["probe"] = "tcp".into();
            let Some(c) = s
                .probes
                .connects
                .iter()
                .find(|c| c.to == SocketAddr::new(d.to, port))
            else {
                return skipped("destination", format!("{what}: not probed"), evidence);
            };
            evidence["connect_ms"] = ms(c.took).into();
            let from = c
                .source
                .map_or_else(|| "the egress address".into(), |a| a.to_string());
            let (result, check) = match c.reached {
                Reached::Connected => (
                    "connected",
                    ok(
                        "destination",
                        format!(
                            "{what} accepted a connection from {from} in {} ms ({route})",
                            ms(c.took)
                        ),
                        Value::Null,
                    ),
                ),
                Reached::Refused => (
                    "refused",
                    fail(
                        "destination",
                        format!(
                            "{what} refused a connection from {from}: a reset came back after \
                             {} ms",
                            ms(c.took)
                        ),
                        format!(
                            "nothing listens on {} port {port}, or a firewall rejects {from}: \
                             check the service and the redirect's to_port",
                            d.to
                        ),
                        Value::Null,
                    ),
                ),
                Reached::NoAnswer => (
                    "no_answer",
                    fail(
                        "destination",
                        format!(
                            "{what} did not answer a connection from {from} within \
                             {timeout_ms} ms"
                        ),
                        match gateway_silent(d.to) {
                            true => "the gateway does not answer either: see gateway".into(),
                            false => format!(
                                "a firewall on the way drops {from} (allow the egress \
                                 address to {} port {port}), or {} is down",
                                d.to, d.to
                            ),
                        },
                        Value::Null,
                    ),
                ),
                Reached::Unreachable(errno) => (
                    "unreachable",
                    fail(
                        "destination",
                        format!(
                            "{what}: an ICMP error came back to {from}: {}",
                            nix::errno::Errno::from_raw(errno).desc()
                        ),
                        format!(
                            "a router or firewall on the way rejects {from}: allow it, or \
                             check the route to {}",
                            d.to
                        ),
                        Value::Null,
                    ),
                ),
                Reached::NotTried(errno) => (
                    "not_tried",
                    skipped(
                        "destination",
                        format!(
                            "{what}: no connection tried from {from}: {}",
                            match errno {
                                libc::EADDRNOTAVAIL =>
                                    "the egress address is not on the link (see state)".into(),
                                e => nix::errno::Errno::from_raw(e).desc().to_string(),
                            }
                        ),
                        Value::Null,
                    ),
                ),
            };
            evidence["result"] = result.into();
            Check { evidence, ..check }
        })
        .collect()
}

pub(super) fn traffic(s: &Seen) -> Vec<Check> {
    let sub = s.subject;
    let Some(stats) = &s.stats else {
        return vec![skipped(
            "traffic",
            "no counters: the router's table is missing (see state)".into(),
            json!({}),
        )];
    };
    let ext_index = s.link.as_ref().map(|l| l.index);
    let flows = s.flows.as_ref().ok();
    let conntrack_error = s.flows.as_ref().err();
    // Clients whose replies would leave through the external link.
    let misrouted = |keep: &dyn Fn(&Flow) -> bool| -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for f in flows.into_iter().flatten().filter(|f| keep(f)) {
            if let Some(Ok((Some(oif), _))) = s.route(f.client) {
                if Some(*oif) == ext_index && !out.contains(&f.client) {
                    out.push(f.client);
                }
            }
        }
        out
    };
    let mut out = Vec::new();
    let judge = |what: String,
                 to: String,
                 connections: u64,
                 packets: u64,
                 bytes: u64,
                 keep: &dyn Fn(&Flow) -> bool,
                 mut evidence: Value|
     -> Check {
        let (tracked, unreplied) = match flows {
            Some(f) => {
                let (t, u) = tally(f, keep);
                (Some(t), Some(u))
            }
            None => (None, None),
        };
        let wrong = misrouted(keep);
        evidence["connections"] = connections.into();
        evidence["packets"] = packets.into();
        evidence["bytes"] = bytes.into();
        evidence["tracked"] = tracked.into();
        evidence["unreplied"] = unreplied.into();
        evidence["misrouted_clients"] = json!(wrong);
        evidence["conntrack_entries"] = stats.conntrack_entries.into();
        if let Some(e) = conntrack_error {
            evidence["conntrack_error"] = e.clone().into();
        }
        let counts = format!(
            "{connections} connection{} since apply, {packets} packets, {bytes} bytes; {} \
             tracked now",
            if connections == 1 { "" } else { "s" },
            tracked.map_or_else(|| "?".into(), |t| t.to_string())
        );
        if !wrong.is_empty() {
            let list: Vec<String> = wrong.iter().map(ToString::to_string).collect();
            fail(
                "traffic",
                format!(
                    "{what}: {counts}; the replies to {} leave through {}, not back to the \
                     client",
                    list.join(", "),
                    s.link_name()
                ),
                "keep a route to the clients' network through the internal link \
                 (kept_routes): the router's default route now goes out of the external link"
                    .into(),
                evidence,
            )
        } else if connections == 0 {
            ok(
                "traffic",
                format!(
                    "{what}: no connection since apply: no client reached the router for it \
                     (look at the client's address and port, the service, network policies)"
                ),
                evidence,
            )
        } else if tracked.is_some_and(|t| t > 0) && tracked == unreplied {
            warn(
                "traffic",
                format!("{what}: {counts}, and none of those got a reply from {to}"),
                format!("{to} does not answer the router: see destination and gateway"),
                evidence,
            )
        } else {
            ok("traffic", format!("{what}: {counts}"), evidence)
        }
    };
    for r in &sub.redirects {
        let st = stats.redirects.iter().find(|x| {
            x.protocol == r.protocol && x.port == r.port && x.to.is_ipv6() == r.to.is_ipv6()
        });
        let to = SocketAddr::new(r.to, r.to_port).to_string();
        let what = format!("{}/{} -> {to}", r.protocol, r.port);
        let evidence = json!({"redirect": format!("{}/{}", r.protocol, r.port), "to": to});
        let Some(st) = st else {
            out.push(skipped(
                "traffic",
                format!("{what}: not in the router's ruleset (see state)"),
                evidence,
            ));
            continue;
        };
        let (proto, port, dest) = (r.protocol.number(), r.port, r.to);
        out.push(judge(
            what,
            to.clone(),
            st.connections,
            st.packets,
            st.bytes,
            &move |f: &Flow| f.protocol == proto && f.port == port && f.to == dest,
            evidence,
        ));
    }
    for f in &sub.fallback {
        let what = format!("fallback -> {f}");
        let evidence = json!({"fallback": f});
        let Some(st) = stats.fallback.iter().find(|x| x.to == *f) else {
            out.push(skipped(
                "traffic",
                format!("{what}: not in the router's ruleset (see state)"),
                evidence,
            ));
            continue;
        };
        let redirected: Vec<(u8, u16)> = sub
            .redirects
            .iter()
            .filter(|r| r.to.is_ipv6() == f.is_ipv6())
            .map(|r| (r.protocol.number(), r.port))
            .collect();
        let dest = *f;
        out.push(judge(
            what,
            f.to_string(),
            st.connections,
            st.packets,
            st.bytes,
            &move |x: &Flow| x.to == dest && !redirected.contains(&(x.protocol, x.port)),
            evidence,
        ));
    }
    if out.is_empty() {
        out.push(ok(
            "traffic",
            "no redirect and no fallback: nothing is translated".into(),
            json!({"conntrack_entries": stats.conntrack_entries}),
        ));
    }
    out
}
