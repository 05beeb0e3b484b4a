//! The egress lab: the seed's topology in throwaway network namespaces, shared by the end-to-end
//! tests, the examples and the benchmarks.
//!
//! [`Lab::new`] builds four namespaces, named `egt-<pid>-<n>-<role>` and deleted again when the
//! [`Lab`] (each [`Netns`]) is dropped, also while a test panics. Nothing here touches the
//! host's own namespace, and every address is a documentation address.
//!
//! ```text
//!  client                  node                                     router
//! +-----------------+     +----------------------------+          +--------------------------+
//! | eth0            |     | cbr0 (bridge)              |          | eth0                     |
//! |  192.0.2.3/24   +-----+ vclient  192.0.2.1/24      |          |  192.0.2.2/24            |
//! |  2001:db8:1::3  |     |          2001:db8:1::1/64  |          |  2001:db8:1::2/64        |
//! | default via     |     |          vrouter ----------+----------+ default via 192.0.2.1,   |
//! |  the node       |     |                            |          |  2001:db8:1::1           |
//! +-----------------+     | ext0 (macvlan parent,      |          | ip_forward=0             |
//!                         |  no address) - - - - - - - + - - - - -+ macvlan0: created by the |
//!                         | no forwarding, no route to |          |  router, or adopted (see |
//!                         |  198.51.100.0/24           |          |  Lab::make_sdn_macvlan)  |
//!                         +------------+---------------+          +--------------------------+
//!                                      | veth
//!                         +------------+---------------+
//!                         | gw0  203.0.113.1/24        |  ext: the external L2 segment,
//!                         |      2001:db8:2::1/64      |  its gateway and the web server
//!                         | lo   198.51.100.25, .9     |  (WebServer, any port you ask for)
//!                         |      2001:db8:3::25, ::9   |
//!                         | nft: TCP to the web        |
//!                         |  addresses only from       |
//!                         |  203.0.113.99 and          |
//!                         |  2001:db8:2::99            |
//!                         +----------------------------+
//! ```
//!
//! The client can reach the router's `eth0` but not the web server: the node neither forwards
//! nor routes to the web network, and the web server's firewall drops every source except the
//! egress sources ([`EGRESS_SOURCE4`], [`EGRESS_SOURCE6`]). The gateway accepts gratuitous ARP
//! and unsolicited neighbour advertisements, so an announced egress address shows up in its
//! neighbour table ([`Netns::neighbour_mac`]).
//!
//! [`Lab::with_switch`] puts a switch in the external segment: `ext0` and `gw0` become veths to
//! the ports of a bridge in a fifth namespace ([`Lab::switch`]), where a test drops the frames
//! of one source MAC the way a hypervisor or a switch port with port security does
//! ([`Lab::switch_drop_from`]) and attaches more hosts to the segment ([`Lab::attach_host`]).
//!
//! [`Snapshot`] records what "restored exactly" means in DESIGN.md, so a test can compare a
//! namespace before a router was applied and after it was torn down.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use egress_lab::{ip, ping, Lab, Snapshot, ROUTER_ETH0_4, WEB4, WEB_PORT};
//!
//! let lab = Lab::new(); // needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)
//! let web = lab.ext.serve_http(&[WEB_PORT]);
//! let before = Snapshot::take(&lab.router);
//! assert!(ping(&lab.client, ip(ROUTER_ETH0_4)));
//! assert!(lab.client.http_get(ip(WEB4), WEB_PORT, Duration::from_secs(1)).is_err());
//! // ... apply a router in lab.router, test it, tear it down ...
//! let after = Snapshot::take(&lab.router);
//! assert!(before == after, "{}", before.diff(&after));
//! assert!(web.peers().is_empty());
//! ```

use std::{
    collections::HashMap,
    fs,
    io::{ErrorKind, Read, Write},
    net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use egress_core::{MacvlanMode, Protocol, RouterSpecBuilder};

pub mod ha;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags, AddressMessage, AddressProtocol},
    AddressFamily as RtAddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use nix::{
    sched::{setns, CloneFlags},
    sys::socket::{
        bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
        SockaddrIn6,
    },
};
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------------------------
// Constants of the topology
// ---------------------------------------------------------------------------------------------

/// The cluster network (node bridge, router `eth0`, client `eth0`).
pub const CLUSTER_NET4: &str = "192.0.2.0/24";
/// The IPv6 cluster network.
pub const CLUSTER_NET6: &str = "2001:db8:1::/64";
/// The external L2 segment behind the node's `ext0` (gateway, egress sources).
pub const EXTERNAL_NET4: &str = "203.0.113.0/24";
/// The IPv6 external L2 segment.
pub const EXTERNAL_NET6: &str = "2001:db8:2::/64";
/// The network of the web server, reachable only through [`GATEWAY4`].
pub const WEB_NET4: &str = "198.51.100.0/24";
/// The IPv6 network of the web server, reachable only through [`GATEWAY6`].
pub const WEB_NET6: &str = "2001:db8:3::/64";

