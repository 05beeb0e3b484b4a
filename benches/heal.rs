//! How fast a watched router is repaired after an outside change, side by side with what users
//! write without a watch: a loop that checks every second and repairs what it finds.
//!
//! Four kinds of change, in turn, in the lab's throwaway namespaces: the default route deleted,
//! the router's nftables table flushed, the macvlan set down, `ip_forward` set to 0. Each change
//! is one `ip`/`nft`/`sysctl` process. For each repair the bench records the watch's own
//! measure (from the change's first notification to the repaired, verified state) and the time
//! from just before the change command started to the moment the repair was reported (which
//! includes starting that process). The baseline runs the same changes against a thread that
//! calls `check` every second and `ensure` when it drifted.
//!
//! Then two costs of watching: CPU time of the whole process over 10 s with the watch idle, and
//! the apply of another router in another namespace with and without a watch running.
//!
//! Run as root: `cargo bench --bench heal` (`EGRESS_BENCH_ITERS` rounds of the four changes,
//! default 25; the baseline runs 5 rounds: each change waits up to a second there).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use egress_core::{blocking, RouterSpec, WatchEvent};
use egress_lab::Lab;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("heal: needs root (it builds network namespaces)");
        std::process::exit(2);
    }
    let iters: usize = std::env::var("EGRESS_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let lab = Lab::new();
    let spec = lab.router_spec("heal").build().unwrap();
    let router = blocking::apply(&spec).expect("apply");
    let changes = changes(&spec);

    // The watch.
    let (tx, events) = mpsc::channel();
    let watcher = egress_core::watch(&spec, move |e| {
        // The role it reports at its first look is no repair.
        if !matches!(e, WatchEvent::Role { .. }) {
            let _ = tx.send((Instant::now(), e.clone()));
        }
    })
    .expect("watch");
    let mut took = Vec::new();
    let mut end_to_end = Vec::new();
    let mut by_kind = vec![Vec::new(); changes.len()];
    for _ in 0..iters {
        for (kind, change) in changes.iter().enumerate() {
            let started = Instant::now();
            run(&lab.router, change);
            let (at, event) = events
                .recv_timeout(Duration::from_secs(5))
                .expect("a repair");
            let WatchEvent::Repaired { took: t, .. } = event else {
                panic!("{event:?}");
            };
            took.push(t);
            by_kind[kind].push(t);
            end_to_end.push(at - started);
            // The repair's own notifications are past; the next change starts clean.
            assert!(blocking::check(&spec).unwrap().is_empty());
        }
    }
    let idle = idle_cpu(Duration::from_secs(10));
    let with_watch = applies(&lab, iters);
    watcher.stop().expect("stop");
    let without_watch = applies(&lab, iters);

    // The baseline: check every second, ensure on drift.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, repaired) = mpsc::channel();
    let poller = {
        let (spec, stop) = (spec.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                if !blocking::check(&spec).unwrap().is_empty() {
                    blocking::ensure(&spec).unwrap();
                    let _ = tx.send(Instant::now());
                }
            }
        })
    };
    let mut polled = Vec::new();
    for round in 0..5 {
        for (kind, change) in changes.iter().enumerate() {
            // Changes come at any moment of the polling period, not right after a poll.
            std::thread::sleep(Duration::from_millis(
                ((round * 4 + kind) * 397 % 1000) as u64,
            ));
            let started = Instant::now();
            run(&lab.router, change);
            let at = repaired
                .recv_timeout(Duration::from_secs(5))
                .expect("a repair");
            polled.push(at - started);
        }
    }
    stop.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    blocking::teardown(router).expect("teardown");

    println!(
        "repair after an outside change ({} changes: default route, table flush, link down, ip_forward)",
        took.len()
    );
    println!(
        "  watch, notification to verified repair   median {:>9.2?}  p90 {:>9.2?}  max {:>9.2?}",
        pct(&mut took, 50),
        pct(&mut took, 90),
        pct(&mut took, 100)
    );
    for (kind, mut t) in [
        "default route deleted",
        "table flushed",
        "macvlan down",
        "ip_forward 0",
    ]
    .into_iter()
    .zip(by_kind)
    {
        println!(
            "    {kind:<38} median {:>9.2?}  max {:>9.2?}",
            pct(&mut t, 50),
            pct(&mut t, 100)
        );
    }
    println!(
        "  watch, change command start to repair    median {:>9.2?}  p90 {:>9.2?}  max {:>9.2?}",
        pct(&mut end_to_end, 50),
        pct(&mut end_to_end, 90),
        pct(&mut end_to_end, 100)
    );
    println!(
        "  1 s polling loop (check, then ensure)    median {:>9.2?}  p90 {:>9.2?}  max {:>9.2?}",
        pct(&mut polled, 50),
        pct(&mut polled, 90),
        pct(&mut polled, 100)
    );
    println!(
        "  ratio polling / watch (medians, change start to repair): {:.0}x",
        pct(&mut polled, 50).as_secs_f64() / pct(&mut end_to_end, 50).as_secs_f64()
    );
    println!(
        "idle watch: {:?} CPU time for the whole process over 10 s, {} context switches",
        idle.0, idle.1
    );
    println!(
        "apply of another router, median of {iters}: {:.2?} with a watch running, {:.2?} without: {:.3}x",
        with_watch,
        without_watch,
        with_watch.as_secs_f64() / without_watch.as_secs_f64()
    );
}

