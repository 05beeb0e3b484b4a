//! Applying, converging, checking, planning, inspecting and tearing down routers, through
//! [`egress_core::blocking`]. All of these need `CAP_NET_ADMIN` (and `CAP_SYS_ADMIN` to enter
//! another namespace) and block until the kernel has answered.

use std::ffi::c_char;

use egress_core::{blocking, EnsureAction, Netns, Role, Router, Stats};

use crate::{
    error::{arg_out, arg_ref, arg_str, call, egress_result, put_string, Failure},
    spec::egress_spec,
};

/// A live router (opaque): what `egress_spec_apply` built. It holds the router's namespace
/// (an open file descriptor: a namespace given by pid, or the caller's, stays the one it was)
/// and the apply id of its crash record; every call through it acts on that router in that
/// namespace, and refuses with `EGRESS_RESULT_STALE_HANDLE` one torn down and applied again
/// by someone else since. Consumed by `egress_router_teardown`; `egress_router_free`
/// releases the handle and leaves the router configured.
///
/// Threads: any number of threads may call `egress_router_promote`, `egress_router_demote`,
/// `egress_router_stats_json` and `egress_router_diagnose_json` on one router at once; the
/// role changes run one at a time (a second waits for the first to end), the reads beside
/// them. `egress_router_teardown` and `egress_router_free` consume the handle: no other call
/// on it may run at the same time or come after.
///
/// Fork: a child process may use a router its parent made (to tear it down, or anything
/// else); the router is kernel state, which parent and child share.
pub struct egress_router(Router);

impl egress_router {
    pub(crate) fn inner(&self) -> &Router {
        &self.0
    }
}

// The thread safety the header promises: a router may be used by several threads at once, a
// spec too.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<egress_router>();
    send_sync::<egress_spec>();
};

/// What `egress_spec_ensure` did.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum egress_ensure_action {
    /// The call failed: `egress_spec_ensure` sets `*action_out` to it first, and leaves it on
    /// any failure.
    None = 0,
    /// Nothing was configured: the router was applied.
    Created = 1,
    /// The kernel already matched the spec: nothing changed.
    Unchanged = 2,
    /// The kernel had drifted: the router was repaired to match the spec.
    Repaired = 3,
}

/// Applies `spec` as one transaction, verifies it by reading the namespace back, and stores the
/// live router in `*router_out`.
///
/// On failure the kernel is as it was (the message names the failed plan step, its errno and
/// says the rollback was complete), except with `EGRESS_RESULT_ROLLBACK_INCOMPLETE`, whose
/// message lists what remains. `EGRESS_RESULT_VERIFY_FAILED`: every step ran, but the namespace
/// read back did not hold the router (something changed it meanwhile); it was rolled back,
/// and a retry may succeed.
///
/// # Safety
/// `spec` must be NULL or a live spec; `router_out` must be NULL or point to writable storage
/// for a pointer. On success `*router_out` owns the router, to be passed to
/// `egress_router_teardown` or `egress_router_free`.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_apply(
    spec: *const egress_spec,
    router_out: *mut *mut egress_router,
) -> egress_result {
    call("egress_spec_apply", || {
        // SAFETY (both): as documented for the caller.
        let out = unsafe { arg_out(router_out, "router_out") }?;
        let spec = unsafe { arg_ref(spec, "spec") }?;
        let router = blocking::apply(&spec.0)?;
        *out = Box::into_raw(Box::new(egress_router(router)));
        Ok(())
    })
}

/// Tears the router down: undoes everything its apply did, in reverse order (restores the
/// previous default routes and sysctl values, deletes what it created). Runs every undo even
/// when one fails; `EGRESS_RESULT_TEARDOWN_INCOMPLETE` lists what remains. A router that is
/// gone already is success.
///
/// `EGRESS_RESULT_STALE_HANDLE`: the router of this name in the namespace cannot be shown to be
/// the one this handle applied (it was torn down and applied again by someone else, or its
/// crash record is gone); nothing was changed. Use `egress_router_teardown_by_name` if that
/// router must go.
///
/// Consumes `router` whatever the result (unless it is NULL): it must not be used or freed
/// afterwards. What remains after a failure can be retried with
/// `egress_router_teardown_by_name`.
///
/// # Safety
/// `router` must be NULL or a live router used by no other thread.
#[no_mangle]
pub unsafe extern "C" fn egress_router_teardown(router: *mut egress_router) -> egress_result {
    call("egress_router_teardown", || {
        if router.is_null() {
            return Err(Failure::new(
                egress_result::NullParameter,
                "argument `router` is NULL",
            ));
        }
        // SAFETY: made by `Box::into_raw` and not released yet, as the caller promises.
        let router = unsafe { Box::from_raw(router) };
        blocking::teardown(router.0)?;
        Ok(())
    })
}

