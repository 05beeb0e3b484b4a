//! Failover: the share of egress in a takeover, and the whole takeover with keepalived.
//!
//! 1. `promote` by name (the call returns once the identity is claimed and the first
//!    announcement sent) and `demote`, medians over many role changes of one standby router,
//!    without and with a stable MAC (changing a macvlan's MAC waits in the kernel), side by
//!    side in the same run with a full `apply` of the same spec (what a router without a
//!    standby does when it takes over).
//! 2. End to end with real keepalived (egress_lab::ha, egress_lab::takeover): the active node
//!    dies (its keepalived SIGKILLed, its links cut) while the client opens a new TCP
//!    connection every 5 ms and sends a UDP datagram every 2 ms through keepalived's internal
//!    virtual IP; the node comes back as the standby, and again, `FAILOVERS` times (default
//!    100) at advert_int 0.02 s and 0.1 s. Per failover: TCP, the time from the kill to the
//!    first connection established through the new active router; UDP, the longest silence in
//!    the stream. Printed: p50, p95, p99 and max of both, one table; then the phases of the
//!    takeovers (kill → the new master's keepalived state change → promote → the client's
//!    neighbour entry for the virtual IP → the switch's forwarding entry of the egress MAC →
//!    the first connection), p50/p95/max, and the timelines of the slowest ones.
//!
//! Run as root: `cargo build --release --bin egress-router && cargo bench --bench failover`
//! (about 2.5 minutes on 2 shared vCPUs: 20 s of role changes, then 100 failovers at each
//! interval). `FAILOVERS=20` for a shorter run (about 40 s); `EGRESS_BENCH_ITERS` (default 200,
//! 0 skips part 1); `FAILOVER_ADVERTS=0.02` runs one interval only; `FAILOVER_TRACE=DIR` also
//! captures packets (tcpdump `-e`: the client, the switch's port to the gateway, both routers'
//! `eth0`) into DIR, shows them in the timelines of the three slowest failovers and writes every
//! timeline and keepalived's state changes there. The load average is printed with each run: a
//! loaded machine stretches the tail.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use egress_core::{blocking, Role};
use egress_lab::{
    ha::{HaLab, Node, INTERNAL_VIP, STABLE_MAC},
    takeover::{parse_utc, with_traffic, Event, Recorded, TrafficPlan, Watchers},
    EGRESS_SOURCE4, WEB_PORT,
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
    let iters = env("EGRESS_BENCH_ITERS", 200);
    if iters > 0 {
        for stable_mac in [false, true] {
            role_changes(iters, stable_mac);
        }
    }
    let failovers = env("FAILOVERS", 100);
    let trace = std::env::var_os("FAILOVER_TRACE").map(PathBuf::from);
    let adverts: Vec<Duration> = std::env::var("FAILOVER_ADVERTS")
        .unwrap_or_else(|_| "0.02,0.1".into())
        .split(',')
        .map(|s| {
            Duration::from_secs_f64(
                s.trim()
                    .parse()
                    .expect("FAILOVER_ADVERTS: seconds, comma-separated"),
            )
        })
        .collect();
    let start = Instant::now();
    let mut rows = Vec::new();
    for advert in adverts {
        let dir = trace.as_ref().map(|d| {
            let d = d.join(format!("advert-{}", advert.as_secs_f64()));
            fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
            d
        });
        rows.push(takeovers(advert, failovers, dir.as_deref()));
    }
    println!(
        "\ntakeover over {failovers} failovers per interval ({:.0} s in all), p50 / p95 / p99 / max:\n",
        start.elapsed().as_secs_f64()
    );
    println!("| | advert_int | p50 | p95 | p99 | max | load average (start → end) |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        for (what, v) in [
            ("new TCP connection", &r.tcp),
            ("UDP stream, longest gap", &r.udp),
        ] {
            let mut v = v.clone();
            v.sort();
            println!(
                "| {what} | {} s | {} | {} | {} | {} | {} → {} |",
                r.advert.as_secs_f64(),
                ms(pct(&v, 50)),
                ms(pct(&v, 95)),
                ms(pct(&v, 99)),
                ms(*v.last().unwrap()),
                r.load.0,
                r.load.1,
            );
        }
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

/// One advertisement interval's takeovers.
struct Row {
    advert: Duration,
    tcp: Vec<Duration>,
    udp: Vec<Duration>,
    /// `/proc/loadavg`'s 1-minute average before and after.
    load: (String, String),
}

/// One failover as the experiment ran it.
struct Failover {
    to: Node,
    /// Just before the active node's keepalived was killed, on both clocks.
    kill: Instant,
    kill_wall: SystemTime,
    /// Once its links were cut: from here only the new active router can carry a connection.
    cut: Instant,
    /// When the experiment moved on (the traffic served again), before the dead node came back.
    until: Instant,
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

fn takeovers(advert: Duration, n: usize, trace: Option<&Path>) -> Row {
    let load_start = loadavg();
    let ha = HaLab::new(true, advert);
    // Cheap enough to run always: egress-router's follower logs its steps (its script's shell
    // runs once, when keepalived starts it), the neighbour and forwarding tables are watched;
    // packets are captured with FAILOVER_TRACE only.
    ha.log_role_changes();
    let _web = ha.lab.ext.serve_http(&[WEB_PORT]);
    let scratch = std::env::temp_dir().join(format!("egt-{}-failover", std::process::id()));
    let dir = trace.unwrap_or(&scratch);
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let watchers = Watchers::start(&ha, dir, trace.is_some());
    let ten = Duration::from_secs(10);
    let t = Instant::now();
    ha.start(Node::A);
    ha.wait_state(Node::A, "MASTER", t, ten);
    ha.start(Node::B);
    ha.wait_state(Node::B, "BACKUP", t, ten);
    let mut active = ha.wait_active(Duration::from_secs(5));
    let (failovers, rec) = with_traffic(&ha, TrafficPlan::default(), |flow| {
        let served = |what: &str| {
            if !flow.wait_served(20, ten) {
                panic!("no traffic {what}:\n{}", ha.state());
            }
        };
        served("before the first failover");
        let mut out = Vec::new();
        for _ in 0..n {
            let (kill, kill_wall) = (Instant::now(), SystemTime::now());
            ha.fail(active);
            let cut = Instant::now();
            let next = ha.wait_active_other(active, ten);
            served("after the takeover");
            let until = Instant::now();
            ha.recover(active);
            served("after the recovery");
            out.push(Failover {
                to: next,
                kill,
                kill_wall,
                cut,
                until,
            });
            active = next;
        }
        out
    });
    let load_end = loadavg();
    // A node that came back must stay the standby: a MASTER of its after its recovery (before
    // the next kill) is two masters at once, and the experiment's roles are off from there.
    let changes = ha.state_changes();
    let doubles = failovers
        .windows(2)
        .filter(|w| {
            let back = w[0].to.other();
            changes.iter().any(|c| {
                c.node == back && c.state == "MASTER" && c.at > w[0].until && c.at < w[1].kill
            })
        })
        .count();
    if let Some(dir) = trace {
        let anchor = failovers.first().map(|f| (f.kill, f.kill_wall));
        let lines: String = changes
            .iter()
            .map(|c| {
                let since = anchor.map_or(0.0, |(k, _)| {
                    c.at.saturating_duration_since(k).as_secs_f64()
                });
                format!(
                    "{:.6} {:?} {} (+{since:.3} s)\n",
                    c.wall
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap()
                        .as_secs_f64(),
                    c.node,
                    c.state
                )
            })
            .collect();
        fs::write(dir.join("states.txt"), lines).expect("states.txt");
    }
    let tcp: Vec<Duration> = failovers
        .iter()
        .map(|f| {
            rec.tcp_takeover(f.kill, f.cut)
                .unwrap_or_else(|| panic!("no connection after the failover at {:?}", f.kill))
        })
        .collect();
    let udp: Vec<Duration> = failovers
        .iter()
        .map(|f| {
            rec.udp_gap(f.kill, f.until)
                .unwrap_or_else(|| panic!("no datagram after the failover at {:?}", f.kill))
        })
        .collect();
    let egress = EGRESS_SOURCE4.split('/').next().unwrap();
    assert!(
        rec.udp.iter().all(|a| a.from.to_string() == egress),
        "a datagram arrived from another source than the egress IP"
    );
    let failed = rec.tcp.iter().filter(|a| !a.ok).count();
    println!(
        "\nkeepalived takeover, advert_int {} s, {n} failovers (load average {load_start} → \
         {load_end}): {} TCP connections ({failed} failed: {}), {} of {} datagrams arrived; \
         a node that came back became master beside the active one {doubles} times",
        advert.as_secs_f64(),
        rec.tcp.len(),
        errors(&rec),
        rec.udp.len(),
        rec.udp_sent,
    );
    let events = watchers.events();
    drop(watchers);
    let _ = fs::remove_dir_all(&scratch);
    let timelines: Vec<Timeline> = failovers
        .iter()
        .zip(tcp.iter().zip(&udp))
        .map(|(f, (&tcp, &udp))| Timeline::of(&ha, f, &rec, &events, tcp, udp))
        .collect();
    print_phases(&timelines);
    if let Some(dir) = trace {
        let all: String = timelines
            .iter()
            .enumerate()
            .map(|(i, t)| format!("failover {i}\n{}\n", t.render(false)))
            .collect();
        fs::write(dir.join("timelines.txt"), all).expect("timelines.txt");
        let mut slow: Vec<&Timeline> = timelines.iter().collect();
        slow.sort_by_key(|t| std::cmp::Reverse(t.tcp.max(t.udp)));
        for t in slow.iter().take(3) {
            println!("\nslow one:\n{}", t.render(true));
        }
        println!("(every timeline: {})", dir.join("timelines.txt").display());
    }
    Row {
        advert,
        tcp,
        udp,
        load: (load_start, load_end),
    }
}

/// The failed connections' reasons, counted.
fn errors(rec: &Recorded) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for a in rec.tcp.iter().filter(|a| !a.ok) {
        *counts
            .entry(a.error.clone().unwrap_or_default())
            .or_insert(0) += 1;
    }
    counts
        .iter()
        .map(|(e, n)| format!("{n} {e}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The phases of one failover, each as the time since the kill.
struct Timeline {
    kill_wall: SystemTime,
    tcp: Duration,
    udp: Duration,
    /// (since the kill, what), in order: the phases found, then (`with events`) every line the
    /// watchers wrote around it.
    phases: Vec<(Option<Duration>, &'static str)>,
    lines: Vec<(Duration, String)>,
}

const PHASES: [&str; 8] = [
    "links cut",
    "new master's keepalived: MASTER",
    "promote: first step",
    "promote: role changed",
    "switch: egress MAC on the new port",
    "client: virtual IP's neighbour entry to the new MAC",
    "first SYN that was answered, sent",
    "first connection established",
];

impl Timeline {
    fn of(
        ha: &HaLab,
        f: &Failover,
        rec: &Recorded,
        events: &[Event],
        tcp: Duration,
        udp: Duration,
    ) -> Timeline {
        let since = |w: SystemTime| w.duration_since(f.kill_wall).ok();
        let after = |at: Instant| at.checked_duration_since(f.kill);
        let master = ha
            .state_changes()
            .iter()
            .find(|c| c.node == f.to && c.state == "MASTER" && c.at >= f.kill)
            .and_then(|c| after(c.at));
        // egress-router's JSON lines (with log_role_changes): the promotion's, after the kill.
        let promote: Vec<(SystemTime, String)> = ha
            .role_change_log(f.to)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["span"]["role"] == "active")
            .filter_map(|v| {
                let wall = parse_utc(v["timestamp"].as_str()?)?;
                let msg = v["fields"]["message"].as_str().unwrap_or("").to_string();
                (wall >= f.kill_wall).then_some((wall, msg))
            })
            .collect();
        let first_step = promote.first().and_then(|(w, _)| since(*w));
        let changed = promote
            .iter()
            .find(|(_, m)| m == "role changed")
            .and_then(|(w, _)| since(*w));
        let new_mac = ha.router(f.to).link_mac("eth0");
        let window = |e: &&Event| {
            e.wall >= f.kill_wall
                && since(e.wall) <= Some(tcp.max(udp) + Duration::from_millis(100))
        };
        let seen = |source: &str, pred: &dyn Fn(&str) -> bool| {
            events
                .iter()
                .filter(window)
                .find(|e| e.source == source && pred(&e.line))
                .and_then(|e| since(e.wall))
        };
        let fdb = seen("switch fdb", &|l| {
            l.contains(STABLE_MAC) && !l.starts_with("Deleted")
        });
        let neigh = seen("client neigh", &|l| {
            l.starts_with(&format!("{INTERNAL_VIP} ")) && l.contains(&new_mac)
        });
        let first = rec.first_served(f.cut);
        let phases = vec![
            (after(f.cut), PHASES[0]),
            (master, PHASES[1]),
            (first_step, PHASES[2]),
            (changed, PHASES[3]),
            (fdb, PHASES[4]),
            (neigh, PHASES[5]),
            (first.and_then(|a| after(a.started)), PHASES[6]),
            (first.and_then(|a| a.established).and_then(after), PHASES[7]),
        ];
        let mut lines: Vec<(Duration, String)> = Vec::new();
        let mut repeated = std::collections::HashMap::new();
        for e in events.iter().filter(window) {
            // The client's own SYNs (one every 5 ms), the adverts (one every advert_int per
            // router): the first few only.
            let periodic = (e.source == "client pcap" && e.line.contains("Flags [S],"))
                || e.line.contains("VRRPv3");
            if periodic {
                let n = repeated.entry(e.source).or_insert(0);
                *n += 1;
                if *n > 3 {
                    continue;
                }
            }
            lines.push((since(e.wall).unwrap(), format!("{}: {}", e.source, e.line)));
        }
        for c in ha
            .state_changes()
            .iter()
            .filter(|c| c.at >= f.kill && c.at <= f.until)
        {
            lines.push((
                after(c.at).unwrap(),
                format!("keepalived {:?}: {}", c.node, c.state),
            ));
        }
        for (w, m) in &promote {
            lines.push((since(*w).unwrap(), format!("promote on {:?}: {m}", f.to)));
        }
        for a in rec
            .tcp
            .iter()
            .filter(|a| a.started >= f.kill && a.started <= f.kill + tcp)
        {
            if let Some(e) = &a.error {
                lines.push((
                    after(a.started).unwrap(),
                    format!("client: a connection started here failed: {e}"),
                ));
            }
        }
        lines.sort_by_key(|l| l.0);
        Timeline {
            kill_wall: f.kill_wall,
            tcp,
            udp,
            phases,
            lines,
        }
    }

    fn render(&self, with_lines: bool) -> String {
        let mut out = format!(
            "  TCP {}, UDP gap {} (killed at {:.6} s since the epoch)\n",
            ms(self.tcp),
            ms(self.udp),
            self.kill_wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        );
        for (at, what) in &self.phases {
            out.push_str(&format!("  {:>9}  {what}\n", at.map_or("-".into(), ms)));
        }
        if with_lines {
            out.push_str("  what the watchers saw:\n");
            for (at, line) in self.lines.iter().take(400) {
                out.push_str(&format!("  {:>9}  {line}\n", ms(*at)));
            }
        }
        out
    }
}

fn print_phases(timelines: &[Timeline]) {
    println!("  phases, time since the kill: p50 / p95 / max (found in n failovers)");
    for (i, name) in PHASES.iter().enumerate() {
        let mut v: Vec<Duration> = timelines.iter().filter_map(|t| t.phases[i].0).collect();
        if v.is_empty() {
            println!("  {name:<52} -");
            continue;
        }
        v.sort();
        println!(
            "  {name:<52} {:>9} {:>9} {:>9}  ({})",
            ms(pct(&v, 50)),
            ms(pct(&v, 95)),
            ms(*v.last().unwrap()),
            v.len()
        );
    }
}

/// The `p`th percentile of sorted `v` (nearest rank).
fn pct(v: &[Duration], p: usize) -> Duration {
    let rank = (v.len() * p).div_ceil(100).max(1);
    v[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}
