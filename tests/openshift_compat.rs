//! The `egress-router` binary as OpenShift runs it, as root, in throwaway namespaces: `macvlan0`
//! made by "the SDN" (in the node namespace, on the parent, moved into the pod), the binary run
//! inside the pod namespace (`ip netns exec`) with the `EGRESS_*` variables, real TCP from a
//! client through each redirect and the fallback, and the namespaces compared with their
//! snapshots after bad input, after teardown and after SIGTERM/SIGINT.
//!
//! The binary is the one `cargo build --bin egress-router` puts next to this test's directory
//! (`target/<profile>/egress-router`; `scripts/test.sh` builds it first, and `cargo test
//! --workspace` builds it for egress-core's own tests). Set `EGRESS_ROUTER_BIN` to test another
//! one. A missing or stale binary fails the test.

use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{mpsc, OnceLock},
    thread,
    time::{Duration, Instant},
};

use egress_core::{blocking, Netns as CoreNetns};
use egress_lab::{
    ip, while_held, workspace_binary, Lab, Netns, Snapshot, Snapshots, EGRESS_SOURCE4, FALLBACK4,
    GATEWAY4, NODE4, ROUTER_ETH0_4, SERVICE_PORT, WEB4, WEB_PORT,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(2);
/// A port nothing redirects: only the fallback makes it reachable.
const OTHER_PORT: u16 = 9090;

fn source4() -> IpAddr {
    ip(EGRESS_SOURCE4.split('/').next().unwrap())
}

fn router_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        workspace_binary(
            "egress-router",
            &["egress-openshift", "egress-core"],
            "EGRESS_ROUTER_BIN",
        )
    })
}

/// `ip netns exec NS egress-router ARGS` with exactly `vars` in its environment (plus PATH).
fn command(ns: &Netns, args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns.name()])
        .arg(router_binary())
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(vars.iter().copied());
    c
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(ns: &Netns, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = command(ns, args, vars).output().unwrap();
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

impl Run {
    #[track_caller]
    fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code,
            Some(code),
            "exit code; stdout:\n{}stderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Two port redirects (one to a remote port) and a fallback, with the leniency the contract
/// allows: comments, blank lines, tabs and runs of spaces.
fn destination() -> String {
    format!(
        "# the web server, behind the external gateway\n\
         {SERVICE_PORT}  tcp {WEB4} {WEB_PORT}\n\
         \n\
         {WEB_PORT}\ttcp\t{WEB4}\n\
         # everything else\n\
         {FALLBACK4}\n"
    )
}

fn env_vars<'a>(destination: &'a str, mode: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("EGRESS_SOURCE", EGRESS_SOURCE4),
        ("EGRESS_GATEWAY", GATEWAY4),
        ("EGRESS_DESTINATION", destination),
        ("EGRESS_ROUTER_MODE", mode),
    ]
}
#[test]
fn init_mode_in_an_sdn_pod_routes_real_tcp_and_is_idempotent() {
    let lab = Lab::with_adopted_macvlan();
    let web = lab.ext.serve_http(&[WEB_PORT, OTHER_PORT]);
    let node_web = lab.node.serve_http(&[0]);
    let snaps = Snapshots::take(&lab);
    assert!(lab.client.http_get(ip(WEB4), WEB_PORT, T).is_err());

    let dest = destination();
    let mut vars = env_vars(&dest, "init");
    vars.push(("EGRESS_ROUTER_DEBUG", "1"));
    let first = run(&lab.router, &[], &vars).expect(0);
    assert_eq!(
        first.stdout,
        format!(
            "egress-router: init: router egress-router configured: macvlan0 {EGRESS_SOURCE4} via \
             {GATEWAY4}; tcp/{SERVICE_PORT} -> {WEB4}:{WEB_PORT}, tcp/{WEB_PORT} -> \
             {WEB4}:{WEB_PORT}, everything else -> {FALLBACK4}\n"
        )
    );
    // Debug: every step of the plan, then what ensure found.
    assert!(
        first.stderr.contains(
            "egress-router: debug: plan step  2: nft add table inet egress_egress_router"
        ),
        "{}",
        first.stderr
    );
    assert!(
        first.stderr.contains("found: router not configured"),
        "{}",
        first.stderr
    );

    // Real TCP through each redirect and the fallback; the web server sees the egress source.
    lab.assert_redirects_and_fallback4(&web, OTHER_PORT);

    // The router still reaches its node, from its own cluster address (SNAT only on macvlan0).
    let body = lab
        .router
        .http_get(ip(NODE4), node_web.ports()[0], T)
        .unwrap();
    assert!(
        body.starts_with(&format!("peer={ROUTER_ETH0_4} ")),
        "{body}"
    );

    // The adopted macvlan0 is up with the egress source; the default route goes out of it.
    let addrs = lab.router.ip_json(&["addr", "show", "macvlan0"]);
    let have: Vec<String> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .filter(|a| !a.starts_with("fe80"))
        .collect();
    assert_eq!(have, [EGRESS_SOURCE4]);
    let defaults = lab.router.ip_json(&["route", "show", "default"]);
    assert_eq!(defaults[0]["dev"], "macvlan0", "{defaults}");
    assert_eq!(defaults[0]["gateway"], GATEWAY4, "{defaults}");

    // Idempotent: init again succeeds and changes nothing.
    let configured = Snapshot::take(&lab.router);
    let again = run(&lab.router, &[], &env_vars(&dest, "init")).expect(0);
    assert!(
        again
            .stdout
            .contains("router egress-router already configured, nothing changed"),
        "{}",
        again.stdout
    );
    let after = Snapshot::take(&lab.router);
    assert!(configured == after, "{}", configured.diff(&after));

    // Operator subcommands, from the node's side (outside the pod).
    let netns_name = ["--netns-name", lab.router.name()];
    let check = run(&lab.node, &["check", netns_name[0], netns_name[1]], &vars).expect(0);
    assert!(
        check.stdout.contains("matches its configuration"),
        "{}",
        check.stdout
    );
    let inspect = run(
        &lab.node,
        &["inspect", netns_name[0], netns_name[1], "--json"],
        &[],
    )
    .expect(0);
    let state: Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(state["name"], "egress-router");
    assert_eq!(state["link"]["name"], "macvlan0");
    assert_eq!(state["link"]["created"], false);
    assert_eq!(state["addresses"][0], EGRESS_SOURCE4);
    let human = run(&lab.node, &["inspect", netns_name[0], netns_name[1]], &[]).expect(0);
    assert!(
        human.stdout.contains("macvlan0 (adopted, up,"),
        "{}",
        human.stdout
    );
    // Drift is reported with exit code 5 (a redirect removed by hand).
    lab.router.exec(&[
        "nft",
        "flush",
        "chain",
        "inet",
        "egress_egress_router",
        "forward",
    ]);
    let drift = run(
        &lab.node,
        &["check", netns_name[0], netns_name[1], "--json"],
        &vars,
    )
    .expect(5);
    let drift: Value = serde_json::from_str(&drift.stdout).unwrap();
    assert_eq!(drift["drift"][0]["kind"], "nat_changed", "{drift}");
    // init repairs it.
    let repaired = run(&lab.router, &[], &env_vars(&dest, "init")).expect(0);
    assert!(repaired.stdout.contains("repaired"), "{}", repaired.stdout);
    run(&lab.node, &["check", netns_name[0], netns_name[1]], &vars).expect(0);

    let teardown = run(&lab.node, &["teardown", netns_name[0], netns_name[1]], &[]).expect(0);
    assert!(
        teardown
            .stdout
            .starts_with("router egress-router removed from namespace"),
        "{}",
        teardown.stdout
    );
    snaps.assert_restored("after teardown");
    // The SDN's link stays (down, no address: as the SDN left it).
    assert!(lab
        .router
        .try_exec(&["ip", "link", "show", "macvlan0"])
        .is_ok());
    let gone = run(&lab.node, &["inspect", netns_name[0], netns_name[1]], &[]).expect(5);
    assert!(
        gone.stdout.starts_with("no router egress-router"),
        "{}",
        gone.stdout
    );
    run(&lab.node, &["teardown", netns_name[0], netns_name[1]], &[]).expect(0);
}

