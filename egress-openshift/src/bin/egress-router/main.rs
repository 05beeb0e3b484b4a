//! `egress-router`: a drop-in for the OpenShift egress router image's entrypoint (the `EGRESS_*`
//! environment contract of [`egress_openshift`]), plus operator subcommands (`inspect`,
//! `check`, `diagnose`, `teardown`, `promote`, `demote`) over the same core, and `render` (an
//! OpenShift EgressRouter object as Kubernetes manifests). A thin front end: it builds a `RouterSpec` and calls
//! `egress_core::blocking`; `egress-router --help` documents it for users.

use std::{
    env,
    ffi::OsString,
    io::{BufRead, BufReader, Read},
    net::{SocketAddr, TcpListener},
    path::Path,
    process::ExitCode,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use cli::{Command, NotRun, Target};
use egress_core::{
    blocking, DiagnoseOptions, EnsureAction, Error, ErrorKind, Netns, Role, RouterSpec,
    RouterState, WatchEvent,
};
use egress_openshift::{
    self as openshift, logging,
    metrics::{self, Metrics},
    render::RenderOptions,
    Config, Mode,
};
use nix::sys::signal::{SigSet, Signal};
use tracing::{debug, info, warn};
use tracing_subscriber::filter::LevelFilter;

mod cli;

/// Where legacy mode serves `/metrics` and `/healthz` (`--metrics-listen` overrides it).
const METRICS_VAR: &str = "EGRESS_ROUTER_METRICS";

/// Exit codes, as `--help` documents them.
mod code {
    pub const OK: u8 = 0;
    pub const INVALID: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const FAILED: u8 = 3;
    pub const LEFT_BEHIND: u8 = 4;
    pub const NOT_AS_EXPECTED: u8 = 5;
    pub const CHECK_FAILED: u8 = 6;
}

fn main() -> ExitCode {
    let args: Vec<OsString> = env::args_os().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(c) => c,
        Err(NotRun::Print(e)) => {
            // --help, --version: on stdout.
            let _ = e.print();
            return ExitCode::from(code::OK);
        }
        Err(NotRun::Usage(usage)) => {
            eprintln!("egress-router: {usage}\nTry 'egress-router --help'.");
            return ExitCode::from(code::USAGE);
        }
    };
    ExitCode::from(match command {
        Command::Contract(metrics) => contract(metrics),
        Command::Inspect(t) => with_logging(|| inspect(t)),
        Command::Check(t) => with_logging(|| check(t)),
        Command::Diagnose(t) => with_logging(|| diagnose(t)),
        Command::Teardown(t) => with_logging(|| teardown(t)),
        Command::Promote(t) => with_logging(|| change_role(&t, Role::Active)),
        Command::Demote(t) => with_logging(|| change_role(&t, Role::Standby)),
        Command::Keepalived(t) => with_logging(|| follow_keepalived(&t)),
        Command::Render(file, options) => render(file.as_deref(), &options),
    })
}

/// Runs an operator subcommand with the log on stderr: warnings (something left untouched, a
/// repair) by default, every step with `EGRESS_ROUTER_DEBUG` set.
fn with_logging(run: impl FnOnce() -> u8) -> u8 {
    let debug = env::var_os("EGRESS_ROUTER_DEBUG").is_some_and(|v| !v.is_empty());
    let level = if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::WARN
    };
    logging::install("egress-router", level, false);
    run()
}

/// The `EGRESS_*` variables of this process (others are none of our business).
fn egress_vars() -> Vec<(String, String)> {
    env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with("EGRESS_")
                .then(|| (k, v.to_string_lossy().into_owned()))
        })
        .collect()
}

/// The address `EGRESS_ROUTER_METRICS` names, when it is set and valid.
fn metrics_var(vars: &[(String, String)]) -> Option<SocketAddr> {
    vars.iter()
        .find(|(k, _)| k == METRICS_VAR)
        .and_then(|(_, v)| metrics::parse_listen(METRICS_VAR, v).ok())
}

