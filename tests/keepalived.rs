//! Acceptance of high availability with real keepalived (VRRPv3, unicast peers, 20 ms
//! advertisements) in throwaway namespaces: two router nodes on one external switch, a client
//! on the internal segment that reaches the active router through keepalived's internal
//! virtual IP (see egress_lab::ha). As root; a test that cannot run fails (never skips).
//!
//! - hard failover: the active node dies (keepalived SIGKILLed, its links cut); a client loop
//!   that opens a new connection every 10 ms measures the gap (bound: under 1 s each, generous
//!   for CI; the medians are printed, the bench measures them);
//! - the gateway ignores gratuitous ARP (arp_accept=0): with the stable MAC its neighbour
//!   entry for the egress IP points to the new active router right away;
//! - the standby never answers for the egress IP (diagnose's duplicate_address probe from the
//!   active router hears nobody else);
//! - graceful switch-over (demote A, then promote B): no connection attempt started after B's
//!   promotion fails, and A stopped answering before B claimed;
//! - split brain (both promoted, no stable MAC) fails diagnose's duplicate_address check.

use std::{
    sync::{Mutex, MutexGuard, PoisonError},
    thread,
    time::{Duration, Instant},
};

use egress_core::{blocking, DiagnoseOptions, Netns as CoreNetns, Status};
use egress_lab::{
    ha::{egress_ip, gap, HaLab, Node, HA_ROUTER, INTERNAL_VIP, STABLE_MAC},
    WEB_PORT,
};

fn core_ns(ha: &HaLab, node: Node) -> CoreNetns {
    CoreNetns::Path(ha.router(node).path().into())
}

fn duplicate_address(ha: &HaLab, node: Node) -> Status {
    let d = blocking::diagnose(
        &core_ns(ha, node),
        HA_ROUTER,
        &DiagnoseOptions::new().timeout(Duration::from_millis(200)),
    )
    .unwrap();
    d.checks
        .iter()
        .find(|c| c.name == "duplicate_address")
        .unwrap_or_else(|| panic!("no duplicate_address check: {d:?}"))
        .status
}

/// One HA lab at a time: two keepalived pairs electing at 20 ms on two shared CPUs starve each
/// other's advertisements (a takeover took 2 s with three labs and a build running beside).
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn keepalived_fails_over_in_well_under_a_second_and_the_gateway_follows_the_stable_mac() {
    let _one = one_at_a_time();
    let ha = HaLab::new(true, Duration::from_millis(20));
    let web = ha.lab.ext.serve_http(&[WEB_PORT]);
    ha.start(Node::A);
    thread::sleep(Duration::from_millis(150));
    ha.start(Node::B);
    let mut active = ha.wait_active(Duration::from_secs(5));
    // The standby is silent for the egress IP.
    assert_eq!(duplicate_address(&ha, active), Status::Ok);

    let failovers = 3;
    let (gaps, attempts) = ha.probing(|probes| {
        let mut gaps = Vec::new();
        for _ in 0..failovers {
            probes.wait_attempts(10);
            ha.fail(active);
            // The node is gone from here on (links cut).
            let t = Instant::now();
            let next = ha.wait_active_other(active, Duration::from_secs(5));
            probes.wait_attempts(20);
            gaps.push(t);
            ha.recover(active);
            active = next;
            // The gateway ignores gratuitous ARP, and still reaches the new active router.
            assert_eq!(
                ha.lab.ext.neighbour_mac(egress_ip()).as_deref(),
                Some(STABLE_MAC)
            );
            probes.wait_attempts(10);
        }
        gaps
    });
    let gaps: Vec<Duration> = gaps
        .iter()
        .map(|t| {
            gap(&attempts, *t)
                .unwrap_or_else(|| panic!("no service after the failover at {t:?}\n{}", ha.logs()))
        })
        .collect();
    println!(
        "takeover gaps (advert_int 0.02, {failovers} failovers): median {:?}, max {:?}, all {gaps:?}",
        median(gaps.clone()),
        gaps.iter().max().unwrap()
    );
    for g in &gaps {
        assert!(
            *g < Duration::from_secs(1),
            "a takeover took {g:?}\n{}",
            ha.logs()
        );
    }
    assert!(web.peers().iter().all(|p| *p == egress_ip()));
    assert!(attempts.last().unwrap().ok, "{}", ha.logs());
}

/// The election engine's part done by hand, in the order a graceful switch-over takes.
fn cli(ha: &HaLab, node: Node, verb: &str) -> String {
    ha.router(node)
        .exec(&[ha.binary().to_str().unwrap(), verb, "--name", HA_ROUTER])
}

#[test]
fn a_graceful_switch_over_loses_no_connection_started_after_the_promotion() {
    let _one = one_at_a_time();
    let ha = HaLab::new(true, Duration::from_millis(20));
    let _web = ha.lab.ext.serve_http(&[WEB_PORT]);
    let vip = format!("{INTERNAL_VIP}/24");
    assert!(cli(&ha, Node::A, "promote").contains("promoted"));
    ha.lab.router.ip(&["addr", "add", &vip, "dev", "eth0"]);
    let (promoted, attempts) = ha.probing(|probes| {
        probes.wait_attempts(10);
        assert!(cli(&ha, Node::A, "demote").contains("demoted"));
        // A answers no more for the egress IP: the gateway, asking afresh, hears nobody.
        ha.lab
            .ext
            .ip(&["neigh", "flush", "to", &egress_ip().to_string()]);
        assert!(ha
            .lab
            .ext
            .try_exec(&["ping", "-c", "1", "-W", "0.3", &egress_ip().to_string()])
            .is_err());
        assert!(cli(&ha, Node::B, "promote").contains("promoted"));
        // keepalived's part: the internal virtual IP moves (its gratuitous ARP updates the
        // client; here the client forgets the old entry).
        ha.lab.router.ip(&["addr", "del", &vip, "dev", "eth0"]);
        ha.router_b.ip(&["addr", "add", &vip, "dev", "eth0"]);
        ha.lab.client.ip(&["neigh", "flush", "to", INTERNAL_VIP]);
        let promoted = Instant::now();
        probes.wait_attempts(20);
        promoted
    });
    let after: Vec<_> = attempts.iter().filter(|a| a.at > promoted).collect();
    assert!(after.len() >= 15, "{}", after.len());
    assert!(after.iter().all(|a| a.ok), "{after:?}");
    assert_eq!(
        ha.lab.ext.neighbour_mac(egress_ip()).as_deref(),
        Some(STABLE_MAC)
    );
}

#[test]
fn split_brain_fails_the_duplicate_address_check() {
    let _one = one_at_a_time();
    let ha = HaLab::new(false, Duration::from_millis(20));
    cli(&ha, Node::A, "promote");
    assert_eq!(duplicate_address(&ha, Node::A), Status::Ok);
    cli(&ha, Node::B, "promote");
    assert_eq!(duplicate_address(&ha, Node::A), Status::Fail);
    assert_eq!(duplicate_address(&ha, Node::B), Status::Fail);
    cli(&ha, Node::B, "demote");
    assert_eq!(duplicate_address(&ha, Node::A), Status::Ok);
}
