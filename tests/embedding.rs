//! A good guest in someone else's process: what a program that embeds the library does — fork,
//! threads of its own, an async runtime of its own, bursts of calls — and what it may expect.
//!
//! - a child of `fork` calls the library right after its parent did, and while the parent's
//!   threads are inside calls; it may tear the router down with its parent's handle; what runs
//!   on the parent's threads (a watch, spaced announcements) it leaves be;
//! - a burst of calls queues within the thread bound ([`MAX_CALL_THREADS`] and
//!   [`MAX_NESTED_THREADS`]), and watches, which last, leave room for calls;
//! - a blocking call runs inside an async runtime, an async call on any executor;
//! - a handle acts on the router it holds: its namespace (one given as "the caller's", read
//!   from a thread in another namespace), and only the router it applied.
//!
//! As root, in throwaway namespaces (`egt-<pid>-…`); a test that cannot build them fails. A
//! test that forks gives its child a deadline and fails when the child does not meet it (a
//! hang fails, it does not stall). The tests run one at a time: one counts the process's
//! threads.

use std::{
    fs,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Mutex, MutexGuard,
    },
    thread,
    time::{Duration, Instant},
};

use egress_core::{
    blocking, DiagnoseOptions, ErrorKind, Netns, RouterSpec, Status, MAX_CALL_THREADS,
    MAX_NESTED_THREADS,
};
use egress_lab::Lab;
use nix::{
    sys::{
        signal::{kill, Signal},
        wait::{waitpid, WaitPidFlag, WaitStatus},
    },
    unistd::{fork, ForkResult},
};

/// How long a child of `fork` may take for its calls: far above what they take (milliseconds);
/// only a child that hangs reaches it.
const CHILD: Duration = Duration::from_secs(10);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `child` in a child process forked now and returns its exit code. The child ends by
/// `SIGALRM` when it does not exit within [`CHILD`]; the parent waits a little longer, then
/// kills it: either way the test fails, naming the hang.
fn in_child(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child calls only what a forked child of a threaded process may (the library
    // under test claims so), and leaves with `_exit`, running none of the parent's
    // destructors (the lab's namespaces stay the parent's to delete).
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            // SAFETY: alarm(2) and _exit(2) are async-signal-safe.
            unsafe { libc::alarm(CHILD.as_secs() as u32) };
            let code = catch_unwind(AssertUnwindSafe(child)).unwrap_or(101);
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            let started = Instant::now();
            loop {
                match waitpid(child, Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
                    WaitStatus::Exited(_, code) => return code,
                    WaitStatus::StillAlive => {}
                    other => panic!("the child did not exit ({other:?}): it hung, or crashed"),
                }
                if started.elapsed() > CHILD + Duration::from_secs(5) {
                    let _ = kill(child, Signal::SIGKILL);
                    let _ = waitpid(child, None);
                    panic!("the child hung: no exit after {CHILD:?}");
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

fn netns(ns: &egress_lab::Netns) -> Netns {
    Netns::Path(ns.path().into())
}

/// The lab's router `name`, applied.
fn applied(lab: &Lab, name: &str) -> (RouterSpec, egress_core::Router) {
    let spec = lab.router_spec(name).build().unwrap();
    let router = blocking::apply(&spec).unwrap();
    (spec, router)
}

/// 0 when router `name` is in `ns`, 1 when it is not, 2 when the call failed.
fn inspect_code(ns: &Netns, name: &str) -> i32 {
    match blocking::inspect(ns, name) {
        Ok(Some(_)) => 0,
        Ok(None) => 1,
        Err(_) => 2,
    }
}

#[test]
fn a_child_of_fork_calls_right_after_its_parent_and_while_it_calls() {
    let _one = one_at_a_time();
    let lab = Lab::new();
    let (spec, router) = applied(&lab, "fork");
    let ns = netns(&lab.router);
    // Right after a call: the threads that ran it wait for the next job, in the parent only.
    for _ in 0..3 {
        assert_eq!(inspect_code(&ns, "fork"), 0);
        assert_eq!(in_child(|| inspect_code(&ns, "fork")), 0);
    }
    // While the parent's threads are inside calls (the pool's queue locked, jobs running).
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    assert!(blocking::check(&spec).unwrap().is_empty());
                }
            });
        }
        for _ in 0..10 {
            assert_eq!(in_child(|| inspect_code(&ns, "fork")), 0);
            thread::sleep(Duration::from_millis(3));
        }
        stop.store(true, Ordering::Relaxed);
    });
    // A child's child too.
    let code = in_child(|| match inspect_code(&ns, "fork") {
        0 => in_child(|| inspect_code(&ns, "fork")),
        other => other,
    });
    assert_eq!(code, 0);
    blocking::teardown(router).unwrap();
}