/// The node's address on the cluster bridge: the default gateway of router and client.
pub const NODE4: &str = "192.0.2.1";
/// The node's IPv6 address on the cluster bridge.
pub const NODE6: &str = "2001:db8:1::1";
/// The router's `eth0` address (the "service address" the client talks to).
pub const ROUTER_ETH0_4: &str = "192.0.2.2";
/// The router's IPv6 `eth0` address.
pub const ROUTER_ETH0_6: &str = "2001:db8:1::2";
/// The client's `eth0` address.
pub const CLIENT4: &str = "192.0.2.3";
/// The client's IPv6 `eth0` address.
pub const CLIENT6: &str = "2001:db8:1::3";

/// The egress source the web server accepts (with prefix, as a router spec's `sources` takes it).
pub const EGRESS_SOURCE4: &str = "203.0.113.99/24";
/// The IPv6 egress source the web server accepts.
pub const EGRESS_SOURCE6: &str = "2001:db8:2::99/64";
/// The gateway on the external segment (`gw0` in `ext`).
pub const GATEWAY4: &str = "203.0.113.1";
/// The IPv6 gateway on the external segment.
pub const GATEWAY6: &str = "2001:db8:2::1";
/// The web server's main address (a router's redirect destination).
pub const WEB4: &str = "198.51.100.25";
/// The web server's second address (a router's fallback destination).
pub const FALLBACK4: &str = "198.51.100.9";
/// The web server's main IPv6 address.
pub const WEB6: &str = "2001:db8:3::25";
/// The web server's second IPv6 address.
pub const FALLBACK6: &str = "2001:db8:3::9";

/// The port the web server is meant to listen on (a redirect's `to_port`).
pub const WEB_PORT: u16 = 8080;
/// The port the client asks the router for (a redirect's `port`).
pub const SERVICE_PORT: u16 = 80;

/// The cluster bridge in `node`.
pub const NODE_BRIDGE: &str = "cbr0";
/// The macvlan parent in `node` (a veth whose peer is [`GATEWAY_LINK`] in `ext`).
pub const MACVLAN_PARENT: &str = "ext0";
/// The node's end of the router's veth, a port of [`NODE_BRIDGE`].
pub const NODE_ROUTER_PORT: &str = "vrouter";
/// The node's end of the client's veth, a port of [`NODE_BRIDGE`].
pub const NODE_CLIENT_PORT: &str = "vclient";
/// The router's link on the cluster network (a router spec's `internal`).
pub const ROUTER_INTERNAL: &str = "eth0";
/// The client's link on the cluster network.
pub const CLIENT_LINK: &str = "eth0";
/// The gateway's link in `ext`.
pub const GATEWAY_LINK: &str = "gw0";
/// The name OpenShift's SDN gives the macvlan it moves into the router (legacy "adopt" mode).
pub const SDN_MACVLAN: &str = "macvlan0";

/// The nftables table in `ext` holding the web server's firewall.
pub const WEB_FIREWALL_TABLE: &str = "egt_web";

/// The bridge of the external segment's switch ([`Lab::with_switch`]), in [`Lab::switch`].
pub const SWITCH_BRIDGE: &str = "br0";
/// The switch's port towards the node's [`MACVLAN_PARENT`].
pub const SWITCH_NODE_PORT: &str = "p-node";
/// The switch's port towards the gateway's [`GATEWAY_LINK`].
pub const SWITCH_GATEWAY_PORT: &str = "p-gw";
/// The nftables table (family `bridge`) in the switch that drops frames by source MAC
/// ([`Lab::switch_drop_from`]).
pub const SWITCH_FILTER_TABLE: &str = "egt_switch";

/// Parses an address constant of this crate, ignoring a `/prefix` (so it also takes
/// [`EGRESS_SOURCE4`]). Panics on anything that is not an address.
pub fn ip(addr: &str) -> IpAddr {
    let bare = addr.split_once('/').map_or(addr, |(a, _)| a);
    bare.parse()
        .unwrap_or_else(|e| panic!("{addr:?} is not an IP address: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// Runs `program args…` (with `stdin` piped in if given) and returns its stdout; the error names
/// the command line, the exit status and stderr.
fn command(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let line = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{line}` could not start: {e}"))?;
    if let Some(input) = stdin {
        // Dropping the handle closes the pipe so the child sees EOF.
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input.as_bytes())
            .map_err(|e| format!("`{line}`: writing stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("`{line}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{line}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdin.map(|s| format!("\ninput:\n{s}")).unwrap_or_default()
        ))
    }
}

/// `command`, panicking with the command line and stderr on failure.
fn must(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    command(program, args, stdin).unwrap_or_else(|e| panic!("{e}"))
}

/// The links of the namespace this process runs in (the host's, for a test run as usual) as
/// `name kind` lines, sorted: a test compares them before and after to show that the host was
/// not touched. Read-only (`ip -j -d link show`).
pub fn root_links() -> Vec<String> {
    let links = parse_json(
        &must("ip", &["-j", "-d", "link", "show"], None),
        "ip -j -d link show",
    );
    let mut lines: Vec<String> = links
        .as_array()
        .into_iter()
        .flatten()
        .map(|link| {
            let kind = link["linkinfo"]["info_kind"].as_str().unwrap_or("-");
            format!("{} {kind}", link["ifname"].as_str().unwrap_or("?"))
        })
        .collect();
    lines.sort();
    lines
}

