//! Result codes, the thread-local last error message, the panic boundary and the helpers that
//! turn C arguments into Rust values.

use std::{
    any::Any,
    cell::RefCell,
    ffi::{c_char, CStr, CString},
    fmt::Display,
    panic::{catch_unwind, AssertUnwindSafe},
};

use egress_core::{Error, ErrorKind};

/// What a call of the C API returned. `EGRESS_RESULT_OK` (0) is success; every other value is a
/// failure whose details `egress_last_error_message` gives.
///
/// Values come in ranges by cause and are never reused for another meaning:
/// - 1000–1099: the arguments of the call (NULL, not UTF-8, out of range, buffer too small);
/// - 1100–1199: the library itself, whatever the arguments and the kernel (a caught panic, an
///   error this version does not know); 1102 and 1103 were codes of errors the library no
///   longer has (a call made inside one of its async runtimes, work run outside one): reserved,
///   never returned;
/// - 2000–2099: the spec is invalid, whatever the kernel holds;
/// - 3000–3099: the kernel's state rules the call out (permission, missing or existing objects,
///   a router that is no longer the handle's);
/// - 3100–3199: the router is not as it should be: the kernel differs from the spec
///   (`egress_spec_check`; the read-back that ends every apply and repair), or a diagnosis
///   found a check failing (`egress_router_diagnose_json_by_name`);
/// - 4000–4099: a kernel call failed, and what it left behind.
///
/// A failed `egress_spec_apply` or `egress_spec_ensure` leaves the kernel as it was unless it
/// returns `EGRESS_RESULT_ROLLBACK_INCOMPLETE` (whatever the cause: what remains is what the
/// caller must act on). Otherwise it returns the code of the cause (a failed step's errno as
/// `EGRESS_RESULT_NETLINK_FAILURE`, a failed read-back as `EGRESS_RESULT_VERIFY_FAILED`, ...),
/// and the message names the step and says the rollback was complete.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum egress_result {
    /// Success.
    Ok = 0,
    /// A pointer argument that must not be NULL was NULL; the message names it.
    NullParameter = 1000,
    /// A string argument is not valid UTF-8; the message names it and the byte offset.
    InvalidUtf8 = 1001,
    /// An enumeration argument holds a value outside its enum, or an integer argument one that
    /// the field it sets cannot hold (a port above 65535, a negative count); the message names
    /// the argument, its value and the range.
    OutOfRange = 1002,
    /// The caller's buffer is too small; the output was truncated.
    InsufficientSize = 1003,
    /// A macvlan option (parent namespace, MTU, MAC, link name) was set before
    /// `egress_spec_builder_macvlan`.
    MacvlanNotSet = 1004,
    /// The library panicked (a bug); the panic was caught at the boundary.
    Panic = 1100,
    /// An error of a kind this version of the C API does not know; the message says what.
    UnknownError = 1101,
    // 1102 and 1103: reserved (EGRESS_RESULT_BLOCKING_IN_ASYNC and EGRESS_RESULT_NO_RUNTIME
    // before 0.1.0, errors of how the library ran that it no longer has); never reused.
    /// The spec is invalid: the message names every invalid field (the first, then "; and N
    /// more: ..."), each with its value and what would be valid.
    InvalidSpec = 2000,
    /// The caller lacks a capability (`CAP_NET_ADMIN`, `CAP_SYS_ADMIN` for namespaces).
    PermissionDenied = 3000,
    /// Something the spec or the call names does not exist (namespace, link, router).
    NotFound = 3001,
    /// Something the router would create already exists.
    AlreadyExists = 3002,
    /// A spec value the kernel refuses given what it holds (MTU above the parent's, ...).
    Conflict = 3003,
    /// `egress_router_teardown` found that the router of this name cannot be shown to be the
    /// one the handle applied (it was torn down and applied again by someone else, or its
    /// crash record is gone): nothing was changed, and the handle is consumed. In the 3000
    /// range because what the kernel holds rules the call out before any change. Tear the
    /// router down by name if it must go.
    StaleHandle = 3004,
    /// The kernel differs from the spec; the message lists how.
    DriftFound = 3100,
    /// An apply or repair ran every step, then read the namespace back and found that it does
    /// not hold the router (something changed it meanwhile, or the kernel did not take a change
    /// as sent); the message lists the differences. Everything was rolled back: the kernel is
    /// as it was before the call, and retrying, or `egress_spec_ensure`, may succeed. In the
    /// 3100 range because it is the comparison `egress_spec_check` makes, found by the apply.
    VerifyFailed = 3101,
    /// A diagnosis ran and a check failed (`egress_router_diagnose_json_by_name`,
    /// `egress_spec_diagnose_json`): the JSON output is set all the same, and the message lists
    /// each failed check with its hint. In the 3100 range as `EGRESS_RESULT_DRIFT_FOUND`: the
    /// call did its work and found the router not working.
    DiagnosisFailed = 3102,
    /// A netlink (or sysctl) call failed; the message names the operation and the errno.
    NetlinkFailure = 4000,
    /// An apply failed and could not undo everything: the message lists what remains.
    RollbackIncomplete = 4001,
    /// A teardown ran every undo and some failed: the message lists what remains.
    TeardownIncomplete = 4002,
    /// An undo was skipped on purpose because another could not be done: the router's crash
    /// record was kept, for a later teardown by name to finish from. In the 4000 range because
    /// it follows from a failed kernel call. No call of this version returns it: a teardown
    /// or a rollback lists skipped undos in the message of `EGRESS_RESULT_TEARDOWN_INCOMPLETE`
    /// or `EGRESS_RESULT_ROLLBACK_INCOMPLETE`.
    UndoSkipped = 4003,
}

