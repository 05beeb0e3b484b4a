//! The one validation pass: the configuration's [`shape`] into a [`NetConf`], every
//! invalid key found on the way, each an error that names it.

use std::{net::IpAddr, path::PathBuf};

use serde::Serialize;
use serde_json::{json, Map, Value};

use egress_core::{MacvlanMode, Protocol, Redirect};
use egress_openshift::{parse_destination, CompatError, CompatErrorKind};

use super::{
    json::Field,
    shape::{self, Conf, NumberOrText, OneOrList},
    Attachment, CniVersion, LogLevel, NetConf, Origin,
};
use crate::{code, error::clip, CniError, DEFAULT_INTERNAL_INTERFACE, SUPPORTED_VERSIONS};

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
const PLUGIN_KEYS: [&str; 9] = [
    "interfaceType",
    "interfaceArgs",
    "ip",
    "fallbackIP",
    "redirectRules",
    "internalInterface",
    "keepRoutes",
    "log_file",
    "log_level",
];

/// Well-known keys of features this plugin does not have, and why.
const UNSUPPORTED_KEYS: [(&str, &str); 5] = [
    ("ipam", "egress-cni takes its addresses from ip.addresses, not from an IPAM plugin"),
    ("dns", "egress-cni does not configure DNS"),
    ("ipMasq", "the router always SNATs to its egress address; there is nothing to masquerade on the node"),
    ("podIP", "per-pod addresses are not supported: one network attachment per router, its addresses in ip.addresses"),
    ("ipConfig", "addresses from a ConfigMap are not supported: give them in ip.addresses"),
];

const RULE_KEYS: [&str; 4] = ["destinationIP", "port", "protocol", "targetPort"];

/// `log_file`'s grammar, for its errors.
const LOG_FILE: &str = "a file name, or an absolute path in the node's log directory (such as \
                        /var/log/egress-cni/egress-1.log), without `.` or `..` components or \
                        control characters";

/// The longest file name and path the kernel takes (NAME_MAX, PATH_MAX less the NUL).
const NAME_MAX: usize = 255;
const PATH_MAX: usize = 4095;

/// Checks the whole configuration; `repeated` are the keys its objects repeat. Every problem
/// is reported, the most fundamental first (a version, an unknown key, then values: see
/// [`CniError::all`]).
pub(crate) fn net_conf(conf: Conf, repeated: Vec<String>) -> Result<NetConf, CniError> {
    let mut c = Check::default();
    for key in &repeated {
        c.push(CniError::repeated(key));
    }
    let cni_version = c.version(&conf.cni_version);
    c.top_level_keys(&conf.others);
    let name = c.non_empty(&conf.name, "name", "the network's name");
    let plugin_type = c.non_empty(&conf.plugin_type, "type", "the plugin's name (egress-cni)");
    c.interface_type(&conf.interface_type);
    let (master, mode, mtu) = c.interface_args(&conf.interface_args);
    let mut ip = c.ip(&conf.ip);
    ip.redirects.extend(c.redirect_rules(&conf.redirect_rules));
    let fallback_ip = c.one_or_list(&conf.fallback_ip, "fallbackIP", ONE_PER_FAMILY);
    for (key, s) in fallback_ip {
        match single_address(&key, &s) {
            Ok(address) => ip.fallbacks.push((address, key)),
            Err(e) => c.push(e),
        }
    }
    let internal = match &conf.internal_interface {
        Field::Missing => Some(DEFAULT_INTERNAL_INTERFACE.to_string()),
        f => c
            .valid(f, "internalInterface", "a link name such as eth0")
            .cloned(),
    };
    let keep_routes = c.keep_routes(&conf.keep_routes);
    let log_file = c.parsed(&conf.log_file, "log_file", LOG_FILE, |s| log_file(s));
    let log_level = c.parsed(&conf.log_level, "log_level", LOG_LEVELS, |s| {
        match s.as_str() {
            "" => Some(LogLevel::default()),
            s => s.parse().ok(),
        }
    });
    let prev_result = c.valid(
        &conf.prev_result,
        "prevResult",
        "the result of the ADD (an object)",
    );
    // The older spelling counts only without the newer one.
    let valid_attachments = match (&conf.valid_attachments, &conf.attachments) {
        (Field::Missing, Field::Missing) => None,
        (Field::Missing, older) => Some(c.attachments("cni.dev/attachments", older)),
        (newer, _) => Some(c.attachments("cni.dev/valid-attachments", newer)),
    };
    if !c.problems.is_empty() {
        return Err(CniError::all(c.problems));
    }
    Ok(NetConf {
        cni_version,
        name,
        plugin_type,
        master,
        mode,
        mtu,
        internal: internal.unwrap_or_default(),
        addresses: ip.addresses,
        gateways: ip.gateways,
        redirects: ip.redirects,
        fallbacks: ip.fallbacks,
        keep_routes,
        log_file: log_file.flatten(),
        log_level: log_level.unwrap_or_default(),
        prev_result: prev_result.cloned().flatten().map(Value::Object),
        valid_attachments,
    })
}

