//! High availability in the core: a router applied as standby, promoted and demoted (through
//! its handle and by name, from the kernel alone), the stable MAC, the role read back and kept
//! by check/ensure, and fault injection at every step of a promotion and a demotion. As root,
//! in throwaway namespaces; a test that cannot build them fails (never skips). The keepalived
//! acceptance test is tests/keepalived.rs.

use std::{sync::mpsc, time::Duration};

use egress_core::{
    blocking, fault, Drift, EnsureAction, Error, ErrorKind, Netns as CoreNetns, Role, Rollback,
    RouterSpec,
};
use egress_lab::{
    ip, Lab, Snapshot, Snapshots, EGRESS_SOURCE4, GATEWAY4, ROUTER_ETH0_4, SERVICE_PORT, WEB_PORT,
};

const STABLE_MAC: &str = "00:00:5e:00:01:33";

fn core_ns(lab: &Lab) -> CoreNetns {
    CoreNetns::Path(lab.router.path().into())
}

fn spec(lab: &Lab, stable: bool) -> RouterSpec {
    let b = lab
        .router_spec("ha-1")
        .announce_spaced(3, Duration::from_millis(20));
    match stable {
        true => b.stable_mac(STABLE_MAC).build().unwrap(),
        false => b.build().unwrap(),
    }
}

fn role(lab: &Lab) -> Role {
    blocking::inspect(&core_ns(lab), "ha-1")
        .unwrap()
        .expect("the router is there")
        .role
}

/// What the egress identity is made of, as `ip` shows it: the egress address on macvlan0, the
/// default route via the gateway, the link's MAC.
fn identity(lab: &Lab) -> (bool, bool, String) {
    let addrs = lab.router.ip(&["-4", "addr", "show", "dev", "macvlan0"]);
    let routes = lab.router.ip(&["-4", "route", "show", "default"]);
    (
        addrs.contains(EGRESS_SOURCE4),
        routes.contains(&format!("via {GATEWAY4} dev macvlan0")),
        lab.router.link_mac("macvlan0"),
    )
}

/// A watch of `spec`'s router, its events sent to the returned channel (but the role it
/// reports: these tests read the role from the kernel).
fn watched(
    spec: &RouterSpec,
) -> (
    egress_core::Watcher,
    mpsc::Receiver<egress_core::WatchEvent>,
) {
    let (tx, events) = mpsc::channel();
    let watcher = egress_core::watch(spec, move |e| {
        if !matches!(e, egress_core::WatchEvent::Role { .. }) {
            let _ = tx.send(e.clone());
        }
    })
    .unwrap();
    (watcher, events)
}

fn reaches_web(lab: &Lab) -> bool {
    lab.client
        .http_get(ip(ROUTER_ETH0_4), SERVICE_PORT, Duration::from_millis(500))
        .is_ok()
}