impl egress_result {
    /// Every value, in numeric order.
    pub(crate) const ALL: [egress_result; 21] = [
        egress_result::Ok,
        egress_result::NullParameter,
        egress_result::InvalidUtf8,
        egress_result::OutOfRange,
        egress_result::InsufficientSize,
        egress_result::MacvlanNotSet,
        egress_result::Panic,
        egress_result::UnknownError,
        egress_result::InvalidSpec,
        egress_result::PermissionDenied,
        egress_result::NotFound,
        egress_result::AlreadyExists,
        egress_result::Conflict,
        egress_result::StaleHandle,
        egress_result::DriftFound,
        egress_result::VerifyFailed,
        egress_result::DiagnosisFailed,
        egress_result::NetlinkFailure,
        egress_result::RollbackIncomplete,
        egress_result::TeardownIncomplete,
        egress_result::UndoSkipped,
    ];

    /// The name of the C constant.
    pub(crate) fn name(self) -> &'static CStr {
        match self {
            egress_result::Ok => c"EGRESS_RESULT_OK",
            egress_result::NullParameter => c"EGRESS_RESULT_NULL_PARAMETER",
            egress_result::InvalidUtf8 => c"EGRESS_RESULT_INVALID_UTF8",
            egress_result::OutOfRange => c"EGRESS_RESULT_OUT_OF_RANGE",
            egress_result::InsufficientSize => c"EGRESS_RESULT_INSUFFICIENT_SIZE",
            egress_result::MacvlanNotSet => c"EGRESS_RESULT_MACVLAN_NOT_SET",
            egress_result::Panic => c"EGRESS_RESULT_PANIC",
            egress_result::UnknownError => c"EGRESS_RESULT_UNKNOWN_ERROR",
            egress_result::InvalidSpec => c"EGRESS_RESULT_INVALID_SPEC",
            egress_result::PermissionDenied => c"EGRESS_RESULT_PERMISSION_DENIED",
            egress_result::NotFound => c"EGRESS_RESULT_NOT_FOUND",
            egress_result::AlreadyExists => c"EGRESS_RESULT_ALREADY_EXISTS",
            egress_result::Conflict => c"EGRESS_RESULT_CONFLICT",
            egress_result::StaleHandle => c"EGRESS_RESULT_STALE_HANDLE",
            egress_result::DriftFound => c"EGRESS_RESULT_DRIFT_FOUND",
            egress_result::VerifyFailed => c"EGRESS_RESULT_VERIFY_FAILED",
            egress_result::DiagnosisFailed => c"EGRESS_RESULT_DIAGNOSIS_FAILED",
            egress_result::NetlinkFailure => c"EGRESS_RESULT_NETLINK_FAILURE",
            egress_result::RollbackIncomplete => c"EGRESS_RESULT_ROLLBACK_INCOMPLETE",
            egress_result::TeardownIncomplete => c"EGRESS_RESULT_TEARDOWN_INCOMPLETE",
            egress_result::UndoSkipped => c"EGRESS_RESULT_UNDO_SKIPPED",
        }
    }

    /// The code of a core error.
    ///
    /// An apply (or an ensure's repair) that failed and rolled back completely left the kernel
    /// as it was: it has the code of its cause, so that a C caller can branch on why (an errno,
    /// a conflict, a read-back that found the namespace changed: `VerifyFailed`, for which a
    /// retry is the remedy); its message names the step ("verify: ...") and says the rollback
    /// was complete. One that left something behind is `RollbackIncomplete` whatever the
    /// cause, because what remains is what the caller must deal with first.
    fn of(e: &Error) -> egress_result {
        match (e.kind(), e) {
            (ErrorKind::Apply, Error::Apply { source, .. }) => egress_result::of(source),
            (ErrorKind::InvalidSpec, _) => egress_result::InvalidSpec,
            (ErrorKind::PermissionDenied, _) => egress_result::PermissionDenied,
            (ErrorKind::NotFound, _) => egress_result::NotFound,
            (ErrorKind::AlreadyExists, _) => egress_result::AlreadyExists,
            (ErrorKind::Conflict, _) => egress_result::Conflict,
            (ErrorKind::StaleHandle, _) => egress_result::StaleHandle,
            (ErrorKind::Verify, _) => egress_result::VerifyFailed,
            (ErrorKind::Kernel, _) => egress_result::NetlinkFailure,
            (ErrorKind::RollbackIncomplete, _) => egress_result::RollbackIncomplete,
            (ErrorKind::Teardown, _) => egress_result::TeardownIncomplete,
            (ErrorKind::UndoSkipped, _) => egress_result::UndoSkipped,
            _ => egress_result::UnknownError,
        }
    }
}

