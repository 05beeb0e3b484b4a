//! The watch repairs what others change, as they change it: each class of change the issue
//! names (default route deleted, the router's table flushed or deleted, the macvlan down,
//! forwarding off), a burst of changes, a teardown running under it, and a router that is not
//! there. Real TCP through the router after each repair.
//!
//! As root, in throwaway namespaces (`egt-<pid>-…`); a test that cannot build them fails.

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use egress_core::{blocking, ErrorKind, RouterSpec, WatchEnd, WatchEvent};
use egress_lab::{ip, Lab, Snapshots, ROUTER_ETH0_4, SERVICE_PORT, WEB_PORT};

const T: Duration = Duration::from_secs(2);
/// How long a test waits for the watch to report: far above what a repair takes (a few ms);
/// only a watch that does not repair reaches it.
const REPORT: Duration = Duration::from_secs(10);

fn spec(lab: &Lab, name: &str) -> RouterSpec {
    lab.router_spec(name).build().unwrap()
}

/// Watches `spec`, reporting each event on the returned channel (but the role: these
/// routers stay active).
fn watch(spec: &RouterSpec) -> (egress_core::Watcher, mpsc::Receiver<WatchEvent>) {
    let (tx, rx) = mpsc::channel();
    let watcher = egress_core::watch(spec, move |e| {
        if !matches!(e, WatchEvent::Role { .. }) {
            let _ = tx.send(e.clone());
        }
    })
    .unwrap();
    (watcher, rx)
}

fn next(events: &mpsc::Receiver<WatchEvent>) -> WatchEvent {
    events
        .recv_timeout(REPORT)
        .expect("the watch reported nothing")
}

fn through(lab: &Lab) {
    let body = lab
        .client
        .http_get(ip(ROUTER_ETH0_4), SERVICE_PORT, T)
        .expect("a connection through the router after the repair");
    assert!(body.contains(&format!("port={WEB_PORT}")), "{body}");
}