// ---------------------------------------------------------------------------------------------
// Netns
// ---------------------------------------------------------------------------------------------

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
    name: String,
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
        let target = SocketAddr::new(addr, port);
        let context = format!("GET http://{target}/ from {}", self.name);
        self.run(|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&target, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            stream.write_all(format!("GET / HTTP/1.0\r\nHost: {target}\r\n\r\n").as_bytes())?;
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
fn sysctl_path(key: &str) -> PathBuf {
    let relative = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    Path::new("/proc/sys").join(relative)
}

/// Reads a sysctl of the calling thread's namespace, without the trailing newline.
fn read_sysctl(key: &str) -> std::io::Result<String> {
    let value = fs::read_to_string(sysctl_path(key))?;
    Ok(value.trim_end().to_owned())
}

fn parse_json(text: &str, what: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Array(Vec::new());
    }
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("`{what}` printed invalid JSON ({e}): {text}"))
}

/// Whether `ns` can ping `addr` (`ip netns exec NS ping -n -c1 -W1 ADDR`, either family).
pub fn ping(ns: &Netns, addr: IpAddr) -> bool {
    ns.try_exec(&["ping", "-n", "-c1", "-W1", &addr.to_string()])
        .is_ok()
}

// ---------------------------------------------------------------------------------------------
// Web server
// ---------------------------------------------------------------------------------------------

/// How long the web server waits for a request once a client has connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the accept loop waits for a connection before it looks at the stop flag again.
const ACCEPT_IDLE: Duration = Duration::from_millis(50);

fn dual_stack_listener(port: u16) -> nix::Result<TcpListener> {
    let fd = socket(
        AddressFamily::Inet6,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    let addr = SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0);
    bind(fd.as_raw_fd(), &SockaddrIn6::from(addr))?;
    listen(&fd, Backlog::new(64)?)?;
    Ok(TcpListener::from(fd))
}

