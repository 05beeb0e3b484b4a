//! The `egress-cni` binary driven exactly as a container runtime drives it, as root, in
//! throwaway namespaces: run from the node's namespace (`ip netns exec NODE egress-cni`, where
//! the master `ext0` is), with `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS` (the router
//! namespace's path), `CNI_IFNAME`, `CNI_PATH` and the network configuration on stdin. Real
//! TCP through every redirect and the fallback; each result checked against the CNI
//! specification's result schema for its version; DEL idempotent; CHECK on a healthy and a
//! drifted pod; a configuration error per field with the spec's codes; and the namespaces
//! compared with their snapshots after every failure and every DEL.
//!
//! The binary is the one `cargo build --bin egress-cni` puts next to this test's directory
//! (`target/<profile>/egress-cni`; `scripts/test.sh` builds it first, and `cargo test
//! --workspace` builds it for egress-core's own tests). Set `EGRESS_CNI_BIN` to test another
//! one. A missing or stale binary fails the test.

use std::{
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use egress_lab::{
    ip, workspace_binary, Lab, Netns, Snapshots, EGRESS_SOURCE4, EGRESS_SOURCE6, FALLBACK4,
    FALLBACK6, GATEWAY4, GATEWAY6, MACVLAN_PARENT, ROUTER_ETH0_4, ROUTER_ETH0_6, SERVICE_PORT,
    WEB4, WEB6, WEB_PORT,
};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(2);
/// A port nothing redirects: only the fallback makes it reachable.
const OTHER_PORT: u16 = 9090;
/// The macvlan's name in the pod, as Multus names secondary interfaces.
const IFNAME: &str = "net1";

fn cni_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        workspace_binary(
            "egress-cni",
            &["egress-cni", "egress-openshift", "egress-core"],
            "EGRESS_CNI_BIN",
        )
    })
}