#[test]
fn bad_input_changes_nothing() {
    let lab = Lab::with_adopted_macvlan();
    let snaps = Snapshots::take(&lab);
    let dest = destination();
    // A valid environment but for one variable (the last value of a key wins), for what only
    // the spec's validation finds, after the script's own checks.
    let with = |var| {
        let mut vars = env_vars(&dest, "legacy");
        vars.push(var);
        vars
    };
    let cases: Vec<(Vec<(&str, &str)>, String)> =
        vec![
        (vec![], "EGRESS_SOURCE unspecified or invalid".into()),
        (
            vec![("EGRESS_SOURCE", "999.1.1.1")],
            "EGRESS_SOURCE '999.1.1.1' is invalid: octet 999 is over 255".into(),
        ),
        (
            vec![("EGRESS_SOURCE", "203.0.113.99/33")],
            "EGRESS_SOURCE '203.0.113.99/33' is invalid: prefix length 33 is over 32".into(),
        ),
        (
            with(("EGRESS_SOURCE", "203.0.113.99/0")),
            "EGRESS_SOURCE '203.0.113.99/0' is invalid: a prefix length from 1 to 32 (/0 would \
             put every address on the external link)"
                .into(),
        ),
        (
            vec![("EGRESS_SOURCE", EGRESS_SOURCE4), ("EGRESS_GATEWAY", "gw")],
            "EGRESS_GATEWAY unspecified or invalid".into(),
        ),
        (
            with(("EGRESS_GATEWAY", "203.0.113.255")),
            "EGRESS_GATEWAY '203.0.113.255' is invalid: an address other than the broadcast \
             address of the egress subnet 203.0.113.0/24"
                .into(),
        ),
        (
            vec![
                ("EGRESS_SOURCE", EGRESS_SOURCE4),
                ("EGRESS_GATEWAY", "2001:db8:2::1"),
            ],
            "EGRESS_GATEWAY '2001:db8:2::1' is invalid: an IPv6 gateway, but EGRESS_SOURCE is \
             IPv4"
                .into(),
        ),
        (
            vec![("EGRESS_SOURCE", EGRESS_SOURCE4), ("EGRESS_GATEWAY", GATEWAY4)],
            "EGRESS_DESTINATION unspecified".into(),
        ),
        (
            env_vars("80 tcp 198.51.100.25\n80 icmp 198.51.100.25", "legacy"),
            "EGRESS_DESTINATION value '80 icmp 198.51.100.25' is invalid".into(),
        ),
        (
            env_vars("198.51.100.9\n80 tcp 198.51.100.25", "legacy"),
            "EGRESS_DESTINATION fallback IP must be the last line".into(),
        ),
        (
            env_vars("80 tcp 198.51.100.25 65536", "legacy"),
            "Invalid port: 65536, must be in the range 1 to 65535".into(),
        ),
        (
            env_vars("80 tcp 198.51.100.25\n80 tcp 198.51.100.26", "legacy"),
            "EGRESS_DESTINATION localport 80 is already used, must be unique for each \
             destination"
                .into(),
        ),
        (
            // The script would flush the NAT table, then fail in iptables-restore.
            env_vars("80 tcp 198.51.100.25\n8080 tcp 198.51.100.256", "legacy"),
            "EGRESS_DESTINATION value '8080 tcp 198.51.100.256' is invalid: octet 256 is over 255"
                .into(),
        ),
        (
            env_vars("80 tcp 198.51.100.25\n203.0.113.255", "legacy"),
            "EGRESS_DESTINATION '203.0.113.255' is invalid: an address other than the broadcast \
             address of the egress subnet 203.0.113.0/24"
                .into(),
        ),
        (
            env_vars(&dest, "router"),
            "Unrecognized EGRESS_ROUTER_MODE 'router'".into(),
        ),
    ];
    for (vars, message) in &cases {
        for mode in ["init", "legacy"] {
            let mut vars = vars.clone();
            if !vars.iter().any(|(k, _)| *k == "EGRESS_ROUTER_MODE") {
                vars.push(("EGRESS_ROUTER_MODE", mode));
            }
            let r = run(&lab.router, &[], &vars).expect(1);
            assert_eq!(r.stderr, format!("{message}\n"), "{vars:?}");
            assert_eq!(r.stdout, "", "{vars:?}");
        }
    }
    snaps.assert_restored("after bad input");

    // Valid input the kernel state rules out (create a macvlan0 beside the SDN's): exit 3,
    // nothing changed.
    let mut vars = env_vars(&dest, "init");
    vars.push(("EGRESS_MACVLAN_PARENT", "ext0"));
    let r = run(&lab.router, &[], &vars).expect(3);
    assert!(
        r.stderr
            .starts_with("egress-router: link `macvlan0` already exists"),
        "{}",
        r.stderr
    );
    snaps.assert_restored("after a refused apply");
}

