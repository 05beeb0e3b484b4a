//! `diagnose`, as root, in throwaway namespaces with real frames and real TCP: a healthy router
//! (every check `ok`, within a second, nothing changed), and each fault the diagnosis is there
//! to name — the switch dropping the macvlan's MAC, the gateway gone, another host holding the
//! egress IP, a destination that refuses and one behind a firewall, drift — plus the traffic
//! counted per redirect, the apply-time conflict probe, the probe timeout as the bound of every
//! wait, a router applied by the `egress-router` binary diagnosed by name (library and
//! binary), a diagnosis that moves none of the gateway's neighbour entries for the egress
//! addresses, on a standby as on the active router, a standby's `duplicate_address`, which
//! names the active instance (and warns when there is none), and a healthy standby's whole
//! diagnosis, which passes (its destinations not tried: it holds no egress identity).
//!
//! The binary is the one `cargo build --bin egress-router` puts next to this test's directory
//! (`scripts/test.sh` builds it first); set `EGRESS_ROUTER_BIN` to test another one. A missing
//! or stale binary fails the test.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use egress_core::{
    blocking, Check, DiagnoseOptions, Diagnosis, ErrorKind, MacvlanMode, Netns, Protocol, Role,
    Router, RouterSpec, RouterSpecBuilder, Status, DEFAULT_PROBE_TIMEOUT,
};
use egress_lab::{
    ip, workspace_binary, Lab, Snapshots, EGRESS_SOURCE4, EGRESS_SOURCE6, FALLBACK4, GATEWAY4,
    GATEWAY6, GATEWAY_LINK, MACVLAN_PARENT, ROUTER_ETH0_4, SERVICE_PORT, WEB4, WEB6, WEB_PORT,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(2);
/// A port nothing listens on in `ext`: a connection there is refused.
const CLOSED_PORT: u16 = 9;
/// A port `ext`'s extra firewall drops for the egress source: a connection there gets no
/// answer.
const FIREWALLED_PORT: u16 = 7000;
/// A port nothing redirects: only the fallback makes it reachable.
const OTHER_PORT: u16 = 9090;

fn ns(n: &egress_lab::Netns) -> Netns {
    Netns::Path(n.path().into())
}

fn source4() -> IpAddr {
    ip(EGRESS_SOURCE4)
}

fn dual_stack(lab: &Lab, name: &str) -> RouterSpecBuilder {
    lab.router_spec(name)
        .source(EGRESS_SOURCE6)
        .gateway(GATEWAY6)
        .redirect(Protocol::Tcp, SERVICE_PORT, WEB6, Some(WEB_PORT))
        .fallback(FALLBACK4)
}

/// A diagnosis from the spec, and how long it took (printed).
fn diagnose(spec: &RouterSpec, options: &DiagnoseOptions) -> (Diagnosis, Duration) {
    let started = Instant::now();
    let d = blocking::diagnose_spec(spec, options).unwrap();
    let took = started.elapsed();
    println!("diagnose_spec took {took:?}\n{d}");
    (d, took)
}

/// The diagnosis by name, and how long it took (printed).
fn diagnose_by_name(lab: &Lab, name: &str, options: &DiagnoseOptions) -> (Diagnosis, Duration) {
    let started = Instant::now();
    let d = blocking::diagnose(&ns(&lab.router), name, options).unwrap();
    let took = started.elapsed();
    println!("diagnose by name took {took:?}\n{d}");
    (d, took)
}

/// The one check called `name` whose evidence field `key` is `value`.
#[track_caller]
fn check<'a>(d: &'a Diagnosis, name: &str, key: &str, value: &str) -> &'a Check {
    let found: Vec<&Check> = d
        .named(name)
        .into_iter()
        .filter(|c| c.evidence[key].as_str() == Some(value))
        .collect();
    assert_eq!(found.len(), 1, "one {name} check with {key}={value}:\n{d}");
    found[0]
}

/// The one check called `name`.
#[track_caller]
fn only<'a>(d: &'a Diagnosis, name: &str) -> &'a Check {
    let found = d.named(name);
    assert_eq!(found.len(), 1, "one {name} check:\n{d}");
    found[0]
}

#[track_caller]
fn assert_all_ok(d: &Diagnosis) {
    let names: Vec<&str> = d.checks.iter().map(|c| c.name.as_str()).collect();
    for name in [
        "state",
        "link",
        "sysctl",
        "gateway",
        "l2_filter",
        "duplicate_address",
        "destination",
        "traffic",
    ] {
        assert!(names.contains(&name), "no {name} check:\n{d}");
    }
    assert!(
        d.checks
            .iter()
            .all(|c| c.status == Status::Ok && c.hint.is_none()),
        "not every check is ok:\n{d}"
    );
    assert!(!d.failed());
}

