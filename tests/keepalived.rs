//! Acceptance of high availability with real keepalived (VRRPv3, unicast peers, 20 ms
//! advertisements) in throwaway namespaces: two router nodes on one external switch, a client
//! on the internal segment that reaches the active router through keepalived's internal
//! virtual IP (see egress_lab::ha). As root; a test that cannot run fails (never skips).
//!
//! - hard failover: the active node dies (keepalived SIGKILLed, its links cut); a client loop
//!   that opens a new connection every 10 ms measures the gap (bound: under 1 s each, generous
//!   for CI; the medians are printed, the bench measures them);
//! - the gateway ignores gratuitous ARP (arp_accept=0): with the stable MAC its neighbour
//!   entry for the egress IP points to the new active router right away;
//! - the standby never answers for the egress IP (diagnose's duplicate_address probe from the
//!   active router hears nobody else);
//! - graceful switch-over (demote A, then promote B): no connection attempt started after B's
//!   promotion fails, and A stopped answering before B claimed;
//! - without the stable MAC, the new active router's announcements move the gateway's
//!   existing neighbour entry for the egress IP to its own MAC;
//! - split brain (both promoted, no stable MAC) fails diagnose's duplicate_address check;
//! - `egress-router keepalived FIFO` (keepalived's vrrp_notify_fifo_script, which the lab's
//!   pair runs) applies keepalived's state lines in order, only the latest of a burst; the
//!   FIFO closed without a SIGTERM (keepalived killed) demotes; SIGTERM then the FIFO closed
//!   (a reload) leaves the router as it is; SIGTERM then `STOP` demotes and ends it. With the
//!   real keepalived: a reload keeps the active router active, a stop demotes it and the
//!   follower ends by itself;
//! - with real conntrackd (FTFW over a sync link between the router namespaces, its commands in
//!   the notify scripts around promote / demote, docs/ha.md): 20 long-lived TCP connections
//!   (DNATed and SNATed by the router) are in the standby's external cache, the active node
//!   dies, and every one of them carries a line both ways afterwards, the server first; the
//!   control, the same failover without conntrackd, loses what the server sends on all 20 (its
//!   packets to the egress IP belong to no connection the new active router knows: its input
//!   filter drops them).

use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{Mutex, MutexGuard, PoisonError},
    thread,
    time::{Duration, Instant},
};

use egress_core::{blocking, DiagnoseOptions, Netns as CoreNetns, Role, Status};
use egress_lab::{
    ha::{egress_ip, gap, HaLab, Node, FOLLOWER_EXITED, HA_ROUTER, INTERNAL_VIP, STABLE_MAC},
    ip, CLIENT4, SERVICE_PORT, WEB4, WEB_PORT,
};

fn core_ns(ha: &HaLab, node: Node) -> CoreNetns {
    CoreNetns::Path(ha.router(node).path().into())
}

fn duplicate_address(ha: &HaLab, node: Node) -> Status {
    let d = blocking::diagnose(
        &core_ns(ha, node),
        HA_ROUTER,
        &DiagnoseOptions::new().timeout(Duration::from_millis(200)),
    )
    .unwrap();
    d.checks
        .iter()
        .find(|c| c.name == "duplicate_address")
        .unwrap_or_else(|| panic!("no duplicate_address check: {d:?}"))
        .status
}