/// A web server started by [`Netns::serve_http`]: one thread polling non-blocking listeners,
/// stopped and joined on drop (within two seconds, the time a connected client has to send its
/// request).
#[derive(Debug)]
pub struct WebServer {
    ports: Vec<u16>,
    peers: Arc<Mutex<Vec<IpAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WebServer {
    fn start(listeners: Vec<TcpListener>) -> WebServer {
        let ports = listeners
            .iter()
            .map(|l| {
                l.local_addr()
                    .expect("a bound listener has an address")
                    .port()
            })
            .collect();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peers, stop) = (Arc::clone(&peers), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    if !wait_readable(&listeners, ACCEPT_IDLE) {
                        continue;
                    }
                    for listener in &listeners {
                        // Transient accept errors (a client that already gave up) are not the
                        // server's failure; WouldBlock is the normal "nobody there".
                        if let Ok((stream, peer)) = listener.accept() {
                            let peer = peer.ip().to_canonical();
                            peers.lock().unwrap().push(peer);
                            // A client that vanishes or times out gets no answer; that is its
                            // problem, not a failure of the server.
                            let _ = answer(stream, peer);
                        }
                    }
                }
            })
        };
        WebServer {
            ports,
            peers,
            stop,
            thread: Some(thread),
        }
    }

    /// The ports it listens on, in the order they were asked for (with `0` resolved).
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Every client address it accepted a connection from, in order (IPv4-mapped addresses as
    /// plain IPv4).
    pub fn peers(&self) -> Vec<IpAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(Err(panic)) = self.thread.take().map(JoinHandle::join) {
            if !thread::panicking() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// Reads one request (bounded by [`REQUEST_TIMEOUT`] and 8 KiB) and answers it.
/// Waits up to `timeout` for a connection on any of `listeners` (poll(2), so a connection is
/// accepted at once, however fast a benchmark's client opens them).
fn wait_readable(listeners: &[TcpListener], timeout: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut fds: Vec<libc::pollfd> = listeners
        .iter()
        .map(|l| libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the call's duration.
    let n = unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout.as_millis() as libc::c_int,
        )
    };
    n > 0
}

fn answer(mut stream: TcpStream, peer: IpAddr) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        match stream.read(&mut buf)? {
            0 => break,
            n => request.extend_from_slice(&buf[..n]),
        }
    }
    let port = stream.local_addr()?.port();
    let response = if request.starts_with(b"GET ") {
        let body = format!("peer={peer} port={port}\n");
        format!(
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.0 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n".to_owned()
    };
    stream.write_all(response.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Lab
// ---------------------------------------------------------------------------------------------

/// The seed's topology (see the crate docs): four namespaces (five with a switch), deleted when
/// the `Lab` is dropped.
#[derive(Debug)]
pub struct Lab {
    /// The node: cluster bridge [`NODE_BRIDGE`] and the macvlan parent [`MACVLAN_PARENT`].
    pub node: Netns,
    /// The egress router's pod: [`ROUTER_INTERNAL`] on the cluster network, default routes via
    /// the node, forwarding off.
    pub router: Netns,
    /// A pod on the cluster network, default routes via the node.
    pub client: Netns,
    /// The external segment: the gateway and the web server's addresses and firewall.
    pub ext: Netns,
    /// The external segment's switch, when the lab has one ([`Lab::with_switch`]): a bridge
    /// between the node's [`MACVLAN_PARENT`] and the gateway, where a test drops frames the way
    /// a hypervisor or a switch port does, and attaches more hosts.
    pub switch: Option<Netns>,
}

impl Default for Lab {
    fn default() -> Lab {
        Lab::new()
    }
}

impl Lab {
    /// Builds the topology. Panics (after deleting whatever it created) if any step fails.
    pub fn new() -> Lab {
        Lab::build(false)
    }

    /// [`Lab::new`] with a switch in the external segment: the node's [`MACVLAN_PARENT`] and
    /// the gateway's [`GATEWAY_LINK`] are veths to ports of bridge [`SWITCH_BRIDGE`] in a fifth
    /// namespace, [`Lab::switch`], instead of one veth between them. Frames cross it as they
    /// would cross a vSwitch or a switch port: [`Lab::switch_drop_from`] drops those of one
    /// source MAC, and [`Lab::attach_host`] adds a host to the segment.
    ///
    /// ```text
    ///  node: ext0 ---- p-node [br0] p-gw ---- gw0: ext
    ///                          |  p-1, p-2 ... ---- eth0: attached hosts
    ///                        switch
    /// ```
    pub fn with_switch() -> Lab {
        Lab::build(true)
    }

    fn build(switch: bool) -> Lab {
        let lab = Lab {
            node: Netns::new("node"),
            router: Netns::new("router"),
            client: Netns::new("client"),
            ext: Netns::new("ext"),
            switch: switch.then(|| Netns::new("switch")),
        };
        for ns in lab.namespaces() {
            // Links created from now on take these, so IPv6 addresses work at once.
            for key in [
                "net.ipv6.conf.default.accept_dad",
                "net.ipv6.conf.all.accept_dad",
            ] {
                ns.sysctl_set(key, "0");
            }
        }
        lab.build_node();
        lab.build_pod(&lab.router, ROUTER_INTERNAL, ROUTER_ETH0_4, ROUTER_ETH0_6);
        lab.router.sysctl_set("net.ipv4.ip_forward", "0");
        lab.router.sysctl_set("net.ipv6.conf.all.forwarding", "0");
        lab.build_pod(&lab.client, CLIENT_LINK, CLIENT4, CLIENT6);
        lab.build_ext();
        lab
    }

    /// [`Lab::new`] plus [`SDN_MACVLAN`] made by [`Lab::make_sdn_macvlan`], for the adopt mode.
    pub fn with_adopted_macvlan() -> Lab {
        let lab = Lab::new();
        lab.make_sdn_macvlan(SDN_MACVLAN);
        lab
    }

    /// Makes a macvlan on [`MACVLAN_PARENT`] and moves it into the router, the way OpenShift's
    /// SDN prepares an egress router pod: down, no address.
    ///
    /// Equivalent to `ip link add NAME link ext0 type macvlan mode private` in `node`, then
    /// `ip link set NAME netns ROUTER`.
    pub fn make_sdn_macvlan(&self, name: &str) {
        self.node.ip(&[
            "link",
            "add",
            name,
            "link",
            MACVLAN_PARENT,
            "type",
            "macvlan",
            "mode",
            "private",
        ]);
        self.node
            .ip(&["link", "set", name, "netns", self.router.name()]);
    }

    /// A router spec for this lab, IPv4 only, for a test to extend: the router in
    /// [`Lab::router`] with [`ROUTER_INTERNAL`] inside, a private macvlan on [`MACVLAN_PARENT`]
    /// of [`Lab::node`], source [`EGRESS_SOURCE4`], gateway [`GATEWAY4`], and two redirects:
    /// TCP [`SERVICE_PORT`] to [`WEB4`]:[`WEB_PORT`], and TCP [`WEB_PORT`] to [`WEB4`] (same
    /// port). No fallback, so a test can add one (`.fallback(FALLBACK4)`).
    pub fn router_spec(&self, name: &str) -> RouterSpecBuilder {
        egress_core::RouterSpec::builder(name)
            .netns(egress_core::Netns::Path(self.router.path().into()))
            .macvlan(MACVLAN_PARENT, MacvlanMode::Private)
            .parent_netns(egress_core::Netns::Path(self.node.path().into()))
            .internal(ROUTER_INTERNAL)
            .source(EGRESS_SOURCE4)
            .gateway(GATEWAY4)
            .redirect(Protocol::Tcp, SERVICE_PORT, WEB4, Some(WEB_PORT))
            .redirect(Protocol::Tcp, WEB_PORT, WEB4, None)
    }

    /// Proves with real TCP, from the client to the router's eth0, that the redirects of
    /// [`Lab::router_spec`] ([`SERVICE_PORT`] and [`WEB_PORT`]) reach the web server's
    /// [`WEB_PORT`] and that `fallback_port`, which nothing redirects, reaches [`FALLBACK4`];
    /// that the router DNAT-ed each one (its conntrack table) and the server saw only
    /// [`EGRESS_SOURCE4`], on exactly these three connections. `web` serves [`WEB_PORT`] and
    /// `fallback_port` and has served nothing yet; panics otherwise.
    pub fn assert_redirects_and_fallback4(&self, web: &WebServer, fallback_port: u16) {
        let timeout = Duration::from_secs(2);
        let source = ip(EGRESS_SOURCE4);
        for port in [SERVICE_PORT, WEB_PORT] {
            let body = self
                .client
                .http_get(ip(ROUTER_ETH0_4), port, timeout)
                .unwrap();
            assert_eq!(body.trim(), format!("peer={source} port={WEB_PORT}"));
            assert!(self.router.dnat_seen(port, WEB4), "port {port}");
        }
        let body = self
            .client
            .http_get(ip(ROUTER_ETH0_4), fallback_port, timeout)
            .unwrap();
        assert_eq!(body.trim(), format!("peer={source} port={fallback_port}"));
        assert!(self.router.dnat_seen(fallback_port, FALLBACK4));
        assert!(!self.router.dnat_seen(fallback_port, WEB4));
        assert_eq!(web.peers().len(), 3);
        assert!(web.peers().iter().all(|p| *p == source));
    }

    /// The names of the namespaces (node, router, client, ext, and the switch if there is
    /// one).
    pub fn ns_names(&self) -> Vec<String> {
        self.namespaces()
            .iter()
            .map(|ns| ns.name().to_owned())
            .collect()
    }

    fn namespaces(&self) -> Vec<&Netns> {
        let mut all = vec![&self.node, &self.router, &self.client, &self.ext];
        all.extend(&self.switch);
        all
    }

    /// The switch of a lab made by [`Lab::with_switch`]; panics for a lab without one.
    pub fn switch(&self) -> &Netns {
        self.switch
            .as_ref()
            .expect("a lab with a switch: build it with Lab::with_switch()")
    }

    /// Makes the switch drop every frame whose source is `mac` (on every port), as a
    /// hypervisor does that allows only the MAC it gave a VM's NIC, or a switch port with
    /// port security. Equivalent to `nft add rule bridge egt_switch forward ether saddr MAC
    /// drop` in the switch.
    pub fn switch_drop_from(&self, mac: &str) {
        self.switch().nft(&format!(
            "table bridge {SWITCH_FILTER_TABLE} {{
                chain forward {{
                    type filter hook forward priority 0; policy accept;
                    ether saddr {mac} drop
                }}
            }}"
        ));
    }

    /// A new namespace for `role` with `eth0` on the switch (a veth to a new port of
    /// [`SWITCH_BRIDGE`]), up, without addresses; the test gives it what it needs. Deleted
    /// when the returned [`Netns`] is dropped (its port goes with it).
    pub fn attach_host(&self, role: &str) -> Netns {
        static NEXT_PORT: AtomicUsize = AtomicUsize::new(1);
        let switch = self.switch();
        let host = Netns::new(role);
        let port = format!("p-{}", NEXT_PORT.fetch_add(1, Ordering::Relaxed));
        switch.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host.name(),
        ]);
        switch.ip(&["link", "set", &port, "master", SWITCH_BRIDGE, "up"]);
        host.sysctl_set("net.ipv6.conf.default.accept_dad", "0");
        host.sysctl_set("net.ipv6.conf.eth0.accept_dad", "0");
        host.ip(&["link", "set", "eth0", "up"]);
        host
    }

    fn build_node(&self) {
        let node = &self.node;
        node.ip(&[
            "link",
            "add",
            NODE_BRIDGE,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        add_addresses(
            node,
            NODE_BRIDGE,
            &[&format!("{NODE4}/24"), &format!("{NODE6}/64")],
        );
        node.ip(&["link", "set", NODE_BRIDGE, "up"]);
        for (port, pod, pod_link) in [
            (NODE_ROUTER_PORT, &self.router, ROUTER_INTERNAL),
            (NODE_CLIENT_PORT, &self.client, CLIENT_LINK),
        ] {
            self.veth(port, pod, pod_link);
            node.ip(&["link", "set", port, "master", NODE_BRIDGE, "up"]);
        }
        match &self.switch {
            None => self.veth(MACVLAN_PARENT, &self.ext, GATEWAY_LINK),
            Some(switch) => {
                switch.ip(&[
                    "link",
                    "add",
                    SWITCH_BRIDGE,
                    "type",
                    "bridge",
                    "mcast_snooping",
                    "0",
                ]);
                switch.ip(&["link", "set", SWITCH_BRIDGE, "up"]);
                self.veth(MACVLAN_PARENT, switch, SWITCH_NODE_PORT);
                switch.ip(&[
                    "link",
                    "add",
                    SWITCH_GATEWAY_PORT,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    GATEWAY_LINK,
                    "netns",
                    self.ext.name(),
                ]);
                for port in [SWITCH_NODE_PORT, SWITCH_GATEWAY_PORT] {
                    switch.ip(&["link", "set", port, "master", SWITCH_BRIDGE, "up"]);
                }
            }
        }
        node.ip(&["link", "set", MACVLAN_PARENT, "up"]);
    }

    /// A pod on the cluster network: `link` with its addresses, default routes via the node.
    fn build_pod(&self, pod: &Netns, link: &str, addr4: &str, addr6: &str) {
        add_addresses(pod, link, &[&format!("{addr4}/24"), &format!("{addr6}/64")]);
        pod.ip(&["link", "set", link, "up"]);
        pod.ip(&["-4", "route", "add", "default", "via", NODE4, "dev", link]);
        pod.ip(&["-6", "route", "add", "default", "via", NODE6, "dev", link]);
    }

    fn build_ext(&self) {
        let ext = &self.ext;
        add_addresses(
            ext,
            GATEWAY_LINK,
            &[&format!("{GATEWAY4}/24"), &format!("{GATEWAY6}/64")],
        );
        ext.ip(&["link", "set", GATEWAY_LINK, "up"]);
        add_addresses(
            ext,
            "lo",
            &[
                &format!("{WEB4}/32"),
                &format!("{FALLBACK4}/32"),
                &format!("{WEB6}/128"),
                &format!("{FALLBACK6}/128"),
            ],
        );
        // Let a gratuitous ARP / unsolicited NA create a neighbour entry on the gateway, so tests
        // can see which MAC announced the egress source.
        ext.sysctl_set("net.ipv4.conf.all.arp_accept", "1");
        ext.sysctl_set(&format!("net.ipv4.conf.{GATEWAY_LINK}.arp_accept"), "1");
        let untracked_na = format!("net.ipv6.conf.{GATEWAY_LINK}.accept_untracked_na");
        if ext.has_sysctl(&untracked_na) {
            ext.sysctl_set(&untracked_na, "1");
            // The kernel honours accept_untracked_na only on a forwarding interface (RFC 9131
            // is about routers), which the gateway is.
            ext.sysctl_set(&format!("net.ipv6.conf.{GATEWAY_LINK}.forwarding"), "1");
        }
        let (source4, source6) = (ip(EGRESS_SOURCE4), ip(EGRESS_SOURCE6));
        ext.nft(&format!(
            "table inet {WEB_FIREWALL_TABLE} {{
                chain input {{
                    type filter hook input priority 0; policy accept;
                    ip daddr {{ {WEB4}, {FALLBACK4} }} meta l4proto tcp ip saddr != {source4} drop
                    ip6 daddr {{ {WEB6}, {FALLBACK6} }} meta l4proto tcp ip6 saddr != {source6} drop
                }}
            }}"
        ));
    }

    /// A veth from `node` (`node_end`) to `peer` (`peer_end`), created in one message.
    fn veth(&self, node_end: &str, peer: &Netns, peer_end: &str) {
        self.node.ip(&[
            "link",
            "add",
            node_end,
            "type",
            "veth",
            "peer",
            "name",
            peer_end,
            "netns",
            peer.name(),
        ]);
    }
}

