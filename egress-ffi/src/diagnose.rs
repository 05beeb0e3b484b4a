//! Diagnosing routers ([`egress_core::blocking::diagnose`]), by name or from a spec, with the
//! answer as the documented JSON form (`docs/diagnose.md`).

use std::{ffi::c_char, time::Duration};

use egress_core::{blocking, DiagnoseOptions, Diagnosis, Netns, Status};

use crate::{
    error::{arg_int, arg_out, arg_ref, arg_str, call, egress_result, put_string, Failure},
    router::egress_router,
    spec::egress_spec,
};

/// The options of a diagnosis with `timeout_ms` (0: the default); a negative one is out of
/// range (one above the longest is the core's to refuse, by name).
fn options(timeout_ms: i64) -> Result<DiagnoseOptions, Failure> {
    let ms: u64 = arg_int(timeout_ms, "timeout_ms", "0 (the default) to 10000 ms")?;
    Ok(match ms {
        0 => DiagnoseOptions::new(),
        ms => DiagnoseOptions::new().timeout(Duration::from_millis(ms)),
    })
}

/// Puts the JSON form of `d` into `out`; a failed check makes the call fail with
/// `DiagnosisFailed`, listing each failed check and its hint.
fn answer(out: &mut *mut c_char, d: &Diagnosis) -> Result<(), Failure> {
    put_string(
        out,
        serde_json::to_string(d).expect("a diagnosis always serializes"),
    )?;
    let failed: Vec<String> = d
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| match &c.hint {
            Some(hint) => format!("{}: {} -- hint: {hint}", c.name, c.summary),
            None => format!("{}: {}", c.name, c.summary),
        })
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(Failure::new(
        egress_result::DiagnosisFailed,
        format!(
            "router `{}`: {} failed: {}",
            d.router,
            match failed.len() {
                1 => "1 check".to_string(),
                n => format!("{n} checks"),
            },
            failed.join("; ")
        ),
    ))
}

/// Diagnoses router `name` in the namespace at `netns_path` (see
/// `egress_router_teardown_by_name` for the path), read back from the kernel without a handle
/// or a spec: why does it not work, and what to change. Changes nothing in the router: it
/// sends probe frames (ARP and neighbour discovery) from its external link and, only when a
/// gateway does not answer, from the macvlan's parent; it opens probe TCP connections from the
/// egress address to each TCP destination (closed with a reset). Each probe waits at most
/// `timeout_ms` milliseconds (0: the default, 300; at most 10000); a healthy router's
/// diagnosis takes about one timeout.
///
/// Stores the JSON form in `*json_out` (free it with `egress_string_free`): `{"router": NAME,
/// "checks": [{"name", "status", "summary", "hint", "evidence"}, ...]}`, the checks in a fixed
/// order (state, link, sysctl, gateway, l2_filter, duplicate_address, destination, traffic),
/// each `status` one of `ok`, `warn`, `fail`, `skipped` (docs/diagnose.md describes each check
/// and its evidence). Returns `EGRESS_RESULT_OK` when no check failed (warnings included),
/// `EGRESS_RESULT_DIAGNOSIS_FAILED` when one did (`*json_out` is set too, and the message
/// lists each failed check with its hint). A router that is not there is a diagnosis too:
/// its `state` check fails. `EGRESS_RESULT_INVALID_SPEC`: an invalid name or a timeout above
/// 10000 ms (the message names the field and the value); `EGRESS_RESULT_OUT_OF_RANGE`: a
/// negative timeout.
///
/// # Safety
/// `netns_path` and `name` must each be NULL or a NUL-terminated string; `json_out` must be
/// NULL or point to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn egress_router_diagnose_json_by_name(
    netns_path: *const c_char,
    name: *const c_char,
    timeout_ms: i64,
    json_out: *mut *mut c_char,
) -> egress_result {
    call("egress_router_diagnose_json_by_name", || {
        // SAFETY (all): as documented for the caller.
        let out = unsafe { arg_out(json_out, "json_out") }?;
        let netns = unsafe { arg_str(netns_path, "netns_path") }?;
        let name = unsafe { arg_str(name, "name") }?;
        let options = options(timeout_ms)?;
        let d = blocking::diagnose(&Netns::Path(netns.into()), name, &options)?;
        answer(out, &d)
    })
}

/// Diagnoses `router` as `egress_spec_diagnose_json` diagnoses its spec (the same JSON,
/// results and timeout), in the namespaces the handle holds (the router's, and its macvlan
/// parent's as the apply found it). `EGRESS_RESULT_STALE_HANDLE` when the router there is not
/// the one this handle applied (torn down and applied again by someone else); one that is gone
/// is a diagnosis whose `state` check fails.
///
/// # Safety
/// `router` must be NULL or a live router (other threads may use it meanwhile, except to tear
/// it down or free it); `json_out` must be NULL or point to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn egress_router_diagnose_json(
    router: *const egress_router,
    timeout_ms: i64,
    json_out: *mut *mut c_char,
) -> egress_result {
    call("egress_router_diagnose_json", || {
        // SAFETY (both): as documented for the caller.
        let out = unsafe { arg_out(json_out, "json_out") }?;
        let router = unsafe { arg_ref(router, "router") }?;
        let options = options(timeout_ms)?;
        let d = blocking::diagnose_router(router.inner(), &options)?;
        answer(out, &d)
    })
}

