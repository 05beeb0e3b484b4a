//! Unit tests of the diagnosis without the kernel: the checks made from hand-made findings (what
//! each probe outcome means, and its hint), the public types, the options.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use super::{
    checks::{self, Seen},
    conntrack::Flow,
    probe::{self, Connected, Probes, Reply},
    reads::{LinkFacts, Parent, RouteSeen},
    socket::{Heard, Reached},
    subject::{held_sources, tcp_targets, Subject},
    Check, DiagnoseOptions, Diagnosis, Status,
};
use crate::{
    kernel::{ifname::IfName, netns::NsHandle},
    objects::{
        addr::Addr,
        link::{Link, LinkConf},
        role::{marker, role_in, Claim},
        Current,
    },
    role::Role,
    spec::{Announce, Netns, Protocol, Redirect, DEFAULT_ANNOUNCE_INTERVAL},
    FallbackStats, RedirectStats, Stats,
};

const EXT: u32 = 3;
const INT: u32 = 2;
const MACVLAN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x99];
const PARENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x10];
const GATEWAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x01];
const OTHER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x42];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn subject() -> Subject {
    Subject {
        name: "egress-1".into(),
        spec: None,
        exists: true,
        link: Some("macvlan0".into()),
        created: true,
        sources: vec!["203.0.113.99/24".parse().unwrap()],
        held: vec![ip("203.0.113.99")],
        gateways: vec![ip("203.0.113.1")],
        redirects: vec![
            Redirect::of(Protocol::Tcp, 80, "198.51.100.25", 8080),
            Redirect::of(Protocol::Tcp, 8080, "198.51.100.25", 8080),
            Redirect::of(Protocol::Tcp, 81, "198.51.100.26", 9),
            Redirect::of(Protocol::Udp, 53, "198.51.100.53", 53),
        ],
        fallback: vec![ip("198.51.100.9")],
        internal: vec!["eth0".into()],
    }
}

fn link(index: u32, name: &str) -> Link {
    Link {
        index,
        name: name.into(),
        mtu: 1500,
        up: true,
        kind: None,
        macvlan_mode: None,
        mac: vec![2, 0, 0, 0, 0, index as u8],
        group: 0,
        conf: LinkConf::default(),
    }
}

fn now() -> Current {
    Current {
        netns: "/run/netns/pod".into(),
        links: vec![link(1, "lo"), link(INT, "eth0"), link(EXT, "macvlan0")],
        ..Current::default()
    }
}

fn facts(name: &str, index: u32, mac: [u8; 6]) -> LinkFacts {
    LinkFacts {
        name: name.into(),
        index,
        mac,
        up: true,
        carrier: true,
        operstate: "up".into(),
        kind: Some("macvlan".into()),
        parent_index: Some(7),
        parent_nsid: Some(0),
    }
}

fn parent() -> Parent {
    Parent {
        ns: NsHandle::open(&Netns::Path("/proc/self/ns/net".into()), "netns").unwrap(),
        link: facts("ext0", 7, PARENT_MAC),
    }
}

fn heard(mac: [u8; 6]) -> Reply {
    Reply::Heard(vec![Heard {
        mac,
        after: Duration::from_micros(250),
    }])
}

/// Findings of a healthy router, for a test to break.
fn healthy(subject: &Subject) -> Probes {
    let tcp = |to: &str, port: u16| Connected {
        to: SocketAddr::new(ip(to), port),
        source: Some(ip("203.0.113.99")),
        reached: Reached::Connected,
        took: Duration::from_micros(300),
    };
    Probes {
        gateways: vec![heard(GATEWAY_MAC)],
        parent: vec![None],
        duplicates: vec![Reply::Silent; subject.sources.len()],
        connects: vec![tcp("198.51.100.25", 8080), tcp("198.51.100.26", 9)],
    }
}

fn stats(connections: u64) -> Stats {
    let redirect = |protocol, port, to: &str, to_port| RedirectStats {
        protocol,
        port,
        to: ip(to),
        to_port,
        connections,
        packets: connections * 10,
        bytes: connections * 1000,
    };
    Stats {
        name: "egress-1".into(),
        redirects: vec![
            redirect(Protocol::Tcp, 80, "198.51.100.25", 8080),
            redirect(Protocol::Tcp, 8080, "198.51.100.25", 8080),
            redirect(Protocol::Tcp, 81, "198.51.100.26", 9),
            redirect(Protocol::Udp, 53, "198.51.100.53", 53),
        ],
        fallback: vec![FallbackStats {
            to: ip("198.51.100.9"),
            connections,
            packets: connections * 10,
            bytes: connections * 1000,
        }],
        snat: Vec::new(),
        conntrack_entries: 0,
    }
}

