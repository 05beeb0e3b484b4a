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
//! Run as root: `cargo bench --bench metrics` (`EGRESS_BENCH_ITERS` requests of each kind,
//! default 100).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use egress_core::blocking;
use egress_lab::{ip, Lab, FALLBACK4, ROUTER_ETH0_4, SERVICE_PORT, WEB_PORT};
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
}

/// `GET path` over a new TCP connection from the router's namespace; the body of a 200.
fn get(lab: &Lab, at: SocketAddr, path: &str) -> String {
    lab.router.run(|| {
        let mut s = TcpStream::connect(at).expect("connect");
        write!(s, "GET {path} HTTP/1.1\r\nHost: {at}\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").expect("a response");
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        body.to_string()
    })
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
