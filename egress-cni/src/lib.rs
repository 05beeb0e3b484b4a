//! # egress-cni
//!
//! The CNI plugin's contract, mapped onto a [`RouterSpec`] of [`egress_core`]: the `CNI_*`
//! environment ([`Invocation`]), the network configuration on stdin ([`NetConf`]: OpenShift's
//! egress-router CNI plugin format, plus what OpenShift's EgressRouter resource has that never
//! reached that plugin), and the replies of CNI specification 1.1 — the ADD result
//! ([`add_result`]), the VERSION reply ([`version_result`]) and the error object ([`CniError`],
//! with the spec's error codes). The `egress-cni` binary is this crate plus
//! [`ensure`](egress_core::ensure), [`check`](egress_core::check),
//! [`inspect`](egress_core::inspect) and [`teardown_by_name`](egress_core::teardown_by_name).
//!
//! ```
//! use egress_cni::{self as cni, Invocation};
//!
//! let inv = Invocation::from_env([
//!     ("CNI_COMMAND", "ADD"),
//!     ("CNI_CONTAINERID", "3f6940ab5ab4"),
//!     ("CNI_NETNS", "/var/run/netns/pod"),
//!     ("CNI_IFNAME", "net1"),
//! ])?;
//! let conf = cni::parse_config(br#"{
//!     "cniVersion": "0.4.0", "name": "egress-1", "type": "egress-cni",
//!     "interfaceArgs": {"master": "ens4", "mode": "private"},
//!     "ip": {"addresses": ["203.0.113.99/24"], "gateway": "203.0.113.1",
//!            "destinations": ["80 TCP 198.51.100.25/32 8080"]},
//!     "fallbackIP": "198.51.100.9"
//! }"#)?;
//! let spec = conf.router_spec(&inv, conf.master().unwrap())?;
//! assert_eq!(spec.external().link_name(), "net1");
//! assert_eq!(spec.name(), cni::router_name("3f6940ab5ab4", "net1"));
//! # Ok::<(), cni::CniError>(())
//! ```
//!
//! ## The network configuration
//!
//! | Key | Meaning |
//! |---|---|
//! | `cniVersion` | `0.4.0` (what OpenShift renders), `1.0.0` or `1.1.0`; the ADD result is in this version |
//! | `name`, `type` | the network's name; the plugin's file name (any) |
//! | `interfaceType` | `macvlan` (the default; `ipvlan` and `aws-elastic-ip` are not supported) |
//! | `interfaceArgs.master` | the node's link the macvlan is created on, in the namespace the plugin runs in; default: the link of the node's default route (of the first address's family) |
//! | `interfaceArgs.mode` | `bridge` (default, as OpenShift's plugin), `private`, `vepa`, `passthru` (any case) |
//! | `interfaceArgs.mtu` | the macvlan's MTU (a number, or a string as OpenShift writes it); default: the master's |
//! | `ip.addresses` | the egress addresses, `ADDR/PREFIX` (bare = /32, /128), *all* of them added; the first of each family is the SNAT source |
//! | `ip.gateway` | the external gateway, or a list with one per family |
//! | `ip.destinations` | one rule per element, in the `EGRESS_DESTINATION` line syntax ([`parse_destination`]): `LPORT PROTO IP [RPORT]`, or `IP` (the fallback, last); PROTO in any case, IP optionally `/32` or `/128` |
//! | `redirectRules` | EgressRouter's rules: `[{"destinationIP", "port", "protocol", "targetPort"}]` |
//! | `fallbackIP` | EgressRouter's fallback: where every other port goes (or a list, one per family) |
//! | `internalInterface` | the pod's cluster link, where clients connect (default [`DEFAULT_INTERNAL_INTERFACE`], the link the primary plugin created before Multus calls this one) |
//! | `keepRoutes` | routes kept through the internal link once the default route is the router's: `[{"dst": "10.128.0.0/14", "gw": "10.129.0.1"}]` |
//! | `log_file`, `log_level` | append the plugin's log to this file; `panic`, `error` (default), `verbose`, `debug` |
//!
//! Keys that runtimes add (`args`, `runtimeConfig`, `capabilities`, `prevResult`, `cniVersions`,
//! `disableCheck`, `disableGC`, `loadOnlyInlinedPlugins`, `cni.dev/valid-attachments`,
//! `cni.dev/attachments`) are accepted. Every other key is an error naming it (code 2): a typo
//! must not be silently ignored. So are the keys of features this plugin does not have
//! (`ipam`, `dns`, `ipMasq`, `podIP`, `ipConfig`).
//!
//! The router is named after the attachment ([`router_name`]), lives in `CNI_NETNS`, and its
//! macvlan is `CNI_IFNAME`, created on the master directly inside the pod.
//!
//! ## Error codes
//!
//! | Code | Meaning |
//! |---|---|
//! | 1 | incompatible CNI version (`cniVersion` missing or not one of [`SUPPORTED_VERSIONS`]; STATUS and GC need 1.1.0) |
//! | 2 | unsupported field: an unknown key, or a feature this plugin does not have |
//! | 3 | container unknown: `CNI_NETNS` does not exist (ADD, CHECK) |
//! | 4 | invalid environment variables (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`) |
//! | 5 | I/O failure (reading stdin, opening `log_file`) |
//! | 6 | decode failure: stdin is not a JSON object |
//! | 7 | invalid network configuration: the message names the key and the value |
//! | 11 | try again later: the kernel was busy, everything was rolled back |
//! | 50 | STATUS: not available (no `CAP_NET_ADMIN`, no master link) |
//! | 100 | the node or the pod rules the configuration out (a link missing or already there, an MTU over the master's); nothing changed |
//! | 101 | a kernel change failed and everything was rolled back; nothing changed |
//! | 102 | something is left behind: rollback or DEL incomplete (`details` lists what) |
//! | 103 | permission denied: the plugin needs `CAP_NET_ADMIN` and `CAP_SYS_ADMIN` |
//! | 104 | CHECK: the attachment differs from its configuration (`details` lists each difference) |
//! | 999 | a bug: the plugin panicked |

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde_json::{json, Map, Value};

