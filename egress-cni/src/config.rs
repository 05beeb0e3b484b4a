//! The network configuration on stdin: parsed and checked, every key named in its errors.

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde_json::{json, Map, Value};

use egress_core::{MacvlanMode, Protocol, Redirect, Result, Role};
use egress_openshift::{parse_destination, CompatError, CompatErrorKind};

use crate::{code, error::clip, CniError, Command, DEFAULT_INTERNAL_INTERFACE, SUPPORTED_VERSIONS};

/// A CNI specification version this plugin speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    /// 0.4.0: what OpenShift renders; its `ips` carry a `version` field.
    V0_4_0,
    /// 1.0.0.
    V1_0_0,
    /// 1.1.0: STATUS, GC; interfaces carry their `mtu`.
    V1_1_0,
}

impl CniVersion {
    /// Every supported version, oldest first.
    pub const ALL: [CniVersion; 3] = [CniVersion::V0_4_0, CniVersion::V1_0_0, CniVersion::V1_1_0];
    /// The newest supported version (used for replies when the configuration names none).
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// The version string.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_4_0 => SUPPORTED_VERSIONS[0],
            CniVersion::V1_0_0 => SUPPORTED_VERSIONS[1],
            CniVersion::V1_1_0 => SUPPORTED_VERSIONS[2],
        }
    }

    /// The version named `s`, if supported.
    pub fn parse(s: &str) -> Option<CniVersion> {
        CniVersion::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `log_level`: what the plugin logs (to stderr, and to `log_file` when given). The levels of
/// OpenShift's plugin, any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum LogLevel {
    /// Nothing but a panic.
    Panic,
    /// Failures (the default).
    #[default]
    Error,
    /// Each command and what it did.
    Verbose,
    /// Also the spec, the plan and each difference found.
    Debug,
}

impl LogLevel {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Panic => "panic",
            LogLevel::Error => "error",
            LogLevel::Verbose => "verbose",
            LogLevel::Debug => "debug",
        }
    }
}

impl FromStr for LogLevel {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Self, ()> {
        [
            LogLevel::Panic,
            LogLevel::Error,
            LogLevel::Verbose,
            LogLevel::Debug,
        ]
        .into_iter()
        .find(|l| l.as_str().eq_ignore_ascii_case(s))
        .ok_or(())
    }
}

/// One attachment a GC keeps (`cni.dev/valid-attachments`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attachment {
    /// Its container id.
    pub container_id: String,
    /// Its interface name.
    pub ifname: String,
}

/// Where a redirect came from, to name the key a spec error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `ip.destinations[i]`: the whole line.
    Line(String),
    /// `redirectRules[i]`: one key per field.
    Rule(usize),
}

/// A validated network configuration (see the module docs for the keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    pub(crate) cni_version: CniVersion,
    pub(crate) name: String,
    pub(crate) plugin_type: String,
    pub(crate) master: Option<String>,
    pub(crate) mode: MacvlanMode,
    pub(crate) mtu: Option<u32>,
    pub(crate) internal: String,
    pub(crate) addresses: Vec<String>,
    /// Each gateway with the key it came from.
    pub(crate) gateways: Vec<(String, String)>,
    pub(crate) redirects: Vec<(Redirect, Origin)>,
    /// Each fallback with the key it came from.
    pub(crate) fallbacks: Vec<(IpAddr, String)>,
    pub(crate) keep_routes: Vec<(String, Option<String>)>,
    pub(crate) log_file: Option<PathBuf>,
    pub(crate) log_level: LogLevel,
    pub(crate) prev_result: Option<Value>,
    pub(crate) valid_attachments: Option<Vec<Attachment>>,
    /// `role`: the role a new router is applied in (standby for an HA pair).
    pub(crate) role: Role,
    /// `routerName`: the router's name instead of the one derived from the attachment.
    pub(crate) router_name: Option<String>,
    /// `stableMac`: the MAC the macvlan takes on promotion.
    pub(crate) stable_mac: Option<String>,
}