/// One invocation's environment: the runtime's variables, any of which a test may change
/// (`Some`) or drop (`None`).
#[derive(Clone)]
struct Env(Vec<(&'static str, Option<String>)>);

impl Env {
    fn new(command: &str, container_id: &str, netns: &Path) -> Env {
        Env(vec![
            ("CNI_COMMAND", Some(command.into())),
            ("CNI_CONTAINERID", Some(container_id.into())),
            ("CNI_NETNS", Some(netns.to_str().unwrap().into())),
            ("CNI_IFNAME", Some(IFNAME.into())),
            ("CNI_PATH", Some("/opt/cni/bin".into())),
            (
                "CNI_ARGS",
                Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=egress;K8S_POD_NAME=egress-1".into()),
            ),
        ])
    }

    fn with(mut self, var: &'static str, value: Option<&str>) -> Env {
        self.0.retain(|(k, _)| *k != var);
        self.0.push((var, value.map(str::to_string)));
        self
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "exit code; stdout:\n{}stderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Success without output (DEL, CHECK, STATUS, GC).
    #[track_caller]
    fn quiet(self) -> Run {
        let r = self.ok();
        assert_eq!(r.stdout, "", "stderr:\n{}", r.stderr);
        r
    }

    /// The result on stdout, as JSON.
    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// A failure: exit status 1 and the spec's error object on stdout, with `code`.
    #[track_caller]
    fn error(self, code: u64) -> Value {
        assert_eq!(
            self.code,
            Some(1),
            "stdout:\n{}stderr:\n{}",
            self.stdout,
            self.stderr
        );
        let e = self.json();
        let violations = error_schema(&e);
        assert!(violations.is_empty(), "{violations:?} in {e}");
        assert_eq!(e["code"], code, "{e}\nstderr:\n{}", self.stderr);
        e
    }
}

/// Runs the plugin from the node's namespace, as the runtime does: `env` only (and PATH),
/// `stdin` piped in.
fn cni(lab: &Lab, env: &Env, stdin: &str) -> Run {
    run_in(&lab.node, env, stdin)
}

fn run_in(ns: &Netns, env: &Env, stdin: &str) -> Run {
    run_binary(cni_binary(), ns, env, stdin)
}

/// Runs the plugin `bin` from namespace `ns`, as the runtime does.
fn run_binary(bin: &Path, ns: &Netns, env: &Env, stdin: &str) -> Run {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns.name()])
        .arg(bin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &env.0 {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The configuration OpenShift's operator renders for an EgressRouter (cniVersion 0.4.0,
/// `PORT TCP IP/32 TARGET` lines), with the EgressRouter fields that never reached its plugin
/// (`redirectRules`, `fallbackIP`): two redirects and a fallback.
fn openshift_config() -> Value {
    json!({
        "cniVersion": "0.4.0",
        "name": "egress-router-cni-nad",
        "type": "egress-cni",
        "interfaceType": "macvlan",
        "interfaceArgs": {"master": MACVLAN_PARENT, "mode": "Private"},
        "ip": {
            "addresses": [EGRESS_SOURCE4],
            "gateway": GATEWAY4,
            "destinations": [format!("{SERVICE_PORT} TCP {WEB4}/32 {WEB_PORT}")]
        },
        "redirectRules": [{"destinationIP": WEB4, "port": WEB_PORT, "protocol": "TCP"}],
        "fallbackIP": format!("{FALLBACK4}/32"),
        "log_level": "debug"
    })
}

fn dual_stack_config(version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "egress",
        "type": "egress-cni",
        "interfaceArgs": {"master": MACVLAN_PARENT},
        "ip": {
            "addresses": [EGRESS_SOURCE4, EGRESS_SOURCE6],
            "gateway": [GATEWAY4, GATEWAY6],
            "destinations": [
                format!("{SERVICE_PORT} tcp {WEB4} {WEB_PORT}"),
                format!("{SERVICE_PORT} tcp {WEB6} {WEB_PORT}")
            ]
        },
        "fallbackIP": [FALLBACK4, FALLBACK6]
    })
}

fn source4() -> IpAddr {
    ip(EGRESS_SOURCE4)
}
// ---------------------------------------------------------------------------------------------
// The spec's schemas, as code
// ---------------------------------------------------------------------------------------------

/// What `result` breaks of the CNI specification's ADD result schema for `version` (0.4.0,
/// 1.0.0, 1.1.0): required keys and their types, no keys the version does not define, address
/// formats and families, interface indexes in range. Empty: valid.
fn result_schema(result: &Value, version: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let v11 = version == "1.1.0";
    let v04 = version == "0.4.0";
    let Some(top) = result.as_object() else {
        return vec!["the result is not an object".into()];
    };
    let keys = |obj: &serde_json::Map<String, Value>,
                allowed: &[&str],
                at: &str,
                bad: &mut Vec<String>| {
        for k in obj.keys() {
            if !allowed.contains(&k.as_str()) {
                bad.push(format!("{at}: key {k:?} is not in the {version} schema"));
            }
        }
    };
    keys(
        top,
        &["cniVersion", "interfaces", "ips", "routes", "dns"],
        "result",
        &mut bad,
    );
    if top.get("cniVersion") != Some(&json!(version)) {
        bad.push(format!(
            "cniVersion is {:?}, not {version:?}",
            top.get("cniVersion")
        ));
    }
    let cidr = |v: &Value| -> Option<(IpAddr, u8)> {
        let (a, p) = v.as_str()?.split_once('/')?;
        let a: IpAddr = a.parse().ok()?;
        let p: u8 = p.parse().ok()?;
        (p <= if a.is_ipv4() { 32 } else { 128 }).then_some((a, p))
    };
    let addr = |v: &Value| v.as_str().and_then(|s| s.parse::<IpAddr>().ok());
    let uint = |v: &Value| v.is_u64();
    let mut n_interfaces = 0;
    match top.get("interfaces") {
        None => {}
        Some(Value::Array(items)) => {
            n_interfaces = items.len();
            for (i, it) in items.iter().enumerate() {
                let at = format!("interfaces[{i}]");
                let Some(o) = it.as_object() else {
                    bad.push(format!("{at} is not an object"));
                    continue;
                };
                let mut allowed = vec!["name", "mac", "sandbox"];
                if v11 {
                    allowed.extend(["mtu", "socketPath", "pciID"]);
                }
                keys(o, &allowed, &at, &mut bad);
                if !o.get("name").is_some_and(Value::is_string) {
                    bad.push(format!("{at}.name is required, a string"));
                }
                if let Some(mac) = o.get("mac") {
                    let ok = mac.as_str().is_some_and(|m| {
                        m.split(':').count() == 6
                            && m.split(':')
                                .all(|b| b.len() == 2 && u8::from_str_radix(b, 16).is_ok())
                    });
                    if !ok {
                        bad.push(format!("{at}.mac {mac} is not a MAC address"));
                    }
                }
                if o.get("sandbox").is_some_and(|s| !s.is_string()) {
                    bad.push(format!("{at}.sandbox is not a string"));
                }
                if o.get("mtu").is_some_and(|m| !uint(m)) {
                    bad.push(format!("{at}.mtu is not an unsigned integer"));
                }
            }
        }
        Some(_) => bad.push("interfaces is not a list".into()),
    }
    match top.get("ips") {
        None if v04 => bad.push("ips is required in 0.4.0".into()),
        None => {}
        Some(Value::Array(items)) => {
            for (i, it) in items.iter().enumerate() {
                let at = format!("ips[{i}]");
                let Some(o) = it.as_object() else {
                    bad.push(format!("{at} is not an object"));
                    continue;
                };
                let mut allowed = vec!["address", "gateway", "interface"];
                if v04 {
                    allowed.push("version");
                }
                keys(o, &allowed, &at, &mut bad);
                let Some((a, _)) = o.get("address").and_then(cidr) else {
                    bad.push(format!(
                        "{at}.address is required, an address with its prefix"
                    ));
                    continue;
                };
                if v04 {
                    let want = if a.is_ipv4() { "4" } else { "6" };
                    if o.get("version") != Some(&json!(want)) {
                        bad.push(format!("{at}.version must be {want:?} in 0.4.0"));
                    }
                }
                if let Some(g) = o.get("gateway") {
                    match addr(g) {
                        Some(g) if g.is_ipv4() == a.is_ipv4() => {}
                        _ => bad.push(format!("{at}.gateway {g} is not an address of the family")),
                    }
                }
                if let Some(idx) = o.get("interface") {
                    if idx.as_u64().is_none_or(|x| (x as usize) >= n_interfaces) {
                        bad.push(format!(
                            "{at}.interface {idx} is not an index into interfaces"
                        ));
                    }
                }
            }
        }
        Some(_) => bad.push("ips is not a list".into()),
    }
    match top.get("routes") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, it) in items.iter().enumerate() {
                let at = format!("routes[{i}]");
                let Some(o) = it.as_object() else {
                    bad.push(format!("{at} is not an object"));
                    continue;
                };
                let mut allowed = vec!["dst", "gw"];
                if v11 {
                    allowed.extend(["mtu", "advmss", "priority", "table", "scope"]);
                }
                keys(o, &allowed, &at, &mut bad);
                let Some((dst, _)) = o.get("dst").and_then(cidr) else {
                    bad.push(format!("{at}.dst is required, a network"));
                    continue;
                };
                if let Some(gw) = o.get("gw") {
                    if addr(gw).is_none_or(|g| g.is_ipv4() != dst.is_ipv4()) {
                        bad.push(format!("{at}.gw {gw} is not an address of the family"));
                    }
                }
                for k in ["mtu", "advmss", "priority", "table", "scope"] {
                    if o.get(k).is_some_and(|x| !uint(x)) {
                        bad.push(format!("{at}.{k} is not an unsigned integer"));
                    }
                }
            }
        }
        Some(_) => bad.push("routes is not a list".into()),
    }
    match top.get("dns") {
        None => {}
        Some(Value::Object(d)) => {
            keys(
                d,
                &["nameservers", "domain", "search", "options"],
                "dns",
                &mut bad,
            );
            for k in ["nameservers", "search", "options"] {
                if d.get(k)
                    .is_some_and(|l| !l.as_array().is_some_and(|l| l.iter().all(Value::is_string)))
                {
                    bad.push(format!("dns.{k} is not a list of strings"));
                }
            }
            if d.get("domain").is_some_and(|x| !x.is_string()) {
                bad.push("dns.domain is not a string".into());
            }
        }
        Some(_) => bad.push("dns is not an object".into()),
    }
    bad
}