/// A spawned legacy router and what it writes (its results on stdout, its log on stderr),
/// line by line.
struct Legacy {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Legacy {
    fn start(ns: &Netns, vars: &[(&str, &str)]) -> Legacy {
        Legacy::start_with(ns, &[], vars)
    }

    fn start_with(ns: &Netns, args: &[&str], vars: &[(&str, &str)]) -> Legacy {
        let mut child = command(ns, args, vars)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [out, err] {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    if tx.send(line.unwrap()).is_err() {
                        break;
                    }
                }
            });
        }
        Legacy {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    #[track_caller]
    fn wait_for_line(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(e) => panic!("no line with {needle:?} ({e}); got {:?}", self.seen),
            }
        }
    }

    /// Waits for the process to end by itself (30 s at most: then it is killed and this
    /// panics), with what it wrote.
    fn exit(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "still running: {:?}", self.seen);
            thread::sleep(Duration::from_millis(20));
        };
        // Both streams end with the process: take every line.
        while let Ok(l) = self.lines.recv_timeout(T) {
            self.seen.push(l);
        }
        (status, self.seen.join("\n"))
    }

    fn signal(&mut self, signal: i32) -> ExitStatus {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) has no memory-safety preconditions. `ip netns exec` execs the
        // binary in place, so this pid is egress-router's (and our unreaped child's).
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "egress-router ignored the signal"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Legacy {
    fn drop(&mut self) {
        // Only after a failed assertion: do not leave the process behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn legacy_mode_stays_up_and_tears_down_on_sigterm_and_sigint() {
    let lab = Lab::with_adopted_macvlan();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    let snaps = Snapshots::take(&lab);
    let dest = destination();
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        // EGRESS_ROUTER_MODE unset: legacy is the default.
        let mut router = Legacy::start(&lab.router, &env_vars(&dest, "")[..3]);
        router.wait_for_line("waiting for SIGTERM or SIGINT");
        let body = lab
            .client
            .http_get(ip(ROUTER_ETH0_4), SERVICE_PORT, T)
            .unwrap();
        assert_eq!(body.trim(), format!("peer={} port={WEB_PORT}", source4()));
        assert!(
            blocking::inspect(&CoreNetns::Path(lab.router.path().into()), "egress-router")
                .unwrap()
                .is_some()
        );

        let status = router.signal(signal);
        assert_eq!(status.code(), Some(0), "{name}: {:?}", router.seen);
        router.wait_for_line(&format!("{name}: tearing router egress-router down"));
        router.wait_for_line("changes undone), the namespace is as it was");
        snaps.assert_restored(&format!("after {name}"));
        assert!(lab
            .client
            .http_get(ip(ROUTER_ETH0_4), SERVICE_PORT, Duration::from_millis(500))
            .is_err());
    }
}

