//! What a router should look like: [`RouterSpec`], its builder and its JSON form.
//!
//! Every check that needs no kernel runs in [`RouterSpecBuilder::build`] (and in
//! [`RouterSpec::from_json`], which goes through the same validation), so a spec that exists is a
//! spec that can only fail on kernel state.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

pub(crate) use self::raw::validate_name;
use self::raw::{
    RawAnnounce, RawExternal, RawKeptRoute, RawLocalPort, RawMacvlan, RawNetns, RawProbe,
    RawRedirect, RawSpaced, RawSpec,
};
use crate::{
    error::{Error, InvalidField, Result},
    role::Role,
};

/// The probe timeout a diagnosis uses unless told otherwise, and the one a spec's `probe`
/// uses when it gives none.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// The longest probe timeout.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

mod raw;
#[cfg(test)]
mod tests;

/// Longest router name: it is embedded in the nftables table name and the link marker.
pub const MAX_NAME_LEN: usize = 32;
/// Longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Whether `name` is a link name the kernel allows: 1 to [`MAX_IFNAME_LEN`] bytes, not `.` or
/// `..`, no `/`, `:`, NUL or white space as the kernel counts it (`dev_valid_name`), no `%`.
/// Here, below the kernel layer, because a spec's link names are checked with it too; the
/// kernel layer's `IfName` holds only names it passes.
pub(crate) fn valid_ifname(name: &str) -> bool {
    let kernel_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0);
    !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| matches!(b, 0 | b'/' | b':' | b'%') || kernel_space(b))
}
/// Most announcements (gratuitous ARP / unsolicited NA) per address.
pub const MAX_ANNOUNCE: u8 = 16;
/// The interval between announcements when the spec gives none.
pub const DEFAULT_ANNOUNCE_INTERVAL: Duration = Duration::from_millis(100);
/// Longest interval between two announcements.
pub const MAX_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(10);

/// The announcements (gratuitous ARP / unsolicited NA for every egress address) that follow a
/// change claiming the egress identity: `count` of them, `interval` apart. JSON: `"announce": N`
/// or `"announce": {"count": N, "interval_ms": M}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Announce {
    /// How many, 0 to [`MAX_ANNOUNCE`] (0: none).
    pub count: u8,
    /// The time between two of them (1 ms to [`MAX_ANNOUNCE_INTERVAL`]).
    pub interval: Duration,
}

/// A network namespace, as a front end names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Netns {
    /// The namespace of the thread that calls `apply`, captured when `apply` starts.
    #[default]
    Current,
    /// A namespace file: `/run/netns/NAME`, `/proc/PID/ns/net`, a bind mount.
    Path(PathBuf),
    /// A named namespace under `/run/netns` (as `ip netns add NAME` creates).
    Name(String),
    /// The namespace of a process.
    Pid(u32),
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Netns::Current => f.write_str("(current)"),
            Netns::Path(p) => write!(f, "{}", p.display()),
            Netns::Name(n) => f.write_str(n),
            Netns::Pid(p) => write!(f, "pid:{p}"),
        }
    }
}

/// Macvlan mode (`ip link add … type macvlan mode MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    /// Macvlans on the same parent talk to each other directly.
    #[default]
    Bridge,
    /// No traffic between macvlans on the same parent.
    Private,
    /// Traffic between macvlans goes out to the adjacent switch.
    Vepa,
    /// The macvlan takes over the parent (one macvlan per parent).
    Passthru,
}

impl MacvlanMode {
    /// The iproute2 keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Passthru => "passthru",
        }
    }
}

/// A macvlan to create on a parent link, directly inside the router namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Macvlan {
    pub(crate) parent: String,
    pub(crate) parent_netns: Netns,
    pub(crate) mode: MacvlanMode,
    pub(crate) mtu: Option<u32>,
    pub(crate) mac: Option<[u8; 6]>,
    pub(crate) name: String,
}

impl Macvlan {
    /// The parent link's name.
    pub fn parent(&self) -> &str {
        &self.parent
    }
    /// The namespace the parent lives in.
    pub fn parent_netns(&self) -> &Netns {
        &self.parent_netns
    }
    /// The macvlan mode.
    pub fn mode(&self) -> MacvlanMode {
        self.mode
    }
    /// The MTU, if set (else the parent's).
    pub fn mtu(&self) -> Option<u32> {
        self.mtu
    }
    /// The MAC address, if set (else the kernel picks a random one).
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.mac
    }
    /// The link's name in the router namespace.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The external link: created by the router, or adopted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum External {
    /// Create a macvlan (and delete it on teardown).
    Macvlan(Macvlan),
    /// Use an existing link in the router namespace (OpenShift legacy: the SDN made `macvlan0`).
    /// Teardown removes what the router added to it and leaves the link.
    Adopt(String),
}

