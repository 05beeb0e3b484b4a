//! # egress-ffi: the C API of egress
//!
//! `libegress.so` / `libegress.a` and the header `include/egress.h` (generated from this crate by
//! cbindgen and checked in), for agents written in C that embed the egress router. Every call
//! builds or uses the same [`egress_core::RouterSpec`] as the Rust API and runs on
//! [`egress_core::blocking`]: this crate holds no networking logic.
//!
//! ```c
//! #include <egress.h>
//!
//! egress_spec_builder *b;
//! egress_spec *spec;
//! egress_router *router;
//! egress_spec_builder_new("egress-1", &b);
//! egress_spec_builder_netns_name(b, "pod");
//! egress_spec_builder_macvlan(b, "eth1", EGRESS_MACVLAN_MODE_PRIVATE);
//! egress_spec_builder_add_source(b, "203.0.113.99/24");
//! egress_spec_builder_add_gateway(b, "203.0.113.1");
//! egress_spec_builder_add_redirect(b, EGRESS_PROTOCOL_TCP, 80, "198.51.100.25", 8080);
//! if (egress_spec_builder_build(b, &spec) != EGRESS_RESULT_OK) { /* see below */ }
//! if (egress_spec_apply(spec, &router) == EGRESS_RESULT_OK)
//!     egress_router_teardown(router);
//! egress_spec_free(spec);
//! ```
//!
//! ## Conventions (as in rustls-ffi)
//! - Opaque handles: `egress_spec_builder`, `egress_spec`, `egress_router`.
//! - Functions are named `egress_<object>_<verb>` and take the object first, then inputs, then
//!   `*_out` outputs. The object is the handle the function works on (`egress_spec_apply(spec,
//!   ...)`, `egress_router_teardown(router)`) or the one it makes (`egress_spec_builder_new`,
//!   `egress_spec_from_json`); `egress_string_free` and `egress_result_name` take a string and
//!   a result code. The `egress_router_*_by_name` functions act on a router found in the kernel
//!   by namespace path and name instead of through a handle. `egress_version` and
//!   `egress_last_error_message` have no object: they concern the library and the calling
//!   thread.
//! - The names of 0.1 that broke this rule stay exported as deprecated aliases: `egress_apply`,
//!   `egress_check`, `egress_ensure`, `egress_teardown_by_name` and `egress_inspect_json` are
//!   `egress_spec_apply`, `egress_spec_check`, `egress_spec_ensure`,
//!   `egress_router_teardown_by_name` and `egress_router_inspect_json_by_name`.
//! - `egress_router_diagnose_json_by_name` and `egress_spec_diagnose_json` answer "why does my
//!   router not work?" with the JSON form of `docs/diagnose.md` (each check with its status,
//!   evidence and hint); `EGRESS_RESULT_DIAGNOSIS_FAILED` when a check failed.
//! - Every function that can fail returns an `egress_result`; `EGRESS_RESULT_OK` is 0. On
//!   failure, `egress_last_error_message` gives this thread's detailed message: the failed
//!   function, and the field, value, plan step and errno the error concerns. A successful call
//!   clears it.
//! - A failed `egress_spec_apply` or `egress_spec_ensure` leaves the kernel as it was unless it
//!   returns `EGRESS_RESULT_ROLLBACK_INCOMPLETE`, whose message lists what remains.
//! - A `NULL` pointer where an argument is required returns `EGRESS_RESULT_NULL_PARAMETER`;
//!   outputs are set to `NULL` before anything else, so they can be freed unconditionally.
//! - Strings in are NUL-terminated UTF-8 (`EGRESS_RESULT_INVALID_UTF8` otherwise); strings out
//!   are allocated by the library and released with `egress_string_free`.
//! - `*_free(NULL)` does nothing. Using a handle after it was freed or consumed, or freeing it
//!   twice, is undefined behaviour.
//! - No Rust panic crosses the boundary: it is caught and returned as `EGRESS_RESULT_PANIC`.
//! - An `egress_spec` is immutable: it may be used from several threads at once. A builder
//!   or a router must be used by one thread at a time.
//! - Block `SIGTERM` (and the other signals you `sigwait` for) before the first egress call: the
//!   library runs threads, which inherit the signal mask of the thread that starts them.

#![allow(non_camel_case_types)]

// cbindgen writes the header in module order: results and errors, specs, routers, then
// diagnoses.
mod error;
mod spec;

mod router;

mod diagnose;

use std::ffi::{c_char, CStr};

pub use diagnose::{egress_router_diagnose_json_by_name, egress_spec_diagnose_json};
pub use error::{egress_last_error_message, egress_result, egress_result_name, egress_string_free};
// The deprecated aliases, listed like every other function.
#[allow(deprecated)]
pub use router::{
    egress_apply, egress_check, egress_ensure, egress_inspect_json, egress_teardown_by_name,
};
pub use router::{
    egress_ensure_action, egress_router, egress_router_free, egress_router_inspect_json_by_name,
    egress_router_stats_json, egress_router_stats_json_by_name, egress_router_teardown,
    egress_router_teardown_by_name, egress_spec_apply, egress_spec_check, egress_spec_ensure,
    egress_spec_plan_live,
};
pub use spec::{
    egress_macvlan_mode, egress_protocol, egress_spec, egress_spec_builder,
    egress_spec_builder_add_fallback, egress_spec_builder_add_gateway,
    egress_spec_builder_add_kept_route, egress_spec_builder_add_redirect,
    egress_spec_builder_add_source, egress_spec_builder_adopt, egress_spec_builder_announce,
    egress_spec_builder_build, egress_spec_builder_free, egress_spec_builder_internal,
    egress_spec_builder_link_name, egress_spec_builder_mac, egress_spec_builder_macvlan,
    egress_spec_builder_mtu, egress_spec_builder_netns_name, egress_spec_builder_netns_path,
    egress_spec_builder_netns_pid, egress_spec_builder_new, egress_spec_builder_parent_netns_name,
    egress_spec_builder_parent_netns_path, egress_spec_builder_parent_netns_pid, egress_spec_free,
    egress_spec_from_json, egress_spec_plan, egress_spec_to_json,
};

const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the package version holds no NUL byte"),
    };

/// The library's version, such as `"0.1.0"`: a static NUL-terminated string.
///
/// # Safety
/// Always safe to call. The returned pointer is valid for the life of the process and must not
/// be freed.
#[no_mangle]
pub unsafe extern "C" fn egress_version() -> *const c_char {
    error::boundary(std::ptr::null(), || VERSION.as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_the_package_version() {
        let v = unsafe { CStr::from_ptr(egress_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