/// The checks of `probes` (and `flows`, `stats`) on the router of [`subject`], every route
/// through the gateway on the external link unless `routes` says otherwise.
fn diagnose_with(
    subject: &Subject,
    probes: Probes,
    parent: Result<Parent, String>,
    routes: Vec<(IpAddr, RouteSeen)>,
    stats: Option<Stats>,
    flows: Vec<Flow>,
) -> Diagnosis {
    diagnose_in(&now(), subject, probes, parent, routes, stats, flows)
}

/// [`diagnose_with`] in the namespace `now`.
fn diagnose_in(
    now: &Current,
    subject: &Subject,
    probes: Probes,
    parent: Result<Parent, String>,
    routes: Vec<(IpAddr, RouteSeen)>,
    stats: Option<Stats>,
    flows: Vec<Flow>,
) -> Diagnosis {
    let mut all_routes = routes;
    for to in checks::destinations(subject) {
        if !all_routes.iter().any(|(a, _)| *a == to) {
            all_routes.push((to, Ok((Some(EXT), Some(ip("203.0.113.1"))))));
        }
    }
    let seen = Seen {
        subject,
        now,
        drift: Vec::new(),
        link: Some(facts("macvlan0", EXT, MACVLAN_MAC)),
        parent,
        sysctls: BTreeMap::from([
            ("net/ipv4/ip_forward".to_string(), "1".to_string()),
            ("net/ipv4/conf/all/rp_filter".to_string(), "0".to_string()),
        ]),
        neighbours: BTreeMap::new(),
        routes: all_routes,
        stats,
        flows: Ok(flows),
        probes,
        timeout: Duration::from_millis(300),
        fallback_ports: &[],
    };
    Diagnosis {
        router: subject.name.clone(),
        checks: checks::all(&seen),
    }
}

fn one<'a>(d: &'a Diagnosis, name: &str) -> &'a Check {
    let found = d.named(name);
    assert_eq!(found.len(), 1, "{d}");
    found[0]
}

#[test]
fn healthy_findings_make_every_check_ok() {
    let s = subject();
    let d = diagnose_with(
        &s,
        healthy(&s),
        Ok(parent()),
        vec![],
        Some(stats(1)),
        vec![],
    );
    let refused = d
        .named("destination")
        .into_iter()
        .filter(|c| c.status != Status::Ok)
        .count();
    assert_eq!(refused, 0, "{d}");
    assert_eq!(d.status(), Status::Ok, "{d}");
    // The order is fixed; subjects repeat a name.
    let names: Vec<&str> = d.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "state",
            "link",
            "sysctl",
            "gateway",
            "l2_filter",
            "duplicate_address",
            "destination",
            "destination",
            "destination",
            "destination",
            "traffic",
            "traffic",
            "traffic",
            "traffic",
            "traffic",
        ]
    );
}

/// An instance that does not hold the egress address (a standby, or the address gone) asks
/// the gateway from the unspecified address, an ARP probe, and the gateway's answer still
/// says it is there; one that holds it asks from it. The egress addresses are always probed
/// from the unspecified address.
#[test]
fn the_gateway_is_asked_from_the_egress_address_only_where_it_is_held() {
    let held = subject();
    let gateway_ask = |s: &Subject| probe::asks(s)[0];
    assert_eq!(gateway_ask(&held).sender, Some(ip("203.0.113.99")));
    let standby = Subject {
        held: vec![],
        ..subject()
    };
    assert_eq!(gateway_ask(&standby).target, ip("203.0.113.1"));
    assert_eq!(gateway_ask(&standby).sender, None);
    assert!(probe::asks(&standby)[1..]
        .iter()
        .all(|a| a.sender.is_none() && a.conflict));

    let d = diagnose_with(
        &standby,
        healthy(&standby),
        Ok(parent()),
        vec![],
        Some(stats(1)),
        vec![],
    );
    let gateway = one(&d, "gateway");
    assert_eq!(gateway.status, Status::Ok, "{d}");
    assert_eq!(gateway.evidence["probe"], "ARP probe (sender 0.0.0.0)");
    assert_eq!(gateway.evidence["sender"], serde_json::Value::Null);
    assert!(
        gateway.summary.starts_with(
            "203.0.113.1 answered an ARP probe (sender 0.0.0.0) from macvlan0 (203.0.113.99 \
             is not held here)"
        ),
        "{}",
        gateway.summary
    );
}

