//! Upgrades: what the binaries of an earlier version leave in a namespace (a crash record,
//! notes, markers: a versioned format, docs/architecture.md) is read, checked, repaired and torn
//! down by this version's — a node's plugin is upgraded under running pods.
//!
//! The earlier version's state is a recording, `tests/fixtures/upgrade/<commit>/<scenario>.json`,
//! made once by `scripts/record-upgrade-fixtures.sh` (it builds that commit's `egress-router` and
//! `egress-cni` from git and runs [`record_fixtures`] with them): the router namespace's
//! snapshot before and after the old binary applied, the macvlan it created (MAC, group,
//! mode) and its nftables table as `nft list` prints it. Each test replays a recording into a
//! fresh lab (the macvlan created again on the node's parent with the recorded group and MAC,
//! addresses with their protocol, routes with theirs, the table, the sysctls), checks that the
//! replay is the recording, then has this version `check` it (only what is new drifts: the
//! input filter, the external link's accept_ra), `ensure` it, repair a deleted
//! route with `ensure`, change its role where it has one, and tear it down (by name, or a CNI
//! DEL) to exactly the namespace before.
//!
//! As root, in throwaway namespaces (`egt-<pid>-…`); a test that cannot build them fails.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use egress_core::{blocking, Drift, EnsureAction, Netns as CoreNetns, Role, RouterSpec};
use egress_lab::{
    cni_binary, router_binary, Lab, Netns, Snapshot, EGRESS_SOURCE4, EGRESS_SOURCE6, FALLBACK4,
    FALLBACK6, GATEWAY4, GATEWAY6, MACVLAN_PARENT, SERVICE_PORT, WEB4, WEB6, WEB_PORT,
};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags, AddressMessage, AddressProtocol},
    AddressFamily, RouteNetlinkMessage,
};
use serde_json::{json, Value};

/// The version whose recordings the tests replay.
const RECORDED: &str = "7508fe2";

/// What an earlier version was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// `egress-router` init mode, the macvlan created on the node's `ext0`, IPv4.
    OpenshiftActive,
    /// The same as a standby (`EGRESS_ROUTER_ROLE=standby`), IPv6.
    OpenshiftStandby,
    /// `egress-router` init mode adopting the SDN's `macvlan0`, IPv4.
    OpenshiftAdopted,
    /// `egress-cni` ADD: a dual-stack attachment (created macvlan `net1`, IPv4 and IPv6).
    CniDualStack,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario::OpenshiftActive,
    Scenario::OpenshiftStandby,
    Scenario::OpenshiftAdopted,
    Scenario::CniDualStack,
];

/// The CNI attachment of [`Scenario::CniDualStack`].
const CONTAINER: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9upgrade";
const IFNAME: &str = "net1";

impl Scenario {
    fn file(self) -> &'static str {
        match self {
            Scenario::OpenshiftActive => "openshift-active",
            Scenario::OpenshiftStandby => "openshift-standby",
            Scenario::OpenshiftAdopted => "openshift-adopted",
            Scenario::CniDualStack => "cni-dual-stack",
        }
    }

    fn lab(self) -> Lab {
        match self {
            Scenario::OpenshiftAdopted => Lab::with_adopted_macvlan(),
            _ => Lab::new(),
        }
    }

    /// The router's name.
    fn name(self) -> String {
        match self {
            Scenario::CniDualStack => egress_cni::router_name(CONTAINER, IFNAME),
            _ => format!("upgrade-{}", &self.file()["openshift-".len()..]),
        }
    }

    /// The `EGRESS_*` variables of an `egress-router` scenario.
    fn env(self, lab: &Lab) -> Vec<(&'static str, String)> {
        let v4 = self != Scenario::OpenshiftStandby;
        let mut vars = vec![
            ("EGRESS_ROUTER_MODE", "init".to_string()),
            ("EGRESS_ROUTER_NAME", self.name()),
            (
                "EGRESS_SOURCE",
                if v4 { EGRESS_SOURCE4 } else { EGRESS_SOURCE6 }.into(),
            ),
            (
                "EGRESS_GATEWAY",
                if v4 { GATEWAY4 } else { GATEWAY6 }.into(),
            ),
            (
                "EGRESS_DESTINATION",
                match v4 {
                    true => format!("{SERVICE_PORT} tcp {WEB4} {WEB_PORT}\n{FALLBACK4}\n"),
                    false => format!("{SERVICE_PORT} tcp {WEB6} {WEB_PORT}\n{FALLBACK6}\n"),
                },
            ),
        ];
        if self != Scenario::OpenshiftAdopted {
            vars.push(("EGRESS_MACVLAN_PARENT", MACVLAN_PARENT.into()));
            vars.push((
                "EGRESS_MACVLAN_PARENT_NETNS",
                lab.node.path().display().to_string(),
            ));
        }
        if self == Scenario::OpenshiftStandby {
            vars.push(("EGRESS_ROUTER_ROLE", "standby".into()));
        }
        vars
    }

    /// The spec this version builds from the same input, in the lab's router namespace.
    fn spec(self, lab: &Lab) -> Option<RouterSpec> {
        if self == Scenario::CniDualStack {
            return None;
        }
        let config = egress_openshift::from_env(self.env(lab)).unwrap();
        let mut value = config.spec.to_json_value();
        value["netns"] = json!({"path": lab.router.path()});
        Some(RouterSpec::from_json_value(value).unwrap())
    }
}