/// Every timing in the evidence (`*_ms`, the probes' own) is within `timeout`.
#[track_caller]
fn assert_probes_within(d: &Diagnosis, timeout: Duration) {
    fn walk(v: &Value, out: &mut Vec<(String, f64)>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match v.as_f64() {
                        Some(x) if k.ends_with("_ms") && k != "timeout_ms" => {
                            out.push((k.clone(), x))
                        }
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut times = Vec::new();
    for c in &d.checks {
        walk(&c.evidence, &mut times);
    }
    let limit = timeout.as_secs_f64() * 1000.0;
    for (k, ms) in times {
        assert!(
            ms <= limit,
            "{k} = {ms} ms, beyond the {limit} ms timeout:\n{d}"
        );
    }
}

#[test]
fn a_healthy_router_passes_every_check_within_a_second_and_is_left_unchanged() {
    let lab = Lab::with_switch();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    let spec = dual_stack(&lab, "healthy").build().unwrap();
    let _router = blocking::apply(&spec).unwrap();
    let snaps = Snapshots::take(&lab);

    let (d, took) = diagnose(&spec, &DiagnoseOptions::new());
    assert_all_ok(&d);
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(d.router, "healthy");
    // Both families were probed: ARP and neighbour discovery, each with its answer.
    let mac = lab.router.link_mac("macvlan0");
    let gw4 = check(&d, "gateway", "gateway", GATEWAY4);
    assert_eq!(gw4.evidence["probe"], "ARP request");
    assert_eq!(gw4.evidence["mac"], mac);
    assert_eq!(
        gw4.evidence["answered_by"][0]["mac"],
        lab.ext.link_mac(GATEWAY_LINK)
    );
    let gw6 = check(&d, "gateway", "gateway", GATEWAY6);
    assert_eq!(gw6.evidence["probe"], "neighbour solicitation");
    assert_eq!(
        gw6.evidence["answered_by"][0]["mac"],
        lab.ext.link_mac(GATEWAY_LINK)
    );
    check(&d, "duplicate_address", "address", &source4().to_string());
    check(
        &d,
        "duplicate_address",
        "address",
        &ip(EGRESS_SOURCE6).to_string(),
    );
    let web6 = check(&d, "destination", "target", WEB6);
    assert_eq!(web6.evidence["result"], "connected");
    assert_eq!(web6.evidence["route"]["dev"], "macvlan0");
    let link = only(&d, "link");
    assert_eq!(link.evidence["parent"]["name"], "ext0");
    assert_eq!(
        link.evidence["parent"]["netns"],
        lab.node.path().to_str().unwrap()
    );
    assert_probes_within(&d, DEFAULT_PROBE_TIMEOUT);

    // By name, from what the kernel holds: the same checks, as healthy.
    let (by_name, took) = diagnose_by_name(&lab, "healthy", &DiagnoseOptions::new());
    assert_all_ok(&by_name);
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let names = |d: &Diagnosis| -> Vec<(String, String)> {
        d.checks
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.summary.split(':').next().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(names(&by_name).len(), names(&d).len(), "{by_name}\n{d}");
    assert_eq!(only(&by_name, "state").evidence["compared_with"], "records");

    // The JSON form.
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["router"], "healthy");
    for c in json["checks"].as_array().unwrap() {
        let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["evidence", "hint", "name", "status", "summary"],
            "{c}"
        );
        assert_eq!(c["status"], "ok");
        assert!(c["evidence"].is_object(), "{c}");
    }
    let back: Diagnosis = serde_json::from_value(json).unwrap();
    assert_eq!(back, d);

    // Nothing changed: neither the router's namespace nor its parent's.
    snaps.assert_restored("after two diagnoses");
}

/// The MACs the gateway's neighbour table holds for the egress addresses, IPv4 then IPv6.
fn gateway_entries(lab: &Lab) -> [Option<String>; 2] {
    [source4(), ip(EGRESS_SOURCE6)].map(|a| lab.ext.neighbour_mac(a))
}

/// A standby of the router `spec` builds beside the lab's router (applied by the caller,
/// active): its own namespace, a macvlan on the same parent (one segment), the same egress
/// addresses. Its namespace, spec and handle (drop the handle first).
fn standby_beside(spec: RouterSpecBuilder) -> (egress_lab::Netns, RouterSpec, Router) {
    let beside = egress_lab::Netns::new("standby");
    beside.sysctl_set("net.ipv6.conf.default.accept_dad", "0");
    // Its internal link: one end of a veth pair whose other end stays beside it.
    beside.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
    ]);
    beside.ip(&["link", "set", "eth0", "up"]);
    let standby = spec.netns(ns(&beside)).build().unwrap();
    let router = blocking::apply_as(&standby, Role::Standby).unwrap();
    (beside, standby, router)
}

