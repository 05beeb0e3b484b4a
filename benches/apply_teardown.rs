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
//! The kernel floor row: the netlink requests and sysctl writes of one recorded apply that
//! change state, replayed back to back by a minimal program on sockets opened beforehand (no
//! validation, no journal, no reads; see `floor.rs` for how they are recorded and replayed),
//! and torn down untimed. Our apply, its verify included, is compared with it, and with the
//! same replay holding the apply's reads too (its dumps before the changes and its verify's
//! after them, its sysctl reads): what is left between that and the apply is our own work.
//! Beside the wall-clock ratio, the CPU time ratio (user + system; the kernel handles a netlink
//! request in the sender's context), which a loaded machine's scheduling delays do not reach.
//!
//! The logging rows: the same apply in three worker processes — no `tracing` subscriber, one
//! that filters the core's events out (WARN), one that formats them all at DEBUG into a sink —
//! one apply each per round (see `logging.rs`).
//!
//! Every round runs twice, in the two states a machine can be in: another namespace already uses
//! netfilter (an nftables table in the lab's node namespace, as every Kubernetes node has
//! kube-proxy's), or nothing else does and the router's hooks are the machine's first, which
//! makes the kernel rewrite its code on every CPU to switch them on (and off at teardown).
//!
//! Run as root: `cargo bench --bench apply_teardown` (`EGRESS_BENCH_ITERS`, default 40); the
//! floor's recording needs `strace`.

#[path = "apply_teardown/floor.rs"]
mod floor;
#[path = "apply_teardown/logging.rs"]
mod logging;

use std::time::{Duration, Instant};

use egress_core::{blocking, Protocol, RouterSpec};
use egress_lab::{
    Lab, Netns, EGRESS_SOURCE4, EGRESS_SOURCE6, FALLBACK4, GATEWAY4, GATEWAY6, MACVLAN_PARENT,
    NODE4, NODE6, WEB4,
};
use netlink_packet_route::{link::LinkMessage, RouteNetlinkMessage};
use nix::sys::resource::UsageWho;

use crate::{floor::Floor, logging::Worker};

fn main() {
    // The bench binary run again as the floor's recorded child, or as a logging worker.
    if let Ok(spec) = std::env::var(floor::CHILD_ENV) {
        return floor::child(&spec);
    }
    if let Ok(mode) = std::env::var(logging::WORKER_ENV) {
        return logging::worker(&mode);
    }
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
    let (mut floor, mut with_reads) = Floor::record(&spec);
    let mut workers = logging::MODES.map(|mode| Worker::start(mode, &spec));

    // Both states of the machine, interleaved: another namespace using netfilter (the node's
    // table) or the router's hooks being the kernel's first.
    let mut rows = [Timings::default(), Timings::default()];
    for _ in 0..iters {
        for (node_netfilter, t) in [true, false].into_iter().zip(rows.iter_mut()) {
            if node_netfilter {
                lab.node.nft(NODE_NETFILTER);
            }
            t.measure(
                &lab,
                &spec,
                &ruleset,
                [&mut floor, &mut with_reads],
                &mut workers,
            );
            if node_netfilter {
                lab.node
                    .exec(&["nft", "delete", "table", "inet", "bench_node"]);
            }
        }
    }
    println!("one full router (macvlan, v4+v6, 3 redirects + fallback, kept route, forward filter), {iters} iterations, medians:");
    println!(" the kernel floor replays {}", floor.describe());
    println!(
        " with the apply's reads (and its verify's) too: {}",
        with_reads.describe()
    );
    let [with_node, alone] = &mut rows;
    println!(" another namespace uses netfilter (the node's table, as kube-proxy's on a Kubernetes node):");
    with_node.report();
    println!(" no other netfilter user (the router's hooks are the machine's first):");
    alone.report();
}

/// An nftables table in the lab's node namespace standing for what every Kubernetes node
/// has (kube-proxy's and the CNI's rules): base chains on the hooks a router uses, and
/// conntrack. The kernel switches each netfilter hook on machine-wide (a static key: it
/// rewrites its code on every CPU) when the first namespace registers it and off when the
/// last one goes; with a table like this in place, a router's apply and teardown skip that.
const NODE_NETFILTER: &str = "table inet bench_node {
    chain prerouting { type nat hook prerouting priority dstnat; }
    chain postrouting { type nat hook postrouting priority srcnat; }
    chain output { type nat hook output priority -100; }
    chain input { type nat hook input priority 100; }
    chain forward { type filter hook forward priority filter; ct state established accept; }
}";

