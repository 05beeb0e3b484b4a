//! # egress-openshift
//!
//! The OpenShift egress router's environment contract, mapped onto a [`RouterSpec`] of
//! [`egress_core`].
//!
//! OpenShift's egress router image is configured with environment variables; this crate reads
//! the same variables, with the same error messages, and produces the spec every other front end
//! produces. The `egress-router` binary is this crate plus `ensure`/`teardown`.
//!
//! | Variable | Meaning |
//! |---|---|
//! | `EGRESS_SOURCE` | the egress IP: `N.N.N.N` or `N.N.N.N/M` (bare = /32); IPv6 too (bare = /128) |
//! | `EGRESS_GATEWAY` | the external gateway, of the source's family |
//! | `EGRESS_DESTINATION` | one IP, or lines `IP` (fallback, last), `LPORT PROTO IP`, `LPORT PROTO IP RPORT` ([`parse_destination`]) |
//! | `EGRESS_ROUTER_MODE` | [`Mode`]: `legacy` (default), `init`, `unit-test`, `http-proxy`, `dns-proxy` |
//! | `EGRESS_ROUTER_DEBUG` | non-empty: log each step |
//!
//! The router runs inside the pod: the spec's namespace is [`Netns::Current`], the external link
//! is the SDN's `macvlan0` (adopted, not created), the internal link is `eth0`. Extensions, all
//! optional:
//!
//! | Variable | Meaning |
//! |---|---|
//! | `EGRESS_ROUTER_NAME` | the router's name (default [`DEFAULT_NAME`]) |
//! | `EGRESS_ROUTER_ROLE` | `active` (default) or `standby`: legacy and init modes bring the router up as a standby (everything but the egress identity), for `egress-router promote` (a keepalived notify command) to claim |
//! | `EGRESS_MACVLAN_PARENT` | create the macvlan on this link instead of adopting `macvlan0` (no SDN) |
//! | `EGRESS_MACVLAN_MODE` | its mode: `private` (default, as the SDN makes it), `bridge`, `vepa`, `passthru` |
//! | `EGRESS_MACVLAN_PARENT_NETNS` | the parent's namespace: an absolute path (`/proc/1/ns/net`) or a name under `/run/netns` (default: the router's) |
//! | `EGRESS_ROUTER_METRICS` | legacy mode: serve `/metrics` and `/healthz` on this `IP:PORT` ([`metrics`]; read by `egress-router`, not by [`from_env`]; its port joins the spec's local ports, [`metrics::keep_local`]) |
//!
//! Where the OpenShift script rejects an input, [`CompatError`]'s `Display` is the script's
//! message, byte for byte. Where the script lets a bad value through (octets over 255, prefix
//! lengths over 32, a gateway of the other family, …) the error is ours and says why:
//! `EGRESS_SOURCE '999.1.1.1' is invalid: octet 999 is over 255`. Two deliberate differences in
//! what is accepted: local ports are unique per protocol (`80 tcp …` beside `80 udp …` is fine),
//! and an `EGRESS_DESTINATION` made only of blank lines and comments is `unspecified` (the
//! script would install a router that forwards nothing).
//!
//! The proxy modes (`http-proxy`, `dns-proxy`) set up the network only: their spec has no
//! redirects and no fallback, and `EGRESS_DESTINATION` is neither required nor read. The
//! router's table then holds the SNAT to the egress IP on the external link (the proxy's own
//! connections already leave with that source; SNAT guarantees it) and the forward filter, which
//! with nothing DNAT-ed drops every forwarded packet: the pod forwards nothing, the proxy
//! originates its connections itself.
//!
//! ```
//! use egress_openshift::{self as openshift, Mode};
//!
//! let config = openshift::from_env([
//!     ("EGRESS_SOURCE", "203.0.113.99/24"),
//!     ("EGRESS_GATEWAY", "203.0.113.1"),
//!     ("EGRESS_DESTINATION", "80 tcp 198.51.100.25 8080\n198.51.100.9"),
//!     ("EGRESS_ROUTER_MODE", "init"),
//! ])?;
//! assert_eq!(config.mode, Mode::Init);
//! assert_eq!(config.spec.external().link_name(), "macvlan0");
//! print!("{}", config.spec.plan()); // what `EGRESS_ROUTER_MODE=unit-test` prints
//!
//! let e = openshift::from_env([("EGRESS_SOURCE", "999.1.1.1")]).unwrap_err();
//! assert_eq!(e.to_string(), "EGRESS_SOURCE '999.1.1.1' is invalid: octet 999 is over 255");
//! # Ok::<(), openshift::CompatError>(())
//! ```

use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    str::FromStr,
};

use egress_core::{Error, MacvlanMode, Netns, Protocol, Redirect, Role, RouterSpec};

pub mod logging;
#[cfg(feature = "router")]
pub mod metrics;
#[cfg(feature = "router")]
pub mod render;

/// The router name when `EGRESS_ROUTER_NAME` is not set.
pub const DEFAULT_NAME: &str = "egress-router";
/// The external link OpenShift's SDN moves into the router pod, adopted by default.
pub const SDN_MACVLAN: &str = "macvlan0";
/// The pod's cluster link (the router's internal link).
pub const INTERNAL_LINK: &str = "eth0";

const SOURCE: &str = "EGRESS_SOURCE";
const GATEWAY: &str = "EGRESS_GATEWAY";
const DESTINATION: &str = "EGRESS_DESTINATION";
const MODE: &str = "EGRESS_ROUTER_MODE";
const DEBUG: &str = "EGRESS_ROUTER_DEBUG";
const NAME: &str = "EGRESS_ROUTER_NAME";
const ROLE: &str = "EGRESS_ROUTER_ROLE";
const PARENT: &str = "EGRESS_MACVLAN_PARENT";
const MACVLAN_MODE: &str = "EGRESS_MACVLAN_MODE";
const PARENT_NETNS: &str = "EGRESS_MACVLAN_PARENT_NETNS";

/// What the router does with its configuration (`EGRESS_ROUTER_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// `legacy` (the default): configure, stay running until SIGTERM/SIGINT, then tear down.
    #[default]
    Legacy,
    /// `init`: configure and exit (an init container). Running it again changes nothing.
    Init,
    /// `unit-test`: print what would be done (the plan) and change nothing.
    UnitTest,
    /// `http-proxy`: network setup only, no redirects (an HTTP proxy in the pod forwards).
    HttpProxy,
    /// `dns-proxy`: network setup only, no redirects (a DNS-name proxy in the pod forwards).
    DnsProxy,
}

impl Mode {
    /// Every mode, in the order `--help` lists them.
    pub const ALL: [Mode; 5] = [
        Mode::Legacy,
        Mode::Init,
        Mode::UnitTest,
        Mode::HttpProxy,
        Mode::DnsProxy,
    ];

