//! `net.ipv6.conf.<external link>.accept_ra = 0` on every router's external link: the created
//! macvlan of an IPv4-only router (IPv6 on, not forwarding: without it, a router advertisement
//! on the external segment gives it a SLAAC address and a default route) and an adopted link
//! (its value before, even 2, kept in the crash record and written back at teardown). Read back
//! from `/proc/sys` in the namespace; `check` reports a change, `ensure` repairs it; a real
//! router advertisement, sent on the external segment, gives the link nothing.
//!
//! As root, in throwaway namespaces; a test that cannot build them fails.

use std::{
    thread,
    time::{Duration, Instant},
};

use egress_core::{blocking, Drift, EnsureAction, RouterSpec};
use egress_lab::{
    Lab, Snapshots, EGRESS_SOURCE6, GATEWAY6, GATEWAY_LINK, MACVLAN_PARENT, SDN_MACVLAN,
};

const LINK: &str = "macvlan0";
const KEY: &str = "net.ipv6.conf.macvlan0.accept_ra";
/// The prefix the advertisements offer (documentation addresses).
const RA_PREFIX: &str = "2001:db8:99:";

/// One router advertisement from `gw0` of the external segment to all nodes: router lifetime
/// 1800 s, prefix 2001:db8:99::/64 on-link and autonomous (SLAAC). A raw ICMPv6 socket (the
/// kernel fills the checksum and the link-local source), hop limit 255 as RFC 4861 requires.
const SEND_RA: &str = r#"
import socket, struct, sys
ifindex = socket.if_nametoindex(sys.argv[1])
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
prefix = socket.inet_pton(socket.AF_INET6, "2001:db8:99::")
pio = struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0) + prefix
s.sendto(ra + pio, ("ff02::1", 0, 0, ifindex))
"#;

fn send_ra(lab: &Lab) {
    lab.ext.exec(&["python3", "-c", SEND_RA, GATEWAY_LINK]);
}

/// What router advertisements gave link `LINK`: its addresses in the advertised prefix and its
/// routes learnt from them (`proto ra`).
fn from_ra(lab: &Lab) -> Vec<String> {
    let addrs = lab.router.exec(&["ip", "-6", "addr", "show", "dev", LINK]);
    let routes = lab.router.exec(&["ip", "-6", "route", "show", "dev", LINK]);
    addrs
        .lines()
        .filter(|l| l.contains(RA_PREFIX))
        .chain(routes.lines().filter(|l| l.contains("proto ra")))
        .map(|l| l.trim().to_string())
        .collect()
}

fn drift(value: &str) -> Drift {
    Drift::SysctlChanged {
        key: KEY.into(),
        expected: "0".into(),
        actual: value.into(),
    }
}

/// `accept_ra` changed from outside: `check` names it, `ensure` repairs it, nothing else.
fn changed_then_repaired(lab: &Lab, spec: &RouterSpec) {
    lab.router.sysctl_set(KEY, "1");
    assert_eq!(blocking::check(spec).unwrap(), vec![drift("1")]);
    assert_eq!(
        blocking::ensure(spec).unwrap().action,
        EnsureAction::Repaired
    );
    assert_eq!(lab.router.sysctl_get(KEY), "0");
    assert_eq!(blocking::check(spec).unwrap(), vec![]);
}

/// The issue's case: an IPv4-only router's created macvlan has IPv6 (not forwarding) and would
/// take an advertisement on the external segment; with accept_ra 0 it takes nothing, and the
/// same advertisement, accepted once accept_ra is 1 again, proves the sender reaches it.
#[test]
fn a_created_macvlan_takes_no_router_advertisement() {
    let lab = Lab::new();
    // The node's own end of the segment (the macvlan's parent) takes none either: the test's
    // advertisements are for the router.
    lab.node
        .sysctl_set(&format!("net.ipv6.conf.{MACVLAN_PARENT}.accept_ra"), "0");
    let before = Snapshots::take(&lab);
    let spec = lab.router_spec("ra-created").build().unwrap();
    let router = blocking::apply(&spec).unwrap();
    assert_eq!(lab.router.sysctl_get(KEY), "0");
    assert_eq!(
        lab.router.sysctl_get("net.ipv6.conf.macvlan0.forwarding"),
        "0"
    );
    assert_eq!(blocking::check(&spec).unwrap(), vec![]);

    send_ra(&lab);
    thread::sleep(Duration::from_millis(500));
    assert_eq!(from_ra(&lab), Vec::<String>::new());

    changed_then_repaired(&lab, &spec);

    // The control: with accept_ra 1, the same advertisement gives the link an address and a
    // default route (what the router would have without the knob).
    lab.router.sysctl_set(KEY, "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    let learnt = loop {
        send_ra(&lab);
        thread::sleep(Duration::from_millis(200));
        let learnt = from_ra(&lab);
        if learnt.len() >= 2 || Instant::now() > deadline {
            break learnt;
        }
    };
    assert!(
        learnt.iter().any(|l| l.starts_with("inet6 2001:db8:99:"))
            && learnt.iter().any(|l| l.starts_with("default")),
        "the advertisement was not taken with accept_ra 1: {learnt:?}"
    );
    assert!(blocking::check(&spec).unwrap().contains(&drift("1")));
    blocking::ensure(&spec).unwrap();
    assert_eq!(lab.router.sysctl_get(KEY), "0");

    blocking::teardown(router).unwrap();
    before.assert_restored("after teardown");
}

/// An adopted link: accept_ra 0 while the router is there, whatever it was; its value before
/// (2 here: not a boolean) is in the crash record and is written back at teardown by name.
#[test]
fn an_adopted_link_gets_its_accept_ra_back_at_teardown() {
    let lab = Lab::with_adopted_macvlan();
    lab.router.sysctl_set(KEY, "2");
    let before = Snapshots::take(&lab);
    let spec = lab
        .router_spec("ra-adopted")
        .adopt(SDN_MACVLAN)
        .source(EGRESS_SOURCE6)
        .gateway(GATEWAY6)
        .build()
        .unwrap();
    blocking::apply(&spec).unwrap();
    assert_eq!(lab.router.sysctl_get(KEY), "0");
    assert_eq!(blocking::check(&spec).unwrap(), vec![]);
    let table = lab
        .router
        .exec(&["nft", "list", "table", "inet", &spec.table_name()]);
    assert!(
        table.contains(" 6macvlan0.ra=2"),
        "the crash record keeps accept_ra's value before: {table}"
    );

    changed_then_repaired(&lab, &spec);

    blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
    assert_eq!(lab.router.sysctl_get(KEY), "2");
    before.assert_restored("after teardown by name");
}