/// One HA lab at a time: two keepalived pairs electing at 20 ms on two shared CPUs starve each
/// other's advertisements (a takeover took 2 s with three labs and a build running beside).
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn keepalived_fails_over_in_well_under_a_second_and_the_gateway_follows_the_stable_mac() {
    let _one = one_at_a_time();
    let ha = HaLab::new(true, Duration::from_millis(20));
    let web = ha.lab.ext.serve_http(&[WEB_PORT]);
    ha.start(Node::A);
    thread::sleep(Duration::from_millis(150));
    ha.start(Node::B);
    let mut active = ha.wait_active(Duration::from_secs(5));
    // The standby is silent for the egress IP.
    assert_eq!(duplicate_address(&ha, active), Status::Ok);

    let failovers = 3;
    let (gaps, attempts) = ha.probing(|probes| {
        let mut gaps = Vec::new();
        for _ in 0..failovers {
            probes.wait_attempts(10);
            ha.fail(active);
            // The node is gone from here on (links cut).
            let t = Instant::now();
            let next = ha.wait_active_other(active, Duration::from_secs(5));
            probes.wait_attempts(20);
            gaps.push(t);
            ha.recover(active);
            active = next;
            // The gateway ignores gratuitous ARP, and still reaches the new active router.
            assert_eq!(
                ha.lab.ext.neighbour_mac(egress_ip()).as_deref(),
                Some(STABLE_MAC)
            );
            probes.wait_attempts(10);
        }
        gaps
    });
    let gaps: Vec<Duration> = gaps
        .iter()
        .map(|t| {
            gap(&attempts, *t)
                .unwrap_or_else(|| panic!("no service after the failover at {t:?}\n{}", ha.state()))
        })
        .collect();
    println!(
        "takeover gaps (advert_int 0.02, {failovers} failovers): median {:?}, max {:?}, all {gaps:?}",
        median(gaps.clone()),
        gaps.iter().max().unwrap()
    );
    for g in &gaps {
        assert!(
            *g < Duration::from_secs(1),
            "a takeover took {g:?}\n{}",
            ha.state()
        );
    }
    assert!(web.peers().iter().all(|p| *p == egress_ip()));
    // Served at the end too, the old active node back as standby: of the last ten attempts
    // (each bounded by 50 ms, which one can exceed on a loaded machine), nine got the page.
    let tail = &attempts[attempts.len().saturating_sub(10)..];
    assert!(
        tail.iter().filter(|a| a.ok).count() >= 9,
        "{tail:?}\n{}",
        ha.state()
    );
}

/// The role of `node`'s router, as it reads back.
fn role(ha: &HaLab, node: Node) -> Role {
    blocking::inspect(&core_ns(ha, node), HA_ROUTER)
        .unwrap()
        .expect("the router")
        .role
}

/// `egress-router keepalived` on a FIFO of its own in router A's namespace, with this test as
/// keepalived: it writes the lines and sends the signals itself.
struct Follower<'a> {
    ha: &'a HaLab,
    dir: std::path::PathBuf,
    process: std::process::Child,
    /// keepalived's end of the FIFO.
    keepalived: Option<std::fs::File>,
}