impl NetConf {
    /// The version of the replies.
    pub fn cni_version(&self) -> CniVersion {
        self.cni_version
    }
    /// The network's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The plugin's name as the runtime knows it (`type`).
    pub fn plugin_type(&self) -> &str {
        &self.plugin_type
    }
    /// `interfaceArgs.master`, when given.
    pub fn master(&self) -> Option<&str> {
        self.master.as_deref()
    }
    /// Whether the first address is IPv6: the family whose default route names the master
    /// when `interfaceArgs.master` is not given.
    pub fn first_address_is_ipv6(&self) -> bool {
        self.addresses[0].contains(':')
    }
    /// `role`: the role an ADD applies a new router in (`active` unless `standby` is asked
    /// for: an HA pair's keepalived then runs `egress-router promote`).
    pub fn role(&self) -> Role {
        self.role
    }
    /// `routerName`, when given: the router's name in the pod, which keepalived's notify
    /// commands name (else [`router_name`](crate::router_name) of the attachment).
    pub fn router_name(&self) -> Option<&str> {
        self.router_name.as_deref()
    }
    /// `log_file`.
    pub fn log_file(&self) -> Option<&Path> {
        self.log_file.as_deref()
    }
    /// `log_level`.
    pub fn log_level(&self) -> LogLevel {
        self.log_level
    }
    /// `prevResult`, when the runtime passed one.
    pub fn prev_result(&self) -> Option<&Value> {
        self.prev_result.as_ref()
    }
    /// `cni.dev/valid-attachments` (or its older spelling `cni.dev/attachments`), when given.
    pub fn valid_attachments(&self) -> Option<&[Attachment]> {
        self.valid_attachments.as_deref()
    }

    /// `prevResult`, which CHECK needs (code 7 without it: the spec makes the runtime pass it).
    pub fn required_prev_result(&self) -> Result<&Value, CniError> {
        self.prev_result.as_ref().ok_or_else(|| {
            CniError::missing(
                "prevResult",
                "CHECK compares the pod with the result of its ADD, which the runtime must pass",
            )
        })
    }

    /// Code 1 unless the configuration's version has `command` (STATUS and GC came with 1.1.0).
    pub fn require_version(&self, command: Command) -> Result<(), CniError> {
        let since = match command {
            Command::Status | Command::Gc => CniVersion::V1_1_0,
            _ => CniVersion::V0_4_0,
        };
        if self.cni_version >= since {
            return Ok(());
        }
        Err(CniError {
            code: code::INCOMPATIBLE_VERSION,
            msg: format!(
                "incompatible CNI version: {command} needs cniVersion {since} or later, the \
                 configuration has {}",
                self.cni_version
            ),
            details: String::new(),
            field: Some("cniVersion".into()),
        })
    }
}

/// Keys the runtime adds, or that belong to the network configuration around the plugin's:
/// accepted, and not used beyond what the commands say.
const RUNTIME_KEYS: [&str; 13] = [
    "cniVersion",
    "cniVersions",
    "name",
    "type",
    "args",
    "runtimeConfig",
    "capabilities",
    "prevResult",
    "disableCheck",
    "disableGC",
    "loadOnlyInlinedPlugins",
    "cni.dev/valid-attachments",
    "cni.dev/attachments",
];

/// This plugin's keys.
const PLUGIN_KEYS: [&str; 12] = [
    "interfaceType",
    "interfaceArgs",
    "ip",
    "fallbackIP",
    "redirectRules",
    "internalInterface",
    "keepRoutes",
    "log_file",
    "log_level",
    "role",
    "routerName",
    "stableMac",
];

