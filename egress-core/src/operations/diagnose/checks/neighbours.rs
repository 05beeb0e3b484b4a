//! The router's neighbours on the external network: `gateway` (it answers the macvlan),
//! `l2_filter` (frames from the macvlan's MAC are not dropped on the way), `duplicate_address`
//! (nobody else answers for an egress address; on a standby, the active instance alone).

use std::net::IpAddr;

use serde_json::json;

use super::{a, fail, heard_json, macs, ms, ok, parent_json, question, skipped, warn, Seen};
use crate::{
    objects::role::{role_in, Claim},
    operations::diagnose::{probe::Reply, Check},
    role::Role,
    spec::format_mac,
};

pub(super) fn gateways(s: &Seen) -> Vec<Check> {
    let sub = s.subject;
    if sub.gateways.is_empty() {
        return vec![skipped(
            "gateway",
            "no gateway known: the router's routes through its link are gone (see state)".into(),
            json!({}),
        )];
    }
    let link = s.link_name();
    let mac = s.link_mac();
    let timeout_ms = s.timeout.as_millis() as u64;
    sub.gateways
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let source = sub.source_for(*g);
            let sender = sub.sender_for(*g);
            let q = question(*g, sender.is_some());
            let sent = match (sender, source) {
                (Some(a), _) => format!("sender {a}"),
                (None, Some(s)) => format!("{s} is not held here"),
                (None, None) => "no egress address of its family".to_string(),
            };
            let mut evidence = json!({
                "gateway": g,
                "probe": q,
                "link": link,
                "mac": mac,
                "sender": sender,
                "timeout_ms": timeout_ms,
                "kernel_neighbour": s.neighbours.get(g).map(|n| json!({"state": n.state, "mac": n.mac})),
            });
            match s.gateway_answer(i) {
                Reply::Heard(h) => {
                    evidence["answered_by"] = heard_json(&h);
                    if h.len() == 1 {
                        ok(
                            "gateway",
                            format!(
                                "{g} answered {} from {link} ({sent}) in {} ms: MAC {}",
                                a(q),
                                ms(h[0].after),
                                format_mac(&h[0].mac)
                            ),
                            evidence,
                        )
                    } else {
                        warn(
                            "gateway",
                            format!("more than one host answers for the gateway {g}: {}", macs(&h)),
                            "two devices hold the gateway's address (a misconfigured VRRP or \
                             HSRP pair, a duplicate): the router sends to whichever answered \
                             last"
                                .into(),
                            evidence,
                        )
                    }
                }
                Reply::Silent => {
                    let hint = match s.probes.parent.get(i).cloned().flatten() {
                        Some(Reply::Heard(_)) => {
                            format!("frames from {link}'s MAC are dropped on the way: see l2_filter")
                        }
                        Some(Reply::Silent) => format!(
                            "the gateway does not answer the node's own link either: check \
                             the address (the spec's gateways, EGRESS_GATEWAY) and that the \
                             gateway is up on the network of {}",
                            source.map_or_else(|| "the egress address".into(), |a| a.to_string())
                        ),
                        _ => "check the gateway's address, that it is up on the external \
                              network, and l2_filter"
                            .into(),
                    };
                    fail(
                        "gateway",
                        format!(
                            "{g} did not answer {} from {link} (MAC {mac}, {sent}) within \
                             {timeout_ms} ms",
                            a(q)
                        ),
                        hint,
                        evidence,
                    )
                }
                Reply::NotAsked(why) => {
                    skipped("gateway", format!("{g} not probed: {why}"), evidence)
                }
            }
        })
        .collect()
}

/// What to change when frames from `mac` (carrying `ip`) are dropped between the node and
/// the gateway.
fn platform_hint(mac: &str, ip: Option<IpAddr>) -> String {
    let ip = ip.map_or_else(|| "the egress address".into(), |a| a.to_string());
    format!(
        "let frames from MAC {mac} through the node's port. VMware vSphere: on the port group \
         (or vSwitch) of the node's NIC set Promiscuous mode, MAC address changes and Forged \
         transmits to Accept (or enable MAC learning on a distributed switch). OpenStack: add \
         an allowed address pair for {ip} with MAC {mac} to the node's port (openstack port \
         set --allowed-address ip-address={ip},mac-address={mac} PORT), or disable port \
         security on it. RHV/oVirt: give the node's vNIC profile \"No Network Filter\". \
         Hyper-V: enable MAC address spoofing on the VM's network adapter. A physical switch: \
         raise the port-security MAC limit of the node's port, or allow the MAC"
    )
}