    /// The value of `EGRESS_ROUTER_MODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Legacy => "legacy",
            Mode::Init => "init",
            Mode::UnitTest => "unit-test",
            Mode::HttpProxy => "http-proxy",
            Mode::DnsProxy => "dns-proxy",
        }
    }

    /// Whether the mode redirects connections (`EGRESS_DESTINATION` is required and used);
    /// false for the proxy modes.
    pub fn redirects(self) -> bool {
        matches!(self, Mode::Legacy | Mode::Init | Mode::UnitTest)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = CompatError;

    /// The exact (lowercase) values the OpenShift script accepts; an empty value is not a mode
    /// here ([`from_env`] treats an empty or unset variable as `legacy`, as the script does).
    fn from_str(s: &str) -> Result<Self, CompatError> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                CompatError::new(
                    CompatErrorKind::UnrecognizedMode,
                    MODE,
                    s,
                    format!("Unrecognized EGRESS_ROUTER_MODE '{s}'"),
                    None,
                )
            })
    }
}

/// The configuration an OpenShift egress router pod describes in its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The router: current namespace, `macvlan0` adopted (or created, with the extensions),
    /// `eth0` internal, the source, gateway, redirects and fallback.
    pub spec: RouterSpec,
    /// What to do with it.
    pub mode: Mode,
    /// `EGRESS_ROUTER_DEBUG` was non-empty: log each step.
    pub debug: bool,
    /// `EGRESS_ROUTER_ROLE`: the role a router that is not there yet is applied in.
    pub role: Role,
}

/// The parsed `EGRESS_DESTINATION`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Destinations {
    /// The `LPORT PROTO IP [RPORT]` lines, in order (`to_port` = `port` when RPORT is absent).
    pub redirects: Vec<Redirect>,
    /// The single-IP line: everything not redirected goes there. There is at most one (it
    /// must be the last line), of either family; [`from_env`] requires it and every redirect
    /// to be of `EGRESS_SOURCE`'s family.
    pub fallback: Option<IpAddr>,
}

/// Which rule of the contract an input broke; see [`CompatError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CompatErrorKind {
    /// `EGRESS_SOURCE unspecified or invalid`, or a source the script lets through (an octet
    /// over 255, a prefix length over 32/128, an address that is not unicast).
    InvalidSource,
    /// `EGRESS_GATEWAY unspecified or invalid`, or a gateway of the other family, over-255
    /// octets, not unicast, or the source itself.
    InvalidGateway,
    /// `EGRESS_DESTINATION unspecified` (unset, empty, or only blank lines and comments).
    DestinationUnspecified,
    /// `EGRESS_DESTINATION value '<line>' is invalid` (with a reason when the script would
    /// have let the line through).
    InvalidDestination,
    /// `EGRESS_DESTINATION fallback IP must be the last line`.
    FallbackNotLast,
    /// `Invalid port: N, must be in the range 1 to 65535`.
    InvalidPort,
    /// `EGRESS_DESTINATION localport N is already used, must be unique for each destination`
    /// (per protocol).
    DuplicatePort,
    /// `Unrecognized EGRESS_ROUTER_MODE '<x>'`.
    UnrecognizedMode,
    /// One of the extension variables (`EGRESS_ROUTER_NAME`, `EGRESS_MACVLAN_*`) is invalid.
    InvalidExtension,
}

/// Bad input in the environment. `Display` is the message the OpenShift script prints for it
/// (or, for what the script lets through, ours in the same style); [`CompatError::variable`]
/// names the variable.
///
/// Converts into [`Error::InvalidSpec`] with the variable as the field, for callers that handle
/// every front end's errors alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatError {
    kind: CompatErrorKind,
    variable: &'static str,
    value: String,
    message: String,
    reason: Option<String>,
}

impl CompatError {
    fn new(
        kind: CompatErrorKind,
        variable: &'static str,
        value: impl Into<String>,
        message: impl Into<String>,
        reason: Option<String>,
    ) -> Self {
        CompatError {
            kind,
            variable,
            value: value.into(),
            message: message.into(),
            reason,
        }
    }

    /// The rule that was broken.
    pub fn kind(&self) -> CompatErrorKind {
        self.kind
    }

    /// The environment variable at fault (`EGRESS_DESTINATION`).
    pub fn variable(&self) -> &'static str {
        self.variable
    }

    /// The offending value: the variable's value, or for `EGRESS_DESTINATION` the offending
    /// line (empty when the variable is unset or empty).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Why this value is invalid where the script would have let it through (`octet 999 is
    /// over 255`); `None` where the script's own message says it all.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// What would be valid, and why this value is not.
    pub fn expected(&self) -> String {
        let valid = match self.kind {
            CompatErrorKind::InvalidSource => {
                "an address N.N.N.N or N.N.N.N/M (bare = /32), or an IPv6 address with an optional /M"
            }
            CompatErrorKind::InvalidGateway => {
                "an IPv4 (or IPv6) address of EGRESS_SOURCE's family"
            }
            CompatErrorKind::DestinationUnspecified
            | CompatErrorKind::InvalidDestination
            | CompatErrorKind::FallbackNotLast => {
                "one IP, or lines `LPORT PROTO IP`, `LPORT PROTO IP RPORT` (PROTO tcp, udp or sctp) and a last line `IP` (the fallback)"
            }
            CompatErrorKind::InvalidPort => "a port from 1 to 65535",
            CompatErrorKind::DuplicatePort => "a local port used once per protocol",
            CompatErrorKind::UnrecognizedMode => {
                "one of legacy, init, unit-test, http-proxy, dns-proxy"
            }
            CompatErrorKind::InvalidExtension => "see the egress_openshift docs",
        };
        match &self.reason {
            Some(r) => format!("{valid} ({r})"),
            None => valid.to_string(),
        }
    }
}

impl fmt::Display for CompatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CompatError {}

impl From<CompatError> for Error {
    fn from(e: CompatError) -> Self {
        let value = if e.value.is_empty() {
            "(unset or empty)".to_string()
        } else {
            e.value.clone()
        };
        Error::invalid_spec(e.variable, value, e.expected())
    }
}

/// `VAR 'value' is invalid: reason`: our message for what the script lets through.
fn beyond(
    kind: CompatErrorKind,
    variable: &'static str,
    value: &str,
    reason: String,
) -> CompatError {
    CompatError::new(
        kind,
        variable,
        value,
        format!("{variable} '{value}' is invalid: {reason}"),
        Some(reason),
    )
}