/// Well-known keys of features this plugin does not have, and why.
const UNSUPPORTED_KEYS: [(&str, &str); 5] = [
    ("ipam", "egress-cni takes its addresses from ip.addresses, not from an IPAM plugin"),
    ("dns", "egress-cni does not configure DNS"),
    ("ipMasq", "the router always SNATs to its egress address; there is nothing to masquerade on the node"),
    ("podIP", "per-pod addresses are not supported: one network attachment per router, its addresses in ip.addresses"),
    ("ipConfig", "addresses from a ConfigMap are not supported: give them in ip.addresses"),
];

/// Parses and validates a network configuration (the plugin's stdin). Checks, in order: a
/// JSON object (code 6), a supported `cniVersion` (1), no unknown or unsupported key (2),
/// every value (7). What needs the kernel or the attachment is checked by
/// [`NetConf::router_spec`] and the core.
pub fn parse_config(stdin: &[u8]) -> Result<NetConf, CniError> {
    let value: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODING_FAILURE,
            format!("the network configuration on stdin is not valid JSON: {e}"),
            "",
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(CniError::new(
            code::DECODING_FAILURE,
            format!(
                "the network configuration on stdin is not a JSON object: {}",
                clip(&value.to_string())
            ),
            "",
        ));
    };
    let cni_version = config_version(&obj)?;
    for (key, value) in &obj {
        if let Some((_, why)) = UNSUPPORTED_KEYS.iter().find(|(k, _)| k == key) {
            return Err(CniError::unsupported(key, value, *why));
        }
        if !RUNTIME_KEYS.contains(&key.as_str()) && !PLUGIN_KEYS.contains(&key.as_str()) {
            return Err(unknown_key(key, value, &[&RUNTIME_KEYS, &PLUGIN_KEYS]));
        }
    }

    let name = required_string(&obj, "name", "the network's name")?;
    let plugin_type = required_string(&obj, "type", "the plugin's name (egress-cni)")?;

    match obj.get("interfaceType") {
        None => {}
        Some(v @ Value::String(s)) if !s.is_empty() && !s.eq_ignore_ascii_case("macvlan") => {
            return Err(CniError::unsupported(
                "interfaceType",
                v,
                "egress-cni creates a macvlan (interfaceType macvlan); ipvlan and cloud \
                 provider types are not supported",
            ))
        }
        Some(Value::String(_)) => {}
        Some(v) => return Err(CniError::config("interfaceType", v, "a string: macvlan")),
    }
    let (master, mode, mtu) = interface_args(obj.get("interfaceArgs"))?;

    let ip = match obj.get("ip") {
        Some(Value::Object(ip)) => ip,
        Some(v) => {
            return Err(CniError::config(
                "ip",
                v,
                r#"an object {"addresses": […], "gateway": …, "destinations": […]}"#,
            ))
        }
        None => return Err(CniError::missing("ip", "the egress addresses and gateway")),
    };
    if let Some((key, value)) = ip
        .iter()
        .find(|(k, _)| !["addresses", "gateway", "destinations"].contains(&k.as_str()))
    {
        return Err(unknown_key(
            &format!("ip.{key}"),
            value,
            &[&["addresses", "gateway", "destinations"]],
        ));
    }
    let addresses = match ip.get("addresses") {
        None => {
            return Err(CniError::missing(
                "ip.addresses",
                "the egress addresses, e.g. [\"203.0.113.99/24\"]",
            ))
        }
        Some(v) => strings(v, "ip.addresses")?,
    };
    if addresses.is_empty() {
        return Err(CniError::config(
            "ip.addresses",
            &json!([]),
            "at least one address, e.g. 203.0.113.99/24",
        ));
    }
    let gateways = match ip.get("gateway") {
        None => Vec::new(),
        Some(Value::String(s)) if s.is_empty() => Vec::new(),
        Some(Value::String(s)) => vec![(s.clone(), "ip.gateway".to_string())],
        Some(v @ Value::Array(_)) => strings(v, "ip.gateway")?
            .into_iter()
            .enumerate()
            .map(|(i, g)| (g, format!("ip.gateway[{i}]")))
            .collect(),
        Some(v) => {
            return Err(CniError::config(
                "ip.gateway",
                v,
                "an address, or a list with one per address family",
            ))
        }
    };

    let mut redirects = Vec::new();
    let mut fallbacks: Vec<(IpAddr, String)> = Vec::new();
    if let Some(v) = ip.get("destinations") {
        let lines = strings(v, "ip.destinations")?;
        for (i, line) in lines.iter().enumerate() {
            let field = format!("ip.destinations[{i}]");
            if let Some((_, before)) = fallbacks.last() {
                return Err(CniError::invalid(
                    code::INVALID_CONFIG,
                    before,
                    &lines[i - 1],
                    "a fallback (a bare address) must be the last destination",
                ));
            }
            match destination_line(&field, line)? {
                Line::Redirect(r) => redirects.push((r, Origin::Line(field))),
                Line::Fallback(ip) => fallbacks.push((ip, field)),
            }
        }
    }
    if let Some(v) = obj.get("redirectRules") {
        let Value::Array(rules) = v else {
            return Err(CniError::config(
                "redirectRules",
                v,
                r#"a list of {"destinationIP", "port", "protocol", "targetPort"}"#,
            ));
        };
        for (i, rule) in rules.iter().enumerate() {
            redirects.push((redirect_rule(i, rule)?, Origin::Rule(i)));
        }
    }
    match obj.get("fallbackIP") {
        None => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => {
            fallbacks.push((single_address("fallbackIP", s)?, "fallbackIP".into()))
        }
        Some(v @ Value::Array(_)) => {
            for (i, s) in strings(v, "fallbackIP")?.iter().enumerate() {
                let field = format!("fallbackIP[{i}]");
                fallbacks.push((single_address(&field, s)?, field));
            }
        }
        Some(v) => {
            return Err(CniError::config(
                "fallbackIP",
                v,
                "an address, or a list with one per address family",
            ))
        }
    }

    let internal = match obj.get("internalInterface") {
        None => DEFAULT_INTERNAL_INTERFACE.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(CniError::config(
                "internalInterface",
                v,
                "a link name such as eth0",
            ))
        }
    };
    let keep_routes = keep_routes(obj.get("keepRoutes"))?;

    let log_file = match obj.get("log_file") {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) if Path::new(s).is_absolute() => Some(PathBuf::from(s)),
        Some(v) => {
            return Err(CniError::config(
                "log_file",
                v,
                "an absolute path such as /var/log/egress-cni.log",
            ))
        }
    };
    let log_level = match obj.get("log_level") {
        None => LogLevel::default(),
        Some(Value::String(s)) if s.is_empty() => LogLevel::default(),
        Some(v) => v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
            CniError::config("log_level", v, "one of panic, error, verbose, debug")
        })?,
    };

    let prev_result = match obj.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(v) => {
            return Err(CniError::config(
                "prevResult",
                v,
                "the result of the ADD (an object)",
            ))
        }
    };
    let (role, router_name, stable_mac) = ha_keys(&obj)?;
    let valid_attachments = ["cni.dev/valid-attachments", "cni.dev/attachments"]
        .iter()
        .find_map(|k| obj.get(*k).map(|v| attachments(k, v)))
        .transpose()?;

    Ok(NetConf {
        cni_version,
        name,
        plugin_type,
        master,
        mode,
        mtu,
        internal,
        addresses,
        gateways,
        redirects,
        fallbacks,
        keep_routes,
        log_file,
        log_level,
        prev_result,
        valid_attachments,
        role,
        router_name,
        stable_mac,
    })
}