/// Held: the address is on the router's external link (and the router is active: no role
/// marker says otherwise).
#[test]
fn an_egress_address_is_held_only_while_it_is_on_the_external_link() {
    let sources: Vec<ipnetwork::IpNetwork> = vec![
        "203.0.113.99/24".parse().unwrap(),
        "2001:db8:2::99/64".parse().unwrap(),
    ];
    let addr = |index: u32, net: &str| Addr {
        index,
        net: net.parse().unwrap(),
        ours: true,
        has_protocol: true,
    };
    let mut now = now();
    assert!(held_sources(&now, "egress-1", "macvlan0", &sources).is_empty());
    now.addrs = vec![addr(EXT, "203.0.113.99/24"), addr(INT, "2001:db8:2::99/64")];
    assert_eq!(
        held_sources(&now, "egress-1", "macvlan0", &sources),
        [ip("203.0.113.99")]
    );
    assert!(held_sources(&now, "egress-1", "macvlan1", &sources).is_empty());
}

#[test]
fn l2_filter_tells_a_mac_filter_from_a_gateway_that_is_not_there() {
    let s = subject();
    let silent = |parent_reply: Option<Reply>| Probes {
        gateways: vec![Reply::Silent],
        parent: vec![parent_reply],
        ..healthy(&s)
    };

    // The parent gets an answer, the macvlan does not: a filter of the macvlan's MAC.
    let d = diagnose_with(
        &s,
        silent(Some(heard(GATEWAY_MAC))),
        Ok(parent()),
        vec![],
        None,
        vec![],
    );
    let l2 = one(&d, "l2_filter");
    assert_eq!(l2.status, Status::Fail);
    assert!(l2.summary.contains("02:00:00:00:00:99"), "{}", l2.summary);
    assert!(
        l2.summary.contains("ext0 (MAC 02:00:00:00:00:10"),
        "{}",
        l2.summary
    );
    let hint = l2.hint.as_deref().unwrap();
    for platform in [
        "Forged transmits",
        "allowed address pair",
        "No Network Filter",
        "MAC limit",
    ] {
        assert!(hint.contains(platform), "{platform}: {hint}");
    }
    assert!(
        hint.contains("ip-address=203.0.113.99,mac-address=02:00:00:00:00:99"),
        "{hint}"
    );
    assert_eq!(
        l2.evidence["parent_answered_by"][0]["mac"],
        "02:00:00:00:00:01"
    );
    let gateway = one(&d, "gateway");
    assert_eq!(gateway.status, Status::Fail);
    assert!(gateway.hint.as_deref().unwrap().contains("see l2_filter"));

    // Neither gets an answer: no sign of a filter; the gateway is the problem.
    let d = diagnose_with(
        &s,
        silent(Some(Reply::Silent)),
        Ok(parent()),
        vec![],
        None,
        vec![],
    );
    let l2 = one(&d, "l2_filter");
    assert_eq!(l2.status, Status::Warn, "{d}");
    assert!(l2.summary.contains("either"), "{}", l2.summary);
    assert!(one(&d, "gateway")
        .hint
        .as_deref()
        .unwrap()
        .contains("node's own link either"));

    // The parent could not be asked: not compared, said so.
    let d = diagnose_with(
        &s,
        silent(Some(Reply::NotAsked("the parent link ext0 is down".into()))),
        Err("unknown".into()),
        vec![],
        None,
        vec![],
    );
    let l2 = one(&d, "l2_filter");
    assert_eq!(l2.status, Status::Skipped, "{d}");
    assert!(l2.summary.contains("ext0 is down"), "{}", l2.summary);

    // Two gateways answer: a warning naming both.
    let two = Reply::Heard(vec![
        Heard {
            mac: GATEWAY_MAC,
            after: Duration::from_micros(100),
        },
        Heard {
            mac: OTHER_MAC,
            after: Duration::from_micros(200),
        },
    ]);
    let probes = Probes {
        gateways: vec![two],
        ..healthy(&s)
    };
    let d = diagnose_with(&s, probes, Ok(parent()), vec![], None, vec![]);
    let gateway = one(&d, "gateway");
    assert_eq!(gateway.status, Status::Warn);
    assert!(
        gateway.summary.contains("02:00:00:00:00:42"),
        "{}",
        gateway.summary
    );
}