use egress_core::{
    blocking, Error, LinkState, MacvlanMode, Netns, Protocol, Redirect, Result, RouterSpec,
    MAX_IFNAME_LEN, MAX_NAME_LEN,
};
use egress_openshift::{parse_destination, CompatError, CompatErrorKind};

/// The CNI specification versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The pod's cluster link when `internalInterface` is not given: the interface the cluster's
/// primary plugin creates before Multus calls secondary plugins.
pub const DEFAULT_INTERNAL_INTERFACE: &str = "eth0";

/// The spec's well-known error codes (0–99) and this plugin's own (100 and up); see the
/// module docs for when each is returned.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration (the message names key and value).
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables (the message names them).
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODING_FAILURE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: a transient condition.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available (cannot service ADD requests).
    pub const NOT_AVAILABLE: u32 = 50;
    /// The kernel state rules the configuration out; nothing changed.
    pub const KERNEL_STATE: u32 = 100;
    /// A kernel change failed and was rolled back completely; nothing changed.
    pub const ROLLED_BACK: u32 = 101;
    /// Something is left behind (rollback or teardown incomplete).
    pub const LEFT_BEHIND: u32 = 102;
    /// Permission denied.
    pub const PERMISSION_DENIED: u32 = 103;
    /// CHECK found the attachment differing from its configuration.
    pub const DRIFT: u32 = 104;
    /// A bug: the plugin panicked (libcni's internal error code).
    pub const INTERNAL: u32 = 999;
}

// ---------------------------------------------------------------------------------------------
// Versions, commands, errors

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