/// The keys of a router in an HA pair (docs/ha.md): `role`, `routerName`, `stableMac`. The
/// name and the MAC are checked by the spec's validation (`name`, `stable_mac`).
fn ha_keys(obj: &Map<String, Value>) -> Result<(Role, Option<String>, Option<String>), CniError> {
    let role = match obj.get("role") {
        None => Role::Active,
        Some(Value::String(s)) if s == "active" => Role::Active,
        Some(Value::String(s)) if s == "standby" => Role::Standby,
        Some(v) => {
            return Err(CniError::config(
                "role",
                v,
                "active (the default) or standby (a router for keepalived to promote)",
            ))
        }
    };
    let text = |key: &str, what: &str| match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(CniError::config(key, v, what)),
    };
    Ok((
        role,
        text(
            "routerName",
            "a router name, [a-z0-9-], at most 32 characters",
        )?,
        text("stableMac", "a MAC address such as 00:00:5e:00:01:33")?,
    ))
}

/// The `cniVersion` of a configuration, for the reply to a configuration that did not parse
/// (the newest version when it names no supported one).
pub fn reply_version(stdin: &[u8]) -> CniVersion {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().and_then(CniVersion::parse))
        .unwrap_or(CniVersion::LATEST)
}

pub(crate) fn config_version(obj: &Map<String, Value>) -> Result<CniVersion, CniError> {
    let supported = format!("this plugin supports {}", SUPPORTED_VERSIONS.join(", "));
    match obj.get("cniVersion") {
        Some(Value::String(v)) => CniVersion::parse(v).ok_or_else(|| CniError {
            code: code::INCOMPATIBLE_VERSION,
            msg: format!("incompatible CNI version: cniVersion `{}` is not supported", clip(v)),
            details: supported,
            field: Some("cniVersion".into()),
        }),
        other => Err(CniError {
            code: code::INCOMPATIBLE_VERSION,
            msg: match other {
                None => "incompatible CNI version: cniVersion is missing (the spec's default, 0.1.0, is not supported)".into(),
                Some(v) => format!("incompatible CNI version: cniVersion {} is not a version string", clip(&v.to_string())),
            },
            details: supported,
            field: Some("cniVersion".into()),
        }),
    }
}

