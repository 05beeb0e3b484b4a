//! What a takeover costs the client, measured (benches/failover.rs): new TCP connections and a
//! UDP stream through keepalived's internal virtual IP while nodes fail ([`with_traffic`]), and
//! the timeline of each failover as the kernel and the tools report it ([`Watchers`]).
//!
//! - **TCP**: the client opens a new connection to [`INTERNAL_VIP`]:[`SERVICE_PORT`] every
//!   [`TrafficPlan::tcp_every`], each on its own (non-blocking, never waiting for the one before:
//!   a connection whose SYN was lost retransmits it after the kernel's initial RTO, 1 s, while
//!   the next ones go on), and asks for the page; each is bounded by
//!   [`TrafficPlan::tcp_bound`]. The takeover is the time from the kill to the establishment of
//!   the first connection started after the dead node's links were cut
//!   ([`Recorded::tcp_takeover`]): only the new active router can have carried it.
//! - **UDP**: the client sends a numbered datagram to [`INTERNAL_VIP`]:[`SERVICE_PORT`] every
//!   [`TrafficPlan::udp_every`] from one socket (one flow, as a media stream); the router
//!   redirects it to the web server's address, where a receiver stamps each arrival. The
//!   takeover is the longest silence between two arrivals around the kill
//!   ([`Recorded::udp_gap`]).

use std::{
    fs,
    io::{ErrorKind, Read, Write},
    net::{IpAddr, SocketAddrV4, TcpStream, UdpSocket},
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant, SystemTime},
};

use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn},
};

use crate::{
    ha::{HaLab, Node, INTERNAL_VIP},
    SERVICE_PORT, SWITCH_GATEWAY_PORT, WEB_PORT,
};

/// How the client's traffic runs during [`with_traffic`].
#[derive(Debug, Clone, Copy)]
pub struct TrafficPlan {
    /// A new TCP connection this often.
    pub tcp_every: Duration,
    /// How long a connection may take, from its SYN to the end of the answer (SYN
    /// retransmissions included), before it counts as failed.
    pub tcp_bound: Duration,
    /// A UDP datagram this often.
    pub udp_every: Duration,
}

impl Default for TrafficPlan {
    /// A connection every 5 ms, each bounded by 3 s (room for the first SYN retransmission,
    /// 1 s after the SYN); a datagram every 2 ms.
    fn default() -> TrafficPlan {
        TrafficPlan {
            tcp_every: Duration::from_millis(5),
            tcp_bound: Duration::from_secs(3),
            udp_every: Duration::from_millis(2),
        }
    }
}

/// One TCP connection of the client.
#[derive(Debug, Clone)]
pub struct TcpAttempt {
    /// When `connect` was called (the first SYN).
    pub started: Instant,
    /// When the handshake completed (the SYN-ACK arrived), if it did.
    pub established: Option<Instant>,
    /// When the answer ended, if it came.
    pub answered: Option<Instant>,
    /// Whether the web server's `200` came back through the router.
    pub ok: bool,
    /// Why not, if not: an errno name, or `timeout` (past [`TrafficPlan::tcp_bound`]).
    pub error: Option<String>,
}

/// One datagram of the UDP stream, as the receiver saw it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// Its number (the client counts from 0).
    pub seq: u64,
    /// When it arrived.
    pub at: Instant,
    /// Its source address as the receiver saw it (the egress IP: the router translated it).
    pub from: IpAddr,
}

/// What the client's traffic did during [`with_traffic`].
#[derive(Debug, Default)]
pub struct Recorded {
    /// Every TCP connection finished before the end, by start.
    pub tcp: Vec<TcpAttempt>,
    /// Every datagram received, in the order of arrival.
    pub udp: Vec<Arrival>,
    /// How many datagrams the client sent.
    pub udp_sent: u64,
}

impl Recorded {
    /// The first connection started at or after `cut` (the moment the dead node's links were
    /// cut, after which only the new active router can carry one) to be established and
    /// answered. (One started before `cut` went to the old router: it completed through it, or
    /// after a SYN retransmission, a second later; counting it would credit the new router
    /// with the old one's work whenever the client's loop noticed the handshake late.)
    pub fn first_served(&self, cut: Instant) -> Option<&TcpAttempt> {
        self.tcp
            .iter()
            .filter(|a| a.ok && a.started >= cut)
            .min_by_key(|a| a.established)
    }