/// What `e` breaks of the spec's error object: `cniVersion`, `code`, `msg`, optional `details`.
fn error_schema(e: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let Some(o) = e.as_object() else {
        return vec!["the error is not an object".into()];
    };
    for k in o.keys() {
        if !["cniVersion", "code", "msg", "details"].contains(&k.as_str()) {
            bad.push(format!("key {k:?} is not in the error object"));
        }
    }
    if !o.get("cniVersion").is_some_and(Value::is_string) {
        bad.push("cniVersion is required, a string".into());
    }
    if !o.get("code").is_some_and(Value::is_u64) {
        bad.push("code is required, an unsigned integer".into());
    }
    if o.get("msg")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        bad.push("msg is required, a string".into());
    }
    if o.get("details").is_some_and(|d| !d.is_string()) {
        bad.push("details is not a string".into());
    }
    bad
}

#[test]
fn the_schema_checks_catch_what_the_spec_rules_out() {
    let good = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "net1", "mac": "02:00:00:00:00:01", "sandbox": "/x", "mtu": 1500}],
        "ips": [{"address": "203.0.113.99/24", "gateway": "203.0.113.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "203.0.113.1", "table": 254}],
        "dns": {"nameservers": ["198.51.100.53"]}
    });
    assert_eq!(result_schema(&good, "1.1.0"), Vec::<String>::new());
    // 1.1.0's additions are not 1.0.0's; 0.4.0 needs its version fields.
    assert_eq!(
        result_schema(&good, "1.0.0").len(),
        3,
        "{:?}",
        result_schema(&good, "1.0.0")
    );
    let mut v = good.clone();
    v["cniVersion"] = "0.4.0".into();
    assert!(result_schema(&v, "0.4.0")
        .iter()
        .any(|b| b == "ips[0].version must be \"4\" in 0.4.0"));
    for (path, value) in [
        ("/ips/0/interface", json!(1)),
        ("/ips/0/address", json!("203.0.113.99")),
        ("/ips/0/gateway", json!("2001:db8::1")),
        ("/ips/0/version", json!("4")),
        ("/interfaces/0/mac", json!("02:00:00:00:00")),
        ("/routes/0/dst", json!("default")),
        ("/dns/domain", json!(1)),
    ] {
        let mut v = good.clone();
        let (parent, key) = path.rsplit_once('/').unwrap();
        v.pointer_mut(parent).unwrap()[key] = value;
        assert!(!result_schema(&v, "1.1.0").is_empty(), "{path}");
    }
    assert!(error_schema(&json!({"cniVersion": "1.0.0", "code": 7, "msg": "x"})).is_empty());
    assert!(!error_schema(&json!({"code": 7, "msg": "x"})).is_empty());
    assert!(!error_schema(&json!({"cniVersion": "1.0.0", "code": -1, "msg": "x"})).is_empty());
    assert!(
        !error_schema(&json!({"cniVersion": "1.0.0", "code": 7, "msg": "x", "extra": 1}))
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// End to end
// ---------------------------------------------------------------------------------------------

#[test]
fn add_then_real_tcp_through_every_redirect_and_the_fallback() {
    let lab = Lab::new();
    let web = lab.ext.serve_http(&[WEB_PORT, OTHER_PORT]);
    let snaps = Snapshots::take(&lab);
    assert!(lab.client.http_get(ip(WEB4), WEB_PORT, T).is_err());
    let id = "e2e0add0c0ffee";
    let config = openshift_config();

    let add = cni(
        &lab,
        &Env::new("ADD", id, lab.router.path()),
        &config.to_string(),
    )
    .ok();
    let result = add.json();
    let violations = result_schema(&result, "0.4.0");
    assert!(violations.is_empty(), "{violations:?} in {result}");
    let mac = lab.router.link_mac(IFNAME);
    assert_eq!(
        result,
        json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": IFNAME, "mac": mac, "sandbox": lab.router.path()}],
            "ips": [{"version": "4", "address": EGRESS_SOURCE4, "gateway": GATEWAY4, "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": GATEWAY4}],
            "dns": {}
        })
    );
    // log_level debug: the plan, step by step, on stderr.
    assert!(
        add.stderr
            .contains("plan step  2: nft add table inet egress_cni_"),
        "{}",
        add.stderr
    );

    // The macvlan: created on ext0 of the node, directly in the pod, private as configured.
    let link = lab.router.ip_json(&["-d", "link", "show", IFNAME]);
    assert_eq!(link[0]["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(link[0]["linkinfo"]["info_data"]["mode"], "private");

    // Real TCP through each redirect and the fallback; the web server sees the egress source.
    lab.assert_redirects_and_fallback4(&web, OTHER_PORT);

    // CHECK, with the ADD's result as prevResult, as the runtime passes it.
    let mut check = config.clone();
    check["prevResult"] = result.clone();
    cni(
        &lab,
        &Env::new("CHECK", id, lab.router.path()),
        &check.to_string(),
    )
    .quiet();

    // DEL (with prevResult, as the runtime passes it), twice: both succeed, the pod and the
    // node are exactly as before.
    for round in ["DEL", "DEL again"] {
        cni(
            &lab,
            &Env::new("DEL", id, lab.router.path()),
            &check.to_string(),
        )
        .quiet();
        snaps.assert_restored(&format!("after {round}"));
    }
    assert!(lab
        .client
        .http_get(ip(ROUTER_ETH0_4), SERVICE_PORT, Duration::from_millis(500))
        .is_err());
}

#[test]
fn dual_stack_in_every_cni_version_matches_the_spec_schema() {
    let lab = Lab::new();
    let web = lab.ext.serve_http(&[WEB_PORT, OTHER_PORT]);
    let snaps = Snapshots::take(&lab);
    for (n, version) in ["0.4.0", "1.0.0", "1.1.0"].into_iter().enumerate() {
        let id = format!("e2e{n}dual");
        let env = |command| Env::new(command, &id, lab.router.path());
        let config = dual_stack_config(version);
        let result = cni(&lab, &env("ADD"), &config.to_string()).ok().json();
        let violations = result_schema(&result, version);
        assert!(
            violations.is_empty(),
            "{version}: {violations:?} in {result}"
        );
        let ips: Vec<&str> = result["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["address"].as_str().unwrap())
            .collect();
        assert_eq!(ips, [EGRESS_SOURCE4, EGRESS_SOURCE6], "{version}");
        assert_eq!(result["routes"][1], json!({"dst": "::/0", "gw": GATEWAY6}));
        let mtu = &lab.router.ip_json(&["link", "show", IFNAME])[0]["mtu"];
        assert_eq!(
            result["interfaces"][0].get("mtu"),
            (version == "1.1.0").then_some(mtu)
        );

        for (router, source) in [
            (ROUTER_ETH0_4, EGRESS_SOURCE4),
            (ROUTER_ETH0_6, EGRESS_SOURCE6),
        ] {
            let body = lab.client.http_get(ip(router), SERVICE_PORT, T).unwrap();
            assert_eq!(
                body.trim(),
                format!("peer={} port={WEB_PORT}", ip(source)),
                "{version}"
            );
            let body = lab.client.http_get(ip(router), OTHER_PORT, T).unwrap();
            assert_eq!(
                body.trim(),
                format!("peer={} port={OTHER_PORT}", ip(source)),
                "{version}"
            );
        }
        assert!(lab.router.dnat_seen(OTHER_PORT, FALLBACK4), "{version}");
        let mut check = config.clone();
        check["prevResult"] = result;
        cni(&lab, &env("CHECK"), &check.to_string()).quiet();
        cni(&lab, &env("DEL"), &check.to_string()).quiet();
        snaps.assert_restored(&format!("after DEL in {version}"));
    }
    let sources = [ip(EGRESS_SOURCE4), ip(EGRESS_SOURCE6)];
    assert!(web.peers().iter().all(|p| sources.contains(p)));
    assert_eq!(web.peers().len(), 12);
}

#[test]
fn del_without_add_or_without_a_namespace_succeeds() {
    let lab = Lab::new();
    let snaps = Snapshots::take(&lab);
    let id = "e2enever0added";
    let config = openshift_config().to_string();
    let env = Env::new("DEL", id, lab.router.path());
    // No ADD happened.
    cni(&lab, &env, &config).quiet();
    // No CNI_NETNS (the runtime has no namespace any more), or one that is gone.
    cni(&lab, &env.clone().with("CNI_NETNS", None), &config).quiet();
    let gone = format!("/run/netns/egt-{}-gone", std::process::id());
    cni(&lab, &env.clone().with("CNI_NETNS", Some(&gone)), &config).quiet();
    // The configuration is not needed to clean up: a broken one is logged, not fatal.
    let r = cni(&lab, &env, "{\"cniVersion\": \"0.4.0\", \"bogus\": 1}").quiet();
    assert!(
        r.stderr.contains("ignoring the configuration"),
        "{}",
        r.stderr
    );
    cni(&lab, &env, "not json").quiet();
    // Still required: the variables that name the attachment.
    cni(&lab, &env.clone().with("CNI_IFNAME", None), &config).error(4);
    snaps.assert_restored("after DEL without ADD");

    // A pod whose namespace disappears after ADD: DEL succeeds.
    let pod = Netns::new("pod");
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    pod.ip(&["link", "set", "eth0", "up"]);
    let env = Env::new("ADD", id, pod.path());
    let conf = openshift_config();
    cni(&lab, &env, &conf.to_string()).ok();
    let path = pod.path().to_path_buf();
    drop(pod);
    assert!(!path.exists());
    cni(
        &lab,
        &env.with("CNI_COMMAND", Some("DEL")),
        &conf.to_string(),
    )
    .quiet();
    snaps.assert_restored("after DEL of a vanished pod");
}

#[test]
fn check_reports_drift_precisely() {
    let lab = Lab::new();
    let snaps = Snapshots::take(&lab);
    let id = "e2echeck";
    let env = |command| Env::new(command, id, lab.router.path());
    let mut config = openshift_config();
    config["cniVersion"] = "1.1.0".into();
    let result = cni(&lab, &env("ADD"), &config.to_string()).ok().json();
    let mut check = config.clone();
    check["prevResult"] = result.clone();
    cni(&lab, &env("CHECK"), &check.to_string()).quiet();

    // Without prevResult: the runtime broke the spec.
    let e = cni(&lab, &env("CHECK"), &config.to_string()).error(7);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .starts_with("prevResult is missing"),
        "{e}"
    );
    // A namespace that does not exist: container unknown.
    let gone = format!("/run/netns/egt-{}-gone", std::process::id());
    cni(
        &lab,
        &env("CHECK").with("CNI_NETNS", Some(&gone)),
        &check.to_string(),
    )
    .error(3);

    // Drift: the egress address removed, the forward filter flushed, a foreign MAC in
    // prevResult. Each is named.
    let name = egress_cni::router_name(id, IFNAME);
    let table = format!("egress_{}", name.replace('-', "_"));
    lab.router
        .ip(&["addr", "del", EGRESS_SOURCE4, "dev", IFNAME]);
    lab.router
        .exec(&["nft", "flush", "chain", "inet", &table, "forward"]);
    check["prevResult"]["interfaces"][0]["mac"] = "02:00:00:00:00:01".into();
    let e = cni(&lab, &env("CHECK"), &check.to_string()).error(104);
    let details = e["details"].as_str().unwrap();
    let lines: Vec<&str> = details.lines().collect();
    assert_eq!(
        e["msg"],
        format!(
            "the attachment differs from its configuration ({} differences)",
            lines.len()
        )
    );
    assert!(
        lines.contains(&format!("address {EGRESS_SOURCE4} missing on {IFNAME}").as_str()),
        "{details}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("nftables table inet {table} differs"))),
        "{details}"
    );
    let mac = lab.router.link_mac(IFNAME);
    assert!(
        lines.contains(
            &format!("interface {IFNAME}: MAC is {mac}, prevResult says 02:00:00:00:00:01")
                .as_str()
        ),
        "{details}"
    );
    assert_eq!(e["cniVersion"], "1.1.0");

    // DEL restores the pod exactly, drifted or not.
    cni(&lab, &env("DEL"), &check.to_string()).quiet();
    snaps.assert_restored("after DEL of a drifted router");
}

#[test]
fn config_errors_have_the_spec_codes_and_change_nothing() {
    let lab = Lab::new();
    let snaps = Snapshots::take(&lab);
    let id = "e2ebadconfig";
    let add = Env::new("ADD", id, lab.router.path());
    let set = |path: &str, value: Value| {
        let mut c = openshift_config();
        let (parent, key) = path.rsplit_once('/').unwrap();
        c.pointer_mut(parent).unwrap()[key] = value;
        c.to_string()
    };
    let config = openshift_config().to_string();
    let gone = format!("/run/netns/egt-{}-gone", std::process::id());
    let cases: Vec<(Env, String, u64, &str)> = vec![
        (
            add.clone(),
            set("/cniVersion", json!("0.3.1")),
            1,
            "cniVersion `0.3.1`",
        ),
        (
            add.clone(),
            set("/fallbackIp", json!(FALLBACK4)),
            2,
            "fallbackIp = \"198.51.100.9\"",
        ),
        (
            add.clone(),
            set("/ipam", json!({"type": "host-local"})),
            2,
            "ipam",
        ),
        (
            add.clone(),
            set("/interfaceType", json!("ipvlan")),
            2,
            "interfaceType = \"ipvlan\"",
        ),
        (
            add.clone(),
            set("/ip/gateways", json!([GATEWAY4])),
            2,
            "ip.gateways",
        ),
        (
            add.clone().with("CNI_CONTAINERID", None),
            config.clone(),
            4,
            "CNI_CONTAINERID",
        ),
        (
            add.clone().with("CNI_IFNAME", Some("net/1")),
            config.clone(),
            4,
            "CNI_IFNAME `net/1`",
        ),
        (
            add.clone().with("CNI_COMMAND", Some("ADDD")),
            config.clone(),
            4,
            "CNI_COMMAND `ADDD`",
        ),
        (
            add.clone().with("CNI_NETNS", Some("pod")),
            config.clone(),
            4,
            "CNI_NETNS `pod`",
        ),
        (add.clone(), "{\"cniVersion\": ".into(), 6, "not valid JSON"),
        (add.clone(), String::new(), 6, "not valid JSON"),
        (
            add.clone(),
            set("/ip/addresses", json!(["203.0.113.999/24"])),
            7,
            "ip.addresses[0] `203.0.113.999/24`",
        ),
        (
            add.clone(),
            set("/ip/gateway", json!(GATEWAY6)),
            7,
            "ip.gateway `2001:db8:2::1`",
        ),
        (
            add.clone(),
            set("/ip/destinations", json!([format!("80 tcp {WEB4} 0")])),
            7,
            "ip.destinations[0]",
        ),
        (
            add.clone(),
            set("/redirectRules/0/port", json!(70000)),
            7,
            "redirectRules[0].port `70000`",
        ),
        (
            add.clone(),
            set("/redirectRules/0/protocol", json!("ICMP")),
            7,
            "redirectRules[0].protocol",
        ),
        (
            add.clone(),
            set("/fallbackIP", json!("198.51.100.0/24")),
            7,
            "fallbackIP `198.51.100.0/24`",
        ),
        (
            add.clone(),
            set("/interfaceArgs/mode", json!("source")),
            7,
            "interfaceArgs.mode `source`",
        ),
        (
            add.clone(),
            set("/interfaceArgs/mtu", json!("big")),
            7,
            "interfaceArgs.mtu `big`",
        ),
        (
            add.clone(),
            set("/log_level", json!("trace")),
            7,
            "log_level `trace`",
        ),
        (
            add.clone(),
            set("/internalInterface", json!(IFNAME)),
            7,
            "internalInterface `net1`",
        ),
        (
            add.clone(),
            set("/keepRoutes", json!([{"dst": "10.0.0.1/8"}])),
            7,
            "keepRoutes[0].dst",
        ),
        (
            add.clone(),
            set("/interfaceArgs/master", json!("nope0")),
            100,
            "interfaceArgs.master: link `nope0` not found",
        ),
        (
            add.clone(),
            set("/interfaceArgs/mtu", json!(9000)),
            100,
            "interfaceArgs.mtu `9000`",
        ),
        (
            add.clone(),
            set("/internalInterface", json!("eth9")),
            100,
            "internalInterface: link `eth9` not found",
        ),
        (
            add.clone().with("CNI_NETNS", Some(&gone)),
            config.clone(),
            3,
            "not found",
        ),
        (
            add.clone().with("CNI_COMMAND", Some("STATUS")),
            config.clone(),
            1,
            "STATUS needs cniVersion 1.1.0",
        ),
        (
            add.clone().with("CNI_COMMAND", Some("GC")),
            config.clone(),
            1,
            "GC needs cniVersion 1.1.0",
        ),
    ];
    for (env, stdin, code, says) in &cases {
        let e = cni(&lab, env, stdin).error(*code);
        let msg = e["msg"].as_str().unwrap();
        assert!(msg.contains(says), "{stdin}: {msg:?} does not say {says:?}");
    }
    // The version of the error is the configuration's when it has a supported one.
    let e = cni(&lab, &add, &set("/bogus", json!(1))).error(2);
    assert_eq!(e["cniVersion"], "0.4.0");
    let e = cni(&lab, &add, &set("/cniVersion", json!("0.3.1"))).error(1);
    assert_eq!(e["cniVersion"], "1.1.0");
    snaps.assert_restored("after the configuration errors");
}

#[test]
fn an_add_failing_partway_leaves_the_pod_as_its_snapshot() {
    let lab = Lab::new();
    let snaps = Snapshots::take(&lab);
    let id = "e2epartway";
    // The route kept through eth0 comes after the default route was replaced; its gateway is
    // not on eth0's network, so the kernel refuses it and everything before is rolled back.
    let mut config = dual_stack_config("1.0.0");
    config["keepRoutes"] = json!([{"dst": "198.51.100.128/25", "gw": "203.0.113.77"}]);
    let e = cni(
        &lab,
        &Env::new("ADD", id, lab.router.path()),
        &config.to_string(),
    )
    .error(101);
    let msg = e["msg"].as_str().unwrap();
    assert!(msg.starts_with("step "), "{msg}");
    assert!(msg.ends_with("rolled back completely"), "{msg}");
    assert!(
        e["details"]
            .as_str()
            .unwrap()
            .contains("198.51.100.128/25 via 203.0.113.77"),
        "{e}"
    );
    snaps.assert_restored("after a failed ADD");
    // And the same ADD, fixed, then works.
    config["keepRoutes"] = json!([{"dst": "198.51.100.128/25", "gw": "192.0.2.1"}]);
    let env = Env::new("ADD", id, lab.router.path());
    cni(&lab, &env, &config.to_string()).ok();
    cni(
        &lab,
        &env.with("CNI_COMMAND", Some("DEL")),
        &config.to_string(),
    )
    .quiet();
    snaps.assert_restored("after ADD and DEL");
}

#[test]
fn version_status_and_gc() {
    let lab = Lab::new();
    let snaps = Snapshots::take(&lab);
    // VERSION needs nothing but CNI_COMMAND; the stdin the runtime sends is not needed.
    let version = Env(vec![("CNI_COMMAND", Some("VERSION".into()))]);
    let r = cni(&lab, &version, "{\"cniVersion\": \"1.1.0\"}")
        .ok()
        .json();
    assert_eq!(
        r,
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})
    );

    let mut config = openshift_config();
    config["cniVersion"] = "1.1.0".into();
    let status = Env(vec![
        ("CNI_COMMAND", Some("STATUS".into())),
        ("CNI_PATH", Some("/opt/cni/bin".into())),
    ]);
    cni(&lab, &status, &config.to_string()).quiet();
    // Not available: the master is missing on this node (from the client's namespace, it is).
    let e = run_in(&lab.client, &status, &config.to_string()).error(50);
    assert!(
        e["details"]
            .as_str()
            .unwrap()
            .contains("link `ext0` not found"),
        "{e}"
    );
    // Without a master, the node's default route names it; the node has none.
    config["interfaceArgs"] = json!({"mode": "private"});
    let e = cni(&lab, &status, &config.to_string()).error(50);
    assert!(
        e["details"].as_str().unwrap().contains("default route"),
        "{e}"
    );
    // The router's namespace has one, via eth0.
    run_in(&lab.router, &status, &config.to_string()).quiet();

    let mut gc = openshift_config();
    gc["cniVersion"] = "1.1.0".into();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "e2eother", "ifname": "net1"}]);
    gc["cni.dev/attachments"] = gc["cni.dev/valid-attachments"].clone();
    let gc_env = Env(vec![
        ("CNI_COMMAND", Some("GC".into())),
        ("CNI_PATH", Some("/opt/cni/bin".into())),
    ]);
    cni(&lab, &gc_env, &gc.to_string()).quiet();
    gc["cni.dev/valid-attachments"] = json!([{"ifname": "net1"}]);
    cni(&lab, &gc_env, &gc.to_string()).error(7);
    snaps.assert_restored("after VERSION, STATUS and GC");
}