/// A failed call: its code and the detailed message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: egress_result,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: egress_result, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    fn null(arg: &str) -> Self {
        Failure::new(
            egress_result::NullParameter,
            format!("argument `{arg}` is NULL"),
        )
    }

    pub(crate) fn out_of_range(arg: &str, value: impl Display, valid: &str) -> Self {
        Failure::new(
            egress_result::OutOfRange,
            format!("argument `{arg}` is {value}, expected {valid}"),
        )
    }

    fn panic(payload: &(dyn Any + Send)) -> Self {
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        Failure::new(
            egress_result::Panic,
            format!("internal error (a bug in egress, please report it): panic: {what}"),
        )
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::new(egress_result::of(&e), e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Runs `f` behind the panic boundary; a panic returns `on_panic`. For the functions that return
/// no `egress_result` and leave the last error message alone.
pub(crate) fn boundary<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

/// Runs the body of C function `func` behind the panic boundary and records its outcome as this
/// thread's last error (cleared on success).
pub(crate) fn call(func: &str, f: impl FnOnce() -> Result<(), Failure>) -> egress_result {
    let outcome = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(Failure::panic(&*p)));
    // Reaching the thread-local fails only while the thread is being torn down; the code is
    // returned all the same.
    let (code, message) = match outcome {
        Ok(()) => (egress_result::Ok, String::new()),
        Err(failure) => (failure.code, format!("{func}: {}", failure.message)),
    };
    let _ = LAST_ERROR.try_with(|last| *last.borrow_mut() = message);
    code
}

/// A required string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn arg_str<'a>(p: *const c_char, arg: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::null(arg));
    }
    // SAFETY: non-NULL and NUL-terminated, as the caller promises.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|e| {
        Failure::new(
            egress_result::InvalidUtf8,
            format!(
                "argument `{arg}` is not valid UTF-8 (bad byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// A required pointer argument, borrowed.
///
/// # Safety
/// `p` is NULL or points to a live `T` not mutated for `'a`.
pub(crate) unsafe fn arg_ref<'a, T>(p: *const T, arg: &str) -> Result<&'a T, Failure> {
    // SAFETY: as the caller promises.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::null(arg))
}

/// A required pointer argument, borrowed mutably.
///
/// # Safety
/// `p` is NULL or points to a live `T` not otherwise used for `'a`.
pub(crate) unsafe fn arg_mut<'a, T>(p: *mut T, arg: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: as the caller promises.
    unsafe { p.as_mut() }.ok_or_else(|| Failure::null(arg))
}

/// An output pointer argument, set to NULL at once. Every function takes its outputs first,
/// before it looks at any other argument, so that every failure leaves them NULL.
///
/// # Safety
/// `p` is NULL or points to writable storage for a pointer, valid for `'a`.
pub(crate) unsafe fn arg_out<'a, T>(p: *mut *mut T, arg: &str) -> Result<&'a mut *mut T, Failure> {
    if p.is_null() {
        return Err(Failure::null(arg));
    }
    // SAFETY: writable, as the caller promises. Written through the raw pointer first, so that
    // the reference below never points to the caller's uninitialized storage.
    unsafe {
        p.write(std::ptr::null_mut());
        Ok(&mut *p)
    }
}

/// An integer argument that must fit `T` (the type of the field it sets): out of range is
/// `EGRESS_RESULT_OUT_OF_RANGE`, naming the argument, the value and `valid`.
pub(crate) fn arg_int<T: TryFrom<i64>>(value: i64, arg: &str, valid: &str) -> Result<T, Failure> {
    T::try_from(value).map_err(|_| Failure::out_of_range(arg, value, valid))
}

/// Hands `text` to C as a string the caller frees with `egress_string_free`.
pub(crate) fn put_string(out: &mut *mut c_char, text: String) -> Result<(), Failure> {
    let c = CString::new(text).map_err(|e| {
        Failure::new(
            egress_result::InvalidSpec,
            format!(
                "the result holds a NUL byte at offset {}, which a C string cannot carry \
                 (a namespace name or path of the spec contains \\u0000)",
                e.nul_position()
            ),
        )
    })?;
    *out = c.into_raw();
    Ok(())
}

/// Copies this thread's last error message into `buf` (at most `len` bytes, including a
/// terminating NUL) and stores its full length, without the NUL, in `*out_n`.
///
/// The message is empty when the last call that returns an `egress_result` succeeded. It names
/// the failed function, then what went wrong: the spec field and value with what would be
/// valid, the plan step that failed with the errno and the rollback outcome, the missing
/// capability, or what a teardown left behind.
///
/// Returns `EGRESS_RESULT_OK` when the whole message fit, `EGRESS_RESULT_INSUFFICIENT_SIZE` when
/// it was truncated (at a UTF-8 character boundary, still NUL-terminated when `len > 0`; call
/// again with a buffer of `*out_n + 1` bytes), `EGRESS_RESULT_NULL_PARAMETER` when `buf` or
/// `out_n` is NULL (the other, if given, is emptied: `*out_n` 0, `buf` an empty string). This
/// function never changes the stored message.
///
/// # Safety
/// `buf` must be NULL or point to at least `len` writable bytes; `out_n` must be NULL or point
/// to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn egress_last_error_message(
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> egress_result {
    boundary(egress_result::Panic, || {
        if buf.is_null() || out_n.is_null() {
            // SAFETY: each is NULL or writable, as the caller promises: what is given is
            // emptied.
            unsafe {
                if !out_n.is_null() {
                    out_n.write(0);
                }
                if !buf.is_null() && len > 0 {
                    buf.write(0);
                }
            }
            return egress_result::NullParameter;
        }
        LAST_ERROR
            .try_with(|last| {
                let last = last.borrow();
                let mut n = last.len().min(len.saturating_sub(1));
                while !last.is_char_boundary(n) {
                    n -= 1;
                }
                // SAFETY: `buf` has room for `len` > `n` bytes and does not overlap our string;
                // `out_n` is writable, as the caller promises.
                unsafe {
                    if len > 0 {
                        std::ptr::copy_nonoverlapping(last.as_ptr().cast(), buf, n);
                        *buf.add(n) = 0;
                    }
                    *out_n = last.len();
                }
                if len > last.len() {
                    egress_result::Ok
                } else {
                    egress_result::InsufficientSize
                }
            })
            .unwrap_or(egress_result::Panic)
    })
}

/// The name of result code `result` as a static string (`"EGRESS_RESULT_NOT_FOUND"`), or
/// `"unknown egress_result"` for a value that is none of them.
///
/// # Safety
/// Always safe to call. The returned pointer is valid for the life of the process and must not
/// be freed.
#[no_mangle]
pub unsafe extern "C" fn egress_result_name(result: u32) -> *const c_char {
    boundary(std::ptr::null(), || {
        egress_result::ALL
            .iter()
            .find(|r| **r as u32 == result)
            .map_or(c"unknown egress_result", |r| r.name())
            .as_ptr()
    })
}

/// Frees a string this library returned (a plan, a JSON document). `NULL` is a no-op.
///
/// # Safety
/// `s` must be NULL or a string returned by this library and not freed yet.
#[no_mangle]
pub unsafe extern "C" fn egress_string_free(s: *mut c_char) {
    boundary((), || {
        if !s.is_null() {
            // SAFETY: made by `CString::into_raw` in `put_string`, as the caller promises.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use egress_core::{Drift, Rollback};

    use super::*;

    /// This thread's last error message.
    pub(crate) fn last_error() -> String {
        LAST_ERROR.with(|l| l.borrow().clone())
    }

    #[test]
    fn result_numbers_are_pinned() {
        // Numbers are part of the ABI: a change here breaks every compiled C program.
        let numbers: Vec<u32> = egress_result::ALL.iter().map(|r| *r as u32).collect();
        assert_eq!(
            numbers,
            [
                0, 1000, 1001, 1002, 1003, 1004, 1100, 1101, 2000, 3000, 3001, 3002, 3003, 3004,
                3100, 3101, 3102, 4000, 4001, 4002, 4003
            ]
        );
        // The codes of removed errors stay unused.
        for reserved in [1102, 1103] {
            let name = unsafe { CStr::from_ptr(egress_result_name(reserved)) };
            assert_eq!(name, c"unknown egress_result");
        }
    }

    #[test]
    fn result_names_follow_the_header_constants() {
        for r in egress_result::ALL {
            // cbindgen: prefix with the enum name, variants in SCREAMING_SNAKE_CASE.
            let variant = format!("{r:?}");
            let mut snake = String::new();
            for (i, c) in variant.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    snake.push('_');
                }
                snake.push(c.to_ascii_uppercase());
            }
            let name = unsafe { CStr::from_ptr(egress_result_name(r as u32)) };
            assert_eq!(name.to_str().unwrap(), format!("EGRESS_RESULT_{snake}"));
        }
        let unknown = unsafe { CStr::from_ptr(egress_result_name(7)) };
        assert_eq!(unknown.to_str().unwrap(), "unknown egress_result");
    }

    #[test]
    fn a_panic_is_caught_and_reported() {
        let code = call("egress_test", || panic!("boom {}", 42));
        assert_eq!(code, egress_result::Panic);
        let msg = last_error();
        assert!(msg.starts_with("egress_test: internal error"), "{msg}");
        assert!(msg.ends_with("panic: boom 42"), "{msg}");
        assert_eq!(boundary(7, || panic!("boom")), 7);
    }

    #[test]
    fn success_clears_the_last_error() {
        let code = call("egress_test", || {
            Err(Failure::new(egress_result::NotFound, "gone"))
        });
        assert_eq!(code, egress_result::NotFound);
        assert_eq!(last_error(), "egress_test: gone");
        assert_eq!(call("egress_test", || Ok(())), egress_result::Ok);
        assert_eq!(last_error(), "");
    }

    #[test]
    fn last_error_message_truncates_at_a_char_boundary() {
        call("f", || Err(Failure::new(egress_result::NotFound, "é-x")));
        let full = "f: é-x";
        let mut buf = [0x55 as c_char; 16];
        let mut n = 0usize;
        let r = unsafe { egress_last_error_message(buf.as_mut_ptr(), buf.len(), &mut n) };
        assert_eq!((r, n), (egress_result::Ok, full.len()));
        assert_eq!(
            unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap(),
            full
        );
        // Room for "f: " and one byte of the two-byte "é": the "é" is left out whole.
        let r = unsafe { egress_last_error_message(buf.as_mut_ptr(), 5, &mut n) };
        assert_eq!((r, n), (egress_result::InsufficientSize, full.len()));
        assert_eq!(
            unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap(),
            "f: "
        );
        // Exactly the message without room for the NUL is truncated too.
        let r = unsafe { egress_last_error_message(buf.as_mut_ptr(), full.len(), &mut n) };
        assert_eq!(r, egress_result::InsufficientSize);
        // len 0 writes nothing, not even the NUL.
        buf[0] = 0x55;
        let r = unsafe { egress_last_error_message(buf.as_mut_ptr(), 0, &mut n) };
        assert_eq!((r, buf[0]), (egress_result::InsufficientSize, 0x55));
        let r = unsafe { egress_last_error_message(std::ptr::null_mut(), 4, &mut n) };
        assert_eq!(r, egress_result::NullParameter);
        let r = unsafe { egress_last_error_message(buf.as_mut_ptr(), 4, std::ptr::null_mut()) };
        assert_eq!(r, egress_result::NullParameter);
        // Reading it never changes it.
        assert_eq!(last_error(), full);
    }

    #[test]
    fn core_errors_map_to_their_codes() {
        let e = egress_core::RouterSpec::from_json("{").unwrap_err();
        let f = Failure::from(e);
        assert_eq!(f.code, egress_result::InvalidSpec);
        assert!(f.message.starts_with("invalid spec `{`"), "{}", f.message);

        let kernel = || Error::Kernel {
            operation: "ip link set ext0 up".into(),
            errno: 19, // ENODEV
        };
        let skipped = || Error::UndoSkipped {
            undo: "ip -6 route del blackhole 6567:… table 1701278323".into(),
            reason: "kept: it is the crash record".into(),
        };
        let verify = || Error::Verify {
            drift: vec![Drift::LinkDown {
                link: "ext0".into(),
            }],
        };
        let apply = |source: Error, rollback: Rollback| Error::Apply {
            step: "verify: read the namespace again".into(),
            step_index: 12,
            source: Box::new(source),
            rollback,
        };
        let cases = [
            (
                Error::StaleHandle {
                    name: "r".into(),
                    netns: "/run/netns/pod".into(),
                    reason: "its crash record holds apply id 00000002".into(),
                },
                egress_result::StaleHandle,
            ),
            (verify(), egress_result::VerifyFailed),
            (skipped(), egress_result::UndoSkipped),
            (kernel(), egress_result::NetlinkFailure),
            // A failed apply that rolled back completely has its cause's code...
            (
                apply(verify(), Rollback::Complete),
                egress_result::VerifyFailed,
            ),
            (
                apply(kernel(), Rollback::Complete),
                egress_result::NetlinkFailure,
            ),
            // ...and one that left something behind says so, whatever the cause.
            (
                apply(
                    verify(),
                    Rollback::Incomplete(vec!["link ext0 (errno 16)".into()]),
                ),
                egress_result::RollbackIncomplete,
            ),
            // Skipped undos are among what a teardown left behind.
            (
                Error::Teardown {
                    failures: vec![kernel(), skipped()],
                },
                egress_result::TeardownIncomplete,
            ),
        ];
        for (e, code) in cases {
            let text = e.to_string();
            let f = Failure::from(e);
            assert_eq!(f.code, code, "{text}");
            assert_eq!(f.message, text);
        }
    }

    #[test]
    fn an_invalid_spec_names_every_invalid_field() {
        let json = r#"{"name": "Bad_Name", "external": {"adopt": "m"},
                       "sources": ["203.0.113.300/24"], "gateways": ["203.0.113.1"],
                       "announce": 17}"#;
        let f = Failure::from(egress_core::RouterSpec::from_json(json).unwrap_err());
        assert_eq!(f.code, egress_result::InvalidSpec);
        for field in [
            "invalid name `Bad_Name`",
            "; and 2 more: ",
            "invalid sources[0] `203.0.113.300/24`",
            "invalid announce `17`",
        ] {
            assert!(f.message.contains(field), "{field}: {}", f.message);
        }
    }

    #[test]
    fn arguments_are_checked() {
        let e = unsafe { arg_str(std::ptr::null(), "name") }.unwrap_err();
        assert_eq!(e.code, egress_result::NullParameter);
        assert_eq!(e.message, "argument `name` is NULL");
        let bad = c"ab\xffc";
        let e = unsafe { arg_str(bad.as_ptr(), "name") }.unwrap_err();
        assert_eq!(e.code, egress_result::InvalidUtf8);
        assert_eq!(
            e.message,
            "argument `name` is not valid UTF-8 (bad byte at offset 2)"
        );
        let mut slot = std::ptr::dangling_mut::<u8>();
        let out = unsafe { arg_out(&mut slot, "x_out") }.unwrap();
        assert!(out.is_null());
    }

    #[test]
    fn strings_out_are_freed_and_nul_is_refused() {
        let mut out = std::ptr::null_mut();
        put_string(&mut out, "plan".into()).unwrap();
        assert_eq!(unsafe { CStr::from_ptr(out) }.to_str().unwrap(), "plan");
        unsafe { egress_string_free(out) };
        unsafe { egress_string_free(std::ptr::null_mut()) };
        let e = put_string(&mut out, "a\0b".into()).unwrap_err();
        assert_eq!(e.code, egress_result::InvalidSpec);
        assert!(e.message.contains("NUL byte at offset 1"), "{}", e.message);
    }
}