    /// The TCP takeover of a failover: from `kill` to the establishment of
    /// [`Recorded::first_served`]; `None` when no connection was served after `cut`.
    pub fn tcp_takeover(&self, kill: Instant, cut: Instant) -> Option<Duration> {
        self.first_served(cut)
            .and_then(|a| a.established)
            .map(|e| e - kill)
    }

    /// The UDP takeover of a failover: the longest time between two datagrams arriving in a row,
    /// the later one after `kill`, the earlier one before `until` (the next event of the
    /// experiment); `None` when nothing arrived after `kill`.
    pub fn udp_gap(&self, kill: Instant, until: Instant) -> Option<Duration> {
        let first_after = self.udp.partition_point(|a| a.at < kill);
        if first_after == 0 || first_after == self.udp.len() {
            return None;
        }
        self.udp[first_after - 1..]
            .windows(2)
            .take_while(|w| w[0].at < until)
            .map(|w| w[1].at - w[0].at)
            .max()
    }
}

/// The client's traffic so far, for the experiment to wait on.
#[derive(Debug, Default)]
pub struct Flow {
    tcp_ok: AtomicUsize,
    udp_received: AtomicUsize,
}

impl Flow {
    /// Waits until `n` more TCP connections were answered and `n` more datagrams arrived, for
    /// at most `timeout`; returns whether they were.
    pub fn wait_served(&self, n: usize, timeout: Duration) -> bool {
        let tcp = self.tcp_ok.load(Ordering::Relaxed) + n;
        let udp = self.udp_received.load(Ordering::Relaxed) + n;
        let start = Instant::now();
        while self.tcp_ok.load(Ordering::Relaxed) < tcp
            || self.udp_received.load(Ordering::Relaxed) < udp
        {
            if start.elapsed() > timeout {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
        true
    }
}

/// Runs `during` while the client of `ha` sends its traffic ([`TrafficPlan`]) through the
/// internal virtual IP: new TCP connections to the web server (which `ha.lab.ext` must serve
/// on [`WEB_PORT`]), and a UDP stream to a receiver this starts on the web server's
/// [`WEB_PORT`]. Returns what `during` returned and what the traffic did.
pub fn with_traffic<T>(
    ha: &HaLab,
    plan: TrafficPlan,
    during: impl FnOnce(&Flow) -> T,
) -> (T, Recorded) {
    let vip: std::net::Ipv4Addr = INTERNAL_VIP.parse().expect("an IPv4 address");
    let target = SocketAddrV4::new(vip, SERVICE_PORT);
    let receiver = ha
        .lab
        .ext
        .run(|| UdpSocket::bind(("0.0.0.0", WEB_PORT)))
        .unwrap_or_else(|e| panic!("binding UDP port {WEB_PORT} in the web server: {e}"));
    receiver
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let sender = ha
        .lab
        .client
        .run(|| {
            let s = UdpSocket::bind(("0.0.0.0", 0))?;
            s.connect(target)?;
            Ok::<_, std::io::Error>(s)
        })
        .unwrap_or_else(|e| panic!("the client's UDP socket to {target}: {e}"));
    let stop = AtomicBool::new(false);
    let flow = Flow::default();
    thread::scope(|s| {
        // Stops the traffic however `during` ends: a panic in it must not leave the scope
        // waiting for the threads forever.
        let _stop = StopOnDrop(&stop);
        let (stop, flow) = (&stop, &flow);
        let receive = s.spawn(move || receive(&receiver, stop, flow));
        let send = s.spawn(move || send(&sender, plan.udp_every, stop));
        let client = &ha.lab.client;
        let open = s.spawn(move || client.run(|| open_connections(target, plan, stop, flow)));
        let t = during(flow);
        stop.store(true, Ordering::Relaxed);
        let recorded = Recorded {
            tcp: open.join().expect("the TCP client"),
            udp_sent: send.join().expect("the UDP sender"),
            udp: receive.join().expect("the UDP receiver"),
        };
        (t, recorded)
    })
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn send(socket: &UdpSocket, every: Duration, stop: &AtomicBool) -> u64 {
    let mut seq = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Refused (an ICMP error while no router holds the address) or not: the next goes on.
        let _ = socket.send(&seq.to_be_bytes());
        seq += 1;
        next += every;
        match next.checked_duration_since(Instant::now()) {
            Some(d) => thread::sleep(d),
            // Behind (a loaded machine): no burst to catch up.
            None => next = Instant::now(),
        }
    }
    seq
}

fn receive(socket: &UdpSocket, stop: &AtomicBool, flow: &Flow) -> Vec<Arrival> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((8, from)) => {
                out.push(Arrival {
                    seq: u64::from_be_bytes(buf[..8].try_into().unwrap()),
                    at: Instant::now(),
                    from: from.ip(),
                });
                flow.udp_received.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("receiving the UDP stream: {e}"),
        }
    }
    out
}

