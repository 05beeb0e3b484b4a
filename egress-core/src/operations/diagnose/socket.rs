//! The sockets of the probes: a packet socket on one link that sends who-has frames and hears
//! who claims the addresses asked about ([`Listen`]), non-blocking TCP connection attempts
//! ([`Connect`]), and one poll loop that waits for all of them until a deadline ([`wait`]).
//!
//! A packet socket belongs to the namespace of the thread that opens it and is used from
//! anywhere afterwards. Closing one waits for an RCU grace period (`synchronize_net`, 10-20
//! ms), so a diagnosis opens one per link, for both families, only when it needs it, and
//! closes it on a background thread, off the caller's path.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{mpsc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use nix::sys::socket::{
    bind, connect, getsockopt, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType,
    SockaddrStorage,
};

use super::frame::{self, Frame};
use crate::kernel::netns::PerProcess;

/// `ETH_P_ALL`: every protocol (the filter keeps ARP and ICMPv6).
const ETH_P_ALL: u16 = 0x0003;

/// A raw packet socket bound to one link: it sends whole Ethernet frames and receives the ARP
/// and ICMPv6 frames that arrive on the link (a classic BPF filter drops everything else in
/// the kernel).
#[derive(Debug)]
pub(crate) struct PacketSocket {
    /// Always `Some` until it is dropped (then closed by [`close_later`]).
    fd: Option<OwnedFd>,
    index: u32,
}