/// Router "pair" of [`dual_stack`] on a macvlan in bridge mode: beside it, a standby's
/// macvlan on the same parent reaches it as two nodes on one segment do (in private mode their
/// parent keeps them apart).
fn bridged_pair(lab: &Lab) -> RouterSpecBuilder {
    dual_stack(lab, "pair")
        .macvlan(MACVLAN_PARENT, MacvlanMode::Bridge)
        .parent_netns(ns(&lab.node))
}

/// `egress-router diagnose --name pair` of the standby in `beside`, from the node, with
/// `more` arguments: its exit code and stdout.
fn diagnose_pair_beside(
    lab: &Lab,
    beside: &egress_lab::Netns,
    more: &[&str],
) -> (Option<i32>, String) {
    let path = beside.path().to_str().unwrap();
    let mut args = vec!["diagnose", "--netns", path, "--name", "pair"];
    args.extend_from_slice(more);
    run(&lab.node, &args, &[])
}

/// A healthy standby beside the active router passes its diagnosis: `egress-router diagnose`
/// exits 0. Its destinations are not tried, and say why: a standby holds no egress address
/// and no default route to try them from (its active instance is the one to diagnose for
/// them).
#[test]
fn diagnose_on_a_healthy_standby_exits_0_its_destinations_not_tried() {
    let lab = Lab::new();
    let _active = blocking::apply(&bridged_pair(&lab).build().unwrap()).unwrap();
    let (beside, standby, _standby) = standby_beside(bridged_pair(&lab));
    let (code, out) = diagnose_pair_beside(&lab, &beside, &[]);
    assert_eq!(code, Some(0), "{out}");
    let d = blocking::diagnose_spec(&standby, &DiagnoseOptions::new()).unwrap();
    assert!(d.checks.iter().all(|c| c.status != Status::Fail), "{d}");
    let destinations = d.named("destination");
    assert!(!destinations.is_empty(), "{d}");
    for c in destinations {
        assert_eq!(c.status, Status::Skipped, "{d}");
        assert_eq!(c.evidence["role"], "standby", "{d}");
        assert!(c.summary.contains("is a standby"), "{}", c.summary);
    }
}

/// On a standby the active instance answering for the egress addresses is what a healthy
/// pair looks like: `duplicate_address` is ok and names the active router's MAC, both
/// families, from the spec, by name and through `egress-router diagnose --json`; the active
/// router hears nobody else. Once the active router is demoted too, nobody holds the
/// addresses: the standby warns (no active instance). Both macvlans in bridge mode: they reach
/// each other as two nodes on one segment do (in private mode their parent keeps them apart).
#[test]
fn on_a_standby_duplicate_address_names_the_active_instance_and_warns_when_there_is_none() {
    let lab = Lab::new();
    let bridged = || bridged_pair(&lab);
    let spec = bridged().build().unwrap();
    let active = blocking::apply(&spec).unwrap();
    let (beside, standby, _standby) = standby_beside(bridged());
    let active_mac = lab.router.link_mac("macvlan0");
    let options = DiagnoseOptions::new();
    let of_standby = || {
        [
            blocking::diagnose_spec(&standby, &options).unwrap(),
            blocking::diagnose(&ns(&beside), "pair", &options).unwrap(),
        ]
    };
    let sources = [EGRESS_SOURCE4, EGRESS_SOURCE6].map(|s| ip(s).to_string());

    for d in of_standby() {
        for source in &sources {
            let c = check(&d, "duplicate_address", "address", source);
            assert_eq!(c.status, Status::Ok, "{d}");
            assert_eq!(c.evidence["role"], "standby", "{d}");
            assert_eq!(c.evidence["answered_by"][0]["mac"], active_mac, "{d}");
            assert_eq!(c.evidence["answered_by"].as_array().unwrap().len(), 1);
            assert!(c.summary.contains(&active_mac), "{}", c.summary);
        }
    }
    let (_, out) = diagnose_pair_beside(&lab, &beside, &["--json"]);
    let json: Value = serde_json::from_str(&out).unwrap();
    let dup: Vec<&Value> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "duplicate_address")
        .collect();
    assert_eq!(dup.len(), 2, "{out}");
    assert!(dup.iter().all(|c| c["status"] == "ok"), "{out}");
    // The active router: the standby does not answer, nobody else does.
    let d = blocking::diagnose_spec(&spec, &options).unwrap();
    for source in &sources {
        let c = check(&d, "duplicate_address", "address", source);
        assert_eq!(c.status, Status::Ok, "{d}");
        assert_eq!(c.evidence["role"], "active", "{d}");
        assert!(c.evidence.get("answered_by").is_none(), "{d}");
    }

    // Both standbys: nobody holds the egress identity.
    blocking::demote_router(&active).unwrap();
    for d in of_standby() {
        for source in &sources {
            let c = check(&d, "duplicate_address", "address", source);
            assert_eq!(c.status, Status::Warn, "{d}");
            assert!(c.summary.contains("no instance holds"), "{}", c.summary);
            assert!(c.evidence.get("answered_by").is_none(), "{d}");
        }
    }
}

