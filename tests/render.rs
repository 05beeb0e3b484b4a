//! `egress-router render` (egress_openshift::render) against what uses its output: the
//! NetworkAttachmentDefinition's configuration of each EgressRouter example of OpenShift's
//! documentation (egress-openshift/src/render/examples/: rules and a fallback, a fallback
//! only, IPv6) handed to the `egress-cni` binary's ADD in the lab, as Multus hands it, and real
//! TCP from the client through the router to the destinations the object names; and `--ha`
//! compared with `deploy/kubernetes/egress-router-ha.yaml`, which must have its shape.
//!
//! (The manifests are validated against Kubernetes' schemas by scripts/validate-manifests.py,
//! run by scripts/test-pkg.sh on what `egress-router render` prints; the HA pair runs under
//! podman in tests/ha_pods.rs.)

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use egress_lab::{
    ip, workspace_binary, Lab, Snapshots, EGRESS_SOURCE4, EGRESS_SOURCE6, FALLBACK4, FALLBACK6,
    MACVLAN_PARENT, ROUTER_ETH0_4, ROUTER_ETH0_6, WEB4, WEB6,
};
use egress_openshift::render::{render, RenderOptions, Rendered};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(2);
/// A port no rule names: only a fallback makes it reachable.
const OTHER_PORT: u16 = 9090;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

fn example(file: &str) -> String {
    let path = repo()
        .join("egress-openshift/src/render/examples")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rendered(object: &str, options: &RenderOptions) -> Rendered {
    render(object, options).unwrap_or_else(|e| panic!("{e}"))
}

/// The NetworkAttachmentDefinition's `spec.config`, as JSON.
fn nad_config(r: &Rendered) -> Value {
    let nad = r
        .documents
        .iter()
        .find(|d| d["kind"] == "NetworkAttachmentDefinition")
        .expect("a NetworkAttachmentDefinition");
    serde_json::from_str(nad["spec"]["config"].as_str().unwrap()).unwrap()
}

/// `egress-cni` with `command` and `config`, from the node's namespace as a runtime runs it
/// (Multus, for the pod `lab.router`, interface `net1`): its stdout.
fn egress_cni(lab: &Lab, command: &str, config: &Value) -> String {
    let binary = workspace_binary(
        "egress-cni",
        &["egress-cni", "egress-openshift", "egress-core"],
        "EGRESS_CNI_BIN",
    );
    let sandbox = lab.router.path().to_str().unwrap();
    lab.node.run_cni_plugin(
        &binary,
        &[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "render-test-pod"),
            ("CNI_NETNS", sandbox),
            ("CNI_IFNAME", "net1"),
            ("CNI_PATH", "/opt/cni/bin"),
        ],
        &config.to_string(),
    )
}