#[test]
fn without_a_master_the_nodes_default_route_names_it() {
    let lab = Lab::new();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    lab.node
        .ip(&["route", "add", "default", "dev", MACVLAN_PARENT]);
    let snaps = Snapshots::take(&lab);
    let mut config = openshift_config();
    config["interfaceArgs"] = json!({"mode": ""});
    let env = Env::new("ADD", "e2enomaster", lab.router.path());
    let r = cni(&lab, &env, &config.to_string()).ok();
    assert!(r.stderr.contains("on master ext0"), "{}", r.stderr);
    let link = lab.router.ip_json(&["-d", "link", "show", IFNAME]);
    assert_eq!(
        link[0]["linkinfo"]["info_data"]["mode"], "bridge",
        "OpenShift's default"
    );
    let body = lab
        .client
        .http_get(ip(ROUTER_ETH0_4), SERVICE_PORT, T)
        .unwrap();
    assert_eq!(body.trim(), format!("peer={} port={WEB_PORT}", source4()));
    cni(
        &lab,
        &env.with("CNI_COMMAND", Some("DEL")),
        &config.to_string(),
    )
    .quiet();
    snaps.assert_restored("after DEL");
}

// ---------------------------------------------------------------------------------------------
// The network configuration is untrusted input: log_file, control characters, size, repeats
// ---------------------------------------------------------------------------------------------

