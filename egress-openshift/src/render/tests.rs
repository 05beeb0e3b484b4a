//! `render` of the documentation's example objects, of broken ones, and the shape of what it
//! writes. (tests/render.rs validates the manifests, hands the NetworkAttachmentDefinition's
//! configuration to egress-cni in the lab and compares `--ha` with
//! deploy/kubernetes/egress-router-ha.yaml.)

use serde_json::{json, Value};

use super::*;

const REDIRECT_AND_FALLBACK: &str = include_str!("examples/redirect-and-fallback.yaml");
const FALLBACK_ONLY: &str = include_str!("examples/fallback-only.yaml");
const IPV6: &str = include_str!("examples/ipv6.yaml");

/// "Example egress router specification" of OpenShift's documentation ("Deploying an egress
/// router pod in redirect mode"), as it is printed there (its addresses too: nothing here
/// reaches a network).
const DOCS_EXAMPLE: &str = r#"apiVersion: network.operator.openshift.io/v1
kind: EgressRouter
metadata:
  name: egress-router-redirect
spec:
  networkInterface: {
    macvlan: {
      mode: "Bridge"
    }
  }
  addresses: [
    {
      ip: "192.168.12.99/24",
      gateway: "192.168.12.1"
    }
  ]
  mode: Redirect
  redirect: {
    redirectRules: [
      {
        destinationIP: "10.0.0.99",
        port: 80,
        protocol: UDP
      },
      {
        destinationIP: "203.0.113.26",
        port: 8080,
        targetPort: 80,
        protocol: TCP
      },
      {
        destinationIP: "203.0.113.27",
        port: 8443,
        targetPort: 443,
        protocol: TCP
      }
    ]
  }
"#;

fn ok(input: &str, options: &RenderOptions) -> Rendered {
    render(input, options).unwrap_or_else(|e| panic!("{e}"))
}

fn of_kind<'a>(r: &'a Rendered, kind: &str) -> &'a Value {
    let found: Vec<&Value> = r.documents.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in {:?}", r.documents);
    found[0]
}

fn cni_config(r: &Rendered) -> Value {
    let nad = of_kind(r, "NetworkAttachmentDefinition");
    serde_json::from_str(nad["spec"]["config"].as_str().unwrap()).unwrap()
}

fn kinds(r: &Rendered) -> Vec<&str> {
    r.documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect()
}

fn paths(e: &RenderError) -> Vec<&str> {
    e.fields.iter().map(|f| f.field.as_str()).collect()
}

#[test]
fn the_documentations_example_renders_a_network_a_deployment_and_a_service() {
    let r = ok(DOCS_EXAMPLE, &RenderOptions::default());
    assert_eq!(
        kinds(&r),
        ["NetworkAttachmentDefinition", "Deployment", "Service"]
    );
    assert_eq!(
        cni_config(&r),
        json!({
            "cniVersion": "1.0.0",
            "name": "egress-router-redirect",
            "type": "egress-cni",
            "interfaceArgs": {"mode": "bridge"},
            "ip": {"addresses": ["192.168.12.99/24"], "gateway": "192.168.12.1"},
            "redirectRules": [
                {"destinationIP": "10.0.0.99", "port": 80, "protocol": "UDP"},
                {"destinationIP": "203.0.113.26", "port": 8080, "protocol": "TCP", "targetPort": 80},
                {"destinationIP": "203.0.113.27", "port": 8443, "protocol": "TCP", "targetPort": 443},
            ],
        })
    );
    for d in &r.documents {
        assert_eq!(d["metadata"]["name"], "egress-router-redirect", "{d}");
        // No namespace in the object: none in the manifests (kubectl's -n, or the default).
        assert!(d["metadata"].get("namespace").is_none(), "{d}");
        assert!(d["metadata"].get("ownerReferences").is_none(), "{d}");
    }
    assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
    assert!(r.notes[0].contains("no ownerReferences"), "{:?}", r.notes);

    let deployment = of_kind(&r, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    let template = &deployment["spec"]["template"];
    assert_eq!(
        template["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"],
        "egress-router-redirect"
    );
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "egress-router",
               "app.kubernetes.io/instance": "egress-router-redirect"})
    );
    let service = of_kind(&r, "Service");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        service["spec"]["ports"],
        json!([
            {"name": "udp-80", "port": 80, "protocol": "UDP"},
            {"name": "tcp-8080", "port": 8080, "protocol": "TCP"},
            {"name": "tcp-8443", "port": 8443, "protocol": "TCP"},
        ])
    );
    // The YAML stream: three documents.
    let yaml = r.to_yaml();
    assert_eq!(
        yaml.matches("\n---\n").count() + usize::from(yaml.starts_with("---\n")),
        2,
        "{yaml}"
    );
}

