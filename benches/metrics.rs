//! What a scrape of `egress-router`'s `/metrics` and `/healthz` costs, side by side with its
//! parts: the two kernel reads every scrape makes (`stats`, the counters; `check`, the
//! comparison with the spec), called directly.
//!
//! The lab's router (two redirects and a fallback, IPv4) with traffic through it; the responder
//! of `egress_openshift::metrics` on 127.0.0.1 in the router's namespace, asked over TCP from
//! that namespace (a new connection per request, as Prometheus and the kubelet do). Then the
//! same scrapes while a burst of outside changes keeps the watch repairing: the responder
//! answers meanwhile.
//!
//! Then two `egress-router` binaries side by side, in legacy mode in the same lab one after
//! the other: this build's (`target/release/egress-router`, or `$EGRESS_ROUTER_BIN`) and
//! another one's (`$EGRESS_ROUTER_BASELINE`, e.g. the previous release's, built from git):
//! scrapes and probes on an idle listener, then probes while 3 clients send a request a byte
//! every 1.5 s and 200 connections sit idle (each probe given 1 s).
//!
//! Run as root: `cargo bench --bench metrics` (`EGRESS_BENCH_ITERS` requests of each kind,
//! default 100).

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use egress_core::blocking;
use egress_lab::{
    ip, while_held, workspace_binary, Lab, EGRESS_SOURCE4, FALLBACK4, GATEWAY4, ROUTER_ETH0_4,
    SERVICE_PORT, WEB4, WEB_PORT,
};
use egress_openshift::metrics::Metrics;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("metrics: needs root (it builds network namespaces)");
        std::process::exit(2);
    }
    let iters: usize = std::env::var("EGRESS_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let lab = Lab::new();
    let _web = lab.ext.serve_http(&[WEB_PORT, 9090]);
    let spec = lab
        .router_spec("metrics")
        .fallback(FALLBACK4)
        .build()
        .unwrap();
    let router = blocking::apply(&spec).expect("apply");
    for port in [SERVICE_PORT, WEB_PORT, 9090] {
        lab.client
            .http_get(ip(ROUTER_ETH0_4), port, Duration::from_secs(2))
            .expect("traffic through the router");
    }
    let metrics = Metrics::new(&spec);
    let watched = metrics.clone();
    let watcher = egress_core::watch(&spec, move |e| watched.on_event(e)).expect("watch");
    let listener = lab
        .router
        .run(|| TcpListener::bind("127.0.0.1:0").expect("listen"));
    let at = listener.local_addr().unwrap();
    metrics.serve(listener).expect("serve");

    let body = get(&lab, at, "/metrics");
    println!(
        "metrics bench: {iters} requests each; /metrics is {} lines, {} samples, {} bytes",
        body.lines().count(),
        body.lines().filter(|l| !l.starts_with('#')).count(),
        body.len()
    );
    let mut rows: Vec<(&str, Vec<Duration>)> = vec![
        ("GET /metrics (stats + check + encode)", Vec::new()),
        ("GET /healthz (check)", Vec::new()),
        ("  stats() alone", Vec::new()),
        ("  check() alone", Vec::new()),
    ];
    for _ in 0..iters {
        for (i, row) in rows.iter_mut().enumerate() {
            let started = Instant::now();
            match i {
                0 => drop(get(&lab, at, "/metrics")),
                1 => drop(get(&lab, at, "/healthz")),
                2 => drop(blocking::stats(spec.netns(), spec.name()).unwrap()),
                _ => drop(blocking::check(&spec).unwrap()),
            }
            row.1.push(started.elapsed());
        }
    }
    for (what, times) in &mut rows {
        report(what, times);
    }

    // While the watch repairs: a default route deleted every 20 ms, scrapes in between.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let changer = {
        let stop = stop.clone();
        let ns = lab.router.name().to_string();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::process::Command::new("ip")
                    .args(["-n", &ns, "route", "del", "default"])
                    .status();
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        })
    };
    let mut during = Vec::new();
    for _ in 0..iters {
        let started = Instant::now();
        drop(get(&lab, at, "/metrics"));
        during.push(started.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let changes: usize = changer.join().unwrap();
    report("GET /metrics while the watch repairs", &mut during);
    let body = get(&lab, at, "/metrics");
    let repairs: f64 = body
        .lines()
        .filter(|l| l.starts_with("egress_router_repairs_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    println!("  ({changes} default routes deleted meanwhile, {repairs} repairs counted)");
    watcher.stop().expect("stop the watch");
    blocking::teardown(router).expect("teardown");
    drop(lab);

    let this = workspace_binary(
        "egress-router",
        &["egress-openshift", "egress-core"],
        "EGRESS_ROUTER_BIN",
    );
    let Some(baseline) = std::env::var_os("EGRESS_ROUTER_BASELINE").map(PathBuf::from) else {
        println!(
            "binaries side by side: set EGRESS_ROUTER_BASELINE to another egress-router to \
             compare with"
        );
        return;
    };
    println!("binaries side by side, {iters} requests each, new connection each, from the client:");
    for (what, binary) in [("this build", this), ("baseline", baseline)] {
        println!("  {what}: {}", binary.display());
        binary_run(&binary, iters);
    }
}

/// `binary` in legacy mode in a new lab, listening on the router's internal address: scrapes
/// and probes from the client, then probes under slow and idle clients.
fn binary_run(binary: &Path, iters: usize) {
    let lab = Lab::with_adopted_macvlan();
    let _web = lab.ext.serve_http(&[WEB_PORT, 9090]);
    let destination =
        format!("{SERVICE_PORT} tcp {WEB4} {WEB_PORT}\n{WEB_PORT} tcp {WEB4}\n{FALLBACK4}");
    let mut router = Command::new("ip")
        .args(["netns", "exec", lab.router.name()])
        .arg(binary)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs([
            ("EGRESS_SOURCE", EGRESS_SOURCE4),
            ("EGRESS_GATEWAY", GATEWAY4),
            ("EGRESS_DESTINATION", &destination),
            ("EGRESS_ROUTER_METRICS", "0.0.0.0:9100"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("egress-router");
    let at: SocketAddr = format!("{ROUTER_ETH0_4}:9100").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lab
        .client
        .http_get_path(at, "/healthz", Duration::from_secs(1))
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "{} never answered",
            binary.display()
        );
        thread::sleep(Duration::from_millis(50));
    }
    for port in [SERVICE_PORT, WEB_PORT, 9090] {
        lab.client
            .http_get(ip(ROUTER_ETH0_4), port, Duration::from_secs(2))
            .expect("traffic through the router");
    }
    let mut scrapes = Vec::new();
    let mut probes = Vec::new();
    for _ in 0..iters {
        for (path, times) in [("/metrics", &mut scrapes), ("/healthz", &mut probes)] {
            let started = Instant::now();
            lab.client
                .http_get_path(at, path, Duration::from_secs(5))
                .expect("an answer");
            times.push(started.elapsed());
        }
    }
    report("    GET /metrics", &mut scrapes);
    report("    GET /healthz", &mut probes);

    // 3 slow clients and 200 idle connections; a probe every 100 ms, given 1 s each.
    let within = Duration::from_secs(1);
    let (idle, mut answered, failed) = while_held(&lab.client, at, 3, 200, |idle| {
        let (mut answered, mut failed) = (Vec::new(), 0);
        for _ in 0..(iters / 5).max(10) {
            let started = Instant::now();
            match lab.client.http_get_path(at, "/healthz", within) {
                Ok(_) => answered.push(started.elapsed()),
                Err(_) => failed += 1,
            }
            thread::sleep(Duration::from_millis(100));
        }
        (idle, answered, failed)
    });
    println!(
        "    under 3 slow + {idle} idle clients: {} probes answered within 1 s, {failed} not",
        answered.len()
    );
    if !answered.is_empty() {
        report("    GET /healthz under that load", &mut answered);
    }
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(router.id() as i32, libc::SIGTERM) };
    router.wait().expect("egress-router ends");
}

/// `GET path` over a new TCP connection from the router's namespace; the body of a 200.
fn get(lab: &Lab, at: SocketAddr, path: &str) -> String {
    lab.router
        .http_get_path(at, path, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn report(what: &str, times: &mut [Duration]) {
    times.sort();
    let at = |p: usize| times[(times.len() - 1) * p / 100];
    println!(
        "  {what:<40} median {:>9.2?}  p90 {:>9.2?}  max {:>9.2?}",
        at(50),
        at(90),
        at(100)
    );
}