/// Exit code for an error of the core, printed on stderr.
fn fail(e: &Error) -> u8 {
    eprintln!("egress-router: {e}");
    match e.kind() {
        ErrorKind::InvalidSpec => code::INVALID,
        ErrorKind::RollbackIncomplete | ErrorKind::Teardown => code::LEFT_BEHIND,
        _ => code::FAILED,
    }
}

/// The container entrypoint: the OpenShift contract.
fn contract(metrics_flag: Option<String>) -> u8 {
    // Block SIGTERM/SIGINT before anything else, so that the threads the core starts inherit
    // the mask: a signal that arrives while the router is being configured waits until the
    // transaction is done instead of killing it halfway; legacy mode then takes it with
    // sigwait. (Blocked signals are also delivered to a container's PID 1, which ignores
    // signals it has no handler for.)
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(e) = signals.thread_block() {
        eprintln!("egress-router: cannot block SIGTERM/SIGINT: {e}");
        return code::FAILED;
    }
    let vars = egress_vars();
    let Config {
        mut spec,
        mode,
        debug,
        role,
    } = match openshift::from_env(vars.iter().cloned()) {
        Ok(c) => c,
        Err(e) => {
            // The OpenShift script's message, alone on its line.
            eprintln!("{e}");
            return code::INVALID;
        }
    };
    logging::install(
        "egress-router",
        if debug {
            LevelFilter::DEBUG
        } else {
            LevelFilter::INFO
        },
        false,
    );
    debug!(
        "EGRESS_ROUTER_MODE={mode}, router {} in {}",
        spec.name(),
        where_(spec.netns())
    );
    debug!("spec {}", spec.to_json_value());
    if !mode.redirects()
        && vars
            .iter()
            .any(|(k, v)| k == "EGRESS_DESTINATION" && !v.is_empty())
    {
        eprintln!(
            "egress-router: EGRESS_DESTINATION is not used in {mode} mode (the proxy in the pod forwards)"
        );
    }
    // The metrics listener: the flag, else the variable; checked in every mode, bound (before
    // the first change, so that a failed bind changes nothing) only in legacy mode.
    let metrics_at = metrics_flag.map(|v| ("--metrics-listen", v)).or_else(|| {
        vars.iter()
            .find(|(k, v)| k == METRICS_VAR && !v.is_empty())
            .map(|(_, v)| (METRICS_VAR, v.clone()))
    });
    let metrics_at = match metrics_at {
        None => None,
        Some((field, value)) => match metrics::parse_listen(field, &value) {
            Ok(addr) => Some((field, addr)),
            Err(e) => {
                eprintln!("egress-router: {e}");
                return code::INVALID;
            }
        },
    };
    if let Some((field, _)) = metrics_at.filter(|_| mode != Mode::Legacy) {
        eprintln!(
            "egress-router: {field} is not used in {mode} mode (only legacy mode stays running)"
        );
    }
    // The listener's port is the router's own: no redirect or fallback takes it.
    if let Some((field, addr)) = metrics_at.filter(|_| mode == Mode::Legacy) {
        spec = match metrics::keep_local(spec, addr) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("egress-router: {field} {addr}: {e}");
                return code::INVALID;
            }
        };
        if field != METRICS_VAR && !addr.ip().is_loopback() && metrics_var(&vars) != Some(addr) {
            warn!(
                "{field} {addr}: `egress-router check` (a probe's exec) reads {METRICS_VAR}, not \
                 this flag: without {METRICS_VAR}={addr} in the pod's environment it reports \
                 the rule that keeps port {} from the DNAT as drift",
                addr.port()
            );
        }
    }
    if mode == Mode::UnitTest {
        print!("{}", spec.plan());
        println!("redirects of router {}:", spec.name());
        for r in redirects(&spec) {
            println!("    {r}");
        }
        return code::OK;
    }
    let listener = match metrics_at.filter(|_| mode == Mode::Legacy) {
        None => None,
        Some((field, addr)) => match TcpListener::bind(addr) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!(
                    "egress-router: {field} {addr}: cannot listen there: {e}; nothing was changed"
                );
                return code::FAILED;
            }
        },
    };
    for (i, step) in spec.plan().steps().iter().enumerate() {
        debug!("plan step {:>2}: {step}", i + 1);
    }
    let started = Instant::now();
    let outcome = match blocking::ensure_as(&spec, role) {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    let metrics = Metrics::new(&spec);
    metrics.applied(started.elapsed());
    for d in &outcome.drift {
        debug!("found: {d}");
    }
    let what = match outcome.action {
        EnsureAction::Created => "configured",
        EnsureAction::Unchanged => "already configured, nothing changed",
        EnsureAction::Repaired => "repaired (it had drifted, see above with EGRESS_ROUTER_DEBUG)",
    };
    // The result, on stdout.
    println!(
        "egress-router: {mode}: router {} {what}: {}",
        spec.name(),
        summary(&spec)
    );
    if mode != Mode::Legacy {
        return code::OK;
    }

    stay(&spec, metrics, listener, signals)
}

