//! 10,000 port redirects in one router: the apply time, and the rate of new connections through
//! the router, side by side with one redirect and with a per-port rule chain (what
//! iptables-era routers generate: one DNAT rule per port, matched in order).
//!
//! Connections go from the lab's client to the router's eth0 on the *last* redirected port
//! (the worst case for a rule chain), are DNAT-ed to the web server and SNAT-ed to the egress IP;
//! each one is opened, answered and closed. The three set-ups are measured in rounds
//! (`EGRESS_NAT_ROUNDS`, default 5), each for `EGRESS_NAT_SECONDS` (default 2) seconds, in an
//! order that rotates from round to round, so that no set-up gets the machine's quiet moments,
//! or a fuller conntrack table, more than another. Each rate is the median of its rounds.
//!
//! Run as root: `cargo bench --bench nat_scale`.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use egress_core::{blocking, Drift, Protocol, RouterSpec};
use egress_lab::{ip, Lab, ROUTER_ETH0_4, WEB4, WEB_PORT};

const REDIRECTS: u16 = 10_000;
const FIRST_PORT: u16 = 20_000;

fn spec(lab: &Lab, redirects: u16) -> RouterSpec {
    let mut b = lab.router_spec("natscale");
    // router_spec redirects 80 and 8080; add the bench's ports above them.
    for p in FIRST_PORT..FIRST_PORT + redirects {
        b = b.redirect(Protocol::Tcp, p, WEB4, Some(WEB_PORT));
    }
    b.build().expect("a valid spec")
}

/// New connections per second from the client to `port` on the router, for `secs` seconds,
/// and how many connection attempts timed out (after 1 s; the time counts, the attempt not).
fn rate(lab: &Lab, port: u16, secs: f64) -> (f64, u32) {
    let target = SocketAddr::new(ip(ROUTER_ETH0_4), port);
    lab.client.run(move || {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let start = Instant::now();
        let (mut n, mut timeouts) = (0u64, 0u32);
        let mut buf = Vec::with_capacity(128);
        while Instant::now() < deadline {
            let mut s = match TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    timeouts += 1;
                    continue;
                }
                Err(e) => panic!("connect {target}: {e}"),
            };
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            buf.clear();
            s.read_to_end(&mut buf).unwrap();
            assert!(
                buf.starts_with(b"HTTP/1.0 200"),
                "{:?}",
                String::from_utf8_lossy(&buf)
            );
            n += 1;
        }
        (n as f64 / start.elapsed().as_secs_f64(), timeouts)
    })
}

fn per_port_chain(lab: &Lab) {
    let mut script = String::from(
        "table ip egt_perport {\n chain prerouting {\n  type nat hook prerouting priority dstnat - 1; policy accept;\n",
    );
    for p in FIRST_PORT..FIRST_PORT + REDIRECTS {
        script += &format!("  iifname \"eth0\" tcp dport {p} dnat to {WEB4}:{WEB_PORT}\n");
    }
    script += " }\n}\n";
    lab.router.nft(&script);
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("nat_scale: needs root (it builds network namespaces)");
        std::process::exit(2);
    }
    let secs: f64 = std::env::var("EGRESS_NAT_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0);
    let rounds: usize = std::env::var("EGRESS_NAT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let lab = Lab::new();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    // Time-waits of the many short connections must not exhaust the client's ports, and the
    // web server (which closes first) keeps none: the bench makes more connections than
    // there are ports, and a SYN that meets a time-wait of its 4-tuple is answered late.
    lab.client.sysctl_set("net.ipv4.tcp_tw_reuse", "1");
    lab.client
        .sysctl_set("net.ipv4.ip_local_port_range", "10000 60999");
    lab.ext.sysctl_set("net.ipv4.tcp_max_tw_buckets", "0");

    let big = spec(&lab, REDIRECTS);
    let mut applies = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r = blocking::apply(&big).expect("apply");
        applies.push(t.elapsed());
        blocking::teardown(r).expect("teardown");
    }
    applies.sort();
    let apply = applies[applies.len() / 2];
    let last = FIRST_PORT + REDIRECTS - 1;

    // One router throughout; each set-up converges its ruleset with `ensure` (a NAT-only
    // change: one batch replaces the rules and the map, the links and addresses stay).
    let one = spec(&lab, 1);
    let router = blocking::apply(&one).expect("apply");
    let measure = |setup: usize| -> (f64, u32) {
        let converge = |s: &RouterSpec| {
            let outcome = blocking::ensure(s).expect("ensure");
            assert!(
                outcome
                    .drift
                    .iter()
                    .all(|d| matches!(d, Drift::NatChanged { .. })),
                "{:?}",
                outcome.drift
            );
        };
        match setup {
            0 => {
                converge(&one);
                rate(&lab, FIRST_PORT, secs)
            }
            1 => {
                converge(&big);
                rate(&lab, last, secs)
            }
            _ => {
                // The 1-redirect router routes and translates back; the chain DNATs first.
                converge(&one);
                per_port_chain(&lab);
                let r = rate(&lab, last, secs);
                lab.router
                    .exec(&["nft", "delete", "table", "ip", "egt_perport"]);
                r
            }
        }
    };
    let mut rates: [Vec<f64>; 3] = Default::default();
    let mut timeouts = 0;
    for round in 0..rounds {
        for k in 0..3 {
            let setup = (round + k) % 3;
            let (r, t) = measure(setup);
            rates[setup].push(r);
            timeouts += t;
        }
    }
    blocking::teardown(router).expect("teardown");
    let [rate_one, rate_map, rate_chain] = rates.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    });

    println!("NAT with {REDIRECTS} port redirects ({rounds} rounds of {secs} s, medians):");
    println!(
        "  apply (median of 5)                      {:>8.2} ms   (target 20 ms)",
        apply.as_secs_f64() * 1e3
    );
    println!("  new connections/s, 1 redirect (map)      {rate_one:>8.0}");
    println!(
        "  new connections/s, {REDIRECTS} redirects (map)  {rate_map:>8.0}   {:>5.1}% of 1 redirect (target 95%)",
        rate_map / rate_one * 100.0
    );
    println!(
        "  new connections/s, {REDIRECTS} per-port rules   {rate_chain:>8.0}   {:>5.1}% of 1 redirect",
        rate_chain / rate_one * 100.0
    );
    println!("  connection attempts that timed out (1 s), all set-ups: {timeouts}");
}
