//! The kernel floor of an apply: the netlink requests and sysctl writes that change state,
//! recorded from one real apply and replayed back to back by a minimal program (no validation,
//! no journal, no reads).
//!
//! How they are recorded: the kernel's netlink tap (`nlmon`) is the natural capture, but this
//! kernel is built without it (`CONFIG_NLMON` is not set: `ip link add nlmon0 type nlmon`
//! answers "Unknown device type"). So the bench runs itself once more, in a child process that
//! makes one apply under `strace`, which dumps every byte the process writes, with each fd
//! named (`-yy`). From that trace: which thread was in which namespace (its last `setns`),
//! hence each socket's namespace and protocol (`socket` on that thread), and each request sent
//! on it (`sendto`/`sendmsg`, all of their buffers); the sysctl writes are the `write`s to
//! `/proc/sys/...` files, in the writer's namespace. The core is untouched, and what is replayed
//! is what went to the kernel, byte for byte. Kept: every route netlink request that is not a
//! `RTM_GET*`, and every nftables batch whole (nftables changes only in batches; what it sends
//! outside one are reads). Dropped: reads, and everything after the apply returned (the child
//! marks that point with a write to `/dev/null`). A second replay keeps the reads too: every
//! request, and each `/proc/sys` file the apply opened for reading, read again.
//!
//! What is per-process is rewritten: the namespace fd of the macvlan's `RTM_NEWLINK`
//! (`IFLA_NET_NS_FD`, which the core sets to its own fd of the router namespace), the ruleset
//! generation an nftables batch is checked against (`NFNL_BATCH_GENID`, zeroed: no check), the
//! sequence numbers and port ids. Everything else (the ifindex and MAC the create chose, the
//! apply id in the crash record) is the recorded value, which teardown frees again.
//!
//! How they are replayed: on a fresh thread, the sockets are opened in their namespaces and
//! the thread settles in the namespace of the sysctl writes, untimed; then, timed, each
//! flight (the requests sent on one socket in a row: the route pipeline, the nftables batch,
//! one message alone) is sent back to back and its acknowledgements read, and each sysctl is
//! written as a file write. The first replay checks with `egress_core::check` that the
//! namespace then holds exactly the router (no drift), and learns how many replies each flight
//! gets; the later ones expect exactly those, each an acknowledgement without error (in a
//! flight with reads, any answer: data, or an error where a read finds nothing).

use std::{
    collections::HashMap,
    fs::File,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use egress_core::{blocking, RouterSpec};
use nix::sys::resource::{getrusage, UsageWho};

/// The environment variable that makes the bench binary the recorded child: the spec, as JSON.
pub const CHILD_ENV: &str = "EGRESS_BENCH_FLOOR_SPEC";

/// What the child writes to `/dev/null` once its apply returned.
const MARKER: &str = "egress-bench: applied";

const NLMSG_ERROR: u16 = 2;
const NLM_F_ACK: u16 = 4;
const RTM_NEWLINK: u16 = 16;
const IFLA_NET_NS_FD: u16 = 28;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_BATCH_GENID: u16 = 1;

/// The child: one apply, the marker, a teardown.
pub fn child(spec_json: &str) {
    let spec = RouterSpec::from_json(spec_json).expect("the spec, as JSON");
    let router = blocking::apply(&spec).expect("apply (recorded)");
    std::fs::write("/dev/null", MARKER).expect("the marker write");
    blocking::teardown(router).expect("teardown (recorded child)");
}

/// One unit of replayed work.
#[derive(Debug)]
enum Unit {
    /// Requests sent in a row on one socket, each buffer as one `send`.
    Flight {
        socket: usize,
        /// Whether it holds reads, whose answers may be errors (a table not there yet).
        reads: bool,
        sends: Vec<Vec<u8>>,
        /// Where an `IFLA_NET_NS_FD` value sits: (send, offset, namespace path).
        ns_fds: Vec<(usize, usize, PathBuf)>,
    },
    /// A sysctl written as a file write, inside the namespace.
    Sysctl {
        ns: PathBuf,
        path: String,
        value: Vec<u8>,
    },
    /// A sysctl read as a file read, inside the namespace.
    SysctlRead { ns: PathBuf, path: String },
}

/// A socket the replay opens: its namespace and netlink protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Socket {
    ns: PathBuf,
    protocol: i32,
}