#[test]
fn without_the_sdn_the_router_creates_its_macvlan() {
    let lab = Lab::new();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    let snaps = Snapshots::take(&lab);
    let dest = destination();
    let node_path = lab.node.path().to_str().unwrap().to_string();
    let mut vars = env_vars(&dest, "init");
    vars.extend([
        ("EGRESS_ROUTER_NAME", "no-sdn"),
        ("EGRESS_MACVLAN_PARENT", "ext0"),
        ("EGRESS_MACVLAN_PARENT_NETNS", node_path.as_str()),
    ]);
    run(&lab.router, &[], &vars).expect(0);
    let body = lab
        .client
        .http_get(ip(ROUTER_ETH0_4), SERVICE_PORT, T)
        .unwrap();
    assert_eq!(body.trim(), format!("peer={} port={WEB_PORT}", source4()));
    let link = lab.router.ip_json(&["-d", "link", "show", "macvlan0"]);
    assert_eq!(link[0]["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(link[0]["linkinfo"]["info_data"]["mode"], "private");

    let router_path = lab.router.path().to_str().unwrap();
    let r = run(
        &lab.node,
        &[
            "teardown",
            "--netns",
            router_path,
            "--name",
            "no-sdn",
            "--json",
        ],
        &[],
    )
    .expect(0);
    let out: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(out["name"], "no-sdn");
    assert!(
        out["undone"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u.as_str().unwrap().contains("macvlan0")),
        "{out}"
    );
    snaps.assert_restored("after teardown of a created macvlan");
}

#[test]
fn proxy_modes_set_up_the_network_without_redirects() {
    let lab = Lab::with_adopted_macvlan();
    let web = lab.ext.serve_http(&[WEB_PORT]);
    let snaps = Snapshots::take(&lab);
    for mode in ["http-proxy", "dns-proxy"] {
        // As OpenShift's proxy pods configure their init container: no EGRESS_DESTINATION.
        let vars = [
            ("EGRESS_SOURCE", EGRESS_SOURCE4),
            ("EGRESS_GATEWAY", GATEWAY4),
            ("EGRESS_ROUTER_MODE", mode),
        ];
        let r = run(&lab.router, &[], &vars).expect(0);
        assert!(r.stdout.contains("no redirects"), "{}", r.stdout);
        // The proxy, in the pod, reaches the outside from the egress source ...
        let body = lab.router.http_get(ip(WEB4), WEB_PORT, T).unwrap();
        assert_eq!(body.trim(), format!("peer={} port={WEB_PORT}", source4()));
        // ... and nothing is forwarded for clients: neither redirected ...
        assert!(lab
            .client
            .http_get(ip(ROUTER_ETH0_4), WEB_PORT, Duration::from_millis(500))
            .is_err());
        // ... nor routed through the pod.
        lab.client
            .ip(&["route", "add", "198.51.100.0/24", "via", ROUTER_ETH0_4]);
        assert!(lab
            .client
            .http_get(ip(WEB4), WEB_PORT, Duration::from_millis(500))
            .is_err());
        lab.client
            .ip(&["route", "del", "198.51.100.0/24", "via", ROUTER_ETH0_4]);
        run(
            &lab.node,
            &["teardown", "--netns-name", lab.router.name()],
            &[],
        )
        .expect(0);
        snaps.assert_restored(&format!("after {mode}"));
    }
    assert!(web.peers().iter().all(|p| *p == source4()));
}

/// With `EGRESS_LOG_FORMAT=json` every log line is one JSON object, and the library's events
/// carry their fields (each step of the transaction, with its duration).
#[test]
fn json_log_lines_carry_the_library_events() {
    let lab = Lab::with_adopted_macvlan();
    let snaps = Snapshots::take(&lab);
    let dest = destination();
    let mut vars = env_vars(&dest, "init");
    vars.extend([("EGRESS_ROUTER_DEBUG", "1"), ("EGRESS_LOG_FORMAT", "json")]);
    let r = run(&lab.router, &[], &vars).expect(0);
    let events: Vec<Value> = r
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let message = |e: &Value| e["fields"]["message"].as_str().unwrap_or("").to_string();
    assert!(
        events
            .iter()
            .any(|e| e["level"] == "DEBUG" && message(e).starts_with("plan step  1: ")),
        "{}",
        r.stderr
    );
    let steps: Vec<&Value> = events
        .iter()
        .filter(|e| message(e) == "step done")
        .collect();
    assert!(!steps.is_empty(), "{}", r.stderr);
    for s in &steps {
        assert!(s["fields"]["step"].is_string(), "{s}");
        assert!(s["fields"]["us"].is_u64(), "{s}");
        assert_eq!(s["span"]["name"], "ensure", "{s}");
    }
    run(&lab.router, &["teardown"], &[]).expect(0);
    snaps.assert_restored("after the JSON-logged init and a teardown");
}

/// Context switches of every thread of process `pid` so far.
fn context_switches(pid: u32) -> u64 {
    let mut n = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status =
            std::fs::read_to_string(task.unwrap().path().join("status")).unwrap_or_default();
        n += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    n
}

#[test]
fn legacy_mode_repairs_what_others_change_and_sleeps_otherwise() {
    let lab = Lab::with_adopted_macvlan();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    let snaps = Snapshots::take(&lab);
    let dest = destination();
    let mut router = Legacy::start(&lab.router, &env_vars(&dest, "")[..3]);
    router.wait_for_line("waiting for SIGTERM or SIGINT");
    let get = || {
        lab.client
            .http_get(ip(ROUTER_ETH0_4), SERVICE_PORT, T)
            .expect("a connection through the router after the repair")
    };
    get();
    // Nothing changes: the process sleeps (its idle namespace threads end after 2 s first).
    thread::sleep(Duration::from_secs(3));
    let before = context_switches(router.child.id());
    thread::sleep(Duration::from_secs(3));
    assert_eq!(
        context_switches(router.child.id()),
        before,
        "the idle router woke up"
    );
    let changes: [(&[&str], &str); 4] = [
        (&["ip", "route", "del", "default"], "route_missing"),
        (
            &["nft", "flush", "table", "inet", "egress_egress_router"],
            "nat_changed",
        ),
        (&["ip", "link", "set", "macvlan0", "down"], "link_down"),
        (
            &["sysctl", "-qw", "net.ipv4.ip_forward=0"],
            "sysctl_changed",
        ),
    ];
    for (i, (cmd, kind)) in changes.into_iter().enumerate() {
        lab.router.exec(cmd);
        // The core's log line for the repair, one per drifted object.
        router.wait_for_line(&format!("kind={kind}"));
        let repaired = router
            .seen
            .iter()
            .filter(|l| l.contains("repaired"))
            .count();
        assert!(repaired > i, "{:?}", router.seen);
        get();
    }
    // SIGTERM right after a change: the repair (if it started) finishes, then the teardown
    // restores the namespace exactly.
    lab.router.exec(&["ip", "route", "del", "default"]);
    let status = router.signal(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "{:?}", router.seen);
    router.wait_for_line("changes undone), the namespace is as it was");
    snaps.assert_restored("after repairs and SIGTERM");
}

/// `ip netns exec NS curl URL`: the HTTP status, the content type and the body.
fn curl(ns: &Netns, url: &str) -> (u16, String, String) {
    curl_with(ns, url, &[])
}

/// [`curl`] with more arguments (`-H 'Accept: …'`).
fn curl_with(ns: &Netns, url: &str, args: &[&str]) -> (u16, String, String) {
    let mut cmd = vec![
        "curl",
        "-sS",
        "-g",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code} %{content_type}",
    ];
    cmd.extend_from_slice(args);
    cmd.push(url);
    let out = ns.exec(&cmd);
    let (body, tail) = out.rsplit_once('\n').unwrap();
    let (status, content_type) = tail.split_once(' ').unwrap();
    (
        status.parse().unwrap(),
        content_type.to_string(),
        body.to_string(),
    )
}

/// The Python interpreter with `prometheus_client` (scripts/setup.sh installs Debian's
/// python3-prometheus-client); `EGRESS_PYTHON` overrides it.
fn python() -> String {
    std::env::var("EGRESS_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

/// `promtool check metrics` (Debian's `prometheus` package, scripts/setup.sh) on `text`:
/// it must exit 0 and say nothing (a lint problem is a line of output).
fn promtool_check_metrics(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool (scripts/setup.sh installs it): {e}"));
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{text}"
    );
}

/// One sample as the Python `prometheus_client` parsers read it.
#[derive(Debug, PartialEq)]
struct Sample {
    name: String,
    labels: Value,
    value: f64,
}

/// Parses an exposition with the real `prometheus_client` parsers: the OpenMetrics parser (the
/// format served; strict: it checks the types, the `_total` suffixes and `# EOF`) and the
/// Prometheus text parser (which reads the same samples). The types by family, and the samples.
fn parse_exposition(text: &str) -> (Value, Vec<Sample>) {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as prometheus
text = sys.stdin.read()
families = list(openmetrics(text))
sample = lambda s: {"name": s.name, "labels": s.labels, "value": s.value}
print(json.dumps({
    "types": {f.name: f.type for f in families},
    "samples": [sample(s) for f in families for s in f.samples],
    "prometheus": [sample(s) for f in prometheus(text) for s in f.samples],
}))
"#;
    let mut child = Command::new(python())
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} (scripts/setup.sh installs it): {e}", python()));
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let samples = |key: &str| -> Vec<Sample> {
        parsed[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Sample {
                name: s["name"].as_str().unwrap().to_string(),
                labels: s["labels"].clone(),
                value: s["value"].as_f64().unwrap(),
            })
            .collect()
    };
    let openmetrics = samples("samples");
    assert_eq!(
        openmetrics,
        samples("prometheus"),
        "the two parsers disagree"
    );
    (parsed["types"].clone(), openmetrics)
}

/// Scrapes `/metrics` at `base` from `ns` (curl) and parses it; the samples by name.
struct Scrape {
    samples: Vec<Sample>,
    types: Value,
    lines: usize,
}

/// The `Accept` header of Prometheus 2.42's scrapes.
const PROMETHEUS_ACCEPT: &str = "Accept: application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

impl Scrape {
    /// Asks as Prometheus does: OpenMetrics.
    fn take(ns: &Netns, base: &str) -> Scrape {
        let (status, content_type, body) =
            curl_with(ns, &format!("{base}/metrics"), &["-H", PROMETHEUS_ACCEPT]);
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            content_type,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        let (types, samples) = parse_exposition(&body);
        Scrape {
            samples,
            types,
            lines: body.lines().count(),
        }
    }

    /// The value of the one sample `name` whose labels include `labels`.
    #[track_caller]
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels[*k] == *v))
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?} in {:?}", self.samples);
        found[0].value
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