/// The four changes, as the commands an operator (or a tool) would run in the namespace.
fn changes(spec: &RouterSpec) -> Vec<Vec<String>> {
    let link = spec.external().link_name();
    let table = spec.table_name();
    [
        "ip route del default".to_string(),
        format!("nft flush table inet {table}"),
        format!("ip link set {link} down"),
        "sysctl -qw net.ipv4.ip_forward=0".to_string(),
    ]
    .iter()
    .map(|c| c.split(' ').map(String::from).collect())
    .collect()
}

/// Runs `cmd` in `ns`.
fn run(ns: &egress_lab::Netns, cmd: &[String]) {
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    ns.exec(&cmd);
}

/// CPU time (user + system) of this process and context switches of all its threads over
/// `span`, doing nothing.
fn idle_cpu(span: Duration) -> (Duration, u64) {
    fn sample() -> (Duration, u64) {
        let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
        let cpu = Duration::from_micros(
            (u.user_time().tv_sec() * 1_000_000 + u.user_time().tv_usec()) as u64
                + (u.system_time().tv_sec() * 1_000_000 + u.system_time().tv_usec()) as u64,
        );
        (
            cpu,
            (u.voluntary_context_switches() + u.involuntary_context_switches()) as u64,
        )
    }
    // Idle pool threads end after 2 s; let them.
    std::thread::sleep(Duration::from_secs(3));
    let before = sample();
    std::thread::sleep(span);
    let after = sample();
    (after.0 - before.0, after.1 - before.1)
}

/// Median apply (+ untimed teardown) of a second router in a namespace of its own.
fn applies(lab: &Lab, iters: usize) -> Duration {
    let other = egress_lab::Netns::new("other");
    other.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth9",
    ]);
    other.ip(&["link", "set", "eth0", "up"]);
    other.ip(&["addr", "add", "192.0.2.50/24", "dev", "eth0"]);
    let spec = lab
        .router_spec("other")
        .netns(egress_core::Netns::Path(other.path().into()))
        .build()
        .unwrap();
    let mut t = Vec::new();
    for _ in 0..iters {
        let started = Instant::now();
        let r = blocking::apply(&spec).expect("apply");
        t.push(started.elapsed());
        blocking::teardown(r).expect("teardown");
    }
    pct(&mut t, 50)
}

fn pct(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    v[((v.len() - 1) * p) / 100]
}