impl<'a> Follower<'a> {
    fn start(ha: &'a HaLab) -> Follower<'a> {
        let dir = std::path::PathBuf::from(format!("/run/egt-{}-follow", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("vrrp.fifo");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let process = std::process::Command::new("ip")
            .args(["netns", "exec", ha.router(Node::A).name()])
            .arg(ha.binary())
            .args(["keepalived", "--name", HA_ROUTER, "--instance", "egress"])
            .arg(&fifo)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Blocks until the follower opens it.
        let keepalived = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        Follower {
            ha,
            dir,
            process,
            keepalived: Some(keepalived),
        }
    }

    /// keepalived writes `lines` (in one write: the follower finds them waiting together);
    /// the router becomes `want`.
    fn say(&mut self, lines: &str, want: Role) {
        let fifo = self.keepalived.as_mut().expect("the FIFO is open");
        fifo.write_all(lines.as_bytes()).unwrap();
        let start = Instant::now();
        while role(self.ha, Node::A) != want {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "never {want:?} after {lines:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// keepalived's SIGTERM to its FIFO script.
    fn sigterm(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.process.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }

    /// keepalived closes its end of the FIFO.
    fn close(&mut self) {
        self.keepalived = None;
    }

    /// Waits for the follower to end by itself (with the FIFO still open, if it is); returns
    /// its stdout, a line per role change. Panics if it has not ended after 10 s, or failed.
    fn ends(mut self) -> String {
        let start = Instant::now();
        while self.process.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.process.kill();
                panic!("the follower still runs 10 s on");
            }
            thread::sleep(Duration::from_millis(10));
        }
        let mut stdout = String::new();
        self.process
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let status = self.process.wait().unwrap();
        assert!(status.success(), "{status:?}\n{stdout}");
        stdout
    }
}

impl Drop for Follower<'_> {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The election engine's part done by hand, in the order a graceful switch-over takes.
/// keepalived writes its state lines to the FIFO in order, and the follower applies them in
/// order (notify commands are separate processes that can finish out of order: two masters for
/// a moment ran a demote and a promote a few milliseconds apart, the demote finished last, and
/// a keepalived master was left with a standby router, no takeover for as long as it lasted).
/// Then how keepalived lets its follower go: killed (the FIFO closed, no SIGTERM), the router
/// is demoted; reloading (SIGTERM, then the FIFO closed), it is left as it is; stopping
/// (SIGTERM, then `STOP`), it is demoted and the follower ends without waiting for the FIFO to
/// close (keepalived kills it a second later).
#[test]
fn the_fifo_follower_applies_keepalived_states_in_order_and_tells_a_crash_a_reload_and_a_stop_apart(
) {
    let _one = one_at_a_time();
    let ha = HaLab::new(true, Duration::from_millis(20));

    let mut follower = Follower::start(&ha);
    // This instance's MASTER promotes; another instance's line changes nothing.
    follower.say(
        "INSTANCE \"egress\" MASTER 100\nINSTANCE \"other\" BACKUP 100\n",
        Role::Active,
    );
    // Two masters for a moment: three lines in one write, the last one counts.
    follower.say(
        "INSTANCE \"egress\" BACKUP 100\nINSTANCE \"egress\" MASTER 100\n\
         INSTANCE \"egress\" BACKUP 100\n",
        Role::Standby,
    );
    follower.say("INSTANCE \"egress\" MASTER 100\n", Role::Active);
    // keepalived killed: the FIFO closes without a SIGTERM; the follower demotes and ends.
    follower.close();
    let stdout = follower.ends();
    let changes: Vec<&str> = stdout.lines().collect();
    // MASTER, the burst as one demotion, MASTER, the end.
    assert_eq!(changes.len(), 4, "{stdout}");
    assert!(changes[1].contains("demoted"), "{stdout}");
    assert!(changes[3].contains("demoted"), "{stdout}");
    assert_eq!(role(&ha, Node::A), Role::Standby);

    // keepalived reloading: SIGTERM, then the FIFO closes without a line (a new follower takes
    // over on a new FIFO). The follower ends; the router stays active.
    let mut follower = Follower::start(&ha);
    follower.say("INSTANCE \"egress\" MASTER 100\n", Role::Active);
    follower.sigterm();
    thread::sleep(Duration::from_millis(100));
    assert!(
        follower.process.try_wait().unwrap().is_none(),
        "SIGTERM alone ended the follower"
    );
    follower.close();
    let stdout = follower.ends();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert_eq!(role(&ha, Node::A), Role::Active);

    // keepalived stopping: SIGTERM, then `STOP`; the FIFO stays open (keepalived waits a
    // second for its scripts). The follower demotes and ends.
    let mut follower = Follower::start(&ha);
    follower.sigterm();
    follower.say("INSTANCE \"egress\" STOP 100\n", Role::Standby);
    let stdout = follower.ends();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("demoted"), "{stdout}");
}

/// The real keepalived's reload and stop, with the follower its configuration starts: a reload
/// (SIGHUP) restarts the follower and leaves the active router active; a stop (SIGTERM)
/// demotes it, and the follower ends by itself, before keepalived's second is up (a follower
/// still running then is killed, with its shell: no exit status in the log).
#[test]
fn a_keepalived_reload_keeps_the_active_router_and_a_stop_demotes_it() {
    let _one = one_at_a_time();
    let ha = HaLab::new(true, Duration::from_millis(100));
    ha.log_role_changes();
    ha.start(Node::A);
    assert_eq!(ha.wait_active(Duration::from_secs(5)), Node::A);
    let log = || ha.role_change_log(Node::A);
    // The follower's starts (its notify script's first line) and its ends by itself.
    let lines = |what: &dyn Fn(&str) -> bool| log().lines().filter(|l| what(l)).count();
    let started = |l: &str| l == "--- follow";
    let exited = |l: &str| l.starts_with(FOLLOWER_EXITED);
    let wait = |what: &dyn Fn(&str) -> bool, n: usize| {
        let start = Instant::now();
        while lines(what) < n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "not {n} such lines in 10 s:\n{}",
                ha.state()
            );
            thread::sleep(Duration::from_millis(10));
        }
    };
    assert_eq!(role(&ha, Node::A), Role::Active);

    ha.reload(Node::A);
    // The first follower ended by itself, and a second one started.
    wait(&exited, 1);
    wait(&started, 2);
    assert_eq!(role(&ha, Node::A), Role::Active, "{}", ha.state());
    assert_eq!(ha.active(), Some(Node::A));