/// Releases the router handle and leaves the router configured in the kernel (it is kernel
/// state, not a process); remove it later with `egress_router_teardown_by_name`. `NULL` is a
/// no-op.
///
/// # Safety
/// `router` must be NULL or a live router used by no other thread.
#[no_mangle]
pub unsafe extern "C" fn egress_router_free(router: *mut egress_router) {
    crate::error::boundary((), || {
        if !router.is_null() {
            // SAFETY: made by `Box::into_raw` and not released yet, as the caller promises.
            drop(unsafe { Box::from_raw(router) });
        }
    })
}

/// Converges the kernel to `spec` and stores what it did in `*action_out` (on success only):
/// applies it when the router is not configured, does nothing when it matches, repairs what
/// drifted, in place, as one transaction that is verified and rolled back on failure (the
/// codes are those of `egress_spec_apply`). The router is left in place either way (there is
/// no handle); remove it with `egress_router_teardown_by_name`.
///
/// # Safety
/// `spec` must be NULL or a live spec; `action_out` must be NULL or point to a writable
/// `egress_ensure_action`.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_ensure(
    spec: *const egress_spec,
    action_out: *mut egress_ensure_action,
) -> egress_result {
    call("egress_spec_ensure", || {
        if action_out.is_null() {
            return Err(Failure::new(
                egress_result::NullParameter,
                "argument `action_out` is NULL",
            ));
        }
        // SAFETY: non-NULL and writable, as documented for the caller; written without reading
        // (or referencing) what the caller's storage held.
        unsafe { action_out.write(egress_ensure_action::None) };
        // SAFETY: as documented for the caller.
        let spec = unsafe { arg_ref(spec, "spec") }?;
        let action = match blocking::ensure(&spec.0)?.action {
            EnsureAction::Created => egress_ensure_action::Created,
            EnsureAction::Unchanged => egress_ensure_action::Unchanged,
            EnsureAction::Repaired => egress_ensure_action::Repaired,
        };
        // SAFETY: as above.
        unsafe { action_out.write(action) };
        Ok(())
    })
}

/// Compares the kernel with `spec`; changes nothing. Stores the differences in `*drift_out` as
/// a JSON array (`[]` when there are none; each element an object with a `"kind"` such as
/// `"link_down"` or `"route_missing"` and its details; free it with `egress_string_free`).
///
/// Returns `EGRESS_RESULT_OK` when the kernel matches, `EGRESS_RESULT_DRIFT_FOUND` when it
/// differs (then `*drift_out` is set too, and the message lists each difference).
///
/// # Safety
/// `spec` must be NULL or a live spec; `drift_out` must be NULL or point to writable storage for
/// a pointer.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_check(
    spec: *const egress_spec,
    drift_out: *mut *mut c_char,
) -> egress_result {
    call("egress_spec_check", || {
        // SAFETY (both): as documented for the caller.
        let out = unsafe { arg_out(drift_out, "drift_out") }?;
        let spec = unsafe { arg_ref(spec, "spec") }?;
        let drift = blocking::check(&spec.0)?;
        let json = serde_json::to_string(&drift).expect("drift always serializes");
        put_string(out, json)?;
        if drift.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = drift.iter().map(ToString::to_string).collect();
        Err(Failure::new(
            egress_result::DriftFound,
            format!("drift found: {}", list.join("; ")),
        ))
    })
}

/// What the namespace of `spec` still needs to hold the router, as it is now: only the steps
/// that add what is missing or change back what is wrong (what `egress_spec_ensure` would do),
/// the whole plan when the router is not there, an empty string when it matches. One numbered
/// line per step, as `egress_spec_plan`, into `*plan_out` (free it with `egress_string_free`).
/// Reads the kernel and changes nothing. `EGRESS_RESULT_NOT_FOUND` when the namespace is not
/// there, or the link the spec adopts (no step could make it).
///
/// # Safety
/// `spec` must be NULL or a live spec; `plan_out` must be NULL or point to writable storage for
/// a pointer.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_plan_live(
    spec: *const egress_spec,
    plan_out: *mut *mut c_char,
) -> egress_result {
    call("egress_spec_plan_live", || {
        // SAFETY (both): as documented for the caller.
        let out = unsafe { arg_out(plan_out, "plan_out") }?;
        let spec = unsafe { arg_ref(spec, "spec") }?;
        put_string(out, blocking::plan(&spec.0)?.to_string())
    })
}