/// Reads the contract from environment-like pairs (`std::env::vars()`, a Python dict's items,
/// a pod's `env`): validates everything, in the script's order (source, gateway, mode, then
/// the destinations the mode needs), then the extensions, and maps it all to a [`Config`].
///
/// An unset variable and an empty one are the same (as `${VAR:-}` in the script); when a key
/// appears twice, the last value wins. Variables other than the ones above are ignored.
pub fn from_env<K: AsRef<str>, V: AsRef<str>>(
    vars: impl IntoIterator<Item = (K, V)>,
) -> Result<Config, CompatError> {
    let vars: HashMap<String, String> = vars
        .into_iter()
        .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
        .collect();
    let get = |k: &str| vars.get(k).map(String::as_str).unwrap_or("");

    let (source, prefix) = parse_source(get(SOURCE))?;
    let gateway = parse_gateway(get(GATEWAY), source)?;
    let mode = match get(MODE) {
        "" => Mode::Legacy,
        m => m.parse()?,
    };
    let debug = !get(DEBUG).is_empty();
    let role = match get(ROLE) {
        "" | "active" => Role::Active,
        "standby" => Role::Standby,
        other => {
            return Err(beyond(
                CompatErrorKind::InvalidExtension,
                ROLE,
                other,
                "not one of active, standby".into(),
            ))
        }
    };
    let destinations = if mode.redirects() {
        let entries = parse_lines(get(DESTINATION))?;
        for (line, ip) in entries.iter().map(|(l, e)| (l, e.to())) {
            destination_fits(line, ip, source)?;
        }
        collect(entries)
    } else {
        Destinations::default()
    };

    let name = match get(NAME) {
        "" => DEFAULT_NAME,
        n => n,
    };
    let mut b = RouterSpec::builder(name)
        .internal(INTERNAL_LINK)
        .source(format!("{source}/{prefix}"))
        .gateway(gateway.to_string());
    b = match get(PARENT) {
        "" => {
            for extra in [MACVLAN_MODE, PARENT_NETNS] {
                if !get(extra).is_empty() {
                    return Err(beyond(
                        CompatErrorKind::InvalidExtension,
                        extra,
                        get(extra),
                        format!("it needs {PARENT} (the link to create the macvlan on)"),
                    ));
                }
            }
            b.adopt(SDN_MACVLAN)
        }
        parent => {
            let mode = match get(MACVLAN_MODE) {
                "" | "private" => MacvlanMode::Private,
                "bridge" => MacvlanMode::Bridge,
                "vepa" => MacvlanMode::Vepa,
                "passthru" => MacvlanMode::Passthru,
                other => {
                    return Err(beyond(
                        CompatErrorKind::InvalidExtension,
                        MACVLAN_MODE,
                        other,
                        "not one of private, bridge, vepa, passthru".into(),
                    ))
                }
            };
            let parent_netns = match get(PARENT_NETNS) {
                "" => Netns::Current,
                p if Path::new(p).is_absolute() => Netns::Path(p.into()),
                n => Netns::Name(n.into()),
            };
            b.macvlan(parent, mode)
                .parent_netns(parent_netns)
                .link_name(SDN_MACVLAN)
        }
    };
    for r in &destinations.redirects {
        b = b.redirect(r.protocol, r.port, r.to.to_string(), Some(r.to_port));
    }
    if let Some(f) = destinations.fallback {
        b = b.fallback(f.to_string());
    }
    let spec = b.build().map_err(|e| from_spec_error(e, &vars))?;
    Ok(Config {
        spec,
        mode,
        debug,
        role,
    })
}

/// A spec error the checks above did not anticipate, named by the variable it came from.
fn from_spec_error(e: Error, vars: &HashMap<String, String>) -> CompatError {
    let (field, value, expected) = match e {
        Error::InvalidSpec {
            field,
            value,
            expected,
            ..
        } => (field, value, expected),
        other => (String::new(), String::new(), other.to_string()),
    };
    let (kind, variable) = if field == "name" {
        (CompatErrorKind::InvalidExtension, NAME)
    } else if field.starts_with("external.macvlan.parent_netns") {
        (CompatErrorKind::InvalidExtension, PARENT_NETNS)
    } else if field.starts_with("external.macvlan") {
        (CompatErrorKind::InvalidExtension, PARENT)
    } else if field.starts_with("sources") {
        (CompatErrorKind::InvalidSource, SOURCE)
    } else if field.starts_with("gateways") {
        (CompatErrorKind::InvalidGateway, GATEWAY)
    } else if field.starts_with("redirects") || field.starts_with("fallback") {
        (CompatErrorKind::InvalidDestination, DESTINATION)
    } else {
        (CompatErrorKind::InvalidExtension, "EGRESS_*")
    };
    // Name the variable's own value where there is one (the spec error's value is a field's).
    let value = vars
        .get(variable)
        .filter(|v| !v.is_empty() && variable != DESTINATION)
        .cloned()
        .unwrap_or(value);
    beyond(kind, variable, &value, expected)
}

/// Parses the `EGRESS_DESTINATION` syntax: lines read one by one, each trimmed; blank lines
/// and lines starting with `#` are skipped; fields are separated by any run of spaces or tabs.
///
/// - `IP`: the fallback, everything not redirected goes there (must be the last line);
/// - `LPORT PROTO IP`: connections to LPORT go to IP, same port;
/// - `LPORT PROTO IP RPORT`: connections to LPORT go to IP:RPORT.
///
/// PROTO is `tcp`, `udp` or `sctp` (any case); IPs are IPv4 or IPv6, optionally written with
/// their host prefix (`/32`, `/128`) as OpenShift's EgressRouter resource does. Local ports are
/// unique per protocol. A value with no line to act on is `EGRESS_DESTINATION unspecified`.
///
/// ```
/// use egress_core::Protocol;
/// use egress_openshift::parse_destination;
///
/// let d = parse_destination("# web\n80\ttcp  198.51.100.25 8080\n53 udp 198.51.100.53\n198.51.100.9")?;
/// assert_eq!(d.redirects.len(), 2);
/// assert_eq!((d.redirects[0].protocol, d.redirects[0].to_port), (Protocol::Tcp, 8080));
/// assert_eq!(d.fallback, Some("198.51.100.9".parse().unwrap()));
/// # Ok::<(), egress_openshift::CompatError>(())
/// ```
pub fn parse_destination(text: &str) -> Result<Destinations, CompatError> {
    parse_lines(text).map(collect)
}

/// One line of `EGRESS_DESTINATION`.
enum Entry {
    Redirect(Redirect),
    Fallback(IpAddr),
}

impl Entry {
    fn to(&self) -> IpAddr {
        match self {
            Entry::Redirect(r) => r.to,
            Entry::Fallback(ip) => *ip,
        }
    }
}

fn collect(entries: Vec<(String, Entry)>) -> Destinations {
    let mut d = Destinations::default();
    for (_, e) in entries {
        match e {
            Entry::Redirect(r) => d.redirects.push(r),
            Entry::Fallback(ip) => d.fallback = Some(ip),
        }
    }
    d
}

fn unspecified() -> CompatError {
    CompatError::new(
        CompatErrorKind::DestinationUnspecified,
        DESTINATION,
        "",
        "EGRESS_DESTINATION unspecified",
        None,
    )
}

fn invalid_line(line: &str, reason: Option<String>) -> CompatError {
    let message = match &reason {
        None => format!("EGRESS_DESTINATION value '{line}' is invalid"),
        Some(r) => format!("EGRESS_DESTINATION value '{line}' is invalid: {r}"),
    };
    CompatError::new(
        CompatErrorKind::InvalidDestination,
        DESTINATION,
        line,
        message,
        reason,
    )
}