#[test]
fn the_same_object_in_json_renders_the_same() {
    let value: Value = serde_norway::from_str(DOCS_EXAMPLE).unwrap();
    let options = RenderOptions::default();
    assert_eq!(ok(&value.to_string(), &options), ok(DOCS_EXAMPLE, &options));
}

#[test]
fn every_example_keeps_every_address_rule_and_fallback() {
    let r = ok(REDIRECT_AND_FALLBACK, &RenderOptions::default());
    let c = cni_config(&r);
    assert_eq!(c["ip"]["addresses"], json!(["203.0.113.99/24"]));
    assert_eq!(c["redirectRules"].as_array().unwrap().len(), 3);
    assert_eq!(c["fallbackIP"], "198.51.100.9");
    assert!(of_kind(&r, "Service")["spec"].get("clusterIP").is_none());
    for d in &r.documents {
        assert_eq!(d["metadata"]["namespace"], "egress");
    }

    let r = ok(FALLBACK_ONLY, &RenderOptions::default());
    let c = cni_config(&r);
    assert!(c.get("redirectRules").is_none(), "{c}");
    assert_eq!(c["fallbackIP"], "198.51.100.9");
    // Every port goes to the fallback: a headless Service (its name resolves to the pod).
    let service = of_kind(&r, "Service");
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert!(service["spec"].get("ports").is_none());

    let r = ok(IPV6, &RenderOptions::default());
    let c = cni_config(&r);
    assert_eq!(
        c["ip"],
        json!({"addresses": ["2001:db8:2::99/64"], "gateway": "2001:db8:2::1"})
    );
    assert_eq!(c["fallbackIP"], "2001:db8:3::9");

    // Dual stack: both addresses (the operator would keep the first only), one gateway each.
    let dual = IPV6.replace(
        "  addresses:\n",
        "  addresses:\n  - {ip: 203.0.113.99/24, gateway: 203.0.113.1}\n",
    )
        + "    - {destinationIP: 198.51.100.25, port: 80, protocol: TCP, targetPort: 8080}\n";
    let dual =
        dual.replace("    fallbackIP: 2001:db8:3::9\n", "") + "    fallbackIP: 2001:db8:3::9\n";
    let r = ok(&dual, &RenderOptions::default());
    let c = cni_config(&r);
    assert_eq!(
        c["ip"],
        json!({"addresses": ["203.0.113.99/24", "2001:db8:2::99/64"],
               "gateway": ["203.0.113.1", "2001:db8:2::1"]})
    );
    // The IPv4 and the IPv6 rule share port 80/TCP: one Service port, both families.
    let service = of_kind(&r, "Service");
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "tcp-80", "port": 80, "protocol": "TCP"}])
    );
    assert_eq!(service["spec"]["ipFamilyPolicy"], "PreferDualStack");
}

#[test]
fn the_owner_is_the_object_when_its_uid_is_known() {
    let owner = |r: &Rendered| -> Vec<Value> {
        r.documents
            .iter()
            .map(|d| d["metadata"]["ownerReferences"].clone())
            .collect()
    };
    let expected = |uid: &str| json!([{"apiVersion": API_VERSION, "kind": KIND, "name": "egress-router-redirect", "uid": uid}]);
    let with_flag = RenderOptions {
        owner_uid: Some("3f0b7c9e-1d2a-4e5f-8a6b-7c8d9e0f1a2b".into()),
        ..RenderOptions::default()
    };
    let r = ok(REDIRECT_AND_FALLBACK, &with_flag);
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    for o in owner(&r) {
        assert_eq!(o, expected("3f0b7c9e-1d2a-4e5f-8a6b-7c8d9e0f1a2b"));
    }
    // `kubectl get -o yaml` prints the uid (and more metadata, and a status): it wins.
    let fetched = REDIRECT_AND_FALLBACK.replace(
        "  namespace: egress\n",
        "  namespace: egress\n  uid: 11111111-2222-3333-4444-555555555555\n  resourceVersion: \"42\"\n  \
         creationTimestamp: \"2026-01-01T00:00:00Z\"\n",
    ) + "status:\n  conditions: []\n";
    let r = ok(&fetched, &with_flag);
    for o in owner(&r) {
        assert_eq!(o, expected("11111111-2222-3333-4444-555555555555"));
    }
}