/// Adds addresses to `link` (IPv6 ones with `nodad`).
fn add_addresses(ns: &Netns, link: &str, addrs: &[&str]) {
    for addr in addrs {
        let mut args = vec!["addr", "add", addr, "dev", link];
        if ip(addr).is_ipv6() {
            args.push("nodad");
        }
        ns.ip(&args);
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshot
// ---------------------------------------------------------------------------------------------

/// What "restored exactly" means (DESIGN.md) for one namespace, as sorted, normalized lines:
///
/// - `link NAME {…}`: up flag, kind (with a macvlan's/ipvlan's mode), MTU, master, parent link
///   (`"(other netns)"` when the parent/peer lives elsewhere), group, alias. Not: ifindex, MAC,
///   counters, operstate.
/// - `addr DEV ADDR/LEN {…}`: global-scope addresses with their flags and protocol, without
///   lifetimes.
/// - `route -4|-6 {…}`: routes of every table except table `local`, types local, broadcast,
///   multicast and anycast, and IPv6 `fe80::/64` and `ff00::/8`; dst, gateway/via, dev, table,
///   protocol, scope, metric, type, prefsrc, nexthops, the `onlink` flag.
/// - `rule -4|-6 {…}`: policy rules.
/// - `nft …`: the nftables ruleset without handles and metainfo; rules keep their position in
///   their chain.
/// - `sysctl KEY = VALUE`: `net.ipv4.ip_forward`; `forwarding` (IPv4 and IPv6), `arp_notify` and
///   `ndisc_notify` of `all`, `default` and every link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    lines: Vec<String>,
}

impl Snapshot {
    /// Reads the state of `ns` (through `ip -j -d`, `nft -j` and `/proc/sys` inside it).
    pub fn take(ns: &Netns) -> Snapshot {
        let links = ns.ip_json(&["-d", "link", "show"]);
        let links = links.as_array().map(Vec::as_slice).unwrap_or_default();
        let mut lines: Vec<String> = links.iter().map(link_line).collect();
        let protocols = address_protocols(ns);
        let addresses = ns.ip_json(&["addr", "show"]);
        lines.extend(
            addresses
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|link| address_lines(link, &protocols)),
        );
        for family in ["-4", "-6"] {
            let routes = ns.ip_json(&[family, "route", "show", "table", "all"]);
            lines.extend(
                routes
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(normalized_route)
                    .map(|route| format!("route {family} {route}")),
            );
            let rules = ns.ip_json(&[family, "rule", "show"]);
            lines.extend(
                rules
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|rule| format!("rule {family} {rule}")),
            );
        }
        lines.extend(nft_lines(&parse_json(
            &ns.exec(&["nft", "-j", "list", "ruleset"]),
            "nft -j list ruleset",
        )));
        let names: Vec<&str> = links.iter().filter_map(|l| l["ifname"].as_str()).collect();
        lines.extend(sysctl_lines(ns, &names));
        lines.sort();
        Snapshot { lines }
    }

    /// The normalized lines, sorted.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// What differs from `other`: `- line` for what only `self` has, `+ line` for what only
    /// `other` has, one per line; empty when the snapshots are equal.
    pub fn diff(&self, other: &Snapshot) -> String {
        let (mut a, mut b) = (self.lines.iter().peekable(), other.lines.iter().peekable());
        let mut out = String::new();
        loop {
            let (sign, line) = match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(x), Some(y)) if x == y => {
                    a.next();
                    b.next();
                    continue;
                }
                (Some(x), Some(y)) if x < y => ('-', a.next()),
                (Some(_), None) => ('-', a.next()),
                _ => ('+', b.next()),
            };
            out.push_str(&format!("{sign} {}\n", line.expect("peeked")));
        }
        out
    }
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.lines.iter().try_for_each(|line| writeln!(f, "{line}"))
    }
}

