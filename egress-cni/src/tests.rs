use std::path::Path;

use egress_core::{
    Error, External, KeptRoute, LinkState, MacvlanMode, Netns, Protocol, Redirect, Rollback,
    RouterSpec, MAX_NAME_LEN,
};
use serde_json::{json, Value};

use super::*;

const NETNS: &str = "/var/run/netns/pod-1";

fn env(command: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", "3f6940ab5ab43bc5".to_string()),
        ("CNI_NETNS", NETNS.to_string()),
        ("CNI_IFNAME", "net1".to_string()),
        ("CNI_PATH", "/opt/cni/bin".to_string()),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAME=egress-1".to_string(),
        ),
    ]
}

fn add() -> Invocation {
    Invocation::from_env(env("ADD")).unwrap()
}

/// A configuration with every key of ours set, as OpenShift's operator would render it plus
/// the EgressRouter fields and our extensions.
fn full() -> Value {
    json!({
        "cniVersion": "0.4.0",
        "name": "egress-router-cni",
        "type": "egress-cni",
        "interfaceType": "macvlan",
        "interfaceArgs": {"master": "ens4", "mode": "Private", "mtu": "1400"},
        "ip": {
            "addresses": ["203.0.113.99/24", "203.0.113.100/24", "2001:db8:2::99/64"],
            "gateway": ["203.0.113.1", "2001:db8:2::1"],
            "destinations": ["80 TCP 198.51.100.25/32 8080", "53 udp 198.51.100.53", "198.51.100.9/32"]
        },
        "redirectRules": [
            {"destinationIP": "2001:db8:3::25/128", "port": 443, "protocol": "TCP", "targetPort": 8443},
            {"destinationIP": "198.51.100.26", "port": 8080, "protocol": "SCTP"}
        ],
        "fallbackIP": "2001:db8:3::9",
        "internalInterface": "eth0",
        "keepRoutes": [{"dst": "10.128.0.0/14", "gw": "10.129.0.1"}, {"dst": "172.30.0.0/16"}],
        "log_file": "/var/log/egress-cni.log",
        "log_level": "Debug"
    })
}

/// A small valid configuration.
fn small() -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "egress",
        "type": "egress-cni",
        "interfaceArgs": {"master": "ens4"},
        "ip": {"addresses": ["203.0.113.99/24"], "gateway": "203.0.113.1"},
        "fallbackIP": "198.51.100.9"
    })
}

fn parse(v: &Value) -> Result<NetConf, CniError> {
    parse_config(&serde_json::to_vec(v).unwrap())
}

fn spec(v: &Value) -> Result<RouterSpec, CniError> {
    let conf = parse(v)?;
    let master = conf.master().unwrap_or("ens4").to_string();
    conf.router_spec(&add(), &master)
}

/// `v` with `path` (dotted, `[i]` for list items) set to `value`, or removed for `None`.
fn set(mut v: Value, path: &str, value: Option<Value>) -> Value {
    // `cni.dev/…` keys are one key.
    let mut parts: Vec<&str> = match path.contains('/') {
        true => vec![path],
        false => path.split('.').collect(),
    };
    let last = parts.pop().unwrap();
    let mut cur = &mut v;
    for p in parts {
        cur = match p.split_once('[') {
            Some((k, i)) => &mut cur[k][i.trim_end_matches(']').parse::<usize>().unwrap()],
            None => &mut cur[p],
        };
    }
    match value {
        Some(x) => cur[last] = x,
        None => {
            cur.as_object_mut().unwrap().remove(last);
        }
    }
    v
}

#[track_caller]
fn fails(v: &Value, code: u32, field: &str) -> CniError {
    let e = spec(v).unwrap_err();
    assert_eq!((e.code, e.field.as_deref()), (code, Some(field)), "{e}");
    assert!(e.msg.contains(field), "{e}");
    e
}

// -- versions, commands, the environment ------------------------------------------------------

#[test]
fn versions_and_the_version_reply() {
    assert_eq!(CniVersion::ALL.map(CniVersion::as_str), SUPPORTED_VERSIONS);
    assert_eq!(CniVersion::parse("1.0.0"), Some(CniVersion::V1_0_0));
    assert_eq!(CniVersion::parse("0.3.1"), None);
    assert!(CniVersion::V0_4_0 < CniVersion::V1_1_0);
    assert_eq!(
        version_result(),
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})
    );
}

#[test]
fn commands_parse_and_anything_else_is_code_4() {
    for c in Command::ALL {
        assert_eq!(c.as_str().parse::<Command>().unwrap(), c);
    }
    let e = "add".parse::<Command>().unwrap_err();
    assert_eq!((e.code, e.field.as_deref()), (4, Some("CNI_COMMAND")));
    assert_eq!(
        e.msg,
        "invalid CNI_COMMAND `add`: one of ADD, DEL, CHECK, STATUS, VERSION, GC"
    );
}

#[test]
fn the_environment_of_an_add() {
    let inv = add();
    assert_eq!(inv.command, Command::Add);
    assert_eq!(inv.container_id.as_deref(), Some("3f6940ab5ab43bc5"));
    assert_eq!(inv.netns.as_deref(), Some(Path::new(NETNS)));
    assert_eq!(inv.ifname.as_deref(), Some("net1"));
    // Variables of others are none of our business.
    let mut vars = env("ADD");
    vars.push(("PATH", "/bin".into()));
    assert_eq!(Invocation::from_env(vars).unwrap(), inv);
}