#[test]
fn another_mac_answering_for_the_egress_address_fails_duplicate_address() {
    let s = subject();
    let probes = Probes {
        duplicates: vec![heard(OTHER_MAC)],
        ..healthy(&s)
    };
    let d = diagnose_with(&s, probes, Ok(parent()), vec![], None, vec![]);
    let dup = one(&d, "duplicate_address");
    assert_eq!(dup.status, Status::Fail);
    assert!(dup
        .summary
        .contains("another host answers for 203.0.113.99: MAC 02:00:00:00:00:42"));
    assert!(dup.hint.as_deref().unwrap().contains("02:00:00:00:00:42"));
    assert!(d.failed());
}

/// The namespace of [`subject`]'s router as a standby: its role marker says so, and its
/// identity notes record the stable MAC it would take (if any).
fn standby_now(stable_mac: Option<[u8; 6]>) -> Current {
    let s = subject();
    let claim = Claim {
        router: s.name.clone(),
        internal: IfName::parse("eth0").unwrap(),
        link: IfName::parse("macvlan0").unwrap(),
        created: true,
        sources: s.sources.clone(),
        gateways: s.gateways.clone(),
        stable_mac,
        own_mac: Some(MACVLAN_MAC),
        announce: Announce {
            count: 1,
            interval: DEFAULT_ANNOUNCE_INTERVAL,
        },
    };
    let mut now = now();
    now.routes = claim.notes(7);
    now.routes
        .push(marker(&s.name, Role::Standby, Some(MACVLAN_MAC)));
    now
}

/// On a standby the egress address is held elsewhere: one answer is the active instance (ok,
/// naming its MAC, and the stable MAC as such), none means no instance holds it (warn), two
/// are a duplicate beside it (fail). On the active router any answer stays a conflict.
#[test]
fn on_a_standby_one_answer_for_the_egress_address_is_the_active_instance() {
    let s = Subject {
        held: vec![],
        ..subject()
    };
    let dup = |now: &Current, reply: Reply| {
        let probes = Probes {
            duplicates: vec![reply],
            ..healthy(&s)
        };
        let d = diagnose_in(now, &s, probes, Ok(parent()), vec![], None, vec![]);
        one(&d, "duplicate_address").clone()
    };
    let standby = standby_now(None);
    assert_eq!(role_in(&standby, "egress-1"), Role::Standby);

    let c = dup(&standby, heard(OTHER_MAC));
    assert_eq!(c.status, Status::Ok, "{c:?}");
    assert!(c.hint.is_none());
    assert_eq!(
        c.summary,
        "203.0.113.99 is held by the active instance: MAC 02:00:00:00:00:42 answered an ARP \
         probe (sender 0.0.0.0) in 0.25 ms (macvlan0, a standby, does not hold it)"
    );
    assert_eq!(c.evidence["role"], "standby");
    assert_eq!(c.evidence["answered_by"][0]["mac"], "02:00:00:00:00:42");

    // The active instance answers with the stable MAC the pair shares: said so.
    let c = dup(&standby_now(Some(OTHER_MAC)), heard(OTHER_MAC));
    assert_eq!(c.status, Status::Ok, "{c:?}");
    assert!(
        c.summary.starts_with(
            "203.0.113.99 is held by the active instance, at the pair's stable MAC: MAC \
             02:00:00:00:00:42"
        ),
        "{}",
        c.summary
    );

    let c = dup(&standby, Reply::Silent);
    assert_eq!(c.status, Status::Warn, "{c:?}");
    assert!(
        c.summary.contains("no instance holds the egress address"),
        "{}",
        c.summary
    );
    assert!(c.hint.as_deref().unwrap().contains("election"), "{c:?}");
    assert!(c.evidence.get("answered_by").is_none());

    let two = Reply::Heard(vec![
        Heard {
            mac: OTHER_MAC,
            after: Duration::from_micros(100),
        },
        Heard {
            mac: GATEWAY_MAC,
            after: Duration::from_micros(200),
        },
    ]);
    let c = dup(&standby, two);
    assert_eq!(c.status, Status::Fail, "{c:?}");
    assert!(
        c.summary.contains(
            "more than one host answers for 203.0.113.99: MAC 02:00:00:00:00:42, \
             02:00:00:00:00:01"
        ),
        "{}",
        c.summary
    );

    // Without a role marker the router is active: the same answer is a conflict, and
    // silence is health.
    let active = now();
    assert_eq!(role_in(&active, "egress-1"), Role::Active);
    let c = dup(&active, heard(OTHER_MAC));
    assert_eq!(c.status, Status::Fail, "{c:?}");
    assert_eq!(c.evidence["role"], "active");
    assert_eq!(dup(&active, Reply::Silent).status, Status::Ok);
}

