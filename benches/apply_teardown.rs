//! Apply and teardown of one full router, side by side with the shell way in the same run.
//!
//! Ours: `egress_core::blocking::apply` / `teardown` (netlink, no process). Baseline: the same
//! kernel changes the way the OpenShift script makes them — one `ip`/`sysctl` process per change
//! and one `nft -f` for the table, no arping (its 1 s wait would make the ratio meaningless).
//! Both run in the lab's throwaway namespaces, interleaved, and the bench prints medians and the
//! ratio baseline / ours. A third row times the slowest kernel deletion a teardown needs alone:
//! one `RTM_DELLINK` of the same macvlan in the same state (made by `ip`, untimed), which waits
//! for RCU grace periods in the kernel; a teardown runs its other deletions beside it.
//!
//! Run as root: `cargo bench --bench apply_teardown` (`EGRESS_BENCH_ITERS`, default 40).

use std::time::{Duration, Instant};

use egress_core::{blocking, Protocol, RouterSpec};
use egress_lab::{
    Lab, Netns, EGRESS_SOURCE4, EGRESS_SOURCE6, FALLBACK4, GATEWAY4, GATEWAY6, MACVLAN_PARENT,
    NODE4, NODE6, WEB4,
};
use netlink_packet_route::{link::LinkMessage, RouteNetlinkMessage};

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("apply_teardown: needs root (it builds network namespaces)");
        std::process::exit(2);
    }
    let iters: usize = std::env::var("EGRESS_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let lab = Lab::new();
    let spec = full_router(&lab);
    let ruleset = {
        // The baseline installs exactly our ruleset, as text for `nft -f`.
        let r = blocking::apply(&spec).expect("apply");
        let text = lab
            .router
            .exec(&["nft", "list", "table", "inet", &spec.table_name()]);
        blocking::teardown(r).expect("teardown");
        text.replace(&spec.table_name(), "egress_shell")
    };

    let (mut ours_apply, mut ours_down, mut sh_apply, mut sh_down, mut link_down) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..iters {
        let t = Instant::now();
        let r = blocking::apply(&spec).expect("apply");
        ours_apply.push(t.elapsed());
        let t = Instant::now();
        blocking::teardown(r).expect("teardown");
        ours_down.push(t.elapsed());

        let t = Instant::now();
        shell_apply(&lab, &ruleset);
        sh_apply.push(t.elapsed());
        let t = Instant::now();
        shell_teardown(&lab);
        sh_down.push(t.elapsed());

        link_down.push(macvlan_deletion(&lab));
    }
    println!("one full router (macvlan, v4+v6, 3 redirects + fallback, kept route, forward filter), {iters} iterations, medians:");
    report("apply", &mut ours_apply, &mut sh_apply);
    report("teardown", &mut ours_down, &mut sh_down);
    let (down, link) = (median(&mut ours_down), median(&mut link_down));
    println!(
        "  the macvlan deletion alone (one RTM_DELLINK, same state) {:>8.3} ms   teardown / it {:>5.2}x",
        ms(link),
        down.as_secs_f64() / link.as_secs_f64()
    );
}

/// Times the deletion of the bench's macvlan alone: one netlink request, in the state a router
/// leaves it in, made with `ip`/`sysctl` and untimed: up, with the egress addresses, routes
/// through it, and forwarding on (a link of a forwarding namespace takes about twice as long
/// to delete: IPv6 router state).
fn macvlan_deletion(lab: &Lab) -> Duration {
    let r = &lab.router;
    macvlan_with_addresses_and_gateways(lab);
    let forwarding = |v: &str| {
        for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
            r.exec(&["sysctl", "-q", "-w", &format!("{key}={v}")]);
        }
    };
    forwarding("1");
    let index = r.ip_json(&["link", "show", "macvlan0"])[0]["ifindex"]
        .as_u64()
        .expect("an ifindex") as u32;
    let mut del = LinkMessage::default();
    del.header.index = index;
    let t = Instant::now();
    r.rtnetlink(RouteNetlinkMessage::DelLink(del), 0)
        .expect("RTM_DELLINK");
    let took = t.elapsed();
    forwarding("0");
    took
}

