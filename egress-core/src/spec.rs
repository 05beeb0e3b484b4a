//! What a router should look like: [`RouterSpec`], its builder and its JSON form.
//!
//! Every check that needs no kernel runs in [`RouterSpecBuilder::build`] (and in
//! [`RouterSpec::from_json`], which goes through the same validation), so a spec that exists is a
//! spec that can only fail on kernel state.

use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    str::FromStr,
};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest router name: it is embedded in the nftables table name and the link marker.
pub const MAX_NAME_LEN: usize = 32;
/// Longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// Most announcements (gratuitous ARP / unsolicited NA) per address.
pub const MAX_ANNOUNCE: u8 = 16;

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
    pub(crate) fallback4: Option<Ipv4Addr>,
    pub(crate) fallback6: Option<Ipv6Addr>,
    pub(crate) kept_routes: Vec<KeptRoute>,
    pub(crate) announce: u8,
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
        raw.validate()
    }

    /// Parses the JSON form from an already parsed value.
    pub fn from_json_value(value: serde_json::Value) -> Result<Self> {
        let raw: RawSpec = serde_json::from_value(value)
            .map_err(|e| Error::invalid("spec", "(object)", format!("valid router JSON: {e}")))?;
        raw.validate()
    }

    /// The JSON form, which [`RouterSpec::from_json`] reads back to an equal spec.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.to_raw()).expect("a RouterSpec always serializes")
    }

    /// The JSON form as a value.
    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::to_value(self.to_raw()).expect("a RouterSpec always serializes")
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
        self.announce
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
            netns: match &self.netns {
                Netns::Current => None,
                ns => Some(RawNetns::from(ns)),
            },
            external: Some(match &self.external {
                External::Macvlan(m) => RawExternal::Macvlan(RawMacvlan {
                    parent: m.parent.clone(),
                    parent_netns: match &m.parent_netns {
                        Netns::Current => None,
                        ns => Some(RawNetns::from(ns)),
                    },
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
            announce: Some(self.announce),
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
    misplaced: Option<(&'static str, String)>,
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
        self.raw.netns = match ns {
            Netns::Current => None,
            ns => Some(RawNetns::from(&ns)),
        };
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
                m.parent_netns = match ns {
                    Netns::Current => None,
                    ns => Some(RawNetns::from(&ns)),
                };
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
    /// Adds an egress source, `ADDR` or `ADDR/PREFIX` (`ip addr add … dev macvlan0`).
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
        self.raw.announce = Some(count);
        self
    }

    /// Validates everything that needs no kernel and returns the spec.
    pub fn build(self) -> Result<RouterSpec> {
        if let Some((field, value)) = self.misplaced {
            return Err(Error::invalid(
                field,
                value,
                "a macvlan option: call macvlan(parent, mode) first",
            ));
        }
        self.raw.validate()
    }

    fn misplace(&mut self, field: &'static str, value: String) {
        self.misplaced.get_or_insert((field, value));
    }
}

// ---------------------------------------------------------------------------------------------
// The JSON form. Kept as strings so that validation, not serde, names the field and the value.

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    netns: Option<RawNetns>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    external: Option<RawExternal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    internal: Option<String>,
    #[serde(default)]
    sources: Vec<String>,
    #[serde(default)]
    gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    redirects: Vec<RawRedirect>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    fallback: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    kept_routes: Vec<RawKeptRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    announce: Option<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawNetns {
    Path(PathBuf),
    Name(String),
    Pid(u32),
}

impl From<&Netns> for RawNetns {
    fn from(ns: &Netns) -> Self {
        match ns {
            Netns::Path(p) => RawNetns::Path(p.clone()),
            Netns::Name(n) => RawNetns::Name(n.clone()),
            Netns::Pid(p) => RawNetns::Pid(*p),
            Netns::Current => unreachable!("the current namespace is written as an absent key"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum RawExternal {
    Macvlan(RawMacvlan),
    Adopt(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMacvlan {
    parent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent_netns: Option<RawNetns>,
    #[serde(default)]
    mode: MacvlanMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedirect {
    protocol: String,
    port: u64,
    to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to_port: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeptRoute {
    to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    via: Option<String>,
}

impl RawSpec {
    fn validate(self) -> Result<RouterSpec> {
        validate_name(&self.name)?;
        let netns = validate_netns("netns", self.netns)?;
        let external = match self.external {
            None => {
                return Err(Error::invalid(
                    "external",
                    "(missing)",
                    r#"{"macvlan": {"parent": "<link>", …}} or {"adopt": "<link>"}"#,
                ))
            }
            Some(RawExternal::Adopt(name)) => {
                validate_ifname("external.adopt", &name)?;
                External::Adopt(name)
            }
            Some(RawExternal::Macvlan(m)) => {
                validate_ifname("external.macvlan.parent", &m.parent)?;
                let name = m.name.unwrap_or_else(|| "macvlan0".to_string());
                validate_ifname("external.macvlan.name", &name)?;
                let mac = m
                    .mac
                    .as_deref()
                    .map(|s| parse_mac("external.macvlan.mac", s))
                    .transpose()?;
                External::Macvlan(Macvlan {
                    parent: m.parent,
                    parent_netns: validate_netns("external.macvlan.parent_netns", m.parent_netns)?,
                    mode: m.mode,
                    mtu: m.mtu,
                    mac,
                    name,
                })
            }
        };
        let internal = self.internal.unwrap_or_else(|| "eth0".to_string());
        validate_ifname("internal", &internal)?;
        if internal == external.link_name() {
            return Err(Error::invalid(
                "internal",
                &internal,
                "a link other than the external link",
            ));
        }

        if self.sources.is_empty() {
            return Err(Error::invalid(
                "sources",
                "[]",
                "at least one address, e.g. 203.0.113.99/24",
            ));
        }
        let mut sources = Vec::with_capacity(self.sources.len());
        for (i, s) in self.sources.iter().enumerate() {
            let field = format!("sources[{i}]");
            let net = parse_cidr(&field, s, false)?;
            check_unicast(&field, s, net.ip())?;
            if sources.iter().any(|o: &IpNetwork| o.ip() == net.ip()) {
                return Err(Error::invalid(field, s, "an address not listed before"));
            }
            sources.push(net);
        }
        let has4 = sources.iter().any(IpNetwork::is_ipv4);
        let has6 = sources.iter().any(IpNetwork::is_ipv6);
        let need_family = |field: &str, value: &str, ip: IpAddr| -> Result<()> {
            let (ok, fam) = match ip {
                IpAddr::V4(_) => (has4, "IPv4"),
                IpAddr::V6(_) => (has6, "IPv6"),
            };
            if ok {
                Ok(())
            } else {
                Err(Error::invalid(
                    field,
                    value,
                    format!("an address of a family with a source ({fam} has no source)"),
                ))
            }
        };

        let (mut gateway4, mut gateway6) = (None, None);
        for (i, g) in self.gateways.iter().enumerate() {
            let field = format!("gateways[{i}]");
            let ip = parse_ip(&field, g)?;
            check_unicast(&field, g, ip)?;
            need_family(&field, g, ip)?;
            let dup = match ip {
                IpAddr::V4(a) => gateway4.replace(a).is_some(),
                IpAddr::V6(a) => gateway6.replace(a).is_some(),
            };
            if dup {
                return Err(Error::invalid(field, g, "one gateway per address family"));
            }
        }
        if has4 && gateway4.is_none() {
            return Err(Error::invalid(
                "gateways",
                format!("{:?}", self.gateways),
                "an IPv4 gateway, since an IPv4 source is given",
            ));
        }
        if has6 && gateway6.is_none() {
            return Err(Error::invalid(
                "gateways",
                format!("{:?}", self.gateways),
                "an IPv6 gateway, since an IPv6 source is given",
            ));
        }

        let mut redirects = Vec::with_capacity(self.redirects.len());
        let mut seen = HashSet::new();
        for (i, r) in self.redirects.iter().enumerate() {
            let protocol: Protocol = r.protocol.parse().map_err(|_| {
                Error::invalid(
                    format!("redirects[{i}].protocol"),
                    &r.protocol,
                    "one of tcp, udp, sctp",
                )
            })?;
            let port = parse_port(&format!("redirects[{i}].port"), r.port)?;
            let to_port = match r.to_port {
                Some(p) => parse_port(&format!("redirects[{i}].to_port"), p)?,
                None => port,
            };
            let field = format!("redirects[{i}].to");
            let to = parse_ip(&field, &r.to)?;
            check_unicast(&field, &r.to, to)?;
            need_family(&field, &r.to, to)?;
            if !seen.insert((protocol, port, to.is_ipv4())) {
                return Err(Error::invalid(
                    format!("redirects[{i}].port"),
                    format!("{port}/{protocol}"),
                    "a local port not redirected before for this protocol and family",
                ));
            }
            redirects.push(Redirect {
                protocol,
                port,
                to,
                to_port,
            });
        }

        let (mut fallback4, mut fallback6) = (None, None);
        for (i, f) in self.fallback.iter().enumerate() {
            let field = format!("fallback[{i}]");
            let ip = parse_ip(&field, f)?;
            check_unicast(&field, f, ip)?;
            need_family(&field, f, ip)?;
            let dup = match ip {
                IpAddr::V4(a) => fallback4.replace(a).is_some(),
                IpAddr::V6(a) => fallback6.replace(a).is_some(),
            };
            if dup {
                return Err(Error::invalid(field, f, "one fallback per address family"));
            }
        }

        let mut kept_routes = Vec::with_capacity(self.kept_routes.len());
        for (i, k) in self.kept_routes.iter().enumerate() {
            let field = format!("kept_routes[{i}].to");
            let to = parse_cidr(&field, &k.to, true)?;
            if to.prefix() == 0 {
                return Err(Error::invalid(
                    field,
                    &k.to,
                    "a network other than the default route, which the router owns",
                ));
            }
            let via = match &k.via {
                None => None,
                Some(v) => {
                    let field = format!("kept_routes[{i}].via");
                    let ip = parse_ip(&field, v)?;
                    check_unicast(&field, v, ip)?;
                    if ip.is_ipv4() != to.is_ipv4() {
                        return Err(Error::invalid(
                            field,
                            v,
                            format!("a next hop of the same family as {}", k.to),
                        ));
                    }
                    Some(ip)
                }
            };
            kept_routes.push(KeptRoute { to, via });
        }

        let announce = self.announce.unwrap_or(1);
        if announce > MAX_ANNOUNCE {
            return Err(Error::invalid(
                "announce",
                announce,
                format!("a count from 0 to {MAX_ANNOUNCE}"),
            ));
        }

        if let External::Macvlan(m) = &external {
            if let Some(mtu) = m.mtu {
                let min = if has6 { 1280 } else { 68 };
                if !(min..=65535).contains(&mtu) {
                    return Err(Error::invalid(
                        "external.macvlan.mtu",
                        mtu,
                        format!(
                            "an MTU from {min} to 65535{}",
                            if has6 { " (IPv6 needs 1280)" } else { "" }
                        ),
                    ));
                }
            }
        }

        Ok(RouterSpec {
            name: self.name,
            netns,
            external,
            internal,
            sources,
            gateway4,
            gateway6,
            redirects,
            fallback4,
            fallback6,
            kept_routes,
            announce,
        })
    }
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            name,
            format!("1 to {MAX_NAME_LEN} characters from [a-z0-9-]"),
        ))
    }
}

fn validate_netns(field: &str, ns: Option<RawNetns>) -> Result<Netns> {
    Ok(match ns {
        None => Netns::Current,
        Some(RawNetns::Path(p)) => {
            if !p.is_absolute() || p.as_os_str().as_encoded_bytes().contains(&0) {
                return Err(Error::invalid(
                    format!("{field}.path"),
                    p.display(),
                    "an absolute path such as /run/netns/pod or /proc/PID/ns/net (no NUL)",
                ));
            }
            Netns::Path(p)
        }
        Some(RawNetns::Name(n)) => {
            if n.is_empty() || n.contains(['/', '\0']) || n == "." || n == ".." {
                return Err(Error::invalid(
                    format!("{field}.name"),
                    &n,
                    "a namespace name under /run/netns (no `/` or NUL)",
                ));
            }
            Netns::Name(n)
        }
        Some(RawNetns::Pid(0)) => {
            return Err(Error::invalid(
                format!("{field}.pid"),
                0,
                "a process id above 0",
            ))
        }
        Some(RawNetns::Pid(p)) => Netns::Pid(p),
    })
}

fn validate_ifname(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            name,
            format!("a link name of 1 to {MAX_IFNAME_LEN} bytes without `/`, `:` or spaces"),
        ))
    }
}

fn parse_ip(field: &str, s: &str) -> Result<IpAddr> {
    s.parse()
        .map_err(|_| Error::invalid(field, s, "an IPv4 or IPv6 address"))
}

/// Parses `ADDR` or `ADDR/PREFIX`; a bare address is a host (/32, /128).
fn parse_cidr(field: &str, s: &str, network: bool) -> Result<IpNetwork> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip = parse_ip(field, addr).map_err(|_| {
        Error::invalid(field, s, "an IPv4 or IPv6 address with an optional /prefix")
    })?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix =
        match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                Error::invalid(field, s, format!("a prefix length from 0 to {max}"))
            })?,
        };
    let net = IpNetwork::new(ip, prefix).expect("prefix checked against the family");
    if network && net.network() != ip {
        return Err(Error::invalid(
            field,
            s,
            format!(
                "a network address (host bits zero: {}/{prefix})",
                net.network()
            ),
        ));
    }
    Ok(net)
}

fn check_unicast(field: &str, value: &str, ip: IpAddr) -> Result<()> {
    let bad = ip.is_unspecified() || ip.is_loopback() || ip.is_multicast();
    let bad = bad
        || match ip {
            IpAddr::V4(a) => a.is_broadcast(),
            IpAddr::V6(_) => false,
        };
    if bad {
        return Err(Error::invalid(
            field,
            value,
            "a unicast address (not unspecified, loopback, multicast or broadcast)",
        ));
    }
    Ok(())
}

fn parse_port(field: &str, port: u64) -> Result<u16> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Error::invalid(field, port, "a port from 1 to 65535"))
}