#[test]
fn legacy_mode_serves_metrics_and_healthz() {
    const N: usize = 3;
    const M: usize = 2;
    const F: usize = 4;
    let lab = Lab::with_adopted_macvlan();
    let web = lab.ext.serve_http(&[WEB_PORT, OTHER_PORT]);
    let snaps = Snapshots::take(&lab);
    let dest = destination();
    let mut vars = env_vars(&dest, "legacy");
    vars.push(("EGRESS_ROUTER_METRICS", "127.0.0.1:9100"));
    let mut router = Legacy::start(&lab.router, &vars);
    router.wait_for_line("serving /metrics and /healthz on 127.0.0.1:9100");
    router.wait_for_line("waiting for SIGTERM or SIGINT");
    let base = "http://127.0.0.1:9100";
    let router_label = ("router", "egress-router");
    let a = [
        router_label,
        ("protocol", "tcp"),
        ("port", "80"),
        ("destination", "198.51.100.25:8080"),
    ];
    let b = [
        router_label,
        ("protocol", "tcp"),
        ("port", "8080"),
        ("destination", "198.51.100.25:8080"),
    ];
    let fallback = [router_label, ("destination", FALLBACK4)];

    let before = Scrape::take(&lab.router, base);
    assert_eq!(before.value("egress_router_up", &[router_label]), 1.0);
    for labels in [&a[..], &b] {
        assert_eq!(
            before.value("egress_redirect_connections_total", labels),
            0.0
        );
    }
    assert_eq!(
        before.value("egress_fallback_connections_total", &fallback),
        0.0
    );
    assert!(!before.has("egress_router_repairs_total"));
    assert!(before.value("egress_router_last_apply_duration_seconds", &[router_label]) > 0.0);

    // Exactly N connections through redirect A, M through redirect B, F through the fallback.
    for (port, times) in [(SERVICE_PORT, N), (WEB_PORT, M), (OTHER_PORT, F)] {
        for _ in 0..times {
            lab.client
                .http_get(ip(ROUTER_ETH0_4), port, T)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    assert_eq!(web.peers().len(), N + M + F);
    let started = Instant::now();
    let after = Scrape::take(&lab.router, base);
    let took = started.elapsed();
    for (labels, n) in [(&a[..], N), (&b, M)] {
        assert_eq!(
            after.value("egress_redirect_connections_total", labels),
            n as f64
        );
        let packets = after.value("egress_redirect_packets_total", labels);
        let bytes = after.value("egress_redirect_bytes_total", labels);
        // Handshake, request, answer and close: at least 5 packets a connection, each at least
        // an IPv4 and a TCP header.
        assert!(packets >= 5.0 * n as f64, "{labels:?}: {packets} packets");
        assert!(bytes >= 40.0 * packets, "{labels:?}: {bytes} bytes");
    }
    assert_eq!(
        after.value("egress_fallback_connections_total", &fallback),
        F as f64
    );
    assert!(after.value("egress_fallback_packets_total", &fallback) >= 5.0 * F as f64);
    let snat = [router_label, ("source", "203.0.113.99")];
    assert!(after.value("egress_snat_packets_total", &snat) >= 3.0 * (N + M + F) as f64);
    assert!(after.value("egress_snat_bytes_total", &snat) > 0.0);
    assert!(after.has("egress_conntrack_entries"));
    for (family, kind) in [
        ("egress_router_up", "gauge"),
        ("egress_redirect_connections", "counter"),
        ("egress_redirect_packets", "counter"),
        ("egress_fallback_bytes", "counter"),
        ("egress_snat_packets", "counter"),
        ("egress_conntrack_entries", "gauge"),
        ("egress_router_repairs", "counter"),
        ("egress_router_repair_failures", "counter"),
    ] {
        assert_eq!(after.types[family], kind, "{family}: {}", after.types);
    }
    eprintln!(
        "scrape: {} lines, {} samples, {took:?} (curl and the kernel reads)",
        after.lines,
        after.samples.len()
    );
    // The role, as the watch read it: active, never changed.
    assert_eq!(after.value("egress_router_role", &[router_label]), 1.0);
    assert_eq!(
        after.value("egress_router_role_changes_total", &[router_label]),
        0.0
    );
    assert_eq!(after.value("egress_router_watch_up", &[router_label]), 1.0);
    // A plain curl (Accept: */*) gets the text format 0.0.4: the same samples, and
    // `promtool check metrics` finds nothing to say about it.
    let (status, content_type, text) = curl(&lab.router, &format!("{base}/metrics"));
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains("# TYPE egress_redirect_connections_total counter\n"),
        "{text}"
    );
    promtool_check_metrics(&text);

    // A repair counts by kind; /healthz stays 200.
    let (status, _, body) = curl(&lab.router, &format!("{base}/healthz"));
    assert_eq!((status, body.as_str()), (200, "ok: active\n"));
    lab.router.exec(&["ip", "route", "del", "default"]);
    router.wait_for_line("kind=route_missing");
    let repaired = Scrape::take(&lab.router, base);
    assert_eq!(
        repaired.value(
            "egress_router_repairs_total",
            &[router_label, ("kind", "route_missing")]
        ),
        1.0
    );
    assert!(
        repaired.value(
            "egress_router_last_repair_duration_seconds",
            &[router_label]
        ) > 0.0
    );
    assert_eq!(curl(&lab.router, &format!("{base}/healthz")).0, 200);

    // Drift the watch cannot repair: the SDN's link is gone (an adopted link is not created).
    // /healthz says what differs; the repairs fail until the link is back.
    lab.router.exec(&["ip", "link", "del", "macvlan0"]);
    router.wait_for_line("repair failed");
    // /healthz names the watch's last error while it cannot repair, and what differs.
    let (status, _, body) = curl(&lab.router, &format!("{base}/healthz"));
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with(
            "router egress-router: the watch is not running: its last repair failed: "
        ) && body.contains("macvlan0"),
        "{body}"
    );
    assert!(
        body.contains("\nrouter egress-router differs from its configuration:\n"),
        "{body}"
    );
    assert!(body.contains("link macvlan0 is missing"), "{body}");
    let down = Scrape::take(&lab.router, base);
    assert_eq!(down.value("egress_router_up", &[router_label]), 0.0);
    assert_eq!(down.value("egress_router_watch_up", &[router_label]), 0.0);
    assert!(down.value("egress_router_repair_failures_total", &[router_label]) >= 1.0);
    // The SDN moves a new macvlan0 in: the watch repairs, /healthz is 200 again.
    lab.make_sdn_macvlan("macvlan0");
    // (It comes down and bare: the watch brings it up and puts the address and routes back.)
    router.wait_for_line("kind=address_missing");
    let (status, _, body) = curl(&lab.router, &format!("{base}/healthz"));
    assert_eq!((status, body.as_str()), (200, "ok: active\n"));
    lab.client
        .http_get(ip(ROUTER_ETH0_4), SERVICE_PORT, T)
        .unwrap();

    // Anything else is 404, other methods 405.
    assert_eq!(curl(&lab.router, &format!("{base}/")).0, 404);
    assert_eq!(curl(&lab.router, &format!("{base}/metrics/x")).0, 404);
    let post = lab.router.exec(&[
        "curl",
        "-sS",
        "-X",
        "POST",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{base}/healthz"),
    ]);
    assert_eq!(post, "405");

    let status = router.signal(libc::SIGTERM);
    assert_eq!(status.code(), Some(0), "{:?}", router.seen);
    router.wait_for_line("changes undone), the namespace is as it was");
    // The SDN's link is a new one: compare without ifindexes (the snapshot has none).
    snaps.assert_restored("after the metrics test and SIGTERM");
}

