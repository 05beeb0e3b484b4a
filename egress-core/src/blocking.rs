//! The synchronous facade, for callers without an async runtime (the Python and C bindings,
//! the binaries): each function runs the async call of the same name and parks the calling
//! thread until it is done. The work itself runs where the async call runs it, on a thread of
//! the crate's pool, with that thread's runtime: the caller's thread runs no runtime, so a
//! blocking call is just a blocking call anywhere, inside an async runtime too (where it blocks
//! that runtime's thread like any other blocking call would).
//!
//! ```no_run
//! use egress_core::{blocking, MacvlanMode, RouterSpec};
//!
//! let spec = RouterSpec::builder("egress-1")
//!     .netns_name("pod")
//!     .macvlan("eth1", MacvlanMode::Private)
//!     .source("203.0.113.99/24")
//!     .gateway("203.0.113.1")
//!     .fallback("198.51.100.9")
//!     .build()?;
//! let router = blocking::apply(&spec)?;
//! blocking::teardown(router)?;
//! # Ok::<(), egress_core::Error>(())
//! ```

use crate::{
    error::Result, kernel::wait::wait, DiagnoseOptions, Diagnosis, Drift, EnsureOutcome, Netns,
    Plan, Role, RoleChange, Router, RouterSpec, RouterState, Stats,
};

/// [`crate::apply()`], blocking.
pub fn apply(spec: &RouterSpec) -> Result<Router> {
    wait(crate::apply(spec))
}

/// [`crate::apply_as`], blocking.
pub fn apply_as(spec: &RouterSpec, role: Role) -> Result<Router> {
    wait(crate::apply_as(spec, role))
}

/// [`crate::ensure_as`], blocking.
pub fn ensure_as(spec: &RouterSpec, role: Role) -> Result<EnsureOutcome> {
    wait(crate::ensure_as(spec, role))
}

/// [`crate::promote`], blocking.
pub fn promote(netns: &Netns, name: &str) -> Result<RoleChange> {
    wait(crate::promote(netns, name))
}

/// [`crate::demote`], blocking.
pub fn demote(netns: &Netns, name: &str) -> Result<RoleChange> {
    wait(crate::demote(netns, name))
}

/// [`Router::promote`], blocking.
pub fn promote_router(router: &Router) -> Result<RoleChange> {
    wait(router.promote())
}

/// [`Router::demote`], blocking.
pub fn demote_router(router: &Router) -> Result<RoleChange> {
    wait(router.demote())
}

/// [`RoleChange::finish_announcements`], blocking.
pub fn finish_announcements(change: RoleChange) -> Result<()> {
    wait(change.finish_announcements())
}

/// [`Router::teardown`], blocking.
pub fn teardown(router: Router) -> Result<Vec<String>> {
    wait(router.teardown())
}

/// [`crate::teardown_by_name`], blocking.
pub fn teardown_by_name(netns: &Netns, name: &str) -> Result<Vec<String>> {
    wait(crate::teardown_by_name(netns, name))
}

/// [`crate::inspect()`], blocking.
pub fn inspect(netns: &Netns, name: &str) -> Result<Option<RouterState>> {
    wait(crate::inspect(netns, name))
}

/// [`crate::check`], blocking.
pub fn check(spec: &RouterSpec) -> Result<Vec<Drift>> {
    wait(crate::check(spec))
}

/// [`crate::plan()`], blocking.
pub fn plan(spec: &RouterSpec) -> Result<Plan> {
    wait(crate::plan(spec))
}

/// [`crate::plan_as`], blocking.
pub fn plan_as(spec: &RouterSpec, role: Role) -> Result<Plan> {
    wait(crate::plan_as(spec, role))
}

/// [`crate::plan_teardown`], blocking.
pub fn plan_teardown(netns: &Netns, name: &str) -> Result<Vec<String>> {
    wait(crate::plan_teardown(netns, name))
}

/// [`crate::ensure`], blocking.
pub fn ensure(spec: &RouterSpec) -> Result<EnsureOutcome> {
    wait(crate::ensure(spec))
}

/// [`crate::default_route_link`], blocking.
pub fn default_route_link(netns: &Netns, ipv6: bool) -> Result<Option<String>> {
    wait(crate::default_route_link(netns, ipv6))
}

/// [`crate::link_exists`], blocking.
pub fn link_exists(netns: &Netns, name: &str) -> Result<bool> {
    wait(crate::link_exists(netns, name))
}

/// [`crate::stats()`], blocking.
pub fn stats(netns: &Netns, name: &str) -> Result<Option<Stats>> {
    wait(crate::stats(netns, name))
}

/// [`crate::diagnose()`], blocking.
pub fn diagnose(netns: &Netns, name: &str, options: &DiagnoseOptions) -> Result<Diagnosis> {
    wait(crate::diagnose(netns, name, options))
}

/// [`crate::diagnose_spec`], blocking.
pub fn diagnose_spec(spec: &RouterSpec, options: &DiagnoseOptions) -> Result<Diagnosis> {
    wait(crate::diagnose_spec(spec, options))
}

/// [`Router::stats`], blocking.
pub fn stats_router(router: &Router) -> Result<Option<Stats>> {
    wait(router.stats())
}

/// [`Router::diagnose`], blocking.
pub fn diagnose_router(router: &Router, options: &DiagnoseOptions) -> Result<Diagnosis> {
    wait(router.diagnose(options))
}
