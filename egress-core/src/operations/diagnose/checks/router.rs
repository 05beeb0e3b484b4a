//! The router's own state: `state` (it matches its spec or its records), `link` (up, carrier,
//! parent), `sysctl` (forwarding, rp_filter).

use std::net::IpAddr;

use serde_json::json;

use super::{clients, destinations, fail, ok, parent_json, skipped, Seen};
use crate::operations::diagnose::Check;

pub(super) fn state(s: &Seen) -> Check {
    let sub = s.subject;
    let against = match sub.spec {
        Some(_) => "its spec",
        None => "its own records (no spec given: its crash record, link, routes, table)",
    };
    let evidence = json!({
        "compared_with": if sub.spec.is_some() { "spec" } else { "records" },
        "netns": s.now.netns,
        "drift": s.drift,
    });
    if !sub.exists {
        return fail(
            "state",
            format!(
                "router {} is not configured in namespace {}",
                sub.name, s.now.netns
            ),
            "apply it, or check the namespace and the name (`egress-router inspect` shows \
             what a namespace holds)"
                .into(),
            evidence,
        );
    }
    if s.drift.is_empty() {
        return ok(
            "state",
            format!("router {} is in place and matches {against}", sub.name),
            evidence,
        );
    }
    let list: Vec<String> = s.drift.iter().map(ToString::to_string).collect();
    fail(
        "state",
        format!(
            "router {} differs from {against}: {}",
            sub.name,
            list.join("; ")
        ),
        "ensure repairs it in place (egress-router in init mode, egress_core::ensure); find \
         what changed it, or it drifts again"
            .into(),
        evidence,
    )
}

pub(super) fn link(s: &Seen) -> Check {
    let Some(name) = &s.subject.link else {
        return skipped(
            "link",
            "the external link is not known: the router's crash record does not name it".into(),
            json!({}),
        );
    };
    let created = s.subject.created;
    let mut evidence = json!({
        "link": name,
        "created": created,
        "parent": parent_json(&s.parent),
    });
    let Some(l) = &s.link else {
        return fail(
            "link",
            format!("the external link {name} is missing"),
            match created {
                true => "ensure creates the macvlan again, with what it carries".into(),
                false => format!(
                    "the adopted link {name} is gone: whoever made it (OpenShift's SDN) must \
                     move it into the namespace again; then ensure"
                ),
            },
            evidence,
        );
    };
    // What the router's namespace says of the parent, found or not.
    evidence["parent_index"] = l.parent_index.into();
    evidence["parent_netnsid"] = l.parent_nsid.into();
    evidence["index"] = l.index.into();
    evidence["mac"] = l.mac_text().into();
    evidence["kind"] = l.kind.clone().into();
    evidence["up"] = l.up.into();
    evidence["carrier"] = l.carrier.into();
    evidence["operstate"] = l.operstate.clone().into();
    if !l.up {
        return fail(
            "link",
            format!("{name} is down"),
            format!("ensure sets it up (ip link set dev {name} up)"),
            evidence,
        );
    }
    if let Ok(p) = &s.parent {
        let where_ = format!("{} ({})", p.link.name, p.place());
        if !p.link.up || !p.link.carrier {
            let (what, hint) = match p.link.up {
                false => (
                    "down".to_string(),
                    format!(
                        "set it up: ip link set dev {} up, in {}",
                        p.link.name,
                        p.place()
                    ),
                ),
                true => (
                    format!("up without carrier (operstate {})", p.link.operstate),
                    "its cable, switch port or virtual NIC is disconnected".to_string(),
                ),
            };
            return fail(
                "link",
                format!("{name} has no carrier: its parent {where_} is {what}"),
                hint,
                evidence,
            );
        }
    }
    if !l.carrier {
        return fail(
            "link",
            format!(
                "{name} is up but has no carrier (operstate {})",
                l.operstate
            ),
            "its parent link is down or has no carrier (cable, switch port, virtual NIC)".into(),
            evidence,
        );
    }
    let parent = match &s.parent {
        Ok(p) => format!(
            "parent {} ({}) up with carrier, MAC {}",
            p.link.name,
            p.place(),
            p.link.mac_text()
        ),
        Err(why) => format!("parent not seen: {why}"),
    };
    ok(
        "link",
        format!("{name} is up with carrier, MAC {}; {parent}", l.mac_text()),
        evidence,
    )
}