/// A node's CNI plugin directory of its own: the plugin (a hard link to the binary under test)
/// and, when the node's admin chose a log directory, the node configuration beside it.
/// Removed when dropped, with the directories of [`Plugin::dir`].
struct Plugin {
    bin_dir: PathBuf,
    others: Vec<PathBuf>,
}

impl Plugin {
    fn new(tag: &str, log_dir: Option<&Path>) -> Plugin {
        let bin_dir = Plugin::fresh(&format!("{tag}-bin"));
        let bin = bin_dir.join("egress-cni");
        if std::fs::hard_link(cni_binary(), &bin).is_err() {
            std::fs::copy(cni_binary(), &bin).unwrap();
        }
        if let Some(dir) = log_dir {
            let node = egress_cni::NodeConfig::new(Some(dir.to_path_buf())).unwrap();
            std::fs::write(bin_dir.join(egress_cni::NODE_CONFIG_FILE), node.to_json()).unwrap();
        }
        Plugin {
            bin_dir,
            others: Vec::new(),
        }
    }

    /// A fresh directory `egt-PID-TAG` in the temporary directory.
    fn fresh(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("egt-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Another fresh directory, removed with the plugin.
    fn dir(&mut self, tag: &str) -> PathBuf {
        let dir = Plugin::fresh(tag);
        self.others.push(dir.clone());
        dir
    }

    fn run(&self, lab: &Lab, env: &Env, stdin: &str) -> Run {
        run_binary(&self.bin_dir.join("egress-cni"), &lab.node, env, stdin)
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        for dir in self.others.iter().chain([&self.bin_dir]) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// STATUS: the command that reads the configuration and opens its log without changing
/// anything (the master is looked up on the node).
fn status_env() -> Env {
    Env(vec![
        ("CNI_COMMAND", Some("STATUS".into())),
        ("CNI_PATH", Some("/opt/cni/bin".into())),
    ])
}

fn logging_config(log_file: &Path) -> Value {
    let mut config = openshift_config();
    config["cniVersion"] = "1.1.0".into();
    config["log_level"] = "verbose".into();
    config["log_file"] = log_file.to_str().unwrap().into();
    config
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn log_file_is_written_only_in_the_nodes_log_directory_and_never_through_a_link() {
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    let lab = Lab::new();
    let snaps = Snapshots::take(&lab);
    let status = status_env();
    let mut scratch = Plugin::new("log-scratch", None);
    let logs = scratch.dir("log-dir");
    let outside = scratch.dir("log-outside");

    // No log directory on the node: log_file is not honoured, with a warning; nothing created.
    let r = scratch
        .run(
            &lab,
            &status,
            &logging_config(&logs.join("egress.log")).to_string(),
        )
        .quiet();
    assert!(
        r.stderr.contains(&format!(
            "warn: log_file `{}/egress.log` not honoured, logging on stderr only: this node has \
             no log directory",
            logs.display()
        )),
        "{}",
        r.stderr
    );
    assert_eq!(names_in(&logs), Vec::<String>::new());

    let plugin = Plugin::new("log-plugin", Some(&logs));
    // A file name, or a path in the directory: created 0600, a regular file, appended to.
    plugin
        .run(
            &lab,
            &status,
            &logging_config(Path::new("egress.log")).to_string(),
        )
        .quiet();
    plugin
        .run(
            &lab,
            &status,
            &logging_config(&logs.join("egress.log")).to_string(),
        )
        .quiet();
    let log = logs.join("egress.log");
    let meta = std::fs::symlink_metadata(&log).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(
        (meta.permissions().mode() & 0o777, meta.nlink()),
        (0o600, 1)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("ready: master ext0 is present").count(),
        2,
        "{text}"
    );

    // Elsewhere: not honoured, with a warning.
    let r = plugin
        .run(
            &lab,
            &status,
            &logging_config(&outside.join("x.log")).to_string(),
        )
        .quiet();
    assert!(
        r.stderr.contains("not in the node's log directory"),
        "{}",
        r.stderr
    );
    // A link in the directory, to a missing file or an existing one elsewhere: refused (code 5),
    // the file it names neither created nor written.
    let victim = outside.join("victim");
    symlink(outside.join("created-as-root"), logs.join("dangling.log")).unwrap();
    std::fs::write(&victim, "untouched").unwrap();
    symlink(&victim, logs.join("link.log")).unwrap();
    for name in ["dangling.log", "link.log"] {
        let e = plugin
            .run(&lab, &status, &logging_config(Path::new(name)).to_string())
            .error(5);
        assert_eq!(
            e["msg"],
            format!(
                "opening log_file {name} in {}: a symbolic link: refused",
                logs.display()
            )
        );
    }
    assert_eq!(names_in(&outside), ["victim"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert_eq!(names_in(&logs), ["dangling.log", "egress.log", "link.log"]);
    snaps.assert_restored("after the log files");
}

#[test]
fn a_newline_in_a_configuration_value_cannot_start_a_line_of_the_log() {
    let lab = Lab::new();
    let snaps = Snapshots::take(&lab);
    let mut scratch = Plugin::new("forge-scratch", None);
    let logs = scratch.dir("forge-logs");
    let plugin = Plugin::new("forge-plugin", Some(&logs));
    let forged = "egress-cni: error: forged";
    let mut config = openshift_config();
    config["log_file"] = logs.join("egress.log").to_str().unwrap().into();
    config["ip"]["addresses"] = json!([format!("{EGRESS_SOURCE4}0\n{forged}\r\u{1b}[2J")]);
    let env = Env::new("ADD", "e2eforge", lab.router.path());
    let r = plugin.run(&lab, &env, &config.to_string());
    let stderr = r.stderr.clone();
    let e = r.error(7);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains(&format!("\\n{forged}\\r\\u{{1b}}[2J`")),
        "{e}"
    );
    let file = std::fs::read_to_string(logs.join("egress.log")).unwrap();
    for (what, text) in [("stderr", &stderr), ("the log file", &file)] {
        assert!(text.contains(forged), "{what}: {text}");
        for line in text.lines() {
            // `TIME egress-cni: LEVEL: …`: every line is one of the plugin's.
            let (time, rest) = line.split_once(' ').unwrap();
            assert!(
                time.starts_with("20") && rest.starts_with("egress-cni: "),
                "{what}: a forged line: {line:?}"
            );
        }
    }
    assert_eq!(file.lines().count(), 1, "{file}");
    snaps.assert_restored("after the forged value");
}

#[test]
fn stdin_over_1_mib_and_repeated_keys_are_refused_but_del_still_cleans_up() {
    let lab = Lab::new();
    let snaps = Snapshots::take(&lab);
    let status = status_env();
    let mut config = openshift_config();
    config["cniVersion"] = "1.1.0".into();
    // Exactly 1 MiB (spaces after the object) is read; one byte more is refused unread.
    let mut padded = config.to_string();
    padded.extend(std::iter::repeat_n(
        ' ',
        egress_cni::MAX_CONFIG_LEN - padded.len(),
    ));
    cni(&lab, &status, &padded).quiet();
    padded.push(' ');
    let e = cni(&lab, &status, &padded).error(7);
    assert_eq!(
        e["msg"],
        "the network configuration on stdin is over 1048576 bytes (1 MiB): refused unread"
    );
    // A key twice: refused, naming it (serde_json alone would keep the last value silently).
    let repeated = config.to_string().replacen(
        "\"interfaceArgs\":",
        "\"interfaceArgs\":{\"master\":\"nope0\"},\"interfaceArgs\":",
        1,
    );
    let e = cni(&lab, &status, &repeated).error(7);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .starts_with("duplicate key interfaceArgs: "),
        "{e}"
    );

    // DEL needs no configuration: an attachment is removed whatever stdin holds, the inputs
    // 7508fe2's plugin accepted and the ones refused now alike.
    let id = "e2ebounded";
    let add = Env::new("ADD", id, lab.router.path());
    let del = add.clone().with("CNI_COMMAND", Some("DEL"));
    let mut operator = openshift_config();
    operator["log_file"] = "/tmp/egress-router-log".into();
    for stdin in [repeated.clone(), padded.clone(), operator.to_string()] {
        cni(&lab, &add, &openshift_config().to_string()).ok();
        let r = cni(&lab, &del, &stdin).quiet();
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        snaps.assert_restored("after DEL");
    }
}