/// The network configuration of [`Scenario::CniDualStack`].
fn cni_config() -> Value {
    json!({
        "cniVersion": "1.0.0",
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

/// Runs `bin` (`egress-router` in the router namespace, `egress-cni` in the node's, as their
/// callers do) with exactly `vars` (and PATH) and `stdin`; panics unless it exits 0.
fn run(ns: &Netns, bin: &Path, args: &[&str], vars: &[(&str, String)], stdin: &str) -> String {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(bin)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}\nstdout:\n{}\nstderr:\n{}",
        bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `CNI_*` variables of the attachment, for `command`.
fn cni_env(lab: &Lab, command: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", command.into()),
        ("CNI_CONTAINERID", CONTAINER.into()),
        ("CNI_NETNS", lab.router.path().display().to_string()),
        ("CNI_IFNAME", IFNAME.into()),
        ("CNI_PATH", "/opt/cni/bin".into()),
    ]
}

/// Has the binaries in `bin_dir` apply `scenario` in `lab`.
fn apply_with(bin_dir: &Path, scenario: Scenario, lab: &Lab) {
    match scenario {
        Scenario::CniDualStack => {
            let stdin = cni_config().to_string();
            run(
                &lab.node,
                &bin_dir.join("egress-cni"),
                &[],
                &cni_env(lab, "ADD"),
                &stdin,
            );
        }
        _ => {
            run(
                &lab.router,
                &bin_dir.join("egress-router"),
                &[],
                &scenario.env(lab),
                "",
            );
        }
    }
}

/// A snapshot's lines with the lab's namespace names replaced: comparable across labs. Without
/// the `accept_ra` lines: the recordings of 7508fe2 were taken before the snapshot held them
/// (and 7508fe2 never changes `accept_ra`).
fn normalized(s: &Snapshot, lab: &Lab) -> Vec<String> {
    let names = lab.ns_names();
    s.lines()
        .iter()
        .filter(|l| !(l.starts_with("sysctl net.ipv6.conf.") && l.contains(".accept_ra = ")))
        .map(|l| names.iter().fold(l.clone(), |l, n| l.replace(n, "NS")))
        .collect()
}

/// `net.ipv4.conf.all.accept_redirects`: writing `ip_forward` changes it, and the snapshot
/// does not hold it.
const ACCEPT_REDIRECTS: &str = "net.ipv4.conf.all.accept_redirects";

/// Records each scenario as the binaries in `$EGRESS_UPGRADE_RECORD_BIN` leave it, into
/// `$EGRESS_UPGRADE_FIXTURES`. Run by scripts/record-upgrade-fixtures.sh, not by the suite.
#[test]
#[ignore = "records the fixtures: scripts/record-upgrade-fixtures.sh runs it"]
fn record_fixtures() {
    let bins = PathBuf::from(std::env::var("EGRESS_UPGRADE_RECORD_BIN").unwrap());
    let out = PathBuf::from(std::env::var("EGRESS_UPGRADE_FIXTURES").unwrap());
    std::fs::create_dir_all(&out).unwrap();
    for scenario in SCENARIOS {
        let lab = scenario.lab();
        let before = normalized(&Snapshot::take(&lab.router), &lab);
        apply_with(&bins, scenario, &lab);
        let after = normalized(&Snapshot::take(&lab.router), &lab);
        let links = lab.router.ip_json(&["-d", "link", "show"]);
        let created: Vec<Value> = links
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["linkinfo"]["info_kind"] == "macvlan")
            .filter(|l| {
                let name = l["ifname"].as_str().unwrap();
                !before
                    .iter()
                    .any(|b| b.starts_with(&format!("link {name} ")))
            })
            .map(|l| {
                json!({
                    "name": l["ifname"],
                    "mac": l["address"],
                    "mode": l["linkinfo"]["info_data"]["mode"],
                    "group": l["group"],
                    "mtu": l["mtu"],
                })
            })
            .collect();
        let nft = lab.router.exec(&["nft", "list", "ruleset"]);
        let fixture = json!({
            "recorded_with": std::env::var("EGRESS_UPGRADE_REV").unwrap_or_default(),
            "scenario": scenario.file(),
            "name": scenario.name(),
            "before": before,
            "after": after,
            "created_links": created,
            "accept_redirects": lab.router.sysctl_get(ACCEPT_REDIRECTS),
            "nft": nft,
        });
        let path = out.join(format!("{}.json", scenario.file()));
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&fixture).unwrap() + "\n",
        )
        .unwrap();
        eprintln!("recorded {}", path.display());
    }
}