/// A CNI error: the spec's error object (`code`, `msg`, `details`), and the configuration key
/// or environment variable at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// The error code ([`code`]).
    pub code: u32,
    /// What went wrong, in one line, naming the key or variable and its value.
    pub msg: String,
    /// More: what would be valid, what remains, each difference; may be empty.
    pub details: String,
    /// The configuration key (`ip.addresses[1]`) or environment variable (`CNI_IFNAME`) at
    /// fault, when there is one.
    pub field: Option<String>,
}

impl CniError {
    fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
            field: None,
        }
    }

    /// `invalid FIELD `VALUE``, with what would be valid as the details.
    fn invalid(code: u32, field: &str, value: &str, expected: impl Into<String>) -> Self {
        let expected = expected.into();
        CniError {
            code,
            msg: format!("invalid {field} `{}`: {expected}", clip(value)),
            details: String::new(),
            field: Some(field.to_string()),
        }
    }

    fn env(var: &str, value: &str, expected: impl Into<String>) -> Self {
        CniError::invalid(code::INVALID_ENVIRONMENT, var, value, expected)
    }

    fn config(field: &str, value: &Value, expected: impl Into<String>) -> Self {
        CniError::invalid(code::INVALID_CONFIG, field, &shown(value), expected)
    }

    fn missing(field: &str, expected: impl Into<String>) -> Self {
        CniError {
            code: code::INVALID_CONFIG,
            msg: format!("{field} is missing: {}", expected.into()),
            details: String::new(),
            field: Some(field.to_string()),
        }
    }

    fn unsupported(field: &str, value: &Value, why: impl Into<String>) -> Self {
        CniError {
            code: code::UNSUPPORTED_FIELD,
            msg: format!("unsupported field {field} = {}", clip(&value.to_string())),
            details: why.into(),
            field: Some(field.to_string()),
        }
    }

    /// An I/O failure (code 5): reading stdin, opening the log file.
    pub fn io(what: impl fmt::Display, e: &std::io::Error) -> Self {
        CniError::new(code::IO_FAILURE, format!("{what}: {e}"), "")
    }

    /// A CHECK that found differences (code 104), one per line in the details.
    pub fn drift(differences: &[String]) -> Self {
        CniError::new(
            code::DRIFT,
            format!(
                "the attachment differs from its configuration ({} difference{})",
                differences.len(),
                if differences.len() == 1 { "" } else { "s" }
            ),
            differences.join("\n"),
        )
    }

    /// STATUS: the plugin cannot service ADD requests (code 50), because of `cause`.
    pub fn not_available(cause: &Error) -> Self {
        CniError::new(
            code::NOT_AVAILABLE,
            "egress-cni cannot add routers on this node",
            cause.to_string(),
        )
    }

    /// A bug (code 999): the plugin panicked with `what`.
    pub fn internal(what: impl fmt::Display) -> Self {
        CniError::new(
            code::INTERNAL,
            format!("egress-cni failed unexpectedly: {what}"),
            "this is a bug; the kernel changes of an ADD that got this far are rolled back \
             only by a DEL",
        )
    }

    /// The spec's error object in `version` (`details` omitted when empty).
    pub fn to_json(&self, version: CniVersion) -> Value {
        let mut v = json!({"cniVersion": version.as_str(), "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = self.details.clone().into();
        }
        v
    }

    /// Maps an error of the core to the spec's codes, naming configuration keys rather than
    /// spec fields.
    pub fn from_core(e: &Error) -> Self {
        let c = match e {
            Error::InvalidSpec {
                field,
                value,
                expected,
                others,
            } => {
                let (code, field) = config_field(field);
                return CniError::invalid(code, &field, value, with_others(expected, others));
            }
            Error::NotFound { field, .. } if field == "netns" => code::UNKNOWN_CONTAINER,
            Error::NotFound { .. } | Error::AlreadyExists { .. } | Error::Conflict { .. } => {
                code::KERNEL_STATE
            }
            Error::PermissionDenied { .. } => code::PERMISSION_DENIED,
            Error::Kernel { errno, .. } if transient(*errno) => code::TRY_AGAIN_LATER,
            Error::Kernel { .. } => code::ROLLED_BACK,
            Error::Apply {
                source, rollback, ..
            } => match (rollback.is_complete(), &**source) {
                (false, _) => code::LEFT_BEHIND,
                (true, Error::PermissionDenied { .. }) => code::PERMISSION_DENIED,
                (true, s) if s.errno().is_some_and(transient) => code::TRY_AGAIN_LATER,
                (true, _) => code::ROLLED_BACK,
            },
            Error::Teardown { .. } | Error::UndoSkipped { .. } => code::LEFT_BEHIND,
            Error::Verify { .. } => code::ROLLED_BACK,
            // The core's error is non-exhaustive: a variant added after this mapping was
            // written is a bug here until it gets its code, not a code to guess.
            _ => code::INTERNAL,
        };
        let (msg, details) = match e {
            Error::NotFound {
                field,
                object,
                value,
                netns,
            } => {
                let (_, field) = config_field(field);
                (
                    format!("{field}: {object} `{value}` not found"),
                    format!("looked up in namespace {netns}"),
                )
            }
            Error::Conflict {
                field,
                value,
                reason,
            } => {
                let (_, field) = config_field(field);
                (format!("{field} `{value}`: {reason}"), String::new())
            }
            Error::Apply {
                step_index,
                step,
                source,
                rollback,
            } => (
                format!("step {step_index} failed: {source}; {rollback}"),
                format!("the failed step: {step}"),
            ),
            other => (other.to_string(), String::new()),
        };
        CniError::new(c, msg, details)
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (CNI error {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details.replace('\n', "; "))?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// Errnos after which the same request may well succeed.
fn transient(errno: i32) -> bool {
    matches!(
        errno,
        libc::EAGAIN | libc::EBUSY | libc::EINTR | libc::ENOBUFS
    )
}

/// The configuration key (or variable) a spec field comes from, with the error code a bad
/// value there earns.
fn config_field(field: &str) -> (u32, String) {
    let (code, name) = match field {
        "netns" | "netns.path" => (code::INVALID_ENVIRONMENT, "CNI_NETNS"),
        "external.macvlan.name" => (code::INVALID_ENVIRONMENT, "CNI_IFNAME"),
        "name" => (code::INVALID_ENVIRONMENT, "CNI_CONTAINERID"),
        "external.macvlan.parent" => (code::INVALID_CONFIG, "interfaceArgs.master"),
        "external.macvlan.mtu" => (code::INVALID_CONFIG, "interfaceArgs.mtu"),
        "external.macvlan.mode" => (code::INVALID_CONFIG, "interfaceArgs.mode"),
        "internal" => (code::INVALID_CONFIG, "internalInterface"),
        other => (code::INVALID_CONFIG, other),
    };
    (code, name.to_string())
}

/// The CNI operation (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Configure the router in the pod.
    Add,
    /// Remove it and restore the pod (idempotent).
    Del,
    /// Compare the pod with the configuration.
    Check,
    /// Report readiness (1.1.0).
    Status,
    /// List the supported versions.
    Version,
    /// Clean up stale resources (1.1.0).
    Gc,
}

impl Command {
    /// Every command.
    pub const ALL: [Command; 6] = [
        Command::Add,
        Command::Del,
        Command::Check,
        Command::Status,
        Command::Version,
        Command::Gc,
    ];

    /// The value of `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
            Command::Gc => "GC",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Command {
    type Err = CniError;
    fn from_str(s: &str) -> Result<Self, CniError> {
        Command::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                CniError::env(
                    "CNI_COMMAND",
                    s,
                    "one of ADD, DEL, CHECK, STATUS, VERSION, GC",
                )
            })
    }
}

// ---------------------------------------------------------------------------------------------
// The environment

/// One invocation's `CNI_*` environment, validated for its command.
///
/// ADD and CHECK need `CNI_CONTAINERID`, `CNI_NETNS` and `CNI_IFNAME`; DEL needs
/// `CNI_CONTAINERID` and `CNI_IFNAME` (without `CNI_NETNS` there is nothing to remove: the
/// router lives only in the pod's namespace); STATUS, VERSION and GC need none of them.
/// `CNI_PATH` and `CNI_ARGS` are not used (this plugin delegates to no other plugin, and reads
/// nothing from the runtime's arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`: the pod's namespace file (empty = not given).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`: the macvlan's name in the pod.
    pub ifname: Option<String>,
}