/// What wakes legacy mode's main thread.
enum Wake {
    Signal(Signal),
    /// sigwait failed.
    SignalsLost(nix::Error),
    /// The watch saw the router gone: it ended.
    RouterGone,
}

/// Legacy mode stays running: it repairs what others change in the namespace, as the kernel
/// notifies it (each repair is logged by the core), until SIGTERM or SIGINT tears the router
/// down. A watch that fails retries (the core backs off; `/healthz` says why meanwhile); only
/// a router that is gone (torn down by someone else) or a watch that cannot start ends the
/// process without a signal, with exit code 3, so that the kubelet restarts the container and
/// the new one applies the router again.
fn stay(spec: &RouterSpec, metrics: Metrics, listener: Option<TcpListener>, signals: SigSet) -> u8 {
    let (wake, woken) = mpsc::channel();
    let gone = wake.clone();
    let watched = metrics.clone();
    let watcher = egress_core::watch(spec, move |event| {
        watched.on_event(event);
        if *event == WatchEvent::RouterGone {
            let _ = gone.send(Wake::RouterGone);
        }
    });
    let watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            eprintln!(
                "egress-router: cannot watch router {} (drift would not be repaired): {e}; \
                 exiting (the router stays configured: a restart takes it over)",
                spec.name()
            );
            return code::FAILED;
        }
    };
    if let Some(listener) = listener {
        let at = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        match metrics.serve(listener) {
            Ok(_) => info!("serving /metrics and /healthz on {at}"),
            // The router works without it: it is not torn down for a thread.
            Err(e) => warn!("cannot start the metrics responder on {at}: {e}"),
        }
    }
    // The signals are blocked in every thread (the mask is inherited): this one takes them.
    let waiting = thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let _ = wake.send(match signals.wait() {
                Ok(s) => Wake::Signal(s),
                Err(e) => Wake::SignalsLost(e),
            });
        });
    if let Err(e) = waiting {
        eprintln!("egress-router: cannot wait for signals: {e}; the router stays configured");
        return code::FAILED;
    }
    info!("waiting for SIGTERM or SIGINT to tear the router down");
    let signal = match woken.recv() {
        Ok(Wake::Signal(s)) => s,
        Ok(Wake::SignalsLost(e)) => {
            eprintln!(
                "egress-router: waiting for a signal failed: {e}; the router stays configured"
            );
            return code::FAILED;
        }
        Ok(Wake::RouterGone) | Err(mpsc::RecvError) => {
            let _ = watcher.wait();
            eprintln!(
                "egress-router: router {} is gone (torn down by someone else): exiting, so that \
                 a restart applies it again",
                spec.name()
            );
            return code::FAILED;
        }
    };
    info!("{signal}: tearing router {} down", spec.name());
    // A repair under way finishes first; the teardown then has the namespace to itself.
    if let Err(e) = watcher.stop() {
        warn!("the watch ended with an error: {e}");
    }
    match blocking::teardown_by_name(spec.netns(), spec.name()) {
        Ok(undone) => {
            println!(
                "egress-router: torn down ({} changes undone), the namespace is as it was",
                undone.len()
            );
            code::OK
        }
        Err(e) => fail(&e),
    }
}

