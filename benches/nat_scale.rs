//! 10,000 port redirects in one router: the apply time, and the rate of new connections through
//! the router, side by side with one redirect and with a per-port rule chain (what
//! iptables-era routers generate: one DNAT rule per port, matched in order).
//!
//! Connections go from the lab's client to the router's eth0 on the *last* redirected port
//! (the worst case for a rule chain), are DNAT-ed to the web server and SNAT-ed to the egress IP;
//! each one is opened, answered and closed. Each rate is measured for `EGRESS_NAT_SECONDS`
//! (default 3) seconds.
//!
//! Run as root: `cargo bench --bench nat_scale`.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use egress_core::{blocking, Protocol, RouterSpec};
use egress_lab::{ip, Lab, ROUTER_ETH0_4, WEB4, WEB_PORT};

const REDIRECTS: u16 = 10_000;
const FIRST_PORT: u16 = 20_000;

fn spec(lab: &Lab, redirects: u16) -> RouterSpec {
    let mut b = lab.router_spec("natscale").announce(0);
    // router_spec redirects 80 and 8080; add the bench's ports above them.
    for p in FIRST_PORT..FIRST_PORT + redirects {
        b = b.redirect(Protocol::Tcp, p, WEB4, Some(WEB_PORT));
    }
    b.build().expect("a valid spec")
}

/// New connections per second from the client to `port` on the router, for `secs` seconds.
fn rate(lab: &Lab, port: u16, secs: f64) -> f64 {
    let target = SocketAddr::new(ip(ROUTER_ETH0_4), port);
    lab.client.run(move || {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let start = Instant::now();
        let mut n = 0u64;
        let mut buf = Vec::with_capacity(128);
        while Instant::now() < deadline {
            let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(1))
                .unwrap_or_else(|e| panic!("connect {target}: {e}"));
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
        n as f64 / start.elapsed().as_secs_f64()
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
        .unwrap_or(3.0);
    let lab = Lab::new();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    // Time-waits of the many short connections must not exhaust the client's ports.
    lab.client.sysctl_set("net.ipv4.tcp_tw_reuse", "1");
    lab.client
        .sysctl_set("net.ipv4.ip_local_port_range", "10000 60999");

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

    let one = blocking::apply(&spec(&lab, 1)).expect("apply");
    let rate_one = rate(&lab, FIRST_PORT, secs);
    per_port_chain(&lab);
    let rate_chain = rate(&lab, last, secs);
    lab.router
        .exec(&["nft", "delete", "table", "ip", "egt_perport"]);
    blocking::teardown(one).expect("teardown");

    let many = blocking::apply(&big).expect("apply");
    let rate_map = rate(&lab, last, secs);
    blocking::teardown(many).expect("teardown");

    println!("NAT with {REDIRECTS} port redirects:");
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
}