/// A handle holds the router's namespace open (a descriptor, which `fork` copies): a child
/// tears the router down with its parent's handle, in the namespace the handle holds.
#[test]
fn a_child_tears_down_with_its_parent_s_handle() {
    let _one = one_at_a_time();
    let lab = Lab::new();
    let (spec, router) = applied(&lab, "fork-handle");
    let code = in_child(move || match blocking::teardown(router) {
        Ok(undone) if !undone.is_empty() => 0,
        Ok(_) => 1,
        Err(_) => 2,
    });
    assert_eq!(code, 0);
    assert_eq!(inspect_code(&netns(&lab.router), "fork-handle"), 1);
    assert_eq!(
        blocking::check(&spec).unwrap(),
        [egress_core::Drift::RouterMissing {
            table: spec.table_name()
        }]
    );
}

/// What runs on the parent's threads stays the parent's: a child that drops the parent's
/// `Watcher`, or waits for the parent's promotion's spaced announcements, returns at once
/// (there is no thread of its own to wait for, and telling the parent's would wake a runtime
/// only the parent runs); the parent's watch and announcements go on.
#[test]
fn a_child_lets_its_parent_s_watch_and_announcements_be() {
    let _one = one_at_a_time();
    let lab = Lab::new();
    let spec = lab
        .router_spec("fork-watch")
        .announce_spaced(3, Duration::from_millis(500))
        .build()
        .unwrap();
    let router = blocking::apply_as(&spec, egress_core::Role::Standby).unwrap();
    let change = blocking::promote_router(&router).unwrap();
    let watcher = router.watch(|_| {}).unwrap();
    let started = Instant::now();
    let parent_s = &watcher;
    let code = in_child(move || {
        // SAFETY: the child's own copy of the parent's watcher, dropped once: the child leaves
        // with `_exit`, dropping nothing else (the parent keeps and drops its own).
        drop(unsafe { std::ptr::read(parent_s) });
        match blocking::finish_announcements(change) {
            Ok(()) => 0,
            Err(_) => 1,
        }
    });
    assert_eq!(code, 0);
    // Well before the announcements' second (and the child's deadline).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The parent's watch still repairs.
    lab.router.ip(&["route", "del", "default"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !blocking::check(&spec).unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the parent's watch did not repair"
        );
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(watcher.stop().unwrap(), egress_core::WatchEnd::Stopped);
    blocking::teardown(router).unwrap();
}

/// This process's threads, and those of the pool among them.
fn threads() -> (usize, usize) {
    let mut all = 0;
    let mut pool = 0;
    for task in fs::read_dir("/proc/self/task").unwrap().flatten() {
        all += 1;
        let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == "egress-netns" {
            pool += 1;
        }
    }
    (all, pool)
}

/// Samples [`threads`] until `stop`; returns the most of each.
fn most_threads(stop: &AtomicBool) -> (usize, usize) {
    let (mut all, mut pool) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let (a, p) = threads();
        all = all.max(a);
        pool = pool.max(p);
        thread::sleep(Duration::from_millis(1));
    }
    (all, pool)
}