/// diagnose claims nothing. A standby beside the active router (its own namespace, a macvlan
/// on the same parent, the same egress addresses) does not hold the egress identity: it asks
/// the gateway from the unspecified address (an ARP probe, a DAD solicitation), so after its
/// diagnosis — from the spec and by name — the gateway's neighbour entries for the egress
/// addresses still point to the active router, and the diagnosis still says that the gateway
/// answers. The active router asks from the egress addresses it holds; the entries stay its
/// own too.
#[test]
fn diagnose_moves_no_neighbour_entry_of_the_gateway_on_a_standby_or_the_active_router() {
    let lab = Lab::new();
    let spec = dual_stack(&lab, "pair").build().unwrap();
    let _active = blocking::apply(&spec).unwrap();
    let (beside, standby, _standby) = standby_beside(dual_stack(&lab, "pair"));

    // The gateway reaches the egress addresses at the active router's MAC.
    for a in [source4(), ip(EGRESS_SOURCE6)] {
        assert!(egress_lab::ping(&lab.ext, a), "ping {a}");
    }
    let active_mac = Some(lab.router.link_mac("macvlan0"));
    let want = [active_mac.clone(), active_mac];
    assert_eq!(gateway_entries(&lab), want);

    let options = DiagnoseOptions::new();
    // Each diagnosis runs right before its own look at the gateway's table: a later one
    // (the active router's asks from the egress addresses) would put the entries back.
    type Diagnose<'a> = Box<dyn Fn() -> egress_core::Result<Diagnosis> + 'a>;
    let diagnoses: [(&str, Diagnose); 3] = [
        (
            "the standby",
            Box::new(|| blocking::diagnose_spec(&standby, &options)),
        ),
        (
            "the standby, by name",
            Box::new(|| blocking::diagnose(&ns(&beside), "pair", &options)),
        ),
        (
            "the active router",
            Box::new(|| blocking::diagnose_spec(&spec, &options)),
        ),
    ];
    for (who, diagnose) in diagnoses {
        let d = diagnose().unwrap();
        assert_eq!(gateway_entries(&lab), want, "after diagnosing {who}:\n{d}");
        let gateway_mac = lab.ext.link_mac(GATEWAY_LINK);
        let active = who == "the active router";
        for (gateway, probe, sender) in [
            (
                GATEWAY4,
                ["ARP probe (sender 0.0.0.0)", "ARP request"],
                EGRESS_SOURCE4,
            ),
            (
                GATEWAY6,
                ["DAD solicitation (source ::)", "neighbour solicitation"],
                EGRESS_SOURCE6,
            ),
        ] {
            let c = check(&d, "gateway", "gateway", gateway);
            assert_eq!(c.status, Status::Ok, "{who}:\n{d}");
            assert_eq!(c.evidence["answered_by"][0]["mac"], gateway_mac, "{who}");
            assert_eq!(c.evidence["probe"], probe[usize::from(active)], "{who}");
            let sender = active.then(|| ip(sender).to_string());
            assert_eq!(c.evidence["sender"].as_str(), sender.as_deref(), "{who}");
        }
    }
}

