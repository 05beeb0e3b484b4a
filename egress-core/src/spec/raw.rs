//! The JSON form of a spec, and the validation every front end goes through.
//!
//! Values are kept as strings (and integers as `u64`) so that validation, not serde, names the
//! field and the value. Validation reports every invalid field at once: each check runs on
//! whatever the fields it depends on parsed to, and a field that did not parse only silences
//! the checks that need it.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::Duration,
};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use super::{
    Announce, External, KeptRoute, LocalPort, Macvlan, MacvlanMode, Netns, Protocol, Redirect,
    RouterSpec, DEFAULT_ANNOUNCE_INTERVAL, MAX_ANNOUNCE, MAX_ANNOUNCE_INTERVAL, MAX_IFNAME_LEN,
    MAX_NAME_LEN,
};
use super::{DEFAULT_PROBE_TIMEOUT, MAX_PROBE_TIMEOUT};
use crate::error::{Error, InvalidField, Result};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<RawNetns>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<RawExternal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal: Option<String>,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirects: Vec<RawRedirect>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_ports: Vec<RawLocalPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_routes: Vec<RawKeptRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce: Option<RawAnnounce>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<RawProbe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_mac: Option<String>,
}

/// `"announce": N` (a count, at the default interval) or
/// `"announce": {"count": N, "interval_ms": M}`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub(super) enum RawAnnounce {
    Count(u64),
    Spaced(RawSpaced),
}

impl<'de> Deserialize<'de> for RawAnnounce {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawAnnounce;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"a count, or {"count": N, "interval_ms": M}"#)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> std::result::Result<RawAnnounce, E> {
                Ok(RawAnnounce::Count(n))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<RawAnnounce, A::Error> {
                RawSpaced::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawAnnounce::Spaced)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpaced {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
}

/// `"probe": {"timeout_ms": N}`: a duplicate address probe before the egress addresses are
/// claimed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum RawNetns {
    Path(PathBuf),
    Name(String),
    Pid(u32),
}