/// One line: link, source, gateway, redirects, fallback.
fn summary(spec: &RouterSpec) -> String {
    let sources: Vec<String> = spec.sources().iter().map(ToString::to_string).collect();
    let gateways: Vec<String> = spec
        .gateway4()
        .map(|g| g.to_string())
        .into_iter()
        .chain(spec.gateway6().map(|g| g.to_string()))
        .collect();
    format!(
        "{} {} via {}; {}",
        spec.external().link_name(),
        sources.join(" "),
        gateways.join(" "),
        redirects(spec).join(", ")
    )
}

/// The redirects and the fallback, one entry each (`tcp/80 -> 198.51.100.25:8080`).
fn redirects(spec: &RouterSpec) -> Vec<String> {
    let mut out: Vec<String> = spec
        .redirects()
        .iter()
        .map(|r| {
            format!(
                "{}/{} -> {}",
                r.protocol,
                r.port,
                SocketAddr::new(r.to, r.to_port)
            )
        })
        .collect();
    let fallbacks: Vec<String> = spec
        .fallback4()
        .map(|f| f.to_string())
        .into_iter()
        .chain(spec.fallback6().map(|f| f.to_string()))
        .collect();
    if !fallbacks.is_empty() {
        out.push(format!("everything else -> {}", fallbacks.join(", ")));
    }
    if out.is_empty() {
        out.push("no redirects".into());
    }
    out
}

fn where_(ns: &Netns) -> String {
    match ns {
        Netns::Current => "this network namespace".into(),
        Netns::Path(p) => format!("namespace {}", p.display()),
        Netns::Name(n) => format!("namespace {n}"),
        Netns::Pid(p) => format!("the namespace of process {p}"),
    }
}

fn target_name(t: &Target) -> String {
    t.name
        .clone()
        .or_else(|| {
            env::var("EGRESS_ROUTER_NAME")
                .ok()
                .filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| openshift::DEFAULT_NAME.to_string())
}

/// `promote` / `demote`: the role change, read from the kernel (a keepalived notify command:
/// no spec, no environment needed). Prints the result once the identity is claimed (or given
/// back), then waits for the spaced announcements before exiting.
fn change_role(t: &Target, role: Role) -> u8 {
    raise_priority();
    apply_role(t, role)
}

/// keepalived runs its notify commands and its FIFO script at nice 0, whatever its own
/// priority (`vrrp_priority -20`): on a loaded node a role change then waits for the CPU
/// behind everything else (seen: 40 ms at the 90th percentile, 85 ms at most, between
/// keepalived's state change and the promotion's first step, with a load of 10 on 2 CPUs).
/// A role change takes the priority keepalived's own process has in docs/ha.md, -20, where
/// it may (`CAP_SYS_NICE`); without it, it runs at its own.
fn raise_priority() {
    // SAFETY: setpriority(2) on this process only; no memory is involved.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) } != 0 {
        debug!(
            error = %std::io::Error::last_os_error(),
            "running at the default priority (nice -20 needs CAP_SYS_NICE)"
        );
    }
}