/// The recorded requests of one apply, ready to replay: its state changes, or everything it
/// asked the kernel (its reads too).
pub struct Floor {
    spec: RouterSpec,
    sockets: Vec<Socket>,
    units: Vec<Unit>,
    /// Replies each flight gets, learnt by the first replay.
    replies: Option<Vec<usize>>,
    seq: u32,
}

impl Floor {
    /// Records one apply of `spec` (in a child process under `strace`; its namespaces must
    /// hold no router). Returns its state changes, and all its requests, reads included; each
    /// replayed once, untimed, checking that the namespace then holds exactly the router, and
    /// torn down.
    pub fn record(spec: &RouterSpec) -> (Floor, Floor) {
        let trace =
            std::env::temp_dir().join(format!("egress-floor-{}.strace", std::process::id()));
        let out = Command::new("strace")
            .args(["-f", "-qq", "-yy", "-o"])
            .arg(&trace)
            .args([
                "-e",
                "trace=setns,socket,openat,openat2,sendto,sendmsg,write,writev,pwrite64",
                "-e",
                "write=all",
            ])
            .arg(std::env::current_exe().expect("the bench binary"))
            .env(CHILD_ENV, spec.to_json())
            .output()
            .expect("run strace (apt-get install strace)");
        let text = std::fs::read_to_string(&trace).expect("the trace");
        assert!(
            out.status.success(),
            "the recorded child failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // Kept when it cannot be read, to look at.
        let floors = (
            Floor::new(spec, &text, false),
            Floor::new(spec, &text, true),
        );
        let _ = std::fs::remove_file(&trace);
        floors
    }

    fn new(spec: &RouterSpec, trace: &str, reads: bool) -> Floor {
        let (sockets, units) = parse(trace, reads);
        let mut floor = Floor {
            spec: spec.clone(),
            sockets,
            units,
            replies: None,
            seq: 0,
        };
        floor.replay();
        let drift = blocking::check(spec).expect("check after the replay");
        assert!(
            drift.is_empty(),
            "the replayed requests left a namespace that differs from the router: {drift:?}"
        );
        floor.teardown();
        floor
    }

    /// What was recorded, for the report: netlink sends, flights, sysctl writes and reads.
    pub fn describe(&self) -> String {
        let (mut sends, mut flights, mut writes, mut reads) = (0, 0, 0, 0);
        for u in &self.units {
            match u {
                Unit::Flight { sends: s, .. } => {
                    flights += 1;
                    sends += s.len();
                }
                Unit::Sysctl { .. } => writes += 1,
                Unit::SysctlRead { .. } => reads += 1,
            }
        }
        let reads = match reads {
            0 => String::new(),
            n => format!(", {n} sysctl reads"),
        };
        format!(
            "{sends} netlink sends in {flights} flights on {} sockets, {writes} sysctl writes{reads}",
            self.sockets.len()
        )
    }

    /// Replays the recorded requests; returns the time from the first send to the last
    /// reply (or sysctl access), and the CPU time the replaying thread took meanwhile (user
    /// and system: the kernel handles a netlink request in the sender's context).
    pub fn replay(&mut self) -> (Duration, Duration) {
        let mut sends: Vec<Vec<Vec<u8>>> = Vec::new();
        for u in &self.units {
            if let Unit::Flight { sends: s, .. } = u {
                let mut s = s.clone();
                for buf in &mut s {
                    for_each_message(buf, |m| {
                        self.seq = self.seq.wrapping_add(1);
                        m[8..12].copy_from_slice(&self.seq.to_ne_bytes());
                        m[12..16].copy_from_slice(&0u32.to_ne_bytes());
                    });
                }
                sends.push(s);
            }
        }
        let (sockets, units, learnt) = (&self.sockets, &self.units, self.replies.clone());
        let replies = std::thread::scope(|s| {
            s.spawn(move || replay_on_this_thread(sockets, units, sends, learnt))
                .join()
                .expect("the replay thread")
        });
        let (took, replies) = replies;
        self.replies.get_or_insert(replies);
        took
    }
}

/// The CPU time (user and system) of `who` so far.
pub fn cpu(who: UsageWho) -> Duration {
    let u = getrusage(who).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::new(t.tv_sec() as u64, 0) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

impl Floor {
    /// Removes what a replay made, the way a user would: by the router's name (untimed).
    pub fn teardown(&self) {
        blocking::teardown_by_name(self.spec.netns(), self.spec.name()).expect("teardown_by_name");
    }
}

/// The replay itself, on a thread of its own (it `setns`-es).
fn replay_on_this_thread(
    sockets: &[Socket],
    units: &[Unit],
    mut sends: Vec<Vec<Vec<u8>>>,
    learnt: Option<Vec<usize>>,
) -> ((Duration, Duration), Vec<usize>) {
    let mut ns_files: HashMap<PathBuf, File> = HashMap::new();
    let mut ns_file = |p: &Path| -> i32 {
        ns_files
            .entry(p.to_path_buf())
            .or_insert_with(|| File::open(p).expect("open the namespace"))
            .as_raw_fd()
    };
    let fds: Vec<OwnedFd> = sockets
        .iter()
        .map(|s| {
            enter(ns_file(&s.ns));
            // SAFETY: socket(2) with constant arguments; the fd is owned from here on.
            let fd = unsafe {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    s.protocol,
                )
            };
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            // SAFETY: a fresh fd nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            {
                // Learning waits out each flight's last reply; later replies must come.
                let tv = match learnt {
                    None => libc::timeval {
                        tv_sec: 0,
                        tv_usec: 200_000,
                    },
                    Some(_) => libc::timeval {
                        tv_sec: 5,
                        tv_usec: 0,
                    },
                };
                // SAFETY: SO_RCVTIMEO with a timeval, on our socket.
                let rc = unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_RCVTIMEO,
                        (&tv as *const libc::timeval).cast(),
                        std::mem::size_of::<libc::timeval>() as u32,
                    )
                };
                assert_eq!(rc, 0, "SO_RCVTIMEO");
            }
            fd
        })
        .collect();
    // Rewrite the namespace fds, then settle where the sysctls are written.
    let mut flight = 0;
    for u in units {
        match u {
            Unit::Flight { ns_fds, .. } => {
                for (send, offset, ns) in ns_fds {
                    let fd = ns_file(ns) as u32;
                    sends[flight][*send][*offset..*offset + 4].copy_from_slice(&fd.to_ne_bytes());
                }
                flight += 1;
            }
            Unit::Sysctl { ns, .. } | Unit::SysctlRead { ns, .. } => enter(ns_file(ns)),
        }
    }
    let sysctl_ns: Vec<Option<i32>> = units
        .iter()
        .map(|u| match u {
            Unit::Sysctl { ns, .. } | Unit::SysctlRead { ns, .. } => Some(ns_file(ns)),
            Unit::Flight { .. } => None,
        })
        .collect();
    let mut here = sysctl_ns.iter().flatten().last().copied();
    let mut replies = Vec::new();
    let mut buf = vec![0u8; 65536];

    let (start, cpu_start) = (Instant::now(), cpu(UsageWho::RUSAGE_THREAD));
    let mut flight = 0;
    for (u, ns) in units.iter().zip(&sysctl_ns) {
        match u {
            Unit::Flight { socket, reads, .. } => {
                let fd = fds[*socket].as_raw_fd();
                for b in &sends[flight] {
                    // SAFETY: send(2) of a buffer we own on our socket.
                    let n = unsafe { libc::send(fd, b.as_ptr().cast(), b.len(), 0) };
                    assert_eq!(
                        n,
                        b.len() as isize,
                        "send: {}",
                        std::io::Error::last_os_error()
                    );
                }
                let expected = learnt.as_ref().map(|l| l[flight]);
                let mut got = 0;
                while expected.is_none_or(|e| got < e) {
                    // SAFETY: recv(2) into a buffer we own.
                    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                    if n < 0 && expected.is_none() {
                        break; // learning: no more replies within the timeout
                    }
                    assert!(n > 0, "recv: {}", std::io::Error::last_os_error());
                    for_each_message(&mut buf[..n as usize], |m| {
                        let ty = u16::from_ne_bytes([m[4], m[5]]);
                        let err = match ty {
                            NLMSG_ERROR => i32::from_ne_bytes([m[16], m[17], m[18], m[19]]),
                            _ => 0,
                        };
                        assert!(
                            *reads || (ty == NLMSG_ERROR && err == 0),
                            "flight {flight}: the kernel answered type {ty} (error {err})"
                        );
                        got += 1;
                    });
                }
                replies.push(got);
                flight += 1;
            }
            Unit::Sysctl { path, .. } | Unit::SysctlRead { path, .. } => {
                let ns = ns.expect("a sysctl's namespace");
                if here != Some(ns) {
                    enter(ns);
                    here = Some(ns);
                }
                match u {
                    Unit::Sysctl { value, .. } => std::fs::write(path, value),
                    _ => std::fs::read(path).map(drop),
                }
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            }
        }
    }
    let took = (start.elapsed(), cpu(UsageWho::RUSAGE_THREAD) - cpu_start);
    (took, replies)
}