impl PacketSocket {
    /// Opens a packet socket on link `index` of the calling thread's namespace. The socket is
    /// made with protocol 0 (it receives nothing), gets its filter, and only then is bound to
    /// the link for every protocol: no frame of another kind is ever queued.
    pub(crate) fn open(index: u32) -> io::Result<PacketSocket> {
        // SAFETY: plain socket(2) call; the fd is owned by the returned value.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just returned by socket(2) and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        attach_filter(&fd)?;
        // Each frame carries the time it arrived: a reply's time is the network's, not the
        // time this process got around to reading it.
        let on: libc::c_int = 1;
        // SAFETY: `on` is a valid c_int for the length given. Without stamps (an old kernel),
        // replies are timed when they are read.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        let mut sa = sockaddr_ll(index, ETH_P_ALL);
        sa.sll_halen = 0;
        // SAFETY: `sa` is a valid sockaddr_ll for the length given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket {
            fd: Some(fd),
            index,
        })
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.as_ref().expect("open until dropped").as_raw_fd()
    }

    /// Sends `frame` out of the link.
    pub(crate) fn send(&self, frame: &Frame) -> io::Result<()> {
        let mut sa = sockaddr_ll(self.index, frame.ethertype);
        sa.sll_addr[..6].copy_from_slice(&frame.destination());
        // SAFETY: `frame.bytes` and `sa` are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.raw_fd(),
                frame.bytes.as_ptr().cast(),
                frame.bytes.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next frame that arrived (frames this host sent are skipped) and when the kernel
    /// received it, without waiting; `None` when none is queued.
    fn recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<Option<(&'b [u8], Option<SystemTime>)>> {
        loop {
            // SAFETY: sockaddr_ll and msghdr are plain old data; all-zero is a valid value.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // u64s: aligned for cmsghdr.
            let mut control = [0u64; 8];
            // SAFETY: as above.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            // size_t on glibc, socklen_t on musl (the static binaries).
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            // SAFETY: `msg` points at `from`, `iov` (over `buf`) and `control`, all valid for
            // the lengths it gives.
            let n = unsafe { libc::recvmsg(self.raw_fd(), &mut msg, 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let mut stamp = None;
            // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within
            // `msg.msg_controllen`; the data of SCM_TIMESTAMPNS is a timespec.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_TIMESTAMPNS
                    {
                        let ts =
                            std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                        stamp =
                            Some(UNIX_EPOCH + Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            return Ok(Some((&buf[..n as usize], stamp)));
        }
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            close_later(fd);
        }
    }
}

/// Closes `fd` on one background thread (inline if it cannot start): closing a packet socket
/// waits for an RCU grace period, which the caller need not wait for. One thread per process:
/// a child of `fork` starts its own.
fn close_later(fd: OwnedFd) {
    static CLOSER: PerProcess<Option<Mutex<mpsc::Sender<OwnedFd>>>> = PerProcess::new();
    let closer = CLOSER.get_or(|| {
        let (tx, rx) = mpsc::channel::<OwnedFd>();
        std::thread::Builder::new()
            .name("egress-close".into())
            .spawn(move || rx.into_iter().for_each(drop))
            .ok()
            .map(|_| Mutex::new(tx))
    });
    match closer {
        Some(tx) => {
            let tx = tx.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(mpsc::SendError(fd)) = tx.send(fd) {
                drop(fd);
            }
        }
        None => drop(fd),
    }
}

fn sockaddr_ll(index: u32, protocol: u16) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = protocol.to_be();
    sa.sll_ifindex = index as i32;
    sa.sll_halen = 6;
    sa
}

/// Keeps ARP frames and IPv6 frames whose next header is ICMPv6 (`tcpdump -dd 'arp or icmp6'`,
/// without extension headers, which neighbour discovery never has).
fn attach_filter(fd: &OwnedFd) -> io::Result<()> {
    const LDH_ABS: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
    const LDB_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut program = [
        op(LDH_ABS, 0, 0, 12),                       // 0: ethertype
        op(JEQ, 3, 0, u32::from(frame::ETH_P_ARP)),  // 1: ARP -> 5
        op(JEQ, 0, 3, u32::from(frame::ETH_P_IPV6)), // 2: not IPv6 -> 6
        op(LDB_ABS, 0, 0, 20),                       // 3: IPv6 next header
        op(JEQ, 0, 1, 58),                           // 4: ICMPv6 -> 5, else 6
        op(RET, 0, 0, 0xffff),                       // 5: keep
        op(RET, 0, 0, 0),                            // 6: drop
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Something [`wait`] waits for.
pub(crate) trait Pending: Send {
    /// The fd to poll, while there is one.
    fn fd(&self) -> Option<RawFd>;
    /// The poll events it waits for.
    fn events(&self) -> i16;
    /// The fd is ready (`revents`).
    fn ready(&mut self, revents: i16);
    /// Whether it has all it waits for (it still may be waited for until the deadline).
    fn done(&self) -> bool;
}

/// Polls every item until each is done or `deadline` has passed. What arrived before the
/// deadline is taken even when this thread runs late (a loaded machine): the last poll, at
/// or after the deadline, does not wait.
pub(crate) fn wait(items: &mut [&mut dyn Pending], deadline: Instant) {
    loop {
        let open: Vec<usize> = (0..items.len())
            .filter(|&i| !items[i].done() && items[i].fd().is_some())
            .collect();
        if open.is_empty() {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds: Vec<libc::pollfd> = open
            .iter()
            .map(|&i| libc::pollfd {
                fd: items[i].fd().expect("filtered on an fd"),
                events: items[i].events(),
                revents: 0,
            })
            .collect();
        // Rounded up: a poll that returns a little early would spin.
        let ms = libc::c_int::try_from(left.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the call's duration.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
        for (pfd, &i) in fds.iter().zip(&open) {
            if pfd.revents != 0 {
                items[i].ready(pfd.revents);
            }
        }
        if left.is_zero() {
            return;
        }
    }
}

/// One question a [`Listen`] asks: who has `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ask {
    /// The address asked about.
    pub target: IpAddr,
    /// The sender address of the question; `None`: the unspecified address (ARP probe, DAD
    /// solicitation).
    pub sender: Option<IpAddr>,
    /// A conflict probe: nobody should answer, so it listens until the deadline and takes an
    /// announcement (gratuitous ARP) as an answer too. Otherwise it is done with the first
    /// answer.
    pub conflict: bool,
}

/// A MAC that claimed an asked address, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Heard {
    /// Its MAC.
    pub mac: [u8; 6],
    /// How long after the question was sent.
    pub after: Duration,
}

/// Who-has questions sent from one link and the claims heard back.
#[derive(Debug)]
pub(crate) struct Listen {
    socket: PacketSocket,
    mac: [u8; 6],
    asks: Vec<Ask>,
    /// Per ask: when it was sent (`None`: not sent), by both clocks (a reply's kernel stamp
    /// is wall-clock time), and what answered.
    sent: Vec<Option<(Instant, SystemTime)>>,
    heard: Vec<Vec<Heard>>,
    /// Per ask: why it could not be sent.
    errors: Vec<Option<io::Error>>,
    /// A receive error that ended listening.
    failed: Option<io::Error>,
    /// Answers that arrived later do not count (this process may read them late).
    deadline: Instant,
    buf: Vec<u8>,
}

impl Listen {
    /// Sends each of `asks` from `socket`'s link, whose MAC is `mac`, to be answered before
    /// `deadline`.
    pub(crate) fn start(
        socket: PacketSocket,
        mac: [u8; 6],
        asks: Vec<Ask>,
        deadline: Instant,
    ) -> Listen {
        let mut sent = Vec::with_capacity(asks.len());
        let mut errors = Vec::with_capacity(asks.len());
        for a in &asks {
            let f = frame::who_has(mac, a.sender, a.target);
            let at = (Instant::now(), SystemTime::now());
            match socket.send(&f) {
                Ok(()) => {
                    sent.push(Some(at));
                    errors.push(None);
                }
                Err(e) => {
                    sent.push(None);
                    errors.push(Some(e));
                }
            }
        }
        Listen {
            socket,
            mac,
            heard: vec![Vec::new(); asks.len()],
            asks,
            sent,
            errors,
            failed: None,
            deadline,
            buf: vec![0; 2048],
        }
    }

    /// What answered ask `i`.
    pub(crate) fn heard(&self, i: usize) -> &[Heard] {
        &self.heard[i]
    }

    /// Why ask `i` could not be sent, or listening stopped.
    pub(crate) fn error(&self, i: usize) -> Option<&io::Error> {
        self.errors[i].as_ref().or(self.failed.as_ref())
    }
}

impl Pending for Listen {
    fn fd(&self) -> Option<RawFd> {
        self.failed.is_none().then(|| self.socket.raw_fd())
    }

    fn events(&self) -> i16 {
        libc::POLLIN
    }

    fn ready(&mut self, _revents: i16) {
        let mut buf = std::mem::take(&mut self.buf);
        loop {
            let (f, stamp) = match self.socket.recv(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    self.failed = Some(e);
                    break;
                }
            };
            let Some(c) = frame::claim(f) else { continue };
            if c.mac == self.mac || frame::source_mac(f) == Some(self.mac) {
                continue;
            }
            let now = Instant::now();
            for (i, a) in self.asks.iter().enumerate() {
                let Some((sent, sent_wall)) = self.sent[i] else {
                    continue;
                };
                if a.target != c.address || !(c.answer || a.conflict) {
                    continue;
                }
                let after = stamp
                    .and_then(|t| t.duration_since(sent_wall).ok())
                    .unwrap_or(now - sent);
                if after > self.deadline.saturating_duration_since(sent) {
                    continue;
                }
                if !self.heard[i].iter().any(|h| h.mac == c.mac) {
                    self.heard[i].push(Heard { mac: c.mac, after });
                }
            }
        }
        self.buf = buf;
    }

    fn done(&self) -> bool {
        self.asks
            .iter()
            .enumerate()
            .all(|(i, a)| !a.conflict && (self.sent[i].is_none() || !self.heard[i].is_empty()))
    }
}

/// How a TCP connection attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reached {
    /// The handshake completed.
    Connected,
    /// The destination (or something on the way) answered with a reset.
    Refused,
    /// An ICMP error came back (host or network unreachable, administratively prohibited):
    /// the errno.
    Unreachable(i32),
    /// Nothing came back before the deadline.
    NoAnswer,
    /// The attempt could not be made (no such source address, no fd left): the errno.
    NotTried(i32),
}

/// A non-blocking TCP connection attempt from a source address (`curl --interface SRC`).
#[derive(Debug)]
pub(crate) struct Connect {
    fd: Option<OwnedFd>,
    started: Instant,
    outcome: Option<(Reached, Duration)>,
}

impl Connect {
    /// Starts a connection from `source` (any port) to `target`, in the calling thread's
    /// namespace.
    pub(crate) fn start(source: IpAddr, target: SocketAddr) -> Connect {
        let started = Instant::now();
        let not_tried = |e: nix::Error| Connect {
            fd: None,
            started,
            outcome: Some((Reached::NotTried(e as i32), Duration::ZERO)),
        };
        let family = match target {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let fd = match socket(
            family,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        ) {
            Ok(fd) => fd,
            Err(e) => return not_tried(e),
        };
        let from = SockaddrStorage::from(SocketAddr::new(source, 0));
        if let Err(e) = bind(fd.as_raw_fd(), &from) {
            return not_tried(e);
        }
        let mut c = Connect {
            fd: Some(fd),
            started,
            outcome: None,
        };
        let to = SockaddrStorage::from(target);
        match connect(c.fd.as_ref().expect("set").as_raw_fd(), &to) {
            Ok(()) => c.finish(Reached::Connected),
            Err(nix::Error::EINPROGRESS) => {}
            Err(e) => c.finish(reached(e as i32)),
        }
        c
    }

    /// How it ended and how long it took; a connection still pending when the wait ended at
    /// `deadline` had no answer for as long as it waited. An answer taken late (this process
    /// ran late) came within the wait.
    pub(crate) fn outcome(&self, deadline: Instant) -> (Reached, Duration) {
        let waited = deadline.saturating_duration_since(self.started);
        match self.outcome {
            Some((how, took)) => (how, took.min(waited)),
            None => (Reached::NoAnswer, waited),
        }
    }

    fn finish(&mut self, how: Reached) {
        let took = match (&self.fd, how) {
            // The handshake's round trip as the kernel measured it, not the time this process
            // got around to looking.
            (Some(fd), Reached::Connected) => handshake_rtt(fd),
            _ => None,
        };
        self.outcome = Some((how, took.unwrap_or_else(|| self.started.elapsed())));
        if let Some(fd) = self.fd.take() {
            if how == Reached::Connected {
                // Closed with a reset: nothing lingers in the router (no TIME_WAIT).
                let _ = setsockopt(
                    &fd,
                    sockopt::Linger,
                    &libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    },
                );
            }
        }
    }
}

/// The round trip time of a connected socket's first exchange, the handshake
/// (`TCP_INFO.tcpi_rtt`).
fn handshake_rtt(fd: &OwnedFd) -> Option<Duration> {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is valid for `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0 && info.tcpi_rtt > 0).then(|| Duration::from_micros(u64::from(info.tcpi_rtt)))
}

/// The outcome an errno of a TCP connection attempt means.
fn reached(errno: i32) -> Reached {
    match errno {
        0 => Reached::Connected,
        libc::ECONNREFUSED => Reached::Refused,
        libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EACCES | libc::EPERM => {
            Reached::Unreachable(errno)
        }
        libc::ETIMEDOUT => Reached::NoAnswer,
        e => Reached::NotTried(e),
    }
}

impl Pending for Connect {
    fn fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(AsRawFd::as_raw_fd)
    }

    fn events(&self) -> i16 {
        libc::POLLOUT
    }

    fn ready(&mut self, _revents: i16) {
        let Some(fd) = &self.fd else { return };
        let errno = getsockopt(fd, sockopt::SocketError).unwrap_or(libc::EIO);
        self.finish(reached(errno));
    }

    fn done(&self) -> bool {
        self.outcome.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Write, os::unix::net::UnixStream};

    use super::*;

    /// A socket that has something to read.
    struct Readable {
        socket: UnixStream,
        seen: bool,
    }

    impl Pending for Readable {
        fn fd(&self) -> Option<RawFd> {
            Some(self.socket.as_raw_fd())
        }
        fn events(&self) -> i16 {
            libc::POLLIN
        }
        fn ready(&mut self, _revents: i16) {
            self.seen = true;
        }
        fn done(&self) -> bool {
            self.seen
        }
    }

    #[test]
    fn what_arrived_before_the_deadline_is_taken_by_a_thread_that_runs_late() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"answer").unwrap();
        let mut r = Readable {
            socket: a,
            seen: false,
        };
        // The deadline has passed by the time this thread looks.
        wait(&mut [&mut r], Instant::now() - Duration::from_millis(5));
        assert!(r.seen);
    }

    #[test]
    fn nothing_to_read_ends_at_the_deadline() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut r = Readable {
            socket: a,
            seen: false,
        };
        let started = Instant::now();
        wait(&mut [&mut r], started + Duration::from_millis(30));
        assert!(!r.seen);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(30), "{took:?}");
        assert!(took < Duration::from_millis(500), "{took:?}");
    }

    #[test]
    fn the_errno_of_a_connection_attempt_says_how_it_ended() {
        assert_eq!(reached(0), Reached::Connected);
        assert_eq!(reached(libc::ECONNREFUSED), Reached::Refused);
        assert_eq!(
            reached(libc::EHOSTUNREACH),
            Reached::Unreachable(libc::EHOSTUNREACH)
        );
        assert_eq!(reached(libc::ETIMEDOUT), Reached::NoAnswer);
        assert_eq!(reached(libc::EMFILE), Reached::NotTried(libc::EMFILE));
    }
}