/// Copies the listed keys of `from` that are present into a new object.
fn pick(from: &Value, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|&k| from.get(k).map(|v| (k.to_owned(), v.clone())))
        .collect()
}

fn link_line(link: &Value) -> String {
    let mut out = pick(link, &["mtu", "master", "group", "ifalias"]);
    let up = link["flags"]
        .as_array()
        .is_some_and(|flags| flags.iter().any(|f| f == "UP"));
    out.insert("up".into(), up.into());
    if let Some(kind) = link["linkinfo"].get("info_kind") {
        out.insert("kind".into(), kind.clone());
    }
    if let Some(mode) = link["linkinfo"]["info_data"].get("mode") {
        out.insert("mode".into(), mode.clone());
    }
    // `link` names the parent (macvlan) or peer (veth) when it is in the same namespace; a
    // parent elsewhere is only known by ifindex and netnsid, which a snapshot must not hold.
    if let Some(parent) = link.get("link") {
        out.insert("parent".into(), parent.clone());
    } else if link.get("link_netnsid").is_some() {
        out.insert("parent".into(), "(other netns)".into());
    }
    format!(
        "link {} {}",
        link["ifname"].as_str().unwrap_or("?"),
        Value::Object(out)
    )
}

/// `IFA_PROTO` of each address, keyed by (ifindex, address, prefix length). iproute2 6.1 does not
/// show it, so it comes from an `RTM_GETADDR` dump on a socket opened inside the namespace.
type AddressProtocols = HashMap<(u64, IpAddr, u8), u8>;