fn enter(ns: i32) {
    // SAFETY: setns(2) on an open namespace fd; this thread is the replay's own.
    let rc = unsafe { libc::setns(ns, libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Calls `f` on each netlink message of `buf`.
fn for_each_message(buf: &mut [u8], mut f: impl FnMut(&mut [u8])) {
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
        assert!(
            len >= 16 && at + len <= buf.len(),
            "a truncated netlink message"
        );
        f(&mut buf[at..at + len]);
        at += (len + 3) & !3;
    }
}

/// One syscall of the trace: thread, name, what its first argument (an fd) names, result (and
/// what it names), the protocol of a `socket`, and the bytes its dump showed.
struct Call {
    tid: u32,
    name: String,
    fd: Option<String>,
    result: i64,
    result_note: Option<String>,
    protocol: Option<i32>,
    /// An `openat` or `openat2` for reading (not a directory's `O_PATH`).
    read_only: bool,
    data: Vec<u8>,
}

/// Joins `<unfinished ...>`/`resumed` halves and attaches each hex dump to its call.
fn calls(text: &str) -> Vec<Call> {
    let mut pending: HashMap<u32, String> = HashMap::new();
    let mut out: Vec<Call> = Vec::new();
    for line in text.lines() {
        if let Some(dump) = line.strip_prefix(" | ") {
            // " | 00000  38 00 00 00 10 00 05 06  f1 b0 0f 6b 00 00 00 00  8..........k.... |"
            let rest = dump.split_once("  ").expect("a dump line").1;
            let hex = &rest[..rest.len().min(49)];
            let call = out.last_mut().expect("a dump after its call");
            call.data.extend(
                hex.split_whitespace()
                    .map(|b| u8::from_str_radix(b, 16).expect("hex")),
            );
            continue;
        }
        if line.starts_with(" * ") {
            continue; // " * 56 bytes in buffer 0": the buffers are concatenated
        }
        let Some((tid, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let Ok(tid) = tid.parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        let full = if let Some(first) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(tid, first.to_string());
            continue;
        } else if let Some(resumed) = rest.strip_prefix("<... ") {
            let tail = resumed.split_once("resumed>").expect("a resumed call").1;
            pending.remove(&tid).unwrap_or_default() + tail
        } else {
            rest.to_string()
        };
        let Some((name, args)) = full.split_once('(') else {
            continue; // "+++ exited with 0 +++" and signals
        };
        let Some((args, result)) = args.rsplit_once(" = ") else {
            continue;
        };
        let (result, result_note) = match result.split_once('<') {
            Some((n, note)) => (n, Some(note.split('>').next().unwrap_or("").to_string())),
            None => (result.split_whitespace().next().unwrap_or("-1"), None),
        };
        let fd = args.split_once('<').and_then(|(n, note)| {
            n.trim().parse::<i32>().ok()?;
            Some(
                note.split_once(">,")
                    .or(note.split_once('>'))?
                    .0
                    .to_string(),
            )
        });
        let protocol = [
            ("NETLINK_ROUTE", libc::NETLINK_ROUTE),
            ("NETLINK_NETFILTER", libc::NETLINK_NETFILTER),
        ]
        .into_iter()
        .find(|(p, _)| name == "socket" && args.contains(p))
        .map(|(_, n)| n);
        out.push(Call {
            tid,
            name: name.to_string(),
            fd,
            result: result.parse().unwrap_or(-1),
            result_note,
            protocol,
            read_only: args.contains("O_RDONLY") && !args.contains("O_PATH"),
            data: Vec::new(),
        });
    }
    out
}

/// The sockets and units of a trace, up to the child's marker: its state changes, and with
/// `reads` its reads too.
fn parse(text: &str, reads: bool) -> (Vec<Socket>, Vec<Unit>) {
    let mut thread_ns: HashMap<u32, String> = HashMap::new();
    let mut fd_paths: HashMap<i64, String> = HashMap::new();
    let mut socket_of: HashMap<String, (Option<String>, i32)> = HashMap::new();
    let mut sockets: Vec<Socket> = Vec::new();
    let mut units: Vec<Unit> = Vec::new();
    let mut last_socket = None;
    let ns_path = |label: &Option<String>| -> PathBuf {
        let label = label.as_deref().unwrap_or("the process's own namespace");
        assert!(
            label.starts_with("/run/netns/"),
            "a state change made in {label}, not in a namespace of the lab"
        );
        PathBuf::from(label)
    };
    for c in calls(text) {
        if c.result < 0 {
            continue;
        }
        let note = c.fd.as_deref().unwrap_or("");
        match c.name.as_str() {
            // Sysctl files are opened beneath their directory (openat2), the directory with
            // O_PATH: only a file opened for reading is a read.
            "openat" | "openat2" => {
                if let Some(path) = c.result_note {
                    if reads && c.read_only && path.starts_with("/proc/sys/") {
                        units.push(Unit::SysctlRead {
                            ns: ns_path(&thread_ns.get(&c.tid).cloned()),
                            path: path.clone(),
                        });
                        last_socket = None;
                    }
                    fd_paths.insert(c.result, path);
                }
            }
            "setns" => {
                thread_ns.insert(c.tid, note.to_string());
            }
            "socket" => {
                if let (Some(p), Some(inode)) = (c.protocol, c.result_note) {
                    socket_of.insert(inode, (thread_ns.get(&c.tid).cloned(), p));
                }
            }
            "write" | "writev" | "pwrite64" if note.starts_with("/dev/null") => {
                assert_eq!(c.data, MARKER.as_bytes(), "the child's marker");
                return (sockets, units);
            }
            "write" | "writev" | "pwrite64" if note.starts_with("/proc/sys/") => {
                units.push(Unit::Sysctl {
                    ns: ns_path(&thread_ns.get(&c.tid).cloned()),
                    path: note.to_string(),
                    value: c.data,
                });
                last_socket = None;
            }
            "sendto" | "sendmsg" if note.starts_with("NETLINK:") => {
                assert_eq!(
                    c.data.len() as i64,
                    c.result,
                    "the dump holds the whole send"
                );
                let (ns, protocol) = socket_of
                    .get(note)
                    .unwrap_or_else(|| panic!("a send on {note}, whose socket() the trace lacks"));
                let mut buf = c.data;
                let batch = *protocol == libc::NETLINK_NETFILTER
                    && u16::from_ne_bytes([buf[4], buf[5]]) == NFNL_MSG_BATCH_BEGIN;
                let mut has_reads = *protocol == libc::NETLINK_NETFILTER && !batch;
                let keep = if *protocol == libc::NETLINK_NETFILTER {
                    reads || batch
                } else {
                    let mut kept = Vec::new();
                    for_each_message(&mut buf, |m| {
                        let ty = u16::from_ne_bytes([m[4], m[5]]);
                        let get = ty >= 16 && (ty - 16) % 4 == 2;
                        has_reads |= get;
                        if reads || !get {
                            kept.extend_from_slice(m);
                        }
                    });
                    buf = kept;
                    !buf.is_empty()
                };
                if !keep {
                    continue;
                }
                let socket = Socket {
                    ns: ns_path(ns),
                    protocol: *protocol,
                };
                let index = sockets
                    .iter()
                    .position(|s| *s == socket)
                    .unwrap_or_else(|| {
                        sockets.push(socket);
                        sockets.len() - 1
                    });
                let mut fixups = Vec::new();
                let mut at = 0;
                for_each_message(&mut buf, |m| {
                    let (ty, flags) = (
                        u16::from_ne_bytes([m[4], m[5]]),
                        u16::from_ne_bytes([m[6], m[7]]),
                    );
                    let get = ty >= 16 && (ty - 16) % 4 == 2;
                    if *protocol == libc::NETLINK_ROUTE && !get {
                        assert!(flags & NLM_F_ACK != 0, "a route change without NLM_F_ACK");
                    }
                    if *protocol == libc::NETLINK_ROUTE && ty == RTM_NEWLINK {
                        let mut a = 32; // nlmsghdr + ifinfomsg
                        while a + 4 <= m.len() {
                            let len = u16::from_ne_bytes([m[a], m[a + 1]]) as usize;
                            let ty = u16::from_ne_bytes([m[a + 2], m[a + 3]]) & 0x3fff;
                            if ty == IFLA_NET_NS_FD {
                                let fd = i32::from_ne_bytes(m[a + 4..a + 8].try_into().unwrap());
                                let path = fd_paths.get(&i64::from(fd)).map(|p| p.to_string());
                                fixups.push((at + a + 4, ns_path(&path)));
                            }
                            a += (len.max(4) + 3) & !3;
                        }
                    }
                    if batch && ty == NFNL_MSG_BATCH_BEGIN {
                        // The generation the apply read its table at, which the kernel checks
                        // the batch against: not the replay's. Zero asks for no check.
                        let mut a = 20; // nlmsghdr + nfgenmsg
                        while a + 8 <= m.len() {
                            let len = u16::from_ne_bytes([m[a], m[a + 1]]) as usize;
                            let ty = u16::from_ne_bytes([m[a + 2], m[a + 3]]) & 0x3fff;
                            if ty == NFNL_BATCH_GENID {
                                m[a + 4..a + 8].fill(0);
                            }
                            a += (len.max(4) + 3) & !3;
                        }
                    }
                    at += (m.len() + 3) & !3;
                });
                match (last_socket == Some(index), units.last_mut()) {
                    (
                        true,
                        Some(Unit::Flight {
                            sends,
                            ns_fds,
                            reads: r,
                            ..
                        }),
                    ) => {
                        *r |= has_reads;
                        let send = sends.len();
                        ns_fds.extend(fixups.into_iter().map(|(o, p)| (send, o, p)));
                        sends.push(buf);
                    }
                    _ => units.push(Unit::Flight {
                        socket: index,
                        reads: has_reads,
                        ns_fds: fixups.into_iter().map(|(o, p)| (0, o, p)).collect(),
                        sends: vec![buf],
                    }),
                }
                last_socket = Some(index);
            }
            _ => {}
        }
    }
    panic!("the trace ends before the child's marker: the apply did not return")
}
