//! Test-only fault injection (feature `fault-injection`, never in release builds): makes a
//! chosen apply step or undo fail on the calling thread, to prove that rollback and teardown
//! leave the kernel exactly as it was, whichever step fails; and stands in for an older kernel
//! than this one ([`without_ifa_proto`], [`without_openat2`]), to prove the fallbacks.
//!
//! ```no_run
//! # #[cfg(feature = "fault-injection")] {
//! use egress_core::{blocking, fault, RouterSpec};
//! # let spec: RouterSpec = unimplemented!();
//! for k in 1..=spec.plan().steps().len() {
//!     fault::fail_step(k);
//!     let e = blocking::apply(&spec).unwrap_err(); // rolled back
//!     # let _ = e;
//! }
//! # }
//! ```

use std::cell::Cell;

use crate::error::Error;

thread_local! {
    static STEP: Cell<Option<usize>> = const { Cell::new(None) };
    static UNDO: Cell<Option<usize>> = const { Cell::new(None) };
    static INDEX_TAKEN: Cell<bool> = const { Cell::new(false) };
    static VERIFY: Cell<bool> = const { Cell::new(false) };
    static NO_IFA_PROTO: Cell<bool> = const { Cell::new(false) };
    static NO_OPENAT2: Cell<bool> = const { Cell::new(false) };
    static SLOW_DUMPS: Cell<bool> = const { Cell::new(false) };
}

/// The errno an injected fault reports.
pub const INJECTED_ERRNO: i32 = libc::EIO;

/// The next apply on this thread fails at step `k` (counting from 1), before the step runs.
pub fn fail_step(k: usize) {
    STEP.with(|s| s.set(Some(k)));
}

/// The `k`-th undo (counting from 1, in the order they run) of the next rollback or teardown on
/// this thread fails, and only that one.
pub fn fail_undo(k: usize) {
    UNDO.with(|s| s.set(Some(k)));
}

/// The next apply on this thread that creates a macvlan asks the kernel for an ifindex that
/// its namespace already uses (the internal link's), as if another link had taken the chosen
/// one meanwhile: the kernel refuses it, and the apply creates the macvlan without one and
/// reads it back.
pub fn take_ifindex() {
    INDEX_TAKEN.with(|s| s.set(true));
}

/// The verification after the next apply or ensure on this thread fails, as if the kernel
/// did not hold what was applied: the transaction rolls back.
pub fn fail_verify() {
    VERIFY.with(|s| s.set(true));
}

/// Until [`clear`], the calls of this thread read addresses as a kernel before 6.3 does: no
/// address carries a protocol (`IFA_PROTO`), ours included, and the kernel is not taken to
/// keep one. Not consumed by a call, unlike the faults.
pub fn without_ifa_proto() {
    NO_IFA_PROTO.with(|s| s.set(true));
}

/// Whether [`without_ifa_proto`] is on for this thread.
pub(crate) fn ifa_proto_ignored() -> bool {
    NO_IFA_PROTO.with(Cell::get)
}

/// Until [`clear`], the calls of this thread open sysctl files as on a kernel before 5.6
/// (or under a seccomp filter that refuses it): `openat2` answers ENOSYS. Not consumed by a
/// call.
pub fn without_openat2() {
    NO_OPENAT2.with(|s| s.set(true));
}

/// Whether [`without_openat2`] is on for this thread.
pub(crate) fn openat2_missing() -> bool {
    NO_OPENAT2.with(Cell::get)
}

/// Until [`clear`], the calls of this thread read nftables dumps as on a busy machine: in
/// parts of at most 4 KB (as the kernel cuts them when it cannot allocate the 32 KB of a
/// larger part), the thread pausing 1 ms before it takes each part (as when it is preempted).
/// The kernel makes a dump's next part when the reader takes the previous one, so another
/// writer's batch, which the kernel may abort, can change the ruleset in between. Not consumed
/// by a call.
pub fn slow_dumps() {
    SLOW_DUMPS.with(|s| s.set(true));
}

/// Whether [`slow_dumps`] is on for this thread.
pub(crate) fn dumps_slow() -> bool {
    SLOW_DUMPS.with(Cell::get)
}

/// Clears every pending fault of this thread.
pub fn clear() {
    STEP.with(|s| s.set(None));
    UNDO.with(|s| s.set(None));
    INDEX_TAKEN.with(|s| s.set(false));
    VERIFY.with(|s| s.set(false));
    NO_IFA_PROTO.with(|s| s.set(false));
    NO_OPENAT2.with(|s| s.set(false));
    SLOW_DUMPS.with(|s| s.set(false));
}

/// The faults armed on a thread: carried by each call to the pool thread that runs it, and the
/// ones it did not consume carried back.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Armed {
    step: Option<usize>,
    undo: Option<usize>,
    index_taken: bool,
    verify: bool,
    no_ifa_proto: bool,
    no_openat2: bool,
    slow_dumps: bool,
}

/// Takes the faults armed on this thread.
pub(crate) fn take() -> Armed {
    Armed {
        step: STEP.with(|s| s.take()),
        undo: UNDO.with(|s| s.take()),
        index_taken: INDEX_TAKEN.with(|s| s.take()),
        verify: VERIFY.with(|s| s.take()),
        no_ifa_proto: NO_IFA_PROTO.with(|s| s.take()),
        no_openat2: NO_OPENAT2.with(|s| s.take()),
        slow_dumps: SLOW_DUMPS.with(|s| s.take()),
    }
}

/// Arms `a` on this thread (after [`take`] elsewhere).
pub(crate) fn arm(a: Armed) {
    STEP.with(|s| s.set(a.step));
    UNDO.with(|s| s.set(a.undo));
    INDEX_TAKEN.with(|s| s.set(a.index_taken));
    VERIFY.with(|s| s.set(a.verify));
    NO_IFA_PROTO.with(|s| s.set(a.no_ifa_proto));
    NO_OPENAT2.with(|s| s.set(a.no_openat2));
    SLOW_DUMPS.with(|s| s.set(a.slow_dumps));
}

/// Whether [`take_ifindex`] is armed; consumes it.
pub(crate) fn index_taken() -> bool {
    INDEX_TAKEN.with(|s| s.take())
}

/// Called before step `k` runs; consumes the fault when it fires. `what` is only rendered
/// then, so an unarmed hook costs nothing.
pub(crate) fn at_step(k: usize, what: impl FnOnce() -> String) -> Result<(), Error> {
    fire(&STEP, k, what)
}

/// Called before the verification; consumes the fault when it fires.
pub(crate) fn at_verify() -> Result<(), Error> {
    match VERIFY.with(|s| s.take()) {
        true => Err(Error::Verify {
            drift: vec![crate::Drift::RouterMissing {
                table: "(injected fault)".into(),
            }],
        }),
        false => Ok(()),
    }
}

/// Called before the `k`-th undo runs; consumes the fault when it fires.
pub(crate) fn at_undo(k: usize, what: impl FnOnce() -> String) -> Result<(), Error> {
    fire(&UNDO, k, what)
}

fn fire(
    cell: &'static std::thread::LocalKey<Cell<Option<usize>>>,
    k: usize,
    what: impl FnOnce() -> String,
) -> Result<(), Error> {
    cell.with(|c| match c.get() {
        Some(n) if n == k => {
            c.set(None);
            Err(Error::Kernel {
                operation: format!("{} (injected fault)", what()),
                errno: INJECTED_ERRNO,
            })
        }
        _ => Ok(()),
    })
}
