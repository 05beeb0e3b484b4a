//! The Rust leg of `scripts/bench-bindings.sh`: applies and tears down one router N times
//! through `egress_core::blocking`, the facade the Python and C bindings call, and prints how
//! long each call took. `benches/bindings/apply_loop.py` and `benches/bindings/apply_loop.c` do
//! the same through the bindings, so that the driver can compare the three.
//!
//! Run as root: `cargo run --release --example apply_loop -- SPEC.json N`, where `SPEC.json` is
//! a router spec in its JSON form (`RouterSpec::from_json`). Prints one JSON line, `{"apply":
//! [µs, …], "teardown": […], "apply_cpu": […], "teardown_cpu": […]}` with N values each: the
//! wall-clock time of each call, then the CPU time the process (every thread) spent in it, which
//! waiting (on the kernel, or for a CPU of a loaded machine) does not inflate. Only the two calls
//! are timed: not reading or parsing the spec, and not one untimed warm-up round (the calling
//! thread's netlink runtime is made on first use, a start-up cost every front end pays once).
//!
//! Being an example of this package, it links egress-core with the test-only `fault-injection`
//! feature (a dev-dependency of the package), which formats every plan step and undo as a string
//! as it runs: a few µs of CPU per call (the 16 steps of the bench's spec take 7 µs here),
//! counted against Rust.

use std::{process::ExitCode, time::Instant};

use egress_core::{blocking, RouterSpec};
use serde_json::json;

fn usage() {
    eprintln!(
        "usage: apply_loop SPEC.json N\n\n\
         Applies and tears down the router of SPEC.json (its JSON form) N times through\n\
         egress_core::blocking and prints the wall-clock and CPU microseconds of each call as\n\
         JSON. Needs root (CAP_NET_ADMIN in the spec's namespaces). scripts/bench-bindings.sh\n\
         runs it."
    );
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, n] = args.as_slice() else {
        usage();
        return ExitCode::from(2);
    };
    let Ok(n) = n.parse::<usize>() else {
        usage();
        return ExitCode::from(2);
    };
    match run(path, n) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apply_loop: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &str, n: usize) -> Result<(), String> {
    let json = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let spec = RouterSpec::from_json(&json).map_err(|e| format!("{path}: {e}"))?;
    let origin = Instant::now();
    let now = || Stamp {
        wall: origin.elapsed().as_secs_f64() * 1e6,
        cpu: cpu_us(),
    };
    let (mut apply, mut teardown) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut apply_cpu, mut teardown_cpu) = (Vec::with_capacity(n), Vec::with_capacity(n));
    // Round 0 is the untimed warm-up.
    for round in 0..=n {
        let t0 = now();
        let router = blocking::apply(&spec).map_err(|e| format!("apply: {e}"))?;
        let t1 = now();
        blocking::teardown(router).map_err(|e| format!("teardown: {e}"))?;
        let t2 = now();
        if round > 0 {
            apply.push(t1.wall - t0.wall);
            teardown.push(t2.wall - t1.wall);
            apply_cpu.push(t1.cpu - t0.cpu);
            teardown_cpu.push(t2.cpu - t1.cpu);
        }
    }
    let times = json!({ "apply": apply, "teardown": teardown,
                        "apply_cpu": apply_cpu, "teardown_cpu": teardown_cpu });
    println!("{times}");
    Ok(())
}

/// Wall-clock and CPU time, in microseconds.
struct Stamp {
    wall: f64,
    cpu: f64,
}

/// CPU time of the whole process (every thread), in microseconds.
fn cpu_us() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a constant of the kernel.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 / 1e3
}