impl Invocation {
    /// Reads and validates the environment (`std::env::vars()`, or pairs in a test); errors
    /// are code 4 and name the variable.
    pub fn from_env<K: AsRef<str>, V: AsRef<str>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Invocation, CniError> {
        let vars: HashMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.as_ref().starts_with("CNI_"))
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        let get = |k: &str| vars.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let command: Command = get("CNI_COMMAND")
            .ok_or_else(|| {
                CniError::env(
                    "CNI_COMMAND",
                    "",
                    "one of ADD, DEL, CHECK, STATUS, VERSION, GC",
                )
            })?
            .parse()?;
        let (need_id, need_netns) = match command {
            Command::Add | Command::Check => (true, true),
            Command::Del => (true, false),
            Command::Status | Command::Version | Command::Gc => (false, false),
        };
        if !need_id {
            return Ok(Invocation {
                command,
                container_id: None,
                netns: None,
                ifname: None,
            });
        }
        let required = |k: &str, what: &str| {
            get(k)
                .map(str::to_string)
                .ok_or_else(|| CniError::env(k, "", format!("{what}, required for {command}")))
        };
        let container_id = required("CNI_CONTAINERID", "the container id")?;
        check_container_id(&container_id)?;
        let ifname = required("CNI_IFNAME", "the interface name in the container")?;
        check_ifname(&ifname)?;
        let netns = match get("CNI_NETNS") {
            None if need_netns => {
                return Err(CniError::env(
                    "CNI_NETNS",
                    "",
                    format!("the container's network namespace file, required for {command}"),
                ))
            }
            None => None,
            Some(p) if !Path::new(p).is_absolute() => {
                return Err(CniError::env(
                    "CNI_NETNS",
                    p,
                    "an absolute path such as /var/run/netns/NAME or /proc/PID/ns/net",
                ))
            }
            Some(p) => Some(PathBuf::from(p)),
        };
        Ok(Invocation {
            command,
            container_id: Some(container_id),
            netns,
            ifname: Some(ifname),
        })
    }

    /// Container id, namespace and interface of an ADD or CHECK (all present by construction).
    fn attachment(&self) -> (&str, &Path, &str) {
        match (&self.container_id, &self.netns, &self.ifname) {
            (Some(id), Some(ns), Some(ifname)) => (id, ns, ifname),
            _ => unreachable!(
                "{} carries CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME",
                self.command
            ),
        }
    }
}

