//! The C agent (`examples/c-agent/agent.c`, linked against the installed `libegress.so.0`)
//! end to end, as root, in the lab's throwaway namespaces: it applies the router its JSON config
//! describes, real TCP flows through it with the egress source, SIGTERM tears it down, and both
//! namespaces match their snapshots. `scripts/test-c.sh` builds the agent first; without it
//! these tests fail and say so.

use std::{
    fs,
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use egress_core::{blocking, RouterSpec};
use egress_lab::{ip, Lab, Snapshot, EGRESS_SOURCE4, FALLBACK4, ROUTER_ETH0_4, SERVICE_PORT};

const T: Duration = Duration::from_secs(2);
/// How long the agent may take to apply, or to tear down after SIGTERM.
const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent binary: `$EGRESS_C_AGENT`, or where `scripts/test-c.sh` puts it
/// (`<target dir>/c/bin/egress-c-agent`).
fn agent_binary() -> PathBuf {
    let path = std::env::var_os("EGRESS_C_AGENT").map_or_else(
        || {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .expect("the target tmp dir is inside the target dir")
                .join("c/bin/egress-c-agent")
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "the C agent {} is missing: run scripts/test-c.sh (it installs libegress and builds \
         examples/c-agent/agent.c) before cargo test, or set EGRESS_C_AGENT",
        path.display()
    );
    path
}

/// A config file for the agent, removed on drop.
struct Config(PathBuf);

impl Config {
    fn new(tag: &str, json: &str) -> Config {
        let path = std::env::temp_dir().join(format!("egt-{}-{tag}.json", std::process::id()));
        fs::write(&path, json).unwrap();
        Config(path)
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The agent process; killed (and reaped) on drop if it is still running, also when a test
/// panics, before the lab's namespaces go.
struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Agent {
    fn start(config: &Config) -> Agent {
        let mut child = Command::new(agent_binary())
            .arg(&config.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Agent { child, lines }
    }

    /// Reads stdout up to and including the first line that starts with `prefix`.
    fn read_until(&self, prefix: &str) -> Vec<String> {
        let deadline = Instant::now() + AGENT_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.starts_with(prefix);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(e) => panic!("agent printed no line starting with {prefix:?} ({e}): {seen:#?}"),
            }
        }
    }

    /// Sends `signal` and waits for the agent to exit; returns its exit code, stderr and the
    /// lines of stdout not read yet.
    fn stop(mut self, signal: i32) -> (Option<i32>, String, Vec<String>) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
        let (code, stderr) = self.wait();
        // The reader thread ends at the end of stdout, which the agent closed by exiting.
        (code, stderr, self.lines.iter().collect())
    }

    fn wait(&mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + AGENT_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the agent did not exit in time");
            thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status.code(), stderr)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn c_agent_applies_forwards_real_tcp_and_tears_down_on_sigterm() {
    let lab = Lab::new();
    let web = lab.ext.serve_http(&[egress_lab::WEB_PORT]);
    let (router_before, node_before) = (Snapshot::take(&lab.router), Snapshot::take(&lab.node));
    let spec: RouterSpec = lab
        .router_spec("c-agent")
        .fallback(FALLBACK4)
        .build()
        .unwrap();
    let config = Config::new("c-agent", &spec.to_json());
    let source = ip(EGRESS_SOURCE4);

    let agent = Agent::start(&config);
    let out = agent.read_until("running");
    assert_eq!(out[0], "plan:", "{out:#?}");
    let plan = spec.plan().to_string();
    let plan: Vec<&str> = plan.lines().collect();
    assert_eq!(out[1..=plan.len()], plan[..], "{out:#?}");
    assert_eq!(
        out[plan.len() + 1],
        "applied: EGRESS_RESULT_OK, drift []",
        "{out:#?}"
    );

    // Real TCP from the client, through the router's service address, out with the egress IP.
    let body = lab
        .client
        .http_get(ip(ROUTER_ETH0_4), SERVICE_PORT, T)
        .unwrap();
    assert_eq!(
        body.trim(),
        format!("peer={source} port={}", egress_lab::WEB_PORT)
    );
    assert!(!web.peers().is_empty() && web.peers().iter().all(|p| *p == source));
    // Read back independently of the agent: the kernel holds exactly the spec.
    assert!(blocking::check(&spec).unwrap().is_empty());

    let (code, stderr, rest) = agent.stop(libc::SIGTERM);
    assert_eq!(code, Some(0), "agent stderr: {stderr}");
    assert_eq!(rest, ["got SIGTERM, tearing down", "torn down"]);
    let router_after = Snapshot::take(&lab.router);
    assert!(
        router_before == router_after,
        "router namespace differs after SIGTERM:\n{}",
        router_before.diff(&router_after)
    );
    let node_after = Snapshot::take(&lab.node);
    assert!(
        node_before == node_after,
        "node namespace differs after SIGTERM:\n{}",
        node_before.diff(&node_after)
    );
    assert!(blocking::inspect(spec.netns(), spec.name())
        .unwrap()
        .is_none());
}

#[test]
fn c_agent_reports_typed_errors_and_changes_nothing() {
    // A config that can never work: the C error names the field and the value.
    let config = Config::new(
        "c-agent-invalid",
        r#"{"name": "c-agent", "external": {"adopt": "macvlan0"},
            "sources": ["203.0.113.300/24"], "gateways": ["203.0.113.1"]}"#,
    );
    let mut agent = Agent::start(&config);
    let (code, stderr) = agent.wait();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("reading the config failed: EGRESS_RESULT_INVALID_SPEC")
            && stderr.contains("invalid sources[0] `203.0.113.300/24`"),
        "{stderr}"
    );

    // A config the kernel refuses (MTU above the parent's): nothing is left behind.
    let lab = Lab::new();
    let (router_before, node_before) = (Snapshot::take(&lab.router), Snapshot::take(&lab.node));
    let spec = lab.router_spec("c-agent").mtu(9000).build().unwrap();
    let config = Config::new("c-agent-conflict", &spec.to_json());
    let mut agent = Agent::start(&config);
    let (code, stderr) = agent.wait();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("apply failed: EGRESS_RESULT_CONFLICT") && stderr.contains("9000"),
        "{stderr}"
    );
    assert!(router_before == Snapshot::take(&lab.router));
    assert!(node_before == Snapshot::take(&lab.node));
}