#[test]
fn frames_from_the_macvlan_mac_dropped_by_the_switch_fail_l2_filter_with_the_platform_fix() {
    let lab = Lab::with_switch();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    let spec = lab.router_spec("filtered").build().unwrap();
    let _router = blocking::apply(&spec).unwrap();
    let mac = lab.router.link_mac("macvlan0");
    // What VMware without Forged transmits, or OpenStack port security, does.
    lab.switch_drop_from(&mac);
    let snaps = Snapshots::take(&lab);

    let (d, took) = diagnose(&spec, &DiagnoseOptions::new());
    assert!(d.failed());
    let gateway = only(&d, "gateway");
    assert_eq!(gateway.status, Status::Fail, "{d}");
    assert!(gateway.hint.as_ref().unwrap().contains("l2_filter"), "{d}");
    let l2 = only(&d, "l2_filter");
    assert_eq!(l2.status, Status::Fail, "{d}");
    assert!(l2.summary.contains(&mac), "{}", l2.summary);
    assert!(l2.summary.contains("dropped"), "{}", l2.summary);
    let hint = l2.hint.as_ref().unwrap();
    for words in [
        "Promiscuous mode",
        "MAC address changes",
        "Forged transmits",
        "allowed address pair",
        "port security",
        "No Network Filter",
        "port-security MAC limit",
        &mac,
    ] {
        assert!(hint.contains(words), "hint lacks {words:?}: {hint}");
    }
    assert_eq!(
        l2.evidence["parent_answered_by"][0]["mac"],
        lab.ext.link_mac(GATEWAY_LINK)
    );
    assert_eq!(l2.evidence["parent"]["mac"], lab.node.link_mac("ext0"));
    // The state is fine: nothing in the router is wrong, the network is.
    assert_eq!(only(&d, "state").status, Status::Ok);
    assert_eq!(only(&d, "link").status, Status::Ok);
    // Two rounds (the macvlan's, then the parent's), each bounded by the timeout.
    assert!(
        took < 2 * DEFAULT_PROBE_TIMEOUT + Duration::from_millis(700),
        "{took:?}"
    );
    assert_probes_within(&d, DEFAULT_PROBE_TIMEOUT);
    snaps.assert_restored("after the diagnosis");

    // By name the parent is found from the macvlan's link-netnsid: the same verdict.
    let (by_name, _) = diagnose_by_name(&lab, "filtered", &DiagnoseOptions::new());
    let l2 = only(&by_name, "l2_filter");
    assert_eq!(l2.status, Status::Fail, "{by_name}");
    assert!(l2.summary.contains(&mac), "{}", l2.summary);
}

#[test]
fn a_gateway_that_is_gone_fails_and_the_parent_gets_no_answer_either() {
    let lab = Lab::new();
    let spec = lab.router_spec("no-gw").build().unwrap();
    let _router = blocking::apply(&spec).unwrap();
    lab.ext.ip(&[
        "addr",
        "del",
        &format!("{GATEWAY4}/24"),
        "dev",
        GATEWAY_LINK,
    ]);

    let (d, _) = diagnose(&spec, &DiagnoseOptions::new());
    let gateway = only(&d, "gateway");
    assert_eq!(gateway.status, Status::Fail, "{d}");
    assert!(gateway.summary.contains("did not answer"), "{d}");
    assert!(
        gateway
            .hint
            .as_ref()
            .unwrap()
            .contains("node's own link either"),
        "{d}"
    );
    let l2 = only(&d, "l2_filter");
    assert_eq!(l2.status, Status::Warn, "{d}");
    assert!(l2.summary.contains("either"), "{}", l2.summary);
    assert!(l2.summary.contains("ext0"), "{}", l2.summary);
    // The destination gets no answer, and its hint points at the gateway.
    let web = check(&d, "destination", "target", WEB4);
    assert_eq!(web.evidence["result"], "no_answer", "{d}");
    assert!(web.hint.as_ref().unwrap().contains("see gateway"), "{d}");
}

#[test]
fn another_host_holding_the_egress_ip_fails_duplicate_address_with_its_mac() {
    let lab = Lab::with_switch();
    let spec = dual_stack(&lab, "dup").build().unwrap();
    let _router = blocking::apply(&spec).unwrap();
    let other = lab.attach_host("other");
    other.ip(&["addr", "add", EGRESS_SOURCE4, "dev", "eth0"]);
    other.ip(&["addr", "add", EGRESS_SOURCE6, "dev", "eth0", "nodad"]);
    let other_mac = other.link_mac("eth0");

    let (d, _) = diagnose(&spec, &DiagnoseOptions::new());
    for source in [EGRESS_SOURCE4, EGRESS_SOURCE6] {
        let c = check(&d, "duplicate_address", "address", &ip(source).to_string());
        assert_eq!(c.status, Status::Fail, "{d}");
        assert!(c.summary.contains(&other_mac), "{}", c.summary);
        assert_eq!(c.evidence["answered_by"][0]["mac"], other_mac);
        assert!(c.hint.as_ref().unwrap().contains(&other_mac));
    }
    let v6 = check(
        &d,
        "duplicate_address",
        "address",
        &ip(EGRESS_SOURCE6).to_string(),
    );
    assert_eq!(v6.evidence["probe"], "DAD solicitation (source ::)");
}