/// The spec: not empty, an alphanumeric first, then alphanumerics, `_`, `.` or `-`.
fn check_container_id(id: &str) -> Result<(), CniError> {
    let ok = id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::env(
            "CNI_CONTAINERID",
            id,
            "an alphanumeric character followed by alphanumerics, `_`, `.` or `-`",
        ))
    }
}

/// The spec: not empty, not `.` or `..`, under 16 bytes, no `/`, `:` or whitespace.
fn check_ifname(name: &str) -> Result<(), CniError> {
    let ok = name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(CniError::env(
            "CNI_IFNAME",
            name,
            format!("a link name of 1 to {MAX_IFNAME_LEN} bytes, not . or .., without `/`, `:` or spaces"),
        ))
    }
}

/// The router's name for an attachment: `cni-` + the container id's first 12 characters +
/// `-` + 12 hex digits of a hash of the container id and the interface name, so that it fits
/// `[a-z0-9-]{1,32}`, is the same for the ADD, CHECK and DEL of one attachment, and differs
/// between attachments. `egress-router inspect --name NAME` finds it on the node.
///
/// ```
/// let name = egress_cni::router_name("3F6940ab5ab4_3bc522569d15b23f", "net1");
/// assert!(name.starts_with("cni-3f6940ab5ab4-"), "{name}");
/// assert_eq!(name.len(), 29);
/// ```
pub fn router_name(container_id: &str, ifname: &str) -> String {
    // FNV-1a 64 over `id NUL ifname`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let id: String = container_id
        .chars()
        .take(12)
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    let name = format!("cni-{id}-{:012x}", h >> 16);
    debug_assert!(name.len() <= MAX_NAME_LEN);
    name
}