impl External {
    /// The external link's name inside the router namespace.
    pub fn link_name(&self) -> &str {
        match self {
            External::Macvlan(m) => &m.name,
            External::Adopt(name) => name,
        }
    }
}

/// Transport protocol of a redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            _ => Err(Error::invalid("protocol", s, "one of tcp, udp, sctp")),
        }
    }
}

/// Connections to `port`/`protocol` on the router go to `to`:`to_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Redirect {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Local port on the router, 1–65535.
    pub port: u16,
    /// Destination address.
    pub to: IpAddr,
    /// Destination port (the local port when not given).
    pub to_port: u16,
}

#[cfg(test)]
impl Redirect {
    /// A redirect from literals, for unit tests.
    pub(crate) fn of(protocol: Protocol, port: u16, to: &str, to_port: u16) -> Redirect {
        Redirect {
            protocol,
            port,
            to: to.parse().unwrap(),
            to_port,
        }
    }
}

/// A port of the router's own that is never redirected: connections to it on the internal link
/// reach a process in the router namespace (a metrics or health endpoint), even when a
/// fallback takes everything else.
///
/// ```
/// use egress_core::{LocalPort, MacvlanMode, Protocol, RouterSpec};
///
/// let spec = RouterSpec::builder("egress-1")
///     .macvlan("eth1", MacvlanMode::Private)
///     .source("203.0.113.99/24")
///     .gateway("203.0.113.1")
///     .fallback("198.51.100.9")
///     .local_port(Protocol::Tcp, 9100)
///     .build()?;
/// assert_eq!(spec.local_ports(), [LocalPort { protocol: Protocol::Tcp, port: 9100 }]);
/// assert_eq!(
///     spec.to_json_value()["local_ports"],
///     serde_json::json!([{"protocol": "tcp", "port": 9100}])
/// );
/// # Ok::<(), egress_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalPort {
    /// Transport protocol.
    pub protocol: Protocol,
    /// The port on the router, 1–65535.
    pub port: u16,
}

impl fmt::Display for LocalPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)
    }
}

/// A route that must stay reachable through the internal link (cluster and node networks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeptRoute {
    /// Destination network (host bits zero).
    pub to: IpNetwork,
    /// Next hop on the internal link; `None` = directly connected.
    pub via: Option<IpAddr>,
}

/// The complete, validated description of an egress router.
///
/// Build one with [`RouterSpec::builder`] or parse one with [`RouterSpec::from_json`]; both run
/// the same validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSpec {
    pub(crate) name: String,
    pub(crate) netns: Netns,
    pub(crate) external: External,
    pub(crate) internal: String,
    pub(crate) sources: Vec<IpNetwork>,
    pub(crate) gateway4: Option<Ipv4Addr>,
    pub(crate) gateway6: Option<Ipv6Addr>,
    pub(crate) redirects: Vec<Redirect>,
    pub(crate) local_ports: Vec<LocalPort>,
    pub(crate) fallback4: Option<Ipv4Addr>,
    pub(crate) fallback6: Option<Ipv6Addr>,
    pub(crate) kept_routes: Vec<KeptRoute>,
    pub(crate) announce: Announce,
    pub(crate) probe: Option<Duration>,
    pub(crate) stable_mac: Option<[u8; 6]>,
}

impl RouterSpec {
    /// Starts a builder for a router called `name`.
    pub fn builder(name: impl Into<String>) -> RouterSpecBuilder {
        RouterSpecBuilder {
            raw: RawSpec {
                name: name.into(),
                ..RawSpec::default()
            },
            misplaced: None,
        }
    }

    /// Parses the JSON form (see the crate docs); unknown keys are rejected by name.
    pub fn from_json(json: &str) -> Result<Self> {
        let raw: RawSpec = serde_json::from_str(json).map_err(|e| {
            Error::invalid(
                "spec",
                truncate(json, 80),
                format!("valid router JSON: {e}"),
            )
        })?;
        raw.validate(None)
    }