#[test]
fn connection_outcomes_and_routes_are_told_apart() {
    let s = subject();
    let with = |reached| Probes {
        connects: vec![Connected {
            to: SocketAddr::new(ip("198.51.100.26"), 9),
            source: Some(ip("203.0.113.99")),
            reached,
            took: Duration::from_millis(300),
        }],
        ..healthy(&s)
    };
    for (reached, status, result, hint) in [
        (Reached::Connected, Status::Ok, "connected", None),
        (
            Reached::Refused,
            Status::Fail,
            "refused",
            Some("nothing listens on"),
        ),
        (
            Reached::NoAnswer,
            Status::Fail,
            "no_answer",
            Some("a firewall on the way"),
        ),
        (
            Reached::Unreachable(libc::EHOSTUNREACH),
            Status::Fail,
            "unreachable",
            Some("rejects"),
        ),
        (
            Reached::NotTried(libc::EADDRNOTAVAIL),
            Status::Skipped,
            "not_tried",
            None,
        ),
    ] {
        let d = diagnose_with(&s, with(reached), Ok(parent()), vec![], None, vec![]);
        let c = d
            .named("destination")
            .into_iter()
            .find(|c| c.evidence["port"] == 9)
            .unwrap();
        assert_eq!(c.status, status, "{reached:?}: {d}");
        assert_eq!(c.evidence["result"], result);
        match hint {
            Some(h) => assert!(c.hint.as_deref().unwrap().contains(h), "{c:?}"),
            None => assert_eq!(c.hint, None),
        }
    }

    // A destination routed out of the internal link leaves without the egress address.
    let d = diagnose_with(
        &s,
        healthy(&s),
        Ok(parent()),
        vec![(ip("198.51.100.25"), Ok((Some(INT), None)))],
        None,
        vec![],
    );
    let c = d
        .named("destination")
        .into_iter()
        .find(|c| c.evidence["port"] == 8080)
        .unwrap();
    assert_eq!(c.status, Status::Fail, "{d}");
    assert!(
        c.summary.contains("goes out of eth0, not macvlan0"),
        "{}",
        c.summary
    );

    // UDP and the fallback without a port: only the route.
    let d = diagnose_with(&s, healthy(&s), Ok(parent()), vec![], None, vec![]);
    let routes: Vec<&Check> = d
        .named("destination")
        .into_iter()
        .filter(|c| c.evidence["probe"] == "route")
        .collect();
    assert_eq!(routes.len(), 2, "{d}");
    assert!(routes.iter().all(|c| c.status == Status::Ok));
}

