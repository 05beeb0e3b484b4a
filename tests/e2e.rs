//! End to end, as root, in throwaway namespaces: real TCP through the router, kernel state read
//! back independently (`ip -j`, `nft -j`), and both namespaces restored exactly afterwards.

use std::{net::IpAddr, time::Duration};

use egress_core::{blocking, Drift, EnsureAction, Error, ErrorKind, Netns, RouterSpecBuilder};
use egress_lab::{
    ip, Lab, Snapshots, EGRESS_SOURCE4, EGRESS_SOURCE6, FALLBACK4, GATEWAY4, GATEWAY6, NODE4,
    ROUTER_ETH0_4, ROUTER_ETH0_6, SERVICE_PORT, WEB4, WEB6, WEB_PORT,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(2);

fn source4() -> IpAddr {
    ip(EGRESS_SOURCE4.split('/').next().unwrap())
}
fn source6() -> IpAddr {
    ip(EGRESS_SOURCE6.split('/').next().unwrap())
}
fn ns(n: &egress_lab::Netns) -> Netns {
    Netns::Path(n.path().into())
}

fn dual_stack(lab: &Lab, name: &str) -> RouterSpecBuilder {
    lab.router_spec(name)
        .source(EGRESS_SOURCE6)
        .gateway(GATEWAY6)
        .redirect(
            egress_core::Protocol::Tcp,
            SERVICE_PORT,
            WEB6,
            Some(WEB_PORT),
        )
}

fn nft_table(lab: &Lab, table: &str) -> Option<Value> {
    let v: Value =
        serde_json::from_str(&lab.router.exec(&["nft", "-j", "list", "ruleset"])).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["table"]["name"] == table)
        .cloned()
}

fn nft_objects(lab: &Lab, table: &str, kind: &str) -> Vec<Value> {
    let v: Value =
        serde_json::from_str(&lab.router.exec(&["nft", "-j", "list", "ruleset"])).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get(kind))
        .filter(|o| o["table"] == table)
        .cloned()
        .collect()
}