/// Diagnoses the router `spec` describes, as `egress_router_diagnose_json_by_name` does (the
/// same JSON, results and timeout), except that its `state` check compares the kernel with
/// `spec` (as `egress_spec_check`) and a created macvlan's parent is the spec's.
///
/// # Safety
/// `spec` must be NULL or a live spec; `json_out` must be NULL or point to writable storage
/// for a pointer.
#[no_mangle]
pub unsafe extern "C" fn egress_spec_diagnose_json(
    spec: *const egress_spec,
    timeout_ms: i64,
    json_out: *mut *mut c_char,
) -> egress_result {
    call("egress_spec_diagnose_json", || {
        // SAFETY (both): as documented for the caller.
        let out = unsafe { arg_out(json_out, "json_out") }?;
        let spec = unsafe { arg_ref(spec, "spec") }?;
        let options = options(timeout_ms)?;
        let d = blocking::diagnose_spec(&spec.0, &options)?;
        answer(out, &d)
    })
}

#[cfg(test)]
mod tests {
    use std::ptr::{dangling_mut, null, null_mut};

    use egress_core::Check;
    use serde_json::json;

    use super::*;
    use crate::error::tests::last_error;

    #[test]
    fn null_arguments_and_bad_input_fail_before_any_kernel_call() {
        let mut json = dangling_mut::<c_char>();
        let r = unsafe { egress_spec_diagnose_json(null(), 0, &mut json) };
        assert_eq!((r, json.is_null()), (egress_result::NullParameter, true));
        assert_eq!(
            last_error(),
            "egress_spec_diagnose_json: argument `spec` is NULL"
        );
        json = dangling_mut();
        let r = unsafe {
            egress_router_diagnose_json_by_name(c"/run/netns/x".as_ptr(), null(), 0, &mut json)
        };
        assert_eq!((r, json.is_null()), (egress_result::NullParameter, true));
        assert_eq!(
            last_error(),
            "egress_router_diagnose_json_by_name: argument `name` is NULL"
        );
        let r = unsafe {
            egress_router_diagnose_json_by_name(
                c"/run/netns/x".as_ptr(),
                c"r".as_ptr(),
                0,
                null_mut(),
            )
        };
        assert_eq!(r, egress_result::NullParameter);
        let r = unsafe {
            egress_router_diagnose_json_by_name(
                c"/run/netns/x".as_ptr(),
                c"Bad_Name".as_ptr(),
                0,
                &mut json,
            )
        };
        assert_eq!((r, json.is_null()), (egress_result::InvalidSpec, true));
        assert!(
            last_error().contains("invalid name `Bad_Name`"),
            "{}",
            last_error()
        );
        let r = unsafe {
            egress_router_diagnose_json_by_name(
                c"/run/netns/x".as_ptr(),
                c"r".as_ptr(),
                10_001,
                &mut json,
            )
        };
        assert_eq!((r, json.is_null()), (egress_result::InvalidSpec, true));
        assert!(
            last_error().contains("invalid timeout_ms `10001`"),
            "{}",
            last_error()
        );
    }

    #[test]
    fn the_answer_is_the_json_form_and_a_failed_check_fails_the_call() {
        let check = |name: &str, status, hint: Option<&str>| Check {
            name: name.into(),
            status,
            summary: format!("{name} summary"),
            hint: hint.map(Into::into),
            evidence: json!({"k": 1}),
        };
        let mut d = Diagnosis {
            router: "r".into(),
            checks: vec![
                check("state", Status::Ok, None),
                check("gateway", Status::Warn, Some("look")),
            ],
        };
        let mut out = null_mut();
        assert!(answer(&mut out, &d).is_ok());
        let text = unsafe { std::ffi::CString::from_raw(out) };
        let back: Diagnosis = serde_json::from_str(text.to_str().unwrap()).unwrap();
        assert_eq!(back, d);

        d.checks
            .push(check("destination", Status::Fail, Some("allow it")));
        d.checks.push(check("traffic", Status::Fail, None));
        let failure = answer(&mut out, &d).unwrap_err();
        drop(unsafe { std::ffi::CString::from_raw(out) });
        assert_eq!(failure.code, egress_result::DiagnosisFailed);
        assert_eq!(
            failure.message,
            "router `r`: 2 checks failed: destination: destination summary -- hint: allow it; \
             traffic: traffic summary"
        );
    }
}