    /// Parses the JSON form from an already parsed value.
    pub fn from_json_value(value: serde_json::Value) -> Result<Self> {
        let raw: RawSpec = serde_json::from_value(value)
            .map_err(|e| Error::invalid("spec", "(object)", format!("valid router JSON: {e}")))?;
        raw.validate(None)
    }

    /// The JSON form, which [`RouterSpec::from_json`] reads back to an equal spec.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.to_raw()).expect("a RouterSpec always serializes")
    }

    /// The JSON form as a value.
    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::to_value(self.to_raw()).expect("a RouterSpec always serializes")
    }

    /// A builder holding this spec, to derive another from it: what the builder's setters add
    /// (a source, a redirect) comes after what this spec holds; what they set replaces it.
    ///
    /// ```
    /// use egress_core::{MacvlanMode, Protocol, RouterSpec};
    ///
    /// let spec = RouterSpec::builder("egress-1")
    ///     .macvlan("eth1", MacvlanMode::Private)
    ///     .source("203.0.113.99/24")
    ///     .gateway("203.0.113.1")
    ///     .build()?;
    /// let more = spec.to_builder().redirect(Protocol::Tcp, 80, "198.51.100.25", None).build()?;
    /// assert_eq!((more.sources(), more.redirects().len()), (spec.sources(), 1));
    /// # Ok::<(), egress_core::Error>(())
    /// ```
    pub fn to_builder(&self) -> RouterSpecBuilder {
        RouterSpecBuilder {
            raw: self.to_raw(),
            misplaced: None,
        }
    }

    /// The router's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The router namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }
    /// The external link.
    pub fn external(&self) -> &External {
        &self.external
    }
    /// The internal (cluster) link's name.
    pub fn internal(&self) -> &str {
        &self.internal
    }
    /// The egress sources; the first of each family is the SNAT source.
    pub fn sources(&self) -> &[IpNetwork] {
        &self.sources
    }
    /// The IPv4 gateway, if IPv4 is in use.
    pub fn gateway4(&self) -> Option<Ipv4Addr> {
        self.gateway4
    }
    /// The IPv6 gateway, if IPv6 is in use.
    pub fn gateway6(&self) -> Option<Ipv6Addr> {
        self.gateway6
    }
    /// The port redirects.
    pub fn redirects(&self) -> &[Redirect] {
        &self.redirects
    }
    /// The router's own ports, never redirected (see [`LocalPort`]).
    pub fn local_ports(&self) -> &[LocalPort] {
        &self.local_ports
    }
    /// The IPv4 fallback destination.
    pub fn fallback4(&self) -> Option<Ipv4Addr> {
        self.fallback4
    }
    /// The IPv6 fallback destination.
    pub fn fallback6(&self) -> Option<Ipv6Addr> {
        self.fallback6
    }
    /// The routes kept through the internal link.
    pub fn kept_routes(&self) -> &[KeptRoute] {
        &self.kept_routes
    }
    /// How many announcements are sent per address.
    pub fn announce(&self) -> u8 {
        self.announce.count
    }
    /// The announcements that follow a promotion (or an apply): count and interval.
    pub fn announcements(&self) -> Announce {
        self.announce
    }
    /// The MAC address the external link takes while the router is active (the VRRP virtual
    /// MAC, or a locally administered one shared by every instance), if the spec sets one; a
    /// standby keeps its own.
    pub fn stable_mac(&self) -> Option<[u8; 6]> {
        self.stable_mac
    }
    /// The timeout of the duplicate address probe a new apply sends for each egress address
    /// before it claims them, when the spec asks for one (`"probe": {"timeout_ms": N}`).
    pub fn probe(&self) -> Option<Duration> {
        self.probe
    }

    /// The SNAT source of IPv4 traffic (the first IPv4 source).
    pub fn snat4(&self) -> Option<Ipv4Addr> {
        self.sources.iter().find_map(|s| match s.ip() {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
    }
    /// The SNAT source of IPv6 traffic (the first IPv6 source).
    pub fn snat6(&self) -> Option<Ipv6Addr> {
        self.sources.iter().find_map(|s| match s.ip() {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        })
    }

    /// The nftables table (family `inet`) that holds this router's NAT, filter and journal.
    pub fn table_name(&self) -> String {
        table_name(&self.name)
    }

    fn to_raw(&self) -> RawSpec {
        RawSpec {
            name: self.name.clone(),
            netns: RawNetns::of(&self.netns),
            external: Some(match &self.external {
                External::Macvlan(m) => RawExternal::Macvlan(RawMacvlan {
                    parent: m.parent.clone(),
                    parent_netns: RawNetns::of(&m.parent_netns),
                    mode: m.mode,
                    mtu: m.mtu,
                    mac: m.mac.map(|m| format_mac(&m)),
                    name: Some(m.name.clone()),
                }),
                External::Adopt(name) => RawExternal::Adopt(name.clone()),
            }),
            internal: Some(self.internal.clone()),
            sources: self.sources.iter().map(ToString::to_string).collect(),
            gateways: self
                .gateway4
                .map(|g| g.to_string())
                .into_iter()
                .chain(self.gateway6.map(|g| g.to_string()))
                .collect(),
            redirects: self
                .redirects
                .iter()
                .map(|r| RawRedirect {
                    protocol: r.protocol.as_str().to_string(),
                    port: u64::from(r.port),
                    to: r.to.to_string(),
                    to_port: (r.to_port != r.port).then_some(u64::from(r.to_port)),
                })
                .collect(),
            local_ports: self
                .local_ports
                .iter()
                .map(|l| RawLocalPort {
                    protocol: l.protocol.as_str().to_string(),
                    port: u64::from(l.port),
                })
                .collect(),
            fallback: self
                .fallback4
                .map(|g| g.to_string())
                .into_iter()
                .chain(self.fallback6.map(|g| g.to_string()))
                .collect(),
            kept_routes: self
                .kept_routes
                .iter()
                .map(|k| RawKeptRoute {
                    to: k.to.to_string(),
                    via: k.via.map(|v| v.to_string()),
                })
                .collect(),
            announce: Some(match self.announce.interval == DEFAULT_ANNOUNCE_INTERVAL {
                true => RawAnnounce::Count(u64::from(self.announce.count)),
                false => RawAnnounce::Spaced(RawSpaced {
                    count: Some(u64::from(self.announce.count)),
                    interval_ms: Some(self.announce.interval.as_millis() as u64),
                }),
            }),
            probe: self.probe.map(|d| RawProbe {
                timeout_ms: Some(d.as_millis() as u64),
            }),
            stable_mac: self.stable_mac.map(|m| format_mac(&m)),
        }
    }
}

pub(crate) fn table_name(router: &str) -> String {
    // `-` is not allowed in an unquoted nft identifier, `_` is not allowed in router names:
    // the mapping stays one-to-one and `nft list table inet egress_x` needs no quotes.
    format!("{TABLE_PREFIX}{}", router.replace('-', "_"))
}

/// Prefix of every nftables table this library owns.
pub(crate) const TABLE_PREFIX: &str = "egress_";

/// The router name a table name belongs to, if it is one of ours.
pub(crate) fn router_of_table(table: &str) -> Option<String> {
    table
        .strip_prefix(TABLE_PREFIX)
        .map(|n| n.replace('_', "-"))
}

/// Builds a [`RouterSpec`]; every setter is consuming and [`build`](Self::build) validates.
///
/// ```
/// use egress_core::{MacvlanMode, Protocol, RouterSpec};
///
/// let spec = RouterSpec::builder("egress-1")
///     .netns_name("pod")
///     .macvlan("eth1", MacvlanMode::Private)
///     .source("203.0.113.99/24")
///     .gateway("203.0.113.1")
///     .redirect(Protocol::Tcp, 80, "198.51.100.25", Some(8080))
///     .fallback("198.51.100.9")
///     .keep_route("10.128.0.0/14", Some("10.129.0.1"))
///     .build()?;
/// assert_eq!(spec.snat4().unwrap().to_string(), "203.0.113.99");
/// # Ok::<(), egress_core::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RouterSpecBuilder {
    raw: RawSpec,
    /// A macvlan option set before `macvlan()` (reported by `build`, never ignored).
    misplaced: Option<InvalidField>,
}