#[test]
fn a_standby_holds_nothing_of_the_identity_until_promoted_and_gives_it_back_on_demotion() {
    let lab = Lab::new();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    let snaps = Snapshots::take(&lab);
    let spec = spec(&lab, true);

    // The dry run of a standby is the plan of one (what Ansible's check mode shows): nothing
    // of the identity, which the active plan claims.
    let shown = |plan: egress_core::Plan| -> Vec<String> {
        plan.steps().iter().map(ToString::to_string).collect()
    };
    let standby = shown(blocking::plan_as(&spec, Role::Standby).unwrap());
    let active = shown(blocking::plan(&spec).unwrap());
    let claims = |steps: &[String]| steps.iter().any(|s| s.starts_with("ip addr add"));
    assert!(claims(&active) && !claims(&standby), "{standby:#?}");
    let router = blocking::apply_as(&spec, Role::Standby).unwrap();
    assert_eq!(role(&lab), Role::Standby);
    let (addr, default, mac) = identity(&lab);
    assert!(
        !addr && !default,
        "a standby holds no egress address nor default route"
    );
    assert_ne!(mac, STABLE_MAC, "a standby never holds the stable MAC");
    let own = mac;
    // Staged: the table with its input filter, the link, the gateway host route, forwarding.
    let input = lab
        .router
        .exec(&["nft", "list", "chain", "inet", &spec.table_name(), "input"]);
    assert!(input.contains("policy drop"), "{input}");
    assert!(lab.router.ip(&["-4", "route"]).contains(GATEWAY4));
    assert_eq!(lab.router.sysctl_get("net.ipv4.ip_forward"), "1");
    assert!(!reaches_web(&lab), "a standby never forwards");
    // check compares with the role the record holds; ensure never promotes.
    assert_eq!(blocking::check(&spec).unwrap(), Vec::<Drift>::new());
    assert_eq!(
        blocking::ensure(&spec).unwrap().action,
        EnsureAction::Unchanged
    );
    assert!(blocking::plan(&spec).unwrap().is_empty());

    let change = blocking::promote_router(&router).unwrap();
    assert_eq!(
        (change.previous, change.role),
        (Role::Standby, Role::Active)
    );
    assert!(change.changed());
    blocking::finish_announcements(change).unwrap();
    assert_eq!(role(&lab), Role::Active);
    assert_eq!(identity(&lab), (true, true, STABLE_MAC.to_string()));
    assert!(reaches_web(&lab));
    assert_eq!(blocking::check(&spec).unwrap(), Vec::<Drift>::new());
    // Idempotent.
    let again = blocking::promote_router(&router).unwrap();
    assert!(!again.changed(), "{:?}", again.steps);

    // By name, from the kernel alone.
    let down = blocking::demote(&core_ns(&lab), "ha-1").unwrap();
    assert_eq!((down.previous, down.role), (Role::Active, Role::Standby));
    // The addresses go first: this instance stops answering ARP before anything else.
    assert!(down.steps[0].starts_with("ip addr del"), "{:?}", down.steps);
    assert_eq!(role(&lab), Role::Standby);
    let (addr, default, mac) = identity(&lab);
    assert!(!addr && !default);
    assert_eq!(mac, own, "the standby's own MAC is back");
    assert!(!reaches_web(&lab));
    assert_eq!(blocking::check(&spec).unwrap(), Vec::<Drift>::new());
    assert!(!blocking::demote(&core_ns(&lab), "ha-1").unwrap().changed());

    let up = blocking::promote(&core_ns(&lab), "ha-1").unwrap();
    blocking::finish_announcements(up).unwrap();
    assert_eq!(identity(&lab), (true, true, STABLE_MAC.to_string()));
    assert!(reaches_web(&lab));

    blocking::teardown(router).unwrap();
    snaps.assert_restored("teardown of a promoted router");
}

#[test]
fn an_active_apply_with_a_stable_mac_holds_it_and_announces_from_it() {
    let lab = Lab::new();
    let snaps = Snapshots::take(&lab);
    let spec = spec(&lab, true);
    let router = blocking::apply(&spec).unwrap();
    assert_eq!(role(&lab), Role::Active);
    assert_eq!(identity(&lab), (true, true, STABLE_MAC.to_string()));
    // The gateway learnt the egress IP from the announcement, with the stable MAC.
    assert_eq!(
        lab.ext
            .neighbour_mac(ip(EGRESS_SOURCE4.split('/').next().unwrap()))
            .as_deref(),
        Some(STABLE_MAC)
    );
    assert_eq!(blocking::check(&spec).unwrap(), Vec::<Drift>::new());
    blocking::teardown(router).unwrap();
    snaps.assert_restored("teardown of an active router with a stable MAC");
}

#[test]
fn drift_of_a_standby_is_repaired_as_a_standby_and_an_active_one_as_active() {
    let lab = Lab::new();
    let snaps = Snapshots::take(&lab);
    let spec = spec(&lab, false);
    blocking::apply_as(&spec, Role::Standby).unwrap();
    // Someone adds the egress address by hand: the standby would answer ARP for it.
    lab.router
        .ip(&["addr", "add", EGRESS_SOURCE4, "dev", "macvlan0"]);
    let drift = blocking::check(&spec).unwrap();
    assert_eq!(
        drift,
        vec![Drift::IdentityHeld {
            what: format!("address {EGRESS_SOURCE4} on macvlan0")
        }]
    );
    assert_eq!(
        blocking::ensure(&spec).unwrap().action,
        EnsureAction::Repaired
    );
    assert_eq!(role(&lab), Role::Standby);
    assert!(!identity(&lab).0);

    blocking::finish_announcements(blocking::promote(&core_ns(&lab), "ha-1").unwrap()).unwrap();
    lab.router.ip(&["route", "del", "default"]);
    assert!(matches!(
        blocking::check(&spec).unwrap().as_slice(),
        [Drift::RouteMissing { .. }]
    ));
    blocking::ensure(&spec).unwrap();
    assert!(identity(&lab).1);
    blocking::teardown_by_name(&core_ns(&lab), "ha-1").unwrap();
    snaps.assert_restored("teardown by name");
}

