//! Throwaway network namespaces (`egt-<pid>-…`) and what the tests do in them.

use std::{
    fs,
    io::{ErrorKind, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::Duration,
};

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags, AddressMessage, AddressProtocol},
    AddressFamily as RtAddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use nix::sched::{setns, CloneFlags};
use serde_json::Value;

use crate::{
    tools::{command, must, parse_json},
    web::dual_stack_listener,
};

use crate::{ip, WebServer};

static NEXT_NETNS: AtomicUsize = AtomicUsize::new(0);

/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// The prefix of every namespace this process creates: `egt-<pid>-`.
fn netns_prefix() -> String {
    format!("egt-{}-", std::process::id())
}

/// The namespaces of this process that still exist (names starting with `egt-<pid>-`), sorted.
///
/// Tests use it to check that nothing was left behind.
pub fn leftover_namespaces() -> Vec<String> {
    let prefix = netns_prefix();
    let mut names: Vec<String> = match fs::read_dir(NETNS_DIR) {
        Ok(dir) => dir
            .map(|entry| {
                let entry = entry.unwrap_or_else(|e| panic!("reading {NETNS_DIR}: {e}"));
                entry.file_name().to_string_lossy().into_owned()
            })
            .filter(|name| name.starts_with(&prefix))
            .collect(),
        Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {NETNS_DIR}: {e}"),
    };
    names.sort();
    names
}

/// A named network namespace `egt-<pid>-<n>-<role>`, deleted (`ip netns del`) on drop.
///
/// Every helper that fails panics with the command line and stderr, except the `try_` ones.
#[derive(Debug)]
pub struct Netns {
    pub(crate) name: String,
    path: PathBuf,
}