#[test]
fn each_required_variable_is_named_when_missing_or_invalid() {
    for (command, var) in [
        ("ADD", "CNI_COMMAND"),
        ("ADD", "CNI_CONTAINERID"),
        ("ADD", "CNI_NETNS"),
        ("ADD", "CNI_IFNAME"),
        ("CHECK", "CNI_CONTAINERID"),
        ("CHECK", "CNI_NETNS"),
        ("CHECK", "CNI_IFNAME"),
        ("DEL", "CNI_CONTAINERID"),
        ("DEL", "CNI_IFNAME"),
    ] {
        for value in [None, Some("")] {
            let mut vars = env(command);
            vars.retain(|(k, _)| *k != var);
            vars.extend(value.map(|v| (var, v.to_string())));
            let e = Invocation::from_env(vars).unwrap_err();
            assert_eq!(
                (e.code, e.field.as_deref()),
                (4, Some(var)),
                "{command} {e}"
            );
            assert!(e.msg.contains(var), "{e}");
        }
    }
    for (var, value) in [
        ("CNI_COMMAND", "BOGUS"),
        ("CNI_CONTAINERID", "-starts-with-a-dash"),
        ("CNI_CONTAINERID", "has space"),
        ("CNI_CONTAINERID", "a/b"),
        ("CNI_NETNS", "relative/ns"),
        ("CNI_IFNAME", "a/b"),
        ("CNI_IFNAME", "a:b"),
        ("CNI_IFNAME", "a b"),
        ("CNI_IFNAME", "."),
        ("CNI_IFNAME", ".."),
        ("CNI_IFNAME", "sixteen-chars-xx"),
    ] {
        let mut vars = env("ADD");
        vars.retain(|(k, _)| *k != var);
        vars.push((var, value.to_string()));
        let e = Invocation::from_env(vars).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), (4, Some(var)), "{value} {e}");
        assert!(e.msg.contains(value), "{e}");
    }
    // The spec's container id alphabet and the longest interface name are fine.
    let mut vars = env("ADD");
    vars.push(("CNI_CONTAINERID", "A1_b.c-D".into()));
    vars.push(("CNI_IFNAME", "fifteen-chars-x".into()));
    Invocation::from_env(vars).unwrap();
}

#[test]
fn del_needs_no_namespace_and_status_version_gc_need_nothing() {
    for netns in [None, Some("")] {
        let mut vars = env("DEL");
        vars.retain(|(k, _)| *k != "CNI_NETNS");
        vars.extend(netns.map(|v| ("CNI_NETNS", v.to_string())));
        let inv = Invocation::from_env(vars).unwrap();
        assert_eq!(inv.netns, None);
        assert_eq!(inv.ifname.as_deref(), Some("net1"));
    }
    for command in ["STATUS", "VERSION", "GC"] {
        let inv = Invocation::from_env([("CNI_COMMAND", command)]).unwrap();
        assert_eq!(inv.command.as_str(), command);
        assert_eq!(inv.container_id, None);
    }
}

#[test]
fn router_names_fit_and_tell_attachments_apart() {
    let a = router_name(
        "3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72755",
        "net1",
    );
    assert_eq!(
        a,
        router_name(
            "3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72755",
            "net1"
        )
    );
    assert!(a.starts_with("cni-3f6940ab5ab4-"), "{a}");
    for (id, ifname) in [
        (
            "3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72755",
            "net2",
        ),
        (
            "3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72756",
            "net1",
        ),
        // The id and the interface are hashed apart: no shifting of characters between them.
        (
            "3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72755n",
            "et1",
        ),
    ] {
        assert_ne!(router_name(id, ifname), a, "{id} {ifname}");
    }
    for (id, ifname) in [
        ("A", "x"),
        ("Pod_1.a-b", "eth0"),
        (&"z".repeat(200)[..], "fifteen-chars-x"),
    ] {
        let name = router_name(id, ifname);
        assert!(name.len() <= MAX_NAME_LEN, "{name}");
        let spec = RouterSpec::builder(&name)
            .adopt("m")
            .source("203.0.113.9")
            .gateway("203.0.113.1")
            .build();
        assert!(spec.is_ok(), "{name}: {spec:?}");
    }
    assert!(router_name("Pod_1.a", "e").starts_with("cni-pod-1-a-"));
}

// -- the configuration: every field -----------------------------------------------------------

#[test]
fn every_field_maps_onto_the_router() {
    let conf = parse(&full()).unwrap();
    assert_eq!(conf.cni_version(), CniVersion::V0_4_0);
    assert_eq!(conf.name(), "egress-router-cni");
    assert_eq!(conf.plugin_type(), "egress-cni");
    assert_eq!(conf.master(), Some("ens4"));
    assert!(!conf.first_address_is_ipv6());
    assert_eq!(conf.log_file(), Some(Path::new("/var/log/egress-cni.log")));
    assert_eq!(conf.log_level(), LogLevel::Debug);
    assert_eq!(conf.prev_result(), None);
    assert_eq!(conf.valid_attachments(), None);

    let s = conf.router_spec(&add(), "ens4").unwrap();
    assert_eq!(s.name(), router_name("3f6940ab5ab43bc5", "net1"));
    assert_eq!(s.netns(), &Netns::Path(NETNS.into()));
    let External::Macvlan(m) = s.external() else {
        panic!("{:?}", s.external())
    };
    assert_eq!(m.parent(), "ens4");
    assert_eq!(
        m.parent_netns(),
        &Netns::Current,
        "the master is in the plugin's namespace"
    );
    assert_eq!(m.mode(), MacvlanMode::Private);
    assert_eq!(m.mtu(), Some(1400));
    assert_eq!(m.name(), "net1");
    assert_eq!(s.internal(), "eth0");
    // All the addresses, not only the first.
    let sources: Vec<String> = s.sources().iter().map(ToString::to_string).collect();
    assert_eq!(
        sources,
        ["203.0.113.99/24", "203.0.113.100/24", "2001:db8:2::99/64"]
    );
    assert_eq!(s.gateway4().unwrap().to_string(), "203.0.113.1");
    assert_eq!(s.gateway6().unwrap().to_string(), "2001:db8:2::1");
    let r = |protocol, port, to: &str, to_port| Redirect {
        protocol,
        port,
        to: to.parse().unwrap(),
        to_port,
    };
    assert_eq!(
        s.redirects(),
        [
            r(Protocol::Tcp, 80, "198.51.100.25", 8080),
            r(Protocol::Udp, 53, "198.51.100.53", 53),
            r(Protocol::Tcp, 443, "2001:db8:3::25", 8443),
            r(Protocol::Sctp, 8080, "198.51.100.26", 8080),
        ]
    );
    assert_eq!(s.fallback4().unwrap().to_string(), "198.51.100.9");
    assert_eq!(s.fallback6().unwrap().to_string(), "2001:db8:3::9");
    assert_eq!(
        s.kept_routes(),
        [
            KeptRoute {
                to: "10.128.0.0/14".parse().unwrap(),
                via: Some("10.129.0.1".parse().unwrap())
            },
            KeptRoute {
                to: "172.30.0.0/16".parse().unwrap(),
                via: None
            }
        ]
    );
}

