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

use egress_core::{blocking, DiagnoseOptions, Netns as CoreNetns, Status};
use egress_lab::{
    ha::{egress_ip, gap, HaLab, Node, HA_ROUTER, INTERNAL_VIP, STABLE_MAC},
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

/// The election engine's part done by hand, in the order a graceful switch-over takes.
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