/// Renders `file`, attaches the lab's router pod with its network (the master set to the
/// lab's node link: the documentation's objects name none, and the lab's node has no default
/// route to find one by), checks each `(port, destination, destination port)` with real TCP
/// from the client to `router`, and detaches it again: the pod exactly as before.
fn attach_and_connect(
    file: &str,
    router: &str,
    source: &str,
    paths: &[(u16, &str, u16)],
    check: impl FnOnce(&Lab),
) {
    let r = rendered(&example(file), &RenderOptions::default());
    let mut config = nad_config(&r);
    // The configuration egress-cni's own parser accepts, mapped onto a router spec.
    let conf = egress_cni::parse_config(config.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(conf.name(), r.documents[0]["metadata"]["name"]);
    config["interfaceArgs"]["master"] = json!(MACVLAN_PARENT);

    let lab = Lab::new();
    let web = lab.ext.serve_http(&[80, 443, 8080, OTHER_PORT]);
    let snaps = Snapshots::take(&lab);
    let result: Value = serde_json::from_str(&egress_cni(&lab, "ADD", &config)).unwrap();
    assert_eq!(result["interfaces"][0]["name"], "net1", "{result}");
    for &(port, to, to_port) in paths {
        let body = lab
            .client
            .http_get(ip(router), port, T)
            .unwrap_or_else(|e| panic!("{file}: port {port}: {e}"));
        assert_eq!(
            body.trim(),
            format!("peer={} port={to_port}", ip(source)),
            "{file}: port {port}"
        );
        assert!(lab.router.dnat_seen(port, to), "{file}: {port} -> {to}");
    }
    assert_eq!(web.peers().len(), paths.len());
    assert!(web.peers().iter().all(|p| *p == ip(source)));
    check(&lab);
    assert_eq!(egress_cni(&lab, "DEL", &config), "");
    snaps.assert_restored(file);
}

#[test]
fn documentation_examples_through_egress_cni_route_the_clients_traffic_where_they_say() {
    // The documentation's rules (UDP 80, TCP 8080 -> 80, TCP 8443 -> 443) and a fallback.
    attach_and_connect(
        "redirect-and-fallback.yaml",
        ROUTER_ETH0_4,
        EGRESS_SOURCE4,
        &[
            (8080, WEB4, 80),
            (8443, WEB4, 443),
            (80, FALLBACK4, 80), // TCP 80: only UDP 80 has a rule
            (OTHER_PORT, FALLBACK4, OTHER_PORT),
        ],
        |lab| {
            // UDP 80 is redirected too: the router's DNAT map holds it (no UDP server here).
            let ruleset = lab.router.exec(&["nft", "list", "ruleset"]);
            assert!(
                ruleset
                    .lines()
                    .any(|l| l.contains("udp . 80 ") && l.contains(": 198.51.100.25 . 80")),
                "{ruleset}"
            );
        },
    );
    // A fallback only: every port goes there.
    attach_and_connect(
        "fallback-only.yaml",
        ROUTER_ETH0_4,
        EGRESS_SOURCE4,
        &[
            (80, FALLBACK4, 80),
            (443, FALLBACK4, 443),
            (OTHER_PORT, FALLBACK4, OTHER_PORT),
        ],
        |_| {},
    );
    // IPv6: a rule and a fallback.
    attach_and_connect(
        "ipv6.yaml",
        ROUTER_ETH0_6,
        EGRESS_SOURCE6,
        &[(80, WEB6, 8080), (OTHER_PORT, FALLBACK6, OTHER_PORT)],
        |_| {},
    );
}

/// The EgressRouter `deploy/kubernetes/egress-router-ha.yaml` is `render --ha` of.
const HA_OBJECT: &str = "
apiVersion: network.operator.openshift.io/v1
kind: EgressRouter
metadata: {name: egress-3, namespace: egress}
spec:
  addresses: [{ip: 203.0.113.99/24, gateway: 203.0.113.1}]
  mode: Redirect
  networkInterface: {macvlan: {mode: Private, master: ens4}}
  redirect:
    redirectRules:
    - {destinationIP: 198.51.100.25, port: 80, protocol: TCP, targetPort: 8080}
    - {destinationIP: 198.51.100.25, port: 8443, protocol: TCP, targetPort: 443}
    fallbackIP: 198.51.100.9
";

/// The documents of a YAML stream, as JSON (a NetworkAttachmentDefinition's config string
/// parsed, so that its layout does not count).
fn documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| {
            let mut v: Value = serde::Deserialize::deserialize(d).unwrap();
            if let Some(config) = v["spec"]["config"].as_str() {
                v["spec"]["config"] = serde_json::from_str(config).unwrap();
            }
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn render_ha_has_the_shape_of_the_ha_manifest() {
    let path = repo().join("deploy/kubernetes/egress-router-ha.yaml");
    let manifest = documents(&std::fs::read_to_string(&path).unwrap());
    let ha = RenderOptions {
        ha: true,
        ..RenderOptions::default()
    };
    let ours = documents(&rendered(HA_OBJECT, &ha).to_yaml());
    assert_eq!(manifest.len(), ours.len());
    for (m, r) in manifest.iter().zip(&ours) {
        assert_eq!(
            m,
            r,
            "{} {} differs from render --ha",
            path.display(),
            m["kind"]
        );
    }
}