/// `keepalived FIFO`: keepalived's `vrrp_notify_fifo_script`, started once by keepalived with
/// the FIFO's path last. Where notify commands run concurrently and can finish out of order
/// (two masters for a moment: `notify_master` and `notify_backup` a few milliseconds apart,
/// and the demotion that started first finishing last, leaving a keepalived master with a
/// standby router), the FIFO's lines come in order: it applies them one after the other,
/// reading every line already waiting first so that only the latest state is applied.
/// `MASTER` promotes; `BACKUP`, `FAULT` and `STOP` demote; other lines change nothing.
///
/// How it ends tells why keepalived let it go. keepalived signals its FIFO script (SIGTERM,
/// kept blocked here: it stays pending) before the rest, from the process that holds the FIFO:
/// - stopping, it then writes `STOP`: the follower demotes and exits (keepalived would kill
///   it a second later);
/// - reloading (SIGHUP), it closes the FIFO without a line and starts a new follower on a new
///   one: this one exits and leaves the router as it is, since keepalived's state goes on;
/// - the FIFO closed without a SIGTERM: keepalived is gone (killed, crashed), its instance
///   holds nothing, and the follower demotes.
fn follow_keepalived(t: &Target) -> u8 {
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    if let Err(e) = term.thread_block() {
        eprintln!("egress-router: cannot block SIGTERM: {e}");
        return code::FAILED;
    }
    raise_priority();
    let fifo = t.fifo.as_ref().expect("parse_args requires the FIFO");
    let file = match std::fs::File::open(fifo) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("egress-router: opening {}: {e}", fifo.display());
            return code::FAILED;
        }
    };
    let mut lines = BufReader::new(file);
    let mut last = code::OK;
    let read = |lines: &mut BufReader<std::fs::File>| -> Option<String> {
        let mut line = String::new();
        match lines.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(line),
            Err(e) => {
                eprintln!("egress-router: reading {}: {e}", fifo.display());
                None
            }
        }
    };
    while let Some(line) = read(&mut lines) {
        let mut want = keepalived_state(&line, t.instance.as_deref());
        // What keepalived wrote meanwhile: only the latest state counts.
        while lines.buffer().contains(&b'\n') {
            let Some(line) = read(&mut lines) else { break };
            want = keepalived_state(&line, t.instance.as_deref()).or(want);
        }
        let Some(state) = want else { continue };
        info!(%state, "keepalived state");
        last = apply_role(t, state.role());
        if state == VrrpState::Stop && term_pending() {
            info!("keepalived stopping: demoted, exiting");
            return last;
        }
    }
    if term_pending() {
        info!("keepalived closed the FIFO after a SIGTERM (a reload): leaving the router as it is");
        return last;
    }
    info!("keepalived closed the FIFO without a SIGTERM (gone): demoting");
    match apply_role(t, Role::Standby) {
        code::OK => last,
        failed => failed,
    }
}

/// Whether a SIGTERM waits, blocked, for this process: keepalived sent one.
fn term_pending() -> bool {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending(2) fills the set it is given (and only it); sigismember reads it
    // once filled.
    unsafe {
        libc::sigpending(set.as_mut_ptr()) == 0
            && libc::sigismember(set.as_ptr(), libc::SIGTERM) == 1
    }
}

/// A state keepalived writes on its notify FIFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VrrpState {
    Master,
    Backup,
    Fault,
    /// keepalived stopping (after its SIGTERM to the FIFO script).
    Stop,
}

impl VrrpState {
    /// The router's role in this state: only a master holds the egress identity.
    fn role(self) -> Role {
        match self {
            VrrpState::Master => Role::Active,
            VrrpState::Backup | VrrpState::Fault | VrrpState::Stop => Role::Standby,
        }
    }
}

impl std::fmt::Display for VrrpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VrrpState::Master => "MASTER",
            VrrpState::Backup => "BACKUP",
            VrrpState::Fault => "FAULT",
            VrrpState::Stop => "STOP",
        })
    }
}

/// The state a line of keepalived's notify FIFO gives (`INSTANCE "egress" MASTER 100`), if
/// it is about `instance` (any, if `None`) and says one.
fn keepalived_state(line: &str, instance: Option<&str>) -> Option<VrrpState> {
    let (name, rest) = line
        .trim_end()
        .strip_prefix("INSTANCE \"")?
        .split_once('"')?;
    if instance.is_some_and(|i| i != name) {
        return None;
    }
    match rest.split_whitespace().next()? {
        "MASTER" => Some(VrrpState::Master),
        "BACKUP" => Some(VrrpState::Backup),
        "FAULT" => Some(VrrpState::Fault),
        "STOP" => Some(VrrpState::Stop),
        _ => None,
    }
}