#[test]
fn the_probe_at_apply_fails_on_a_conflict_and_leaves_the_namespaces_exactly_as_they_were() {
    let lab = Lab::with_switch();
    let other = lab.attach_host("other");
    other.ip(&["addr", "add", EGRESS_SOURCE4, "dev", "eth0"]);
    let other_mac = other.link_mac("eth0");
    let snaps = Snapshots::take(&lab);

    // The JSON form asks for it.
    let mut json = lab.router_spec("probed").build().unwrap().to_json_value();
    json["probe"] = serde_json::json!({"timeout_ms": 200});
    let spec = RouterSpec::from_json_value(json).unwrap();
    assert_eq!(spec.probe(), Some(Duration::from_millis(200)));
    let e = blocking::apply(&spec).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let text = e.to_string();
    assert!(text.starts_with("sources[0] `203.0.113.99/24`"), "{text}");
    assert!(text.contains(&other_mac), "{text}");
    snaps.assert_restored("after the refused apply");

    // Without the other host, the same apply goes through, after the probe's wait.
    other.ip(&["addr", "del", EGRESS_SOURCE4, "dev", "eth0"]);
    let started = Instant::now();
    let router = blocking::apply(&spec).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    blocking::teardown(router).unwrap();
    snaps.assert_restored("after teardown");

    // An adopted link: the probe goes out of it, so it must be up.
    lab.make_sdn_macvlan("macvlan0");
    let snaps = Snapshots::take(&lab);
    let adopt = RouterSpec::builder("probed")
        .netns(ns(&lab.router))
        .adopt("macvlan0")
        .source(EGRESS_SOURCE4)
        .gateway(GATEWAY4)
        .probe(Duration::from_millis(200))
        .build()
        .unwrap();
    let e = blocking::apply(&adopt).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.to_string().contains("which is down"), "{e}");
    snaps.assert_restored("after the refused apply on a down link");
    lab.router.ip(&["link", "set", "macvlan0", "up"]);
    other.ip(&["addr", "add", EGRESS_SOURCE4, "dev", "eth0"]);
    let snaps = Snapshots::take(&lab);
    let e = blocking::apply(&adopt).unwrap_err();
    assert!(e.to_string().contains(&other_mac), "{e}");
    snaps.assert_restored("after the refused apply on the adopted link");
}

#[test]
fn a_refused_destination_and_a_firewalled_one_are_told_apart() {
    let lab = Lab::new();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    lab.ext.nft(&format!(
        "table inet egt_drop {{
            chain input {{
                type filter hook input priority -10; policy accept;
                ip daddr {FALLBACK4} tcp dport {FIREWALLED_PORT} ip saddr {} drop
            }}
        }}",
        source4()
    ));
    let spec = lab
        .router_spec("dests")
        .redirect(Protocol::Tcp, 81, WEB4, Some(CLOSED_PORT))
        .redirect(Protocol::Tcp, 82, FALLBACK4, Some(FIREWALLED_PORT))
        .redirect(Protocol::Udp, 53, FALLBACK4, None)
        .fallback(FALLBACK4)
        .build()
        .unwrap();
    let _router = blocking::apply(&spec).unwrap();
    let timeout = Duration::from_millis(250);
    let options = DiagnoseOptions::new()
        .timeout(timeout)
        .fallback_port(WEB_PORT);

    let (d, took) = diagnose(&spec, &options);
    let by_port = |port: u16| -> &Check {
        let found: Vec<&Check> = d
            .named("destination")
            .into_iter()
            .filter(|c| c.evidence["port"] == port && c.evidence["fallback"] == false)
            .collect();
        assert_eq!(found.len(), 1, "{d}");
        found[0]
    };
    let served = by_port(WEB_PORT);
    assert_eq!(served.status, Status::Ok);
    assert_eq!(served.evidence["result"], "connected");
    assert_eq!(
        served.evidence["redirects"],
        serde_json::json!(["tcp/80", "tcp/8080"])
    );
    let refused = by_port(CLOSED_PORT);
    assert_eq!(refused.status, Status::Fail);
    assert_eq!(refused.evidence["result"], "refused");
    assert!(refused.summary.contains("refused"), "{}", refused.summary);
    assert!(refused.hint.as_ref().unwrap().contains("nothing listens"));
    let dropped = by_port(FIREWALLED_PORT);
    assert_eq!(dropped.status, Status::Fail);
    assert_eq!(dropped.evidence["result"], "no_answer");
    assert!(
        dropped.summary.contains("did not answer"),
        "{}",
        dropped.summary
    );
    assert!(dropped.hint.as_ref().unwrap().contains("firewall"));
    // It waited for the answer until the deadline the probes share (under load its connect may
    // start a little after the others).
    assert!(dropped.evidence["connect_ms"].as_f64().unwrap() >= 150.0);
    // UDP: only the route.
    let udp = by_port(53);
    assert_eq!(udp.status, Status::Ok);
    assert_eq!(udp.evidence["probe"], "route");
    assert!(udp.summary.contains("only the route"), "{}", udp.summary);
    // The fallback, at the port asked for.
    let fallback: Vec<&Check> = d
        .named("destination")
        .into_iter()
        .filter(|c| c.evidence["fallback"] == true)
        .collect();
    assert_eq!(fallback.len(), 1, "{d}");
    assert_eq!(fallback[0].evidence["result"], "connected", "{d}");
    // The no-answer probe waited the timeout, side by side with the others: one timeout.
    assert!(took < timeout + Duration::from_millis(600), "{took:?}");
    assert_probes_within(&d, timeout + Duration::from_millis(20));
}