fn address_lines(link: &Value, protocols: &AddressProtocols) -> Vec<String> {
    let dev = link["ifname"].as_str().unwrap_or("?");
    let index = link["ifindex"].as_u64().unwrap_or_default();
    link["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|addr| addr["scope"] == "global")
        .map(|addr| {
            let local = addr["local"].as_str().unwrap_or("?");
            let prefix = addr["prefixlen"].as_u64().unwrap_or_default();
            let mut fields = addr.as_object().cloned().unwrap_or_default();
            fields.remove("valid_life_time");
            fields.remove("preferred_life_time");
            let key = local.parse().ok().map(|a| (index, a, prefix as u8));
            if let Some(protocol) = key.and_then(|k| protocols.get(&k)) {
                fields.insert("protocol".into(), (*protocol).into());
            }
            format!("addr {dev} {local}/{prefix} {}", Value::Object(fields))
        })
        .collect()
}

fn address_protocols(ns: &Netns) -> AddressProtocols {
    // A dump interrupted by a concurrent change (NLM_F_DUMP_INTR) is simply taken again.
    let mut attempts = 0;
    loop {
        match dump_address_protocols(ns) {
            Err(e) if e.kind() == ErrorKind::Interrupted && attempts < 5 => attempts += 1,
            result => break result,
        }
    }
    .unwrap_or_else(|e| panic!("RTM_GETADDR dump in {}: {e}", ns.name))
}

fn dump_address_protocols(ns: &Netns) -> std::io::Result<AddressProtocols> {
    let request = RouteNetlinkMessage::GetAddress(AddressMessage::default());
    let mut protocols = AddressProtocols::new();
    for reply in ns.rtnetlink(request, NLM_F_DUMP)? {
        let RouteNetlinkMessage::NewAddress(m) = reply else {
            continue;
        };
        let (mut local, mut address, mut protocol) = (None, None, None);
        for attribute in m.attributes {
            match attribute {
                AddressAttribute::Local(a) => local = Some(a),
                AddressAttribute::Address(a) => address = Some(a),
                AddressAttribute::Protocol(p) => protocol = Some(u8::from(p)),
                _ => {}
            }
        }
        // `ip` shows IFA_LOCAL as "local", or IFA_ADDRESS when there is none (IPv6).
        if let (Some(addr), Some(protocol)) = (local.or(address), protocol) {
            let key = (u64::from(m.header.index), addr, m.header.prefix_len);
            protocols.insert(key, protocol);
        }
    }
    Ok(protocols)
}

/// The route's kept fields, or `None` for a route the kernel derives.
fn normalized_route(route: &Value) -> Option<Value> {
    let kind = route["type"].as_str().unwrap_or("unicast");
    let table = route["table"].as_str().unwrap_or("main");
    let dst = route["dst"].as_str().unwrap_or("");
    if matches!(kind, "local" | "broadcast" | "multicast" | "anycast")
        || table == "local"
        || dst == "fe80::/64"
        || dst.starts_with("ff")
    {
        return None;
    }
    let mut out = pick(
        route,
        &[
            "dst", "gateway", "via", "dev", "protocol", "scope", "metric", "prefsrc", "nexthops",
            "pref",
        ],
    );
    out.insert("type".into(), kind.into());
    out.insert("table".into(), table.into());
    // Other flags (linkdown, …) follow the carrier, not the configuration.
    if route["flags"]
        .as_array()
        .is_some_and(|flags| flags.iter().any(|f| f == "onlink"))
    {
        out.insert("onlink".into(), true.into());
    }
    Some(Value::Object(out))
}

fn nft_lines(ruleset: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    // A rule's position in its chain matters; every other object is compared as a set.
    let mut position: HashMap<String, usize> = HashMap::new();
    for object in ruleset["nftables"].as_array().into_iter().flatten() {
        let Some((kind, body)) = object.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        if kind == "metainfo" {
            continue;
        }
        let mut body = body.clone();
        if let Some(fields) = body.as_object_mut() {
            fields.remove("handle");
        }
        if kind == "rule" {
            let chain = ["family", "table", "chain"]
                .map(|k| body[k].as_str().unwrap_or("?"))
                .join(" ");
            let n = position.entry(chain.clone()).or_default();
            lines.push(format!("nft rule {chain} #{n:04} {body}"));
            *n += 1;
        } else {
            lines.push(format!("nft {kind} {body}"));
        }
    }
    lines
}

fn sysctl_lines(ns: &Netns, links: &[&str]) -> Vec<String> {
    // Slash form, so that a link name with a dot stays one path component.
    let mut keys = vec!["net/ipv4/ip_forward".to_owned()];
    for conf in ["all", "default"].iter().chain(links) {
        for (family, leaf) in [
            ("ipv4", "forwarding"),
            ("ipv4", "arp_notify"),
            ("ipv6", "forwarding"),
            ("ipv6", "ndisc_notify"),
        ] {
            keys.push(format!("net/{family}/conf/{conf}/{leaf}"));
        }
    }
    let values = ns.run(|| {
        keys.iter()
            .map(|key| read_sysctl(key).unwrap_or_else(|e| format!("<{e}>")))
            .collect::<Vec<_>>()
    });
    keys.iter()
        .zip(values)
        .map(|(key, value)| format!("sysctl {} = {value}", key.replace('/', ".")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Shared by the end-to-end tests
// ---------------------------------------------------------------------------------------------

/// The two namespaces a router touches (its own and its parent's), before and after.
pub struct Snapshots<'a> {
    lab: &'a Lab,
    router: Snapshot,
    node: Snapshot,
}

impl<'a> Snapshots<'a> {
    /// Snapshots `lab.router` and `lab.node` now.
    pub fn take(lab: &'a Lab) -> Self {
        Snapshots {
            lab,
            router: Snapshot::take(&lab.router),
            node: Snapshot::take(&lab.node),
        }
    }

    /// Panics, showing the difference, unless both namespaces are exactly as when taken.
    #[track_caller]
    pub fn assert_restored(&self, when: &str) {
        let router = Snapshot::take(&self.lab.router);
        assert!(
            self.router == router,
            "{when}: router namespace differs:\n{}",
            self.router.diff(&router)
        );
        let node = Snapshot::take(&self.lab.node);
        assert!(
            self.node == node,
            "{when}: node namespace differs:\n{}",
            self.node.diff(&node)
        );
    }
}

/// The path of binary `name` of this workspace (`egress-router`, `egress-cni`), as a test that
/// drives it like a user needs it: `$OVERRIDE_VAR` if set, else `target/<profile>/NAME` next to
/// the running test. Panics with the command to run if it is missing or older than any source
/// file of the workspace `crates` it is built from (its own and the ones it depends on, such as
/// `["egress-openshift", "egress-core"]`), so a test never runs a stale binary.
pub fn workspace_binary(name: &str, crates: &[&str], override_var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(override_var) {
        let bin = PathBuf::from(p);
        assert!(
            bin.is_file(),
            "{override_var}={}: no such file",
            bin.display()
        );
        return bin;
    }
    // A test runs from target/<profile>/deps/; cargo puts binaries in target/<profile>/.
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let release = if profile_dir.ends_with("release") {
        "--release "
    } else {
        ""
    };
    let bin = profile_dir.join(name);
    let built = fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}. Build it first: `cargo build {release}--bin {name}` (scripts/test.sh does)",
                bin.display()
            )
        });
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("egress-lab is a folder of the workspace");
    let (newest, when) = crates
        .iter()
        .flat_map(|krate| {
            let dir = workspace.join(krate);
            newest_file(&dir.join("src"))
                .into_iter()
                .chain(std::iter::once(modified(&dir.join("Cargo.toml"))))
        })
        .max_by_key(|(_, t)| *t)
        .expect("the crates have sources");
    assert!(
        built >= when,
        "{} is older than {}: rebuild it with `cargo build {release}--bin {name}`",
        bin.display(),
        newest.display()
    );
    bin
}

fn modified(p: &Path) -> (PathBuf, std::time::SystemTime) {
    let when = fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (p.to_path_buf(), when)
}

fn newest_file(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(newest_file(&path));
        } else {
            out.push(modified(&path));
        }
    }
    out
}
