//! Reliability: whatever happens, a namespace is either fully configured or exactly as it was.
//! As root, in throwaway namespaces; a test that cannot build them fails (never skips).
//!
//! - **Fault injection** (`egress_core::fault`): step *k* of the apply fails, for every *k* of
//!   three specs; the *j*-th undo of a rollback or teardown fails, for every *j*.
//! - **Crash recovery**: a child process applying a router is SIGKILLed after a seeded random
//!   delay; `teardown_by_name` then restores both namespaces.
//! - **Drift**: every kind `check` knows, named precisely, repaired by `ensure`.
//! - **Ownership**: foreign objects with similar names survive apply, teardown, rollback and
//!   teardown by name.
//! - **Concurrency**: routers in distinct namespaces on many threads; two appliers of one router.
//! - **Privilege**: without CAP_NET_ADMIN every entry point fails up front, changing nothing.
//! - **Properties** of the JSON form: print then parse is the identity.
//!
//! The default run is short. `EGRESS_LONG=1 cargo test --test reliability` runs the long one
//! (200 crash trials, 32 threads × 200 cycles, 200 races); `EGRESS_SEED=N` replays the crash
//! delays of a run (each run prints its seed).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::IpAddr,
    process::{Child, ChildStdout, Command, Stdio},
    sync::{Barrier, RwLock, RwLockReadGuard, RwLockWriteGuard},
    thread,
    time::{Duration, Instant},
};