/// The lines with what each one means, in order, checked as the script checks them (syntax,
/// then the remote and local port, then uniqueness), then what the script does not check.
fn parse_lines(text: &str) -> Result<Vec<(String, Entry)>, CompatError> {
    let mut entries: Vec<(String, Entry)> = Vec::new();
    let mut used = HashSet::new();
    for raw in text.lines() {
        // Like the script's `read`, which drops leading and trailing blanks.
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if matches!(entries.last(), Some((_, Entry::Fallback(_)))) {
            return Err(CompatError::new(
                CompatErrorKind::FallbackNotLast,
                DESTINATION,
                line,
                "EGRESS_DESTINATION fallback IP must be the last line",
                None,
            ));
        }
        let fields: Vec<&str> = line.split([' ', '\t']).filter(|f| !f.is_empty()).collect();
        let entry = match fields[..] {
            [ip] => Entry::Fallback(destination_ip(line, ip)?),
            [lport, proto, ip] => {
                Entry::Redirect(redirect(line, lport, proto, ip, None, &mut used)?)
            }
            [lport, proto, ip, rport] => {
                Entry::Redirect(redirect(line, lport, proto, ip, Some(rport), &mut used)?)
            }
            _ => return Err(invalid_line(line, None)),
        };
        entries.push((line.to_string(), entry));
    }
    if entries.is_empty() {
        return Err(unspecified());
    }
    Ok(entries)
}

fn redirect(
    line: &str,
    lport: &str,
    proto: &str,
    ip: &str,
    rport: Option<&str>,
    used: &mut HashSet<(Protocol, u16)>,
) -> Result<Redirect, CompatError> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let protocol: Option<Protocol> = proto.parse().ok();
    let address = classify_destination(ip);
    let (Some(protocol), true, true, false) = (
        protocol,
        digits(lport),
        rport.is_none_or(digits),
        matches!(address, Ip::Malformed),
    ) else {
        return Err(invalid_line(line, None));
    };
    let to_port = rport.map(port).transpose()?;
    let port = port(lport)?;
    if !used.insert((protocol, port)) {
        return Err(CompatError::new(
            CompatErrorKind::DuplicatePort,
            DESTINATION,
            line,
            format!(
                "EGRESS_DESTINATION localport {lport} is already used, must be unique for each destination"
            ),
            Some(format!("{port}/{protocol} is redirected twice")),
        ));
    }
    let to = checked_destination(line, address)?;
    Ok(Redirect {
        protocol,
        port,
        to,
        to_port: to_port.unwrap_or(port),
    })
}

fn port(text: &str) -> Result<u16, CompatError> {
    text.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
        CompatError::new(
            CompatErrorKind::InvalidPort,
            DESTINATION,
            text,
            format!("Invalid port: {text}, must be in the range 1 to 65535"),
            None,
        )
    })
}

fn destination_ip(line: &str, text: &str) -> Result<IpAddr, CompatError> {
    match classify_destination(text) {
        Ip::Malformed => Err(invalid_line(line, None)),
        ip => checked_destination(line, ip),
    }
}

fn checked_destination(line: &str, ip: Ip) -> Result<IpAddr, CompatError> {
    match ip {
        Ip::Malformed => Err(invalid_line(line, None)),
        Ip::Bad(reason) => Err(invalid_line(line, Some(reason))),
        Ip::Ok(ip) => not_unicast(ip).map_or(Ok(ip), |r| Err(invalid_line(line, Some(r)))),
    }
}

/// The family rule between a destination and the source (checked by [`from_env`] only).
fn destination_fits(line: &str, to: IpAddr, source: IpAddr) -> Result<(), CompatError> {
    if to.is_ipv4() != source.is_ipv4() {
        return Err(invalid_line(
            line,
            Some(format!(
                "an {} destination, but EGRESS_SOURCE is {}",
                family(to),
                family(source)
            )),
        ));
    }
    if to == source {
        return Err(invalid_line(
            line,
            Some("it is EGRESS_SOURCE itself".into()),
        ));
    }
    Ok(())
}

fn parse_source(text: &str) -> Result<(IpAddr, u8), CompatError> {
    let text = text.trim();
    let malformed = || {
        CompatError::new(
            CompatErrorKind::InvalidSource,
            SOURCE,
            text,
            "EGRESS_SOURCE unspecified or invalid",
            None,
        )
    };
    let bad = |reason: String| beyond(CompatErrorKind::InvalidSource, SOURCE, text, reason);
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (a, Some(p)),
        Some(_) => return Err(malformed()),
        None => (text, None),
    };
    let ip = match classify_ip(addr) {
        Ip::Malformed => return Err(malformed()),
        Ip::Bad(reason) => return Err(bad(reason)),
        Ip::Ok(ip) => ip,
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(p) if p <= max => p,
            _ => return Err(bad(format!("prefix length {p} is over {max}"))),
        },
    };
    if let Some(reason) = not_unicast(ip) {
        return Err(bad(reason));
    }
    Ok((ip, prefix))
}

fn parse_gateway(text: &str, source: IpAddr) -> Result<IpAddr, CompatError> {
    let text = text.trim();
    let bad = |reason: String| beyond(CompatErrorKind::InvalidGateway, GATEWAY, text, reason);
    let ip = match classify_ip(text) {
        Ip::Malformed => {
            return Err(CompatError::new(
                CompatErrorKind::InvalidGateway,
                GATEWAY,
                text,
                "EGRESS_GATEWAY unspecified or invalid",
                None,
            ))
        }
        Ip::Bad(reason) => return Err(bad(reason)),
        Ip::Ok(ip) => ip,
    };
    if ip.is_ipv4() != source.is_ipv4() {
        return Err(bad(format!(
            "an {} gateway, but EGRESS_SOURCE is {}",
            family(ip),
            family(source)
        )));
    }
    if let Some(reason) = not_unicast(ip) {
        return Err(bad(reason));
    }
    if ip == source {
        return Err(bad("it is EGRESS_SOURCE itself".into()));
    }
    Ok(ip)
}

/// A destination address: as [`classify_ip`] sees it, optionally followed by the host prefix
/// of its family (`/32`, `/128`), as OpenShift's EgressRouter resource writes its `CIDR` fields
/// (`destinationIP: 198.51.100.25/32`). Any other prefix is not one address.
fn classify_destination(text: &str) -> Ip {
    let Some((addr, prefix)) = text.split_once('/') else {
        return classify_ip(text);
    };
    let ip = match classify_ip(addr) {
        Ip::Ok(ip) if !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()) => ip,
        Ip::Ok(_) => return Ip::Malformed,
        other => return other,
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match prefix.parse::<u32>() {
        Ok(p) if p == max => Ip::Ok(ip),
        Ok(p) if p < max => Ip::Bad(format!(
            "/{p} is a network; a destination is one address (/{max} or no prefix)"
        )),
        _ => Ip::Bad(format!("prefix length {prefix} is over {max}")),
    }
}

/// An address as the script's `N.N.N.N` pattern (and our IPv6 extension) sees it.
enum Ip {
    Ok(IpAddr),
    /// The script rejects it too: its own message applies.
    Malformed,
    /// The script's pattern accepts it, but it is no address: our message, with this reason.
    Bad(String),
}

