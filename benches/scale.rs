//! 1,000 routers in 1,000 namespaces, applied and torn down with bounded concurrency.
//!
//! Each router namespace gets a macvlan on one shared parent (in a node namespace), an IPv4
//! source and gateway, one redirect and a fallback. The internal link is the namespace's `lo`:
//! this measures the control plane, not traffic (the throughput benches do that), and spares the
//! setup 1,000 veth pairs. Namespaces are created and deleted with `ip -batch` (not timed).
//!
//! Concurrency is bounded separately for the two phases. An apply is CPU work (kernel and ours):
//! 16 at a time keep both cores busy. A teardown mostly waits, in the kernel, for the RCU grace
//! periods that deleting a link needs; grace periods are shared by every deletion waiting at the
//! time, so 256 at a time share them (16 at a time: about 3× slower on the same machine).
//!
//! Run as root: `cargo bench --bench scale` (`EGRESS_SCALE_N`, default 1000;
//! `EGRESS_SCALE_APPLY_CONCURRENCY`, default 16; `EGRESS_SCALE_TEARDOWN_CONCURRENCY`, default 256).

use std::{
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use egress_core::{blocking, MacvlanMode, Netns, Protocol, Router, RouterSpec};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `ip [-n NETNS] -batch -`, fed `lines`; panics with stderr on failure.
fn ip_batch(netns: Option<&str>, lines: &str) {
    let mut args = vec!["-batch", "-"];
    if let Some(ns) = netns {
        args.splice(0..0, ["-n", ns]);
    }
    let mut child = Command::new("ip")
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), lines.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ip -batch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces of the bench; deleted on drop, also when the bench panics.
struct Fleet {
    node: String,
    routers: Vec<String>,
}

impl Fleet {
    fn new(n: usize) -> Fleet {
        let prefix = format!("egt-{}-scale", std::process::id());
        let fleet = Fleet {
            node: format!("{prefix}-node"),
            routers: (0..n).map(|i| format!("{prefix}-{i}")).collect(),
        };
        let mut batch = format!("netns add {}\n", fleet.node);
        for r in &fleet.routers {
            batch += &format!("netns add {r}\n");
        }
        ip_batch(None, &batch);
        ip_batch(
            Some(&fleet.node),
            "link add ext0 type veth peer name ext1\nlink set ext0 up\nlink set ext1 up\n",
        );
        fleet
    }

    fn spec(&self, i: usize) -> RouterSpec {
        RouterSpec::builder(format!("scale-{i}"))
            .netns(Netns::Name(self.routers[i].clone()))
            .macvlan("ext0", MacvlanMode::Private)
            .parent_netns(Netns::Name(self.node.clone()))
            .internal("lo")
            .source("203.0.113.99/24")
            .gateway("203.0.113.1")
            .redirect(Protocol::Tcp, 80, "198.51.100.25", Some(8080))
            .fallback("198.51.100.9")
            .build()
            .expect("a valid spec")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let mut batch = format!("netns del {}\n", self.node);
        for r in &self.routers {
            batch += &format!("netns del {r}\n");
        }
        // -force: keep deleting after one fails.
        let _ = Command::new("ip")
            .args(["-force", "-batch", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut c| {
                std::io::Write::write_all(c.stdin.as_mut().unwrap(), batch.as_bytes())?;
                c.wait()
            });
    }
}

/// Runs `work(i)` for every i in 0..n on `threads` threads; returns the wall time and the
/// time of each call, sorted.
fn run(n: usize, threads: usize, work: impl Fn(usize) + Sync) -> (Duration, Vec<Duration>) {
    let next = AtomicUsize::new(0);
    let each = Mutex::new(Vec::with_capacity(n));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = Instant::now();
                work(i);
                each.lock().unwrap().push(t.elapsed());
            });
        }
    });
    let wall = start.elapsed();
    let mut each = each.into_inner().unwrap();
    each.sort();
    (wall, each)
}

/// `p50 … p99 … max` of sorted call times, in ms.
fn spread(each: &[Duration]) -> String {
    let at = |q: f64| each[((each.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    format!(
        "each call: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("scale: needs root (it builds network namespaces)");
        std::process::exit(2);
    }
    let n = env("EGRESS_SCALE_N", 1000);
    let apply_threads = env("EGRESS_SCALE_APPLY_CONCURRENCY", 16);
    let teardown_threads = env("EGRESS_SCALE_TEARDOWN_CONCURRENCY", 256);
    let setup = Instant::now();
    let fleet = Fleet::new(n);
    let specs: Vec<RouterSpec> = (0..n).map(|i| fleet.spec(i)).collect();
    println!(
        "{n} namespaces created in {:.1} s (not timed below)",
        setup.elapsed().as_secs_f64()
    );

    let routers: Vec<Mutex<Option<Router>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let applied = run(n, apply_threads, |i| {
        let r = blocking::apply(&specs[i]).unwrap_or_else(|e| panic!("router {i}: {e}"));
        *routers[i].lock().unwrap() = Some(r);
    });
    let torn_down = run(n, teardown_threads, |i| {
        let r = routers[i].lock().unwrap().take().expect("applied");
        blocking::teardown(r).unwrap_or_else(|e| panic!("router {i}: {e}"));
    });
    let ((applied, apply_each), (torn_down, teardown_each)) = (applied, torn_down);
    println!("{n} routers (targets on 2 cores: apply all 1 s, teardown all 5 s):");
    println!(
        "  apply all     {:>7.3} s, {apply_threads:>3} at a time; {}",
        applied.as_secs_f64(),
        spread(&apply_each)
    );
    println!(
        "  teardown all  {:>7.3} s, {teardown_threads:>3} at a time; {}",
        torn_down.as_secs_f64(),
        spread(&teardown_each)
    );
}