use egress_core::{
    blocking, fault, link_group_marker, Drift, EnsureAction, Error, ErrorKind, Netns as CoreNetns,
    Protocol, Rollback, Router, RouterSpec, Step,
};
use egress_lab::{
    leftover_namespaces, Lab, Netns, Snapshot, EGRESS_SOURCE4, EGRESS_SOURCE6, FALLBACK4,
    FALLBACK6, GATEWAY4, GATEWAY6, NODE4, NODE6, SDN_MACVLAN, SERVICE_PORT, WEB4, WEB6, WEB_PORT,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Every test takes it shared; the concurrency test, which counts the process's file
/// descriptors and namespaces, takes it exclusively.
static PROCESS: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    PROCESS.read().unwrap_or_else(|p| p.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    PROCESS.write().unwrap_or_else(|p| p.into_inner())
}

/// `EGRESS_LONG=1`: the long runs.
fn long() -> bool {
    std::env::var("EGRESS_LONG").is_ok_and(|v| v == "1")
}

fn core_ns(ns: &Netns) -> CoreNetns {
    CoreNetns::Path(ns.path().into())
}

/// Snapshots of some namespaces, to compare with later.
struct Snapshots<'a> {
    taken: Vec<(&'a Netns, Snapshot)>,
}

impl<'a> Snapshots<'a> {
    fn take(namespaces: &[&'a Netns]) -> Self {
        Snapshots {
            taken: namespaces.iter().map(|n| (*n, Snapshot::take(n))).collect(),
        }
    }

    /// The router and node namespaces of a lab: the two a router touches.
    fn lab(lab: &'a Lab) -> Self {
        Self::take(&[&lab.router, &lab.node])
    }

    /// What differs now, as `- line` / `+ line`, every namespace together.
    fn diff_lines(&self) -> Vec<String> {
        self.taken
            .iter()
            .flat_map(|(ns, before)| {
                let now = Snapshot::take(ns);
                before
                    .diff(&now)
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// As [`assert_restored`](Self::assert_restored), for two different applies of one router:
    /// their crash records differ by the random apply id (in the table's comment and in the
    /// notes' addresses), and nothing else may.
    fn assert_restored_but_record(&self, when: &str) {
        let record = |l: &String| {
            l.starts_with("route -6 ")
                && l.contains(r#""table":"1701278323""#)
                && l.contains(r#""type":"blackhole""#)
        };
        let id = |l: &str| {
            l.split(" id=")
                .enumerate()
                .map(|(i, part)| match i {
                    0 => part.to_string(),
                    _ => format!(" id=…{}", &part[8..]),
                })
                .collect::<String>()
        };
        for (ns, before) in &self.taken {
            let now = Snapshot::take(ns);
            let strip = |s: &Snapshot| -> Vec<String> {
                let notes = s.lines().iter().filter(|l| record(l)).count();
                let mut v: Vec<String> = s
                    .lines()
                    .iter()
                    .filter(|l| !record(l))
                    .map(|l| id(l))
                    .collect();
                v.push(format!("{notes} notes"));
                v
            };
            assert_eq!(
                strip(before),
                strip(&now),
                "{when}: namespace {} differs",
                ns.name()
            );
        }
    }

    fn assert_restored(&self, when: &str) {
        for (ns, before) in &self.taken {
            let now = Snapshot::take(ns);
            assert!(
                *before == now,
                "{when}: namespace {} differs:\n{}",
                ns.name(),
                before.diff(&now)
            );
        }
    }
}

/// splitmix64: a small seeded generator, so that a run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed() -> u64 {
    match std::env::var("EGRESS_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|e| panic!("EGRESS_SEED={s:?}: {e}")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

// ---------------------------------------------------------------------------------------------
// Specs
// ---------------------------------------------------------------------------------------------

/// IPv4, redirects, a fallback and a kept route, on a created macvlan.
fn ipv4_spec(lab: &Lab, name: &str) -> RouterSpec {
    lab.router_spec(name)
        .fallback(FALLBACK4)
        .keep_route("192.0.2.128/25", Some(NODE4))
        .build()
        .unwrap()
}

/// Dual stack: both families' sources, gateways, redirects, fallbacks and kept routes.
fn dual_stack_spec(lab: &Lab, name: &str) -> RouterSpec {
    lab.router_spec(name)
        .source(EGRESS_SOURCE6)
        .gateway(GATEWAY6)
        .redirect(Protocol::Tcp, SERVICE_PORT, WEB6, Some(WEB_PORT))
        .fallback(FALLBACK4)
        .fallback(FALLBACK6)
        .keep_route("192.0.2.128/25", Some(NODE4))
        .keep_route("2001:db8:5::/64", Some(NODE6))
        .announce(2)
        .build()
        .unwrap()
}

/// The SDN's `macvlan0` adopted (needs [`Lab::with_adopted_macvlan`]), dual stack.
fn adopted_spec(lab: &Lab, name: &str) -> RouterSpec {
    lab.router_spec(name)
        .adopt(SDN_MACVLAN)
        .source(EGRESS_SOURCE6)
        .gateway(GATEWAY6)
        .fallback(FALLBACK4)
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Fault injection
// ---------------------------------------------------------------------------------------------

/// Step k fails, for every k: the cause and the step are named, rollback is complete, and both
/// namespaces are exactly as before.
fn fault_at_every_step(lab: &Lab, spec: &RouterSpec) {
    let snaps = Snapshots::lab(lab);
    let plan = spec.plan();
    let n = plan.steps().len();
    for (i, step) in plan.steps().iter().enumerate() {
        let k = i + 1;
        fault::fail_step(k);
        let result = blocking::apply(spec);
        fault::clear();
        let e = result.expect_err("a fault was injected");
        assert_eq!(e.errno(), Some(fault::INJECTED_ERRNO), "step {k}: {e}");
        if k == 1 {
            // Nothing was changed yet: the cause comes back as it is.
            assert!(
                matches!(&e, Error::Kernel { operation, .. } if operation.contains("injected")),
                "step 1: {e:?}"
            );
        } else {
            match &e {
                Error::Apply {
                    step: failed,
                    step_index,
                    rollback,
                    ..
                } => {
                    assert_eq!(*step_index, k, "{e}");
                    assert_eq!(*failed, step.to_string());
                    assert_eq!(*rollback, Rollback::Complete, "{e}");
                }
                other => panic!("step {k}: {other:?}"),
            }
            assert_eq!(e.kind(), ErrorKind::Apply);
        }
        snaps.assert_restored(&format!("fault at step {k}/{n} ({step})"));
    }
    // Each fault fired once and is gone: a plain apply works.
    let router = blocking::apply(spec).unwrap();
    assert!(blocking::check(spec).unwrap().is_empty());
    blocking::teardown(router).unwrap();
    snaps.assert_restored("after a clean apply and teardown");
}

#[test]
fn fault_at_every_step_ipv4_redirects_fallback() {
    let _lock = shared();
    let lab = Lab::new();
    fault_at_every_step(&lab, &ipv4_spec(&lab, "fault-v4"));
}

#[test]
fn fault_at_every_step_dual_stack() {
    let _lock = shared();
    let lab = Lab::new();
    fault_at_every_step(&lab, &dual_stack_spec(&lab, "fault-ds"));
}

#[test]
fn fault_at_every_step_adopted_link() {
    let _lock = shared();
    let lab = Lab::with_adopted_macvlan();
    fault_at_every_step(&lab, &adopted_spec(&lab, "fault-adopt"));
}

/// Whether a snapshot diff line is explained by `remains` (an [`egress_core::Error`] entry of
/// what a teardown or rollback left behind).
///
/// A teardown's errors name the failed operation; the crash record kept on purpose (because
/// something could not be restored) is named by the undo that was skipped.
fn explains(remains: &str, line: &str) -> bool {
    let (sign, body) = line.split_at(2);
    let remains = remains
        .split(" skipped: ")
        .next()
        .unwrap()
        .split(" failed: ")
        .next()
        .unwrap();
    let remains = if let Some(t) = remains.strip_prefix("nft delete table inet ") {
        format!("nftables table inet {t}")
    } else if let Some(r) = remains.strip_prefix("ip route del ") {
        format!("route {r}")
    } else if let Some(r) = remains.strip_prefix("ip route add ") {
        format!("route {r} not restored")
    } else if remains.starts_with("ip -6 route del blackhole") {
        "crash record".to_string()
    } else {
        remains.to_string()
    };
    let remains = remains.as_str();
    if remains.starts_with("crash record") {
        // Its notes: blackhole routes of ours in the journal table.
        return sign == "+ "
            && body.starts_with("route -6 ")
            && body.contains(r#""table":"1701278323""#)
            && body.contains(r#""type":"blackhole""#);
    }
    if let Some(table) = remains.strip_prefix("nftables table inet ") {
        let table = table.split(' ').next().unwrap();
        return sign == "+ "
            && body.starts_with("nft ")
            && (body.contains(&format!(r#""table":"{table}""#))
                || body.contains(&format!(r#""name":"{table}""#)));
    }
    if let Some(keys) = remains.strip_prefix("sysctls not restored: ") {
        // Writing `forwarding` changes every link's too: the family is what remains.
        return keys.split(", ").any(|kv| {
            let family = kv.split('.').take(2).collect::<Vec<_>>().join(".");
            body.starts_with(&format!("sysctl {family}."))
        });
    }
    if let Some(rest) = remains.strip_prefix("address ") {
        let (net, link) = rest.split_once(" on ").unwrap();
        let link = link.split(' ').next().unwrap();
        return sign == "+ " && body.starts_with(&format!("addr {link} {net} "));
    }
    if let Some(rest) = remains.strip_prefix("route ") {
        let (route, sign_wanted) = match rest.split_once(" not restored") {
            Some((r, _)) => (r, "- "),
            None => (rest.split(" (").next().unwrap(), "+ "),
        };
        let words: Vec<&str> = route.split(' ').collect();
        let dst = match words[0] {
            "default" => "default",
            d => d
                .strip_suffix("/32")
                .or_else(|| d.strip_suffix("/128"))
                .unwrap_or(d),
        };
        let after = |w: &str| words.windows(2).find(|p| p[0] == w).map(|p| p[1]);
        let table = after("table").unwrap_or("main");
        return sign == sign_wanted
            && body.starts_with("route ")
            && body.contains(&format!(r#""dst":"{dst}""#))
            && body.contains(&format!(r#""table":"{table}""#))
            && after("via").is_none_or(|v| body.contains(&format!(r#""gateway":"{v}""#)));
    }
    if let Some(rest) = remains.strip_prefix("link ") {
        let name = rest.split(' ').next().unwrap();
        if rest.starts_with(&format!("{name} left up")) {
            return body.starts_with(&format!("link {name} "));
        }
        return sign == "+ "
            && (body.starts_with(&format!("link {name} "))
                || body.contains(&format!(".conf.{name}."))
                || body.contains(&format!(r#""dev":"{name}""#)));
    }
    panic!("unknown remains entry {remains:?}")
}

/// The kernel holds exactly what `remaining` lists, beyond the snapshots: every listed object
/// shows in the diff, and every line of the diff belongs to a listed object.
fn assert_exactly_remains(snaps: &Snapshots, remaining: &[String], when: &str) {
    let diff = snaps.diff_lines();
    for r in remaining {
        assert!(
            diff.iter().any(|l| explains(r, l)),
            "{when}: the error lists {r:?}, which does not remain:\n{}",
            diff.join("\n")
        );
    }
    for l in &diff {
        assert!(
            remaining.iter().any(|r| explains(r, l)),
            "{when}: {l}\nremains, but the error lists only {remaining:#?}"
        );
    }
}

/// The j-th undo fails, for every j, in a teardown and in the rollback of an apply that fails
/// at its last step: every other undo runs, the error lists exactly what remains, and
/// `teardown_by_name` then restores both namespaces.
fn fault_at_every_undo(lab: &Lab, spec: &RouterSpec) {
    let snaps = Snapshots::lab(lab);
    let steps = spec.plan().steps().to_vec();
    // The last step journals nothing, so the rollback of a failure there undoes everything.
    assert!(matches!(steps.last(), Some(Step::Announce { .. })));
    let undos = blocking::teardown(blocking::apply(spec).unwrap())
        .unwrap()
        .len();
    snaps.assert_restored("after a clean teardown");
    // What the injected failure leaves may still go with a later undo (a route with its
    // link): then nothing remains and the teardown or rollback is complete.
    for j in 1..=undos {
        let router = blocking::apply(spec).unwrap();
        fault::fail_undo(j);
        let result = blocking::teardown(router);
        fault::clear();
        let when = format!("teardown, undo {j}/{undos} failing");
        let remaining: Vec<String> = match result {
            Ok(_) => Vec::new(),
            Err(Error::Teardown { failures }) => failures.iter().map(|e| e.to_string()).collect(),
            Err(other) => panic!("{when}: {other:?}"),
        };
        assert_exactly_remains(&snaps, &remaining, &when);
        blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
        snaps.assert_restored(&format!("{when}, then teardown_by_name"));

        fault::fail_step(steps.len());
        fault::fail_undo(j);
        let result = blocking::apply(spec);
        fault::clear();
        let when = format!("rollback, undo {j}/{undos} failing");
        let remaining = match result {
            Err(Error::Apply {
                rollback: Rollback::Incomplete(remaining),
                ..
            }) => remaining,
            Err(Error::Apply {
                rollback: Rollback::Complete,
                ..
            }) => Vec::new(),
            other => panic!("{when}: {other:?}"),
        };
        assert_exactly_remains(&snaps, &remaining, &when);
        blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
        snaps.assert_restored(&format!("{when}, then teardown_by_name"));
    }
}

#[test]
fn failing_undo_dual_stack() {
    let _lock = shared();
    let lab = Lab::new();
    fault_at_every_undo(&lab, &dual_stack_spec(&lab, "undo-ds"));
}

#[test]
fn failing_undo_adopted_link() {
    let _lock = shared();
    let lab = Lab::with_adopted_macvlan();
    fault_at_every_undo(&lab, &adopted_spec(&lab, "undo-adopt"));
}

// ---------------------------------------------------------------------------------------------
// Child processes (crash recovery, privilege)
// ---------------------------------------------------------------------------------------------

/// The task of a child process: `apply <spec JSON>` or `unprivileged <spec JSON>`.
const CHILD_TASK: &str = "EGRESS_RELIABILITY_CHILD";

/// Not a test of its own: the body of the child processes that the crash and privilege tests
/// start (this test binary, re-executed with `--exact child_process --ignored`).
#[test]
#[ignore = "the child process of the crash and privilege tests; they run it"]
fn child_process() {
    let task = std::env::var(CHILD_TASK).unwrap_or_else(|_| {
        panic!("{CHILD_TASK} is not set: the crash and privilege tests run this")
    });
    let (what, json) = task.split_once(' ').expect("`TASK JSON`");
    let spec = RouterSpec::from_json(json).unwrap();
    let mut out = std::io::stdout();
    match what {
        "apply" => {
            writeln!(out, "[child:go]").unwrap();
            out.flush().unwrap();
            let started = Instant::now();
            let router = blocking::apply(&spec).unwrap();
            writeln!(out, "[child:done {}]", started.elapsed().as_micros()).unwrap();
            out.flush().unwrap();
            // Stays applied: the parent kills this process.
            drop(router);
            thread::sleep(Duration::from_secs(60));
            panic!("not killed within a minute");
        }
        "unprivileged" => {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let eff = status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
                .unwrap();
            assert_eq!(eff & (1 << 12), 0, "CAP_NET_ADMIN is still effective");
            let kinds = [
                ("apply", blocking::apply(&spec).map(drop)),
                ("check", blocking::check(&spec).map(drop)),
                ("ensure", blocking::ensure(&spec).map(drop)),
                (
                    "inspect",
                    blocking::inspect(spec.netns(), spec.name()).map(drop),
                ),
                (
                    "teardown_by_name",
                    blocking::teardown_by_name(spec.netns(), spec.name()).map(drop),
                ),
            ];
            for (op, result) in kinds {
                let e = result.expect_err(op);
                assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{op}: {e}");
                assert!(e.to_string().contains("CAP_NET_ADMIN"), "{op}: {e}");
                writeln!(out, "{op}: {e}").unwrap();
            }
        }
        other => panic!("unknown child task {other:?}"),
    }
}

/// This test binary, to run `child_process` with `task`; `wrapper` runs it (e.g. `setpriv …`).
fn child_command(task: &str, spec: &RouterSpec, wrapper: &[&str]) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args(["--exact", "child_process", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD_TASK, format!("{task} {}", spec.to_json_value()))
        .env_remove("RUST_TEST_THREADS");
    cmd
}

/// The apply's duration in a `[child:done MICROS]` line of `text`.
fn done(text: &str) -> Option<u64> {
    let (_, rest) = text.split_once("[child:done ")?;
    Some(rest.split(']').next()?.parse().unwrap())
}

/// Reads the child's stdout up to its `[child:go]` line.
fn wait_for_go(child: &mut Child, stdout: &mut BufReader<ChildStdout>) {
    let mut line = String::new();
    loop {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            panic!(
                "the child ended before applying: {}\n{stderr}",
                child.wait().unwrap()
            );
        }
        // libtest prints `test child_process ... ` on the same line.
        if line.contains("[child:go]") {
            return;
        }
    }
}

/// The rest of the child's stdout: the apply's duration if it printed `done MICROS`.
fn finished_in(mut stdout: BufReader<ChildStdout>) -> Option<u64> {
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    done(&rest)
}

fn kill(mut child: Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

// ---------------------------------------------------------------------------------------------
// 2. Crash recovery
// ---------------------------------------------------------------------------------------------

/// One kill: the child starts applying, and is SIGKILLed `delay` later. Returns the apply's
/// duration if it finished before the kill.
fn apply_and_kill(spec: &RouterSpec, delay: Option<Duration>) -> Option<u64> {
    let mut child = child_command("apply", spec, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    wait_for_go(&mut child, &mut stdout);
    match delay {
        Some(d) => thread::sleep(d),
        None => {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            let micros = done(&line);
            assert!(micros.is_some(), "the child's apply failed: {line:?}");
            kill(child);
            return micros;
        }
    }
    kill(child);
    finished_in(stdout)
}

/// `trials` kills of a child applying `spec`, each followed by `teardown_by_name` and a
/// comparison of both namespaces with their snapshots. Returns how many trials ended in each
/// state (by the number of objects teardown_by_name undid; `done` = apply had finished).
fn crash_trials(
    lab: &Lab,
    spec: &RouterSpec,
    trials: usize,
    rng: &mut Rng,
) -> BTreeMap<String, usize> {
    let snaps = Snapshots::lab(lab);
    // How long one apply takes in a child: the kills are spread over it.
    let full = apply_and_kill(spec, None).unwrap();
    let undone = blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
    snaps.assert_restored("after a completed apply in a child, killed");
    let mut stages = BTreeMap::new();
    for t in 0..trials {
        let delay = Duration::from_micros(rng.below(full * 6 / 5 + 1));
        let finished = apply_and_kill(spec, Some(delay));
        let when = format!(
            "{} trial {t}: killed {delay:?} after the start",
            spec.name()
        );
        let this = blocking::teardown_by_name(spec.netns(), spec.name())
            .unwrap_or_else(|e| panic!("{when}: teardown_by_name: {e}"));
        snaps.assert_restored(&when);
        let stage = match finished {
            Some(_) => "done".to_string(),
            None => format!("{:02}/{} undone", this.len(), undone.len()),
        };
        *stages.entry(stage).or_default() += 1;
    }
    stages
}

#[test]
fn crash_recovery_sigkill_at_random_moments() {
    let _lock = shared();
    let trials = if long() { 200 } else { 20 };
    let seed = seed();
    eprintln!("crash recovery: {trials} trials, EGRESS_SEED={seed}");
    let mut rng = Rng(seed);
    let started = Instant::now();
    // Foreign objects named like the router's are there too: recovery must not take them.
    let created = Lab::new();
    let spec = dual_stack_spec(&created, "crash-ds");
    add_foreign_objects(&created, &spec, false);
    let stages = crash_trials(&created, &spec, trials / 2, &mut rng);
    eprintln!("created macvlan: {stages:?}");
    drop(created);
    let adopted = Lab::with_adopted_macvlan();
    let spec = adopted_spec(&adopted, "crash-adopt");
    add_foreign_objects(&adopted, &spec, true);
    let stages = crash_trials(&adopted, &spec, trials - trials / 2, &mut rng);
    eprintln!("adopted link: {stages:?}");
    eprintln!("crash recovery: {trials} trials in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 3. Drift
// ---------------------------------------------------------------------------------------------

/// Drift as `check` reports it, with the `NatChanged` detail reduced to whether it is empty.
fn normalized(drift: &[Drift]) -> Vec<Drift> {
    drift
        .iter()
        .map(|d| match d {
            Drift::NatChanged { table, detail } => {
                assert!(!detail.is_empty(), "{d:?}");
                Drift::NatChanged {
                    table: table.clone(),
                    detail: String::new(),
                }
            }
            d => d.clone(),
        })
        .collect()
}

#[test]
fn drift_of_every_kind_is_named_and_repaired() {
    let _lock = shared();
    let lab = Lab::new();
    let snaps = Snapshots::lab(&lab);
    let spec = lab
        .router_spec("drift")
        .source(EGRESS_SOURCE6)
        .gateway(GATEWAY6)
        .redirect(Protocol::Tcp, SERVICE_PORT, WEB6, Some(WEB_PORT))
        .fallback(FALLBACK4)
        .keep_route("192.0.2.128/25", Some(NODE4))
        .mtu(1450)
        .mac("02:00:00:00:00:99")
        .build()
        .unwrap();
    let table = spec.table_name();
    let link = "macvlan0".to_string();
    let r = &lab.router;
    assert_eq!(
        blocking::ensure(&spec).unwrap().action,
        EnsureAction::Created
    );
    let fresh = Snapshots::lab(&lab);
    let fresh_journal = blocking::inspect(spec.netns(), spec.name())
        .unwrap()
        .unwrap()
        .journal
        .unwrap();
    assert!(fresh_journal.contains(" 4all.f=0"), "{fresh_journal}");

    let route = |s: &str| Drift::RouteMissing { route: s.into() };
    let sysctl = |key: &str, actual: &str| Drift::SysctlChanged {
        key: key.into(),
        expected: "1".into(),
        actual: actual.into(),
    };
    let nat = Drift::NatChanged {
        table: table.clone(),
        detail: String::new(),
    };
    let changed = |field: &'static str, expected: &str, actual: &str| Drift::LinkChanged {
        link: link.clone(),
        field,
        expected: expected.into(),
        actual: actual.into(),
    };
    let flush = format!("flush table inet {table}");
    let foreign_rule = format!("add rule inet {table} forward ip saddr 192.0.2.3 accept");
    type Attack<'a> = (&'a str, Box<dyn Fn() + 'a>, Vec<Drift>);
    let attacks: Vec<Attack> = vec![
        (
            "kept route deleted",
            Box::new(|| drop(r.ip(&["route", "del", "192.0.2.128/25"]))),
            vec![route("192.0.2.128/25 via 192.0.2.1 dev eth0 proto 158")],
        ),
        (
            "gateway route deleted",
            Box::new(|| drop(r.ip(&["route", "del", GATEWAY4, "dev", "macvlan0"]))),
            vec![route("203.0.113.1/32 dev macvlan0 proto 158")],
        ),
        (
            "IPv6 default route deleted",
            Box::new(|| drop(r.ip(&["-6", "route", "del", "default"]))),
            vec![route("default via 2001:db8:2::1 dev macvlan0 proto 158")],
        ),
        (
            "NAT table flushed",
            Box::new(|| r.nft(&flush)),
            vec![nat.clone()],
        ),
        (
            "NAT table modified by a foreign hand",
            Box::new(|| r.nft(&foreign_rule)),
            vec![nat.clone()],
        ),
        (
            "address changed",
            Box::new(|| {
                r.ip(&["addr", "del", EGRESS_SOURCE4, "dev", "macvlan0"]);
                r.ip(&["addr", "add", "203.0.113.98/24", "dev", "macvlan0"]);
            }),
            // With the link's last IPv4 address, the kernel drops its IPv4 routes too; the new
            // address is not the router's.
            vec![
                Drift::ForeignAddress {
                    link: link.clone(),
                    address: "203.0.113.98/24".parse().unwrap(),
                },
                Drift::AddressMissing {
                    link: link.clone(),
                    address: EGRESS_SOURCE4.parse().unwrap(),
                },
                route("203.0.113.1/32 dev macvlan0 proto 158"),
                route("default via 203.0.113.1 dev macvlan0 proto 158"),
            ],
        ),
        (
            "link set down",
            Box::new(|| drop(r.ip(&["link", "set", "macvlan0", "down"]))),
            // Down, the kernel also drops the link's routes and its IPv6 addresses.
            vec![
                Drift::LinkDown { link: link.clone() },
                Drift::AddressMissing {
                    link: link.clone(),
                    address: EGRESS_SOURCE6.parse().unwrap(),
                },
                route("203.0.113.1/32 dev macvlan0 proto 158"),
                route("2001:db8:2::1/128 dev macvlan0 proto 158"),
                route("default via 203.0.113.1 dev macvlan0 proto 158"),
                route("default via 2001:db8:2::1 dev macvlan0 proto 158"),
            ],
        ),
        (
            "mtu changed",
            Box::new(|| drop(r.ip(&["link", "set", "macvlan0", "mtu", "1400"]))),
            vec![changed("mtu", "1450", "1400")],
        ),
        (
            "mac changed",
            Box::new(|| drop(r.ip(&["link", "set", "macvlan0", "address", "02:00:00:00:00:42"]))),
            vec![changed("mac", "02:00:00:00:00:99", "02:00:00:00:00:42")],
        ),
        (
            "mode changed",
            Box::new(|| {
                drop(r.ip(&[
                    "link", "set", "macvlan0", "type", "macvlan", "mode", "bridge",
                ]))
            }),
            vec![changed("mode", "private", "bridge")],
        ),
        (
            "ip_forward reset",
            Box::new(|| r.sysctl_set("net.ipv4.ip_forward", "0")),
            vec![sysctl("net.ipv4.ip_forward", "0")],
        ),
        (
            "IPv6 forwarding reset",
            Box::new(|| r.sysctl_set("net.ipv6.conf.all.forwarding", "0")),
            vec![sysctl("net.ipv6.conf.all.forwarding", "0")],
        ),
        (
            "arp_notify reset",
            Box::new(|| r.sysctl_set("net.ipv4.conf.macvlan0.arp_notify", "0")),
            vec![sysctl("net.ipv4.conf.macvlan0.arp_notify", "0")],
        ),
        (
            "ndisc_notify reset",
            Box::new(|| r.sysctl_set("net.ipv6.conf.macvlan0.ndisc_notify", "0")),
            vec![sysctl("net.ipv6.conf.macvlan0.ndisc_notify", "0")],
        ),
        (
            "macvlan deleted",
            Box::new(|| drop(r.ip(&["link", "del", "macvlan0"]))),
            vec![Drift::LinkMissing { link: link.clone() }],
        ),
    ];
    for (what, attack, expected) in &attacks {
        attack();
        let drift = blocking::check(&spec).unwrap();
        assert_eq!(normalized(&drift), *expected, "{what}: {drift:#?}");
        let outcome = blocking::ensure(&spec).unwrap();
        assert_eq!(outcome.action, EnsureAction::Repaired, "{what}");
        assert_eq!(outcome.drift, drift, "{what}");
        assert!(blocking::check(&spec).unwrap().is_empty(), "{what}");
        fresh.assert_restored(&format!("{what}, then ensure: not as a fresh apply"));
    }

    // A default route that appears beside the router's is replaced like the ones before it:
    // saved in the journal table, restored by teardown.
    r.ip(&[
        "route", "add", "default", "via", NODE4, "dev", "eth0", "metric", "50",
    ]);
    let drift = blocking::check(&spec).unwrap();
    let foreign = Drift::ForeignDefaultRoute {
        route: "default via 192.0.2.1 dev eth0".into(),
    };
    assert_eq!(drift, std::slice::from_ref(&foreign));
    let outcome = blocking::ensure(&spec).unwrap();
    assert_eq!(outcome.action, EnsureAction::Repaired);
    assert_eq!(outcome.drift, [foreign]);
    assert!(blocking::check(&spec).unwrap().is_empty());
    // Saved in both copy tables; the crash record (its notes and the table's comment) grew by
    // its fingerprint; nothing else changed.
    let diff = fresh.diff_lines();
    for table in ["1701278323", "1701278317"] {
        assert!(
            diff.iter().any(|l| l.starts_with("+ route -4 ")
                && l.contains(r#""metric":50"#)
                && l.contains(&format!(r#""table":"{table}""#))),
            "{diff:#?}"
        );
    }
    let record = |l: &String| {
        (l.contains(r#""type":"blackhole""#) && l.contains(r#""table":"1701278323""#))
            || (l.starts_with("+ nft table ") || l.starts_with("- nft table "))
    };
    let copies = |l: &String| l.contains(r#""metric":50"#);
    assert!(diff.iter().all(|l| record(l) || copies(l)), "{diff:#?}");
    blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
    r.ip(&[
        "route", "del", "default", "via", NODE4, "dev", "eth0", "metric", "50",
    ]);
    snaps.assert_restored("after the drift tests and teardown_by_name");

    // The whole ruleset flushed (a firewall reload): the router's table is gone, and with it
    // one of the two places of its crash record. The other (its notes in the journal routing
    // table) survives: the table is written again from it — never from the current values —
    // and teardown restores the namespace exactly, forwarding included.
    let fresh = {
        let outcome = blocking::ensure(&spec).unwrap();
        assert_eq!(outcome.action, EnsureAction::Created);
        Snapshots::lab(&lab)
    };
    let journal = |spec: &RouterSpec| {
        blocking::inspect(spec.netns(), spec.name())
            .unwrap()
            .unwrap()
            .journal
            .unwrap()
    };
    let recorded = journal(&spec);
    assert!(recorded.contains(" 4all.f=0"), "{recorded}");
    r.nft("flush ruleset");
    let missing = Drift::NatChanged {
        table: table.clone(),
        detail: "the table is missing (and with it the crash record in its comment)".into(),
    };
    assert_eq!(
        blocking::check(&spec).unwrap(),
        std::slice::from_ref(&missing)
    );
    let outcome = blocking::ensure(&spec).unwrap();
    assert_eq!(outcome.action, EnsureAction::Repaired);
    assert_eq!(outcome.drift, [missing]);
    assert!(blocking::check(&spec).unwrap().is_empty());
    fresh.assert_restored("a flushed ruleset, then ensure: not as before");
    assert_eq!(journal(&spec), recorded);
    blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
    snaps.assert_restored("after a flushed ruleset, ensure and teardown_by_name");
}

// ---------------------------------------------------------------------------------------------
// 4. Ownership
// ---------------------------------------------------------------------------------------------
/// Objects that look like a router's but are not: other nft tables, routes with other
/// protocols in main and other tables, a policy rule, a macvlan named like ours without our
/// marker, a bridge with our group number that is not a macvlan, addresses with other
/// protocols (on the adopted link too, when `adopted`), a link with a `forwarding` of its own,
/// and a `macvlan0` in the node namespace.
fn add_foreign_objects(lab: &Lab, spec: &RouterSpec, adopted: bool) {
    let r = &lab.router;
    r.nft(
        "table inet egressx {
            chain forward { type filter hook forward priority 10; policy accept; }
         }
         table inet egress {
            set blocked { type ipv4_addr; elements = { 198.51.100.77 }; }
         }
         table ip filter {
            chain input { type filter hook input priority 0; policy accept; ip saddr 198.51.100.66 drop; }
         }
         table ip nat {
            chain post { type nat hook postrouting priority 100; oifname \"macvlan1\" masquerade; }
         }",
    );
    let routes: [&[&str]; 9] = [
        &[
            "route",
            "add",
            "198.18.0.0/24",
            "via",
            NODE4,
            "proto",
            "static",
        ],
        &[
            "route",
            "add",
            "198.18.1.0/24",
            "via",
            NODE4,
            "proto",
            "157",
        ],
        &[
            "route",
            "add",
            "198.18.2.0/24",
            "dev",
            "eth0",
            "proto",
            "159",
            "metric",
            "5",
        ],
        &[
            "route", "add", "default", "via", NODE4, "table", "100", "proto", "static",
        ],
        &[
            "route",
            "add",
            "203.0.113.0/24",
            "dev",
            "eth0",
            "table",
            "1701278322",
        ],
        // A second default route in main: replaced by the router, restored exactly.
        &[
            "route", "add", "default", "via", NODE4, "metric", "300", "proto", "static",
        ],
        &[
            "-6",
            "route",
            "add",
            "2001:db8:9::/64",
            "via",
            NODE6,
            "proto",
            "static",
        ],
        &[
            "-6", "route", "add", "default", "via", NODE6, "dev", "eth0", "table", "100",
        ],
        &[
            "rule",
            "add",
            "from",
            "198.18.0.0/24",
            "lookup",
            "100",
            "pref",
            "1000",
        ],
    ];
    for args in routes {
        r.ip(args);
    }
    r.ip(&[
        "link", "add", "macvlan1", "link", "eth0", "type", "macvlan", "mode", "bridge",
    ]);
    r.ip(&["link", "set", "macvlan1", "up"]);
    let marker = link_group_marker(spec.name()).to_string();
    r.ip(&["link", "add", "egress0", "type", "bridge"]);
    r.ip(&["link", "set", "egress0", "group", &marker]);
    r.add_address("macvlan1", "203.0.113.60/24", 157);
    r.add_address("macvlan1", "2001:db8:2::60/64", 0);
    r.add_address("eth0", "192.0.2.60/24", 159);
    r.sysctl_set("net.ipv4.conf.macvlan1.forwarding", "1");
    r.sysctl_set("net.ipv6.conf.macvlan1.forwarding", "1");
    if adopted {
        r.add_address(SDN_MACVLAN, "203.0.113.50/24", 157);
        r.add_address(SDN_MACVLAN, "203.0.113.51/24", 0);
        r.add_address(SDN_MACVLAN, "2001:db8:2::50/64", 4);
    }
    lab.node.ip(&[
        "link", "add", "macvlan0", "link", "ext0", "type", "macvlan", "mode", "private",
    ]);
}

/// Lines of `before` that a router leaves alone while it is applied: all but the default
/// routes of table main (it replaces them), the sysctls it sets (and the ones that follow) and
/// the adopted link's own line (it brings it up).
fn untouched(before: &Snapshot, adopted: Option<&str>) -> Vec<String> {
    before
        .lines()
        .iter()
        .filter(|l| {
            let main_default = l.starts_with("route ")
                && l.contains(r#""dst":"default""#)
                && l.contains(r#""table":"main""#);
            let adopted_link = adopted.is_some_and(|a| l.starts_with(&format!("link {a} ")));
            !main_default && !adopted_link && !l.starts_with("sysctl ")
        })
        .cloned()
        .collect()
}

fn foreign_objects_survive(lab: &Lab, spec: &RouterSpec, adopted: bool) {
    add_foreign_objects(lab, spec, adopted);
    let snaps = Snapshots::lab(lab);
    let before = Snapshot::take(&lab.router);
    for probe in [
        "nft table {\"family\":\"inet\",\"name\":\"egressx\"",
        "link macvlan1 ",
        "link egress0 ",
        r#""dst":"198.18.1.0/24""#,
        r#""table":"1701278322""#,
        "addr eth0 192.0.2.60/24",
        "sysctl net.ipv4.conf.macvlan1.forwarding = 1",
    ] {
        assert!(
            before.lines().iter().any(|l| l.contains(probe)),
            "the foreign object {probe:?} was not set up:\n{before}"
        );
    }
    let keep = untouched(&before, adopted.then_some(SDN_MACVLAN));
    let assert_kept = |when: &str| {
        let now = Snapshot::take(&lab.router);
        let lost: Vec<&String> = keep.iter().filter(|l| !now.lines().contains(l)).collect();
        assert!(
            lost.is_empty(),
            "{when}: foreign objects changed: {lost:#?}"
        );
    };

    let router = blocking::apply(spec).unwrap();
    assert!(blocking::check(spec).unwrap().is_empty());
    assert_kept("applied");
    blocking::teardown(router).unwrap();
    snaps.assert_restored("apply, teardown");

    drop(blocking::apply(spec).unwrap());
    blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
    snaps.assert_restored("apply, teardown_by_name");

    let steps = spec.plan().steps().len();
    for k in [steps / 2, steps] {
        fault::fail_step(k);
        let e = blocking::apply(spec).unwrap_err();
        fault::clear();
        assert_eq!(e.kind(), ErrorKind::Apply, "{e}");
        snaps.assert_restored(&format!("rollback at step {k}"));
    }

    assert!(blocking::teardown_by_name(spec.netns(), spec.name())
        .unwrap()
        .is_empty());
    snaps.assert_restored("teardown_by_name with no router");
}

#[test]
fn foreign_objects_survive_a_created_macvlan_router() {
    let _lock = shared();
    let lab = Lab::new();
    let spec = dual_stack_spec(&lab, "own");
    foreign_objects_survive(&lab, &spec, false);
}

#[test]
fn foreign_objects_survive_an_adopted_link_router() {
    let _lock = shared();
    let lab = Lab::with_adopted_macvlan();
    let spec = adopted_spec(&lab, "own-adopt");
    foreign_objects_survive(&lab, &spec, true);
}

// ---------------------------------------------------------------------------------------------
// 5. Concurrency
// ---------------------------------------------------------------------------------------------

/// A light topology for one router: `node` holds the macvlan parent `ext0` (a veth whose peer
/// stays there), `router` holds `eth0` (a veth to the node) with addresses of both families,
/// default routes via the node and forwarding off.
struct Pair {
    node: Netns,
    router: Netns,
}

impl Pair {
    fn new(role: &str) -> Pair {
        let pair = Pair {
            node: Netns::new(&format!("{role}-node")),
            router: Netns::new(&format!("{role}-router")),
        };
        let (node, router) = (&pair.node, &pair.router);
        for ns in [node, router] {
            ns.sysctl_set("net.ipv6.conf.all.accept_dad", "0");
            ns.sysctl_set("net.ipv6.conf.default.accept_dad", "0");
        }
        node.ip(&[
            "link",
            "add",
            "ext0",
            "type",
            "veth",
            "peer",
            "name",
            "ext0-peer",
        ]);
        node.ip(&["link", "set", "ext0-peer", "up"]);
        node.ip(&["link", "set", "ext0", "up"]);
        node.ip(&[
            "link",
            "add",
            "vrouter",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            router.name(),
        ]);
        node.ip(&["link", "set", "vrouter", "up"]);
        router.ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
        router.ip(&["addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad"]);
        router.ip(&["link", "set", "eth0", "up"]);
        router.ip(&["route", "add", "default", "via", NODE4]);
        router.ip(&["-6", "route", "add", "default", "via", NODE6, "dev", "eth0"]);
        router.sysctl_set("net.ipv4.ip_forward", "0");
        router.sysctl_set("net.ipv6.conf.all.forwarding", "0");
        pair
    }

    fn spec(&self, name: &str) -> RouterSpec {
        RouterSpec::builder(name)
            .netns(core_ns(&self.router))
            .macvlan("ext0", egress_core::MacvlanMode::Private)
            .parent_netns(core_ns(&self.node))
            .source(EGRESS_SOURCE4)
            .source(EGRESS_SOURCE6)
            .gateway(GATEWAY4)
            .gateway(GATEWAY6)
            .redirect(Protocol::Tcp, SERVICE_PORT, WEB4, Some(WEB_PORT))
            .redirect(Protocol::Udp, 53, WEB6, None)
            .fallback(FALLBACK4)
            .build()
            .unwrap()
    }

    fn snapshots(&self) -> Snapshots<'_> {
        Snapshots::take(&[&self.router, &self.node])
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn distinct_routers_in_parallel_do_not_interfere() {
    let _lock = exclusive();
    let (threads, cycles) = if long() { (32, 200) } else { (8, 10) };
    assert_eq!(leftover_namespaces(), Vec::<String>::new());
    // The pool opens its home namespace once per process, at its first call (a descriptor it
    // keeps, not a leak): a call first, so that the count does not depend on the tests'
    // order.
    {
        let warm = Pair::new("parw");
        blocking::inspect(warm.spec("par-w").netns(), "par-w").unwrap();
    }
    let fds = open_fds();
    let started = Instant::now();
    let barrier = Barrier::new(threads);
    thread::scope(|s| {
        let barrier = &barrier;
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                s.spawn(move || {
                    let pair = Pair::new(&format!("par{i}"));
                    let spec = pair.spec(&format!("par-{i}"));
                    let snaps = pair.snapshots();
                    barrier.wait();
                    for c in 0..cycles {
                        let router = blocking::apply(&spec)
                            .unwrap_or_else(|e| panic!("thread {i} cycle {c}: {e}"));
                        let drift = blocking::check(&spec).unwrap();
                        assert!(drift.is_empty(), "thread {i} cycle {c}: {drift:?}");
                        if c % 2 == 0 {
                            blocking::teardown(router).unwrap();
                        } else {
                            drop(router);
                            blocking::teardown_by_name(spec.netns(), spec.name()).unwrap();
                        }
                        assert_eq!(
                            blocking::inspect(spec.netns(), spec.name()).unwrap(),
                            None,
                            "thread {i} cycle {c}"
                        );
                    }
                    snaps.assert_restored(&format!("thread {i} after {cycles} cycles"));
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    });
    let elapsed = started.elapsed();
    assert_eq!(leftover_namespaces(), Vec::<String>::new());
    // Namespace worker threads end when their handles are dropped; give them a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_fds() > fds && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        open_fds() <= fds,
        "{} fds open before, {} after",
        fds,
        open_fds()
    );
    eprintln!(
        "{threads} threads x {cycles} cycles ({} apply+teardown) in {elapsed:?}",
        threads * cycles
    );
}

#[test]
fn two_appliers_of_one_router_exactly_one_wins() {
    let _lock = shared();
    let rounds = if long() { 200 } else { 10 };
    let pair = Pair::new("race");
    let spec = pair.spec("race");
    let before = pair.snapshots();
    let router = blocking::apply(&spec).unwrap();
    let applied = pair.snapshots();
    blocking::teardown(router).unwrap();
    before.assert_restored("after one apply and teardown");
    let mut preflight = 0;
    for round in 0..rounds {
        let barrier = Barrier::new(2);
        let results: Vec<egress_core::Result<Router>> = thread::scope(|s| {
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        blocking::apply(&spec)
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let (won, lost): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
        assert_eq!(won.len(), 1, "round {round}: {lost:?}");
        // The loser finds the winner's router before its first change, or when it creates the
        // table (then after writing its crash record, which it takes back completely).
        let e = lost.into_iter().next().unwrap().unwrap_err();
        let cause = match &e {
            Error::Apply {
                source,
                rollback: Rollback::Complete,
                ..
            } => source.as_ref(),
            e => e,
        };
        assert_eq!(cause.kind(), ErrorKind::AlreadyExists, "round {round}: {e}");
        if !e.to_string().contains("won the race") {
            preflight += 1;
        }
        applied.assert_restored_but_record(&format!("round {round}: not as one apply leaves it"));
        assert!(blocking::check(&spec).unwrap().is_empty());
        assert_eq!(
            handles_taken_by_others(&pair.router, &spec.table_name()),
            0,
            "round {round}: the loser's batch added (then took back) rules in the winner's table"
        );
        let router = won.into_iter().next().unwrap().unwrap();
        blocking::teardown(router).unwrap();
        before.assert_restored(&format!("round {round}, after the winner's teardown"));
    }
    eprintln!(
        "{rounds} races: the loser stopped at preflight {preflight} times, at the table {} times",
        rounds - preflight
    );
}

/// How many handles of `table` (in `ns`) were taken by objects that are no longer in it: the
/// kernel numbers a table's chains, sets and rules with one counter, which a rule added by a
/// batch that the kernel then aborts advances too. Found with a probe rule, added (its handle
/// is the next one) and deleted again.
fn handles_taken_by_others(ns: &Netns, table: &str) -> u64 {
    let handles = |listing: &str| -> Vec<u64> {
        listing
            .lines()
            .filter_map(|l| l.rsplit_once("# handle "))
            .map(|(_, h)| h.trim().parse().unwrap())
            .collect()
    };
    let listed = ns.exec(&["nft", "-a", "list", "table", "inet", table]);
    // The first line's is the table's own (a namespace-wide counter).
    let highest = handles(&listed).into_iter().skip(1).max().unwrap();
    let added = ns.exec(&[
        "nft", "-e", "-a", "add", "rule", "inet", table, "input", "counter",
    ]);
    let probe = *handles(&added).first().unwrap();
    ns.exec(&[
        "nft",
        "delete",
        "rule",
        "inet",
        table,
        "input",
        "handle",
        &probe.to_string(),
    ]);
    probe - highest - 1
}

/// The batch of an apply that lost the race for `table` to another, as the create step sent
/// it before it looked for the table first: NEWTABLE `table` with `NLM_F_EXCL` (which fails:
/// the table exists), then `per_chain` rules appended to each of `chains`, named by name. The
/// kernel processes every message (the rules go, uncommitted, into the existing table's
/// chains), then aborts the batch.
fn losing_batch(table: &str, chains: &[String], per_chain: usize, seq: u32) -> Vec<u8> {
    const SUBSYS_NFTABLES: u16 = 10;
    const NFPROTO_INET: u8 = 1;
    fn attr(out: &mut Vec<u8>, kind: u16, text: &str) {
        let len = 4 + text.len() + 1;
        out.extend((len as u16).to_ne_bytes());
        out.extend(kind.to_ne_bytes());
        out.extend(text.as_bytes());
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    let mut batch = Vec::new();
    let mut message = |kind: u16, flags: u16, family: u8, res_id: u16, attrs: &[(u16, &str)]| {
        let mut body = vec![family, 0];
        body.extend(res_id.to_be_bytes());
        for (k, v) in attrs {
            attr(&mut body, *k, v);
        }
        batch.extend((16 + body.len() as u32).to_ne_bytes());
        batch.extend(kind.to_ne_bytes());
        batch.extend((libc::NLM_F_REQUEST as u16 | flags).to_ne_bytes());
        batch.extend(seq.to_ne_bytes());
        batch.extend(0u32.to_ne_bytes());
        batch.extend(body);
    };
    // NFNL_MSG_BATCH_BEGIN / END, NFT_MSG_NEWTABLE / NEWRULE; NFTA_TABLE_NAME,
    // NFTA_RULE_TABLE, NFTA_RULE_CHAIN.
    message(0x10, 0, 0, SUBSYS_NFTABLES, &[]);
    let (create, excl, append) = (0x400, 0x200, 0x800);
    message(
        SUBSYS_NFTABLES << 8,
        create | excl,
        NFPROTO_INET,
        0,
        &[(1, table)],
    );
    for chain in chains {
        for _ in 0..per_chain {
            let attrs = [(1, table), (2, chain.as_str())];
            message(
                SUBSYS_NFTABLES << 8 | 6,
                create | append,
                NFPROTO_INET,
                0,
                &attrs,
            );
        }
    }
    message(0x11, 0, 0, SUBSYS_NFTABLES, &[]);
    batch
}

#[test]
fn reads_are_exact_while_aborted_batches_append_to_the_routers_chains() {
    let _lock = shared();
    let reads = if long() { 2000 } else { 100 };
    let pair = Pair::new("abort");
    let spec = pair.spec("abort");
    let table = spec.table_name();
    // Dumps in several parts, read slowly, as on a busy machine: the kernel resumes a dump by
    // counting the rules before the point it stopped at, and the aborted batches' rules, there
    // or not when it makes each part, shift that count.
    fault::slow_dumps();
    let router = blocking::apply(&spec).unwrap();
    let listed = pair.router.exec(&["nft", "list", "table", "inet", &table]);
    let chains: Vec<String> = listed
        .lines()
        .filter_map(|l| l.trim().strip_prefix("chain ")?.strip_suffix(" {"))
        .map(str::to_string)
        .collect();
    assert!(chains.len() >= 3, "{listed}");
    let socket = pair.router.run(|| {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        std::io::Result::Ok(socket)
    });
    let socket = socket.unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let refused = thread::scope(|s| {
        let appender = s.spawn(|| {
            let mut refused = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                socket
                    .send(&losing_batch(&table, &chains, 500, refused), 0)
                    .unwrap();
                // The batch asks for no acks: its one answer is the NEWTABLE's error.
                let (reply, _) = socket.recv_from_full().unwrap();
                let errno = -i32::from_ne_bytes(reply[16..20].try_into().unwrap());
                assert_eq!(errno, libc::EEXIST, "{reply:?}");
                refused += 1;
            }
            refused
        });
        for read in 0..reads {
            let drift = blocking::check(&spec);
            if !matches!(&drift, Ok(d) if d.is_empty()) {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                panic!("read {read}: {drift:?}");
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        appender.join().unwrap()
    });
    fault::clear();
    // The reads ran among the batches, not after them.
    assert!(
        refused as usize >= reads,
        "{refused} batches in {reads} reads"
    );
    eprintln!("{reads} exact reads among {refused} aborted batches");
    blocking::teardown(router).unwrap();
}

// ---------------------------------------------------------------------------------------------
// 7. Privilege
// ---------------------------------------------------------------------------------------------

/// Runs the child with CAP_NET_ADMIN dropped from its inheritable and bounding sets (so an
/// exec as root does not get it back).
fn run_without_net_admin(spec: &RouterSpec) -> String {
    let out = child_command(
        "unprivileged",
        spec,
        &[
            "setpriv",
            "--inh-caps=-net_admin",
            "--bounding-set=-net_admin",
            "--",
        ],
    )
    .output()
    .unwrap_or_else(|e| panic!("setpriv (util-linux) could not run: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child without CAP_NET_ADMIN: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("apply: permission denied"), "{stdout}");
    stdout
}

#[test]
fn without_net_admin_every_call_fails_up_front_and_changes_nothing() {
    let _lock = shared();
    let lab = Lab::new();
    let snaps = Snapshots::lab(&lab);
    let spec = dual_stack_spec(&lab, "noadmin");
    run_without_net_admin(&spec);
    snaps.assert_restored("apply without CAP_NET_ADMIN");

    // An existing router is left exactly as it is, teardown_by_name and ensure included.
    let router = blocking::apply(&spec).unwrap();
    let applied = Snapshots::lab(&lab);
    run_without_net_admin(&spec);
    applied.assert_restored("calls without CAP_NET_ADMIN on an applied router");
    assert!(blocking::check(&spec).unwrap().is_empty());
    blocking::teardown(router).unwrap();
    snaps.assert_restored("after teardown");
}

// ---------------------------------------------------------------------------------------------
// 6. Properties of the JSON form (the fuzz targets are in fuzz/)
// ---------------------------------------------------------------------------------------------

fn ifname() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9.-]{0,13}"
}

fn netns() -> impl Strategy<Value = CoreNetns> {
    prop_oneof![
        Just(CoreNetns::Current),
        "/run/netns/[a-z0-9]{1,8}".prop_map(|p| CoreNetns::Path(p.into())),
        "[a-z0-9][a-z0-9_.-]{0,8}".prop_map(CoreNetns::Name),
        (1u32..).prop_map(CoreNetns::Pid),
    ]
}

fn mode() -> impl Strategy<Value = egress_core::MacvlanMode> {
    use egress_core::MacvlanMode::*;
    prop_oneof![Just(Bridge), Just(Private), Just(Vepa), Just(Passthru)]
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        Just(Protocol::Sctp)
    ]
}

/// A unicast documentation address of one family, from a small index.
fn address(v6: bool, n: u16) -> String {
    if v6 {
        format!("2001:db8:{:x}::{:x}", n / 250 + 1, n % 250 + 1)
    } else {
        format!("203.0.{}.{}", 113 + n / 250 % 3, n % 250 + 1)
    }
}

/// Whether `a` is the network address (IPv4 or IPv6) or the broadcast address (IPv4) of one of
/// `subnets` (address, prefix) that has more than two addresses: no host, so no destination.
fn subnet_edge(subnets: &[(IpAddr, u8)], a: IpAddr) -> bool {
    subnets.iter().any(|(s, prefix)| match (s, a) {
        (IpAddr::V4(s), IpAddr::V4(a)) if *prefix <= 30 => {
            let mask = u32::MAX << (32 - prefix);
            let (s, a) = (u32::from(*s), u32::from(a));
            a == s & mask || a == s | !mask
        }
        (IpAddr::V6(s), IpAddr::V6(a)) if *prefix <= 126 => {
            u128::from(a) == u128::from(*s) & (u128::MAX << (128 - prefix))
        }
        _ => false,
    })
}

/// Valid specs, built through the builder: every field, every variant.
fn spec_strategy() -> impl Strategy<Value = RouterSpec> {
    let macvlan = (
        ifname(),
        netns(),
        mode(),
        proptest::option::of(1280u32..=9000),
        proptest::option::of(any::<[u8; 6]>()),
        proptest::option::of(ifname()),
    );
    let external = prop_oneof![macvlan.prop_map(Some), Just(None),];
    let redirect = (protocol(), 1u16.., 0u16..700, proptest::option::of(1u16..));
    let kept = (
        any::<bool>(),
        0u8..=16,
        any::<u32>(),
        proptest::option::of(0u16..700),
    );
    (
        ("[a-z0-9][a-z0-9-]{0,31}", netns(), external, ifname()),
        any::<(bool, bool)>().prop_filter("a family", |(a, b)| *a || *b),
        proptest::collection::btree_set(0u16..700, 1..4),
        proptest::collection::vec(redirect, 0..6),
        any::<(bool, bool, u16, u16)>(),
        proptest::collection::vec(kept, 0..3),
        0u8..=16,
    )
        .prop_map(
            |(
                (name, ns, external, adopt),
                (has4, has6),
                addrs,
                redirects,
                fallbacks,
                kept,
                announce,
            )| {
                let mut b = RouterSpec::builder(name)
                    .netns(ns)
                    .internal("eth0")
                    .announce(announce);
                b = match external {
                    Some((parent, parent_ns, mode, mtu, mac, link)) => {
                        let mut b = b.macvlan(parent, mode).parent_netns(parent_ns);
                        if let Some(m) = mtu {
                            b = b.mtu(m);
                        }
                        if let Some(mut mac) = mac {
                            mac[0] &= 0xfe; // unicast
                            mac[5] |= 1; // not all zero
                            b = b.mac(mac.map(|x| format!("{x:02x}")).join(":"));
                        }
                        match link.filter(|l| l != "eth0") {
                            Some(l) => b.link_name(l),
                            None => b,
                        }
                    }
                    None if adopt == "eth0" => b.adopt("macvlan0"),
                    None => b.adopt(adopt),
                };
                let mut families: Vec<bool> = [(has4, false), (has6, true)]
                    .into_iter()
                    .filter_map(|(on, v6)| on.then_some(v6))
                    .collect();
                families.truncate(addrs.len()); // a family needs a source
                let (has4, has6) = (families.contains(&false), families.contains(&true));
                let family = |i: usize| families[i % families.len()];
                let mut sources = std::collections::HashSet::new();
                let mut subnets = Vec::new();
                for (i, a) in addrs.iter().enumerate() {
                    let prefix = if family(i) { 64 + a % 65 } else { 8 + a % 25 };
                    sources.insert(address(family(i), *a));
                    subnets.push((address(family(i), *a).parse().unwrap(), prefix as u8));
                    b = b.source(format!("{}/{prefix}", address(family(i), *a)));
                }
                // The egress source is never a destination, nor its subnet's network or
                // broadcast address.
                let not_source = |a: String| {
                    (!sources.contains(&a) && !subnet_edge(&subnets, a.parse().unwrap()))
                        .then_some(a)
                };
                for &v6 in &families {
                    b = b.gateway(address(v6, 700)); // sources use 0..700
                }
                let mut seen = std::collections::HashSet::new();
                for (i, (proto, port, to, to_port)) in redirects.into_iter().enumerate() {
                    let Some(to) = not_source(address(family(i), 701 + to)) else {
                        continue;
                    };
                    if seen.insert((proto, port, family(i))) {
                        b = b.redirect(proto, port, to, to_port);
                    }
                }
                let (f4, f6, a4, a6) = fallbacks;
                if let Some(f) = not_source(address(false, 1400 + a4 % 300)).filter(|_| f4 && has4)
                {
                    b = b.fallback(f);
                }
                if let Some(f) = not_source(address(true, 1400 + a6 % 300)).filter(|_| f6 && has6) {
                    b = b.fallback(f);
                }
                let mut kept_to = std::collections::HashSet::new();
                for (v6, extra, bits, via) in kept {
                    let v6 = (v6 && has6) || !has4;
                    let (to, via) = if v6 {
                        let net = format!("2001:db8:{:x}::/{}", bits & 0xffff, 48 + extra);
                        (net, via.map(|v| address(true, v)))
                    } else {
                        let prefix = 8 + u32::from(extra);
                        let net =
                            (0x0a00_0000 | (bits & 0x00ff_ffff)) & (u32::MAX << (32 - prefix));
                        let net = format!("{}/{prefix}", std::net::Ipv4Addr::from(net));
                        (net, via.map(|v| address(false, v)))
                    };
                    // One route per network.
                    if kept_to.insert(to.clone()) {
                        b = b.keep_route(to, via.as_deref());
                    }
                }
                b.build()
                    .unwrap_or_else(|e| panic!("the strategy made an invalid spec: {e}"))
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// parse ∘ print = id: a spec printed as JSON parses back to an equal spec, and printing
    /// that prints the same text.
    #[test]
    fn json_print_then_parse_is_identity(spec in spec_strategy()) {
        let json = spec.to_json();
        let parsed = RouterSpec::from_json(&json).unwrap();
        prop_assert_eq!(&parsed, &spec);
        prop_assert_eq!(parsed.to_json(), json);
        let value = RouterSpec::from_json_value(spec.to_json_value()).unwrap();
        prop_assert_eq!(value, spec);
    }

    /// Whatever text comes in, `from_json` returns a spec that prints and parses back to
    /// itself, or an `InvalidSpec` error; it never panics.
    #[test]
    fn json_parse_then_print_is_identity(text in json_like()) {
        match RouterSpec::from_json(&text) {
            Ok(spec) => prop_assert_eq!(RouterSpec::from_json(&spec.to_json()).unwrap(), spec),
            Err(e) => prop_assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{}", e),
        }
    }
}

/// JSON documents close to the spec's form: valid ones with a value replaced or a key dropped.
fn json_like() -> impl Strategy<Value = String> {
    let values = prop_oneof![
        Just(serde_json::json!(null)),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        "[ -~]{0,20}".prop_map(|s| serde_json::json!(s)),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!("203.0.113.999/24")),
        Just(serde_json::json!(["2001:db8::1", "2001:db8::1"])),
    ];
    (spec_strategy(), 0usize..16, values, any::<bool>()).prop_map(|(spec, i, value, drop_key)| {
        let mut v = spec.to_json_value();
        let map = v.as_object_mut().unwrap();
        let key = map.keys().nth(i % map.len()).unwrap().clone();
        if drop_key {
            map.remove(&key);
        } else {
            map.insert(key, value);
        }
        v.to_string()
    })
}
