//! What operators drop in (deploy/monitoring/) against the real tools: the alert rules
//! checked and unit-tested by `promtool`, the PrometheusRule holding the same rules, and a real
//! Prometheus (Debian's `prometheus`, scripts/setup.sh) in the lab's client namespace
//! scraping a legacy `egress-router` on the router's internal address every second: the
//! counters of real TCP through a redirect, a repair and a promotion read back with PromQL
//! over its HTTP API, the rules loaded and evaluated, and every query of the Grafana dashboard
//! parsed and answered with data.
//!
//! As root, in throwaway namespaces (`egt-<pid>-…`); Prometheus and the router are this
//! test's children, ended on every exit path.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use egress_lab::{
    ip, workspace_binary, Lab, Netns, EGRESS_SOURCE4, FALLBACK4, GATEWAY4, ROUTER_ETH0_4,
    SERVICE_PORT, WEB4, WEB_PORT,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(2);

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

/// `promtool ARGS` in deploy/monitoring: its output, which must end in success.
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(monitoring_dir())
        .output()
        .unwrap_or_else(|e| panic!("promtool (scripts/setup.sh installs it): {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {said}");
    said
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let said = promtool(&["check", "rules", "egress-router.rules.yml"]);
    assert!(said.contains("SUCCESS: 6 rules found"), "{said}");
    let said = promtool(&["test", "rules", "egress-router.rules.test.yml"]);
    assert!(said.contains("SUCCESS"), "{said}");
}

/// The PrometheusRule's spec is the rules file's `groups:`, indented under `spec:`, so both
/// say the same (promtool checks the one, the Operator loads the other).
#[test]
fn the_prometheusrule_holds_the_same_rules() {
    let dir = monitoring_dir();
    let rules = std::fs::read_to_string(dir.join("egress-router.rules.yml")).unwrap();
    let custom = std::fs::read_to_string(dir.join("prometheusrule.yaml")).unwrap();
    let groups = &rules[rules.find("\ngroups:").expect("groups") + 1..];
    let (head, spec) = custom.split_once("\nspec:\n").expect("a spec");
    for line in [
        "apiVersion: monitoring.coreos.com/v1",
        "kind: PrometheusRule",
        "  name: egress-router",
    ] {
        assert!(head.lines().any(|l| l == line), "{line}\n{head}");
    }
    let unindented: String = spec
        .lines()
        .map(|l| match l {
            "" => "\n".to_string(),
            l => format!(
                "{}\n",
                l.strip_prefix("  ").expect("the spec is indented by 2")
            ),
        })
        .collect();
    assert_eq!(unindented, groups);
}

/// A child process (`ip netns exec` execs it in place: the pid is its own), killed and reaped
/// when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn_in(ns: &Netns, program: &Path, args: &[&str], vars: &[(&str, &str)]) -> Daemon {
    Daemon(
        Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(program)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display())),
    )
}

