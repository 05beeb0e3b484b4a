//! The environment of one invocation (`CNI_*`), checked.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use egress_core::{Result, MAX_IFNAME_LEN, MAX_NAME_LEN};

use crate::CniError;

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
    pub(crate) fn attachment(&self) -> (&str, &Path, &str) {
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
pub(crate) fn check_container_id(id: &str) -> Result<(), CniError> {
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
pub(crate) fn check_ifname(name: &str) -> Result<(), CniError> {
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