    ha.stop(Node::A);
    assert_eq!(role(&ha, Node::A), Role::Standby, "{}", ha.state());
    let exits: Vec<String> = log()
        .lines()
        .filter(|l| l.starts_with(FOLLOWER_EXITED))
        .map(str::to_string)
        .collect();
    assert_eq!(
        exits,
        [
            format!("{FOLLOWER_EXITED} 0"),
            format!("{FOLLOWER_EXITED} 0")
        ],
        "{}",
        log()
    );
}

fn cli(ha: &HaLab, node: Node, verb: &str) -> String {
    ha.router(node)
        .exec(&[ha.binary().to_str().unwrap(), verb, "--name", HA_ROUTER])
}

#[test]
fn a_graceful_switch_over_loses_no_connection_started_after_the_promotion() {
    let _one = one_at_a_time();
    let ha = HaLab::new(true, Duration::from_millis(20));
    let _web = ha.lab.ext.serve_http(&[WEB_PORT]);
    let vip = format!("{INTERNAL_VIP}/24");
    assert!(cli(&ha, Node::A, "promote").contains("promoted"));
    ha.lab.router.ip(&["addr", "add", &vip, "dev", "eth0"]);
    let (promoted, attempts) = ha.probing(|probes| {
        probes.wait_attempts(10);
        assert!(cli(&ha, Node::A, "demote").contains("demoted"));
        // A answers no more for the egress IP: the gateway, asking afresh, hears nobody.
        ha.lab
            .ext
            .ip(&["neigh", "flush", "to", &egress_ip().to_string()]);
        assert!(ha
            .lab
            .ext
            .try_exec(&["ping", "-c", "1", "-W", "0.3", &egress_ip().to_string()])
            .is_err());
        assert!(cli(&ha, Node::B, "promote").contains("promoted"));
        // keepalived's part: the internal virtual IP moves (its gratuitous ARP updates the
        // client; here the client forgets the old entry).
        ha.lab.router.ip(&["addr", "del", &vip, "dev", "eth0"]);
        ha.router_b.ip(&["addr", "add", &vip, "dev", "eth0"]);
        ha.lab.client.ip(&["neigh", "flush", "to", INTERNAL_VIP]);
        let promoted = Instant::now();
        probes.wait_attempts(20);
        promoted
    });
    let after: Vec<_> = attempts.iter().filter(|a| a.at > promoted).collect();
    assert!(after.len() >= 15, "{}", after.len());
    assert!(after.iter().all(|a| a.ok), "{after:?}");
    assert_eq!(
        ha.lab.ext.neighbour_mac(egress_ip()).as_deref(),
        Some(STABLE_MAC)
    );
}

/// Without the stable MAC each instance keeps its own MAC: the new active router's
/// announcements (gratuitous ARP from its macvlan) move the gateway's entry for the egress IP
/// to its MAC, the entry the gateway learnt from the old one being updated, not asked afresh.
#[test]
fn without_the_stable_mac_the_announcements_move_the_gateways_entry() {
    let _one = one_at_a_time();
    let ha = HaLab::new(false, Duration::from_millis(20));
    assert!(cli(&ha, Node::A, "promote").contains("promoted"));
    let egress = egress_ip().to_string();
    ha.lab.ext.ip(&["neigh", "flush", "to", &egress]);
    ha.lab.ext.exec(&["ping", "-c", "1", "-W", "1", &egress]);
    let mac_a = ha.router(Node::A).link_mac("macvlan0");
    let mac_b = ha.router(Node::B).link_mac("macvlan0");
    assert_ne!(mac_a, mac_b);
    assert_eq!(ha.lab.ext.neighbour_mac(egress_ip()), Some(mac_a));
    assert!(cli(&ha, Node::A, "demote").contains("demoted"));
    assert!(cli(&ha, Node::B, "promote").contains("promoted"));
    // promote by name returns after the last spaced announcement.
    assert_eq!(ha.lab.ext.neighbour_mac(egress_ip()), Some(mac_b));
}

