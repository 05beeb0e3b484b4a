//! # egress-core
//!
//! Turn a Linux network namespace into an *egress router*: traffic that reaches the router on
//! its internal (cluster) link is DNAT-ed to an external destination and leaves through a
//! macvlan on the external network, SNAT-ed to one known egress IP, via the external gateway.
//! Nothing else is forwarded.
//!
//! A [`RouterSpec`] (built, or parsed from JSON) is validated up front, rendered as a dry-run
//! [`Plan`], and applied over netlink as one transaction: every change journals its undo, any
//! failure rolls back everything, and [`Router::teardown`] / [`teardown_by_name`] return the
//! namespace to exactly what it was. [`inspect`], [`check`] and [`ensure`] read the router back,
//! report drift and converge.
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
//!   journal: the sysctl values it replaced);
//! - the macvlan, marked by its link group ([`link_group_marker`]);
//! - addresses with protocol [`ADDRESS_PROTOCOL`] and routes with protocol [`ROUTE_PROTOCOL`];
//! - copies of the default routes it replaced, in routing table [`JOURNAL_TABLE`].
//!
//! All calls need `CAP_NET_ADMIN` (and `CAP_SYS_ADMIN` to enter other namespaces).

mod apply;
pub mod blocking;
mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod inspect;
mod journal;
mod netns;
mod ops;
mod plan;
mod query;
mod spec;

pub use apply::{apply, Router};
pub use error::{Error, ErrorKind, Result, Rollback};
pub use inspect::{
    check, ensure, inspect, teardown_by_name, Drift, EnsureAction, EnsureOutcome, LinkState,
    RouterState,
};
pub use ops::{
    addr::ADDRESS_PROTOCOL,
    link::group_marker as link_group_marker,
    route::{JOURNAL_TABLE, ROUTE_PROTOCOL},
};
pub use plan::{Plan, Step};
pub use query::{default_route_link, link_exists};
pub use spec::{
    External, KeptRoute, Macvlan, MacvlanMode, Netns, Protocol, Redirect, RouterSpec,
    RouterSpecBuilder, MAX_ANNOUNCE, MAX_IFNAME_LEN, MAX_NAME_LEN,
};
