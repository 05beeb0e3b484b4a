//! The lab itself: topology, snapshots and clean-up. Needs root; every test builds its own
//! throwaway namespaces and fails (never skips) when it cannot.

use std::{
    net::IpAddr,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::RwLock,
    time::{Duration, Instant},
};

use egress_lab::{
    ip, leftover_namespaces, ping, Lab, Netns, Snapshot, CLIENT4, EGRESS_SOURCE4, EGRESS_SOURCE6,
    FALLBACK4, GATEWAY4, GATEWAY6, ROUTER_ETH0_4, ROUTER_ETH0_6, SDN_MACVLAN, SWITCH_BRIDGE,
    SWITCH_GATEWAY_PORT, SWITCH_NODE_PORT, WEB4, WEB6, WEB_NET4, WEB_NET6, WEB_PORT,
};
use netlink_packet_core::NLM_F_CREATE;
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    AddressFamily, RouteNetlinkMessage,
};

/// Tests take it shared; the one that asserts "no namespace of this process is left" takes it
/// exclusively, so it does not see the namespaces of tests running beside it.
static NAMESPACES: RwLock<()> = RwLock::new(());

const TIMEOUT: Duration = Duration::from_secs(1);

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    NAMESPACES
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn assert_gone(names: &[String]) {
    let left = leftover_namespaces();
    let still_there: Vec<&String> = names.iter().filter(|n| left.contains(n)).collect();
    assert!(still_there.is_empty(), "not deleted: {still_there:?}");
}

#[test]
fn topology_reaches_router_but_not_web() {
    let _lock = shared();
    let lab = Lab::new();
    let web = lab.ext.serve_http(&[WEB_PORT]);

    assert!(ping(&lab.client, ip(ROUTER_ETH0_4)));
    assert!(ping(&lab.client, ip(ROUTER_ETH0_6)));
    assert!(ping(&lab.router, ip(CLIENT4)));

    for web_addr in [WEB4, WEB6] {
        let got = lab.client.http_get(ip(web_addr), WEB_PORT, TIMEOUT);
        assert!(got.is_err(), "client reached {web_addr} directly: {got:?}");
    }
    assert!(!ping(&lab.client, ip(GATEWAY4)), "node must not forward");

    let listening = lab.ext.exec(&["ss", "-Hltn"]);
    assert!(listening.contains(&format!(":{WEB_PORT}")), "{listening}");
    assert_eq!(web.ports(), [WEB_PORT]);
    assert!(web.peers().is_empty(), "{:?}", web.peers());

    assert_eq!(lab.router.sysctl_get("net.ipv4.ip_forward"), "0");
    assert_eq!(lab.router.sysctl_get("net.ipv6.conf.all.forwarding"), "0");
}

/// What an egress router will do by hand: the SDN's macvlan in the router with the egress
/// source on it. The web server answers only that source and the gateway learns its MAC.
#[test]
fn web_server_accepts_only_the_egress_source() {
    let _lock = shared();
    let lab = Lab::with_adopted_macvlan();
    let router = &lab.router;
    assert_eq!(
        router.ip_json(&["-d", "link", "show", SDN_MACVLAN])[0]["linkinfo"]["info_data"]["mode"],
        "private"
    );
    let web = lab.ext.serve_http(&[WEB_PORT, 0]);

    let use_source = |source: &str, gateway: &str, web_net: &str| {
        router.ip(&["addr", "add", source, "dev", SDN_MACVLAN, "nodad"]);
        router.ip(&[
            "route",
            "replace",
            web_net,
            "via",
            gateway,
            "dev",
            SDN_MACVLAN,
        ]);
    };
    router.ip(&["link", "set", SDN_MACVLAN, "up"]);

    // A source other than the egress source is dropped by the web server's firewall.
    use_source("203.0.113.98/24", GATEWAY4, WEB_NET4);
    assert!(router.http_get(ip(WEB4), WEB_PORT, TIMEOUT).is_err());
    router.ip(&["addr", "del", "203.0.113.98/24", "dev", SDN_MACVLAN]);

    use_source(EGRESS_SOURCE4, GATEWAY4, WEB_NET4);
    use_source(EGRESS_SOURCE6, GATEWAY6, WEB_NET6);
    let other_port = web.ports()[1];
    for (addr, port, source) in [
        (WEB4, WEB_PORT, EGRESS_SOURCE4),
        (FALLBACK4, other_port, EGRESS_SOURCE4),
        (WEB6, WEB_PORT, EGRESS_SOURCE6),
    ] {
        let body = router.http_get(ip(addr), port, TIMEOUT).unwrap();
        assert_eq!(body, format!("peer={} port={port}\n", ip(source)));
    }
    let source4: IpAddr = ip(EGRESS_SOURCE4);
    let source6: IpAddr = ip(EGRESS_SOURCE6);
    assert!(
        !web.peers().contains(&ip("203.0.113.98")),
        "the firewall let it in"
    );
    assert_eq!(
        web.peers()
            .iter()
            .filter(|&&p| p == source4 || p == source6)
            .count(),
        3
    );

    let mac = router.link_mac(SDN_MACVLAN);
    assert_eq!(lab.ext.neighbour_mac(source4), Some(mac.clone()));
    assert_eq!(lab.ext.neighbour_mac(source6), Some(mac));
}