pub(super) fn l2_filters(s: &Seen) -> Vec<Check> {
    let sub = s.subject;
    let link = s.link_name();
    let mac = s.link_mac();
    let timeout_ms = s.timeout.as_millis() as u64;
    sub.gateways
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut evidence = json!({
                "gateway": g,
                "link": link,
                "mac": mac,
                "parent": parent_json(&s.parent),
                "parent_probe": question(*g, false),
                "timeout_ms": timeout_ms,
            });
            let parent = match &s.parent {
                Ok(p) => format!("{} (MAC {}, {})", p.link.name, p.link.mac_text(), p.place()),
                Err(_) => "the parent".into(),
            };
            match (
                s.gateway_answer(i),
                s.probes.parent.get(i).cloned().flatten(),
            ) {
                (Reply::Heard(_), _) => ok(
                    "l2_filter",
                    format!("frames from {link}'s MAC {mac} reach {g} and its answers come back"),
                    evidence,
                ),
                (Reply::NotAsked(why), _) => {
                    skipped("l2_filter", format!("not probed: {why}"), evidence)
                }
                (Reply::Silent, Some(Reply::Heard(h))) => {
                    evidence["parent_answered_by"] = heard_json(&h);
                    fail(
                        "l2_filter",
                        format!(
                            "frames from {link}'s MAC {mac} are dropped between the node and \
                             the gateway: {parent} gets an answer from {g} (MAC {}), {link} \
                             does not",
                            macs(&h)
                        ),
                        platform_hint(&mac, sub.source_for(*g)),
                        evidence,
                    )
                }
                (Reply::Silent, Some(Reply::Silent)) => warn(
                    "l2_filter",
                    format!(
                        "{parent} gets no answer from {g} either: no sign of a filter of \
                         {link}'s MAC"
                    ),
                    "the gateway is down, has another address, or is not on the external \
                     network: see gateway"
                        .into(),
                    evidence,
                ),
                (Reply::Silent, Some(Reply::NotAsked(why))) => skipped(
                    "l2_filter",
                    format!("not compared with the parent link: {why}"),
                    evidence,
                ),
                (Reply::Silent, None) => skipped(
                    "l2_filter",
                    "not compared with the parent link".into(),
                    evidence,
                ),
            }
        })
        .collect()
}

/// On the active router any answer for an egress address is another host holding it (split
/// brain, or a duplicate). On a standby, which holds none, one answer is the pair's active
/// instance (the healthy case: it says which MAC holds the address), none means that no
/// instance holds it, and more than one is a duplicate beside the active instance.
pub(super) fn duplicates(s: &Seen) -> Vec<Check> {
    let link = s.link_name();
    let mac = s.link_mac();
    let timeout_ms = s.timeout.as_millis() as u64;
    let role = role_in(s.now, &s.subject.name);
    // The MAC the active instance takes, as this router's identity notes record it.
    let stable_mac = Claim::in_kernel(s.now, &s.subject.name).and_then(|(c, _)| c.stable_mac);
    s.subject
        .sources
        .iter()
        .enumerate()
        .map(|(i, net)| {
            let ip = net.ip();
            let q = question(ip, false);
            let mut evidence = json!({
                "address": ip,
                "probe": q,
                "link": link,
                "mac": mac,
                "role": role,
                "timeout_ms": timeout_ms,
            });
            let asked = s
                .probes
                .duplicates
                .get(i)
                .cloned()
                .unwrap_or_else(|| Reply::NotAsked("not probed".into()));
            if let Reply::Heard(h) = &asked {
                evidence["answered_by"] = heard_json(h);
            }
            match (asked, role) {
                (Reply::Heard(h), Role::Standby) if h.len() == 1 => {
                    let stable = match stable_mac == Some(h[0].mac) {
                        true => ", at the pair's stable MAC",
                        false => "",
                    };
                    ok(
                        "duplicate_address",
                        format!(
                            "{ip} is held by the active instance{stable}: MAC {} answered {} \
                             in {} ms ({link}, a standby, does not hold it)",
                            format_mac(&h[0].mac),
                            a(q),
                            ms(h[0].after)
                        ),
                        evidence,
                    )
                }
                (Reply::Heard(h), Role::Standby) => fail(
                    "duplicate_address",
                    format!(
                        "more than one host answers for {ip}: MAC {} ({link}, a standby, does \
                         not hold it)",
                        macs(&h)
                    ),
                    format!(
                        "besides the active instance another host holds the egress address \
                         (or two instances are active: split brain), and the gateway sends the \
                         replies to whichever answered last: find the hosts with MAC {} (the \
                         gateway's neighbour table, the switch's MAC table; `egress-router \
                         inspect` on each instance) and remove {ip} from all but the active \
                         one",
                        macs(&h)
                    ),
                    evidence,
                ),
                (Reply::Heard(h), Role::Active) => fail(
                    "duplicate_address",
                    format!(
                        "another host answers for {ip}: MAC {} ({link} is {mac})",
                        macs(&h)
                    ),
                    format!(
                        "two hosts hold the egress address, and the gateway sends the \
                         replies to whichever answered last: find the host with MAC {} \
                         (the gateway's neighbour table, the switch's MAC table) and \
                         remove {ip} from it, or give the router another egress address",
                        macs(&h)
                    ),
                    evidence,
                ),
                (Reply::Silent, Role::Standby) => warn(
                    "duplicate_address",
                    format!(
                        "nobody answered {} for {ip} within {timeout_ms} ms: no instance holds \
                         the egress address ({link} is a standby)",
                        a(q)
                    ),
                    "no instance is active, so no traffic leaves: check the election \
                     (keepalived's state and log on each instance; on Kubernetes, no pod of \
                     the pair is ready) and the other instance's router (`egress-router \
                     inspect`), and that its link reaches this network"
                        .into(),
                    evidence,
                ),
                (Reply::Silent, Role::Active) => ok(
                    "duplicate_address",
                    format!(
                        "nobody else answered {} for {ip} within {timeout_ms} ms",
                        a(q)
                    ),
                    evidence,
                ),
                (Reply::NotAsked(why), _) => skipped(
                    "duplicate_address",
                    format!("{ip} not probed: {why}"),
                    evidence,
                ),
            }
        })
        .collect()
}