fn classify_ip(text: &str) -> Ip {
    let parts: Vec<&str> = text.split('.').collect();
    let dotted_quad = parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if dotted_quad {
        let mut octets = [0u8; 4];
        for (o, p) in octets.iter_mut().zip(&parts) {
            if p.len() > 1 && p.starts_with('0') {
                // `ip` would read 010 as octal (8), a human as ten: refuse to guess.
                return Ip::Bad(format!("octet {p} has a leading zero"));
            }
            match p.parse::<u8>() {
                Ok(v) => *o = v,
                Err(_) => return Ip::Bad(format!("octet {p} is over 255")),
            }
        }
        return Ip::Ok(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if text.contains(':') {
        if let Ok(a) = text.parse::<Ipv6Addr>() {
            return Ip::Ok(IpAddr::V6(a));
        }
    }
    Ip::Malformed
}

fn not_unicast(ip: IpAddr) -> Option<String> {
    let bad = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(a) if a.is_broadcast());
    bad.then(|| "not a unicast address (unspecified, loopback, multicast or broadcast)".into())
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

#[cfg(test)]
mod tests {
    use egress_core::{ErrorKind, External};

    use super::*;

    const OK_SOURCE: &str = "203.0.113.99";
    const OK_GATEWAY: &str = "203.0.113.1";

    /// A redirect from literals.
    fn redirect(protocol: Protocol, port: u16, to: &str, to_port: u16) -> Redirect {
        Redirect {
            protocol,
            port,
            to: to.parse().unwrap(),
            to_port,
        }
    }

    fn env<'a>(source: &'a str, gateway: &'a str, dest: &'a str) -> Vec<(&'static str, &'a str)> {
        vec![
            ("EGRESS_SOURCE", source),
            ("EGRESS_GATEWAY", gateway),
            ("EGRESS_DESTINATION", dest),
        ]
    }

    fn config(source: &str, gateway: &str, dest: &str) -> Result<Config, CompatError> {
        from_env(env(source, gateway, dest))
    }

    fn message(source: &str, gateway: &str, dest: &str) -> String {
        config(source, gateway, dest).unwrap_err().to_string()
    }

    fn dest_message(dest: &str) -> String {
        message(OK_SOURCE, OK_GATEWAY, dest)
    }

    // -- every line form ------------------------------------------------------------------

    #[test]
    fn a_single_ip_sends_everything_there() {
        let d = parse_destination("198.51.100.9").unwrap();
        assert!(d.redirects.is_empty());
        assert_eq!(d.fallback, Some("198.51.100.9".parse().unwrap()));
        // A trailing newline (YAML `|` blocks end with one) is fine.
        assert_eq!(parse_destination("198.51.100.9\n").unwrap(), d);
    }

    #[test]
    fn port_proto_ip_keeps_the_port() {
        let d = parse_destination("80 tcp 198.51.100.25").unwrap();
        assert_eq!(
            d.redirects,
            [redirect(Protocol::Tcp, 80, "198.51.100.25", 80)]
        );
        assert_eq!(d.fallback, None);
    }

    #[test]
    fn port_proto_ip_port_maps_the_port() {
        let d = parse_destination("8080 tcp 198.51.100.25 80").unwrap();
        assert_eq!(
            d.redirects,
            [redirect(Protocol::Tcp, 8080, "198.51.100.25", 80)]
        );
    }

    #[test]
    fn udp_sctp_ipv6_and_any_case_are_accepted() {
        let d = parse_destination(
            "53 udp 198.51.100.53\n9 SCTP 198.51.100.7 7\n443 Tcp 2001:db8:3::25 8443",
        )
        .unwrap();
        assert_eq!(
            d.redirects,
            [
                redirect(Protocol::Udp, 53, "198.51.100.53", 53),
                redirect(Protocol::Sctp, 9, "198.51.100.7", 7),
                redirect(Protocol::Tcp, 443, "2001:db8:3::25", 8443),
            ]
        );
        assert_eq!(
            parse_destination("2001:db8:3::9").unwrap().fallback,
            Some("2001:db8:3::9".parse().unwrap())
        );
    }

    #[test]
    fn fields_are_separated_by_any_run_of_blanks() {
        let d = parse_destination("  80 \t tcp\t\t198.51.100.25   8080  \r\n").unwrap();
        assert_eq!(
            d.redirects,
            [redirect(Protocol::Tcp, 80, "198.51.100.25", 8080)]
        );
    }

    #[test]
    fn the_scripts_commented_example_parses() {
        let d = parse_destination(
            "
# My egress-router rules

# Port 80 forwards to 10.4.5.6
80 tcp 10.4.5.6

# Port 8080 forwards to port 80 on 10.7.8.9
8080 tcp 10.7.8.9 80

# Skip this rule for now
# 8443 tcp 10.7.8.9 443

   # Add new rules here (indented)

# Fallback; don't add anything after this
10.1.2.3

# No, seriously, don't add anything here
",
        )
        .unwrap();
        assert_eq!(
            d.redirects,
            [
                redirect(Protocol::Tcp, 80, "10.4.5.6", 80),
                redirect(Protocol::Tcp, 8080, "10.7.8.9", 80),
            ]
        );
        assert_eq!(d.fallback, Some("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn a_local_port_is_unique_per_protocol_only() {
        // The script rejects 80/tcp beside 80/udp; they are different services.
        let d = parse_destination("80 tcp 198.51.100.25\n80 udp 198.51.100.26").unwrap();
        assert_eq!(d.redirects.len(), 2);
        let e = parse_destination("80 tcp 198.51.100.25\n80 TCP 198.51.100.26 8080").unwrap_err();
        assert_eq!(e.kind(), CompatErrorKind::DuplicatePort);
    }

    // -- every message of the script ------------------------------------------------------

    #[test]
    fn source_unspecified_or_invalid() {
        for source in [
            "",
            "not an IP address",
            "not\nan\nIP\naddress",
            "1.2.3",
            "1.2.3.4/",
            "1.2.3.4/x",
            "1.2.3.4/24/2",
            "2001:db8::zz",
        ] {
            let e = config(source, OK_GATEWAY, "10.1.2.3").unwrap_err();
            assert_eq!(
                e.to_string(),
                "EGRESS_SOURCE unspecified or invalid",
                "{source:?}"
            );
            assert_eq!(e.kind(), CompatErrorKind::InvalidSource);
            assert_eq!(e.variable(), "EGRESS_SOURCE");
        }
        // Unset is the same as empty.
        let e = from_env([("EGRESS_GATEWAY", OK_GATEWAY)]).unwrap_err();
        assert_eq!(e.to_string(), "EGRESS_SOURCE unspecified or invalid");
    }

    #[test]
    fn gateway_unspecified_or_invalid() {
        for gateway in ["", "not an IP address", "1.1.1", "1.1.1.1/32"] {
            assert_eq!(
                message("1.2.3.4", gateway, "10.1.2.3"),
                "EGRESS_GATEWAY unspecified or invalid",
                "{gateway:?}"
            );
        }
    }

    #[test]
    fn destination_unspecified() {
        assert_eq!(dest_message(""), "EGRESS_DESTINATION unspecified");
        let unset = from_env([("EGRESS_SOURCE", "1.2.3.4"), ("EGRESS_GATEWAY", "1.1.1.1")]);
        assert_eq!(
            unset.unwrap_err().kind(),
            CompatErrorKind::DestinationUnspecified
        );
        // Beyond the script: nothing but blanks and comments specifies nothing either.
        assert_eq!(dest_message(" \n\t\n"), "EGRESS_DESTINATION unspecified");
        assert_eq!(
            dest_message("# 80 tcp 10.4.5.6\n\n"),
            "EGRESS_DESTINATION unspecified"
        );
    }

    #[test]
    fn destination_value_is_invalid() {
        for (dest, line) in [
            ("not an IP address", "not an IP address"),
            ("80 tcp 10.4.5.6\ninvalid\n8080 tcp 10.7.8.9 80", "invalid"),
            ("80 icmp 10.4.5.6", "80 icmp 10.4.5.6"),
            ("80 tcp", "80 tcp"),
            ("tcp 80 10.4.5.6", "tcp 80 10.4.5.6"),
            ("80 tcp 10.4.5.6 80 extra", "80 tcp 10.4.5.6 80 extra"),
            ("80 tcp 10.4.5.6 # web", "80 tcp 10.4.5.6 # web"),
            ("-80 tcp 10.4.5.6", "-80 tcp 10.4.5.6"),
            ("80 tcp 10.4.5.6 http", "80 tcp 10.4.5.6 http"),
            ("80 tcp example.com", "80 tcp example.com"),
            ("10.1.2", "10.1.2"),
            ("  indented junk  ", "indented junk"),
        ] {
            let e = parse_destination(dest).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("EGRESS_DESTINATION value '{line}' is invalid"),
                "{dest:?}"
            );
            assert_eq!(e.kind(), CompatErrorKind::InvalidDestination);
            assert_eq!(e.value(), line);
        }
    }

    #[test]
    fn a_destination_may_carry_its_host_prefix_and_nothing_wider() {
        let d = parse_destination("80 TCP 198.51.100.25/32 8080\n2001:db8:3::9/128").unwrap();
        assert_eq!(
            d.redirects[0].to,
            "198.51.100.25".parse::<IpAddr>().unwrap()
        );
        assert_eq!(d.fallback, Some("2001:db8:3::9".parse().unwrap()));
        for (dest, reason) in [
            (
                "198.51.100.0/24",
                "/24 is a network; a destination is one address (/32 or no prefix)",
            ),
            (
                "80 tcp 2001:db8:3::/64",
                "/64 is a network; a destination is one address (/128 or no prefix)",
            ),
            ("198.51.100.9/128", "prefix length 128 is over 32"),
        ] {
            let e = parse_destination(dest).unwrap_err();
            assert_eq!(e.kind(), CompatErrorKind::InvalidDestination, "{dest}");
            assert_eq!(e.reason(), Some(reason), "{dest}");
        }
        for dest in [
            "198.51.100.9/",
            "198.51.100.9/x",
            "80 tcp 198.51.100.9/32/32",
        ] {
            let e = parse_destination(dest).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("EGRESS_DESTINATION value '{dest}' is invalid")
            );
            assert_eq!(e.reason(), None);
        }
    }

    #[test]
    fn fallback_must_be_the_last_line() {
        for dest in [
            "10.1.2.3\n80 tcp 10.4.5.6",
            "10.1.2.3\n10.4.5.6",
            "80 tcp 10.4.5.6\n10.1.2.3\n8080 tcp 10.7.8.9 80",
            // Checked before the line itself, as the script does.
            "10.1.2.3\n\n# comment\nnonsense",
        ] {
            let e = parse_destination(dest).unwrap_err();
            assert_eq!(
                e.to_string(),
                "EGRESS_DESTINATION fallback IP must be the last line",
                "{dest:?}"
            );
            assert_eq!(e.kind(), CompatErrorKind::FallbackNotLast);
        }
    }

    #[test]
    fn invalid_port() {
        for (dest, port) in [
            ("800000 tcp 10.4.5.6", "800000"),
            ("0 tcp 10.4.5.6", "0"),
            ("80 tcp 10.4.5.6 0", "0"),
            ("80 tcp 10.4.5.6 65536", "65536"),
            (
                "99999999999999999999999 udp 10.4.5.6",
                "99999999999999999999999",
            ),
            // The remote port is checked first, as in the script.
            ("0 tcp 10.4.5.6 70000", "70000"),
        ] {
            let e = parse_destination(dest).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("Invalid port: {port}, must be in the range 1 to 65535"),
                "{dest:?}"
            );
            assert_eq!(e.kind(), CompatErrorKind::InvalidPort);
        }
        assert_eq!(
            parse_destination("65535 tcp 10.4.5.6 1").unwrap().redirects[0].port,
            65535
        );
    }

    #[test]
    fn localport_already_used() {
        let e = parse_destination("80 tcp 10.4.5.6\n8080 tcp 10.7.8.9 80\n80 tcp 10.7.8.9 900")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "EGRESS_DESTINATION localport 80 is already used, must be unique for each destination"
        );
        assert_eq!(e.kind(), CompatErrorKind::DuplicatePort);
        assert_eq!(e.value(), "80 tcp 10.7.8.9 900");
    }

    #[test]
    fn unrecognized_mode() {
        for mode in ["bogus", "LEGACY", "init ", "unit_test"] {
            let mut vars = env(OK_SOURCE, OK_GATEWAY, "198.51.100.9");
            vars.push(("EGRESS_ROUTER_MODE", mode));
            let e = from_env(vars).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("Unrecognized EGRESS_ROUTER_MODE '{mode}'")
            );
            assert_eq!(e.kind(), CompatErrorKind::UnrecognizedMode);
        }
    }

    #[test]
    fn errors_come_in_the_scripts_order() {
        // Source before gateway before mode before destination.
        assert_eq!(
            from_env([("EGRESS_ROUTER_MODE", "bogus"), ("EGRESS_GATEWAY", "x")])
                .unwrap_err()
                .kind(),
            CompatErrorKind::InvalidSource
        );
        assert_eq!(
            from_env([
                ("EGRESS_SOURCE", OK_SOURCE),
                ("EGRESS_GATEWAY", "x"),
                ("EGRESS_ROUTER_MODE", "bogus")
            ])
            .unwrap_err()
            .kind(),
            CompatErrorKind::InvalidGateway
        );
        assert_eq!(
            from_env([
                ("EGRESS_SOURCE", OK_SOURCE),
                ("EGRESS_GATEWAY", OK_GATEWAY),
                ("EGRESS_ROUTER_MODE", "bogus")
            ])
            .unwrap_err()
            .kind(),
            CompatErrorKind::UnrecognizedMode
        );
        // A port error on a line the script would also reject for its address: port first.
        assert_eq!(
            dest_message("800000 tcp 999.1.1.1"),
            "Invalid port: 800000, must be in the range 1 to 65535"
        );
    }

    // -- what the script gets wrong -------------------------------------------------------

    #[test]
    fn octets_over_255_and_leading_zeros_are_rejected() {
        assert_eq!(
            message("999.1.1.1", OK_GATEWAY, "10.1.2.3"),
            "EGRESS_SOURCE '999.1.1.1' is invalid: octet 999 is over 255"
        );
        assert_eq!(
            message("1.2.3.4", "1.1.1.256", "10.1.2.3"),
            "EGRESS_GATEWAY '1.1.1.256' is invalid: octet 256 is over 255"
        );
        assert_eq!(
            dest_message("80 tcp 10.4.5.600"),
            "EGRESS_DESTINATION value '80 tcp 10.4.5.600' is invalid: octet 600 is over 255"
        );
        assert_eq!(
            dest_message("10.1.2.99999999999"),
            "EGRESS_DESTINATION value '10.1.2.99999999999' is invalid: octet 99999999999 is over 255"
        );
        assert_eq!(
            message("010.1.1.1", OK_GATEWAY, "10.1.2.3"),
            "EGRESS_SOURCE '010.1.1.1' is invalid: octet 010 has a leading zero"
        );
        let e = config("999.1.1.1", OK_GATEWAY, "10.1.2.3").unwrap_err();
        assert_eq!(e.kind(), CompatErrorKind::InvalidSource);
        assert!(
            e.expected().contains("octet 999 is over 255"),
            "{}",
            e.expected()
        );
    }

    #[test]
    fn prefix_lengths_over_the_family_maximum_are_rejected() {
        assert_eq!(
            message("203.0.113.99/33", OK_GATEWAY, "10.1.2.3"),
            "EGRESS_SOURCE '203.0.113.99/33' is invalid: prefix length 33 is over 32"
        );
        assert_eq!(
            message("2001:db8:2::99/129", "2001:db8:2::1", "2001:db8:3::9"),
            "EGRESS_SOURCE '2001:db8:2::99/129' is invalid: prefix length 129 is over 128"
        );
        assert_eq!(
            message("203.0.113.99/99999", OK_GATEWAY, "10.1.2.3"),
            "EGRESS_SOURCE '203.0.113.99/99999' is invalid: prefix length 99999 is over 32"
        );
    }

    #[test]
    fn a_gateway_of_the_other_family_is_rejected() {
        assert_eq!(
            message(OK_SOURCE, "2001:db8:2::1", "10.1.2.3"),
            "EGRESS_GATEWAY '2001:db8:2::1' is invalid: an IPv6 gateway, but EGRESS_SOURCE is IPv4"
        );
        assert_eq!(
            message("2001:db8:2::99/64", OK_GATEWAY, "2001:db8:3::9"),
            "EGRESS_GATEWAY '203.0.113.1' is invalid: an IPv4 gateway, but EGRESS_SOURCE is IPv6"
        );
    }

    #[test]
    fn destinations_of_the_other_family_or_the_source_itself_are_rejected() {
        assert_eq!(
            dest_message("80 tcp 2001:db8:3::25"),
            "EGRESS_DESTINATION value '80 tcp 2001:db8:3::25' is invalid: an IPv6 destination, but EGRESS_SOURCE is IPv4"
        );
        assert_eq!(
            dest_message("80 tcp 198.51.100.25\n2001:db8:3::9"),
            "EGRESS_DESTINATION value '2001:db8:3::9' is invalid: an IPv6 destination, but EGRESS_SOURCE is IPv4"
        );
        assert_eq!(
            dest_message(OK_SOURCE),
            "EGRESS_DESTINATION value '203.0.113.99' is invalid: it is EGRESS_SOURCE itself"
        );
        assert_eq!(
            message(OK_SOURCE, OK_SOURCE, "10.1.2.3"),
            "EGRESS_GATEWAY '203.0.113.99' is invalid: it is EGRESS_SOURCE itself"
        );
    }

    #[test]
    fn addresses_that_are_not_unicast_are_rejected() {
        let not_unicast = "not a unicast address (unspecified, loopback, multicast or broadcast)";
        assert_eq!(
            message("0.0.0.0", OK_GATEWAY, "10.1.2.3"),
            format!("EGRESS_SOURCE '0.0.0.0' is invalid: {not_unicast}")
        );
        assert_eq!(
            message(OK_SOURCE, "255.255.255.255", "10.1.2.3"),
            format!("EGRESS_GATEWAY '255.255.255.255' is invalid: {not_unicast}")
        );
        assert_eq!(
            dest_message("80 tcp 127.0.0.1"),
            format!("EGRESS_DESTINATION value '80 tcp 127.0.0.1' is invalid: {not_unicast}")
        );
        assert_eq!(
            dest_message("224.0.0.1"),
            format!("EGRESS_DESTINATION value '224.0.0.1' is invalid: {not_unicast}")
        );
    }

    // -- the mapping to a RouterSpec ------------------------------------------------------

    #[test]
    fn the_contract_maps_to_an_adopting_spec_in_the_current_namespace() {
        let c = from_env([
            ("EGRESS_SOURCE", "203.0.113.99/24"),
            ("EGRESS_GATEWAY", "203.0.113.1"),
            (
                "EGRESS_DESTINATION",
                "80 tcp 198.51.100.25 8080\n8080 tcp 198.51.100.25\n198.51.100.9\n",
            ),
            ("EGRESS_ROUTER_MODE", "init"),
            ("PATH", "/usr/bin"),
        ])
        .unwrap();
        assert_eq!(c.mode, Mode::Init);
        assert!(!c.debug);
        let s = &c.spec;
        assert_eq!(s.name(), "egress-router");
        assert_eq!(s.netns(), &Netns::Current);
        assert_eq!(s.external(), &External::Adopt("macvlan0".into()));
        assert_eq!(s.internal(), "eth0");
        assert_eq!(s.sources()[0].to_string(), "203.0.113.99/24");
        assert_eq!(s.gateway4(), Some("203.0.113.1".parse().unwrap()));
        assert_eq!(
            s.redirects(),
            [
                redirect(Protocol::Tcp, 80, "198.51.100.25", 8080),
                redirect(Protocol::Tcp, 8080, "198.51.100.25", 8080),
            ]
        );
        assert_eq!(s.fallback4(), Some("198.51.100.9".parse().unwrap()));
        // The plan (what unit-test mode prints) adopts and never creates a link.
        let plan = s.plan().to_string();
        assert!(plan.contains("ip link set dev macvlan0 up"), "{plan}");
        assert!(!plan.contains("ip link add"), "{plan}");
    }

    #[test]
    fn a_bare_source_is_a_host_address_in_both_families() {
        let c = config(OK_SOURCE, OK_GATEWAY, "198.51.100.9").unwrap();
        assert_eq!(c.spec.sources()[0].prefix(), 32);
        let c = config(" 2001:db8:2::99 ", "2001:db8:2::1", "80 tcp 2001:db8:3::25").unwrap();
        assert_eq!(c.spec.sources()[0].to_string(), "2001:db8:2::99/128");
        assert_eq!(c.spec.gateway6(), Some("2001:db8:2::1".parse().unwrap()));
        assert_eq!(c.spec.gateway4(), None);
    }

    #[test]
    fn modes_default_to_legacy_and_debug_is_any_non_empty_value() {
        for (value, mode) in [
            (None, Mode::Legacy),
            (Some(""), Mode::Legacy),
            (Some("legacy"), Mode::Legacy),
            (Some("init"), Mode::Init),
            (Some("unit-test"), Mode::UnitTest),
        ] {
            let mut vars = env(OK_SOURCE, OK_GATEWAY, "198.51.100.9");
            vars.extend(value.map(|v| ("EGRESS_ROUTER_MODE", v)));
            assert_eq!(from_env(vars).unwrap().mode, mode, "{value:?}");
        }
        for (value, debug) in [("", false), ("1", true), ("false", true)] {
            let mut vars = env(OK_SOURCE, OK_GATEWAY, "198.51.100.9");
            vars.push(("EGRESS_ROUTER_DEBUG", value));
            assert_eq!(from_env(vars).unwrap().debug, debug, "{value:?}");
        }
        assert_eq!(
            Mode::ALL.map(|m| m.as_str().parse::<Mode>().unwrap()),
            Mode::ALL
        );
    }

    #[test]
    fn proxy_modes_set_up_the_network_only() {
        for mode in ["http-proxy", "dns-proxy"] {
            // No EGRESS_DESTINATION needed (the OpenShift proxy init containers set none) ...
            let c = from_env([
                ("EGRESS_SOURCE", OK_SOURCE),
                ("EGRESS_GATEWAY", OK_GATEWAY),
                ("EGRESS_ROUTER_MODE", mode),
            ])
            .unwrap();
            assert!(!c.mode.redirects());
            assert!(c.spec.redirects().is_empty());
            assert_eq!(c.spec.fallback4(), None);
            // ... and one that is set is not read.
            let mut vars = env(OK_SOURCE, OK_GATEWAY, "80 tcp 198.51.100.25\nnonsense");
            vars.push(("EGRESS_ROUTER_MODE", mode));
            assert!(from_env(vars).unwrap().spec.redirects().is_empty());
        }
    }

    #[test]
    fn extensions_name_the_router_and_create_the_macvlan() {
        let mut vars = env(OK_SOURCE, OK_GATEWAY, "198.51.100.9");
        vars.extend([
            ("EGRESS_ROUTER_NAME", "pod-7"),
            ("EGRESS_MACVLAN_PARENT", "ens4"),
            ("EGRESS_MACVLAN_MODE", "bridge"),
            ("EGRESS_MACVLAN_PARENT_NETNS", "/proc/1/ns/net"),
        ]);
        let c = from_env(vars.clone()).unwrap();
        assert_eq!(c.spec.name(), "pod-7");
        let External::Macvlan(m) = c.spec.external() else {
            panic!("{:?}", c.spec.external())
        };
        assert_eq!(m.parent(), "ens4");
        assert_eq!(m.mode(), MacvlanMode::Bridge);
        assert_eq!(m.name(), "macvlan0");
        assert_eq!(m.parent_netns(), &Netns::Path("/proc/1/ns/net".into()));

        vars.retain(|(k, _)| !k.starts_with("EGRESS_MACVLAN_MODE"));
        vars.push(("EGRESS_MACVLAN_PARENT_NETNS", "node"));
        let c = from_env(vars).unwrap();
        let External::Macvlan(m) = c.spec.external() else {
            panic!()
        };
        assert_eq!(m.mode(), MacvlanMode::Private);
        // The last value of a repeated key wins.
        assert_eq!(m.parent_netns(), &Netns::Name("node".into()));
    }

    #[test]
    fn the_role_is_active_unless_standby_is_asked_for() {
        let role = |value: Option<&'static str>| {
            let mut vars = env(OK_SOURCE, OK_GATEWAY, "198.51.100.9");
            vars.extend(value.map(|v| ("EGRESS_ROUTER_ROLE", v)));
            from_env(vars)
        };
        assert_eq!(role(None).unwrap().role, Role::Active);
        assert_eq!(role(Some("active")).unwrap().role, Role::Active);
        assert_eq!(role(Some("standby")).unwrap().role, Role::Standby);
        let e = role(Some("backup")).unwrap_err();
        assert_eq!(e.kind(), CompatErrorKind::InvalidExtension);
        assert_eq!(
            e.to_string(),
            "EGRESS_ROUTER_ROLE 'backup' is invalid: not one of active, standby"
        );
    }

    #[test]
    fn bad_extensions_are_named() {
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut vars = env(OK_SOURCE, OK_GATEWAY, "198.51.100.9");
            vars.extend_from_slice(extra);
            from_env(vars).unwrap_err()
        };
        let e = with(&[("EGRESS_ROUTER_NAME", "Egress_1")]);
        assert_eq!(e.kind(), CompatErrorKind::InvalidExtension);
        assert_eq!(
            e.to_string(),
            "EGRESS_ROUTER_NAME 'Egress_1' is invalid: 1 to 32 characters from [a-z0-9-]"
        );
        let e = with(&[("EGRESS_MACVLAN_MODE", "bridge")]);
        assert_eq!(
            e.to_string(),
            "EGRESS_MACVLAN_MODE 'bridge' is invalid: it needs EGRESS_MACVLAN_PARENT (the link to create the macvlan on)"
        );
        let e = with(&[
            ("EGRESS_MACVLAN_PARENT", "ens4"),
            ("EGRESS_MACVLAN_MODE", "source"),
        ]);
        assert_eq!(e.variable(), "EGRESS_MACVLAN_MODE");
        let e = with(&[("EGRESS_MACVLAN_PARENT", "a/b")]);
        assert_eq!(e.variable(), "EGRESS_MACVLAN_PARENT");
        assert!(
            e.to_string()
                .starts_with("EGRESS_MACVLAN_PARENT 'a/b' is invalid: a link name"),
            "{e}"
        );
        let e = with(&[
            ("EGRESS_MACVLAN_PARENT", "ens4"),
            ("EGRESS_MACVLAN_PARENT_NETNS", "run/netns/x"),
        ]);
        assert_eq!(e.variable(), "EGRESS_MACVLAN_PARENT_NETNS");
    }

    #[test]
    fn a_compat_error_is_an_invalid_spec_error_naming_the_variable() {
        let e: Error = parse_destination("80 tcp 10.4.5.6 0").unwrap_err().into();
        assert_eq!(e.kind(), ErrorKind::InvalidSpec);
        match &e {
            Error::InvalidSpec { field, value, .. } => {
                assert_eq!(field, "EGRESS_DESTINATION");
                assert_eq!(value, "0");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            e.to_string(),
            "invalid EGRESS_DESTINATION `0`: a port from 1 to 65535"
        );
        let e: Error = from_env(Vec::<(String, String)>::new()).unwrap_err().into();
        assert_eq!(
            e.to_string(),
            "invalid EGRESS_SOURCE `(unset or empty)`: an address N.N.N.N or N.N.N.N/M (bare = /32), or an IPv6 address with an optional /M"
        );
    }
}