impl RouterSpecBuilder {
    /// The router namespace, by path (`/run/netns/pod`, `/proc/PID/ns/net`).
    pub fn netns_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.raw.netns = Some(RawNetns::Path(path.into()));
        self
    }
    /// The router namespace, by name under `/run/netns` (`ip netns exec NAME`).
    pub fn netns_name(mut self, name: impl Into<String>) -> Self {
        self.raw.netns = Some(RawNetns::Name(name.into()));
        self
    }
    /// The router namespace, as the namespace of process `pid`.
    pub fn netns_pid(mut self, pid: u32) -> Self {
        self.raw.netns = Some(RawNetns::Pid(pid));
        self
    }
    /// The router namespace (default: the calling thread's namespace when `apply` starts).
    pub fn netns(mut self, ns: Netns) -> Self {
        self.raw.netns = RawNetns::of(&ns);
        self
    }

    /// Create a macvlan on `parent` — like `ip link add macvlan0 link PARENT netns NS type
    /// macvlan mode MODE`, created directly inside the router namespace.
    pub fn macvlan(mut self, parent: impl Into<String>, mode: MacvlanMode) -> Self {
        self.raw.external = Some(RawExternal::Macvlan(RawMacvlan {
            parent: parent.into(),
            mode,
            ..RawMacvlan::default()
        }));
        self
    }
    /// The namespace of the macvlan's parent (default: the calling thread's namespace).
    pub fn parent_netns(mut self, ns: Netns) -> Self {
        match &mut self.raw.external {
            Some(RawExternal::Macvlan(m)) => {
                m.parent_netns = RawNetns::of(&ns);
            }
            _ => self.misplace("external.macvlan.parent_netns", ns.to_string()),
        }
        self
    }
    /// The macvlan's MTU (`ip link add … mtu N`); at most the parent's.
    pub fn mtu(mut self, mtu: u32) -> Self {
        match &mut self.raw.external {
            Some(RawExternal::Macvlan(m)) => {
                m.mtu = Some(mtu);
            }
            _ => self.misplace("external.macvlan.mtu", mtu.to_string()),
        }
        self
    }
    /// The macvlan's MAC address (`ip link add … address 02:00:00:00:00:99`).
    pub fn mac(mut self, mac: impl Into<String>) -> Self {
        match &mut self.raw.external {
            Some(RawExternal::Macvlan(m)) => {
                m.mac = Some(mac.into());
            }
            _ => self.misplace("external.macvlan.mac", mac.into()),
        }
        self
    }
    /// The macvlan's name in the router namespace (default `macvlan0`).
    pub fn link_name(mut self, name: impl Into<String>) -> Self {
        match &mut self.raw.external {
            Some(RawExternal::Macvlan(m)) => {
                m.name = Some(name.into());
            }
            _ => self.misplace("external.macvlan.name", name.into()),
        }
        self
    }
    /// Adopt an existing link of the router namespace as the external link.
    pub fn adopt(mut self, link: impl Into<String>) -> Self {
        self.raw.external = Some(RawExternal::Adopt(link.into()));
        self
    }
    /// The internal (cluster) link (default `eth0`).
    pub fn internal(mut self, link: impl Into<String>) -> Self {
        self.raw.internal = Some(link.into());
        self
    }
    /// Adds an egress source, `ADDR` or `ADDR/PREFIX` (`ip addr add … dev macvlan0`); a bare
    /// address is a host (`/32`, `/128`: the gateway is reached through the router's host
    /// route), a prefix of 0 is invalid. Gateways, redirect destinations and fallbacks must be
    /// hosts of the source's subnet, not its network or (IPv4) broadcast address.
    pub fn source(mut self, cidr: impl Into<String>) -> Self {
        self.raw.sources.push(cidr.into());
        self
    }
    /// Sets the gateway of one address family (`ip route add default via GW dev macvlan0`).
    pub fn gateway(mut self, ip: impl Into<String>) -> Self {
        self.raw.gateways.push(ip.into());
        self
    }
    /// Adds a redirect: `protocol`/`port` on the router goes to `to`:`to_port` (default `port`).
    pub fn redirect(
        mut self,
        protocol: Protocol,
        port: u16,
        to: impl Into<String>,
        to_port: Option<u16>,
    ) -> Self {
        self.raw.redirects.push(RawRedirect {
            protocol: protocol.as_str().to_string(),
            port: u64::from(port),
            to: to.into(),
            to_port: to_port.map(u64::from),
        });
        self
    }
    /// Keeps `protocol`/`port` for the router itself (JSON `"local_ports": [{"protocol":
    /// "tcp", "port": 9100}]`): connections to it on the internal link are never redirected,
    /// not by a redirect (a redirect of the same port is an error) nor by the fallback. See
    /// [`LocalPort`].
    pub fn local_port(mut self, protocol: Protocol, port: u16) -> Self {
        self.raw.local_ports.push(RawLocalPort {
            protocol: protocol.as_str().to_string(),
            port: u64::from(port),
        });
        self
    }
    /// Sets the fallback destination of one family: everything not redirected goes there.
    pub fn fallback(mut self, ip: impl Into<String>) -> Self {
        self.raw.fallback.push(ip.into());
        self
    }
    /// Keeps `cidr` reachable through the internal link (`ip route add CIDR via VIA dev eth0`).
    pub fn keep_route(mut self, cidr: impl Into<String>, via: Option<&str>) -> Self {
        self.raw.kept_routes.push(RawKeptRoute {
            to: cidr.into(),
            via: via.map(str::to_string),
        });
        self
    }
    /// How many gratuitous ARPs / unsolicited NAs to send per address (default 1, 0 = none).
    pub fn announce(mut self, count: u8) -> Self {
        self.raw.announce = Some(RawAnnounce::Count(u64::from(count)));
        self
    }
    /// `count` announcements per address, `interval` apart (the first right after the claim,
    /// the others without holding up the call that claimed).
    pub fn announce_spaced(mut self, count: u8, interval: Duration) -> Self {
        self.raw.announce = Some(RawAnnounce::Spaced(RawSpaced {
            count: Some(u64::from(count)),
            interval_ms: Some(u64::try_from(interval.as_millis()).unwrap_or(u64::MAX)),
        }));
        self
    }
    /// The MAC address the external macvlan takes on promotion and gives back on demotion,
    /// e.g. the VRRP virtual MAC `00:00:5e:00:01:VRID`: the gateway's ARP entry for the egress
    /// IP stays valid across a failover. JSON `"stable_mac"`.
    pub fn stable_mac(mut self, mac: impl Into<String>) -> Self {
        self.raw.stable_mac = Some(mac.into());
        self
    }
    /// Before a new apply claims the egress addresses, probe for each whether another host
    /// answers for it (`arping -D`, IPv6 duplicate address detection), waiting `timeout` (1 ms
    /// to 10 s; JSON `"probe": {"timeout_ms": N}`, 300 ms when N is left out). An answer
    /// fails the apply with [`Error::Conflict`] on `sources[i]`, naming the other host's MAC,
    /// before anything is changed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use egress_core::{MacvlanMode, RouterSpec};
    ///
    /// let spec = RouterSpec::builder("egress-1")
    ///     .macvlan("eth1", MacvlanMode::Private)
    ///     .source("203.0.113.99/24")
    ///     .gateway("203.0.113.1")
    ///     .probe(Duration::from_millis(300))
    ///     .build()?;
    /// assert_eq!(spec.to_json_value()["probe"]["timeout_ms"], 300);
    /// # Ok::<(), egress_core::Error>(())
    /// ```
    pub fn probe(mut self, timeout: Duration) -> Self {
        self.raw.probe = Some(RawProbe {
            timeout_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
        });
        self
    }

    /// Validates everything that needs no kernel and returns the spec.
    pub fn build(self) -> Result<RouterSpec> {
        self.raw.validate(self.misplaced)
    }

    /// What was set so far, in the JSON form and not validated (a front end shows it as the
    /// user wrote it; [`RouterSpec::from_json_value`] validates it). A list nothing was added
    /// to is left out, like every field not set. A macvlan option set before `macvlan()` is not
    /// in it: [`build`](Self::build) reports that one.
    ///
    /// ```
    /// use egress_core::RouterSpec;
    ///
    /// let builder = RouterSpec::builder("Not_Valid").source("203.0.113.300");
    /// assert_eq!(
    ///     builder.to_json_value(),
    ///     serde_json::json!({"name": "Not_Valid", "sources": ["203.0.113.300"]})
    /// );
    /// assert!(builder.build().is_err());
    /// ```
    pub fn to_json_value(&self) -> serde_json::Value {
        let mut raw =
            serde_json::to_value(&self.raw).expect("a RouterSpecBuilder always serializes");
        if let serde_json::Value::Object(fields) = &mut raw {
            fields.retain(|_, v| !matches!(v, serde_json::Value::Array(items) if items.is_empty()));
        }
        raw
    }

    fn misplace(&mut self, field: &'static str, value: String) {
        self.misplaced.get_or_insert_with(|| {
            InvalidField::new(
                field,
                value,
                "a macvlan option: call macvlan(parent, mode) first",
            )
        });
    }
}

/// `02:00:00:00:00:99`.
pub(crate) fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// At most `n` characters of `s`, for messages.
fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Role> {
        match s {
            "active" => Ok(Role::Active),
            "standby" => Ok(Role::Standby),
            _ => Err(Error::invalid("role", s, "active or standby")),
        }
    }
}