#[test]
fn two_objects_in_one_namespace_share_no_name_and_no_pod() {
    let options = RenderOptions {
        ha: true,
        ..RenderOptions::default()
    };
    let a = ok(REDIRECT_AND_FALLBACK, &options);
    let b = ok(
        &REDIRECT_AND_FALLBACK.replace("egress-router-redirect", "egress-router-b"),
        &options,
    );
    for (da, db) in a.documents.iter().zip(&b.documents) {
        assert_eq!(da["kind"], db["kind"]);
        assert_ne!(
            da["metadata"]["name"], db["metadata"]["name"],
            "{}",
            da["kind"]
        );
    }
    let selector =
        |r: &Rendered| of_kind(r, "Deployment")["spec"]["selector"]["matchLabels"].clone();
    assert_ne!(selector(&a), selector(&b));
    assert_ne!(cni_config(&a)["name"], cni_config(&b)["name"]);
}

#[test]
fn ha_renders_a_standby_network_keepalived_and_a_pair_ready_only_when_active() {
    let options = RenderOptions {
        ha: true,
        stable_mac: true,
        ..RenderOptions::default()
    };
    let r = ok(REDIRECT_AND_FALLBACK, &options);
    assert_eq!(
        kinds(&r),
        [
            "NetworkAttachmentDefinition",
            "ConfigMap",
            "Deployment",
            "Service"
        ]
    );
    let c = cni_config(&r);
    assert_eq!(c["role"], "standby");
    assert_eq!(c["routerName"], HA_ROUTER_NAME);
    let mac = c["stableMac"].as_str().unwrap();
    let conf = of_kind(&r, "ConfigMap")["data"]["keepalived.conf"]
        .as_str()
        .unwrap()
        .to_string();
    let vrid: u8 = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("virtual_router_id "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(mac, format!("00:00:5e:00:01:{vrid:02x}"));
    assert_eq!(conf, keepalived_conf(vrid, HA_ADVERT_INT));
    // The FIFO follower on the router egress-cni names, in the directory the pod mounts; no
    // notify command (each its own process: they race).
    for line in [
        "vrrp_notify_fifo /run/keepalived/egress.fifo",
        "vrrp_notify_fifo_script \"/usr/bin/egress-router keepalived --name egress-router \
         --instance egress\"",
        "fifo_write_vrrp_states_on_reload",
        "vrrp_priority -20",
        "nopreempt",
        "script_user root",
        "enable_script_security",
    ] {
        assert!(conf.lines().any(|l| l.trim() == line), "{line} in\n{conf}");
    }
    assert!(!conf.contains("notify_master"), "{conf}");
    assert!(conf.contains("vrrp_instance egress {"), "{conf}");
    let spec = &of_kind(&r, "Deployment")["spec"];
    assert_eq!(spec["replicas"], 2);
    let pod = &spec["template"]["spec"];
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
            ["topologyKey"],
        "kubernetes.io/hostname"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["image"], KEEPALIVED_IMAGE);
    assert!(container["securityContext"]["capabilities"]["add"]
        .as_array()
        .unwrap()
        .contains(&json!("SYS_NICE")));
    assert_eq!(
        container["readinessProbe"]["exec"]["command"],
        json!([
            "/usr/bin/egress-router",
            "inspect",
            "--name",
            "egress-router",
            "--role",
            "active"
        ])
    );
    assert_eq!(
        pod["volumes"],
        json!([
            {"name": "keepalived", "configMap": {"name": "egress-router-redirect-keepalived"}},
            {"name": "fifo", "emptyDir": {}},
        ])
    );
    // keepalived creates its FIFO in a directory it does not make: the empty volume.
    assert_eq!(
        container["volumeMounts"],
        json!([
            {"name": "keepalived", "mountPath": "/etc/keepalived", "readOnly": true},
            {"name": "fifo", "mountPath": "/run/keepalived"},
        ])
    );
    // Without --ha the stable MAC has nothing to apply to, and says so.
    let r = ok(
        REDIRECT_AND_FALLBACK,
        &RenderOptions {
            ha: false,
            ..options
        },
    );
    assert!(cni_config(&r).get("stableMac").is_none());
    assert!(
        r.notes.iter().any(|n| n.contains("--stable-mac")),
        "{:?}",
        r.notes
    );
}