fn apply_role(t: &Target, role: Role) -> u8 {
    let netns = t.netns.clone().unwrap_or_default();
    let name = target_name(t);
    let result = match role {
        Role::Active => blocking::promote(&netns, &name),
        Role::Standby => blocking::demote(&netns, &name),
    };
    let change = match result {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if t.json {
        print_json(&change);
    } else {
        println!(
            "egress-router: router {name} {} ({} changes)",
            match (change.changed(), role) {
                (false, _) => format!("was {role} already"),
                (true, Role::Active) => "promoted: it holds the egress identity".into(),
                (true, Role::Standby) => "demoted: standby".into(),
            },
            change.steps.len()
        );
    }
    match blocking::finish_announcements(change) {
        Ok(()) => code::OK,
        Err(e) => fail(&e),
    }
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("the output types always serialize")
    );
}

fn inspect(t: Target) -> u8 {
    let netns = t.netns.clone().unwrap_or_default();
    let name = target_name(&t);
    match blocking::inspect(&netns, &name) {
        Err(e) => fail(&e),
        Ok(None) => {
            if t.json {
                println!("null");
            } else {
                println!("no router {name} in {}", where_(&netns));
            }
            code::NOT_AS_EXPECTED
        }
        Ok(Some(state)) => {
            if t.json {
                print_json(&state);
            } else {
                print!("{}", render_state(&state, &netns));
            }
            match t.role {
                // A readiness probe's answer: the role it asked for, or exit 5.
                Some(role) if role != state.role => {
                    eprintln!("egress-router: router {name} is {}, not {role}", state.role);
                    code::NOT_AS_EXPECTED
                }
                _ => code::OK,
            }
        }
    }
}

/// `render`: the EgressRouter object in `file` (or stdin) as manifests on stdout; the notes on
/// stderr; an invalid object's every invalid field on stderr, nothing on stdout, exit 1.
fn render(file: Option<&Path>, options: &RenderOptions) -> u8 {
    let (what, read) = match file.filter(|f| *f != Path::new("-")) {
        Some(f) => (f.display().to_string(), std::fs::read_to_string(f)),
        None => {
            let mut input = String::new();
            let read = std::io::stdin().read_to_string(&mut input).map(|_| input);
            ("stdin".to_string(), read)
        }
    };
    let input = match read {
        Ok(input) => input,
        Err(e) => {
            eprintln!("egress-router: render: reading {what}: {e}");
            return code::INVALID;
        }
    };
    match openshift::render::render(&input, options) {
        Ok(rendered) => {
            for note in &rendered.notes {
                eprintln!("egress-router: render: {note}");
            }
            print!("{}", rendered.to_yaml());
            code::OK
        }
        Err(e) => {
            eprint!("egress-router: render: {what}: {e}");
            code::INVALID
        }
    }
}

fn render_state(s: &RouterState, netns: &Netns) -> String {
    let mut out = format!("router {} in {}\n", s.name, where_(netns));
    let mut row = |label: &str, values: Vec<String>| {
        let values = if values.is_empty() {
            vec!["(none)".to_string()]
        } else {
            values
        };
        for (i, v) in values.iter().enumerate() {
            let label = if i == 0 { label } else { "" };
            out += &format!("  {label:<16} {v}\n");
        }
    };
    row("nftables table", vec![format!("inet {}", s.table)]);
    row(
        "external link",
        s.link
            .iter()
            .map(|l| {
                format!(
                    "{} ({}, {}, {}mtu {}, {})",
                    l.name,
                    if l.created { "created" } else { "adopted" },
                    if l.up { "up" } else { "DOWN" },
                    l.mode
                        .map(|m| format!("macvlan {}, ", m.as_str()))
                        .unwrap_or_default(),
                    l.mtu,
                    l.mac
                )
            })
            .collect(),
    );
    row(
        "addresses",
        s.addresses.iter().map(ToString::to_string).collect(),
    );
    row("routes", s.routes.clone());
    row("replaced routes", s.saved_routes.clone());
    row(
        "sysctls",
        s.sysctls
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect(),
    );
    row("nat and filter", s.nat.clone());
    out
}