/// A connection in progress.
struct Live {
    stream: TcpStream,
    started: Instant,
    established: Option<Instant>,
    answer: Vec<u8>,
}

impl Live {
    fn end(self, ok: bool, error: Option<String>) -> TcpAttempt {
        TcpAttempt {
            started: self.started,
            established: self.established,
            answered: ok.then(Instant::now),
            ok,
            error,
        }
    }

    /// Moves on after `ready`: `Some(attempt)` once it is over.
    fn step(&mut self, ready: PollFlags, target: SocketAddrV4) -> Option<Result<(), String>> {
        if self.established.is_none() {
            if ready.is_empty() {
                return None;
            }
            return match socket::getsockopt(&self.stream, sockopt::SocketError) {
                Ok(0) => {
                    self.established = Some(Instant::now());
                    let get = format!("GET / HTTP/1.0\r\nHost: {target}\r\n\r\n");
                    match self.stream.write(get.as_bytes()) {
                        Ok(n) if n == get.len() => None,
                        Ok(_) => Some(Err("short write".into())),
                        Err(e) => Some(Err(errno_name(e.raw_os_error()))),
                    }
                }
                Ok(e) => Some(Err(errno_name(Some(e)))),
                Err(e) => Some(Err(format!("{e}"))),
            };
        }
        let mut buf = [0u8; 512];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Some(match self.answer.starts_with(b"HTTP/1.0 200") {
                        true => Ok(()),
                        false => Err("not 200".into()),
                    })
                }
                Ok(n) => self.answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) => return Some(Err(errno_name(e.raw_os_error()))),
            }
        }
    }
}

fn errno_name(raw: Option<i32>) -> String {
    match raw {
        Some(n) => format!("{:?}", Errno::from_raw(n)),
        None => "unknown error".into(),
    }
}

/// A non-blocking connect to `target`: the socket, its SYN sent.
fn connect(target: SocketAddrV4) -> Result<OwnedFd, Errno> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    match socket::connect(fd.as_raw_fd(), &SockaddrIn::from(target)) {
        Ok(()) | Err(Errno::EINPROGRESS) => Ok(fd),
        Err(e) => Err(e),
    }
}

/// The client's TCP side: a new connection every `plan.tcp_every`, all in flight at once,
/// driven by one `poll` loop (in the client's namespace: the caller's thread).
fn open_connections(
    target: SocketAddrV4,
    plan: TrafficPlan,
    stop: &AtomicBool,
    flow: &Flow,
) -> Vec<TcpAttempt> {
    let mut live: Vec<Live> = Vec::new();
    let mut done = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next {
            match connect(target) {
                Ok(fd) => live.push(Live {
                    stream: TcpStream::from(fd),
                    started: now,
                    established: None,
                    answer: Vec::new(),
                }),
                Err(e) => done.push(TcpAttempt {
                    started: now,
                    established: None,
                    answered: None,
                    ok: false,
                    error: Some(format!("{e:?}")),
                }),
            }
            next += plan.tcp_every;
            if next < now {
                next = now;
            }
        }
        let wait = next.saturating_duration_since(Instant::now());
        let ms = u16::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
        let ready: Vec<PollFlags> = {
            let mut fds: Vec<PollFd> = live
                .iter()
                .map(|l| {
                    let events = match l.established {
                        None => PollFlags::POLLOUT,
                        Some(_) => PollFlags::POLLIN,
                    };
                    PollFd::new(l.stream.as_fd(), events)
                })
                .collect();
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => panic!("poll: {e}"),
            }
            fds.iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect()
        };
        let now = Instant::now();
        // Backwards: swap_remove moves an element already looked at.
        for i in (0..live.len()).rev() {
            let over = match live[i].step(ready[i], target) {
                Some(r) => Some(r),
                None if now - live[i].started > plan.tcp_bound => Some(Err("timeout".into())),
                None => None,
            };
            if let Some(result) = over {
                let l = live.swap_remove(i);
                if result.is_ok() {
                    flow.tcp_ok.fetch_add(1, Ordering::Relaxed);
                }
                done.push(l.end(result.is_ok(), result.err()));
            }
        }
    }
    done.sort_by_key(|a| a.started);
    done
}