pub(crate) fn unknown_key(field: &str, value: &Value, known: &[&[&str]]) -> CniError {
    let known: Vec<&str> = known.iter().flat_map(|k| k.iter().copied()).collect();
    CniError::unsupported(
        field,
        value,
        format!(
            "egress-cni does not know this key (a misspelt key is refused rather than ignored); \
             the keys here are: {}",
            known.join(", ")
        ),
    )
}

pub(crate) fn required_string(
    obj: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<String, CniError> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(v) => Err(CniError::config(
            key,
            v,
            format!("a non-empty string: {what}"),
        )),
        None => Err(CniError::missing(key, what)),
    }
}

pub(crate) fn strings(v: &Value, field: &str) -> Result<Vec<String>, CniError> {
    let Value::Array(items) = v else {
        return Err(CniError::config(field, v, "a list of strings"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.clone()),
            other => Err(CniError::config(
                &format!("{field}[{i}]"),
                other,
                "a string",
            )),
        })
        .collect()
}

/// `interfaceArgs`: master, mode, mtu (strings, as OpenShift's plugin has them; an empty
/// string is the default, as there; the MTU may also be a number).
pub(crate) fn interface_args(
    v: Option<&Value>,
) -> Result<(Option<String>, MacvlanMode, Option<u32>), CniError> {
    let args = match v {
        None => return Ok((None, MacvlanMode::Bridge, None)),
        Some(Value::Object(args)) => args,
        Some(v) => {
            return Err(CniError::config(
                "interfaceArgs",
                v,
                r#"an object {"master": …, "mode": …, "mtu": …}"#,
            ))
        }
    };
    let mut master = None;
    let mut mode = MacvlanMode::Bridge;
    let mut mtu = None;
    for (key, value) in args {
        let field = format!("interfaceArgs.{key}");
        let text = match value {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        };
        match key.as_str() {
            "master" => match text {
                Some("") => {}
                Some(s) => master = Some(s.to_string()),
                None => return Err(CniError::config(&field, value, "a link name on the node")),
            },
            "mode" => {
                mode = match text.map(str::to_ascii_lowercase).as_deref() {
                    Some("" | "bridge") => MacvlanMode::Bridge,
                    Some("private") => MacvlanMode::Private,
                    Some("vepa") => MacvlanMode::Vepa,
                    Some("passthru") => MacvlanMode::Passthru,
                    _ => {
                        return Err(CniError::config(
                            &field,
                            value,
                            "one of bridge, private, vepa, passthru",
                        ))
                    }
                }
            }
            "mtu" => {
                let parsed = match value {
                    Value::String(s) if s.is_empty() => continue,
                    Value::String(s) => s.parse::<u32>().ok(),
                    Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                    _ => None,
                };
                mtu = Some(parsed.ok_or_else(|| {
                    CniError::config(&field, value, "an MTU, e.g. 1500 or \"1500\"")
                })?);
            }
            _ => return Err(unknown_key(&field, value, &[&["master", "mode", "mtu"]])),
        }
    }
    Ok((master, mode, mtu))
}