/// The kernel's own announcements (arp_notify, ndisc_notify) of an address that comes up are
/// enough for the gateway to learn it: no traffic needed.
#[test]
fn gateway_learns_announced_addresses() {
    let _lock = shared();
    let lab = Lab::with_adopted_macvlan();
    let router = &lab.router;
    router.sysctl_set(&format!("net.ipv4.conf.{SDN_MACVLAN}.arp_notify"), "1");
    router.sysctl_set(&format!("net.ipv6.conf.{SDN_MACVLAN}.ndisc_notify"), "1");
    for source in [EGRESS_SOURCE4, EGRESS_SOURCE6] {
        router.ip(&["addr", "add", source, "dev", SDN_MACVLAN, "nodad"]);
    }
    router.ip(&["link", "set", SDN_MACVLAN, "up"]);

    let mac = router.link_mac(SDN_MACVLAN);
    for source in [EGRESS_SOURCE4, EGRESS_SOURCE6] {
        let deadline = Instant::now() + TIMEOUT;
        let mut learned = lab.ext.neighbour_mac(ip(source));
        while learned.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            learned = lab.ext.neighbour_mac(ip(source));
        }
        assert_eq!(learned.as_ref(), Some(&mac), "{source}");
    }
}

#[test]
fn snapshot_sees_every_change_and_its_undo() {
    let _lock = shared();
    let lab = Lab::new();
    let ns = &lab.router;
    let before = Snapshot::take(ns);
    let again = Snapshot::take(ns);
    assert_eq!(
        before,
        again,
        "nothing changed, yet:\n{}",
        before.diff(&again)
    );
    assert!(before.lines().iter().any(|l| l.starts_with("link eth0 ")));
    assert!(before
        .lines()
        .iter()
        .any(|l| l.starts_with("addr eth0 192.0.2.2/24 ")));
    assert!(before
        .lines()
        .iter()
        .any(|l| l.contains(r#""dst":"default""#)));

    type Change<'a> = (&'a str, &'a dyn Fn(), &'a dyn Fn());
    let changes: [Change; 6] = [
        (
            "198.51.100.0/24",
            &|| {
                ns.ip(&["route", "add", WEB_NET4, "via", "192.0.2.1", "table", "100"]);
            },
            &|| {
                ns.ip(&["route", "del", WEB_NET4, "table", "100"]);
            },
        ),
        (
            "net.ipv4.conf.eth0.arp_notify",
            &|| ns.sysctl_set("net.ipv4.conf.eth0.arp_notify", "1"),
            &|| ns.sysctl_set("net.ipv4.conf.eth0.arp_notify", "0"),
        ),
        (
            // Writing ip_forward also flips every interface's `forwarding`.
            "net.ipv4.conf.eth0.forwarding",
            &|| ns.sysctl_set("net.ipv4.ip_forward", "1"),
            &|| ns.sysctl_set("net.ipv4.ip_forward", "0"),
        ),
        (
            "egt_probe",
            &|| {
                ns.nft(
                    "table inet egt_probe {
                        chain c { type filter hook forward priority 0
                        }
                    }",
                )
            },
            &|| ns.nft("delete table inet egt_probe"),
        ),
        (
            r#""src":"203.0.113.99","table":"100""#,
            &|| {
                ns.ip(&["rule", "add", "from", "203.0.113.99", "lookup", "100"]);
            },
            &|| {
                ns.ip(&["rule", "del", "from", "203.0.113.99", "lookup", "100"]);
            },
        ),
        (
            "203.0.113.99/24",
            &|| {
                ns.ip(&["addr", "add", EGRESS_SOURCE4, "dev", "eth0"]);
            },
            &|| {
                ns.ip(&["addr", "del", EGRESS_SOURCE4, "dev", "eth0"]);
            },
        ),
    ];
    for (named, change, undo) in changes {
        change();
        let changed = Snapshot::take(ns);
        let diff = before.diff(&changed);
        assert_ne!(before, changed, "change of {named} not seen");
        assert!(diff.contains(named), "diff does not name {named}:\n{diff}");
        assert!(
            diff.lines()
                .all(|l| l.starts_with("- ") || l.starts_with("+ ")),
            "{diff}"
        );
        undo();
        let undone = Snapshot::take(ns);
        assert_eq!(
            before,
            undone,
            "after undoing {named}:\n{}",
            before.diff(&undone)
        );
    }

    // The address protocol (a marker iproute2 6.1 can neither set nor show).
    let marked = "192.0.2.50/24";
    ns.add_address("eth0", marked, 158);
    let diff = before.diff(&Snapshot::take(ns));
    assert!(
        diff.contains(marked) && diff.contains(r#""protocol":158"#),
        "{diff}"
    );
    ns.ip(&["addr", "del", marked, "dev", "eth0"]);
    assert_eq!(before, Snapshot::take(ns));

    // Links: a macvlan arriving from the node shows with its mode and a parent elsewhere.
    lab.make_sdn_macvlan(SDN_MACVLAN);
    let diff = before.diff(&Snapshot::take(ns));
    assert!(
        diff.contains(r#""kind":"macvlan""#) && diff.contains(r#""mode":"private""#),
        "{diff}"
    );
    assert!(diff.contains("(other netns)"), "{diff}");
    ns.ip(&["link", "del", SDN_MACVLAN]);
    assert_eq!(before, Snapshot::take(ns));
}
#[test]
fn netns_helpers() {
    let _lock = shared();
    let ns = Netns::new("helpers");
    assert!(ns.name().ends_with("-helpers"));
    assert_eq!(
        ns.path(),
        std::path::Path::new("/run/netns").join(ns.name())
    );
    let err = ns
        .try_exec(&["ip", "link", "show", "nosuchlink"])
        .unwrap_err();
    assert!(err.contains("nosuchlink"), "{err}");
    assert!(ns.try_sysctl_get("net.ipv4.no_such_key").is_err());
    assert!(!ns.has_sysctl("net.ipv4.no_such_key"));
    // rtnetlink: a kernel error comes back as its errno (no link 999 here).
    let mut bad = AddressMessage::default();
    bad.header.family = AddressFamily::Inet;
    bad.header.prefix_len = 24;
    bad.header.index = 999;
    bad.attributes = vec![AddressAttribute::Local(ip("192.0.2.77"))];
    let err = ns
        .rtnetlink(RouteNetlinkMessage::NewAddress(bad), NLM_F_CREATE)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "{err}");
    // run() is really inside: only lo exists there.
    let links = ns.run(|| {
        std::fs::read_dir("/proc/sys/net/ipv4/conf")
            .unwrap()
            .count()
    });
    assert_eq!(links, 3, "all, default, lo");
    let panicked = catch_unwind(AssertUnwindSafe(|| ns.run(|| panic!("inside"))));
    assert!(panicked.is_err());
}

/// The switch of `Lab::with_switch`: the gateway is reached through it, from the node's
/// macvlan parent and from an attached host, and it drops the frames of the MAC it is told to.
#[test]
fn the_switch_forwards_between_its_ports_and_drops_one_source_mac() {
    let _lock = shared();
    let lab = Lab::with_switch();
    let names = lab.ns_names();
    assert_eq!(names.len(), 5);
    let ports = lab
        .switch()
        .ip_json(&["link", "show", "master", SWITCH_BRIDGE]);
    let mut ports: Vec<&str> = ports
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ifname"].as_str().unwrap())
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, [SWITCH_GATEWAY_PORT, SWITCH_NODE_PORT]);
    let host = lab.attach_host("host");
    host.ip(&["addr", "add", "203.0.113.50/24", "dev", "eth0"]);
    assert!(ping(&host, ip(GATEWAY4)));
    lab.switch_drop_from(&host.link_mac("eth0"));
    assert!(!ping(&host, ip(GATEWAY4)));
    // The node's side still passes.
    lab.make_sdn_macvlan(SDN_MACVLAN);
    lab.router
        .ip(&["addr", "add", "203.0.113.51/24", "dev", SDN_MACVLAN]);
    lab.router.ip(&["link", "set", SDN_MACVLAN, "up"]);
    assert!(ping(&lab.router, ip(GATEWAY4)));
    drop((host, lab));
    assert_gone(&names);
}

#[test]
fn drop_deletes_namespaces() {
    let _lock = shared();
    let lab = Lab::new();
    let names = lab.ns_names();
    assert_eq!(names.len(), 4);
    let left = leftover_namespaces();
    assert!(
        names.iter().all(|n| left.contains(n)),
        "{names:?} vs {left:?}"
    );
    drop(lab);
    assert_gone(&names);
}

#[test]
fn drop_deletes_namespaces_when_the_test_panics() {
    let _lock = shared();
    let mut names = Vec::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::with_adopted_macvlan();
        names = lab.ns_names();
        let _web = lab.ext.serve_http(&[WEB_PORT]);
        panic!("test body fails");
    }));
    assert!(result.is_err());
    assert_eq!(names.len(), 4);
    assert_gone(&names);
}

#[test]
fn nothing_left_behind() {
    let _lock = NAMESPACES.write().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::new();
    let one = Netns::new("extra");
    assert_eq!(leftover_namespaces().len(), 5);
    drop((lab, one));
    assert_eq!(leftover_namespaces(), Vec::<String>::new());
}