#[test]
fn split_brain_fails_the_duplicate_address_check() {
    let _one = one_at_a_time();
    let ha = HaLab::new(false, Duration::from_millis(20));
    cli(&ha, Node::A, "promote");
    assert_eq!(duplicate_address(&ha, Node::A), Status::Ok);
    cli(&ha, Node::B, "promote");
    assert_eq!(duplicate_address(&ha, Node::A), Status::Fail);
    assert_eq!(duplicate_address(&ha, Node::B), Status::Fail);
    cli(&ha, Node::B, "demote");
    assert_eq!(duplicate_address(&ha, Node::A), Status::Ok);
}

/// One long-lived connection through the router: the client's end (to the internal virtual
/// IP) and the server's (accepted in the external namespace).
struct Connection {
    client: TcpStream,
    server: TcpStream,
}

impl Connection {
    /// The end `from` writes on, and the other.
    fn ends(&self, from: &str) -> (&TcpStream, &TcpStream) {
        match from {
            "server" => (&self.server, &self.client),
            _ => (&self.client, &self.server),
        }
    }
}

const CONNECTIONS: usize = 20;
/// How long one read or write may take (generous: a retransmission or two under load).
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens `n` connections from the client to the internal virtual IP, DNATed by the active
/// router to the web address and SNATed to the egress IP, accepted on `listener`.
fn connect(ha: &HaLab, listener: &TcpListener, n: usize) -> Vec<Connection> {
    let vip = SocketAddr::new(ip(INTERNAL_VIP), SERVICE_PORT);
    (0..n)
        .map(|i| {
            let client = ha
                .lab
                .client
                .run(|| TcpStream::connect_timeout(&vip, IO_TIMEOUT))
                .unwrap_or_else(|e| panic!("connection {i} to {vip}: {e}\n{}", ha.logs()));
            let (server, peer) = listener.accept().expect("accept");
            assert_eq!(peer.ip(), egress_ip(), "connection {i} not SNATed");
            for s in [&client, &server] {
                s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                s.set_nodelay(true).unwrap();
            }
            Connection { client, server }
        })
        .collect()
}

/// Reads exactly `buf.len()` bytes from `stream` by `deadline` (at least 10 ms from now).
fn read_by(mut stream: &TcpStream, buf: &mut [u8], deadline: Instant) -> std::io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    stream.set_read_timeout(Some(left.max(Duration::from_millis(10))))?;
    stream.read_exact(buf)
}

/// A line each way on every connection, the server first (a server's packet is the one a
/// router without the connection's state cannot forward: it is addressed to the egress IP
/// itself): written on all connections, then read on all within one [`IO_TIMEOUT`]. Returns the
/// connections that failed, with why.
fn exchange(connections: &[Connection], round: &str) -> Vec<(usize, String)> {
    let mut failed: Vec<(usize, String)> = Vec::new();
    for from in ["server", "client"] {
        let line = |i: usize| format!("{round} {i} from {from}\n");
        for (i, c) in connections.iter().enumerate() {
            if failed.iter().all(|(j, _)| *j != i) {
                if let Err(e) = c.ends(from).0.write_all(line(i).as_bytes()) {
                    failed.push((i, format!("{from} writing: {e}")));
                }
            }
        }
        let deadline = Instant::now() + IO_TIMEOUT;
        for (i, c) in connections.iter().enumerate() {
            if failed.iter().any(|(j, _)| *j == i) {
                continue;
            }
            let mut got = vec![0; line(i).len()];
            match read_by(c.ends(from).1, &mut got, deadline) {
                Ok(()) if got == line(i).as_bytes() => {}
                Ok(()) => failed.push((i, format!("read {:?}", String::from_utf8_lossy(&got)))),
                Err(e) => failed.push((i, format!("reading what the {from} wrote: {e}"))),
            }
        }
    }
    failed
}

/// The connections in conntrackd's dump `dump` (`-i` or `-e`) that the client opened to the
/// internal virtual IP.
fn synced(dump: &str) -> usize {
    let to_vip = format!("dst={INTERNAL_VIP} ");
    let from_client = format!("src={CLIENT4} ");
    dump.lines()
        .filter(|l| l.contains(&to_vip) && l.contains(&from_client))
        .count()
}

/// The connections in a `conntrack -L` dump that the client opened to the internal virtual
/// IP and the router translated (DNAT to the web address, SNAT to the egress IP).
fn translated(dump: &str) -> usize {
    let original = format!("src={CLIENT4} dst={INTERNAL_VIP} ");
    let reply = format!("src={WEB4} dst={} ", egress_ip());
    dump.lines()
        .filter(|l| l.contains(&original) && l.contains(&reply))
        .count()
}