/// Four times as many calls at once as there are threads for calls, all awaited on one thread
/// (a current-thread tokio runtime): every one succeeds, and the process never holds more
/// threads than before plus the pool's bound and a few.
#[test]
fn a_burst_of_calls_queues_within_the_thread_bound() {
    let _one = one_at_a_time();
    let lab = Lab::new();
    let (_, router) = applied(&lab, "burst");
    let ns = netns(&lab.router);
    let bound = MAX_CALL_THREADS + MAX_NESTED_THREADS;
    let (before, _) = threads();
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let (all, pool) = thread::scope(|s| {
        let sampler = s.spawn(|| most_threads(&stop));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut calls = tokio::task::JoinSet::new();
            for _ in 0..4 * MAX_CALL_THREADS {
                let ns = ns.clone();
                calls.spawn(async move { egress_core::inspect(&ns, "burst").await });
            }
            while let Some(call) = calls.join_next().await {
                assert!(call.unwrap().unwrap().is_some());
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
        stop.store(true, Ordering::Relaxed);
        sampler.join().unwrap()
    });
    assert_eq!(done.into_inner(), 4 * MAX_CALL_THREADS);
    assert!(pool <= bound, "{pool} pool threads, bound {bound}");
    // The sampler, and the pool threads that outlived an earlier test, are among `before`.
    assert!(
        all <= before + bound + 2,
        "{all} threads at most, {before} before the burst"
    );
    blocking::teardown(router).unwrap();
}

/// More watches than there are threads for calls: each is a thread of its own, and a call
/// still gets one of the pool's at once.
#[test]
fn watches_leave_room_for_calls() {
    let _one = one_at_a_time();
    let lab = Lab::new();
    let (spec, router) = applied(&lab, "watched");
    let watchers: Vec<_> = (0..MAX_CALL_THREADS + 1)
        .map(|_| router.watch(|_| {}).unwrap())
        .collect();
    let (tx, rx) = mpsc::channel();
    let ns = netns(&lab.router);
    thread::spawn(move || tx.send(inspect_code(&ns, "watched")));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a call waited for the watches"),
        0
    );
    assert!(blocking::check(&spec).unwrap().is_empty());
    for w in watchers {
        assert_eq!(w.stop().unwrap(), egress_core::WatchEnd::Stopped);
    }
    blocking::teardown(router).unwrap();
}

/// A blocking call from a thread that runs an async runtime is a blocking call; an async call
/// needs no tokio runtime (here: `futures`' executor).
#[test]
fn blocking_calls_run_inside_a_runtime_and_async_calls_on_any_executor() {
    let _one = one_at_a_time();
    let lab = Lab::new();
    let (_, router) = applied(&lab, "executors");
    let ns = netns(&lab.router);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let found = rt.block_on(async { blocking::inspect(&ns, "executors") });
    assert!(found.unwrap().is_some());
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let found = multi.block_on(async { blocking::inspect(&ns, "executors") });
    assert!(found.unwrap().is_some());
    let found = futures::executor::block_on(egress_core::inspect(&ns, "executors"));
    assert!(found.unwrap().is_some());
    futures::executor::block_on(router.teardown()).unwrap();
}

/// A router applied in "the caller's namespace", from a thread inside the lab's router
/// namespace: its handle's stats and diagnosis, asked from a thread in another namespace (the
/// client's, which has no router), read the router's.
#[test]
fn a_handle_reads_the_namespace_it_holds() {
    let _one = one_at_a_time();
    let lab = Lab::new();
    let spec = lab
        .router_spec("relative")
        .netns(Netns::Current)
        .fallback(egress_lab::FALLBACK4)
        .build()
        .unwrap();
    let router = lab.router.run(|| blocking::apply(&spec)).unwrap();
    let (stats, diagnosis) = lab.client.run(|| {
        (
            blocking::stats_router(&router),
            blocking::diagnose_router(&router, &DiagnoseOptions::new()),
        )
    });
    let stats = stats.unwrap().expect("the handle's router has counters");
    assert_eq!(stats.name, "relative");
    assert_eq!(stats.redirects.len(), 2);
    let diagnosis = diagnosis.unwrap();
    let state = diagnosis.named("state");
    assert_eq!(state[0].status, Status::Ok, "{diagnosis}");
    // By name from the client's namespace, there is nothing: what the handle read was not it.
    assert!(lab
        .client
        .run(|| blocking::stats(&Netns::Current, "relative"))
        .unwrap()
        .is_none());
    blocking::teardown(router).unwrap();
}

/// A router torn down and applied again by someone else is not the one an old handle applied:
/// its stats and diagnosis through the old handle are refused, as its teardown is.
#[test]
fn a_stale_handle_reads_nothing() {
    let _one = one_at_a_time();
    let lab = Lab::new();
    let (spec, old) = applied(&lab, "again");
    blocking::teardown_by_name(spec.netns(), "again").unwrap();
    let new = blocking::apply(&spec).unwrap();
    let stale = |e: egress_core::Error| {
        assert_eq!(e.kind(), ErrorKind::StaleHandle, "{e}");
        assert!(e.to_string().contains("nothing was changed"), "{e}");
    };
    stale(blocking::stats_router(&old).unwrap_err());
    stale(blocking::diagnose_router(&old, &DiagnoseOptions::new()).unwrap_err());
    assert!(blocking::stats_router(&new).unwrap().is_some());
    blocking::teardown(new).unwrap();
    // Gone: no counters, nothing to undo, no error (it is not another router: none is there).
    assert!(blocking::stats_router(&old).unwrap().is_none());
    assert!(blocking::teardown(old).unwrap().is_empty());
}
