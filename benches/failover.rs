//! Failover: the share of egress in a takeover, and the whole takeover with keepalived.
//!
//! 1. `promote` by name (the call returns once the identity is claimed and the first
//!    announcement sent) and `demote`, medians over many role changes of one standby router,
//!    without and with a stable MAC (changing a macvlan's MAC waits in the kernel), side by
//!    side in the same run with a full `apply` of the same spec (what a router without a
//!    standby does when it takes over).
//! 2. End to end with real keepalived (egress_lab::ha): a node dies (keepalived SIGKILLed,
//!    links cut), a client opening a new connection every 10 ms through keepalived's internal
//!    virtual IP measures the gap; 10 failovers at advert_int 0.02 s and 0.1 s, median and max.
//!
//! Run as root: `cargo bench --bench failover` (`EGRESS_BENCH_ITERS`, default 200; the
//! keepalived part needs `cargo build --release --bin egress-router` first, and
//! `EGRESS_BENCH_FAILOVERS`, default 10).

use std::time::{Duration, Instant};

use egress_core::{blocking, Role};
use egress_lab::{
    ha::{gap, HaLab, Node},
    WEB_PORT,
};

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("failover: needs root (it builds network namespaces)");
        std::process::exit(2);
    }
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    for stable_mac in [false, true] {
        role_changes(env("EGRESS_BENCH_ITERS", 200), stable_mac);
    }
    let failovers = env("EGRESS_BENCH_FAILOVERS", 10);
    for advert in [Duration::from_millis(20), Duration::from_millis(100)] {
        takeovers(advert, failovers);
    }
}

fn role_changes(iters: usize, stable_mac: bool) {
    // Node A's standby router, as HaLab applies it; promoted and demoted by name, as the
    // keepalived notify commands do (the kernel read once per call).
    let ha = HaLab::new(stable_mac, Duration::from_millis(20));
    let spec = ha.spec(Node::A, stable_mac);
    let (netns, name) = (spec.netns().clone(), spec.name().to_string());
    let (mut promote, mut demote, mut apply) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..iters {
        let t = Instant::now();
        let change = blocking::promote(&netns, &name).expect("promote");
        promote.push(t.elapsed());
        blocking::finish_announcements(change).expect("announcements");
        let t = Instant::now();
        blocking::demote(&netns, &name).expect("demote");
        demote.push(t.elapsed());
    }
    blocking::teardown_by_name(&netns, &name).expect("teardown");
    // The same router applied whole, active, as a takeover without a standby would.
    for _ in 0..iters.div_ceil(4) {
        let t = Instant::now();
        let r = blocking::apply_as(&spec, Role::Active).expect("apply");
        apply.push(t.elapsed());
        blocking::teardown(r).expect("teardown");
    }
    println!(
        "role changes by name of one router (macvlan, {}, 3 announcements 20 ms apart), \
         {iters} each, medians:",
        match stable_mac {
            true => "stable MAC",
            false => "no stable MAC",
        }
    );
    let p = median(&mut promote);
    println!(
        "  promote (claim + first announcement sent)  {p:>10.3?}  (max {:?})",
        promote.iter().max().unwrap()
    );
    println!(
        "  demote                                     {:>10.3?}",
        median(&mut demote)
    );
    let f = median(&mut apply);
    println!(
        "  full apply of the same router, active      {f:>10.3?}  ({:.1}x promote)",
        f.as_secs_f64() / p.as_secs_f64()
    );
}

fn takeovers(advert: Duration, n: usize) {
    let ha = HaLab::new(true, advert);
    let _web = ha.lab.ext.serve_http(&[WEB_PORT]);
    ha.start(Node::A);
    std::thread::sleep(advert * 8);
    ha.start(Node::B);
    let mut active = ha.wait_active(Duration::from_secs(5));
    let (times, attempts) = ha.probing(|probes| {
        let mut times = Vec::new();
        for _ in 0..n {
            probes.wait_attempts(10);
            ha.fail(active);
            times.push(Instant::now());
            let next = ha.wait_active_other(active, Duration::from_secs(10));
            probes.wait_attempts(10);
            ha.recover(active);
            active = next;
            probes.wait_attempts(10);
        }
        times
    });
    let mut gaps: Vec<Duration> = times
        .iter()
        .map(|t| gap(&attempts, *t).expect("service after each failover"))
        .collect();
    let max = *gaps.iter().max().unwrap();
    println!(
        "keepalived takeover, advert_int {:.2} s, {n} failovers: gap median {:?}, max {max:?}",
        advert.as_secs_f64(),
        median(&mut gaps)
    );
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}
