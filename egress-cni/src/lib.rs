//! # egress-cni
//!
//! The CNI plugin's contract, mapped onto a [`RouterSpec`](egress_core::RouterSpec) of [`egress_core`]: the `CNI_*`
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
//! | `ip.destinations` | one rule per element, in the `EGRESS_DESTINATION` line syntax ([`parse_destination`](egress_openshift::parse_destination)): `LPORT PROTO IP [RPORT]`, or `IP` (the fallback, last); PROTO in any case, IP optionally `/32` or `/128` |
//! | `redirectRules` | EgressRouter's rules: `[{"destinationIP", "port", "protocol", "targetPort"}]` |
//! | `fallbackIP` | EgressRouter's fallback: where every other port goes (or a list, one per family) |
//! | `internalInterface` | the pod's cluster link, where clients connect (default [`DEFAULT_INTERNAL_INTERFACE`], the link the primary plugin created before Multus calls this one) |
//! | `keepRoutes` | routes kept through the internal link once the default route is the router's: `[{"dst": "10.128.0.0/14", "gw": "10.129.0.1"}]` |
//! | `role`, `routerName`, `stableMac` | an HA pair's router ([`NetConf::role`]): applied as a `standby`, named for the keepalived sidecar's `egress-router keepalived`, with the MAC it takes while active |
//! | `log_file`, `log_level` | append the plugin's log to this file, in the node's log directory only ([`NetConf::log_file_in`], [`NodeConfig`], [`open_log_file`]); `panic`, `error` (default: failures and warnings), `verbose`, `debug` |
//!
//! Keys that runtimes add (`args`, `runtimeConfig`, `capabilities`, `prevResult`, `cniVersions`,
//! `disableCheck`, `disableGC`, `loadOnlyInlinedPlugins`, `cni.dev/valid-attachments`,
//! `cni.dev/attachments`) are accepted. Every other key is an error naming it (code 2): a typo
//! must not be silently ignored. So are the keys of features this plugin does not have
//! (`ipam`, `dns`, `ipMasq`, `podIP`, `ipConfig`).
//!
//! The configuration is untrusted (a namespace's admin writes it; the plugin runs as the node's
//! root): at most [`MAX_CONFIG_LEN`] bytes, every key of an object once, every invalid key
//! reported at once, and control characters of values escaped in every message
//! ([`escape_control`]).
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
//! | 5 | I/O failure (reading stdin, opening `log_file` in the node's log directory) |
//! | 6 | decode failure: stdin is not a JSON object |
//! | 7 | invalid network configuration: the message names the key and the value; a repeated key; over [`MAX_CONFIG_LEN`] bytes |
//! | 11 | try again later: the kernel was busy, everything was rolled back |
//! | 50 | STATUS: not available (no `CAP_NET_ADMIN`, no master link) |
//! | 100 | the node or the pod rules the configuration out (a link missing or already there, an MTU over the master's); nothing changed |
//! | 101 | a kernel change failed and everything was rolled back; nothing changed |
//! | 102 | something is left behind: rollback or DEL incomplete (`details` lists what) |
//! | 103 | permission denied: the plugin needs `CAP_NET_ADMIN` and `CAP_SYS_ADMIN` |
//! | 104 | CHECK: the attachment differs from its configuration (`details` lists each difference) |
//! | 999 | a bug: the plugin panicked |

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

mod config;
mod error;
mod invocation;
mod node;
mod reply;
mod spec;

pub use config::{
    parse_config, reply_version, Attachment, CniVersion, LogLevel, NetConf, MAX_CONFIG_LEN,
};
pub use egress_openshift::logging::escape_control;
pub use error::CniError;
pub use invocation::{router_name, Command, Invocation};
pub use node::{open_log_file, NodeConfig, NODE_CONFIG_FILE};
pub use reply::{add_result, prev_result_drift, probe, version_result};

#[cfg(test)]
mod tests;
