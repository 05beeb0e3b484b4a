//! The synchronous facade, for callers without an async runtime (the Python and C bindings,
//! the binaries). Each call runs on a current-thread tokio runtime owned by the calling thread;
//! calling one from a thread that runs an async runtime is [`Error::BlockingInAsync`].
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

use std::{cell::OnceCell, future::Future};

use crate::{
    error::{Error, Result},
    DiagnoseOptions, Diagnosis, Drift, EnsureOutcome, Netns, Plan, Role, RoleChange, Router,
    RouterSpec, RouterState, Stats,
};

thread_local! {
    static RUNTIME: OnceCell<tokio::runtime::Runtime> = const { OnceCell::new() };
}

/// Runs `f` to completion on this thread's runtime; `call` names the blocking function, for
/// the error when this thread runs an async runtime already.
pub(crate) fn block_on<T>(call: &'static str, f: impl Future<Output = Result<T>>) -> Result<T> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::BlockingInAsync { call });
    }
    RUNTIME.with(|cell| runtime_in(cell)?.block_on(f))
}

/// The current-thread runtime kept in `cell` (a thread's own), made on first use.
pub(crate) fn runtime_in(
    cell: &OnceCell<tokio::runtime::Runtime>,
) -> Result<&tokio::runtime::Runtime> {
    if let Some(rt) = cell.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| Error::kernel("start the netlink runtime", e.raw_os_error().unwrap_or(0)))?;
    Ok(cell.get_or_init(|| rt))
}

/// [`crate::apply()`], blocking.
pub fn apply(spec: &RouterSpec) -> Result<Router> {
    block_on("apply", crate::apply(spec))
}

/// [`crate::apply_as`], blocking.
pub fn apply_as(spec: &RouterSpec, role: Role) -> Result<Router> {
    block_on("apply_as", crate::apply_as(spec, role))
}

/// [`crate::ensure_as`], blocking.
pub fn ensure_as(spec: &RouterSpec, role: Role) -> Result<EnsureOutcome> {
    block_on("ensure_as", crate::ensure_as(spec, role))
}

/// [`crate::promote`], blocking.
pub fn promote(netns: &Netns, name: &str) -> Result<RoleChange> {
    block_on("promote", crate::promote(netns, name))
}

/// [`crate::demote`], blocking.
pub fn demote(netns: &Netns, name: &str) -> Result<RoleChange> {
    block_on("demote", crate::demote(netns, name))
}

/// [`Router::promote`], blocking.
pub fn promote_router(router: &Router) -> Result<RoleChange> {
    block_on("promote", router.promote())
}

/// [`Router::demote`], blocking.
pub fn demote_router(router: &Router) -> Result<RoleChange> {
    block_on("demote", router.demote())
}

/// [`RoleChange::finish_announcements`], blocking.
pub fn finish_announcements(change: RoleChange) -> Result<()> {
    block_on("finish_announcements", change.finish_announcements())
}

/// [`Router::teardown`], blocking.
pub fn teardown(router: Router) -> Result<Vec<String>> {
    block_on("teardown", router.teardown())
}

/// [`crate::teardown_by_name`], blocking.
pub fn teardown_by_name(netns: &Netns, name: &str) -> Result<Vec<String>> {
    block_on("teardown_by_name", crate::teardown_by_name(netns, name))
}

/// [`crate::inspect()`], blocking.
pub fn inspect(netns: &Netns, name: &str) -> Result<Option<RouterState>> {
    block_on("inspect", crate::inspect(netns, name))
}

/// [`crate::check`], blocking.
pub fn check(spec: &RouterSpec) -> Result<Vec<Drift>> {
    block_on("check", crate::check(spec))
}

/// [`crate::plan()`], blocking.
pub fn plan(spec: &RouterSpec) -> Result<Plan> {
    block_on("plan", crate::plan(spec))
}

/// [`crate::plan_as`], blocking.
pub fn plan_as(spec: &RouterSpec, role: Role) -> Result<Plan> {
    block_on("plan_as", crate::plan_as(spec, role))
}

/// [`crate::plan_teardown`], blocking.
pub fn plan_teardown(netns: &Netns, name: &str) -> Result<Vec<String>> {
    block_on("plan_teardown", crate::plan_teardown(netns, name))
}

/// [`crate::ensure`], blocking.
pub fn ensure(spec: &RouterSpec) -> Result<EnsureOutcome> {
    block_on("ensure", crate::ensure(spec))
}

/// [`crate::default_route_link`], blocking.
pub fn default_route_link(netns: &Netns, ipv6: bool) -> Result<Option<String>> {
    block_on("default_route_link", crate::default_route_link(netns, ipv6))
}

/// [`crate::link_exists`], blocking.
pub fn link_exists(netns: &Netns, name: &str) -> Result<bool> {
    block_on("link_exists", crate::link_exists(netns, name))
}

/// [`crate::stats()`], blocking.
pub fn stats(netns: &Netns, name: &str) -> Result<Option<Stats>> {
    block_on("stats", crate::stats(netns, name))
}

/// [`crate::diagnose()`], blocking.
pub fn diagnose(netns: &Netns, name: &str, options: &DiagnoseOptions) -> Result<Diagnosis> {
    block_on("diagnose", crate::diagnose(netns, name, options))
}

/// [`crate::diagnose_spec`], blocking.
pub fn diagnose_spec(spec: &RouterSpec, options: &DiagnoseOptions) -> Result<Diagnosis> {
    block_on("diagnose_spec", crate::diagnose_spec(spec, options))
}