#[test]
fn defaults_follow_openshifts_plugin() {
    let mut v = small();
    v["interfaceArgs"] = json!({"master": "ens4", "mode": "", "mtu": ""});
    let s = spec(&v).unwrap();
    let External::Macvlan(m) = s.external() else {
        panic!()
    };
    assert_eq!(m.mode(), MacvlanMode::Bridge);
    assert_eq!(m.mtu(), None);
    assert_eq!(s.internal(), DEFAULT_INTERNAL_INTERFACE);
    let conf = parse(&set(small(), "interfaceArgs", None)).unwrap();
    assert_eq!(conf.master(), None);
    assert_eq!(conf.log_level(), LogLevel::Error);
    assert_eq!(conf.log_file(), None);
    // A bare source is a host address; a number is an MTU too; interfaceType any case.
    let v = set(
        small(),
        "ip.addresses",
        Some(json!(["2001:db8:2::99", "203.0.113.99"])),
    );
    let v = set(
        v,
        "ip.gateway",
        Some(json!(["2001:db8:2::1", "203.0.113.1"])),
    );
    let v = set(v, "interfaceArgs.mtu", Some(json!(1500)));
    let v = set(v, "interfaceType", Some(json!("MacVlan")));
    let conf = parse(&v).unwrap();
    assert!(conf.first_address_is_ipv6());
    let s = conf.router_spec(&add(), "ens4").unwrap();
    assert_eq!(s.sources()[0].prefix(), 128);
    assert_eq!(s.sources()[1].prefix(), 32);
}

#[test]
fn runtime_injected_keys_are_accepted() {
    let mut v = small();
    for (k, x) in [
        ("cniVersions", json!(["1.0.0", "1.1.0"])),
        ("args", json!({"cni": {"labels": {"app": "x"}}})),
        ("runtimeConfig", json!({"mac": "02:00:00:00:00:01"})),
        ("capabilities", json!({"mac": true})),
        (
            "prevResult",
            json!({"cniVersion": "1.1.0", "interfaces": []}),
        ),
        ("disableCheck", json!(false)),
        ("disableGC", json!(false)),
        ("loadOnlyInlinedPlugins", json!(false)),
        (
            "cni.dev/valid-attachments",
            json!([{"containerID": "a", "ifname": "net1"}]),
        ),
        (
            "cni.dev/attachments",
            json!([{"containerID": "a", "ifname": "net1"}]),
        ),
    ] {
        v[k] = x;
    }
    let conf = parse(&v).unwrap();
    assert_eq!(conf.prev_result().unwrap()["cniVersion"], "1.1.0");
    assert_eq!(
        conf.valid_attachments().unwrap(),
        [Attachment {
            container_id: "a".into(),
            ifname: "net1".into()
        }]
    );
    // The older spelling alone works too.
    let v = set(
        small(),
        "cni.dev/attachments",
        Some(json!([{"containerID": "b", "ifname": "e"}])),
    );
    assert_eq!(
        parse(&v).unwrap().valid_attachments().unwrap()[0].container_id,
        "b"
    );
}

#[test]
fn unknown_keys_are_named_with_their_value_code_2() {
    for (path, value) in [
        ("fallbackIp", json!("198.51.100.9")),
        ("ip.fallbackIP", json!("198.51.100.9")),
        ("interfaceArgs.parent", json!("ens4")),
        (
            "redirectRules",
            json!([{"destinationIP": "198.51.100.1", "port": 80, "protocol": "TCP", "target": 8080}]),
        ),
        (
            "keepRoutes",
            json!([{"dst": "10.0.0.0/8", "via": "10.0.0.1"}]),
        ),
    ] {
        let v = set(small(), path, Some(value.clone()));
        let e = parse(&v).unwrap_err();
        assert_eq!(e.code, code::UNSUPPORTED_FIELD, "{path}: {e}");
        let field = e.field.clone().unwrap();
        assert!(
            [
                "fallbackIp",
                "ip.fallbackIP",
                "interfaceArgs.parent",
                "redirectRules[0].target",
                "keepRoutes[0].via"
            ]
            .contains(&field.as_str()),
            "{field}"
        );
        // The spec: the message contains the key and the value.
        assert!(e.msg.contains(&field), "{e}");
        let shown = if path.contains('.') || path == "fallbackIp" {
            value.clone()
        } else {
            value[0].clone()
        };
        let needle = match field.rsplit('.').next().unwrap() {
            "target" => "8080".to_string(),
            "via" => "\"10.0.0.1\"".to_string(),
            _ => shown.to_string(),
        };
        assert!(e.msg.contains(&needle), "{e} lacks {needle}");
        assert!(
            e.details.contains("does not know this key"),
            "{}",
            e.details
        );
    }
}

#[test]
fn features_this_plugin_lacks_are_code_2() {
    for (key, value) in [
        ("ipam", json!({"type": "host-local"})),
        ("dns", json!({"nameservers": ["198.51.100.53"]})),
        ("ipMasq", json!(true)),
        (
            "podIP",
            json!({"db-router": {"addresses": ["203.0.113.10/24"]}}),
        ),
        ("ipConfig", json!({"name": "egress-ips"})),
        ("interfaceType", json!("ipvlan")),
        ("interfaceType", json!("aws-elastic-ip")),
    ] {
        let e = parse(&set(small(), key, Some(value.clone()))).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), (2, Some(key)), "{e}");
        assert!(e.msg.contains(&value.to_string()), "{e}");
        assert!(!e.details.is_empty());
    }
}