#[test]
fn metrics_listener_binds_where_told_or_stops_before_any_change() {
    let lab = Lab::with_adopted_macvlan();
    let snaps = Snapshots::take(&lab);
    let dest = destination();
    let vars = env_vars(&dest, "legacy");
    let with = |value: &'static str| {
        let mut v = vars.clone();
        v.push(("EGRESS_ROUTER_METRICS", value));
        v
    };
    // Held by someone else in the router's namespace.
    let taken = lab
        .router
        .run(|| std::net::TcpListener::bind("127.0.0.1:9100").unwrap());
    for (args, vars, code, says) in [
        (
            &[][..],
            with("localhost:9100"),
            1,
            "egress-router: EGRESS_ROUTER_METRICS 'localhost:9100' is invalid: expected IP:PORT",
        ),
        (
            &["--metrics-listen", "9100"],
            vars.clone(),
            1,
            "egress-router: --metrics-listen '9100' is invalid: expected IP:PORT",
        ),
        (
            &["--metrics-listen", "[::1]:0"],
            vars.clone(),
            1,
            "egress-router: --metrics-listen '[::1]:0' is invalid",
        ),
        (
            // Not an address of the namespace.
            &["--metrics-listen", "198.51.100.77:9100"],
            vars.clone(),
            3,
            "egress-router: --metrics-listen 198.51.100.77:9100: cannot listen there: Cannot \
             assign requested address",
        ),
        (
            &[],
            with("127.0.0.1:9100"),
            3,
            "egress-router: EGRESS_ROUTER_METRICS 127.0.0.1:9100: cannot listen there: Address \
             already in use",
        ),
    ] {
        let mut r = Legacy::start_with(&lab.router, args, &vars);
        let (status, out) = r.exit();
        assert_eq!(status.code(), Some(code), "{args:?}: {out}");
        assert!(out.contains(says), "{args:?}: {out}");
        snaps.assert_restored(&format!("after {args:?} {:?}", vars.last()));
    }
    drop(taken);

    // IPv6 loopback, from the flag (which wins over the variable).
    let mut router = Legacy::start_with(
        &lab.router,
        &["--metrics-listen", "[::1]:9100"],
        &with("127.0.0.1:9100"),
    );
    router.wait_for_line("serving /metrics and /healthz on [::1]:9100");
    router.wait_for_line("waiting for SIGTERM or SIGINT");
    let (status, _, body) = curl(&lab.router, "http://[::1]:9100/healthz");
    assert_eq!((status, body.as_str()), (200, "ok: active\n"));
    assert!(lab
        .router
        .try_exec(&[
            "curl",
            "-sS",
            "--max-time",
            "2",
            "http://127.0.0.1:9100/healthz"
        ])
        .is_err());
    let scrape = Scrape::take(&lab.router, "http://[::1]:9100");
    assert_eq!(
        scrape.value("egress_router_up", &[("router", "egress-router")]),
        1.0
    );
    assert_eq!(router.signal(libc::SIGTERM).code(), Some(0));
    snaps.assert_restored("after SIGTERM");
}