/// The spec `check` compares with: `--spec FILE`, else the `EGRESS_*` variables; `--netns` and
/// `--name` override its namespace and name.
fn check_spec(t: &Target) -> Result<RouterSpec, u8> {
    let spec = match &t.spec {
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map(|_| s)
                    .map_err(|e| format!("reading the spec from stdin: {e}"))
            } else {
                std::fs::read_to_string(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))
            };
            let text = text.map_err(|e| {
                eprintln!("egress-router: {e}");
                code::INVALID
            })?;
            RouterSpec::from_json(&text).map_err(|e| fail(&e))?
        }
        None => {
            let vars = egress_vars();
            let config = openshift::from_env(vars.iter().cloned()).map_err(|e| {
                eprintln!("{e}");
                code::INVALID
            })?;
            // As the running router has it: the metrics listener's port is kept from the DNAT.
            let listen = vars
                .iter()
                .find(|(k, v)| k == METRICS_VAR && !v.is_empty())
                .filter(|_| config.mode == Mode::Legacy);
            match listen {
                None => config.spec,
                Some((_, value)) => {
                    let addr = metrics::parse_listen(METRICS_VAR, value).map_err(|e| {
                        eprintln!("egress-router: {e}");
                        code::INVALID
                    })?;
                    metrics::keep_local(config.spec, addr).map_err(|e| {
                        eprintln!("egress-router: {METRICS_VAR} {addr}: {e}");
                        code::INVALID
                    })?
                }
            }
        }
    };
    if t.netns.is_none() && t.name.is_none() {
        return Ok(spec);
    }
    let mut json = spec.to_json_value();
    if let Some(ns) = &t.netns {
        json["netns"] = match ns {
            Netns::Path(p) => serde_json::json!({ "path": p }),
            Netns::Name(n) => serde_json::json!({ "name": n }),
            other => unreachable!("the command line names no {other:?}"),
        };
    }
    if let Some(name) = &t.name {
        json["name"] = name.clone().into();
    }
    RouterSpec::from_json_value(json).map_err(|e| fail(&e))
}