#[test]
fn traffic_counts_exactly_the_connections_made_per_redirect() {
    let lab = Lab::new();
    let web = lab.ext.serve_http(&[WEB_PORT, OTHER_PORT]);
    lab.ext.nft(&format!(
        "table inet egt_drop {{
            chain input {{
                type filter hook input priority -10; policy accept;
                tcp dport {FIREWALLED_PORT} drop
            }}
        }}"
    ));
    let spec = lab
        .router_spec("traffic")
        .redirect(Protocol::Tcp, 82, WEB4, Some(FIREWALLED_PORT))
        .fallback(FALLBACK4)
        .build()
        .unwrap();
    let _router = blocking::apply(&spec).unwrap();
    let (before, _) = diagnose(&spec, &DiagnoseOptions::new());
    for c in before.named("traffic") {
        assert_eq!(c.evidence["connections"], 0, "{before}");
        assert!(c.summary.contains("no connection since apply"), "{before}");
    }

    let get = |port: u16| lab.client.http_get(ip(ROUTER_ETH0_4), port, T);
    for port in [SERVICE_PORT, SERVICE_PORT, WEB_PORT, OTHER_PORT] {
        get(port).unwrap();
    }
    // Used, but nothing comes back.
    assert!(lab
        .client
        .http_get(ip(ROUTER_ETH0_4), 82, Duration::from_millis(500))
        .is_err());
    // Four answered (the diagnoses' own probes connect to the web server too, and count in
    // no redirect).
    assert!(web.peers().len() >= 4);

    let (d, _) = diagnose(&spec, &DiagnoseOptions::new());
    let count = |redirect: &str| -> &Check { check(&d, "traffic", "redirect", redirect) };
    let service = count(&format!("tcp/{SERVICE_PORT}"));
    assert_eq!(service.evidence["connections"], 2, "{d}");
    assert!(
        service.evidence["packets"].as_u64().unwrap() >= 2 * 5,
        "{d}"
    );
    assert!(service.evidence["bytes"].as_u64().unwrap() > 0, "{d}");
    assert_eq!(service.evidence["tracked"], 2, "{d}");
    assert_eq!(service.evidence["unreplied"], 0, "{d}");
    assert_eq!(service.status, Status::Ok);
    assert_eq!(count(&format!("tcp/{WEB_PORT}")).evidence["connections"], 1);
    let fallback = check(&d, "traffic", "fallback", FALLBACK4);
    assert_eq!(fallback.evidence["connections"], 1, "{d}");
    assert_eq!(fallback.status, Status::Ok);
    let silent = count("tcp/82");
    assert_eq!(silent.evidence["connections"], 1, "{d}");
    assert_eq!(silent.evidence["unreplied"], 1, "{d}");
    assert_eq!(silent.status, Status::Warn, "{d}");
    assert!(silent.summary.contains("none of those got a reply"), "{d}");
}

#[test]
fn drift_fails_state_and_lists_it() {
    let lab = Lab::new();
    let spec = lab.router_spec("drifted").build().unwrap();
    let _router = blocking::apply(&spec).unwrap();
    lab.router.ip(&["route", "del", "default"]);
    let route = format!("default via {GATEWAY4} dev macvlan0 proto 158");

    let (d, _) = diagnose(&spec, &DiagnoseOptions::new());
    let state = only(&d, "state");
    assert_eq!(state.status, Status::Fail, "{d}");
    assert!(state.summary.contains(&route), "{}", state.summary);
    assert_eq!(state.evidence["drift"][0]["kind"], "route_missing", "{d}");
    assert!(state.hint.as_ref().unwrap().contains("ensure"));
    let web = check(&d, "destination", "target", WEB4);
    assert_eq!(web.status, Status::Fail, "{d}");
    assert!(web.summary.contains("no route"), "{d}");

    let (by_name, _) = diagnose_by_name(&lab, "drifted", &DiagnoseOptions::new());
    let state = only(&by_name, "state");
    assert_eq!(state.status, Status::Fail, "{by_name}");
    assert!(state.summary.contains(&route), "{}", state.summary);

    // A router that is not there: state fails and says so; nothing else is probed.
    let (none, _) = diagnose_by_name(&lab, "nonesuch", &DiagnoseOptions::new());
    assert_eq!(only(&none, "state").status, Status::Fail);
    assert!(
        none.checks[1..].iter().all(|c| c.status == Status::Skipped),
        "{none}"
    );
}