pub(crate) enum Line {
    Redirect(Redirect),
    Fallback(IpAddr),
}

/// One element of `ip.destinations`: one line of the `EGRESS_DESTINATION` syntax.
pub(crate) fn destination_line(field: &str, line: &str) -> Result<Line, CniError> {
    const SYNTAX: &str = "a rule `LPORT PROTO IP`, `LPORT PROTO IP RPORT` (PROTO tcp, udp or \
                          sctp; IP optionally /32 or /128) or a fallback `IP`";
    if line.contains(['\n', '\r']) {
        return Err(CniError::invalid(
            code::INVALID_CONFIG,
            field,
            line,
            format!("one rule per element: {SYNTAX}"),
        ));
    }
    let d = parse_destination(line).map_err(|e| destination_error(field, line, &e, SYNTAX))?;
    Ok(match (d.redirects.as_slice(), d.fallback) {
        ([r], None) => Line::Redirect(*r),
        ([], Some(ip)) => Line::Fallback(ip),
        _ => unreachable!("one line is one redirect or one fallback"),
    })
}

fn destination_error(field: &str, value: &str, e: &CompatError, syntax: &str) -> CniError {
    let expected = match (e.kind(), e.reason()) {
        (CompatErrorKind::DestinationUnspecified, _) => format!("not empty: {syntax}"),
        (CompatErrorKind::InvalidPort, _) => {
            format!("ports from 1 to 65535 ({} is not)", e.value())
        }
        (_, Some(reason)) => format!("{syntax} ({reason})"),
        (_, None) => syntax.to_string(),
    };
    CniError::invalid(code::INVALID_CONFIG, field, value, expected)
}

/// `fallbackIP`, `destinationIP`: one address, optionally with its host prefix.
pub(crate) fn single_address(field: &str, value: &str) -> Result<IpAddr, CniError> {
    const ADDRESS: &str = "an IPv4 or IPv6 address, optionally /32 or /128";
    if value.is_empty() || value.contains(char::is_whitespace) {
        return Err(CniError::invalid(
            code::INVALID_CONFIG,
            field,
            value,
            ADDRESS,
        ));
    }
    match parse_destination(value) {
        Ok(d) => Ok(d.fallback.expect("one word is a fallback line")),
        Err(e) => Err(destination_error(field, value, &e, ADDRESS)),
    }
}