#[test]
fn each_outside_change_is_repaired_and_traffic_flows_again() {
    let lab = Lab::new();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    let snapshots = Snapshots::take(&lab);
    let spec = spec(&lab, "heal");
    let router = blocking::apply(&spec).unwrap();
    let link = spec.external().link_name().to_string();
    let (watcher, events) = watch(&spec);
    through(&lab);
    let table = "egress_heal";
    let changes: [(&str, &[&str], &str); 5] = [
        (
            "default route deleted",
            &["ip", "route", "del", "default"],
            "route_missing",
        ),
        (
            "table flushed",
            &["nft", "flush", "table", "inet", table],
            "nat_changed",
        ),
        (
            "table deleted",
            &["nft", "delete", "table", "inet", table],
            "nat_changed",
        ),
        (
            "macvlan down",
            &["ip", "link", "set", &link, "down"],
            "link_down",
        ),
        (
            "forwarding off",
            &["sysctl", "-qw", "net.ipv4.ip_forward=0"],
            "sysctl_changed",
        ),
    ];
    for (what, cmd, kind) in changes {
        lab.router.exec(cmd);
        match next(&events) {
            WatchEvent::Repaired { drift, took } => {
                assert!(
                    drift.iter().any(|d| d.kind() == kind),
                    "{what}: repaired {drift:?}, expected a {kind} drift"
                );
                eprintln!("{what}: repaired in {took:?}: {drift:?}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(blocking::check(&spec).unwrap(), vec![], "{what}");
        through(&lab);
    }
    assert_eq!(watcher.stop().unwrap(), WatchEnd::Stopped);
    assert!(events.try_recv().is_err(), "nothing after the last repair");
    blocking::teardown(router).unwrap();
    snapshots.assert_restored("after the watch and teardown");
}

#[test]
fn a_burst_of_changes_is_repaired_a_bounded_number_of_times() {
    let lab = Lab::new();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    let spec = spec(&lab, "burst");
    let router = blocking::apply(&spec).unwrap();
    let (watcher, events) = watch(&spec);
    // 100 changes in one go: 50 times the default route away and back by hand (a route the
    // router does not own: proto boot, as `ip` makes it).
    let batch: String = (0..50)
        .map(|_| "route del default\nroute add default via 203.0.113.1\n")
        .collect();
    let file = std::env::temp_dir().join(format!("egt-{}-burst.batch", std::process::id()));
    std::fs::write(&file, batch).unwrap();
    // -force: a line the watch's repair made fail (the route is back already) does not end
    // the burst.
    let _ = lab
        .router
        .try_exec(&["ip", "-force", "-batch", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    // A repair that runs while the burst still changes the route can find the namespace
    // changed again — when it verifies, or when its own route meets the burst's added in
    // between (EEXIST: the same destination, metric and table) —: it rolls back and reports
    // `Failed` (the watch then tries again), which is right. The burst must end repaired, in a
    // bounded number of tries.
    let (mut repairs, mut failed) = (0, 0);
    let mut last = None;
    let deadline = Instant::now() + REPORT;
    while let Ok(e) = events.recv_timeout(Duration::from_millis(500)) {
        match &e {
            WatchEvent::Repaired { .. } => repairs += 1,
            WatchEvent::Failed { error, .. }
                if error.contains("verify") || error.contains("File exists (errno 17)") =>
            {
                failed += 1
            }
            other => panic!("{other:?}"),
        }
        last = Some(e);
        assert!(
            Instant::now() < deadline,
            "still repairing after {REPORT:?}"
        );
    }
    assert!(
        matches!(last, Some(WatchEvent::Repaired { .. })),
        "the burst ended unrepaired: {last:?}"
    );
    assert!(
        repairs + failed <= 10,
        "{repairs} repairs and {failed} failed ones for one burst"
    );
    assert_eq!(blocking::check(&spec).unwrap(), vec![]);
    through(&lab);
    watcher.stop().unwrap();
    blocking::teardown(router).unwrap();
}

#[test]
fn a_teardown_under_the_watch_ends_it_and_restores_the_namespace() {
    let lab = Lab::new();
    let snapshots = Snapshots::take(&lab);
    let spec = spec(&lab, "gone");
    let router = blocking::apply(&spec).unwrap();
    let (watcher, events) = watch(&spec);
    let undone = blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
    assert!(!undone.is_empty());
    assert_eq!(watcher.wait().unwrap(), WatchEnd::TornDown);
    let seen: Vec<WatchEvent> = events.try_iter().collect();
    assert_eq!(seen.last(), Some(&WatchEvent::RouterGone), "{seen:?}");
    assert!(
        seen[..seen.len() - 1]
            .iter()
            .all(|e| *e == WatchEvent::TeardownSeen),
        "the watch repaired during the teardown: {seen:?}"
    );
    snapshots.assert_restored("after a teardown under the watch");
    drop(router);
}

#[test]
fn watching_a_router_that_is_not_there_is_not_found() {
    let lab = Lab::new();
    let spec = spec(&lab, "absent");
    let e = egress_core::watch(&spec, |_| {}).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("absent"), "{e}");
}

#[test]
fn an_adopted_link_gone_fails_the_repairs_until_it_is_back() {
    let lab = Lab::with_adopted_macvlan();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    let spec = lab
        .router_spec("adopted")
        .adopt(egress_lab::SDN_MACVLAN)
        .build()
        .unwrap();
    let _router = blocking::apply(&spec).unwrap();
    let (watcher, events) = watch(&spec);
    // The watch does not create an adopted link: the repair fails, and the watch goes on.
    lab.router
        .exec(&["ip", "link", "del", egress_lab::SDN_MACVLAN]);
    match next(&events) {
        WatchEvent::Failed { drift, error } => {
            assert!(
                drift.iter().any(|d| d.kind() == "link_missing"),
                "{drift:?}"
            );
            assert!(error.contains("not found"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    // The link is back (down and bare, as the SDN makes it): the next change is repaired.
    lab.make_sdn_macvlan(egress_lab::SDN_MACVLAN);
    loop {
        match next(&events) {
            WatchEvent::Repaired { .. } => break,
            WatchEvent::Failed { .. } => continue,
            other => panic!("{other:?}"),
        }
    }
    assert!(blocking::check(&spec).unwrap().is_empty());
    through(&lab);
    assert_eq!(watcher.stop().unwrap(), WatchEnd::Stopped);
}

/// A repair that keeps failing is tried again after pauses that grow (50 ms doubling up to
/// 5 s), and changes elsewhere in the namespace meanwhile do not cut them short (they once
/// did: any notification, the repair's own included, started the next try at once, so a busy
/// namespace made the failing watch a busy loop). Once the cause is gone the watch repairs.
#[test]
fn failed_repairs_back_off_whatever_the_namespace_notifies() {
    let lab = Lab::with_adopted_macvlan();
    let spec = lab
        .router_spec("backoff")
        .adopt(egress_lab::SDN_MACVLAN)
        .build()
        .unwrap();
    let _router = blocking::apply(&spec).unwrap();
    let (tx, events) = mpsc::channel();
    let watcher = egress_core::watch(&spec, move |e| {
        if !matches!(e, WatchEvent::Role { .. }) {
            let _ = tx.send((Instant::now(), e.clone()));
        }
    })
    .unwrap();
    lab.router
        .exec(&["ip", "link", "del", egress_lab::SDN_MACVLAN]);
    // Something else keeps changing the namespace: an address on lo, added and removed every
    // 20 ms (no drift of the router, but a notification each time).
    let started = Instant::now();
    let mut noise = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let verb = if noise % 2 == 0 { "add" } else { "del" };
        lab.router
            .exec(&["ip", "addr", verb, "192.0.2.254/32", "dev", "lo"]);
        noise += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let failed: Vec<Instant> = events
        .try_iter()
        .map(|(at, e)| match e {
            WatchEvent::Failed { .. } => at,
            other => panic!("{other:?}"),
        })
        .collect();
    // 50 + 100 + 200 + 400 + 800 + 1600 ms: 6 or 7 tries in 3 s, where a notification that
    // cut the pause would make one every 20 ms.
    assert!(
        (4..=8).contains(&failed.len()),
        "{} failed repairs in 3 s ({noise} changes meanwhile)",
        failed.len()
    );
    for (i, pair) in failed.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let pause = Duration::from_millis(50 << i);
        assert!(
            gap >= pause,
            "try {}: {gap:?} after the last, under {pause:?}",
            i + 2
        );
    }
    // The cause removed: repaired at the next try (at most 5 s away).
    lab.make_sdn_macvlan(egress_lab::SDN_MACVLAN);
    let deadline = Instant::now() + REPORT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left).expect("repaired").1 {
            WatchEvent::Repaired { .. } => break,
            WatchEvent::Failed { .. } => continue,
            other => panic!("{other:?}"),
        }
    }
    assert!(blocking::check(&spec).unwrap().is_empty());
    assert_eq!(watcher.stop().unwrap(), WatchEnd::Stopped);
}
