//! The diagnosis of a healthy router: how long it takes, whole and per probe.
//!
//! A healthy router's diagnosis takes one probe timeout and what the reads and the sockets
//! cost: its duplicate address probes wait the whole timeout for the answer that must not come.
//! So the bench times it at the default timeout (300 ms, what an operator gets) and at 50 ms,
//! where the rest shows: reading the namespace, the counters and conntrack, finding the parent
//! link, and closing the packet socket (an RCU grace period). It also reports the probes' own
//! times from the evidence: the gateway's ARP and neighbour discovery replies, the TCP
//! connections to the destinations. The router is the lab's, dual stack, diagnosed both from
//! its spec and by name.
//!
//! Run as root: `cargo bench --bench diagnose` (`EGRESS_BENCH_ITERS`, default 20).

use std::time::{Duration, Instant};

use egress_core::{blocking, DiagnoseOptions, Diagnosis, Netns, Protocol, Status};
use egress_lab::{
    Lab, EGRESS_SOURCE6, FALLBACK4, GATEWAY4, GATEWAY6, SERVICE_PORT, WEB6, WEB_PORT,
};

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("diagnose: needs root (it builds network namespaces)");
        std::process::exit(2);
    }
    let iters: usize = std::env::var("EGRESS_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let lab = Lab::new();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    let spec = lab
        .router_spec("bench")
        .source(EGRESS_SOURCE6)
        .gateway(GATEWAY6)
        .redirect(Protocol::Tcp, SERVICE_PORT, WEB6, Some(WEB_PORT))
        .fallback(FALLBACK4)
        .build()
        .expect("a valid spec");
    let router = blocking::apply(&spec).expect("apply");
    let netns = Netns::Path(lab.router.path().into());

    println!(
        "diagnose of a healthy router (macvlan, v4+v6, 3 redirects to 2 destinations + fallback), \
         {iters} iterations, medians:"
    );
    for timeout in [Duration::from_millis(300), Duration::from_millis(50)] {
        let options = DiagnoseOptions::new().timeout(timeout);
        let mut from_spec = Vec::new();
        let mut by_name = Vec::new();
        let mut probes = Probes::default();
        for _ in 0..iters {
            let t = Instant::now();
            let d = blocking::diagnose_spec(&spec, &options).expect("diagnose_spec");
            from_spec.push(t.elapsed());
            probes.add(&d);
            let t = Instant::now();
            let d = blocking::diagnose(&netns, "bench", &options).expect("diagnose");
            by_name.push(t.elapsed());
            probes.add(&d);
        }
        let (s, n) = (median(&mut from_spec), median(&mut by_name));
        println!(
            "  timeout {:>3} ms: from the spec {:>8.3} ms   by name {:>8.3} ms   beyond the \
             timeout {:>7.3} / {:>7.3} ms",
            timeout.as_millis(),
            ms(s),
            ms(n),
            ms(s.saturating_sub(timeout)),
            ms(n.saturating_sub(timeout))
        );
        probes.report();
    }
    blocking::teardown(router).expect("teardown");
}

/// The probes' own times, from the evidence of every diagnosis.
#[derive(Default)]
struct Probes {
    arp: Vec<f64>,
    nd: Vec<f64>,
    tcp: Vec<f64>,
}

impl Probes {
    fn add(&mut self, d: &Diagnosis) {
        assert!(
            d.checks.iter().all(|c| c.status == Status::Ok),
            "the bench's router is not healthy:\n{d}"
        );
        for c in d.named("gateway") {
            let reply = c.evidence["answered_by"][0]["reply_ms"]
                .as_f64()
                .expect("a reply time");
            match c.evidence["gateway"].as_str() {
                Some(GATEWAY4) => self.arp.push(reply),
                Some(GATEWAY6) => self.nd.push(reply),
                other => panic!("gateway {other:?}"),
            }
        }
        for c in d.named("destination") {
            if let Some(t) = c.evidence["connect_ms"].as_f64() {
                self.tcp.push(t);
            }
        }
    }

    fn report(&mut self) {
        let m = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "    probes: gateway ARP reply {:.3} ms, neighbour advertisement {:.3} ms, TCP \
             connect {:.3} ms",
            m(&mut self.arp),
            m(&mut self.nd),
            m(&mut self.tcp)
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}
