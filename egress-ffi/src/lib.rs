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
//!
//! The header opens with the conventions every function follows (`cbindgen.toml` writes them
//! there, where C programmers read them): handles and names, result codes and the last error
//! message, outputs NULL after any failure, integer widths, strings, threads, signals and
//! `fork`. The code keeps them with a few helpers of `error.rs`: every function runs behind
//! `call`'s panic boundary, takes its outputs first (`arg_out`) and its integers through
//! `arg_int`.

#![allow(non_camel_case_types)]

// cbindgen writes the header in module order: results and errors, specs, routers, then
// diagnoses.
mod error;
mod spec;

mod router;

mod diagnose;

use std::ffi::{c_char, CStr};

pub use diagnose::{
    egress_router_diagnose_json, egress_router_diagnose_json_by_name, egress_spec_diagnose_json,
};
pub use error::{egress_last_error_message, egress_result, egress_result_name, egress_string_free};
pub use router::{
    egress_ensure_action, egress_router, egress_router_demote, egress_router_demote_by_name,
    egress_router_free, egress_router_inspect_json_by_name, egress_router_promote,
    egress_router_promote_by_name, egress_router_stats_json, egress_router_stats_json_by_name,
    egress_router_teardown, egress_router_teardown_by_name, egress_spec_apply,
    egress_spec_apply_standby, egress_spec_check, egress_spec_ensure, egress_spec_plan_live,
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

    /// The header states the thread bounds of the core it was built with.
    #[test]
    fn the_header_states_the_thread_bounds() {
        let header = include_str!("../include/egress.h");
        let calls = format!("at most {} calls' work", egress_core::MAX_CALL_THREADS);
        let nested = format!("and {} more for", egress_core::MAX_NESTED_THREADS);
        assert!(header.contains(&calls), "{calls}");
        assert!(header.contains(&nested), "{nested}");
    }

    #[test]
    fn version_is_the_package_version() {
        let v = unsafe { CStr::from_ptr(egress_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