/// Tears down router `name` in the namespace at `netns_path` from what the kernel holds, without
/// a handle: after the process that applied it is gone, or after `egress_spec_ensure`
/// (`/run/netns/NAME` for a named namespace, `/proc/PID/ns/net` for a process's,
/// `/proc/thread-self/ns/net` for the caller's). Idempotent: a router that is not there is
/// success. Never touches objects without the router's markers.
///
/// # Safety
/// `netns_path` and `name` must each be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_router_teardown_by_name(
    netns_path: *const c_char,
    name: *const c_char,
) -> egress_result {
    call("egress_router_teardown_by_name", || {
        // SAFETY (both): as documented for the caller.
        let netns = unsafe { arg_str(netns_path, "netns_path") }?;
        let name = unsafe { arg_str(name, "name") }?;
        blocking::teardown_by_name(&Netns::Path(netns.into()), name)?;
        Ok(())
    })
}

/// What router `name` owns in the namespace at `netns_path` (see
/// `egress_router_teardown_by_name` for the path), read from the kernel without a handle, as a
/// JSON object in `*json_out` (free it with `egress_string_free`): `name`, `table`, `link`
/// (name, kind, mode, mtu, mac, up, created), `addresses`, `routes`, `saved_routes`, `sysctls`,
/// `nat`. `EGRESS_RESULT_NOT_FOUND` when no such router is configured there.
///
/// # Safety
/// `netns_path` and `name` must each be NULL or a NUL-terminated string; `json_out` must be NULL
/// or point to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn egress_router_inspect_json_by_name(
    netns_path: *const c_char,
    name: *const c_char,
    json_out: *mut *mut c_char,
) -> egress_result {
    call("egress_router_inspect_json_by_name", || {
        // SAFETY (all): as documented for the caller.
        let out = unsafe { arg_out(json_out, "json_out") }?;
        let netns = unsafe { arg_str(netns_path, "netns_path") }?;
        let name = unsafe { arg_str(name, "name") }?;
        match blocking::inspect(&Netns::Path(netns.into()), name)? {
            Some(state) => put_string(
                out,
                serde_json::to_string(&state).expect("router state always serializes"),
            ),
            None => Err(Failure::new(
                egress_result::NotFound,
                format!("no router `{name}` is configured in namespace {netns}"),
            )),
        }
    })
}

/// Applies `spec` as a standby (`egress_spec_apply` otherwise): everything is staged (link,
/// NAT table, forward filter, sysctls, gateway host route) but what claims the egress
/// identity — the egress addresses, the default route via the gateway, the stable MAC, the
/// announcements — which `egress_router_promote` (or `egress_router_promote_by_name`) claims.
///
/// # Safety
/// As for `egress_spec_apply`.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_apply_standby(
    spec: *const egress_spec,
    router_out: *mut *mut egress_router,
) -> egress_result {
    call("egress_spec_apply_standby", || {
        // SAFETY (both): as the caller promises.
        let out = unsafe { arg_out(router_out, "router_out") }?;
        let spec = unsafe { arg_ref(spec, "spec") }?;
        let router = blocking::apply_as(&spec.0, Role::Standby)?;
        *out = Box::into_raw(Box::new(egress_router(router)));
        Ok(())
    })
}

/// Promotes the router to active: claims the egress addresses, the default route via the
/// gateway and the stable MAC in one flight of netlink requests, then sends the first
/// announcement and returns (the others follow, spaced, on a thread of the library: a program
/// that exits right away may cut them short). A transaction: on failure the router is standby
/// as before. An active router is left as it is. Role changes through one handle run one at a
/// time: called while another runs, it starts when that one ends.
///
/// # Safety
/// `router` must be NULL or a live router (other threads may use it meanwhile, except to tear
/// it down or free it).
#[no_mangle]
pub unsafe extern "C" fn egress_router_promote(router: *const egress_router) -> egress_result {
    call("egress_router_promote", || {
        // SAFETY: as the caller promises.
        let router = unsafe { arg_ref(router, "router") }?;
        blocking::promote_router(&router.0)?;
        Ok(())
    })
}