impl RawNetns {
    /// The JSON form of `ns`; `None` for the current namespace (an absent key).
    pub(super) fn of(ns: &Netns) -> Option<RawNetns> {
        match ns {
            Netns::Current => None,
            Netns::Path(p) => Some(RawNetns::Path(p.clone())),
            Netns::Name(n) => Some(RawNetns::Name(n.clone())),
            Netns::Pid(p) => Some(RawNetns::Pid(*p)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum RawExternal {
    Macvlan(RawMacvlan),
    Adopt(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMacvlan {
    pub parent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_netns: Option<RawNetns>,
    #[serde(default)]
    pub mode: MacvlanMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedirect {
    pub protocol: String,
    pub port: u64,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_port: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLocalPort {
    pub protocol: String,
    pub port: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeptRoute {
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// The invalid fields found so far.
#[derive(Default)]
struct Found(Vec<InvalidField>);

impl Found {
    fn add(&mut self, field: impl Into<String>, value: impl std::fmt::Display, expected: &str) {
        self.0.push(InvalidField::new(field, value, expected));
    }

    /// The value of `r`, or `None` after recording its error.
    fn ok<T>(&mut self, r: std::result::Result<T, InvalidField>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }
}

type Checked<T> = std::result::Result<T, InvalidField>;

impl RawSpec {
    /// Validates everything; `misplaced` is a builder option given out of order.
    pub(super) fn validate(self, misplaced: Option<InvalidField>) -> Result<RouterSpec> {
        let mut found = Found::default();
        if let Some(m) = misplaced {
            found.0.push(m);
        }
        found.ok(validate_name(&self.name));
        let netns = found.ok(validate_netns("netns", self.netns));
        let external = validate_external(&mut found, self.external);
        let internal = self.internal.unwrap_or_else(|| "eth0".to_string());
        if found.ok(validate_ifname("internal", &internal)).is_some()
            && external.as_ref().is_some_and(|e| e.link_name() == internal)
        {
            found.add("internal", &internal, "a link other than the external link");
        }

        if self.sources.is_empty() {
            found.add(
                "sources",
                "[]",
                "at least one address, e.g. 203.0.113.99/24",
            );
        }
        let mut sources: Vec<IpNetwork> = Vec::with_capacity(self.sources.len());
        for (i, s) in self.sources.iter().enumerate() {
            let field = format!("sources[{i}]");
            let net = parse_cidr(&field, s, false)
                .and_then(|net| check_unicast(&field, s, net.ip()).map(|()| net))
                .and_then(|net| check_source_prefix(&field, s, net));
            let Some(net) = found.ok(net) else { continue };
            if sources.iter().any(|o| o.ip() == net.ip()) {
                found.add(field, s, "an address not listed before");
            } else {
                sources.push(net);
            }
        }
        // What the other fields are checked against: the families with a source, and the
        // sources' addresses (the egress IP is never a next hop or a destination).
        let has4 = sources.iter().any(IpNetwork::is_ipv4);
        let has6 = sources.iter().any(IpNetwork::is_ipv6);
        // A family whose source did not parse is not held against other fields.
        let unsure = sources.len() < self.sources.len();
        let usable = |ip: IpAddr| -> Checked<()> {
            let (ok, fam) = match ip {
                IpAddr::V4(_) => (has4 || unsure, "IPv4"),
                IpAddr::V6(_) => (has6 || unsure, "IPv6"),
            };
            if !ok {
                return Err(InvalidField::new(
                    "",
                    "",
                    format!("an address of a family with a source ({fam} has no source)"),
                ));
            }
            if sources.iter().any(|s| s.ip() == ip) {
                return Err(InvalidField::new(
                    "",
                    "",
                    "an address other than an egress source (the router's own address)",
                ));
            }
            for s in &sources {
                if let Some(what) = no_host_of(s, ip) {
                    return Err(InvalidField::new(
                        "",
                        "",
                        format!(
                            "an address other than the {what} of the egress subnet {}/{}",
                            s.network(),
                            s.prefix()
                        ),
                    ));
                }
            }
            Ok(())
        };
        let address = |field: &str, s: &str| -> Checked<IpAddr> {
            let ip = parse_ip(field, s)?;
            check_unicast(field, s, ip)?;
            usable(ip).map_err(|e| InvalidField::new(field, s, e.expected))?;
            Ok(ip)
        };

        let (mut gateway4, mut gateway6) = (None::<Ipv4Addr>, None::<Ipv6Addr>);
        for (i, g) in self.gateways.iter().enumerate() {
            let field = format!("gateways[{i}]");
            let Some(ip) = found.ok(address(&field, g)) else {
                continue;
            };
            let dup = match ip {
                IpAddr::V4(a) => gateway4.replace(a).is_some(),
                IpAddr::V6(a) => gateway6.replace(a).is_some(),
            };
            if dup {
                found.add(field, g, "one gateway per address family");
            }
        }
        let gateways_parsed = found.0.iter().all(|e| !e.field.starts_with("gateways["));
        if gateways_parsed && has4 && gateway4.is_none() {
            found.add(
                "gateways",
                format!("{:?}", self.gateways),
                "an IPv4 gateway, since an IPv4 source is given",
            );
        }
        if gateways_parsed && has6 && gateway6.is_none() {
            found.add(
                "gateways",
                format!("{:?}", self.gateways),
                "an IPv6 gateway, since an IPv6 source is given",
            );
        }

        let mut redirects = Vec::with_capacity(self.redirects.len());
        let mut seen = HashSet::new();
        for (i, r) in self.redirects.iter().enumerate() {
            let protocol = found.ok(r.protocol.parse::<Protocol>().map_err(|_| {
                InvalidField::new(
                    format!("redirects[{i}].protocol"),
                    &r.protocol,
                    "one of tcp, udp, sctp",
                )
            }));
            let port = found.ok(parse_port(&format!("redirects[{i}].port"), r.port));
            let to_port = match r.to_port {
                Some(p) => found.ok(parse_port(&format!("redirects[{i}].to_port"), p)),
                None => port,
            };
            let to = found.ok(address(&format!("redirects[{i}].to"), &r.to));
            let (Some(protocol), Some(port), Some(to_port), Some(to)) =
                (protocol, port, to_port, to)
            else {
                continue;
            };
            if !seen.insert((protocol, port, to.is_ipv4())) {
                found.add(
                    format!("redirects[{i}].port"),
                    format!("{port}/{protocol}"),
                    "a local port not redirected before for this protocol and family",
                );
                continue;
            }
            redirects.push(Redirect {
                protocol,
                port,
                to,
                to_port,
            });
        }

        let mut local_ports: Vec<LocalPort> = Vec::with_capacity(self.local_ports.len());
        for (i, l) in self.local_ports.iter().enumerate() {
            let protocol = found.ok(l.protocol.parse::<Protocol>().map_err(|_| {
                InvalidField::new(
                    format!("local_ports[{i}].protocol"),
                    &l.protocol,
                    "one of tcp, udp, sctp",
                )
            }));
            let field = format!("local_ports[{i}].port");
            let port = found.ok(parse_port(&field, l.port));
            let (Some(protocol), Some(port)) = (protocol, port) else {
                continue;
            };
            let local = LocalPort { protocol, port };
            if local_ports.contains(&local) {
                found.add(field, local, "a local port not listed before");
                continue;
            }
            // Checked against the redirects as given, so that a redirect that did not
            // validate for another reason still counts.
            let taken = self.redirects.iter().position(|r| {
                r.port == u64::from(port) && r.protocol.parse::<Protocol>().ok() == Some(protocol)
            });
            if let Some(j) = taken {
                found.add(
                    field,
                    local,
                    &format!(
                        "a port no redirect takes (redirects[{j}] sends {local} to {})",
                        self.redirects[j].to
                    ),
                );
                continue;
            }
            local_ports.push(local);
        }

        let (mut fallback4, mut fallback6) = (None::<Ipv4Addr>, None::<Ipv6Addr>);
        for (i, f) in self.fallback.iter().enumerate() {
            let field = format!("fallback[{i}]");
            let Some(ip) = found.ok(address(&field, f)) else {
                continue;
            };
            let dup = match ip {
                IpAddr::V4(a) => fallback4.replace(a).is_some(),
                IpAddr::V6(a) => fallback6.replace(a).is_some(),
            };
            if dup {
                found.add(field, f, "one fallback per address family");
            }
        }

        let mut kept_routes: Vec<KeptRoute> = Vec::with_capacity(self.kept_routes.len());
        for (i, k) in self.kept_routes.iter().enumerate() {
            let field = format!("kept_routes[{i}].to");
            let to = found.ok(parse_cidr(&field, &k.to, true).and_then(|to| {
                if to.prefix() == 0 {
                    Err(InvalidField::new(
                        &field,
                        &k.to,
                        "a network other than the default route, which the router owns",
                    ))
                } else {
                    Ok(to)
                }
            }));
            let via = match &k.via {
                None => Some(None),
                Some(v) => {
                    let field = format!("kept_routes[{i}].via");
                    let ip = parse_ip(&field, v).and_then(|ip| {
                        check_unicast(&field, v, ip)?;
                        match to {
                            Some(to) if ip.is_ipv4() != to.is_ipv4() => Err(InvalidField::new(
                                &field,
                                v,
                                format!("a next hop of the same family as {}", k.to),
                            )),
                            _ => Ok(Some(ip)),
                        }
                    });
                    found.ok(ip)
                }
            };
            let (Some(to), Some(via)) = (to, via) else {
                continue;
            };
            if kept_routes.iter().any(|o| o.to == to) {
                found.add(
                    field,
                    &k.to,
                    "a network not kept before (one route per network)",
                );
                continue;
            }
            kept_routes.push(KeptRoute { to, via });
        }

        let (count, interval_ms, count_field) = match self.announce {
            None => (1, None, "announce"),
            Some(RawAnnounce::Count(n)) => (n, None, "announce"),
            Some(RawAnnounce::Spaced(s)) => (s.count.unwrap_or(1), s.interval_ms, "announce.count"),
        };
        let count = u8::try_from(count)
            .ok()
            .filter(|n| *n <= MAX_ANNOUNCE)
            .unwrap_or_else(|| {
                found.add(
                    count_field,
                    count,
                    &format!("a count from 0 to {MAX_ANNOUNCE}"),
                );
                0
            });
        let max_interval = MAX_ANNOUNCE_INTERVAL.as_millis() as u64;
        let interval = match interval_ms {
            None => DEFAULT_ANNOUNCE_INTERVAL,
            Some(ms) if (1..=max_interval).contains(&ms) => Duration::from_millis(ms),
            Some(ms) => {
                found.add(
                    "announce.interval_ms",
                    ms,
                    &format!("an interval from 1 to {max_interval} ms"),
                );
                DEFAULT_ANNOUNCE_INTERVAL
            }
        };
        let announce = Announce { count, interval };

        let stable_mac = self.stable_mac.as_deref().and_then(|s| {
            let mac = found.ok(parse_mac("stable_mac", s))?;
            match &external {
                Some(External::Macvlan(m)) if m.mac == Some(mac) => {
                    found.add(
                        "stable_mac",
                        s,
                        "a MAC other than external.macvlan.mac (the standby's own)",
                    );
                    None
                }
                Some(External::Macvlan(_)) => Some(mac),
                Some(External::Adopt(_)) => {
                    found.add(
                        "stable_mac",
                        s,
                        "no stable MAC with an adopted link (only a macvlan the router creates \
                         can take one and give it back)",
                    );
                    None
                }
                None => None,
            }
        });

        let probe = self.probe.and_then(|p| {
            let ms = p
                .timeout_ms
                .unwrap_or(DEFAULT_PROBE_TIMEOUT.as_millis() as u64);
            let max = MAX_PROBE_TIMEOUT.as_millis() as u64;
            match (1..=max).contains(&ms) {
                true => Some(Duration::from_millis(ms)),
                false => {
                    found.add(
                        "probe.timeout_ms",
                        ms,
                        &format!("a timeout from 1 to {max} ms"),
                    );
                    None
                }
            }
        });

        if let Some(External::Macvlan(m)) = &external {
            if let Some(mtu) = m.mtu {
                let min = if has6 { 1280 } else { 68 };
                if !(min..=65535).contains(&mtu) {
                    found.add(
                        "external.macvlan.mtu",
                        mtu,
                        &format!(
                            "an MTU from {min} to 65535{}",
                            if has6 { " (IPv6 needs 1280)" } else { "" }
                        ),
                    );
                }
            }
        }

        if let Some(e) = Error::from_invalid(found.0) {
            return Err(e);
        }
        let (Some(netns), Some(external)) = (netns, external) else {
            unreachable!("a field that did not validate was recorded");
        };
        Ok(RouterSpec {
            name: self.name,
            netns,
            external,
            internal,
            sources,
            gateway4,
            gateway6,
            redirects,
            local_ports,
            fallback4,
            fallback6,
            kept_routes,
            announce,
            probe,
            stable_mac,
        })
    }
}

fn validate_external(found: &mut Found, external: Option<RawExternal>) -> Option<External> {
    match external {
        None => {
            found.add(
                "external",
                "(missing)",
                r#"{"macvlan": {"parent": "<link>", …}} or {"adopt": "<link>"}"#,
            );
            None
        }
        Some(RawExternal::Adopt(name)) => found
            .ok(validate_ifname("external.adopt", &name))
            .map(|()| External::Adopt(name)),
        Some(RawExternal::Macvlan(m)) => {
            let parent = found.ok(validate_ifname("external.macvlan.parent", &m.parent));
            let name = m.name.unwrap_or_else(|| "macvlan0".to_string());
            let named = found.ok(validate_ifname("external.macvlan.name", &name));
            let mac = m
                .mac
                .as_deref()
                .map(|s| found.ok(parse_mac("external.macvlan.mac", s)));
            let parent_netns = found.ok(validate_netns(
                "external.macvlan.parent_netns",
                m.parent_netns,
            ));
            let (Some(()), Some(()), Some(parent_netns)) = (parent, named, parent_netns) else {
                return None;
            };
            Some(External::Macvlan(Macvlan {
                parent: m.parent,
                parent_netns,
                mode: m.mode,
                mtu: m.mtu,
                mac: match mac {
                    Some(Some(mac)) => Some(mac),
                    Some(None) => return None,
                    None => None,
                },
                name,
            }))
        }
    }
}

/// A router name: `[a-z0-9-]`, 1 to [`MAX_NAME_LEN`] characters.
pub(crate) fn validate_name(name: &str) -> Checked<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new(
            "name",
            name,
            format!("1 to {MAX_NAME_LEN} characters from [a-z0-9-]"),
        ))
    }
}

/// A namespace as a front end names it.
fn validate_netns(field: &str, ns: Option<RawNetns>) -> Checked<Netns> {
    Ok(match ns {
        None => Netns::Current,
        Some(RawNetns::Path(p)) => {
            if !p.is_absolute() || p.as_os_str().as_encoded_bytes().contains(&0) {
                return Err(InvalidField::new(
                    format!("{field}.path"),
                    p.display(),
                    "an absolute path such as /run/netns/pod or /proc/PID/ns/net (no NUL)",
                ));
            }
            Netns::Path(p)
        }
        Some(RawNetns::Name(n)) => {
            if n.is_empty() || n.contains(['/', '\0']) || n == "." || n == ".." {
                return Err(InvalidField::new(
                    format!("{field}.name"),
                    &n,
                    "a namespace name under /run/netns (no `/` or NUL, not `.` or `..`)",
                ));
            }
            Netns::Name(n)
        }
        Some(RawNetns::Pid(0)) => {
            return Err(InvalidField::new(
                format!("{field}.pid"),
                0,
                "a process id above 0",
            ))
        }
        Some(RawNetns::Pid(p)) => Netns::Pid(p),
    })
}

/// A link name the kernel takes as it is: 1 to 15 bytes, no `/`, `:`, white space or control
/// characters (the kernel's `dev_valid_name`), and no `%` (the kernel reads `name%d` as a
/// template and picks a name of its own).
fn validate_ifname(field: &str, name: &str) -> Checked<()> {
    let ok =
        super::valid_ifname(name) && !name.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(InvalidField::new(
            field,
            name,
            format!("a link name of 1 to {MAX_IFNAME_LEN} bytes without `/`, `:`, `%` or spaces"),
        ))
    }
}

fn parse_ip(field: &str, s: &str) -> Checked<IpAddr> {
    s.parse()
        .map_err(|_| InvalidField::new(field, s, "an IPv4 or IPv6 address"))
}

/// Parses `ADDR` or `ADDR/PREFIX`; a bare address is a host (/32, /128).
fn parse_cidr(field: &str, s: &str, network: bool) -> Checked<IpNetwork> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip = parse_ip(field, addr).map_err(|_| {
        InvalidField::new(field, s, "an IPv4 or IPv6 address with an optional /prefix")
    })?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
            InvalidField::new(field, s, format!("a prefix length from 0 to {max}"))
        })?,
    };
    let net = IpNetwork::new(ip, prefix).expect("prefix checked against the family");
    if network && net.network() != ip {
        return Err(InvalidField::new(
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

fn check_unicast(field: &str, value: &str, ip: IpAddr) -> Checked<()> {
    let bad = ip.is_unspecified() || ip.is_loopback() || ip.is_multicast();
    let bad = bad
        || match ip {
            IpAddr::V4(a) => a.is_broadcast(),
            IpAddr::V6(_) => false,
        };
    if bad {
        return Err(InvalidField::new(
            field,
            value,
            "a unicast address (not unspecified, loopback, multicast or broadcast)",
        ));
    }
    Ok(())
}

/// An egress source's prefix: not /0, which would put every address on the external link
/// (the kernel's prefix route for it would be a second default route). /32 and /128 are
/// valid: OpenShift's script added the egress IP as /32, and the router reaches its gateway
/// through the host route it adds on the link.
fn check_source_prefix(field: &str, value: &str, net: IpNetwork) -> Checked<IpNetwork> {
    if net.prefix() == 0 {
        let max = if net.is_ipv4() { 32 } else { 128 };
        return Err(InvalidField::new(
            field,
            value,
            format!(
                "a prefix length from 1 to {max} (/0 would put every address on the external \
                 link)"
            ),
        ));
    }
    Ok(net)
}

/// What `ip` is to the subnet of egress source `source` when it is no host of it: the
/// network address (IPv4; in IPv6 the subnet-router anycast address, which the router itself
/// answers once it forwards) or the broadcast address (IPv4). Subnets of one or two
/// addresses (/31, /32: RFC 3021; /127, /128: RFC 6164) have neither.
fn no_host_of(source: &IpNetwork, ip: IpAddr) -> Option<&'static str> {
    let bits = if source.is_ipv4() { 32 } else { 128 };
    if bits - source.prefix() < 2 {
        return None;
    }
    match (source, ip) {
        (_, ip) if ip == source.network() => Some("network address"),
        (IpNetwork::V4(net), IpAddr::V4(a)) if a == net.broadcast() => Some("broadcast address"),
        _ => None,
    }
}

fn parse_port(field: &str, port: u64) -> Checked<u16> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| InvalidField::new(field, port, "a port from 1 to 65535"))
}

fn parse_mac(field: &str, s: &str) -> Checked<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .zip(mac.iter_mut())
            .all(|(p, b)| p.len() == 2 && u8::from_str_radix(p, 16).map(|v| *b = v).is_ok());
    if !ok {
        return Err(InvalidField::new(
            field,
            s,
            "a MAC address such as 02:00:00:00:00:99",
        ));
    }
    if mac[0] & 1 == 1 || mac == [0; 6] {
        return Err(InvalidField::new(
            field,
            s,
            "a unicast MAC address (first octet even, not all zero)",
        ));
    }
    Ok(mac)
}