/// keepalived started on both nodes, a listener on the web port, [`CONNECTIONS`] connections
/// through the active router that have each carried a line both ways.
struct Established {
    listener: TcpListener,
    active: Node,
    connections: Vec<Connection>,
}

fn establish(ha: &HaLab) -> Established {
    let listener = ha
        .lab
        .ext
        .run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, WEB_PORT)))
        .expect("listening on the web port");
    ha.start(Node::A);
    thread::sleep(Duration::from_millis(300));
    ha.start(Node::B);
    let active = ha.wait_active(Duration::from_secs(10));
    let connections = connect(ha, &listener, CONNECTIONS);
    let failed = exchange(&connections, "before");
    assert!(failed.is_empty(), "{failed:?}\n{}", ha.logs());
    Established {
        listener,
        active,
        connections,
    }
}

#[test]
fn with_conntrackd_twenty_long_lived_connections_survive_a_failover() {
    let _one = one_at_a_time();
    let ha = HaLab::with_conntrackd(true, Duration::from_millis(100));
    let Established {
        listener,
        active,
        connections,
    } = establish(&ha);
    let standby = active.other();
    // The standby's conntrackd holds every one of them (FTFW sync) before the failover.
    let start = Instant::now();
    loop {
        let dump = ha.conntrackd(standby, &["-e"]).unwrap();
        if synced(&dump) == CONNECTIONS {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "external cache of {standby:?}:\n{dump}\n{}",
            ha.logs()
        );
        thread::sleep(Duration::from_millis(50));
    }

    ha.fail(active);
    let t = Instant::now();
    ha.wait_active_other(active, Duration::from_secs(10));
    let took = t.elapsed();
    // notify_master committed them, with their NAT bindings, before promote claimed the
    // egress IP.
    let kernel = ha.router(standby).exec(&["conntrack", "-L", "-p", "tcp"]);
    assert_eq!(translated(&kernel), CONNECTIONS, "{kernel}\n{}", ha.logs());
    let failed = exchange(&connections, "after");
    assert!(
        failed.is_empty(),
        "{} of {CONNECTIONS} connections broke in the failover: {failed:?}\n{}",
        failed.len(),
        ha.logs()
    );
    assert!(exchange(&connect(&ha, &listener, 1), "fresh").is_empty());
    println!("takeover {took:?}; all {CONNECTIONS} connections carried data both ways after it");
}

/// The control: the same failover without conntrackd. The new active router does not know
/// the connections, so the server's next packet, addressed to the egress IP, is one its input
/// filter drops (from the external link it takes replies to connections it knows only;
/// without the filter its own stack would answer with a reset): nothing the server writes
/// reaches the client, on every connection, and no reset comes back either. (A client's packet
/// would not show it: the kernel picks up a mid-stream connection (`nf_conntrack_tcp_loose`)
/// and the router's NAT translates it the same way again, since the SNAT kept the port.)
#[test]
fn without_conntrackd_what_the_server_sends_is_lost_in_the_same_failover() {
    let _one = one_at_a_time();
    let ha = HaLab::new(true, Duration::from_millis(100));
    let Established {
        listener,
        active,
        connections,
    } = establish(&ha);

    ha.fail(active);
    ha.wait_active_other(active, Duration::from_secs(10));
    for mut c in connections.iter().map(|c| &c.server) {
        c.write_all(b"after\n").unwrap();
    }
    // Two seconds: the server retransmits several times meanwhile.
    let deadline = Instant::now() + Duration::from_secs(2);
    let lost = |stream: &TcpStream| {
        let outcome = read_by(stream, &mut [0; 1], deadline).map_err(|e| e.kind());
        matches!(outcome, Err(ErrorKind::WouldBlock | ErrorKind::TimedOut))
    };
    let outcomes: Vec<(bool, bool)> = connections
        .iter()
        .map(|c| (lost(&c.client), lost(&c.server)))
        .collect();
    assert!(
        outcomes.iter().all(|o| *o == (true, true)),
        "(nothing reached the client, nothing came back to the server): {outcomes:?}"
    );
    // The path itself works: a new connection goes through the new active router.
    assert!(exchange(&connect(&ha, &listener, 1), "fresh").is_empty());
}