#[test]
fn the_envelope_decode_and_version_codes() {
    for (stdin, code) in [
        (&b""[..], 6),
        (b"not json", 6),
        (b"[1, 2]", 6),
        (b"\"0.4.0\"", 6),
        (br#"{"name": "n", "type": "t"}"#, 1),
        (br#"{"cniVersion": 4, "name": "n", "type": "t"}"#, 1),
        (br#"{"cniVersion": "0.3.1", "name": "n", "type": "t"}"#, 1),
        (br#"{"cniVersion": "2.0.0", "name": "n", "type": "t"}"#, 1),
    ] {
        let e = parse_config(stdin).unwrap_err();
        assert_eq!(e.code, code, "{}: {e}", String::from_utf8_lossy(stdin));
    }
    let e = parse_config(br#"{"cniVersion": "0.3.1", "name": "n", "type": "t", "ip": {"addresses": ["203.0.113.9"]}}"#).unwrap_err();
    assert_eq!(
        e.msg,
        "incompatible CNI version: cniVersion `0.3.1` is not supported"
    );
    assert_eq!(e.details, "this plugin supports 0.4.0, 1.0.0, 1.1.0");
    // With other problems, the version comes first and the others are named too.
    let e = parse_config(br#"{"cniVersion": "0.3.1"}"#).unwrap_err();
    assert_eq!(
        e.msg,
        "incompatible CNI version: cniVersion `0.3.1` is not supported; and 3 more: name, type, ip"
    );
    assert_eq!(
        e.details.lines().next(),
        Some("incompatible CNI version: cniVersion `0.3.1` is not supported: this plugin supports 0.4.0, 1.0.0, 1.1.0")
    );
    // A version error wins over everything else; an unknown key over bad values.
    let e = parse(&json!({"cniVersion": "9", "bogus": 1})).unwrap_err();
    assert_eq!(e.code, 1);
    let e = parse(&set(
        set(small(), "bogus", Some(json!(1))),
        "name",
        Some(json!(3)),
    ))
    .unwrap_err();
    assert_eq!(e.code, 2);
    assert_eq!(
        reply_version(br#"{"cniVersion": "0.4.0", "bogus": 1}"#),
        CniVersion::V0_4_0
    );
    assert_eq!(
        reply_version(br#"{"cniVersion": "0.3.1"}"#),
        CniVersion::LATEST
    );
    assert_eq!(reply_version(b"garbage"), CniVersion::LATEST);
}

#[test]
fn each_bad_value_is_code_7_naming_its_key() {
    let cases: Vec<(&str, Option<Value>, &str)> = vec![
        ("name", None, "name"),
        ("name", Some(json!("")), "name"),
        ("type", Some(json!(7)), "type"),
        ("interfaceType", Some(json!(1)), "interfaceType"),
        ("interfaceArgs", Some(json!("ens4")), "interfaceArgs"),
        (
            "interfaceArgs.master",
            Some(json!(4)),
            "interfaceArgs.master",
        ),
        (
            "interfaceArgs.mode",
            Some(json!("source")),
            "interfaceArgs.mode",
        ),
        (
            "interfaceArgs.mtu",
            Some(json!("large")),
            "interfaceArgs.mtu",
        ),
        ("interfaceArgs.mtu", Some(json!(-1)), "interfaceArgs.mtu"),
        ("ip", None, "ip"),
        ("ip", Some(json!([])), "ip"),
        ("ip.addresses", None, "ip.addresses"),
        ("ip.addresses", Some(json!([])), "ip.addresses"),
        (
            "ip.addresses",
            Some(json!("203.0.113.99/24")),
            "ip.addresses",
        ),
        (
            "ip.addresses",
            Some(json!(["203.0.113.99/24", 5])),
            "ip.addresses[1]",
        ),
        (
            "ip.gateway",
            Some(json!({"v4": "203.0.113.1"})),
            "ip.gateway",
        ),
        (
            "ip.gateway",
            Some(json!(["203.0.113.1", 5])),
            "ip.gateway[1]",
        ),
        (
            "ip.destinations",
            Some(json!("80 tcp 198.51.100.25")),
            "ip.destinations",
        ),
        (
            "ip.destinations",
            Some(json!(["80 tcp 198.51.100.25\n8080 tcp 198.51.100.25"])),
            "ip.destinations[0]",
        ),
        (
            "ip.destinations",
            Some(json!(["80 icmp 198.51.100.25"])),
            "ip.destinations[0]",
        ),
        (
            "ip.destinations",
            Some(json!(["80 tcp 198.51.100.25", "80 tcp 198.51.100.256"])),
            "ip.destinations[1]",
        ),
        (
            "ip.destinations",
            Some(json!(["0 tcp 198.51.100.25"])),
            "ip.destinations[0]",
        ),
        (
            "ip.destinations",
            Some(json!(["80 tcp 198.51.100.25 65536"])),
            "ip.destinations[0]",
        ),
        (
            "ip.destinations",
            Some(json!(["80 tcp 198.51.100.0/24"])),
            "ip.destinations[0]",
        ),
        ("ip.destinations", Some(json!(["  "])), "ip.destinations[0]"),
        (
            "ip.destinations",
            Some(json!(["198.51.100.9", "80 tcp 198.51.100.25"])),
            "ip.destinations[0]",
        ),
        ("redirectRules", Some(json!({"port": 80})), "redirectRules"),
        (
            "redirectRules",
            Some(json!(["80 tcp 198.51.100.25"])),
            "redirectRules[0]",
        ),
        (
            "redirectRules",
            Some(json!([{"port": 80, "protocol": "TCP"}])),
            "redirectRules[0].destinationIP",
        ),
        (
            "redirectRules",
            Some(json!([{"destinationIP": "198.51.100.300", "port": 80, "protocol": "TCP"}])),
            "redirectRules[0].destinationIP",
        ),
        (
            "redirectRules",
            Some(json!([{"destinationIP": "80 tcp 198.51.100.3", "port": 80, "protocol": "TCP"}])),
            "redirectRules[0].destinationIP",
        ),
        (
            "redirectRules",
            Some(json!([{"destinationIP": "198.51.100.3", "protocol": "TCP"}])),
            "redirectRules[0].port",
        ),
        (
            "redirectRules",
            Some(json!([{"destinationIP": "198.51.100.3", "port": 0, "protocol": "TCP"}])),
            "redirectRules[0].port",
        ),
        (
            "redirectRules",
            Some(json!([{"destinationIP": "198.51.100.3", "port": "80", "protocol": "TCP"}])),
            "redirectRules[0].port",
        ),
        (
            "redirectRules",
            Some(json!([{"destinationIP": "198.51.100.3", "port": 80}])),
            "redirectRules[0].protocol",
        ),
        (
            "redirectRules",
            Some(json!([{"destinationIP": "198.51.100.3", "port": 80, "protocol": "ICMP"}])),
            "redirectRules[0].protocol",
        ),
        (
            "redirectRules",
            Some(
                json!([{"destinationIP": "198.51.100.3", "port": 80, "protocol": "TCP", "targetPort": 70000}]),
            ),
            "redirectRules[0].targetPort",
        ),
        ("fallbackIP", Some(json!("198.51.100.0/24")), "fallbackIP"),
        ("fallbackIP", Some(json!("not an address")), "fallbackIP"),
        (
            "fallbackIP",
            Some(json!(["198.51.100.9", "nope"])),
            "fallbackIP[1]",
        ),
        ("fallbackIP", Some(json!(true)), "fallbackIP"),
        (
            "internalInterface",
            Some(json!(["eth0"])),
            "internalInterface",
        ),
        (
            "keepRoutes",
            Some(json!({"dst": "10.0.0.0/8"})),
            "keepRoutes",
        ),
        ("keepRoutes", Some(json!(["10.0.0.0/8"])), "keepRoutes[0]"),
        (
            "keepRoutes",
            Some(json!([{"gw": "10.0.0.1"}])),
            "keepRoutes[0].dst",
        ),
        (
            "keepRoutes",
            Some(json!([{"dst": "10.0.0.0/8", "gw": 1}])),
            "keepRoutes[0].gw",
        ),
        ("log_file", Some(json!("logs/relative.log")), "log_file"),
        (
            "log_file",
            Some(json!("/var/log/../../etc/cron.d/x")),
            "log_file",
        ),
        ("log_file", Some(json!("/var/log/./x")), "log_file"),
        ("log_file", Some(json!("..")), "log_file"),
        ("log_file", Some(json!("/var/log/x/")), "log_file"),
        ("log_file", Some(json!("//var/log/x")), "log_file"),
        ("log_file", Some(json!("egress\n.log")), "log_file"),
        ("log_file", Some(json!(7)), "log_file"),
        ("log_level", Some(json!("trace")), "log_level"),
        ("prevResult", Some(json!("{}")), "prevResult"),
        (
            "cni.dev/valid-attachments",
            Some(json!({})),
            "cni.dev/valid-attachments",
        ),
        (
            "cni.dev/valid-attachments",
            Some(json!([{"containerID": "a"}])),
            "cni.dev/valid-attachments[0].ifname",
        ),
    ];
    for (path, value, field) in cases {
        let v = set(small(), path, value.clone());
        let e = parse(&v).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (7, Some(field)),
            "{path} = {value:?}: {e}"
        );
        assert!(e.msg.contains(field), "{e}");
    }
}

#[test]
fn value_errors_say_what_is_valid() {
    let e = parse(&set(
        small(),
        "ip.destinations",
        Some(json!(["80 tcp 198.51.100.600"])),
    ))
    .unwrap_err();
    assert_eq!(
        e.msg,
        "invalid ip.destinations[0] `80 tcp 198.51.100.600`: a rule `LPORT PROTO IP`, `LPORT PROTO \
         IP RPORT` (PROTO tcp, udp or sctp; IP optionally /32 or /128) or a fallback `IP` (octet \
         600 is over 255)"
    );
    let e = parse(&set(
        small(),
        "ip.destinations",
        Some(json!(["80 tcp 198.51.100.6 0"])),
    ))
    .unwrap_err();
    assert!(e.msg.ends_with("ports from 1 to 65535 (0 is not)"), "{e}");
    let e = parse(&set(
        small(),
        "ip.destinations",
        Some(json!(["198.51.100.9", "198.51.100.8"])),
    ))
    .unwrap_err();
    assert_eq!(
        e.msg,
        "invalid ip.destinations[0] `198.51.100.9`: a fallback (a bare address) must be the last destination"
    );
    let e = parse(&set(small(), "fallbackIP", Some(json!("198.51.100.0/24")))).unwrap_err();
    assert!(e.msg.contains("/24 is a network"), "{e}");
    let e = parse(&set(small(), "log_level", Some(json!("trace")))).unwrap_err();
    assert_eq!(
        e.msg,
        "invalid log_level `trace`: one of panic, error, verbose, debug"
    );
    assert_eq!(
        e.to_json(CniVersion::V0_4_0),
        json!({"cniVersion": "0.4.0", "code": 7, "msg": e.msg})
    );
}

#[test]
fn values_the_spec_rules_out_name_the_configuration_key() {
    for (path, value, field) in [
        (
            "ip.addresses",
            json!(["203.0.113.99/24", "203.0.113.300/24"]),
            "ip.addresses[1]",
        ),
        (
            "ip.addresses",
            json!(["203.0.113.99/24", "203.0.113.99/24"]),
            "ip.addresses[1]",
        ),
        ("ip.addresses", json!(["224.0.0.1"]), "ip.addresses[0]"),
        ("ip.gateway", json!("2001:db8:2::1"), "ip.gateway"),
        (
            "ip.gateway",
            json!(["203.0.113.1", "203.0.113.2"]),
            "ip.gateway[1]",
        ),
        ("ip.gateway", json!(""), "ip.gateway"),
        ("fallbackIP", json!("2001:db8:3::9"), "fallbackIP"),
        ("fallbackIP", json!(["198.51.100.8"]), "fallbackIP[0]"),
        ("interfaceArgs.mtu", json!(67), "interfaceArgs.mtu"),
        ("interfaceArgs.master", json!("a/b"), "interfaceArgs.master"),
        ("internalInterface", json!("net1"), "internalInterface"),
        ("internalInterface", json!(""), "internalInterface"),
        (
            "keepRoutes",
            json!([{"dst": "10.0.0.1/8"}]),
            "keepRoutes[0].dst",
        ),
        (
            "keepRoutes",
            json!([{"dst": "10.0.0.0/8", "gw": "2001:db8::1"}]),
            "keepRoutes[0].gw",
        ),
    ] {
        // fallbackIP [..8] beside the destinations' fallback: two of one family.
        let v = set(
            set(small(), "ip.destinations", Some(json!(["198.51.100.9"]))),
            "fallbackIP",
            None,
        );
        let v = set(v, path, Some(value.clone()));
        fails(&v, 7, field);
    }
    let e = fails(
        &set(small(), "internalInterface", Some(json!("net1"))),
        7,
        "internalInterface",
    );
    assert!(e.msg.contains("CNI_IFNAME (the macvlan)"), "{e}");
    // Redirects: duplicates and families are named by where each came from.
    let v = set(
        small(),
        "ip.destinations",
        Some(json!(["80 tcp 198.51.100.25", "80 TCP 198.51.100.26"])),
    );
    fails(&v, 7, "ip.destinations[1]");
    let v = set(
        small(),
        "ip.destinations",
        Some(json!(["80 tcp 2001:db8:3::25"])),
    );
    fails(&v, 7, "ip.destinations[0]");
    let rule = json!([{"destinationIP": "198.51.100.1", "port": 80, "protocol": "TCP"}]);
    let v = set(
        set(
            small(),
            "ip.destinations",
            Some(json!(["80 tcp 198.51.100.25"])),
        ),
        "redirectRules",
        Some(rule),
    );
    fails(&v, 7, "redirectRules[0].port");
    let rule = json!([{"destinationIP": "2001:db8:3::1", "port": 80, "protocol": "TCP"}]);
    fails(
        &set(small(), "redirectRules", Some(rule)),
        7,
        "redirectRules[0].destinationIP",
    );
    // The same port over each family is fine.
    let v = set(full(), "redirectRules[0].port", Some(json!(80)));
    spec(&v).unwrap();
}

// -- replies ----------------------------------------------------------------------------------

fn link() -> LinkState {
    LinkState {
        name: "net1".into(),
        index: 7,
        kind: Some("macvlan".into()),
        mode: Some(MacvlanMode::Private),
        mtu: 1400,
        mac: "02:42:ac:11:00:02".into(),
        up: true,
        created: true,
    }
}

#[test]
fn the_add_result_in_each_version() {
    let s = spec(&full()).unwrap();
    let r = add_result(CniVersion::V0_4_0, &s, Path::new(NETNS), Some(&link())).unwrap();
    assert_eq!(
        r,
        json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "net1", "mac": "02:42:ac:11:00:02", "sandbox": NETNS}],
            "ips": [
                {"version": "4", "address": "203.0.113.99/24", "gateway": "203.0.113.1", "interface": 0},
                {"version": "4", "address": "203.0.113.100/24", "gateway": "203.0.113.1", "interface": 0},
                {"version": "6", "address": "2001:db8:2::99/64", "gateway": "2001:db8:2::1", "interface": 0}
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "203.0.113.1"}, {"dst": "::/0", "gw": "2001:db8:2::1"}],
            "dns": {}
        })
    );
    let r = add_result(CniVersion::V1_0_0, &s, Path::new(NETNS), Some(&link())).unwrap();
    assert_eq!(r["cniVersion"], "1.0.0");
    assert!(r["ips"]
        .as_array()
        .unwrap()
        .iter()
        .all(|ip| ip.get("version").is_none()));
    assert!(r["interfaces"][0].get("mtu").is_none());
    let r = add_result(CniVersion::V1_1_0, &s, Path::new(NETNS), Some(&link())).unwrap();
    assert_eq!(r["interfaces"][0]["mtu"], 1400);
    let v4_only = spec(&small()).unwrap();
    let r = add_result(
        CniVersion::V1_1_0,
        &v4_only,
        Path::new(NETNS),
        Some(&link()),
    )
    .unwrap();
    assert_eq!(
        r["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "203.0.113.1"}])
    );
    let e = add_result(CniVersion::V1_1_0, &v4_only, Path::new(NETNS), None).unwrap_err();
    assert_eq!(e.code, code::ROLLED_BACK);
}

#[test]
fn check_needs_prev_result_and_status_gc_need_1_1_0() {
    let conf = parse(&small()).unwrap();
    let e = conf.required_prev_result().unwrap_err();
    assert_eq!((e.code, e.field.as_deref()), (7, Some("prevResult")));
    let conf = parse(&set(small(), "prevResult", Some(json!({"interfaces": []})))).unwrap();
    assert!(conf.required_prev_result().is_ok());
    for c in Command::ALL {
        assert!(conf.require_version(c).is_ok(), "{c}");
    }
    let old = parse(&set(small(), "cniVersion", Some(json!("1.0.0")))).unwrap();
    for c in [Command::Status, Command::Gc] {
        let e = old.require_version(c).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        assert_eq!(
            e.msg,
            format!("incompatible CNI version: {c} needs cniVersion 1.1.0 or later, the configuration has 1.0.0")
        );
    }
    assert!(old.require_version(Command::Check).is_ok());
    // A master given is not looked up.
    assert_eq!(conf.resolve_master().unwrap(), "ens4");
}

#[test]
fn prev_result_is_consulted_on_check() {
    let s = spec(&small()).unwrap();
    let ns = Path::new(NETNS);
    let prev = add_result(CniVersion::V1_0_0, &s, ns, Some(&link())).unwrap();
    assert_eq!(
        prev_result_drift(&prev, &s, ns, Some(&link())),
        Vec::<String>::new()
    );
    let mut other_mac = link();
    other_mac.mac = "02:00:00:00:00:01".into();
    assert_eq!(
        prev_result_drift(&prev, &s, ns, Some(&other_mac)),
        ["interface net1: MAC is 02:00:00:00:00:01, prevResult says 02:42:ac:11:00:02"]
    );
    assert_eq!(
        prev_result_drift(&prev, &s, Path::new("/var/run/netns/other"), Some(&link())),
        ["prevResult lists no interface net1 in sandbox /var/run/netns/other"]
    );
    assert_eq!(
        prev_result_drift(&json!({}), &s, ns, None),
        ["prevResult lists no interface net1 in sandbox /var/run/netns/pod-1"]
    );
    let mut moved = prev.clone();
    moved["ips"][0]["address"] = "203.0.113.98/24".into();
    assert_eq!(
        prev_result_drift(&moved, &s, ns, Some(&link())),
        ["address 203.0.113.98/24 of prevResult is not in the configuration's ip.addresses"]
    );
    // Addresses of other interfaces (a chained plugin's) are not ours to judge.
    let mut chained = prev.clone();
    chained["interfaces"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!({"name": "eth0", "sandbox": NETNS}));
    chained["ips"]
        .as_array_mut()
        .unwrap()
        .push(json!({"address": "192.0.2.2/24", "interface": 0}));
    chained["ips"][0]["interface"] = 1.into();
    assert_eq!(
        prev_result_drift(&chained, &s, ns, Some(&link())),
        Vec::<String>::new()
    );
    assert_eq!(CniError::drift(&["a".into(), "b".into()]).details, "a\nb");
    assert_eq!(CniError::drift(&["a".into()]).code, code::DRIFT);
}

#[test]
fn core_errors_map_to_the_spec_codes() {
    let kernel = |errno| Error::Kernel {
        operation: "ip link add".into(),
        errno,
    };
    let apply = |source: Error, rollback| Error::Apply {
        step: "ip addr add".into(),
        step_index: 5,
        source: Box::new(source),
        rollback,
    };
    let cases: Vec<(Error, u32)> = vec![
        (
            Error::NotFound {
                field: "netns".into(),
                object: "network namespace",
                value: NETNS.into(),
                netns: NETNS.into(),
            },
            3,
        ),
        (
            Error::NotFound {
                field: "external.macvlan.parent".into(),
                object: "link",
                value: "ens9".into(),
                netns: "(current)".into(),
            },
            100,
        ),
        (
            Error::AlreadyExists {
                object: "link",
                value: "net1".into(),
                netns: NETNS.into(),
                hint: None,
            },
            100,
        ),
        (
            Error::Conflict {
                field: "external.macvlan.mtu".into(),
                value: "9000".into(),
                reason: "larger than the MTU 1500 of parent ens4".into(),
            },
            100,
        ),
        (
            Error::PermissionDenied {
                operation: "apply".into(),
                capability: "CAP_NET_ADMIN",
            },
            103,
        ),
        (kernel(libc::EINVAL), 101),
        (kernel(libc::EBUSY), 11),
        (apply(kernel(libc::ENETUNREACH), Rollback::Complete), 101),
        (apply(kernel(libc::EAGAIN), Rollback::Complete), 11),
        (
            apply(
                Error::PermissionDenied {
                    operation: "x".into(),
                    capability: "CAP_NET_ADMIN",
                },
                Rollback::Complete,
            ),
            103,
        ),
        (
            apply(
                kernel(libc::EBUSY),
                Rollback::Incomplete(vec!["link net1".into()]),
            ),
            102,
        ),
        (
            Error::Teardown {
                failures: vec![kernel(libc::EIO)],
            },
            102,
        ),
        (Error::invalid_spec("external.macvlan.name", "x", "y"), 4),
    ];
    for (e, code) in cases {
        let c = CniError::from_core(&e);
        assert_eq!(c.code, code, "{e}: {c}");
        assert!(!c.msg.is_empty());
    }
    let c = CniError::from_core(&Error::NotFound {
        field: "external.macvlan.parent".into(),
        object: "link",
        value: "ens9".into(),
        netns: "(current)".into(),
    });
    assert_eq!(c.msg, "interfaceArgs.master: link `ens9` not found");
    let c = CniError::from_core(&Error::Conflict {
        field: "external.macvlan.mtu".into(),
        value: "9000".into(),
        reason: "larger than the MTU 1500 of parent ens4".into(),
    });
    assert_eq!(
        c.msg,
        "interfaceArgs.mtu `9000`: larger than the MTU 1500 of parent ens4"
    );
    let c = CniError::from_core(&apply(kernel(libc::ENETUNREACH), Rollback::Complete));
    assert!(
        c.msg.starts_with("step 5 failed: ip link add failed"),
        "{c}"
    );
    assert!(c.msg.ends_with("rolled back completely"), "{c}");
    assert_eq!(c.details, "the failed step: ip addr add");
    let v = c.to_json(CniVersion::V1_1_0);
    assert_eq!(v["details"], "the failed step: ip addr add");
    assert_eq!(v["code"], 101);
    assert_eq!(
        CniError::not_available(&kernel(libc::EIO)).code,
        code::NOT_AVAILABLE
    );
    assert_eq!(
        CniError::internal("boom").msg,
        "egress-cni failed unexpectedly: boom"
    );
    assert_eq!(CniError::internal("boom").code, 999);
    let io = std::io::Error::from_raw_os_error(libc::EACCES);
    assert_eq!(CniError::io("reading stdin", &io).code, code::IO_FAILURE);
}

#[test]
fn log_levels() {
    assert_eq!("DEBUG".parse::<LogLevel>(), Ok(LogLevel::Debug));
    assert_eq!("verbose".parse::<LogLevel>(), Ok(LogLevel::Verbose));
    assert_eq!("Panic".parse::<LogLevel>(), Ok(LogLevel::Panic));
    assert_eq!("error".parse::<LogLevel>(), Ok(LogLevel::Error));
    assert!("info".parse::<LogLevel>().is_err());
    assert!(LogLevel::Panic < LogLevel::Error && LogLevel::Verbose < LogLevel::Debug);
}

// -- untrusted input: bounds, repeated keys, every problem at once, logs ---------------------

#[test]
fn stdin_is_bounded_at_1_mib() {
    let mut config = serde_json::to_vec(&small()).unwrap();
    // Exactly the bound, in spaces after the object: accepted.
    config.resize(MAX_CONFIG_LEN, b' ');
    parse_config(&config).unwrap();
    config.push(b' ');
    let e = parse_config(&config).unwrap_err();
    assert_eq!(e.code, code::INVALID_CONFIG);
    assert_eq!(
        e.msg,
        "the network configuration on stdin is over 1048576 bytes (1 MiB): refused unread"
    );
    assert_eq!(reply_version(&config), CniVersion::LATEST);
}

#[test]
fn a_repeated_key_is_refused_naming_it() {
    let config = br#"{"cniVersion": "1.1.0", "name": "egress", "type": "egress-cni",
        "ip": {"addresses": ["203.0.113.99/24"], "gateway": "203.0.113.1", "gateway": "203.0.113.2"},
        "fallbackIP": "198.51.100.9", "fallbackIP": "198.51.100.8"}"#;
    let e = parse_config(config).unwrap_err();
    assert_eq!((e.code, e.field.as_deref()), (7, Some("ip.gateway")), "{e}");
    assert_eq!(
        e.msg,
        "duplicate key ip.gateway: each key once (JSON readers differ on which value counts); \
         and 1 more: fallbackIP"
    );
    assert_eq!(
        e.details,
        "duplicate key ip.gateway: each key once (JSON readers differ on which value counts)\n\
         duplicate key fallbackIP: each key once (JSON readers differ on which value counts)"
    );
    // In a list's objects too, and even where the two values agree.
    let config = br#"{"cniVersion": "1.1.0", "name": "egress", "type": "egress-cni",
        "ip": {"addresses": ["203.0.113.99/24"]},
        "redirectRules": [{"destinationIP": "198.51.100.1", "port": 80, "port": 80, "protocol": "TCP"}]}"#;
    let e = parse_config(config).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("redirectRules[0].port"), "{e}");
}