#[test]
fn dual_stack_router_forwards_real_tcp_and_tears_down_exactly() {
    let root_links_before = egress_lab::root_links();
    let lab = Lab::new();
    let web = lab.ext.serve_http(&[WEB_PORT, SERVICE_PORT]);
    let snaps = Snapshots::take(&lab);
    let spec = dual_stack(&lab, "e2e").build().unwrap();
    assert!(lab.client.http_get(ip(WEB4), WEB_PORT, T).is_err());

    let router = blocking::apply(&spec).unwrap();

    // Real TCP, both families, each redirect and the fallback.
    let body = lab
        .client
        .http_get(ip(ROUTER_ETH0_4), SERVICE_PORT, T)
        .unwrap();
    assert_eq!(body.trim(), format!("peer={} port={WEB_PORT}", source4()));
    let body = lab
        .client
        .http_get(ip(ROUTER_ETH0_6), SERVICE_PORT, T)
        .unwrap();
    assert_eq!(body.trim(), format!("peer={} port={WEB_PORT}", source6()));
    let body = lab.client.http_get(ip(ROUTER_ETH0_4), WEB_PORT, T).unwrap();
    assert_eq!(body.trim(), format!("peer={} port={WEB_PORT}", source4()));
    assert!(web
        .peers()
        .iter()
        .all(|p| *p == source4() || *p == source6()));

    // Second opinion on kernel state: ip -j.
    let links = lab.router.ip_json(&["-d", "link", "show", "macvlan0"]);
    let l = &links[0];
    assert_eq!(l["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(l["linkinfo"]["info_data"]["mode"], "private");
    assert!(l["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    let addrs = lab.router.ip_json(&["addr", "show", "macvlan0"]);
    let have: Vec<String> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    assert!(have.contains(&EGRESS_SOURCE4.to_string()), "{have:?}");
    assert!(have.contains(&EGRESS_SOURCE6.to_string()), "{have:?}");
    let defaults = lab.router.ip_json(&["route", "show", "default"]);
    assert_eq!(defaults.as_array().unwrap().len(), 1, "{defaults}");
    assert_eq!(defaults[0]["gateway"], GATEWAY4);
    assert_eq!(defaults[0]["dev"], "macvlan0");
    let defaults6 = lab.router.ip_json(&["-6", "route", "show", "default"]);
    assert_eq!(defaults6[0]["gateway"], GATEWAY6);
    // The macvlan was created in the router namespace directly: nothing named like it in node.
    assert!(lab
        .node
        .try_exec(&["ip", "link", "show", "macvlan0"])
        .is_err());
    assert_eq!(lab.router.sysctl_get("net.ipv4.ip_forward"), "1");

    // Second opinion on NAT: nft -j.
    let table = spec.table_name();
    assert!(nft_table(&lab, &table).is_some());
    let chains = nft_objects(&lab, &table, "chain");
    let hooks: Vec<&str> = chains.iter().filter_map(|c| c["hook"].as_str()).collect();
    for h in ["prerouting", "postrouting", "forward", "input"] {
        assert!(hooks.contains(&h), "{hooks:?}");
    }
    let forward = chains.iter().find(|c| c["hook"] == "forward").unwrap();
    assert_eq!(forward["policy"], "drop");
    let maps = nft_objects(&lab, &table, "map");
    assert_eq!(maps.len(), 2, "one map per family: {maps:?}");

    let state = blocking::inspect(spec.netns(), spec.name())
        .unwrap()
        .unwrap();
    assert!(state.link.as_ref().unwrap().created);
    assert_eq!(state.saved_routes.len(), 2, "{:?}", state.saved_routes);

    blocking::teardown(router).unwrap();
    snaps.assert_restored("after teardown");
    assert!(blocking::inspect(spec.netns(), spec.name())
        .unwrap()
        .is_none());
    drop(lab);
    assert_eq!(
        egress_lab::root_links(),
        root_links_before,
        "the host namespace changed"
    );
}

#[test]
fn teardown_by_name_restores_after_the_applier_is_gone() {
    let lab = Lab::new();
    let snaps = Snapshots::take(&lab);
    let spec = dual_stack(&lab, "by-name").build().unwrap();
    // The handle is dropped: only the kernel remembers the router.
    drop(blocking::apply(&spec).unwrap());
    // Its dry run says what it will undo, and changes nothing.
    let planned = blocking::plan_teardown(spec.netns(), spec.name()).unwrap();
    assert!(blocking::check(&spec).unwrap().is_empty());
    let undone = blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
    assert!(!undone.is_empty());
    assert_eq!(planned, undone);
    snaps.assert_restored("after teardown_by_name");
    // Idempotent: nothing left, nothing to do.
    assert!(blocking::plan_teardown(spec.netns(), spec.name())
        .unwrap()
        .is_empty());
    assert!(blocking::teardown_by_name(spec.netns(), spec.name())
        .unwrap()
        .is_empty());
}

#[test]
fn ensure_is_idempotent_and_check_names_drift() {
    let lab = Lab::new();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    let snaps = Snapshots::take(&lab);
    let spec = lab
        .router_spec("ensure")
        .keep_route("192.0.2.128/25", Some(NODE4))
        .build()
        .unwrap();

    let first = blocking::ensure(&spec).unwrap();
    assert_eq!(first.action, EnsureAction::Created);
    let second = blocking::ensure(&spec).unwrap();
    assert_eq!(second.action, EnsureAction::Unchanged, "{:?}", second.drift);
    assert!(!second.changed());
    assert!(blocking::check(&spec).unwrap().is_empty());

    lab.router.ip(&["route", "del", "192.0.2.128/25"]);
    lab.router
        .exec(&["nft", "flush", "table", "inet", &spec.table_name()]);
    let drift = blocking::check(&spec).unwrap();
    assert!(
        drift.iter().any(
            |d| matches!(d, Drift::RouteMissing { route } if route.starts_with("192.0.2.128/25"))
        ),
        "{drift:?}"
    );
    assert!(
        drift.iter().any(|d| matches!(d, Drift::NatChanged { .. })),
        "{drift:?}"
    );

    let repaired = blocking::ensure(&spec).unwrap();
    assert_eq!(repaired.action, EnsureAction::Repaired);
    assert!(blocking::check(&spec).unwrap().is_empty());
    let body = lab.client.http_get(ip(ROUTER_ETH0_4), WEB_PORT, T).unwrap();
    assert!(body.contains(&format!("peer={}", source4())), "{body}");

    // NAT-only drift is repaired in place: the ruleset is reinstalled, the journal kept.
    let journal = blocking::inspect(spec.netns(), spec.name())
        .unwrap()
        .unwrap()
        .journal;
    lab.router.exec(&[
        "nft",
        "flush",
        "chain",
        "inet",
        &spec.table_name(),
        "forward",
    ]);
    let drift = blocking::check(&spec).unwrap();
    assert!(
        matches!(drift.as_slice(), [Drift::NatChanged { .. }]),
        "{drift:?}"
    );
    assert_eq!(
        blocking::ensure(&spec).unwrap().action,
        EnsureAction::Repaired
    );
    assert!(blocking::check(&spec).unwrap().is_empty());
    let state = blocking::inspect(spec.netns(), spec.name())
        .unwrap()
        .unwrap();
    assert_eq!(state.journal, journal);

    blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
    snaps.assert_restored("after ensure, drift, repair and teardown");
}

#[test]
fn router_forwards_only_what_it_translated_and_announces_itself() {
    let lab = Lab::new();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    let spec = dual_stack(&lab, "security").build().unwrap();
    let router = blocking::apply(&spec).unwrap();

    // The gateway learned the egress addresses from the announcements alone.
    let mac = lab.router.link_mac("macvlan0");
    assert_eq!(
        lab.ext.neighbour_mac(source4()).as_deref(),
        Some(mac.as_str())
    );
    assert_eq!(
        lab.ext.neighbour_mac(source6()).as_deref(),
        Some(mac.as_str())
    );

    // A client that routes other traffic through the router (no DNAT) is dropped.
    lab.client
        .ip(&["route", "add", "198.51.100.0/24", "via", ROUTER_ETH0_4]);
    let r = lab
        .client
        .http_get(ip(WEB4), WEB_PORT, Duration::from_secs(1));
    assert!(r.is_err(), "routed traffic was forwarded: {r:?}");

    // An outside host cannot reach the cluster through the router.
    lab.ext.ip(&[
        "route",
        "add",
        "192.0.2.0/24",
        "via",
        &source4().to_string(),
    ]);
    assert!(!egress_lab::ping(&lab.ext, ip("192.0.2.3")));

    blocking::teardown(router).unwrap();
}

/// The router's own ports serve the cluster side only (its input filter): a listener in the
/// router's namespace on `[::]` (dual stack, so `0.0.0.0` too) answers the client through the
/// router's internal addresses, and nobody on the external segment through the egress
/// addresses, in either family — the connection attempt meets silence, not a reset. What the
/// external link must still carry does: the DNAT path with its replies (the gateway resolving
/// the egress IPv6 address by neighbour discovery first), the router's own connections'
/// replies, and ping of the egress addresses.
#[test]
fn the_router_s_own_ports_answer_the_cluster_side_only() {
    let lab = Lab::new();
    let web = lab.ext.serve_http(&[WEB_PORT]);
    let spec = dual_stack(&lab, "input").build().unwrap();
    let router = blocking::apply(&spec).unwrap();
    let own = lab.router.serve_http(&[0]);
    let port = own.ports()[0];

    for addr in [ROUTER_ETH0_4, ROUTER_ETH0_6] {
        let body = lab.client.http_get(ip(addr), port, T).unwrap();
        assert!(body.starts_with("peer="), "{body}");
    }
    let short = Duration::from_millis(500);
    for addr in [source4(), source6()] {
        let e = lab.ext.http_get(addr, port, short).unwrap_err();
        assert!(e.contains("timed out"), "from the external segment: {e}");
    }
    assert_eq!(
        own.peers().len(),
        2,
        "only the client's connections arrived"
    );

    // The gateway forgets the router: it must ask (IPv6: a neighbour solicitation to the
    // router, through the input filter) before the replies can come back.
    lab.ext.ip(&["neigh", "flush", "all"]);
    for (addr, source) in [(ROUTER_ETH0_4, source4()), (ROUTER_ETH0_6, source6())] {
        let body = lab.client.http_get(ip(addr), SERVICE_PORT, T).unwrap();
        assert_eq!(body.trim(), format!("peer={source} port={WEB_PORT}"));
    }
    for to in [WEB4, WEB6] {
        lab.router.http_get(ip(to), WEB_PORT, T).unwrap();
    }
    assert_eq!(web.peers().len(), 4);
    // Ping of the egress addresses is answered (docs/metrics.md says why).
    for addr in [source4(), source6()] {
        assert!(egress_lab::ping(&lab.ext, addr), "ping {addr}");
    }

    blocking::teardown(router).unwrap();
}

/// The macvlan is created with an ifindex and a MAC chosen up front, so that it need not be
/// read back; when the kernel refuses the index (taken meanwhile), it is created again without
/// one and read back. Either way the router knows the link the kernel made: its announcements
/// carry that link's MAC, and teardown deletes exactly it.
#[test]
fn router_knows_its_macvlan_with_or_without_the_chosen_index() {
    let lab = Lab::new();
    let snaps = Snapshots::take(&lab);
    let spec = dual_stack(&lab, "ifindex").build().unwrap();
    for taken in [false, true] {
        let highest = lab
            .router
            .ip_json(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["ifindex"].as_u64())
            .max()
            .unwrap();
        if taken {
            egress_core::fault::take_ifindex();
        }
        // With the index taken, the kernel refuses the first create: succeeding means the
        // apply created the link again without it and read it back.
        let router = blocking::apply(&spec).unwrap();
        if !taken {
            assert_eq!(
                u64::from(lab.router.link_index("macvlan0")),
                highest + 1,
                "the chosen index"
            );
        }
        let mac = lab.router.link_mac("macvlan0");
        assert_eq!(
            lab.ext.neighbour_mac(source4()).as_deref(),
            Some(mac.as_str()),
            "taken: {taken}"
        );
        assert_eq!(
            lab.ext.neighbour_mac(source6()).as_deref(),
            Some(mac.as_str()),
            "taken: {taken}"
        );
        blocking::teardown(router).unwrap();
        snaps.assert_restored(&format!("teardown (index taken: {taken})"));
        lab.ext.ip(&["neigh", "flush", "all"]);
    }
}

#[test]
fn preflight_errors_change_nothing() {
    let lab = Lab::new();
    let snaps = Snapshots::take(&lab);
    let kind_and_text = |b: RouterSpecBuilder| {
        let e = blocking::apply(&b.build().unwrap()).unwrap_err();
        (e.kind(), e.to_string())
    };

    let (kind, text) = kind_and_text(
        lab.router_spec("pre")
            .macvlan("nope0", Default::default())
            .parent_netns(ns(&lab.node)),
    );
    assert_eq!(kind, ErrorKind::NotFound, "{text}");
    assert!(
        text.contains("external.macvlan.parent") && text.contains("nope0"),
        "{text}"
    );

    let (kind, text) = kind_and_text(lab.router_spec("pre").mtu(9000));
    assert_eq!(kind, ErrorKind::Conflict, "{text}");
    assert!(text.contains("9000") && text.contains("1500"), "{text}");

    let (kind, text) = kind_and_text(lab.router_spec("pre").link_name("eth0").internal("lo"));
    assert_eq!(kind, ErrorKind::AlreadyExists, "{text}");
    assert!(text.contains("eth0"), "{text}");

    let (kind, text) = kind_and_text(lab.router_spec("pre").internal("eth9"));
    assert_eq!(kind, ErrorKind::NotFound, "{text}");

    snaps.assert_restored("after preflight errors");

    let first = blocking::apply(&lab.router_spec("first").build().unwrap()).unwrap();
    let second = blocking::apply(
        &lab.router_spec("second")
            .link_name("macvlan1")
            .build()
            .unwrap(),
    )
    .unwrap_err();
    assert_eq!(second.kind(), ErrorKind::AlreadyExists, "{second}");
    assert!(second.to_string().contains("router `first`"), "{second}");
    blocking::teardown(first).unwrap();
    snaps.assert_restored("after a refused second router");
}

#[test]
fn failure_partway_rolls_back_everything_and_names_the_step() {
    let lab = Lab::new();
    let snaps = Snapshots::take(&lab);
    // The kernel refuses a next hop that is not on the internal link's network; by then the
    // journal, the macvlan, its addresses and the default routes have all been changed.
    let spec = dual_stack(&lab, "rollback")
        .keep_route("192.0.2.128/25", Some(NODE4))
        .keep_route("198.18.0.0/15", Some(FALLBACK4))
        .build()
        .unwrap();
    let e = blocking::apply(&spec).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Apply, "{e}");
    match &e {
        Error::Apply { step, rollback, .. } => {
            assert!(step.contains("198.18.0.0/15"), "{step}");
            assert!(rollback.is_complete(), "{rollback}");
        }
        other => panic!("{other:?}"),
    }
    snaps.assert_restored("after rollback");
}

#[test]
fn adopted_link_keeps_existing_and_loses_only_what_the_router_added() {
    let lab = Lab::with_adopted_macvlan();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    let snaps = Snapshots::take(&lab);
    let spec = lab
        .router_spec("adopt")
        .adopt("macvlan0")
        .fallback(FALLBACK4)
        .build()
        .unwrap();
    let router = blocking::apply(&spec).unwrap();
    let body = lab.client.http_get(ip(ROUTER_ETH0_4), 4242, T);
    assert!(
        body.is_err(),
        "nothing listens on 4242 at the fallback: {body:?}"
    );
    let body = lab.client.http_get(ip(ROUTER_ETH0_4), WEB_PORT, T).unwrap();
    assert!(body.contains(&format!("peer={}", source4())), "{body}");
    // Announced explicitly: an adopted link was brought up, no arp_notify at link-up.
    let mac = lab.router.link_mac("macvlan0");
    assert_eq!(
        lab.ext.neighbour_mac(source4()).as_deref(),
        Some(mac.as_str())
    );
    blocking::teardown(router).unwrap();
    snaps.assert_restored("after teardown of an adopted router");
    assert!(lab
        .router
        .try_exec(&["ip", "link", "show", "macvlan0"])
        .is_ok());
}

/// The ruleset's counters count exactly the connections made through each redirect and to the
/// fallback, and the traffic of both directions.
#[test]
fn stats_count_each_redirect_and_the_fallback() {
    let lab = Lab::new();
    let fallback_port = 9090;
    let _web = lab.ext.serve_http(&[WEB_PORT, fallback_port]);
    let spec = lab
        .router_spec("stats")
        .fallback(FALLBACK4)
        .build()
        .unwrap();
    let router = blocking::apply(&spec).unwrap();
    let (service, other) = (3u64, 2u64);
    let get = |port: u16| {
        lab.client
            .http_get(ip(ROUTER_ETH0_4), port, Duration::from_secs(2))
            .unwrap()
    };
    for _ in 0..service {
        get(SERVICE_PORT);
    }
    for _ in 0..other {
        get(fallback_port);
    }
    let stats = blocking::stats(spec.netns(), spec.name()).unwrap().unwrap();
    let redirect = |port: u16| {
        stats
            .redirects
            .iter()
            .find(|r| r.port == port)
            .unwrap_or_else(|| panic!("no redirect {port}: {stats:?}"))
    };
    assert_eq!(redirect(SERVICE_PORT).connections, service, "{stats:?}");
    assert_eq!(redirect(WEB_PORT).connections, 0, "{stats:?}");
    assert_eq!(redirect(WEB_PORT).packets, 0, "{stats:?}");
    // An HTTP exchange is at least a handshake, a request, a reply and a close each way.
    assert!(redirect(SERVICE_PORT).packets >= 6 * service, "{stats:?}");
    assert!(
        redirect(SERVICE_PORT).bytes > redirect(SERVICE_PORT).packets * 40,
        "{stats:?}"
    );
    assert_eq!(stats.fallback.len(), 1, "{stats:?}");
    let f = &stats.fallback[0];
    assert_eq!((f.to, f.connections), (ip(FALLBACK4), other), "{stats:?}");
    assert!(f.packets >= 6 * other, "{stats:?}");
    let s = &stats.snat[0];
    assert_eq!(s.source, ip("203.0.113.99"));
    // What left through the macvlan: the client's half of every exchange.
    assert!(s.packets >= 3 * (service + other), "{stats:?}");
    blocking::teardown(router).unwrap();
    assert!(blocking::stats(spec.netns(), spec.name())
        .unwrap()
        .is_none());
}