// ---------------------------------------------------------------------------------------------
// The network configuration

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
enum Origin {
    /// `ip.destinations[i]`: the whole line.
    Line(String),
    /// `redirectRules[i]`: one key per field.
    Rule(usize),
}

/// A validated network configuration (see the module docs for the keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    cni_version: CniVersion,
    name: String,
    plugin_type: String,
    master: Option<String>,
    mode: MacvlanMode,
    mtu: Option<u32>,
    internal: String,
    addresses: Vec<String>,
    /// Each gateway with the key it came from.
    gateways: Vec<(String, String)>,
    redirects: Vec<(Redirect, Origin)>,
    /// Each fallback with the key it came from.
    fallbacks: Vec<(IpAddr, String)>,
    keep_routes: Vec<(String, Option<String>)>,
    log_file: Option<PathBuf>,
    log_level: LogLevel,
    prev_result: Option<Value>,
    valid_attachments: Option<Vec<Attachment>>,
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
    })
}

/// The `cniVersion` of a configuration, for the reply to a configuration that did not parse
/// (the newest version when it names no supported one).
pub fn reply_version(stdin: &[u8]) -> CniVersion {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().and_then(CniVersion::parse))
        .unwrap_or(CniVersion::LATEST)
}

fn config_version(obj: &Map<String, Value>) -> Result<CniVersion, CniError> {
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

fn unknown_key(field: &str, value: &Value, known: &[&[&str]]) -> CniError {
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

fn required_string(obj: &Map<String, Value>, key: &str, what: &str) -> Result<String, CniError> {
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

fn strings(v: &Value, field: &str) -> Result<Vec<String>, CniError> {
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
fn interface_args(
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

enum Line {
    Redirect(Redirect),
    Fallback(IpAddr),
}

/// One element of `ip.destinations`: one line of the `EGRESS_DESTINATION` syntax.
fn destination_line(field: &str, line: &str) -> Result<Line, CniError> {
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
fn single_address(field: &str, value: &str) -> Result<IpAddr, CniError> {
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
fn redirect_rule(i: usize, rule: &Value) -> Result<Redirect, CniError> {
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

fn keep_routes(v: Option<&Value>) -> Result<Vec<(String, Option<String>)>, CniError> {
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

fn attachments(key: &str, v: &Value) -> Result<Vec<Attachment>, CniError> {
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

    /// `interfaceArgs.master`, or when not given, the link of the node's default route of
    /// the first address's family in the calling thread's namespace, as OpenShift's plugin
    /// chooses it (a kernel read, blocking). Fails with `NotFound` without such a route.
    pub fn resolve_master(&self) -> Result<String> {
        if let Some(m) = &self.master {
            return Ok(m.clone());
        }
        let v6 = self.first_address_is_ipv6();
        blocking::default_route_link(&Netns::Current, v6)?.ok_or_else(|| Error::NotFound {
            field: "external.macvlan.parent".into(),
            object: "default route (to name the master link by)",
            value: if v6 { "::/0" } else { "0.0.0.0/0" }.into(),
            netns: "of the plugin (the node's)".into(),
        })
    }

    /// The router of an ADD or CHECK: named [`router_name`], in `CNI_NETNS`, a macvlan called
    /// `CNI_IFNAME` on `master` (in the namespace the plugin runs in), and everything the
    /// configuration says. A spec error names the configuration key it comes from.
    ///
    /// Panics if `inv` is not an ADD, CHECK (or a DEL with `CNI_NETNS`).
    pub fn router_spec(&self, inv: &Invocation, master: &str) -> Result<RouterSpec, CniError> {
        let (id, netns, ifname) = inv.attachment();
        let mut b = RouterSpec::builder(router_name(id, ifname))
            .netns_path(netns)
            .macvlan(master, self.mode)
            .link_name(ifname)
            .internal(&self.internal);
        if let Some(mtu) = self.mtu {
            b = b.mtu(mtu);
        }
        for a in &self.addresses {
            b = b.source(a);
        }
        for (g, _) in &self.gateways {
            b = b.gateway(g);
        }
        for (r, _) in &self.redirects {
            b = b.redirect(r.protocol, r.port, r.to.to_string(), Some(r.to_port));
        }
        for (f, _) in &self.fallbacks {
            b = b.fallback(f.to_string());
        }
        for (dst, gw) in &self.keep_routes {
            b = b.keep_route(dst, gw.as_deref());
        }
        b.build().map_err(|e| self.spec_error(e))
    }

    /// A spec validation error, named by the configuration key it came from.
    fn spec_error(&self, e: Error) -> CniError {
        let Error::InvalidSpec {
            field,
            value,
            expected,
            others,
        } = e
        else {
            return CniError::from_core(&e);
        };
        let expected = with_others(&expected, &others);
        let indexed = |prefix: &str| -> Option<(usize, String)> {
            let rest = field.strip_prefix(prefix)?.strip_prefix('[')?;
            let (i, rest) = rest.split_once(']')?;
            Some((i.parse().ok()?, rest.trim_start_matches('.').to_string()))
        };
        let key = if let Some((i, _)) = indexed("sources") {
            format!("ip.addresses[{i}]")
        } else if field == "sources" {
            "ip.addresses".into()
        } else if let Some((i, _)) = indexed("gateways") {
            self.gateways[i].1.clone()
        } else if field == "gateways" {
            "ip.gateway".into()
        } else if let Some((i, sub)) = indexed("redirects") {
            match &self.redirects[i].1 {
                Origin::Line(line) => line.clone(),
                Origin::Rule(k) => {
                    let sub = match sub.as_str() {
                        "to" => "destinationIP",
                        "to_port" => "targetPort",
                        other => other,
                    };
                    format!("redirectRules[{k}].{sub}")
                }
            }
        } else if let Some((i, _)) = indexed("fallback") {
            self.fallbacks[i].1.clone()
        } else if let Some((i, sub)) = indexed("kept_routes") {
            format!(
                "keepRoutes[{i}].{}",
                if sub == "via" { "gw" } else { "dst" }
            )
        } else {
            let (code, key) = config_field(&field);
            let expected = expected.replace("the external link", "CNI_IFNAME (the macvlan)");
            return CniError::invalid(code, &key, &value, expected);
        };
        CniError::invalid(code::INVALID_CONFIG, &key, &value, expected)
    }
}

// ---------------------------------------------------------------------------------------------
// Replies

/// The ADD result in `version`: the macvlan (`interfaces[0]`, in the pod's `sandbox`), each
/// egress address with its gateway (`ips`, on interface 0; 0.4.0 adds each one's `version`),
/// and the default routes via the gateways (`routes`). 1.1.0 adds the interface's `mtu`.
///
/// `link` is the macvlan as [`inspect`](egress_core::inspect) reads it back after the ADD; without
/// one (it vanished in between) the ADD fails with code 101.
pub fn add_result(
    version: CniVersion,
    spec: &RouterSpec,
    netns: &Path,
    link: Option<&LinkState>,
) -> Result<Value, CniError> {
    let Some(link) = link else {
        return Err(CniError::new(
            code::ROLLED_BACK,
            format!(
                "link {} is missing right after the ADD configured it",
                spec.external().link_name()
            ),
            "",
        ));
    };
    let mut interface = json!({"name": link.name, "mac": link.mac, "sandbox": netns});
    if version >= CniVersion::V1_1_0 {
        interface["mtu"] = link.mtu.into();
    }
    let gateway = |v4: bool| -> Option<IpAddr> {
        if v4 {
            spec.gateway4().map(IpAddr::from)
        } else {
            spec.gateway6().map(IpAddr::from)
        }
    };
    let ips: Vec<Value> = spec
        .sources()
        .iter()
        .map(|s| {
            let mut ip = json!({"address": s.to_string(), "interface": 0});
            if let Some(g) = gateway(s.is_ipv4()) {
                ip["gateway"] = g.to_string().into();
            }
            if version == CniVersion::V0_4_0 {
                ip["version"] = if s.is_ipv4() { "4" } else { "6" }.into();
            }
            ip
        })
        .collect();
    let routes: Vec<Value> = [(true, "0.0.0.0/0"), (false, "::/0")]
        .into_iter()
        .filter_map(|(v4, dst)| gateway(v4).map(|g| json!({"dst": dst, "gw": g.to_string()})))
        .collect();
    Ok(json!({
        "cniVersion": version.as_str(),
        "interfaces": [interface],
        "ips": ips,
        "routes": routes,
        "dns": {},
    }))
}

/// The VERSION reply: the newest version, and every supported one.
pub fn version_result() -> Value {
    json!({"cniVersion": CniVersion::LATEST.as_str(), "supportedVersions": SUPPORTED_VERSIONS})
}

/// What CHECK learns from `prevResult` (the ADD's result), against the spec and the macvlan as
/// the kernel has it: the interface must be listed in this sandbox with the MAC it has now,
/// and every address listed on it must still be configured. One line per difference.
pub fn prev_result_drift(
    prev: &Value,
    spec: &RouterSpec,
    netns: &Path,
    link: Option<&LinkState>,
) -> Vec<String> {
    let ifname = spec.external().link_name();
    let sandbox = netns.to_string_lossy();
    let interfaces = prev["interfaces"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let Some(index) = interfaces
        .iter()
        .position(|i| i["name"] == ifname && i["sandbox"] == *sandbox)
    else {
        return vec![format!(
            "prevResult lists no interface {ifname} in sandbox {sandbox}"
        )];
    };
    let mut drift = Vec::new();
    if let (Some(mac), Some(link)) = (interfaces[index]["mac"].as_str(), link) {
        if !mac.eq_ignore_ascii_case(&link.mac) {
            drift.push(format!(
                "interface {ifname}: MAC is {}, prevResult says {mac}",
                link.mac
            ));
        }
    }
    for ip in prev["ips"].as_array().into_iter().flatten() {
        if ip["interface"].as_u64() != Some(index as u64) {
            continue;
        }
        let address = ip["address"].as_str().unwrap_or_default();
        if !spec.sources().iter().any(|s| s.to_string() == address) {
            drift.push(format!(
                "address {address} of prevResult is not in the configuration's ip.addresses"
            ));
        }
    }
    drift
}

// ---------------------------------------------------------------------------------------------
// Kernel probes of the namespace the plugin runs in (the node's)

/// STATUS: whether an ADD can work here: `CAP_NET_ADMIN`, and the master link present in the
/// calling thread's namespace. Blocking.
pub fn probe(master: &str) -> Result<()> {
    if blocking::link_exists(&Netns::Current, master)? {
        return Ok(());
    }
    Err(Error::NotFound {
        field: "external.macvlan.parent".into(),
        object: "link",
        value: master.to_string(),
        netns: "of the plugin (the node's)".into(),
    })
}

// ---------------------------------------------------------------------------------------------

/// What would be valid, followed by every other invalid field of the spec, so that one run
/// reports every mistake.
fn with_others(expected: &str, others: &[egress_core::InvalidField]) -> String {
    match others.len() {
        0 => expected.to_string(),
        n => format!(
            "{expected}; and {n} more: {}",
            others
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// A JSON value as a message shows it: strings bare, everything else as JSON.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// At most 80 characters, for messages.
fn clip(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests;