#[test]
fn every_invalid_key_is_reported_at_once() {
    let v = set(small(), "log_level", Some(json!("trace")));
    let v = set(v, "ip.addresses", Some(json!(["203.0.113.99/24", 5])));
    let v = set(v, "keepRoutes", Some(json!([{"gw": "10.0.0.1"}])));
    let v = set(v, "fallbackIp", Some(json!("198.51.100.9")));
    let v = set(
        v,
        "redirectRules",
        Some(json!([{"port": 0, "protocol": "ICMP", "destinationIP": "198.51.100.1"}])),
    );
    let e = parse(&v).unwrap_err();
    // The unknown key first (code 2), then each value in the configuration's order.
    assert_eq!((e.code, e.field.as_deref()), (2, Some("fallbackIp")), "{e}");
    assert_eq!(
        e.msg,
        "unsupported field fallbackIp = \"198.51.100.9\"; and 5 more: ip.addresses[1], \
         redirectRules[0].port, redirectRules[0].protocol, keepRoutes[0].dst, log_level"
    );
    let details: Vec<&str> = e.details.lines().collect();
    assert_eq!(details.len(), 6, "{}", e.details);
    assert!(details[0].starts_with(
        "unsupported field fallbackIp = \"198.51.100.9\": egress-cni does not know this key"
    ));
    assert_eq!(
        &details[1..],
        [
            "invalid ip.addresses[1] `5`: a string",
            "invalid redirectRules[0].port `0`: a port from 1 to 65535",
            "invalid redirectRules[0].protocol `ICMP`: one of TCP, UDP, SCTP (any case)",
            "keepRoutes[0].dst is missing: the network to keep",
            "invalid log_level `trace`: one of panic, error, verbose, debug",
        ]
    );
}