fn check(t: Target) -> u8 {
    let spec = match check_spec(&t) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let drift = match blocking::check(&spec) {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    if t.json {
        print_json(&serde_json::json!({ "name": spec.name(), "drift": drift }));
    } else if drift.is_empty() {
        println!(
            "router {} in {} matches its configuration",
            spec.name(),
            where_(spec.netns())
        );
    } else {
        println!(
            "router {} in {} differs from its configuration:",
            spec.name(),
            where_(spec.netns())
        );
        for d in &drift {
            println!("  {d}");
        }
    }
    if drift.is_empty() {
        code::OK
    } else {
        code::NOT_AS_EXPECTED
    }
}

/// Whether this process's environment holds the `EGRESS_*` contract (a router pod's).
fn env_has_spec() -> bool {
    env::var_os("EGRESS_SOURCE").is_some_and(|v| !v.is_empty())
}

fn diagnose(t: Target) -> u8 {
    let mut options = DiagnoseOptions::new();
    if let Some(ms) = t.timeout_ms {
        options = options.timeout(Duration::from_millis(ms));
    }
    for p in &t.fallback_ports {
        options = options.fallback_port(*p);
    }
    let result = if t.spec.is_some() || env_has_spec() {
        match check_spec(&t) {
            Ok(spec) => blocking::diagnose_spec(&spec, &options),
            Err(code) => return code,
        }
    } else {
        blocking::diagnose(
            &t.netns.clone().unwrap_or_default(),
            &target_name(&t),
            &options,
        )
    };
    let d = match result {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    if t.json {
        print_json(&d);
    } else {
        print!("{d}");
    }
    if d.failed() {
        code::CHECK_FAILED
    } else {
        code::OK
    }
}

fn teardown(t: Target) -> u8 {
    let netns = t.netns.clone().unwrap_or_default();
    let name = target_name(&t);
    let undone = match blocking::teardown_by_name(&netns, &name) {
        Ok(u) => u,
        Err(e) => {
            if t.json {
                // What remains, for the caller that reads stdout (a CNI runtime, a script).
                let failures: Vec<String> = match &e {
                    Error::Teardown { failures } => {
                        failures.iter().map(ToString::to_string).collect()
                    }
                    other => vec![other.to_string()],
                };
                print_json(&serde_json::json!({
                    "name": name,
                    "error": e.to_string(),
                    "failures": failures,
                }));
            }
            return fail(&e);
        }
    };
    if t.json {
        print_json(&serde_json::json!({ "name": name, "undone": undone }));
    } else if undone.is_empty() {
        println!("no router {name} in {}: nothing to do", where_(&netns));
    } else {
        // The core names each undone change by what would have remained had it failed
        // ("link macvlan0 left up"): listed with --json, counted here.
        println!(
            "router {name} removed from {}: {} changes undone, the namespace is as it was",
            where_(&netns),
            undone.len()
        );
    }
    code::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalived_lines_give_the_role_of_their_instance() {
        let state = |l: &str| keepalived_state(l, Some("egress"));
        for (l, role) in [
            ("MASTER", Role::Active),
            ("BACKUP", Role::Standby),
            ("FAULT", Role::Standby),
            ("STOP", Role::Standby),
        ] {
            let line = format!("INSTANCE \"egress\" {l} 100\n");
            let got = state(&line).unwrap_or_else(|| panic!("{line}"));
            assert_eq!((got.to_string().as_str(), got.role()), (l, role), "{line}");
        }
        // Another instance, a group, a line that is no state change, garbage.
        for line in [
            "INSTANCE \"other\" MASTER 100",
            "GROUP \"egress\" MASTER",
            "INSTANCE \"egress\" MASTER_RX_LOWER_PRI 100",
            "INSTANCE egress MASTER 100",
            "",
        ] {
            assert_eq!(state(line), None, "{line:?}");
        }
        assert_eq!(
            keepalived_state("INSTANCE \"other\" MASTER 100", None),
            Some(VrrpState::Master)
        );
    }

    #[test]
    fn the_summary_names_link_source_redirects_and_fallback() {
        let spec = openshift::from_env([
            ("EGRESS_SOURCE", "2001:db8:2::99/64"),
            ("EGRESS_GATEWAY", "2001:db8:2::1"),
            (
                "EGRESS_DESTINATION",
                "80 tcp 2001:db8:3::25 8080\n2001:db8:3::9",
            ),
        ])
        .unwrap()
        .spec;
        assert_eq!(
            summary(&spec),
            "macvlan0 2001:db8:2::99/64 via 2001:db8:2::1; tcp/80 -> [2001:db8:3::25]:8080, \
             everything else -> 2001:db8:3::9"
        );
    }

    #[test]
    fn help_documents_every_variable_mode_check_and_exit_code() {
        let help = cli::every_help();
        for word in [
            "EGRESS_SOURCE",
            "EGRESS_GATEWAY",
            "EGRESS_DESTINATION",
            "EGRESS_ROUTER_MODE",
            "EGRESS_ROUTER_DEBUG",
            "EGRESS_ROUTER_NAME",
            "EGRESS_MACVLAN_PARENT",
            "EGRESS_MACVLAN_MODE",
            "EGRESS_MACVLAN_PARENT_NETNS",
            METRICS_VAR,
            "--metrics-listen",
            "/metrics",
            "/healthz",
            "--netns",
            "--netns-name",
            "--name",
            "--spec",
            "--json",
            "diagnose",
            "--timeout-ms",
            "--fallback-port",
        ] {
            assert!(help.contains(word), "{word}");
        }
        for m in Mode::ALL {
            assert!(help.contains(m.as_str()), "{m}");
        }
        for check in [
            "state",
            "link",
            "sysctl",
            "gateway",
            "l2_filter",
            "duplicate_address",
            "destination",
            "traffic",
        ] {
            assert!(help.contains(check), "diagnose check {check}");
        }
        for c in [
            code::OK,
            code::INVALID,
            code::USAGE,
            code::FAILED,
            code::LEFT_BEHIND,
            code::NOT_AS_EXPECTED,
            code::CHECK_FAILED,
        ] {
            assert!(help.contains(&format!("\n  {c}  ")), "exit code {c}");
        }
    }
}