#[test]
fn every_invalid_field_is_named_by_its_path_at_once() {
    let bad = r#"
apiVersion: network.operator.openshift.io/v2
kind: EgressRouter
metadata: {name: Egress_1}
spec:
  addresses:
  - {ip: 203.0.113.300/24, gateway: 203.0.113.1}
  - {ip: 2001:db8:2::99/64}
  - {gateway: 203.0.113.1}
  mode: Redirect
  networkInterface: {macvlan: {mode: bridge, master: a-very-long-link-name}}
  redirect:
    redirectRules:
    - {destinationIP: 198.51.100.25, port: 80, protocol: tcp, targetPort: 70000}
    - {destinationIP: 198.51.100.25, port: 0, protocol: TCP, targetPort: 70000}
    - {destinationIP: 198.51.100.25, port: "8443", protocol: TCP}
    - {destinationIP: not-an-address, port: 53, protocol: UDP, targetport: 53}
    fallbackIP: 198.51.100.9/32
  replicas: 2
"#;
    let e = render(bad, &RenderOptions::default()).unwrap_err();
    assert_eq!(
        paths(&e),
        [
            "apiVersion",
            "metadata.name",
            "spec.replicas",
            "spec.addresses[2].ip",
            "spec.networkInterface.macvlan.mode",
            "spec.redirect.redirectRules[0].protocol",
            "spec.redirect.redirectRules[2].port",
            "spec.redirect.redirectRules[3].targetport",
            // What egress-core's validation of the router found, mapped back:
            "spec.networkInterface.macvlan.master",
            "spec.addresses[0].ip",
            "spec.addresses[1].gateway",
            "spec.redirect.redirectRules[1].port",
            "spec.redirect.redirectRules[1].targetPort",
            "spec.redirect.redirectRules[3].destinationIP",
            "spec.redirect.fallbackIP",
            // A rule whose protocol is invalid still has its other fields checked.
            "spec.redirect.redirectRules[0].targetPort",
        ],
        "{e}"
    );
    let field = |path: &str| e.fields.iter().find(|f| f.field == path).unwrap();
    assert_eq!(field("spec.redirect.redirectRules[1].port").value, "0");
    assert_eq!(
        field("spec.redirect.redirectRules[0].protocol").expected,
        "one of TCP, UDP, SCTP"
    );
    assert_eq!(field("spec.addresses[0].ip").value, "203.0.113.300/24");
    assert_eq!(field("spec.addresses[1].gateway").value, "(missing)");
    let message = e.to_string();
    assert!(
        message.starts_with("the EgressRouter has 16 invalid fields:\n"),
        "{message}"
    );
    assert!(
        message.contains("\n  spec.redirect.redirectRules[1].port: `0`: "),
        "{message}"
    );
}

/// The example with a second address (a flow-style mapping) after its first.
fn with_address(address: &str) -> String {
    REDIRECT_AND_FALLBACK.replace(
        "      gateway: \"203.0.113.1\"\n    }\n",
        &format!("      gateway: \"203.0.113.1\"\n    }},\n    {address}\n"),
    )
}

#[test]
fn a_family_without_a_gateway_names_its_first_address() {
    let two = with_address(r#"{ip: "2001:db8:2::99/64"}"#);
    let e = render(&two, &RenderOptions::default()).unwrap_err();
    assert_eq!(paths(&e), ["spec.addresses[1].gateway"], "{e}");
    assert!(e.fields[0].expected.contains("IPv6 gateway"), "{e}");
    // Two addresses of one family with different gateways: the router has one per family.
    let clash = with_address(r#"{ip: "203.0.113.98/24", gateway: "203.0.113.2"}"#);
    let e = render(&clash, &RenderOptions::default()).unwrap_err();
    assert_eq!(paths(&e), ["spec.addresses[1].gateway"], "{e}");
    // The same gateway twice is one gateway.
    let same = with_address(r#"{ip: "203.0.113.98/24", gateway: "203.0.113.1"}"#);
    let c = cni_config(&ok(&same, &RenderOptions::default()));
    assert_eq!(
        c["ip"],
        json!({"addresses": ["203.0.113.99/24", "203.0.113.98/24"], "gateway": "203.0.113.1"})
    );
}

#[test]
fn what_is_not_one_egressrouter_object_is_refused() {
    let e = render("spec: [unclosed", &RenderOptions::default()).unwrap_err();
    assert_eq!(paths(&e), ["(input)"], "{e}");
    let e = render("- a list\n", &RenderOptions::default()).unwrap_err();
    assert_eq!(paths(&e), ["(root)"], "{e}");
    let e = render(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
        &RenderOptions::default(),
    )
    .unwrap_err();
    assert_eq!(paths(&e), ["apiVersion", "kind", "spec"], "{e}");
    // A router that forwards nothing, and a mode that is not Redirect.
    let e = render(
        &FALLBACK_ONLY
            .replace("    fallbackIP: \"198.51.100.9\"\n", "")
            .replace("mode: Redirect", "mode: HTTP"),
        &RenderOptions::default(),
    )
    .unwrap_err();
    assert_eq!(paths(&e), ["spec.mode", "spec.redirect"], "{e}");
}