/// One of EgressRouter's `redirectRules`.
pub(crate) fn redirect_rule(i: usize, rule: &Value) -> Result<Redirect, CniError> {
    const KEYS: [&str; 4] = ["destinationIP", "port", "protocol", "targetPort"];
    let field = |k: &str| format!("redirectRules[{i}].{k}");
    let Value::Object(rule) = rule else {
        return Err(CniError::config(
            &format!("redirectRules[{i}]"),
            rule,
            r#"an object {"destinationIP", "port", "protocol", "targetPort"}"#,
        ));
    };
    if let Some((k, v)) = rule.iter().find(|(k, _)| !KEYS.contains(&k.as_str())) {
        return Err(unknown_key(&field(k), v, &[&KEYS]));
    }
    let port = |k: &str| -> Result<Option<u16>, CniError> {
        rule.get(k)
            .map(|v| {
                v.as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0)
                    .ok_or_else(|| CniError::config(&field(k), v, "a port from 1 to 65535"))
            })
            .transpose()
    };
    let to = match rule.get("destinationIP") {
        Some(Value::String(s)) => single_address(&field("destinationIP"), s)?,
        Some(v) => return Err(CniError::config(&field("destinationIP"), v, "an address")),
        None => {
            return Err(CniError::missing(
                &field("destinationIP"),
                "the destination's address",
            ))
        }
    };
    let local = port("port")?.ok_or_else(|| {
        CniError::missing(&field("port"), "the port clients connect to on the router")
    })?;
    let protocol = match rule.get("protocol") {
        Some(v) => v
            .as_str()
            .and_then(|s| s.parse::<Protocol>().ok())
            .ok_or_else(|| {
                CniError::config(&field("protocol"), v, "one of TCP, UDP, SCTP (any case)")
            })?,
        None => return Err(CniError::missing(&field("protocol"), "TCP, UDP or SCTP")),
    };
    Ok(Redirect {
        protocol,
        port: local,
        to,
        to_port: port("targetPort")?.unwrap_or(local),
    })
}

pub(crate) fn keep_routes(v: Option<&Value>) -> Result<Vec<(String, Option<String>)>, CniError> {
    let routes = match v {
        None => return Ok(Vec::new()),
        Some(Value::Array(routes)) => routes,
        Some(v) => {
            return Err(CniError::config(
                "keepRoutes",
                v,
                r#"a list of {"dst": "10.128.0.0/14", "gw": "10.129.0.1"}"#,
            ))
        }
    };
    routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let Value::Object(r) = r else {
                return Err(CniError::config(
                    &format!("keepRoutes[{i}]"),
                    r,
                    r#"an object {"dst": …, "gw": …}"#,
                ));
            };
            if let Some((k, v)) = r.iter().find(|(k, _)| !["dst", "gw"].contains(&k.as_str())) {
                return Err(unknown_key(
                    &format!("keepRoutes[{i}].{k}"),
                    v,
                    &[&["dst", "gw"]],
                ));
            }
            let dst = match r.get("dst") {
                Some(Value::String(s)) => s.clone(),
                Some(v) => {
                    return Err(CniError::config(
                        &format!("keepRoutes[{i}].dst"),
                        v,
                        "a network such as 10.128.0.0/14",
                    ))
                }
                None => {
                    return Err(CniError::missing(
                        &format!("keepRoutes[{i}].dst"),
                        "the network to keep",
                    ))
                }
            };
            let gw = match r.get("gw") {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(v) => {
                    return Err(CniError::config(
                        &format!("keepRoutes[{i}].gw"),
                        v,
                        "an address",
                    ))
                }
            };
            Ok((dst, gw))
        })
        .collect()
}

pub(crate) fn attachments(key: &str, v: &Value) -> Result<Vec<Attachment>, CniError> {
    let Value::Array(items) = v else {
        return Err(CniError::config(
            key,
            v,
            r#"a list of {"containerID", "ifname"}"#,
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let field = |k: &str| format!("{key}[{i}].{k}");
            let text = |k: &str| match a.get(k) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(v) => Err(CniError::config(&field(k), v, "a string")),
                None => Err(CniError::missing(&field(k), "a string")),
            };
            Ok(Attachment {
                container_id: text("containerID")?,
                ifname: text("ifname")?,
            })
        })
        .collect()
}