const ONE_PER_FAMILY: &str = "an address, or a list with one per address family";
const LOG_LEVELS: &str = "one of panic, error, verbose, debug";

/// What the `ip` object and the redirects and fallbacks give.
#[derive(Default)]
struct IpParts {
    addresses: Vec<String>,
    gateways: Vec<(String, String)>,
    redirects: Vec<(Redirect, Origin)>,
    fallbacks: Vec<(IpAddr, String)>,
}

/// The problems found so far. Each check returns what it read, a placeholder or nothing where
/// a value is invalid: the configuration is refused then, and no placeholder is ever used.
#[derive(Default)]
struct Check {
    problems: Vec<CniError>,
}

impl Check {
    fn push(&mut self, e: CniError) {
        self.problems.push(e);
    }

    /// `field`'s value when valid; an invalid one is a problem: `key` is not `expected`.
    fn valid<'a, T>(&mut self, field: &'a Field<T>, key: &str, expected: &str) -> Option<&'a T> {
        match field {
            Field::Valid(t) => Some(t),
            Field::Invalid(v) => {
                self.push(CniError::config(key, v, expected));
                None
            }
            Field::Missing => None,
        }
    }

    /// [`Check::valid`], and a missing value is a problem too (`what`: what it gives).
    fn required<'a, T>(
        &mut self,
        field: &'a Field<T>,
        key: &str,
        expected: &str,
        what: &str,
    ) -> Option<&'a T> {
        if matches!(field, Field::Missing) {
            self.push(CniError::missing(key, what));
        }
        self.valid(field, key, expected)
    }

    /// `field`'s value read by `read`; a value of the wrong shape or that `read` refuses is a
    /// problem: `key` is not `expected`.
    fn parsed<T: Serialize, U>(
        &mut self,
        field: &Field<T>,
        key: &str,
        expected: &str,
        read: impl FnOnce(&T) -> Option<U>,
    ) -> Option<U> {
        let read = match field {
            Field::Missing => return None,
            Field::Valid(t) => read(t),
            Field::Invalid(_) => None,
        };
        if read.is_none() {
            self.push(CniError::config(key, &field.shown(), expected));
        }
        read
    }

    /// A non-empty string (`what`: what it names).
    fn non_empty(&mut self, field: &Field<String>, key: &str, what: &str) -> String {
        if matches!(field, Field::Missing) {
            self.push(CniError::missing(key, what));
        }
        let expected = format!("a non-empty string: {what}");
        self.parsed(field, key, &expected, |s| {
            (!s.is_empty()).then(|| s.clone())
        })
        .unwrap_or_default()
    }

    /// The items of a list, each read by `item` with its key.
    fn list<'a, T, U>(
        &mut self,
        field: &'a Field<Vec<Field<T>>>,
        key: &str,
        expected: &str,
        mut item: impl FnMut(&mut Self, usize, String, &'a Field<T>) -> Option<U>,
    ) -> Vec<U> {
        let items = self
            .valid(field, key, expected)
            .map_or(&[][..], Vec::as_slice);
        items
            .iter()
            .enumerate()
            .filter_map(|(i, f)| item(self, i, format!("{key}[{i}]"), f))
            .collect()
    }

    /// A list of strings, each with its key.
    fn strings(&mut self, field: &Field<Vec<Field<String>>>, key: &str) -> Vec<(String, String)> {
        self.list(field, key, "a list of strings", |c, _, key, f| {
            let s = c.valid(f, &key, "a string")?.clone();
            Some((key, s))
        })
    }

    /// `ip.gateway`, `fallbackIP`: one string (empty: none) or a list, each with its key.
    fn one_or_list(
        &mut self,
        field: &Field<OneOrList>,
        key: &str,
        expected: &str,
    ) -> Vec<(String, String)> {
        match self.valid(field, key, expected) {
            None => Vec::new(),
            Some(OneOrList::One(s)) if s.is_empty() => Vec::new(),
            Some(OneOrList::One(s)) => vec![(key.to_string(), s.clone())],
            Some(OneOrList::List(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, f)| {
                    let key = format!("{key}[{i}]");
                    let s = self.valid(f, &key, "a string")?.clone();
                    Some((key, s))
                })
                .collect(),
        }
    }

    /// Keys of an object that are none of `known`: each an error (code 2).
    fn unknown_keys(&mut self, prefix: &str, others: &Map<String, Value>, known: &[&str]) {
        for (key, value) in others {
            self.push(unknown_key(&format!("{prefix}{key}"), value, &[known]));
        }
    }

    fn version(&mut self, field: &Field<String>) -> CniVersion {
        let msg = match field {
            Field::Valid(v) => match CniVersion::parse(v) {
                Some(version) => return version,
                None => format!(
                    "incompatible CNI version: cniVersion `{}` is not supported",
                    clip(v)
                ),
            },
            Field::Missing => "incompatible CNI version: cniVersion is missing (the spec's \
                               default, 0.1.0, is not supported)"
                .into(),
            Field::Invalid(v) => format!(
                "incompatible CNI version: cniVersion {} is not a version string",
                clip(&v.to_string())
            ),
        };
        self.push(CniError {
            code: code::INCOMPATIBLE_VERSION,
            msg,
            details: format!("this plugin supports {}", SUPPORTED_VERSIONS.join(", ")),
            field: Some("cniVersion".into()),
        });
        CniVersion::LATEST
    }

    /// The keys that are not fields of the configuration: the runtime's are accepted;
    /// features this plugin lacks and unknown keys are refused.
    fn top_level_keys(&mut self, others: &Map<String, Value>) {
        for (key, value) in others {
            if let Some((_, why)) = UNSUPPORTED_KEYS.iter().find(|(k, _)| k == key) {
                self.push(CniError::unsupported(key, value, *why));
            } else if !RUNTIME_KEYS.contains(&key.as_str()) {
                self.push(unknown_key(key, value, &[&RUNTIME_KEYS, &PLUGIN_KEYS]));
            }
        }
    }

    fn interface_type(&mut self, field: &Field<String>) {
        match self.valid(field, "interfaceType", "a string: macvlan") {
            Some(s) if !s.is_empty() && !s.eq_ignore_ascii_case("macvlan") => {
                self.push(CniError::unsupported(
                    "interfaceType",
                    &field.shown(),
                    "egress-cni creates a macvlan (interfaceType macvlan); ipvlan and cloud \
                     provider types are not supported",
                ))
            }
            _ => {}
        }
    }

    /// `interfaceArgs`: master, mode, mtu (strings, as OpenShift's plugin has them; an empty
    /// string is the default, as there; the MTU may also be a number).
    fn interface_args(
        &mut self,
        field: &Field<shape::InterfaceArgs>,
    ) -> (Option<String>, MacvlanMode, Option<u32>) {
        let expected = r#"an object {"master": …, "mode": …, "mtu": …}"#;
        let Some(args) = self.valid(field, "interfaceArgs", expected) else {
            return (None, MacvlanMode::Bridge, None);
        };
        self.unknown_keys("interfaceArgs.", &args.others, &["master", "mode", "mtu"]);
        let master = self
            .valid(
                &args.master,
                "interfaceArgs.master",
                "a link name on the node",
            )
            .filter(|s| !s.is_empty())
            .cloned();
        let modes = "one of bridge, private, vepa, passthru";
        let mode = self.parsed(&args.mode, "interfaceArgs.mode", modes, |s| {
            match s.to_ascii_lowercase().as_str() {
                "" | "bridge" => Some(MacvlanMode::Bridge),
                "private" => Some(MacvlanMode::Private),
                "vepa" => Some(MacvlanMode::Vepa),
                "passthru" => Some(MacvlanMode::Passthru),
                _ => None,
            }
        });
        let mtu = self.parsed(
            &args.mtu,
            "interfaceArgs.mtu",
            "an MTU, e.g. 1500 or \"1500\"",
            |mtu| match mtu {
                NumberOrText::Text(s) if s.is_empty() => Some(None),
                NumberOrText::Text(s) => s.parse().ok().map(Some),
                NumberOrText::Number(n) => u32::try_from(*n).ok().map(Some),
            },
        );
        (master, mode.unwrap_or(MacvlanMode::Bridge), mtu.flatten())
    }

    fn ip(&mut self, field: &Field<shape::Ip>) -> IpParts {
        let expected = r#"an object {"addresses": […], "gateway": …, "destinations": […]}"#;
        let what = "the egress addresses and gateway";
        let Some(ip) = self.required(field, "ip", expected, what) else {
            return IpParts::default();
        };
        self.unknown_keys("ip.", &ip.others, &["addresses", "gateway", "destinations"]);
        let example = "the egress addresses, e.g. [\"203.0.113.99/24\"]";
        if matches!(ip.addresses, Field::Missing) {
            self.push(CniError::missing("ip.addresses", example));
        }
        if matches!(&ip.addresses, Field::Valid(items) if items.is_empty()) {
            let expected = "at least one address, e.g. 203.0.113.99/24";
            self.push(CniError::config("ip.addresses", &json!([]), expected));
        }
        let addresses = self.strings(&ip.addresses, "ip.addresses");
        let mut parts = IpParts {
            addresses: addresses.into_iter().map(|(_, a)| a).collect(),
            gateways: self
                .one_or_list(&ip.gateway, "ip.gateway", ONE_PER_FAMILY)
                .into_iter()
                .map(|(key, gateway)| (gateway, key))
                .collect(),
            ..IpParts::default()
        };
        // One `EGRESS_DESTINATION` line each; a fallback only last.
        let lines = self.strings(&ip.destinations, "ip.destinations");
        let last = lines.last().map(|(key, _)| key.clone());
        for (key, line) in lines {
            match destination_line(&key, &line) {
                Ok(Line::Redirect(r)) => parts.redirects.push((r, Origin::Line(key))),
                Ok(Line::Fallback(_)) if Some(&key) != last.as_ref() => {
                    self.push(CniError::invalid(
                        code::INVALID_CONFIG,
                        &key,
                        &line,
                        "a fallback (a bare address) must be the last destination",
                    ))
                }
                Ok(Line::Fallback(ip)) => parts.fallbacks.push((ip, key)),
                Err(e) => self.push(e),
            }
        }
        parts
    }

    fn redirect_rules(
        &mut self,
        field: &Field<Vec<Field<shape::Rule>>>,
    ) -> Vec<(Redirect, Origin)> {
        const OBJECT: &str = r#"{"destinationIP", "port", "protocol", "targetPort"}"#;
        self.list(
            field,
            "redirectRules",
            &format!("a list of {OBJECT}"),
            |c, i, key, rule| {
                let rule = c.valid(rule, &key, &format!("an object {OBJECT}"))?;
                Some((c.redirect_rule(&key, rule)?, Origin::Rule(i)))
            },
        )
    }

    /// One of EgressRouter's `redirectRules` (at `key`), when valid.
    fn redirect_rule(&mut self, key: &str, rule: &shape::Rule) -> Option<Redirect> {
        let field = |k: &str| format!("{key}.{k}");
        self.unknown_keys(&format!("{key}."), &rule.others, &RULE_KEYS);
        let what = "the destination's address";
        let to = self
            .required(
                &rule.destination_ip,
                &field("destinationIP"),
                "an address",
                what,
            )
            .and_then(|s| {
                single_address(&field("destinationIP"), s)
                    .map_err(|e| self.push(e))
                    .ok()
            });
        let ports = "a port from 1 to 65535";
        let what = "the port clients connect to on the router";
        if matches!(rule.port, Field::Missing) {
            self.push(CniError::missing(&field("port"), what));
        }
        let port = self.parsed(&rule.port, &field("port"), ports, |p| {
            (*p != 0).then_some(*p)
        });
        let to_port = match &rule.target_port {
            Field::Missing => port,
            f => self.parsed(f, &field("targetPort"), ports, |p| (*p != 0).then_some(*p)),
        };
        if matches!(rule.protocol, Field::Missing) {
            self.push(CniError::missing(&field("protocol"), "TCP, UDP or SCTP"));
        }
        let protocols = "one of TCP, UDP, SCTP (any case)";
        let protocol = self.parsed(&rule.protocol, &field("protocol"), protocols, |s| {
            s.parse::<Protocol>().ok()
        });
        Some(Redirect {
            protocol: protocol?,
            port: port?,
            to: to?,
            to_port: to_port?,
        })
    }

    fn keep_routes(
        &mut self,
        field: &Field<Vec<Field<shape::KeptRoute>>>,
    ) -> Vec<(String, Option<String>)> {
        let expected = r#"a list of {"dst": "10.128.0.0/14", "gw": "10.129.0.1"}"#;
        self.list(field, "keepRoutes", expected, |c, _, key, route| {
            let route = c.valid(route, &key, r#"an object {"dst": …, "gw": …}"#)?;
            c.unknown_keys(&format!("{key}."), &route.others, &["dst", "gw"]);
            let network = "a network such as 10.128.0.0/14";
            let dst = c.required(
                &route.dst,
                &format!("{key}.dst"),
                network,
                "the network to keep",
            );
            let gw = c.valid(&route.gw, &format!("{key}.gw"), "an address");
            Some((dst?.clone(), gw.cloned()))
        })
    }

    fn attachments(
        &mut self,
        key: &str,
        field: &Field<Vec<Field<shape::Attachment>>>,
    ) -> Vec<Attachment> {
        let expected = r#"a list of {"containerID", "ifname"}"#;
        self.list(field, key, expected, |c, _, key, a| {
            let a = c.valid(a, &key, r#"an object {"containerID", "ifname"}"#)?;
            let id_key = format!("{key}.containerID");
            let container_id = c.required(&a.container_id, &id_key, "a string", "a string");
            let ifname = c.required(&a.ifname, &format!("{key}.ifname"), "a string", "a string");
            Some(Attachment {
                container_id: container_id?.clone(),
                ifname: ifname?.clone(),
            })
        })
    }
}

/// `log_file`: a file name, or an absolute path, each component a plain name (no `.`, `..` or
/// empty component, nothing the kernel would refuse) without a control character; empty: none.
/// Where it may be written is the node's call ([`NetConf::log_file_in`]).
fn log_file(s: &str) -> Option<Option<PathBuf>> {
    if s.is_empty() {
        return Some(None);
    }
    let names = s.strip_prefix('/').unwrap_or(s);
    let plain = |name: &str| {
        !name.is_empty()
            && name != "."
            && name != ".."
            && name.len() <= NAME_MAX
            && !name.contains(|c: char| c.is_control())
    };
    let ok = s.len() <= PATH_MAX
        && (s.starts_with('/') || !names.contains('/'))
        && names.split('/').all(plain);
    ok.then(|| Some(PathBuf::from(s)))
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