/// A handle whose router was torn down and applied again (as standby, the way a restarted
/// instance comes back) neither promotes nor demotes the new router: each is refused as a
/// stale handle and the namespace is left exactly as it was; the new handle works.
#[test]
fn a_stale_handle_neither_promotes_nor_demotes_the_router_applied_again() {
    let lab = Lab::new();
    let snaps = Snapshots::take(&lab);
    let spec = spec(&lab, true);
    let old = blocking::apply_as(&spec, Role::Standby).unwrap();
    blocking::finish_announcements(blocking::promote_router(&old).unwrap()).unwrap();
    blocking::teardown_by_name(&core_ns(&lab), "ha-1").unwrap();
    let new = blocking::apply_as(&spec, Role::Standby).unwrap();
    let applied = Snapshot::take(&lab.router);
    for (what, result) in [
        ("promote", blocking::promote_router(&old)),
        ("demote", blocking::demote_router(&old)),
    ] {
        let e = result.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::StaleHandle, "{what}: {e}");
        assert_eq!(role(&lab), Role::Standby, "{what}");
        let now = Snapshot::take(&lab.router);
        assert!(applied == now, "{what}: {}", applied.diff(&now));
    }
    // The new router, applied standby, is untouched and answers to its own handle.
    blocking::finish_announcements(blocking::promote_router(&new).unwrap()).unwrap();
    assert_eq!(role(&lab), Role::Active);
    assert_eq!(
        blocking::demote_router(&old).unwrap_err().kind(),
        ErrorKind::StaleHandle
    );
    assert_eq!(role(&lab), Role::Active);
    blocking::teardown(new).unwrap();
    snaps.assert_restored("teardown of the router applied again");
}

/// Flushes the routes of both families in routing table `table` of the router namespace.
fn flush_table(lab: &Lab, table: u32) {
    let t = table.to_string();
    lab.router.ip(&["route", "flush", "table", &t]);
    lab.router.ip(&["-6", "route", "flush", "table", &t]);
}

fn only_journal_damage(drift: &[Drift]) -> bool {
    !drift.is_empty() && drift.iter().all(|d| d.kind() == "journal_damaged")
}

/// The role marker is kept in the journal table and in the mirror table: a flush of either one
/// leaves the role (a standby taken for active would be "repaired" into a second active
/// instance by ensure or a watch). What the flush took is crash record damage, and only that;
/// ensure and a watch write it again, in the role the other copy keeps.
#[test]
fn a_flushed_routing_table_loses_no_role() {
    let lab = Lab::new();
    let snaps = Snapshots::take(&lab);
    let spec = spec(&lab, true);
    let router = blocking::apply_as(&spec, Role::Standby).unwrap();
    flush_table(&lab, egress_core::JOURNAL_TABLE);
    assert_eq!(role(&lab), Role::Standby);
    let drift = blocking::check(&spec).unwrap();
    assert!(only_journal_damage(&drift), "{drift:?}");
    assert!(
        drift.iter().any(|d| d.to_string().contains("role marker")),
        "{drift:?}"
    );
    assert_eq!(
        blocking::ensure(&spec).unwrap().action,
        EnsureAction::Repaired
    );
    assert_eq!(blocking::check(&spec).unwrap(), Vec::<Drift>::new());
    assert_eq!(role(&lab), Role::Standby);
    assert!(!identity(&lab).0 && !identity(&lab).1);

    // The same under a watch, for each table, in each role.
    let (watcher, events) = watched(&spec);
    for to in [Role::Standby, Role::Active] {
        if to == Role::Active {
            blocking::finish_announcements(blocking::promote(&core_ns(&lab), "ha-1").unwrap())
                .unwrap();
        }
        for table in [egress_core::JOURNAL_TABLE, egress_core::MIRROR_TABLE] {
            flush_table(&lab, table);
            // Each event until the watch has repaired everything is about the record alone
            // (a look between the two flushes, one per family, repairs what the first took
            // and fails its verify on what the second took; the next look repairs the rest).
            let held = to == Role::Active;
            while !blocking::check(&spec).unwrap().is_empty() {
                let (drift, repaired) = match events.recv_timeout(Duration::from_secs(5)) {
                    Ok(egress_core::WatchEvent::Repaired { drift, .. }) => (drift, true),
                    Ok(egress_core::WatchEvent::Failed { drift, .. }) => (drift, false),
                    other => panic!("{to}, table {table}: {other:?}"),
                };
                assert!(
                    only_journal_damage(&drift),
                    "{to}, table {table}: {drift:?}"
                );
                if repaired {
                    assert_eq!(role(&lab), to, "table {table}");
                    assert_eq!(identity(&lab).0, held, "{to}, table {table}");
                    assert_eq!(identity(&lab).1, held, "{to}, table {table}");
                }
            }
            assert_eq!(role(&lab), to, "table {table}");
            assert_eq!(identity(&lab).0, held, "{to}, table {table}");
            assert_eq!(identity(&lab).1, held, "{to}, table {table}");
        }
    }
    watcher.stop().unwrap();
    // By name, from the kernel alone, after the repairs.
    blocking::demote(&core_ns(&lab), "ha-1").unwrap();
    assert_eq!(role(&lab), Role::Standby);
    blocking::teardown(router).unwrap();
    snaps.assert_restored("teardown after the flushes");
}