/// Demotes the router to standby: withdraws the egress addresses first (it stops answering
/// ARP for them before anything else), then the default route via the gateway, and takes its
/// own MAC back. A transaction; a standby router is left as it is.
///
/// # Safety
/// `router` must be NULL or a live router (other threads may use it meanwhile, except to tear
/// it down or free it).
#[no_mangle]
pub unsafe extern "C" fn egress_router_demote(router: *const egress_router) -> egress_result {
    call("egress_router_demote", || {
        // SAFETY: as the caller promises.
        let router = unsafe { arg_ref(router, "router") }?;
        blocking::demote_router(&router.0)?;
        Ok(())
    })
}

/// `egress_router_promote` without a handle: router `name` in the namespace at `netns_path`
/// (see `egress_router_teardown_by_name`), read from the kernel alone (no spec), as an
/// election agent or a keepalived notify command does. Waits for the spaced announcements
/// before returning. `EGRESS_RESULT_NOT_FOUND` when no such router is there.
///
/// # Safety
/// `netns_path` and `name` must each be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_router_promote_by_name(
    netns_path: *const c_char,
    name: *const c_char,
) -> egress_result {
    call("egress_router_promote_by_name", || {
        // SAFETY (both): as the caller promises.
        let netns = unsafe { arg_str(netns_path, "netns_path") }?;
        let name = unsafe { arg_str(name, "name") }?;
        let change = blocking::promote(&Netns::Path(netns.into()), name)?;
        blocking::finish_announcements(change)?;
        Ok(())
    })
}

/// `egress_router_demote` without a handle, as `egress_router_promote_by_name`.
///
/// # Safety
/// `netns_path` and `name` must each be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_router_demote_by_name(
    netns_path: *const c_char,
    name: *const c_char,
) -> egress_result {
    call("egress_router_demote_by_name", || {
        // SAFETY (both): as the caller promises.
        let netns = unsafe { arg_str(netns_path, "netns_path") }?;
        let name = unsafe { arg_str(name, "name") }?;
        blocking::demote(&Netns::Path(netns.into()), name)?;
        Ok(())
    })
}

/// The traffic of `router` since it was applied, read from the kernel now, as a JSON object in
/// `*json_out` (free it with `egress_string_free`): `name`; `redirects`, one object per
/// redirect (`protocol`, `port`, `to`, `to_port`, `connections`, `packets`, `bytes`);
/// `fallback`, one per family with a fallback (`to`, `connections`, `packets`, `bytes`);
/// `snat`, one per family with an egress source (`source`, `packets`, `bytes`);
/// `conntrack_entries`, the connections the namespace tracks now. Connections count their
/// first packet, packets and bytes both directions. A repair that rebuilds the router's
/// ruleset starts the counters again. Read in the namespace the handle holds.
/// `EGRESS_RESULT_NOT_FOUND` when the router is not configured any more;
/// `EGRESS_RESULT_STALE_HANDLE` when the router there is not the one this handle applied (torn
/// down and applied again by someone else).
///
/// # Safety
/// `router` must be NULL or a live router (other threads may use it meanwhile, except to tear
/// it down or free it); `json_out` must be NULL or point to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn egress_router_stats_json(
    router: *const egress_router,
    json_out: *mut *mut c_char,
) -> egress_result {
    call("egress_router_stats_json", || {
        // SAFETY (both): as documented for the caller.
        let out = unsafe { arg_out(json_out, "json_out") }?;
        let router = unsafe { arg_ref(router, "router") }?;
        let name = router.0.spec().name();
        put_stats(
            out,
            blocking::stats_router(&router.0)?,
            name,
            router.0.spec().netns(),
        )
    })
}

/// `egress_router_stats_json` for router `name` in the namespace at `netns_path` (see
/// `egress_router_teardown_by_name` for the path), without a handle.
///
/// # Safety
/// `netns_path` and `name` must each be NULL or a NUL-terminated string; `json_out` must be NULL
/// or point to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn egress_router_stats_json_by_name(
    netns_path: *const c_char,
    name: *const c_char,
    json_out: *mut *mut c_char,
) -> egress_result {
    call("egress_router_stats_json_by_name", || {
        // SAFETY (all): as documented for the caller.
        let out = unsafe { arg_out(json_out, "json_out") }?;
        let netns = unsafe { arg_str(netns_path, "netns_path") }?;
        let name = unsafe { arg_str(name, "name") }?;
        let netns = Netns::Path(netns.into());
        put_stats(out, blocking::stats(&netns, name)?, name, &netns)
    })
}

