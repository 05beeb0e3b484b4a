//! The network configuration on stdin: parsed and checked, every key named in its errors.

use std::{
    ffi::OsStr,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde_json::Value;

use egress_core::{MacvlanMode, Redirect, Result, Role};

use crate::{code, error::clip, CniError, Command, SUPPORTED_VERSIONS};

mod check;
mod json;
mod shape;

pub use json::MAX_CONFIG_LEN;

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
    /// Failures and warnings (the default).
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
    /// `log_file` as the configuration gives it: a file name, or an absolute path.
    pub fn log_file(&self) -> Option<&Path> {
        self.log_file.as_deref()
    }
    /// The name of the file `log_file` names in the node's log directory `dir`: `log_file`
    /// itself when it is a file name, its last component when it is a path in `dir`. `None`
    /// when it is elsewhere, or not given: the plugin writes only in the directory the
    /// node's admin chose ([`NodeConfig`](crate::NodeConfig)).
    ///
    /// ```
    /// # use std::{ffi::OsStr, path::Path};
    /// let conf = |file: &str| egress_cni::parse_config(format!(r#"{{"cniVersion": "1.1.0",
    ///     "name": "n", "type": "egress-cni", "ip": {{"addresses": ["203.0.113.9"]}},
    ///     "log_file": "{file}"}}"#).as_bytes()).unwrap();
    /// let dir = Path::new("/var/log/egress-cni");
    /// assert_eq!(conf("egress-1.log").log_file_in(dir), Some(OsStr::new("egress-1.log")));
    /// assert_eq!(conf("/var/log/egress-cni/e.log").log_file_in(dir), Some(OsStr::new("e.log")));
    /// assert_eq!(conf("/var/log/egress-cni/sub/e.log").log_file_in(dir), None);
    /// assert_eq!(conf("/etc/cron.d/e").log_file_in(dir), None);
    /// ```
    pub fn log_file_in(&self, dir: &Path) -> Option<&OsStr> {
        let file = self.log_file.as_deref()?;
        let name = file.file_name()?;
        // Paths compare by component: `/var/log/x/` is `/var/log/x`.
        match file.parent().filter(|p| !p.as_os_str().is_empty()) {
            None => Some(name),
            Some(parent) => (parent == dir).then_some(name),
        }
    }
    /// `role`: the role an ADD applies a new router in (`active` unless `standby` is asked
    /// for: an HA pair's keepalived sidecar then promotes it, `egress-router keepalived`).
    pub fn role(&self) -> Role {
        self.role
    }
    /// `routerName`, when given: the router's name in the pod, which the HA sidecar's
    /// `egress-router keepalived` names (else [`router_name`](crate::router_name) of the
    /// attachment).
    pub fn router_name(&self) -> Option<&str> {
        self.router_name.as_deref()
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

/// Parses and validates a network configuration (the plugin's stdin): at most
/// [`MAX_CONFIG_LEN`] bytes of one JSON object (code 7 beyond, 6 for anything else), a
/// supported `cniVersion` (1), no unknown, unsupported or repeated key (2, 2, 7), every value
/// (7). One pass finds every problem: the error is the most fundamental one, and names the
/// others (see [`CniError`]'s `details`). What needs the kernel or the attachment is checked by
/// [`NetConf::router_spec`] and the core.
pub fn parse_config(stdin: &[u8]) -> Result<NetConf, CniError> {
    if stdin.len() > MAX_CONFIG_LEN {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!(
                "the network configuration on stdin is over {MAX_CONFIG_LEN} bytes (1 MiB): \
                 refused unread"
            ),
            "",
        ));
    }
    let (value, repeated) = json::decode(stdin).map_err(|e| {
        CniError::new(
            code::DECODING_FAILURE,
            format!("the network configuration on stdin is not valid JSON: {e}"),
            "",
        )
    })?;
    if !value.is_object() {
        return Err(CniError::new(
            code::DECODING_FAILURE,
            format!(
                "the network configuration on stdin is not a JSON object: {}",
                clip(&value.to_string())
            ),
            "",
        ));
    }
    // Every key of the shape is a `Field`, which takes any value: an object always fits.
    let conf: shape::Conf = serde_json::from_value(value).map_err(|e| {
        CniError::new(
            code::DECODING_FAILURE,
            format!("the network configuration on stdin cannot be read: {e}"),
            "",
        )
    })?;
    check::net_conf(conf, repeated)
}

/// The `cniVersion` of a configuration, for the reply to a configuration that did not parse
/// (the newest version when it names no supported one).
pub fn reply_version(stdin: &[u8]) -> CniVersion {
    if stdin.len() > MAX_CONFIG_LEN {
        return CniVersion::LATEST;
    }
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().and_then(CniVersion::parse))
        .unwrap_or(CniVersion::LATEST)
}