/// A line a watcher printed, with the time it carries.
#[derive(Debug, Clone)]
pub struct Event {
    /// When it happened (the tool's own timestamp).
    pub wall: SystemTime,
    /// Which watcher: `client neigh`, `gateway neigh`, `switch fdb`, `node fdb`, or a capture:
    /// `client pcap`, `gateway pcap`, `router A pcap`, `router B pcap`.
    pub source: &'static str,
    /// The line, without its timestamp.
    pub line: String,
}

/// Tools watching the lab of an [`HaLab`], each writing its lines with timestamps into a file
/// of a folder, and stopped (by pid) when dropped:
///
/// - `ip -ts monitor neigh` in the client (its neighbour entry for the internal virtual IP),
///   in the gateway (its entry for the egress IP), in the switch (its forwarding table, where
///   the egress MAC moves between ports) and in the node (the node bridge's forwarding table);
/// - with `capture`, tcpdump (`-e`: MACs) in the client (its `eth0`) and on the switch's port
///   to the gateway (ARP, and TCP segments with SYN or RST), and on each router's `eth0` (ARP
///   and VRRP).
pub struct Watchers {
    dir: PathBuf,
    children: Vec<Child>,
}

const MONITORS: [&str; 6] = [
    "client neigh",
    "gateway neigh",
    "switch fdb",
    "node fdb",
    "router A neigh",
    "router B neigh",
];
const CAPTURES: [&str; 4] = [
    "client pcap",
    "gateway pcap",
    "router A pcap",
    "router B pcap",
];

impl Watchers {
    /// Starts the watchers of `ha`'s lab, writing into `dir` (which must exist).
    pub fn start(ha: &HaLab, dir: &Path, capture: bool) -> Watchers {
        let lab = &ha.lab;
        let mut w = Watchers {
            dir: dir.to_path_buf(),
            children: Vec::new(),
        };
        let places = [
            &lab.client,
            &lab.ext,
            lab.switch(),
            &lab.node,
            ha.router(Node::A),
            ha.router(Node::B),
        ];
        for (source, ns) in MONITORS.iter().zip(places) {
            w.spawn(ns.name(), &["ip", "-ts", "monitor", "neigh"], source);
        }
        if capture {
            let flows = "arp or tcp[tcpflags] & (tcp-syn|tcp-rst) != 0";
            let vrrp = "arp or ip proto 112 or tcp[tcpflags] & (tcp-syn|tcp-rst) != 0";
            let places = [
                (&lab.client, "eth0", flows),
                (lab.switch(), SWITCH_GATEWAY_PORT, flows),
                (ha.router(Node::A), "eth0", vrrp),
                (ha.router(Node::B), "eth0", vrrp),
            ];
            for (source, (ns, link, filter)) in CAPTURES.iter().zip(places) {
                let file = w.file(source);
                let file = file.to_str().expect("a UTF-8 path");
                let args = [
                    "tcpdump", "-i", link, "-n", "-e", "-U", "-s", "128", "-w", file,
                ];
                w.spawn(
                    ns.name(),
                    &[&args[..], &[filter]].concat(),
                    &format!("{source}.out"),
                );
            }
        }
        w
    }