/// With a fallback, the listener's port is still the router's own: the kubelet's probe and
/// Prometheus's scrape of `podIP:9100` from another pod reach egress-router, while every other
/// port not redirected still goes to the fallback. `egress-router check` with the pod's
/// environment expects the rule that keeps the port; a redirect of the same port is refused
/// before any change.
#[test]
fn metrics_on_the_pod_address_reach_the_router_past_the_fallback() {
    let lab = Lab::with_adopted_macvlan();
    let web = lab.ext.serve_http(&[OTHER_PORT]);
    let snaps = Snapshots::take(&lab);
    let dest = destination();
    let mut vars = env_vars(&dest, "legacy");
    let plain = vars.clone();
    vars.push(("EGRESS_ROUTER_METRICS", "0.0.0.0:9100"));

    // Port 80 is redirected: the listener could never be reached there.
    let mut refused = Legacy::start_with(&lab.router, &["--metrics-listen", "0.0.0.0:80"], &vars);
    let (status, out) = refused.exit();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains(
            "egress-router: --metrics-listen 0.0.0.0:80: invalid local_ports[0].port `tcp/80`: \
             a port no redirect takes (redirects[0] sends tcp/80 to 198.51.100.25)"
        ),
        "{out}"
    );
    snaps.assert_restored("after a metrics port a redirect takes");

    let mut router = Legacy::start(&lab.router, &vars);
    router.wait_for_line("serving /metrics and /healthz on 0.0.0.0:9100");
    router.wait_for_line("waiting for SIGTERM or SIGINT");
    let base = format!("http://{ROUTER_ETH0_4}:9100");
    // From the client's namespace, through the router's internal link, as a probe comes.
    let (status, _, body) = curl(&lab.client, &format!("{base}/healthz"));
    assert_eq!((status, body.as_str()), (200, "ok: active\n"));
    let scrape = Scrape::take(&lab.client, &base);
    assert_eq!(
        scrape.value("egress_router_up", &[("router", "egress-router")]),
        1.0
    );
    assert_eq!(
        scrape.value(
            "egress_fallback_connections_total",
            &[("router", "egress-router"), ("destination", FALLBACK4)]
        ),
        0.0,
        "the scrapes did not go through the fallback"
    );
    assert!(web.peers().is_empty());
    // Another port nothing redirects still goes to the fallback.
    let answer = lab
        .client
        .http_get(ip(ROUTER_ETH0_4), OTHER_PORT, T)
        .unwrap_or_else(|e| panic!("{e}"));
    // The web server behind the fallback answers with who connected: the egress source.
    assert_eq!(
        answer.trim(),
        format!("peer={} port={OTHER_PORT}", source4()),
        "{answer}"
    );
    assert_eq!(web.peers(), [source4()]);

    // The pod's environment (with the variable) agrees with the running router; without it,
    // the rule that keeps the port is drift.
    let check = run(&lab.router, &["check"], &vars).expect(0);
    assert!(
        check.stdout.contains("matches its configuration"),
        "{}",
        check.stdout
    );
    let check = run(&lab.router, &["check"], &plain).expect(5);
    assert!(
        check.stdout.contains("\"egress local tcp/9100\""),
        "{}",
        check.stdout
    );

    assert_eq!(router.signal(libc::SIGTERM).code(), Some(0));
    snaps.assert_restored("after the metrics past the fallback and SIGTERM");
}