/// The recording of `scenario`.
fn fixture(scenario: Scenario) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/upgrade")
        .join(RECORDED)
        .join(format!("{}.json", scenario.file()));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (scripts/record-upgrade-fixtures.sh)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// A snapshot line's kind, name and JSON: `link macvlan0 {…}` → ("link", ["macvlan0"], {…}).
fn split_line(line: &str) -> (&str, Vec<&str>, Value) {
    let json_at = line.find('{').unwrap_or(line.len());
    let mut words = line[..json_at].split_whitespace();
    let kind = words.next().unwrap();
    let json = serde_json::from_str(&line[json_at..]).unwrap_or(Value::Null);
    (kind, words.collect(), json)
}

/// The `ip` arguments that add (or delete) the route of a snapshot line `route -4|-6 {…}`.
fn route_args(family: &str, r: &Value, op: &str) -> Vec<String> {
    let s = |k: &str| r[k].as_str().map(str::to_string);
    let kind = s("type").unwrap_or_else(|| "unicast".into());
    let mut args = vec![family.to_string(), "route".into(), op.into()];
    if kind != "unicast" {
        args.push(kind.clone());
    }
    args.push(s("dst").unwrap());
    let mut opt = |flag: &str, value: Option<String>| {
        if let Some(v) = value {
            args.push(flag.into());
            args.push(v);
        }
    };
    opt("via", s("gateway"));
    if kind == "unicast" {
        opt("dev", s("dev"));
        opt("scope", s("scope"));
    }
    opt("table", s("table"));
    opt("proto", s("protocol"));
    opt("metric", r["metric"].as_u64().map(|m| m.to_string()));
    opt("src", s("prefsrc"));
    if r["onlink"] == true {
        args.push("onlink".into());
    }
    args
}