/// The legacy mode's watch repairs a standby as a standby and never demotes a router that
/// another process (keepalived's notify command) promoted.
#[test]
fn a_watch_keeps_the_role_the_kernel_records() {
    let lab = Lab::new();
    let spec = spec(&lab, true);
    let router = blocking::apply_as(&spec, Role::Standby).unwrap();
    let (watcher, events) = watched(&spec);
    let next = || {
        events
            .recv_timeout(Duration::from_secs(5))
            .expect("the watch reported nothing")
    };
    lab.router
        .ip(&["addr", "add", EGRESS_SOURCE4, "dev", "macvlan0"]);
    match next() {
        egress_core::WatchEvent::Repaired { drift, .. } => {
            assert!(
                drift.iter().all(|d| d.kind() == "identity_held"),
                "{drift:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(role(&lab), Role::Standby);
    assert!(!identity(&lab).0);
    blocking::finish_announcements(blocking::promote(&core_ns(&lab), "ha-1").unwrap()).unwrap();
    // The promotion is not drift: nothing to repair, and a later outside change is repaired
    // as active.
    lab.router.ip(&["route", "del", "default"]);
    match next() {
        egress_core::WatchEvent::Repaired { drift, .. } => {
            assert!(
                drift.iter().all(|d| d.kind() == "route_missing"),
                "{drift:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(identity(&lab), (true, true, STABLE_MAC.to_string()));
    watcher.stop().unwrap();
    blocking::teardown(router).unwrap();
}

/// A role change by another process is not drift while it runs: a watch that looked at a
/// promotion half done (an egress address claimed, the role marker still standby: a macvlan's
/// MAC change keeps the flight waiting for an RCU grace period) took it for a standby holding
/// the identity and undid it, and the promotion failed its verify. Many role changes under a
/// watch all go through and the watch repairs nothing; a role change marker put by hand (a
/// promotion under way) keeps the watch off a claimed address, and one a crash left is looked
/// past after a while.
#[test]
fn a_watch_never_undoes_a_role_change_under_way() {
    let lab = Lab::new();
    let snaps = Snapshots::take(&lab);
    let spec = spec(&lab, true);
    let router = blocking::apply_as(&spec, Role::Standby).unwrap();
    let (watcher, events) = watched(&spec);
    for i in 0..30 {
        let up = blocking::promote(&core_ns(&lab), "ha-1").unwrap_or_else(|e| panic!("{i}: {e}"));
        blocking::finish_announcements(up).unwrap();
        blocking::demote(&core_ns(&lab), "ha-1").unwrap_or_else(|e| panic!("{i}: {e}"));
    }
    assert_eq!(
        events.recv_timeout(Duration::from_millis(300)).ok(),
        None,
        "a role change is not drift"
    );
    // A promotion under way, by hand: its marker (as 7508fe2 writes it: keyed by the name's
    // group marker, place 1), then the address it claims first.
    let marker = format!(
        "6563:{:x}:{:x}::/128",
        egress_core::link_group_marker("ha-1") >> 16,
        egress_core::link_group_marker("ha-1") & 0xffff
    );
    let table = egress_core::JOURNAL_TABLE.to_string();
    let route = [
        "route",
        "add",
        "blackhole",
        &marker,
        "table",
        &table,
        "proto",
        "158",
        "metric",
        "1",
    ];
    lab.router.ip(&[&["-6"][..], &route[..]].concat());
    lab.router
        .ip(&["addr", "add", EGRESS_SOURCE4, "dev", "macvlan0"]);
    assert_eq!(
        events.recv_timeout(Duration::from_millis(500)).ok(),
        None,
        "the watch undid a promotion under way"
    );
    assert!(identity(&lab).0);
    // Left by a crash: after a while the watch repairs the standby all the same.
    match events.recv_timeout(Duration::from_secs(10)) {
        Ok(egress_core::WatchEvent::Repaired { drift, .. }) => assert!(
            drift.iter().all(|d| d.kind() == "identity_held"),
            "{drift:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(!identity(&lab).0);
    watcher.stop().unwrap();
    // Teardown takes the marker a crash left along.
    blocking::teardown(router).unwrap();
    assert!(!lab
        .router
        .ip(&["-6", "route", "show", "table", &table])
        .contains("6563:"));
    snaps.assert_restored("teardown after a role change marker left behind");
}

/// A fault at each step of a promotion, then of a demotion: each rolls back to exactly the
/// previous role (the namespace as it was, the MAC included).
#[test]
fn a_fault_at_any_step_of_a_role_change_rolls_back_to_the_previous_role() {
    let lab = Lab::new();
    let spec = spec(&lab, true);
    let router = blocking::apply_as(&spec, Role::Standby).unwrap();
    for (from, to) in [(Role::Standby, Role::Active), (Role::Active, Role::Standby)] {
        let before = Snapshot::take(&lab.router);
        let before_identity = identity(&lab);
        let mut fired = 0;
        for k in 1..=20 {
            fault::fail_step(k);
            let result = match to {
                Role::Active => blocking::promote_router(&router),
                Role::Standby => blocking::demote_router(&router),
            };
            fault::clear();
            let Err(e) = result else {
                // Fewer steps than k: the change went through; put the previous role back.
                let change = result.unwrap();
                blocking::finish_announcements(change).unwrap();
                match from {
                    Role::Active => blocking::promote_router(&router).unwrap(),
                    Role::Standby => blocking::demote_router(&router).unwrap(),
                };
                break;
            };
            fired += 1;
            assert_eq!(e.errno(), Some(fault::INJECTED_ERRNO), "step {k}: {e}");
            if let Error::Apply { rollback, .. } = &e {
                assert_eq!(*rollback, Rollback::Complete, "{e}");
            }
            assert_eq!(role(&lab), from, "fault at step {k} of {from} -> {to}");
            assert_eq!(identity(&lab), before_identity, "step {k}: {e}");
            let after = Snapshot::take(&lab.router);
            assert!(before == after, "step {k}: {}", before.diff(&after));
        }
        assert!(fired >= 3, "{from} -> {to}: only {fired} steps");
        let change = match to {
            Role::Active => blocking::promote_router(&router).unwrap(),
            Role::Standby => blocking::demote_router(&router).unwrap(),
        };
        blocking::finish_announcements(change).unwrap();
        assert_eq!(role(&lab), to);
    }
    blocking::teardown(router).unwrap();
}

#[test]
fn a_promotion_plan_is_the_identity_alone_and_announces_last() {
    let lab = Lab::new();
    let spec = spec(&lab, true);
    let router = blocking::apply_as(&spec, Role::Standby).unwrap();
    let change = blocking::promote_router(&router).unwrap();
    let steps = change.steps.clone();
    blocking::finish_announcements(change).unwrap();
    let expected = [
        "ip addr add 203.0.113.99/24 dev macvlan0 proto 158",
        "ip route replace default via 203.0.113.1 dev macvlan0 proto 158",
        "ip link set dev macvlan0 address 00:00:5e:00:01:33",
        "ip -6 route replace unreachable 6572:",
        "ip link set dev macvlan0 address <its own> (the kernel announces 203.0.113.99; x3, 20 ms",
    ];
    assert_eq!(steps.len(), expected.len(), "{steps:#?}");
    for (s, e) in steps.iter().zip(expected) {
        assert!(s.starts_with(e), "{s:?} does not start with {e:?}");
    }
    blocking::teardown(router).unwrap();
}

#[test]
fn a_stable_mac_on_an_adopted_link_and_a_bad_announce_are_refused_by_field() {
    let e = RouterSpec::from_json(
        r#"{"name": "r", "external": {"adopt": "macvlan0"}, "internal": "eth0",
            "sources": ["203.0.113.99/24"], "gateways": ["203.0.113.1"],
            "stable_mac": "00:00:5e:00:01:33", "announce": {"count": 40, "interval_ms": 0}}"#,
    )
    .unwrap_err();
    let text = e.to_string();
    for field in ["stable_mac", "announce.count", "announce.interval_ms"] {
        assert!(text.contains(field), "{field} not named: {text}");
    }
    let ok = RouterSpec::from_json(
        r#"{"name": "r", "external": {"macvlan": {"parent": "eth1"}}, "internal": "eth0",
            "sources": ["203.0.113.99/24"], "gateways": ["203.0.113.1"],
            "stable_mac": "00:00:5e:00:01:33", "announce": {"count": 3, "interval_ms": 50}}"#,
    )
    .unwrap();
    assert_eq!(ok.announcements().count, 3);
    assert_eq!(ok.announcements().interval, Duration::from_millis(50));
    assert_eq!(RouterSpec::from_json(&ok.to_json()).unwrap(), ok);
}