/// A directory of this test's (`$TMPDIR/egt-<pid>-NAME`), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("egt-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `ready` every 50 ms for `at_most`; panics with `what` if it never is.
fn wait_until<T>(what: &str, at_most: Duration, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + at_most;
    loop {
        if let Some(t) = ready() {
            return t;
        }
        assert!(Instant::now() < deadline, "{what}: not after {at_most:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// The Prometheus HTTP API at 127.0.0.1:9090 of `ns`: `GET path` with `query` (URL-encoded
/// by curl), parsed; `None` while it does not answer.
fn api(ns: &Netns, path: &str, query: Option<&str>) -> Option<Value> {
    let url = format!("http://127.0.0.1:9090{path}");
    let mut cmd = vec!["curl", "-sS", "--max-time", "5", "-G", &url];
    let q;
    if let Some(query) = query {
        q = format!("query={query}");
        cmd.extend(["--data-urlencode", &q]);
    }
    let out = ns.try_exec(&cmd).ok()?;
    serde_json::from_str(&out).ok()
}

/// The result vector of instant query `query` (which must succeed); `None` while Prometheus
/// does not answer.
fn try_query(ns: &Netns, query: &str) -> Option<Vec<Value>> {
    let answer = api(ns, "/api/v1/query", Some(query))?;
    assert_eq!(answer["status"], "success", "{query}: {answer}");
    Some(
        answer["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{query}: {answer}"))
            .clone(),
    )
}

fn query(ns: &Netns, query: &str) -> Vec<Value> {
    try_query(ns, query).expect("Prometheus answers")
}

/// The single value of `query`, once it has one.
fn value(ns: &Netns, q: &str) -> Option<f64> {
    match try_query(ns, q)?.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

#[test]
fn a_real_prometheus_reads_the_counters_back_and_answers_every_dashboard_query() {
    const N: usize = 3;
    let lab = Lab::with_adopted_macvlan();
    let web = lab.ext.serve_http(&[WEB_PORT]);
    let destination = format!("{SERVICE_PORT} tcp {WEB4} {WEB_PORT}\n{FALLBACK4}");
    let binary = workspace_binary(
        "egress-router",
        &["egress-openshift", "egress-core"],
        "EGRESS_ROUTER_BIN",
    );
    // A standby serving on every address of the pod: Prometheus scrapes the internal one.
    let mut router = spawn_in(
        &lab.router,
        &binary,
        &[],
        &[
            ("EGRESS_SOURCE", EGRESS_SOURCE4),
            ("EGRESS_GATEWAY", GATEWAY4),
            ("EGRESS_DESTINATION", &destination),
            ("EGRESS_ROUTER_ROLE", "standby"),
            ("EGRESS_ROUTER_METRICS", "0.0.0.0:9100"),
        ],
    );
    let healthz = format!("http://{ROUTER_ETH0_4}:9100/healthz");
    let mut said = String::new();
    wait_until("the router's /healthz", Duration::from_secs(20), || {
        said = match lab.client.try_exec(&["curl", "-sS", &healthz]) {
            Ok(body) | Err(body) => body,
        };
        (said.trim() == "ok: standby").then_some(())
    });

    let dir = Scratch::new("prometheus");
    let dir = &dir.0;
    let rules = monitoring_dir().join("egress-router.rules.yml");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{rules:?}]\n\
             scrape_configs:\n\
             \x20 - job_name: egress-router\n\
             \x20   static_configs: [{{targets: ['{ROUTER_ETH0_4}:9100']}}]\n",
        ),
    )
    .unwrap();
    let storage = format!("--storage.tsdb.path={}", dir.join("data").display());
    let config_flag = format!("--config.file={}", config.display());
    let prometheus = spawn_in(
        &lab.client,
        Path::new("/usr/bin/prometheus"),
        &[
            &config_flag,
            &storage,
            "--web.listen-address=127.0.0.1:9090",
        ],
        &[],
    );

    // Prometheus scrapes the standby; then another process promotes it (as keepalived's FIFO
    // follower does), N connections go through the redirect, and the watch makes one repair.
    let started = Instant::now();
    wait_until("a first scrape", Duration::from_secs(30), || {
        (value(&lab.client, "egress_router_role")? == 0.0).then_some(())
    });
    eprintln!(
        "Prometheus scraped the standby {:?} after it started",
        started.elapsed()
    );
    let promoted = Command::new("ip")
        .args(["netns", "exec", lab.router.name()])
        .arg(&binary)
        .arg("promote")
        .status()
        .unwrap();
    assert!(promoted.success());
    for _ in 0..N {
        lab.client
            .http_get(ip(ROUTER_ETH0_4), SERVICE_PORT, T)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(web.peers().len(), N);
    lab.router.exec(&["ip", "route", "del", "default"]);

    let redirected = format!(
        "egress_redirect_connections_total{{job=\"egress-router\",router=\"egress-router\",\
         port=\"{SERVICE_PORT}\",destination=\"{WEB4}:{WEB_PORT}\"}}"
    );
    let promoted_at = Instant::now();
    wait_until(
        "the counters in Prometheus",
        Duration::from_secs(30),
        || {
            let repaired = value(
                &lab.client,
                "egress_router_repairs_total{kind=\"route_missing\"}",
            )?;
            (value(&lab.client, &redirected)? == N as f64 && repaired == 1.0).then_some(())
        },
    );
    eprintln!(
        "Prometheus had the counters {:?} after the promotion",
        promoted_at.elapsed()
    );
    for (q, expected) in [
        ("up{job=\"egress-router\"}", 1.0),
        ("egress_router_up", 1.0),
        ("egress_router_role", 1.0),
        ("egress_router_role_changes_total", 1.0),
        ("egress_router_watch_up", 1.0),
        ("egress_router_repair_failures_total", 0.0),
        ("count(egress_router_last_promote_seconds > 0)", 1.0),
    ] {
        assert_eq!(value(&lab.client, q), Some(expected), "{q}");
    }
    // Two more scrapes, so that every range in the dashboard has two samples.
    thread::sleep(Duration::from_secs(2));

    // The rules loaded and evaluated; the takeover just happened.
    let rules = api(&lab.client, "/api/v1/rules", None).expect("the rules");
    let loaded: Vec<&Value> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("{rules}"))
        .iter()
        .collect();
    assert_eq!(loaded.len(), 6, "{rules}");
    for rule in &loaded {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    let takeover = loaded
        .iter()
        .find(|r| r["name"] == "EgressRouterTakeover")
        .unwrap();
    assert_eq!(takeover["state"], "firing", "{takeover}");

    // Every query of the dashboard, as Grafana would send it for "all routers".
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring_dir().join("egress-router.dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$router", ".+")
                .replace("$__rate_interval", "5s");
            let result = query(&lab.client, &expr);
            assert!(
                !result.is_empty(),
                "panel {}: {expr} returned nothing",
                panel["title"]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 13);
    let variable = &dashboard["templating"]["list"][1]["definition"];
    assert_eq!(variable, "label_values(egress_router_up, router)");

    drop(prometheus);
    // SIGTERM: the router tears itself down.
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our child's.
    assert_eq!(
        unsafe { libc::kill(router.0.id() as i32, libc::SIGTERM) },
        0
    );
    let status = router.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
