//! # egress-core
//!
//! Turn a Linux network namespace into an *egress router*: traffic that reaches the router on
//! its internal (cluster) link is DNAT-ed to an external destination and leaves through a
//! macvlan on the external network, SNAT-ed to one known egress IP, via the external gateway.
//! Nothing else is forwarded.
//!
//! A [`RouterSpec`] (built, or parsed from JSON) is validated up front. What the router *is* —
//! every kernel object it consists of — is computed from it once, as its [`Desired`] state,
//! without touching the kernel; everything else is derived from that one model:
//! - [`RouterSpec::plan`]: the dry run, every change an apply makes;
//! - [`apply()`]: the plan run as one transaction (every change journals its undo, any failure
//!   rolls back everything), then verified by reading the namespace again;
//! - [`check`]: how a namespace differs ([`Drift`]); [`plan()`]: what it still needs;
//! - [`ensure`]: only the difference, repaired in place;
//! - [`Router::teardown`] / [`teardown_by_name`]: the namespace returned to exactly what it was,
//!   from the kernel's markers and the router's crash record;
//! - [`inspect()`]: what the router owns, read back;
//! - [`diagnose()`]: why a router does not work, with probes (ARP/ND, TCP, counters) and the fix;
//! - [`apply_as`] a [`Role::Standby`], then [`promote`] / [`demote`]: high availability, with
//!   an election engine (keepalived, a Kubernetes Lease) deciding which instance is active.
//!
//! ```no_run
//! use egress_core::{blocking, MacvlanMode, Protocol, RouterSpec};
//!
//! let spec = RouterSpec::builder("egress-1")
//!     .netns_name("pod")                          // the router pod's namespace
//!     .macvlan("eth1", MacvlanMode::Private)      // parent link, in the caller's namespace
//!     .source("203.0.113.99/24")                  // the egress IP the firewall allows
//!     .gateway("203.0.113.1")
//!     .redirect(Protocol::Tcp, 80, "198.51.100.25", Some(8080))
//!     .fallback("198.51.100.9")
//!     .build()?;
//! print!("{}", spec.plan());                      // dry run
//! let router = blocking::apply(&spec)?;           // or `egress_core::apply(&spec).await`
//! blocking::teardown(router)?;                    // back to exactly what it was
//! # Ok::<(), egress_core::Error>(())
//! ```
//!
//! ## What it owns, and how it finds it again
//! - the nftables table `inet egress_<name>` (NAT, forward filter, and in its comment the crash
//!   record: the sysctl values and default routes it replaced, and its apply id);
//! - the same crash record as `blackhole` routes with protocol [`ROUTE_PROTOCOL`] in routing
//!   table [`JOURNAL_TABLE`], where no nftables flush reaches it;
//! - copies of the default routes it replaced, in routing tables [`JOURNAL_TABLE`] and
//!   [`MIRROR_TABLE`];
//! - the macvlan, marked by its link group ([`link_group_marker`]);
//! - addresses with protocol [`ADDRESS_PROTOCOL`] and routes with protocol [`ROUTE_PROTOCOL`].
//!
//! Nothing is touched that is not proven the router's: a table whose comment looks like a
//! router's is trusted only when a marked object vouches for it.
//!
//! All calls need `CAP_NET_ADMIN` (and `CAP_SYS_ADMIN` to enter other namespaces).
//!
//! ## Threads, fork
//! The namespace work runs on the crate's own threads, never on the caller's: each call is a
//! job on a pool thread (at most [`MAX_CALL_THREADS`] at once, more calls wait their turn;
//! [`MAX_NESTED_THREADS`] for the work calls start beside them; a watch on a thread of its
//! own), driven by that thread's tokio runtime. The async API awaits the job on any executor;
//! [`blocking`] parks the calling thread, inside an async runtime too. A [`Router`] is `Send` and
//! `Sync` (role changes through one handle run one at a time) and acts on the namespaces it
//! holds. A child of `fork` may call anything, and use its parent's handles: the pool and the
//! other process-wide state are made again in it.

pub mod blocking;
mod context;
mod drift;
mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod kernel;
mod model;
mod objects;
mod operations;
mod role;
mod spec;

pub use drift::Drift;
pub use error::{Error, ErrorKind, InvalidField, Result, Rollback};
pub use kernel::{
    netns::{MAX_CALL_THREADS, MAX_NESTED_THREADS},
    procfs::SysctlKey,
};
pub use model::{Desired, Plan};
pub use objects::{
    addr::ADDRESS_PROTOCOL,
    link::group_marker as link_group_marker,
    record::{JOURNAL_TABLE, MIRROR_TABLE},
    route::ROUTE_PROTOCOL,
    Step,
};
pub use operations::{
    apply::{apply, apply_as, Router},
    diagnose::{diagnose, diagnose_spec, Check, DiagnoseOptions, Diagnosis, Status},
    ensure::{check, ensure, ensure_as, plan, plan_as, EnsureAction, EnsureOutcome},
    inspect::{default_route_link, inspect, link_exists, LinkState, RouterState},
    roles::{demote, promote, RoleChange},
    stats::{stats, FallbackStats, RedirectStats, SnatStats, Stats},
    teardown::{plan_teardown, teardown_by_name},
    watch::{watch, WatchEnd, WatchEvent, Watcher},
};
pub use role::Role;
pub use spec::{
    Announce, External, KeptRoute, LocalPort, Macvlan, MacvlanMode, Netns, Protocol, Redirect,
    RouterSpec, RouterSpecBuilder, DEFAULT_ANNOUNCE_INTERVAL, DEFAULT_PROBE_TIMEOUT, MAX_ANNOUNCE,
    MAX_ANNOUNCE_INTERVAL, MAX_IFNAME_LEN, MAX_NAME_LEN, MAX_PROBE_TIMEOUT,
};
