//! What logging costs an apply: the same apply in three processes that differ only in their
//! `tracing` subscriber — none at all, one that filters the core's events out (WARN), one that
//! formats every event at DEBUG into `io::sink()`. A process has one global subscriber for
//! its whole life (the core's events are emitted on its pool threads, so a thread-local
//! default would not reach them), hence three worker processes of the bench binary, run in
//! turns by the bench so that the rounds interleave.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use egress_core::{blocking, RouterSpec};
use tracing_subscriber::filter::LevelFilter;

/// The environment variable that makes the bench binary a worker: its subscriber.
pub const WORKER_ENV: &str = "EGRESS_BENCH_LOG_WORKER";
/// The spec a worker applies, as JSON.
const SPEC_ENV: &str = "EGRESS_BENCH_LOG_SPEC";

/// The three subscribers, in the order of the report.
pub const MODES: [&str; 3] = ["none", "warn", "debug"];

/// The worker: installs its subscriber, then for each line on stdin applies the spec, tears it
/// down and prints the apply's time in nanoseconds.
pub fn worker(mode: &str) {
    let level = match mode {
        "none" => None,
        "warn" => Some(LevelFilter::WARN),
        "debug" => Some(LevelFilter::DEBUG),
        other => panic!("{WORKER_ENV}={other}: none, warn or debug"),
    };
    if let Some(level) = level {
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::sink)
            .init();
    }
    let spec =
        RouterSpec::from_json(&std::env::var(SPEC_ENV).expect("the spec")).expect("spec JSON");
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        line.expect("stdin");
        let t = Instant::now();
        let r = blocking::apply(&spec).expect("apply");
        let took = t.elapsed();
        blocking::teardown(r).expect("teardown");
        writeln!(out, "{}", took.as_nanos()).expect("stdout");
        out.flush().expect("stdout");
    }
}

/// A running worker.
pub struct Worker {
    child: Child,
    /// Closed (EOF) to end the worker.
    to: Option<ChildStdin>,
    from: BufReader<ChildStdout>,
}

impl Worker {
    /// Starts the worker with subscriber `mode` for `spec`.
    pub fn start(mode: &str, spec: &RouterSpec) -> Worker {
        let mut child = Command::new(std::env::current_exe().expect("the bench binary"))
            .env(WORKER_ENV, mode)
            .env(SPEC_ENV, spec.to_json())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a logging worker");
        Worker {
            to: child.stdin.take(),
            from: BufReader::new(child.stdout.take().expect("stdout")),
            child,
        }
    }

    /// One apply (and its untimed teardown) in the worker; the apply's time.
    pub fn apply(&mut self) -> Duration {
        let to = self.to.as_mut().expect("a running worker");
        writeln!(to, "apply").expect("to the worker");
        let mut line = String::new();
        self.from.read_line(&mut line).expect("from the worker");
        let nanos: u64 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the worker failed (said {line:?})"));
        Duration::from_nanos(nanos)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.to.take());
        let _ = self.child.wait();
    }
}