#[test]
fn log_file_names_a_file_in_the_nodes_log_directory_only() {
    let dir = Path::new("/var/log/egress-cni");
    for (log_file, name) in [
        ("egress-1.log", Some("egress-1.log")),
        ("/var/log/egress-cni/egress-1.log", Some("egress-1.log")),
        ("/var/log/egress-cni", None),
        ("/var/log/egress-cni/sub/e.log", None),
        ("/var/log/egress-cni.log", None),
        ("/tmp/egress-router-log", None),
    ] {
        let conf = parse(&set(small(), "log_file", Some(json!(log_file)))).unwrap();
        assert_eq!(conf.log_file(), Some(Path::new(log_file)));
        assert_eq!(
            conf.log_file_in(dir),
            name.map(std::ffi::OsStr::new),
            "{log_file}"
        );
    }
    assert_eq!(parse(&small()).unwrap().log_file_in(dir), None);
}

#[test]
fn control_characters_of_values_never_reach_a_message_raw() {
    let forged = "203.0.113.999/24\negress-cni: error: forged\r\u{1b}[2J\u{85}\u{2028}";
    let e = spec(&set(small(), "ip.addresses", Some(json!([forged])))).unwrap_err();
    let e2 = parse(&set(small(), "log_level", Some(json!(forged)))).unwrap_err();
    let e3 = parse(&set(small(), forged, Some(json!(forged)))).unwrap_err();
    for e in [e, e2, e3] {
        let unsafe_char = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
        assert!(!e.msg.contains(unsafe_char), "{:?}", e.msg);
        assert!(!e.to_string().contains(unsafe_char), "{e:?}");
        let json = e.to_json(CniVersion::LATEST);
        assert!(
            !json["msg"].as_str().unwrap().contains(unsafe_char),
            "{json}"
        );
        assert!(
            e.msg
                .contains(r"\negress-cni: error: forged\r\u{1b}[2J\u{85}\u{2028}"),
            "{e}"
        );
    }
    // Lines of the details stay lines in the reply, and one line in the log.
    let e = CniError::drift(&["a\u{1b}".into(), "b".into()]);
    assert_eq!(e.to_json(CniVersion::LATEST)["details"], "a\\u{1b}\nb");
    assert!(e.to_string().ends_with(": a\\u{1b}; b"), "{e}");
}