/// `ip addr add CIDR [broadcast B] dev LINK proto P [nodad]`, from a snapshot's address line
/// (iproute2 6.1 cannot set the protocol).
fn add_address(ns: &Netns, link: &str, cidr: &str, json: &Value) {
    let (addr, prefix) = cidr.split_once('/').unwrap();
    let addr: IpAddr = addr.parse().unwrap();
    let mut m = AddressMessage::default();
    m.header.family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.prefix_len = prefix.parse().unwrap();
    m.header.index = ns.link_index(link);
    m.attributes = vec![
        AddressAttribute::Local(addr),
        AddressAttribute::Address(addr),
    ];
    if let Some(b) = json["broadcast"].as_str() {
        m.attributes
            .push(AddressAttribute::Broadcast(b.parse().unwrap()));
    }
    if let Some(p) = json["protocol"].as_u64() {
        m.attributes
            .push(AddressAttribute::Protocol(AddressProtocol::from(p as u8)));
    }
    if addr.is_ipv6() {
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    ns.rtnetlink(
        RouteNetlinkMessage::NewAddress(m),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .unwrap_or_else(|e| panic!("ip addr add {cidr} dev {link}: {e}"));
}

/// Replays `f` into `lab`: what the old binary changed, from the two snapshots (routes and
/// addresses the kernel derives come with the addresses), then checks the replay is the
/// recording.
fn replay(lab: &Lab, f: &Value) {
    let now = normalized(&Snapshot::take(&lab.router), lab);
    let (before, after) = (strings(&f["before"]), strings(&f["after"]));
    assert_eq!(
        now, before,
        "the lab differs from the recording's: record it again"
    );
    let removed: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
    let added: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    let r = &lab.router;
    // Links: the macvlan the old binary created, on the node's parent, moved in; the others'
    // up flag.
    for l in f["created_links"].as_array().unwrap() {
        let s = |k: &str| l[k].as_str().unwrap().to_string();
        let name = s("name");
        lab.node.ip(&[
            "link",
            "add",
            &name,
            "link",
            MACVLAN_PARENT,
            "address",
            &s("mac"),
            "group",
            &s("group"),
            "mtu",
            &l["mtu"].to_string(),
            "netns",
            r.name(),
            "type",
            "macvlan",
            "mode",
            &s("mode"),
        ]);
    }
    for line in &added {
        if let ("link", words, json) = split_line(line) {
            let up = if json["up"] == true { "up" } else { "down" };
            r.ip(&["link", "set", words[0], up]);
        }
    }
    // Sysctls: ip_forward first (writing it resets every link's forwarding), then the rest.
    let mut sysctls: BTreeMap<bool, Vec<(String, String)>> = BTreeMap::new();
    for line in &added {
        if let Some(rest) = line.strip_prefix("sysctl ") {
            let (key, value) = rest.split_once(" = ").unwrap();
            sysctls
                .entry(key != "net.ipv4.ip_forward")
                .or_default()
                .push((key.to_string(), value.to_string()));
        }
    }
    for (key, value) in sysctls.values().flatten() {
        r.sysctl_set(key, value);
    }
    r.sysctl_set(ACCEPT_REDIRECTS, f["accept_redirects"].as_str().unwrap());
    for line in &added {
        if let ("addr", words, json) = split_line(line) {
            add_address(r, words[0], words[1], &json);
        }
    }
    for (lines, op) in [(&removed, "del"), (&added, "add")] {
        for line in lines.iter() {
            let (kind, words, json) = split_line(line);
            if kind == "route" && json["protocol"] != "kernel" {
                let args = route_args(words[0], &json, op);
                r.ip(&args.iter().map(String::as_str).collect::<Vec<_>>());
            }
        }
    }
    let nft = f["nft"].as_str().unwrap();
    if !nft.trim().is_empty() {
        let file =
            std::env::temp_dir().join(format!("egt-{}-{}.nft", std::process::id(), r.name()));
        std::fs::write(&file, nft).unwrap();
        r.exec(&["nft", "-f", file.to_str().unwrap()]);
        std::fs::remove_file(&file).unwrap();
    }
    let replayed = normalized(&Snapshot::take(&lab.router), lab);
    let missing: Vec<&String> = after.iter().filter(|l| !replayed.contains(l)).collect();
    let extra: Vec<&String> = replayed.iter().filter(|l| !after.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the replay is not the recording: missing {missing:#?}, extra {extra:#?}"
    );
}

/// What a router of this version has that one of 7508fe2 has not: the input filter in the
/// router's table (the external link takes replies and the ICMP the protocols need), and
/// `accept_ra` 0 on its external link `link` (no router advertisement gives it an address or a
/// route). `check` reports exactly these; `ensure` (a CNI ADD) makes them.
fn only_the_input_filter_and_accept_ra_are_new(drift: &[Drift], table: &str, link: &str) {
    assert_eq!(
        drift,
        [
            Drift::NatChanged {
                table: table.to_string(),
                detail: "chain input is missing".into(),
            },
            Drift::SysctlChanged {
                key: format!("net.ipv6.conf.{link}.accept_ra"),
                expected: "0".into(),
                actual: "1".into(),
            },
        ],
        "a router of 7508fe2 should lack the input filter and accept_ra 0, and nothing else"
    );
}

/// An `egress-router` router of the earlier version: checked (only the input filter is new),
/// upgraded by `ensure`, repaired, its role changed, torn down by this version's binary, to
/// exactly the namespace before.
fn upgrade_openshift(scenario: Scenario) {
    let f = fixture(scenario);
    let lab = scenario.lab();
    let before = Snapshot::take(&lab.router);
    let node_before = Snapshot::take(&lab.node);
    replay(&lab, &f);
    let spec = scenario.spec(&lab).unwrap();
    let netns = CoreNetns::Path(lab.router.path().into());
    only_the_input_filter_and_accept_ra_are_new(
        &blocking::check(&spec).unwrap(),
        &format!("egress_{}", spec.name().replace('-', "_")),
        spec.external().link_name(),
    );
    assert_eq!(
        blocking::ensure(&spec).unwrap().action,
        EnsureAction::Repaired
    );
    assert_eq!(blocking::check(&spec).unwrap(), vec![], "{scenario:?}");
    let state = blocking::inspect(&netns, spec.name()).unwrap().unwrap();
    let standby = scenario == Scenario::OpenshiftStandby;
    assert_eq!(
        state.role,
        if standby { Role::Standby } else { Role::Active }
    );
    // Something the router owns is deleted (the default route; a standby has none: its
    // gateway host route): ensure puts it back.
    let gateway = if standby { GATEWAY6 } else { GATEWAY4 };
    match standby {
        true => lab.router.ip(&["-6", "route", "del", gateway]),
        false => lab.router.ip(&["route", "del", "default"]),
    };
    assert_eq!(
        blocking::ensure(&spec).unwrap().action,
        EnsureAction::Repaired
    );
    assert_eq!(blocking::check(&spec).unwrap(), vec![]);
    if standby {
        // Its identity notes, read by this version, are enough to promote it by name.
        assert_eq!(
            blocking::promote(&netns, spec.name()).unwrap().role,
            Role::Active
        );
        assert_eq!(blocking::check(&spec).unwrap(), vec![]);
        assert_eq!(
            blocking::demote(&netns, spec.name()).unwrap().role,
            Role::Standby
        );
    }
    let path = lab.router.path().display().to_string();
    run(
        &lab.node,
        router_binary(),
        &["teardown", "--netns", &path, "--name", spec.name()],
        &[],
        "",
    );
    let after = Snapshot::take(&lab.router);
    assert!(before == after, "{scenario:?}: {}", before.diff(&after));
    let node_after = Snapshot::take(&lab.node);
    assert!(
        node_before == node_after,
        "{}",
        node_before.diff(&node_after)
    );
}

#[test]
fn an_active_router_on_a_created_macvlan_of_7508fe2() {
    upgrade_openshift(Scenario::OpenshiftActive);
}

#[test]
fn a_standby_of_7508fe2() {
    upgrade_openshift(Scenario::OpenshiftStandby);
}

#[test]
fn a_router_on_an_adopted_link_of_7508fe2() {
    upgrade_openshift(Scenario::OpenshiftAdopted);
}

/// A CNI attachment added by the plugin of the earlier version: an ADD of this version's
/// plugin adds only the input filter, one after a deleted default route repairs it, and its
/// DEL restores the namespace exactly.
#[test]
fn a_cni_attachment_of_7508fe2() {
    let scenario = Scenario::CniDualStack;
    let f = fixture(scenario);
    let lab = scenario.lab();
    let before = Snapshot::take(&lab.router);
    replay(&lab, &f);
    let stdin = cni_config().to_string();
    let netns = CoreNetns::Path(lab.router.path().into());
    let state = blocking::inspect(&netns, &scenario.name())
        .unwrap()
        .unwrap();
    assert_eq!(state.addresses.len(), 2, "{state:?}");
    let replayed = Snapshot::take(&lab.router);
    run(&lab.node, cni_binary(), &[], &cni_env(&lab, "ADD"), &stdin);
    let upgraded = Snapshot::take(&lab.router);
    let added = replayed.diff(&upgraded);
    let changed: Vec<&str> = added.lines().filter(|l| !l.trim().is_empty()).collect();
    // accept_ra: the link's value before (1) becomes 0.
    let (sysctls, rest): (Vec<&str>, Vec<&str>) =
        changed.iter().partition(|l| l.contains(".accept_ra = "));
    assert!(
        !rest.is_empty()
            && rest.iter().all(
                |l| l.starts_with("+ nft chain") && l.contains(r#""name":"input""#)
                    || l.starts_with("+ nft rule") && l.contains(" input #")
            )
            && sysctls.len() == 2
            && sysctls
                .iter()
                .any(|l| l.starts_with("+ ") && l.ends_with(".accept_ra = 0"))
            && sysctls
                .iter()
                .any(|l| l.starts_with("- ") && l.ends_with(".accept_ra = 1")),
        "the first ADD of this version should add the input filter and set accept_ra to 0, \
         and nothing else:\n{added}"
    );
    run(&lab.node, cni_binary(), &[], &cni_env(&lab, "ADD"), &stdin);
    let again = Snapshot::take(&lab.router);
    assert!(upgraded == again, "{}", upgraded.diff(&again));
    lab.router.ip(&["-6", "route", "del", "default"]);
    run(&lab.node, cni_binary(), &[], &cni_env(&lab, "ADD"), &stdin);
    let repaired = Snapshot::take(&lab.router);
    assert!(upgraded == repaired, "{}", upgraded.diff(&repaired));
    run(&lab.node, cni_binary(), &[], &cni_env(&lab, "DEL"), &stdin);
    let after = Snapshot::take(&lab.router);
    assert!(before == after, "{}", before.diff(&after));
}