impl Netns {
    /// Creates a namespace for `role` (`[a-z0-9-]`), with `lo` up.
    ///
    /// Equivalent to `ip netns add egt-<pid>-<n>-<role>; ip -n … link set lo up`.
    pub fn new(role: &str) -> Netns {
        assert!(
            !role.is_empty()
                && role
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "namespace role {role:?} must be [a-z0-9-]+"
        );
        let n = NEXT_NETNS.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}{n}-{role}", netns_prefix());
        must("ip", &["netns", "add", &name], None);
        // From here on, Drop removes the namespace even if the rest of the setup panics.
        let ns = Netns {
            path: Path::new(NETNS_DIR).join(&name),
            name,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind mount, `/run/netns/NAME`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `cmd` inside the namespace (`ip netns exec NAME cmd…`) and returns its stdout;
    /// panics with the command line and stderr if it fails.
    pub fn exec(&self, cmd: &[&str]) -> String {
        self.try_exec(cmd).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Netns::exec`], but returns a failure (command line, status, stderr) as `Err`.
    pub fn try_exec(&self, cmd: &[&str]) -> Result<String, String> {
        command("ip", &self.exec_args(cmd), None)
    }

    fn exec_args<'a>(&'a self, cmd: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(cmd);
        args
    }

    /// Runs `ip -n NAME args…` and returns its stdout; panics on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        must("ip", &full, None)
    }

    /// Runs `ip -j -n NAME args…` and returns the parsed JSON (an empty array when `ip` prints
    /// nothing); panics on failure.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        parse_json(
            &self.ip(&full),
            &format!("ip -j -n {} {}", self.name, args.join(" ")),
        )
    }

    /// Loads an nftables script into the namespace (`ip netns exec NAME nft -f -`); panics on
    /// failure.
    pub fn nft(&self, script: &str) {
        must("ip", &self.exec_args(&["nft", "-f", "-"]), Some(script));
    }

    /// Runs `f` on a new thread that has joined this namespace (`setns(CLONE_NEWNET)`) and returns
    /// its result; a panic in `f` is propagated. Sockets `f` creates belong to this namespace and
    /// can be used from any thread afterwards.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = fs::File::open(&self.path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.path.display()));
        let name = &self.name;
        thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .unwrap_or_else(|e| panic!("setns into {name}: {e}"));
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Reads a sysctl of this namespace (`net.ipv4.ip_forward`, or with `/` separators when a
    /// link name contains a dot); panics if it cannot be read.
    ///
    /// Equivalent to `ip netns exec NAME sysctl -n KEY`.
    pub fn sysctl_get(&self, key: &str) -> String {
        self.try_sysctl_get(key).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Netns::sysctl_get`], but returns `Err` (e.g. for a key this kernel lacks).
    pub fn try_sysctl_get(&self, key: &str) -> Result<String, String> {
        self.run(|| read_sysctl(key))
            .map_err(|e| format!("reading sysctl {key} in {}: {e}", self.name))
    }

    /// Writes a sysctl of this namespace; panics on failure.
    ///
    /// Equivalent to `ip netns exec NAME sysctl -w KEY=VALUE`.
    pub fn sysctl_set(&self, key: &str, value: &str) {
        let path = sysctl_path(key);
        self.run(|| fs::write(&path, format!("{value}\n")))
            .unwrap_or_else(|e| panic!("setting sysctl {key}={value} in {}: {e}", self.name));
    }

    /// Whether this namespace has the sysctl `key` (some are newer than some kernels).
    pub fn has_sysctl(&self, key: &str) -> bool {
        let path = sysctl_path(key);
        self.run(|| path.exists())
    }

    /// The ifindex of `link` in this namespace (`ip -j link show LINK`); panics if the link
    /// does not exist.
    pub fn link_index(&self, link: &str) -> u32 {
        let links = self.ip_json(&["link", "show", "dev", link]);
        links[0]["ifindex"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or_else(|| panic!("no link {link} in {}: {links}", self.name))
    }

    /// The MAC address of `link` in this namespace (`ip -j link show LINK`); panics if the link
    /// does not exist.
    pub fn link_mac(&self, link: &str) -> String {
        let links = self.ip_json(&["link", "show", "dev", link]);
        links[0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("{link} in {} has no address: {links}", self.name))
            .to_owned()
    }

    /// The MAC address this namespace's neighbour table holds for `addr`, if any
    /// (`ip -j neigh show ADDR`). On the gateway (`lab.ext`) this shows which MAC announced or
    /// used an egress source.
    pub fn neighbour_mac(&self, addr: IpAddr) -> Option<String> {
        let neighbours = self.ip_json(&["neigh", "show", &addr.to_string()]);
        neighbours
            .as_array()?
            .iter()
            .find_map(|n| n["lladdr"].as_str().map(str::to_owned))
    }

    /// Sends one rtnetlink request from a socket opened inside this namespace and returns the
    /// replies: every message of a dump when `flags` holds `NLM_F_DUMP`, otherwise nothing once
    /// the kernel acknowledged. `NLM_F_REQUEST` is added, and `NLM_F_ACK` to a non-dump. A kernel
    /// error comes back as its errno, an interrupted dump (`NLM_F_DUMP_INTR`) as
    /// [`ErrorKind::Interrupted`].
    ///
    /// For what iproute2 6.1 cannot do, e.g. adding an address with a protocol (`IFA_PROTO`).
    pub fn rtnetlink(
        &self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> std::io::Result<Vec<RouteNetlinkMessage>> {
        self.run(|| {
            let mut socket = Socket::new(NETLINK_ROUTE)?;
            socket.bind_auto()?;
            socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
            let mut request = NetlinkMessage::from(message);
            let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
            request.header.flags = flags | NLM_F_REQUEST | if dump { 0 } else { NLM_F_ACK };
            request.finalize();
            let mut buf = vec![0; request.buffer_len()];
            request.serialize(&mut buf);
            socket.send(&buf, 0)?;

            let mut replies = Vec::new();
            loop {
                let (datagram, _) = socket.recv_from_full()?;
                let mut rest = &datagram[..];
                while !rest.is_empty() {
                    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                        .map_err(std::io::Error::other)?;
                    // Messages in a datagram are 4-byte aligned.
                    let len = (reply.header.length as usize).next_multiple_of(4);
                    rest = &rest[len.min(rest.len())..];
                    if reply.header.flags & NLM_F_DUMP_INTR != 0 {
                        return Err(ErrorKind::Interrupted.into());
                    }
                    match reply.payload {
                        NetlinkPayload::Done(_) => return Ok(replies),
                        NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                        NetlinkPayload::Error(_) if !dump => return Ok(replies),
                        NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                        _ => {}
                    }
                }
            }
        })
    }

    /// `ip addr add CIDR dev LINK proto PROTOCOL [nodad]` — the address protocol (`IFA_PROTO`)
    /// is what iproute2 6.1 cannot set. Panics if the kernel refuses.
    pub fn add_address(&self, link: &str, cidr: &str, protocol: u8) {
        let (a, prefix) = cidr
            .split_once('/')
            .unwrap_or_else(|| panic!("{cidr:?}: expected ADDR/PREFIX"));
        let addr = ip(a);
        let index = self.link_index(link);
        let mut message = AddressMessage::default();
        message.header.family = if addr.is_ipv4() {
            RtAddressFamily::Inet
        } else {
            RtAddressFamily::Inet6
        };
        message.header.prefix_len = prefix.parse().unwrap_or_else(|e| panic!("{cidr:?}: {e}"));
        message.header.index = index;
        message.attributes = vec![
            AddressAttribute::Local(addr),
            AddressAttribute::Address(addr),
            AddressAttribute::Protocol(AddressProtocol::from(protocol)),
        ];
        if addr.is_ipv6() {
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        let replies = self
            .rtnetlink(
                RouteNetlinkMessage::NewAddress(message),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .unwrap_or_else(|e| panic!("ip addr add {cidr} dev {link} proto {protocol}: {e}"));
        assert!(replies.is_empty(), "{replies:?}");
    }

    /// Whether conntrack in this namespace holds a TCP connection to local port `port` that was
    /// translated to `to` (the reply's source): proof that a router's DNAT took that path.
    pub fn dnat_seen(&self, port: u16, to: &str) -> bool {
        let port = port.to_string();
        let flows = self.exec(&["conntrack", "-L", "-p", "tcp", "--orig-port-dst", &port]);
        flows.lines().any(|l| {
            l.split_whitespace()
                .filter(|f| f.starts_with("src="))
                .nth(1)
                == Some(&format!("src={to}"))
        })
    }

    /// Fetches `http://addr:port/` from inside this namespace with a Rust socket (connect, write
    /// and read each bounded by `timeout`) and returns the body of a `200` answer; any other
    /// outcome is an `Err` that says what happened.
    pub fn http_get(&self, addr: IpAddr, port: u16, timeout: Duration) -> Result<String, String> {
        self.http_get_path(SocketAddr::new(addr, port), "/", timeout)
    }

    /// [`Netns::http_get`] of `path` at `target` (`/healthz`, `/metrics`).
    pub fn http_get_path(
        &self,
        target: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let context = format!("GET http://{target}{path} from {}", self.name);
        self.run(|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&target, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            stream
                .write_all(format!("GET {path} HTTP/1.0\r\nHost: {target}\r\n\r\n").as_bytes())?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })
        .map_err(|e| format!("{context}: {e}"))
        .and_then(|response| {
            let (head, body) = response
                .split_once("\r\n\r\n")
                .ok_or_else(|| format!("{context}: malformed response {response:?}"))?;
            match head.lines().next() {
                Some(status) if status.split_whitespace().nth(1) == Some("200") => {
                    Ok(body.to_owned())
                }
                status => Err(format!("{context}: answered {status:?}")),
            }
        })
    }

    /// Starts a web server in this namespace, listening on `[::]:port` (dual stack) for every
    /// port (`0` picks a free one, see [`WebServer::ports`]). It answers any `GET` with
    /// `HTTP/1.0 200 OK` and the body `peer=<client ip> port=<local port>\n`, and stops when the
    /// returned [`WebServer`] is dropped.
    pub fn serve_http(&self, ports: &[u16]) -> WebServer {
        let listeners = self.run(|| {
            ports
                .iter()
                .map(|&port| {
                    dual_stack_listener(port).unwrap_or_else(|e| {
                        panic!("listening on [::]:{port} in {}: {e}", self.name)
                    })
                })
                .collect::<Vec<_>>()
        });
        WebServer::start(listeners)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = command("ip", &["netns", "del", &self.name], None) {
            if thread::panicking() {
                eprintln!("while unwinding: {e}");
            } else {
                panic!("{e}");
            }
        }
    }
}

/// `/proc/sys/…` for a sysctl key in dotted (`net.ipv4.ip_forward`) or slash form.
pub(crate) fn sysctl_path(key: &str) -> PathBuf {
    let relative = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    Path::new("/proc/sys").join(relative)
}

/// Reads a sysctl of the calling thread's namespace, without the trailing newline.
pub(crate) fn read_sysctl(key: &str) -> std::io::Result<String> {
    let value = fs::read_to_string(sysctl_path(key))?;
    Ok(value.trim_end().to_owned())
}

/// Whether `ns` can ping `addr` (`ip netns exec NS ping -n -c1 -W1 ADDR`, either family).
pub fn ping(ns: &Netns, addr: IpAddr) -> bool {
    ns.try_exec(&["ping", "-n", "-c1", "-W1", &addr.to_string()])
        .is_ok()
}