#[test]
fn every_probe_is_bounded_by_the_timeout() {
    // The worst case: the gateway silent (so the parent is asked too) and a destination that
    // never answers. With a long timeout, the two rounds show.
    let lab = Lab::with_switch();
    let spec = lab.router_spec("bounded").build().unwrap();
    let _router = blocking::apply(&spec).unwrap();
    lab.ext.ip(&[
        "addr",
        "del",
        &format!("{GATEWAY4}/24"),
        "dev",
        GATEWAY_LINK,
    ]);
    for timeout in [Duration::from_millis(100), Duration::from_millis(700)] {
        let (d, took) = diagnose(&spec, &DiagnoseOptions::new().timeout(timeout));
        assert_eq!(only(&d, "gateway").status, Status::Fail, "{d}");
        assert_eq!(only(&d, "l2_filter").status, Status::Warn, "{d}");
        assert_eq!(
            check(&d, "destination", "target", WEB4).evidence["result"],
            "no_answer"
        );
        assert!(took >= 2 * timeout, "{took:?}");
        assert!(took < 2 * timeout + Duration::from_millis(500), "{took:?}");
        assert_probes_within(&d, timeout + Duration::from_millis(20));
        for c in &d.checks {
            if let Some(t) = c.evidence.get("timeout_ms") {
                assert_eq!(t, timeout.as_millis() as u64, "{c:?}");
            }
        }
    }
    for bad in [Duration::ZERO, Duration::from_secs(11)] {
        let e = blocking::diagnose_spec(&spec, &DiagnoseOptions::new().timeout(bad)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    }
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

/// `ip netns exec NS egress-router ARGS` with exactly `vars` in its environment: exit code and
/// stdout.
fn run(ns: &egress_lab::Netns, args: &[&str], vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(router_binary())
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!(
        "egress-router {}: {:?}\n{stdout}{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), stdout)
}

#[test]
fn a_router_applied_by_another_process_is_diagnosed_by_name() {
    let lab = Lab::with_switch();
    let _web = lab.ext.serve_http(&[WEB_PORT]);
    let node = lab.node.path().to_str().unwrap().to_string();
    let destination = format!("{SERVICE_PORT} tcp {WEB4} {WEB_PORT}\n{FALLBACK4}");
    let vars = [
        ("EGRESS_SOURCE", EGRESS_SOURCE4),
        ("EGRESS_GATEWAY", GATEWAY4),
        ("EGRESS_DESTINATION", destination.as_str()),
        ("EGRESS_ROUTER_MODE", "init"),
        ("EGRESS_ROUTER_NAME", "other"),
        ("EGRESS_MACVLAN_PARENT", "ext0"),
        ("EGRESS_MACVLAN_PARENT_NETNS", node.as_str()),
    ];
    assert_eq!(run(&lab.router, &[], &vars).0, Some(0));
    let snaps = Snapshots::take(&lab);

    // The library, by name, from this process.
    let (d, took) = diagnose_by_name(&lab, "other", &DiagnoseOptions::new());
    assert_all_ok(&d);
    assert!(took < Duration::from_secs(1), "{took:?}");

    // The binary, from the node, by name: JSON, exit 0.
    let router = lab.router.path().to_str().unwrap();
    let by_name = ["diagnose", "--netns", router, "--name", "other"];
    let (code, out) = run(&lab.node, &[&by_name[..], &["--json"]].concat(), &[]);
    assert_eq!(code, Some(0));
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["router"], "other");
    assert!(json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["status"] == "ok"));
    // Inside the pod, with its EGRESS_* variables: the spec comes from them.
    let (code, out) = run(&lab.router, &["diagnose"], &vars);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("matches its spec"), "{out}");
    snaps.assert_restored("after three diagnoses");

    // Broken: exit 6, one line per check, the failing ones with their hint.
    lab.switch_drop_from(&lab.router.link_mac("macvlan0"));
    let (code, out) = run(
        &lab.node,
        &[&by_name[..], &["--timeout-ms", "200"]].concat(),
        &[],
    );
    assert_eq!(code, Some(6), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("router other: "), "{out}");
    let l2 = lines
        .iter()
        .find(|l| l.trim_start().starts_with("fail    l2_filter"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(l2.contains("-- hint: let frames from MAC"), "{l2}");
    assert!(
        l2.contains("within 200 ms") || out.contains("within 200 ms"),
        "{out}"
    );
    assert_eq!(
        lines.len(),
        1 + serde_json::from_str::<Value>(&out_json(&lab, &by_name)).unwrap()["checks"]
            .as_array()
            .unwrap()
            .len(),
        "{out}"
    );
    let (code, _) = run(&lab.router, &["teardown", "--name", "other"], &[]);
    assert_eq!(code, Some(0));
}

/// The diagnosis's JSON from the binary (with the default timeout).
fn out_json(lab: &Lab, args: &[&str]) -> String {
    run(&lab.node, &[args, &["--json"]].concat(), &[]).1
}