fn full_router(lab: &Lab) -> RouterSpec {
    lab.router_spec("bench")
        .source(EGRESS_SOURCE6)
        .gateway(GATEWAY6)
        .redirect(Protocol::Tcp, 443, WEB4, None)
        .fallback(FALLBACK4)
        .keep_route("192.0.2.128/25", Some(NODE4))
        .build()
        .expect("a valid spec")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn report(what: &str, ours: &mut [Duration], shell: &mut [Duration]) {
    let (o, s) = (median(ours), median(shell));
    println!(
        "  {what:<9} egress {:>8.3} ms   shell (ip/sysctl/nft processes) {:>8.3} ms   ratio {:>5.1}x",
        ms(o),
        ms(s),
        s.as_secs_f64() / o.as_secs_f64()
    );
}

fn ip(ns: &Netns, args: &[&str]) {
    ns.ip(args);
}

fn shell_apply(lab: &Lab, ruleset: &str) {
    let r = &lab.router;
    macvlan_with_addresses_and_gateways(lab);
    ip(r, &["route", "del", "default"]);
    ip(r, &["-6", "route", "del", "default"]);
    ip(
        r,
        &[
            "route", "add", "default", "via", GATEWAY4, "dev", "macvlan0",
        ],
    );
    ip(
        r,
        &[
            "-6", "route", "add", "default", "via", GATEWAY6, "dev", "macvlan0",
        ],
    );
    ip(
        r,
        &[
            "route",
            "add",
            "192.0.2.128/25",
            "via",
            NODE4,
            "dev",
            "eth0",
        ],
    );
    for kv in [
        "net.ipv4.ip_forward=1",
        "net.ipv6.conf.all.forwarding=1",
        "net.ipv4.conf.macvlan0.arp_notify=1",
        "net.ipv6.conf.macvlan0.ndisc_notify=1",
    ] {
        r.exec(&["sysctl", "-q", "-w", kv]);
    }
    r.nft(ruleset);
}

/// The shell's first changes: `ip link add … type macvlan`, up, the egress addresses and the
/// routes to the gateways, one process each.
fn macvlan_with_addresses_and_gateways(lab: &Lab) {
    let r = &lab.router;
    ip(
        &lab.node,
        &[
            "link",
            "add",
            "macvlan0",
            "link",
            MACVLAN_PARENT,
            "netns",
            r.name(),
            "type",
            "macvlan",
            "mode",
            "private",
        ],
    );
    ip(r, &["link", "set", "macvlan0", "up"]);
    ip(r, &["addr", "add", EGRESS_SOURCE4, "dev", "macvlan0"]);
    ip(
        r,
        &["addr", "add", EGRESS_SOURCE6, "dev", "macvlan0", "nodad"],
    );
    ip(
        r,
        &["route", "add", &format!("{GATEWAY4}/32"), "dev", "macvlan0"],
    );
    let gw6 = format!("{GATEWAY6}/128");
    ip(r, &["-6", "route", "add", &gw6, "dev", "macvlan0"]);
}

fn shell_teardown(lab: &Lab) {
    let r = &lab.router;
    r.exec(&["nft", "delete", "table", "inet", "egress_shell"]);
    ip(r, &["link", "del", "macvlan0"]);
    ip(r, &["route", "del", "192.0.2.128/25"]);
    ip(r, &["route", "add", "default", "via", NODE4, "dev", "eth0"]);
    ip(
        r,
        &["-6", "route", "add", "default", "via", NODE6, "dev", "eth0"],
    );
    for kv in ["net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"] {
        r.exec(&["sysctl", "-q", "-w", kv]);
    }
}