    fn file(&self, source: &str) -> PathBuf {
        self.dir.join(source.replace(' ', "-"))
    }

    fn spawn(&mut self, ns: &str, cmd: &[&str], out: &str) {
        let out = fs::File::create(self.file(out)).expect("a watcher's file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?} in {ns}: {e} (scripts/setup.sh installs it)"));
        self.children.push(child);
    }

    /// Every line the watchers wrote so far (the captures read back with `tcpdump -r -tt`),
    /// by time.
    pub fn events(&self) -> Vec<Event> {
        let mut out = Vec::new();
        for source in MONITORS {
            let text = fs::read_to_string(self.file(source)).unwrap_or_default();
            // `[2026-12-06T14:36:36.735196] 192.0.2.10 dev eth0 lladdr … STALE`; a link's
            // continuation lines carry no timestamp.
            for line in text.lines() {
                let Some((stamp, rest)) = line.strip_prefix('[').and_then(|l| l.split_once("] "))
                else {
                    continue;
                };
                if let Some(wall) = parse_utc(stamp) {
                    out.push(Event {
                        wall,
                        source,
                        line: rest.trim_end().to_string(),
                    });
                }
            }
        }
        for source in CAPTURES {
            let pcap = self.file(source);
            if !pcap.exists() {
                continue;
            }
            let Ok(text) = crate::tools::command(
                "tcpdump",
                &["-r", pcap.to_str().unwrap(), "-tt", "-n", "-e"],
                None,
            ) else {
                continue;
            };
            // `1765031796.735196 aa:… > bb:…, ethertype ARP (0x0806), length 42: Request …`
            for line in text.lines() {
                let Some((stamp, rest)) = line.split_once(' ') else {
                    continue;
                };
                if let Ok(secs) = stamp.parse::<f64>() {
                    out.push(Event {
                        wall: SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs),
                        source,
                        line: rest.to_string(),
                    });
                }
            }
        }
        out.sort_by_key(|e| e.wall);
        out
    }

    /// The packet captures' files (empty without `capture`).
    pub fn pcaps(&self) -> Vec<PathBuf> {
        CAPTURES
            .iter()
            .map(|s| self.file(s))
            .filter(|p| p.exists())
            .collect()
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `2026-12-06T14:36:36.735196` (UTC, any number of decimals, an optional `Z`) as a time.
pub fn parse_utc(stamp: &str) -> Option<SystemTime> {
    let stamp = stamp.strip_suffix('Z').unwrap_or(stamp);
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<u64>());
    let (h, min, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let nanos: u32 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    // Days from 1970-01-01 to the civil date (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(days * 86_400 + h * 3600 + min * 60 + s, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_tools_timestamps() {
        let t = parse_utc("2026-12-06T14:36:36.735196").unwrap();
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        // date -u -d 2026-12-06T14:36:36 +%s
        assert_eq!(d.as_secs(), 1_796_567_796);
        assert_eq!(d.subsec_micros(), 735_196);
        let z = parse_utc("2026-12-06T14:36:36.735196123Z").unwrap();
        assert_eq!(
            z.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
            735_196_123
        );
        assert_eq!(
            parse_utc("2000-03-01T00:00:00"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(951_868_800))
        );
        assert!(parse_utc("yesterday").is_none());
    }

    #[test]
    fn udp_gap_is_the_longest_silence_around_the_kill() {
        let t0 = Instant::now();
        let at = |ms: u64| Arrival {
            seq: ms,
            at: t0 + Duration::from_millis(ms),
            from: "203.0.113.99".parse().unwrap(),
        };
        let r = Recorded {
            udp: [0, 2, 4, 90, 92, 94, 300, 302].map(at).to_vec(),
            ..Recorded::default()
        };
        let ms = Duration::from_millis;
        // Killed at 5: silence from 4 to 90; the later one, 94 -> 300, starts past `until`.
        assert_eq!(r.udp_gap(t0 + ms(5), t0 + ms(50)), Some(ms(86)));
        assert_eq!(r.udp_gap(t0 + ms(5), t0 + ms(200)), Some(ms(206)));
        assert_eq!(r.udp_gap(t0 + ms(500), t0 + ms(600)), None);
    }
}