/// The timings of one state of the machine.
#[derive(Default)]
struct Timings {
    ours_apply: Vec<Duration>,
    /// The CPU time of our apply (the process's: the call runs on a pool thread), of the
    /// floor's replays.
    cpu: [Vec<Duration>; 3],
    ours_down: Vec<Duration>,
    sh_apply: Vec<Duration>,
    sh_down: Vec<Duration>,
    link_down: Vec<Duration>,
    floor: Vec<Duration>,
    /// The floor's replay with the apply's reads.
    with_reads: Vec<Duration>,
    /// Apply in the logging workers, in the order of [`logging::MODES`].
    logging: [Vec<Duration>; 3],
}

impl Timings {
    /// One round: our apply and teardown, the shell's, the macvlan deletion alone, the kernel
    /// floor's replay and the apply in each logging worker.
    fn measure(
        &mut self,
        lab: &Lab,
        spec: &RouterSpec,
        ruleset: &str,
        [floor, with_reads]: [&mut Floor; 2],
        workers: &mut [Worker; 3],
    ) {
        let (t, cpu) = (Instant::now(), floor::cpu(UsageWho::RUSAGE_SELF));
        let r = blocking::apply(spec).expect("apply");
        self.ours_apply.push(t.elapsed());
        self.cpu[0].push(floor::cpu(UsageWho::RUSAGE_SELF) - cpu);
        let t = Instant::now();
        blocking::teardown(r).expect("teardown");
        self.ours_down.push(t.elapsed());

        let t = Instant::now();
        shell_apply(lab, ruleset);
        self.sh_apply.push(t.elapsed());
        let t = Instant::now();
        shell_teardown(lab);
        self.sh_down.push(t.elapsed());

        self.link_down.push(macvlan_deletion(lab));

        for (k, (f, wall)) in [(floor, &mut self.floor), (with_reads, &mut self.with_reads)]
            .into_iter()
            .enumerate()
        {
            let (took, cpu) = f.replay();
            wall.push(took);
            self.cpu[k + 1].push(cpu);
            f.teardown();
        }

        // Each round starts with another worker: the first apply after a teardown may find
        // the kernel still busy with its deferred work.
        let n = workers.len();
        let first = self.floor.len() % n;
        for k in (0..n).map(|k| (first + k) % n) {
            self.logging[k].push(workers[k].apply());
        }
    }

    fn report(&mut self) {
        report("apply", &mut self.ours_apply, &mut self.sh_apply);
        let (apply, floor) = (median(&mut self.ours_apply), median(&mut self.floor));
        let [cpu_apply, cpu_floor, cpu_reads] = self.cpu.each_mut().map(|v| median(v));
        println!(
            "  the kernel floor (the apply's state changes replayed) {:>8.3} ms   apply (verify included) / it {:>5.2}x   CPU time {:.3} / {:.3} ms: {:>5.2}x",
            ms(floor),
            apply.as_secs_f64() / floor.as_secs_f64(),
            ms(cpu_apply),
            ms(cpu_floor),
            cpu_apply.as_secs_f64() / cpu_floor.as_secs_f64()
        );
        let reads = median(&mut self.with_reads);
        println!(
            "  the same with the apply's reads replayed too          {:>8.3} ms   apply / it {:>5.2}x   CPU time {:.3} ms: {:>5.2}x",
            ms(reads),
            apply.as_secs_f64() / reads.as_secs_f64(),
            ms(cpu_reads),
            cpu_apply.as_secs_f64() / cpu_reads.as_secs_f64()
        );
        let [none, warn, debug] = self.logging.each_mut().map(|v| median(v));
        println!(
            "  apply in a worker: no subscriber {:>8.3} ms   WARN filter {:>8.3} ms ({:>5.3}x)   DEBUG to a sink {:>8.3} ms ({:>5.3}x)",
            ms(none),
            ms(warn),
            warn.as_secs_f64() / none.as_secs_f64(),
            ms(debug),
            debug.as_secs_f64() / none.as_secs_f64()
        );
        report("teardown", &mut self.ours_down, &mut self.sh_down);
        let (down, link) = (median(&mut self.ours_down), median(&mut self.link_down));
        println!(
            "  the macvlan deletion alone (one RTM_DELLINK, same state) {:>8.3} ms   teardown / it {:>5.2}x",
            ms(link),
            down.as_secs_f64() / link.as_secs_f64()
        );
    }
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
    let mut del = LinkMessage::default();
    del.header.index = r.link_index("macvlan0");
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
        "net.ipv6.conf.macvlan0.accept_ra=0",
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