/// A listener that answered one connection at a time, with a 2 s timeout per read, was held
/// by three clients sending a byte every 1.5 s, or by 200 idle connections: every probe timed
/// out (a liveness probe then restarts the pod: an outage caused from the network). With both
/// at once, every probe is answered well within 1 s, and so is every scrape.
#[test]
fn slow_and_idle_clients_never_delay_a_probe() {
    let lab = Lab::with_adopted_macvlan();
    let snaps = Snapshots::take(&lab);
    let dest = destination();
    let mut vars = env_vars(&dest, "legacy");
    vars.push(("EGRESS_ROUTER_METRICS", "0.0.0.0:9100"));
    let mut router = Legacy::start(&lab.router, &vars);
    router.wait_for_line("serving /metrics and /healthz on 0.0.0.0:9100");
    router.wait_for_line("waiting for SIGTERM or SIGINT");
    // From the cluster side, through the router's internal link.
    let at: SocketAddr = format!("{ROUTER_ETH0_4}:9100").parse().unwrap();
    let within = Duration::from_secs(1);
    let (idle, probes, scrapes) = while_held(&lab.client, at, 3, 200, |idle| {
        let (mut probes, mut scrapes) = (Vec::new(), Vec::new());
        for i in 0..10 {
            let started = Instant::now();
            let answer = lab.client.http_get_path(at, "/healthz", within);
            probes.push((answer, started.elapsed()));
            if i % 3 == 0 {
                let started = Instant::now();
                let answer = lab.client.http_get_path(at, "/metrics", within);
                scrapes.push((answer, started.elapsed()));
            }
            thread::sleep(Duration::from_millis(300));
        }
        (idle, probes, scrapes)
    });
    assert_eq!(idle, 200);
    for (i, (answer, took)) in probes.iter().enumerate() {
        assert_eq!(
            answer.as_deref(),
            Ok("ok: active\n"),
            "probe {i} after {took:?}"
        );
        eprintln!("probe {i}: {took:?}");
    }
    for (i, (answer, took)) in scrapes.iter().enumerate() {
        match answer {
            Ok(body) if body.contains("egress_router_up{router=\"egress-router\"} 1") => {}
            other => panic!("scrape {i}: {other:?} after {took:?}"),
        }
        eprintln!("scrape {i}: {took:?}");
    }
    assert_eq!(router.signal(libc::SIGTERM).code(), Some(0));
    snaps.assert_restored("after the slow and idle clients and SIGTERM");
}

/// The running router learns of a promotion and a demotion made by another process
/// (`egress-router promote` from keepalived's notify command): `/healthz` says the role (a
/// standby is healthy), `/metrics` has it with the changes counted and the promotion's
/// duration.
#[test]
fn legacy_mode_reports_the_role_another_process_gives_it() {
    let lab = Lab::with_adopted_macvlan();
    let snaps = Snapshots::take(&lab);
    let dest = destination();
    let mut vars = env_vars(&dest, "legacy");
    vars.push(("EGRESS_ROUTER_ROLE", "standby"));
    vars.push(("EGRESS_ROUTER_METRICS", "127.0.0.1:9100"));
    let mut router = Legacy::start(&lab.router, &vars);
    router.wait_for_line("waiting for SIGTERM or SIGINT");
    let base = "http://127.0.0.1:9100";
    let r = [("router", "egress-router")];
    let (status, _, body) = curl(&lab.router, &format!("{base}/healthz"));
    assert_eq!((status, body.as_str()), (200, "ok: standby\n"));
    let standby = Scrape::take(&lab.router, base);
    assert_eq!(standby.value("egress_router_role", &r), 0.0);
    assert_eq!(standby.value("egress_router_role_changes_total", &r), 0.0);
    assert!(!standby.has("egress_router_last_promote_seconds"));
    // Waits until the watch has seen the role change (it looks at the kernel's notification).
    let role_becomes = |role: f64| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let scrape = Scrape::take(&lab.router, base);
            if scrape.value("egress_router_role", &r) == role {
                return scrape;
            }
            assert!(Instant::now() < deadline, "the role stayed {}", 1.0 - role);
            thread::sleep(Duration::from_millis(50));
        }
    };
    run(&lab.router, &["promote"], &[]).expect(0);
    let active = role_becomes(1.0);
    assert_eq!(active.value("egress_router_role_changes_total", &r), 1.0);
    let promote = active.value("egress_router_last_promote_seconds", &r);
    assert!(promote > 0.0 && promote < 5.0, "{promote}");
    let (status, _, body) = curl(&lab.router, &format!("{base}/healthz"));
    assert_eq!((status, body.as_str()), (200, "ok: active\n"));
    run(&lab.router, &["demote"], &[]).expect(0);
    let demoted = role_becomes(0.0);
    assert_eq!(demoted.value("egress_router_role_changes_total", &r), 2.0);
    let (status, _, body) = curl(&lab.router, &format!("{base}/healthz"));
    assert_eq!((status, body.as_str()), (200, "ok: standby\n"));
    assert_eq!(router.signal(libc::SIGTERM).code(), Some(0));
    snaps.assert_restored("after the role changes and SIGTERM");
}

/// A router torn down under the running process (by hand, by another tool) cannot be healed
/// by the watch: the process exits non-zero, so that the kubelet restarts the container and
/// the new one applies the router again (it went on running, unwatched, for good).
#[test]
fn legacy_mode_exits_3_when_its_router_is_torn_down_under_it() {
    let lab = Lab::with_adopted_macvlan();
    let snaps = Snapshots::take(&lab);
    let dest = destination();
    let mut router = Legacy::start(&lab.router, &env_vars(&dest, "legacy"));
    router.wait_for_line("waiting for SIGTERM or SIGINT");
    run(&lab.router, &["teardown"], &[]).expect(0);
    let (status, out) = router.exit();
    assert_eq!(status.code(), Some(3), "{out}");
    assert!(
        out.contains("egress-router: router egress-router is gone (torn down by someone else)"),
        "{out}"
    );
    snaps.assert_restored("after a teardown under the legacy process");
}