#[test]
fn traffic_tells_unused_from_unanswered_and_misrouted() {
    let s = subject();
    let flow = |client: &str, replied| Flow {
        protocol: 6,
        port: 80,
        to: ip("198.51.100.25"),
        client: ip(client),
        replied,
    };
    let tcp80 = |d: &Diagnosis| -> Check {
        d.named("traffic")
            .into_iter()
            .find(|c| c.evidence["redirect"] == "tcp/80")
            .cloned()
            .unwrap()
    };
    let d = diagnose_with(
        &s,
        healthy(&s),
        Ok(parent()),
        vec![],
        Some(stats(0)),
        vec![],
    );
    let c = tcp80(&d);
    assert_eq!(c.status, Status::Ok);
    assert!(
        c.summary.contains("no connection since apply"),
        "{}",
        c.summary
    );

    let unanswered = vec![flow("192.0.2.3", false), flow("192.0.2.4", false)];
    let d = diagnose_with(
        &s,
        healthy(&s),
        Ok(parent()),
        vec![],
        Some(stats(2)),
        unanswered,
    );
    let c = tcp80(&d);
    assert_eq!(c.status, Status::Warn, "{d}");
    assert_eq!(c.evidence["tracked"], 2);
    assert_eq!(c.evidence["unreplied"], 2);

    let mixed = vec![flow("192.0.2.3", true), flow("192.0.2.4", false)];
    let d = diagnose_with(&s, healthy(&s), Ok(parent()), vec![], Some(stats(2)), mixed);
    assert_eq!(tcp80(&d).status, Status::Ok, "{d}");

    // A client whose route goes out of the external link never gets its replies.
    let far = vec![flow("10.128.0.7", true)];
    let d = diagnose_with(
        &s,
        healthy(&s),
        Ok(parent()),
        vec![(ip("10.128.0.7"), Ok((Some(EXT), Some(ip("203.0.113.1")))))],
        Some(stats(1)),
        far,
    );
    let c = tcp80(&d);
    assert_eq!(c.status, Status::Fail, "{d}");
    assert_eq!(c.evidence["misrouted_clients"][0], "10.128.0.7");
    assert!(c.hint.as_deref().unwrap().contains("kept_routes"));
}

#[test]
fn a_router_that_is_not_there_fails_state_and_skips_the_rest() {
    let s = Subject {
        exists: false,
        ..subject()
    };
    let d = diagnose_with(
        &s,
        Probes::default(),
        Err("no link".into()),
        vec![],
        None,
        vec![],
    );
    assert_eq!(d.checks[0].name, "state");
    assert_eq!(d.checks[0].status, Status::Fail);
    assert!(d.checks[1..].iter().all(|c| c.status == Status::Skipped));
    assert_eq!(d.checks.len(), 8);
}

#[test]
fn the_human_form_is_one_line_per_check_with_its_hint() {
    let d = Diagnosis {
        router: "egress-1".into(),
        checks: vec![
            Check {
                name: "state".into(),
                status: Status::Ok,
                summary: "in place".into(),
                hint: None,
                evidence: serde_json::json!({}),
            },
            Check {
                name: "l2_filter".into(),
                status: Status::Fail,
                summary: "dropped".into(),
                hint: Some("allow the MAC".into()),
                evidence: serde_json::json!({}),
            },
        ],
    };
    assert_eq!(
        d.to_string(),
        "router egress-1: 2 checks, 1 failed\n  ok      state             in place\n  fail    \
         l2_filter         dropped -- hint: allow the MAC\n"
    );
    assert!(d.failed());
    assert_eq!(d.status(), Status::Fail);
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["checks"][1]["status"], "fail");
    assert_eq!(json["checks"][0]["hint"], serde_json::Value::Null);
}

#[test]
fn statuses_order_from_ok_to_fail() {
    assert!(Status::Ok < Status::Skipped);
    assert!(Status::Skipped < Status::Warn);
    assert!(Status::Warn < Status::Fail);
    for s in [Status::Ok, Status::Skipped, Status::Warn, Status::Fail] {
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
}

#[test]
fn options_are_validated() {
    assert!(DiagnoseOptions::new().validate().is_ok());
    for t in [
        Duration::ZERO,
        Duration::from_micros(999),
        Duration::from_secs(11),
    ] {
        let e = DiagnoseOptions::new().timeout(t).validate().unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidSpec, "{t:?}");
    }
    let e = DiagnoseOptions::new()
        .fallback_port(443)
        .fallback_port(0)
        .validate()
        .unwrap_err();
    assert!(e.to_string().contains("fallback_ports[1]"), "{e}");
}

#[test]
fn each_tcp_destination_is_probed_once_with_the_redirects_that_lead_there() {
    let s = subject();
    assert_eq!(
        tcp_targets(&s.redirects),
        vec![
            (ip("198.51.100.25"), 8080, vec![80, 8080]),
            (ip("198.51.100.26"), 9, vec![81]),
        ]
    );
    assert_eq!(
        checks::tcp_destinations(&s, &[443]),
        vec![
            SocketAddr::new(ip("198.51.100.25"), 8080),
            SocketAddr::new(ip("198.51.100.26"), 9),
            SocketAddr::new(ip("198.51.100.9"), 443),
        ]
    );
}