#[test]
fn an_ha_pairs_router_is_a_named_standby_with_a_stable_mac() {
    let ha = set(
        set(
            set(small(), "role", Some(json!("standby"))),
            "routerName",
            Some(json!("egress-router")),
        ),
        "stableMac",
        Some(json!("00:00:5e:00:01:33")),
    );
    let conf = parse(&ha).unwrap();
    assert_eq!(conf.role(), egress_core::Role::Standby);
    assert_eq!(conf.router_name(), Some("egress-router"));
    let s = spec(&ha).unwrap();
    // The name the HA sidecar's egress-router gives, whatever the attachment.
    assert_eq!(s.name(), "egress-router");
    assert_eq!(s.stable_mac(), Some([0x00, 0x00, 0x5e, 0x00, 0x01, 0x33]));
    // Without them: an active router named after the attachment, as before.
    let conf = parse(&small()).unwrap();
    assert_eq!(conf.role(), egress_core::Role::Active);
    assert_eq!(
        spec(&small()).unwrap().name(),
        router_name("3f6940ab5ab43bc5", "net1")
    );
    let active = set(small(), "role", Some(json!("active")));
    assert_eq!(parse(&active).unwrap().role(), egress_core::Role::Active);

    // Each bad value names its key (code 7).
    for (key, value) in [
        ("role", json!("backup")),
        ("role", json!(1)),
        ("routerName", json!(7)),
        ("stableMac", json!(["00:00:5e:00:01:33"])),
    ] {
        let e = parse(&set(small(), key, Some(value.clone()))).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), (7, Some(key)), "{value}: {e}");
    }
    for (key, value) in [
        ("routerName", json!("Egress_Router")),
        ("stableMac", json!("00:00:5e:00:01")),
    ] {
        let e = spec(&set(small(), key, Some(value.clone()))).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), (7, Some(key)), "{value}: {e}");
    }
}