fn parse_mac(field: &str, s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .zip(mac.iter_mut())
            .all(|(p, b)| p.len() == 2 && u8::from_str_radix(p, 16).map(|v| *b = v).is_ok());
    if !ok {
        return Err(Error::invalid(
            field,
            s,
            "a MAC address such as 02:00:00:00:00:99",
        ));
    }
    if mac[0] & 1 == 1 || mac == [0; 6] {
        return Err(Error::invalid(
            field,
            s,
            "a unicast MAC address (first octet even, not all zero)",
        ));
    }
    Ok(mac)
}

pub(crate) fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn base() -> RouterSpecBuilder {
        RouterSpec::builder("egress-1")
            .netns_name("pod")
            .macvlan("eth1", MacvlanMode::Private)
            .source("203.0.113.99/24")
            .gateway("203.0.113.1")
    }

    fn field_of(e: Error) -> String {
        match e {
            Error::InvalidSpec { field, .. } => field,
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn minimal_spec_builds_with_defaults() {
        let spec = base().build().unwrap();
        assert_eq!(spec.internal(), "eth0");
        assert_eq!(spec.external().link_name(), "macvlan0");
        assert_eq!(spec.announce(), 1);
        assert_eq!(spec.sources()[0].prefix(), 24);
        assert_eq!(spec.table_name(), "egress_egress_1");
    }

    #[test]
    fn bare_source_is_a_host_address() {
        let spec = RouterSpec::builder("r")
            .adopt("macvlan0")
            .source("203.0.113.99")
            .source("2001:db8::99")
            .gateway("203.0.113.1")
            .gateway("2001:db8::1")
            .build()
            .unwrap();
        assert_eq!(spec.sources()[0].prefix(), 32);
        assert_eq!(spec.sources()[1].prefix(), 128);
        assert_eq!(spec.snat6().unwrap().to_string(), "2001:db8::99");
    }

    #[test]
    fn bad_names_are_rejected() {
        for name in ["", "Egress", "egress_1", "a b", &"x".repeat(33)] {
            let e = RouterSpec::builder(name)
                .adopt("m")
                .source("203.0.113.9")
                .gateway("203.0.113.1")
                .build()
                .unwrap_err();
            assert_eq!(field_of(e), "name", "{name}");
        }
    }

    #[test]
    fn invalid_spec_display_names_field_value_and_expectation() {
        let e = base().source("203.0.113.300/24").build().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid sources[1] `203.0.113.300/24`: an IPv4 or IPv6 address with an optional /prefix"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    }

    #[test]
    fn every_source_rule() {
        let no_sources = RouterSpec::builder("r").adopt("m").build().unwrap_err();
        assert_eq!(field_of(no_sources), "sources");
        assert_eq!(
            field_of(base().source("203.0.113.9/33").build().unwrap_err()),
            "sources[1]"
        );
        assert_eq!(
            field_of(base().source("2001:db8::1/129").build().unwrap_err()),
            "sources[1]"
        );
        assert_eq!(
            field_of(base().source("224.0.0.1").build().unwrap_err()),
            "sources[1]"
        );
        assert_eq!(
            field_of(base().source("127.0.0.1").build().unwrap_err()),
            "sources[1]"
        );
        assert_eq!(
            field_of(base().source("203.0.113.99/24").build().unwrap_err()),
            "sources[1]"
        );
        assert_eq!(
            field_of(base().source("999.1.1.1").build().unwrap_err()),
            "sources[1]"
        );
    }

    #[test]
    fn gateway_rules() {
        let wrong_family = base().gateway("2001:db8::1").build().unwrap_err();
        assert_eq!(field_of(wrong_family), "gateways[1]");
        let two = base().gateway("203.0.113.2").build().unwrap_err();
        assert_eq!(field_of(two), "gateways[1]");
        let missing = RouterSpec::builder("r")
            .adopt("m")
            .source("203.0.113.9")
            .build()
            .unwrap_err();
        assert_eq!(field_of(missing), "gateways");
        let missing6 = base().source("2001:db8::9/64").build().unwrap_err();
        assert!(missing6.to_string().contains("IPv6 gateway"), "{missing6}");
    }

    #[test]
    fn redirect_rules() {
        let r = |p: u64, proto: &str, to: &str, to_port: Option<u64>| {
            let mut b = base();
            b.raw.redirects.push(RawRedirect {
                protocol: proto.into(),
                port: p,
                to: to.into(),
                to_port,
            });
            b
        };
        assert_eq!(
            field_of(r(0, "tcp", "198.51.100.1", None).build().unwrap_err()),
            "redirects[0].port"
        );
        assert_eq!(
            field_of(r(65536, "tcp", "198.51.100.1", None).build().unwrap_err()),
            "redirects[0].port"
        );
        assert_eq!(
            field_of(r(80, "icmp", "198.51.100.1", None).build().unwrap_err()),
            "redirects[0].protocol"
        );
        assert_eq!(
            field_of(r(80, "tcp", "198.51.100.1", Some(0)).build().unwrap_err()),
            "redirects[0].to_port"
        );
        assert_eq!(
            field_of(r(80, "tcp", "2001:db8::1", None).build().unwrap_err()),
            "redirects[0].to"
        );
        assert_eq!(
            field_of(r(80, "tcp", "nope", None).build().unwrap_err()),
            "redirects[0].to"
        );
        // Unique per protocol: 80/tcp twice is an error, 80/tcp beside 80/udp is fine.
        let dup = r(80, "tcp", "198.51.100.1", None)
            .redirect(Protocol::Tcp, 80, "198.51.100.2", None)
            .build()
            .unwrap_err();
        assert_eq!(field_of(dup), "redirects[1].port");
        let spec = r(80, "tcp", "198.51.100.1", None)
            .redirect(Protocol::Udp, 80, "198.51.100.2", None)
            .build()
            .unwrap();
        assert_eq!(spec.redirects()[0].to_port, 80);
        // Protocols are case-insensitive, as the OpenShift operator renders `UDP`.
        assert!(r(53, "UDP", "198.51.100.1", None).build().is_ok());
    }

    #[test]
    fn fallback_and_kept_route_rules() {
        assert_eq!(
            field_of(
                base()
                    .fallback("198.51.100.9")
                    .fallback("198.51.100.8")
                    .build()
                    .unwrap_err()
            ),
            "fallback[1]"
        );
        assert_eq!(
            field_of(base().fallback("2001:db8::9").build().unwrap_err()),
            "fallback[0]"
        );
        assert_eq!(
            field_of(
                base()
                    .keep_route("10.128.0.1/14", None)
                    .build()
                    .unwrap_err()
            ),
            "kept_routes[0].to"
        );
        assert_eq!(
            field_of(base().keep_route("0.0.0.0/0", None).build().unwrap_err()),
            "kept_routes[0].to"
        );
        assert_eq!(
            field_of(
                base()
                    .keep_route("10.128.0.0/14", Some("2001:db8::1"))
                    .build()
                    .unwrap_err()
            ),
            "kept_routes[0].via"
        );
    }

    #[test]
    fn link_rules() {
        assert_eq!(
            field_of(base().internal("macvlan0").build().unwrap_err()),
            "internal"
        );
        assert_eq!(
            field_of(
                base()
                    .internal("a-very-long-link-name")
                    .build()
                    .unwrap_err()
            ),
            "internal"
        );
        assert_eq!(
            field_of(base().mac("01:00:00:00:00:01").build().unwrap_err()),
            "external.macvlan.mac"
        );
        assert_eq!(
            field_of(base().mac("02:00:00:00:00").build().unwrap_err()),
            "external.macvlan.mac"
        );
        assert_eq!(
            field_of(base().mtu(67).build().unwrap_err()),
            "external.macvlan.mtu"
        );
        let v6 = base()
            .source("2001:db8::9/64")
            .gateway("2001:db8::1")
            .mtu(1000);
        assert_eq!(field_of(v6.build().unwrap_err()), "external.macvlan.mtu");
        assert_eq!(
            field_of(base().announce(17).build().unwrap_err()),
            "announce"
        );
        let no_external = RouterSpec::builder("r")
            .source("203.0.113.9")
            .gateway("203.0.113.1");
        assert_eq!(field_of(no_external.build().unwrap_err()), "external");
        assert_eq!(
            field_of(base().netns_path("relative/ns").build().unwrap_err()),
            "netns.path"
        );
    }

    #[test]
    fn json_round_trip() {
        let json = r#"{
          "name": "egress-1",
          "netns": {"path": "/run/netns/pod"},
          "external": {"macvlan": {"parent": "eth1", "parent_netns": {"pid": 1}, "mode": "private",
                                   "mtu": 1500, "mac": "02:00:00:00:00:99", "name": "macvlan0"}},
          "internal": "eth0",
          "sources": ["203.0.113.99/24", "2001:db8:1::99/64"],
          "gateways": ["203.0.113.1", "2001:db8:1::1"],
          "redirects": [{"protocol": "tcp", "port": 80, "to": "198.51.100.25", "to_port": 8080}],
          "fallback": ["198.51.100.9"],
          "kept_routes": [{"to": "10.128.0.0/14", "via": "10.129.0.1"}],
          "announce": 2
        }"#;
        let spec = RouterSpec::from_json(json).unwrap();
        assert_eq!(spec.netns(), &Netns::Path("/run/netns/pod".into()));
        let External::Macvlan(m) = spec.external() else {
            panic!()
        };
        assert_eq!(m.parent_netns(), &Netns::Pid(1));
        assert_eq!(m.mac(), Some([2, 0, 0, 0, 0, 0x99]));
        assert_eq!(spec.redirects()[0].to_port, 8080);
        assert_eq!(RouterSpec::from_json(&spec.to_json()).unwrap(), spec);
        let built = base().build().unwrap();
        assert_eq!(RouterSpec::from_json(&built.to_json()).unwrap(), built);
    }

    #[test]
    fn json_unknown_key_is_named() {
        let e = RouterSpec::from_json(
            r#"{"name": "r", "external": {"adopt": "m"}, "sources": ["203.0.113.9"],
                "gateways": ["203.0.113.1"], "fallbackIP": "198.51.100.9"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `fallbackIP`"), "{e}");
        assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    }

    #[test]
    fn table_names_map_back_to_router_names() {
        assert_eq!(table_name("egress-1"), "egress_egress_1");
        assert_eq!(
            router_of_table("egress_egress_1").as_deref(),
            Some("egress-1")
        );
        assert_eq!(router_of_table("filter"), None);
    }
}