/// `stats` of router `name` in `netns` as JSON in `out`, or `NOT_FOUND` when there are none.
fn put_stats(
    out: &mut *mut c_char,
    stats: Option<Stats>,
    name: &str,
    netns: &Netns,
) -> Result<(), Failure> {
    match stats {
        Some(stats) => put_string(
            out,
            serde_json::to_string(&stats).expect("stats always serialize"),
        ),
        None => Err(Failure::new(
            egress_result::NotFound,
            format!("no router `{name}` is configured in namespace {netns}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::ptr::{null, null_mut};

    use super::*;
    use crate::error::tests::last_error;

    #[test]
    fn null_arguments_fail_before_any_kernel_call() {
        let mut router = std::ptr::dangling_mut::<egress_router>();
        let r = unsafe { egress_spec_apply(null(), &mut router) };
        assert_eq!((r, router.is_null()), (egress_result::NullParameter, true));
        assert_eq!(last_error(), "egress_spec_apply: argument `spec` is NULL");
        assert_eq!(
            unsafe { egress_router_teardown(null_mut()) },
            egress_result::NullParameter
        );
        let mut action = egress_ensure_action::Unchanged;
        assert_eq!(
            unsafe { egress_spec_ensure(null(), &mut action) },
            egress_result::NullParameter
        );
        let mut text = std::ptr::dangling_mut::<c_char>();
        assert_eq!(
            unsafe { egress_spec_check(null(), &mut text) },
            egress_result::NullParameter
        );
        assert!(text.is_null());
        text = std::ptr::dangling_mut();
        assert_eq!(
            unsafe { egress_spec_plan_live(null(), &mut text) },
            egress_result::NullParameter
        );
        assert!(text.is_null());
        assert_eq!(
            last_error(),
            "egress_spec_plan_live: argument `spec` is NULL"
        );
        assert_eq!(
            unsafe { egress_router_teardown_by_name(c"/run/netns/x".as_ptr(), null()) },
            egress_result::NullParameter
        );
        assert_eq!(
            last_error(),
            "egress_router_teardown_by_name: argument `name` is NULL"
        );
        text = std::ptr::dangling_mut();
        assert_eq!(
            unsafe { egress_router_inspect_json_by_name(null(), c"r".as_ptr(), &mut text) },
            egress_result::NullParameter
        );
        assert!(text.is_null());
        unsafe { egress_router_free(null_mut()) };
    }

    /// A call from a thread that runs an async runtime is a blocking call like any other: it
    /// runs (here it fails on a namespace that does not exist, as from any thread).
    #[test]
    fn a_call_from_inside_an_async_runtime_runs() {
        let json = cr#"{"name": "r", "netns": {"path": "/run/netns/egt-ffi-missing"},
                         "external": {"adopt": "m"}, "sources": ["203.0.113.9"],
                         "gateways": ["203.0.113.1"]}"#;
        let mut spec = null_mut();
        assert_eq!(
            unsafe { crate::egress_spec_from_json(json.as_ptr(), &mut spec) },
            egress_result::Ok
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut drift = std::ptr::dangling_mut::<c_char>();
        let r = rt.block_on(async { unsafe { egress_spec_check(spec, &mut drift) } });
        // Without CAP_NET_ADMIN (the unprivileged run of the tests) the call stops before.
        // SAFETY: geteuid(2) cannot fail.
        let expected = match unsafe { libc::geteuid() } == 0 {
            true => egress_result::NotFound,
            false => egress_result::PermissionDenied,
        };
        assert_eq!((r, drift.is_null()), (expected, true), "{}", last_error());
        unsafe { crate::egress_spec_free(spec) };
    }

    /// `*action_out` is `EGRESS_ENSURE_ACTION_NONE` after a failure, whatever it held.
    #[test]
    fn a_failed_ensure_sets_its_action_to_none() {
        let mut action = egress_ensure_action::Repaired;
        let r = unsafe { egress_spec_ensure(null(), &mut action) };
        assert_eq!(
            (r, action),
            (egress_result::NullParameter, egress_ensure_action::None)
        );
    }
}