pub(super) fn sysctl(s: &Seen) -> Check {
    let sub = s.subject;
    let get = |k: &str| s.sysctls.get(k).map(String::as_str);
    let v4 = sub.sources.iter().any(|n| n.is_ipv4());
    let v6 = sub.sources.iter().any(|n| n.is_ipv6());
    let mut problems: Vec<String> = Vec::new();
    let mut hints: Vec<String> = Vec::new();
    let mut forwarding = serde_json::Map::new();
    let links: Vec<&String> = sub.link.iter().chain(&sub.internal).collect();
    if v4 {
        let all = get("net/ipv4/ip_forward");
        forwarding.insert("net.ipv4.ip_forward".into(), all.into());
        if all != Some("1") {
            problems.push(format!(
                "net.ipv4.ip_forward is {}",
                all.unwrap_or("unreadable")
            ));
        } else {
            for l in &links {
                let key = format!("net/ipv4/conf/{l}/forwarding");
                if let Some(v) = get(&key) {
                    forwarding.insert(format!("net.ipv4.conf.{l}.forwarding"), v.into());
                    if v != "1" {
                        problems.push(format!("net.ipv4.conf.{l}.forwarding is {v}"));
                    }
                }
            }
        }
    }
    if v6 {
        let all = get("net/ipv6/conf/all/forwarding");
        forwarding.insert("net.ipv6.conf.all.forwarding".into(), all.into());
        if all != Some("1") {
            problems.push(format!(
                "net.ipv6.conf.all.forwarding is {}",
                all.unwrap_or("unreadable")
            ));
        }
    }
    if !problems.is_empty() {
        hints.push(
            "ensure turns forwarding on again; something turned it off (a sysctl.d file, a \
             tuning profile)"
                .into(),
        );
    }
    // rp_filter: the larger of `all` and the link's own value counts.
    let all = get("net/ipv4/conf/all/rp_filter")
        .and_then(|v| v.parse::<u8>().ok())
        .unwrap_or(0);
    let mut rp = serde_json::Map::new();
    rp.insert("all".into(), all.into());
    let effective = |l: &str| {
        get(&format!("net/ipv4/conf/{l}/rp_filter"))
            .and_then(|v| v.parse::<u8>().ok())
            .map(|v| v.max(all))
    };
    if v4 {
        if let Some(ext) = &sub.link {
            if let Some(v) = effective(ext) {
                rp.insert(ext.clone(), v.into());
                if v == 1 {
                    for to in destinations(sub).into_iter().filter(IpAddr::is_ipv4) {
                        if let Some(other) = s.routed_elsewhere(to) {
                            problems.push(format!(
                                "rp_filter=1 on {ext} drops the replies from {to}: the route \
                                 back to it goes out of {other}"
                            ));
                            hints.push(format!(
                                "set net.ipv4.conf.{ext}.rp_filter=2 (loose), or take {to} \
                                 out of the routes through {other}"
                            ));
                        }
                    }
                }
            }
        }
        let flows = s.flows.as_deref().unwrap_or_default();
        for l in &sub.internal {
            let Some(v) = effective(l) else { continue };
            rp.insert(l.clone(), v.into());
            if v != 1 {
                continue;
            }
            let index = s.now.link(l).map(|x| x.index);
            for c in clients(flows).into_iter().filter(IpAddr::is_ipv4) {
                if let Some(Ok((Some(oif), _))) = s.route(c) {
                    if Some(*oif) != index && sub.link.is_some() {
                        problems.push(format!(
                            "rp_filter=1 on {l} drops what client {c} sends: the route back \
                             to it goes out of {}",
                            s.link_name_of(*oif)
                        ));
                        hints.push(format!(
                            "keep a route to the clients' network through {l} (kept_routes), \
                             or set net.ipv4.conf.{l}.rp_filter=2"
                        ));
                    }
                }
            }
        }
    }
    let evidence = json!({"forwarding": forwarding, "rp_filter": rp});
    if problems.is_empty() {
        let families = match (v4, v6) {
            (true, true) => "IPv4 and IPv6",
            (true, false) => "IPv4",
            _ => "IPv6",
        };
        return ok(
            "sysctl",
            format!(
                "forwarding is on ({families}); rp_filter drops no reply ({})",
                rp.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            evidence,
        );
    }
    hints.dedup();
    fail("sysctl", problems.join("; "), hints.join("; "), evidence)
}
