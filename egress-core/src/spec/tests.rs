//! Unit tests of the spec: validation, the builder and the JSON form.

use super::{raw::RawRedirect, *};
use crate::ErrorKind;

fn base() -> RouterSpecBuilder {
    RouterSpec::builder("egress-1")
        .netns_name("pod")
        .macvlan("eth1", MacvlanMode::Private)
        .source("203.0.113.99/24")
        .gateway("203.0.113.1")
}

fn field_of(e: Error) -> String {
    match e {
        Error::InvalidSpec { field, .. } => field,
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
}

#[test]
fn minimal_spec_builds_with_defaults() {
    let spec = base().build().unwrap();
    assert_eq!(spec.internal(), "eth0");
    assert_eq!(spec.external().link_name(), "macvlan0");
    assert_eq!(spec.announce(), 1);
    assert_eq!(spec.sources()[0].prefix(), 24);
    assert_eq!(spec.table_name(), "egress_egress_1");
}

#[test]
fn bare_source_is_a_host_address() {
    let spec = RouterSpec::builder("r")
        .adopt("macvlan0")
        .source("203.0.113.99")
        .source("2001:db8::99")
        .gateway("203.0.113.1")
        .gateway("2001:db8::1")
        .build()
        .unwrap();
    assert_eq!(spec.sources()[0].prefix(), 32);
    assert_eq!(spec.sources()[1].prefix(), 128);
    assert_eq!(spec.snat6().unwrap().to_string(), "2001:db8::99");
}

#[test]
fn bad_names_are_rejected() {
    for name in ["", "Egress", "egress_1", "a b", &"x".repeat(33)] {
        let e = RouterSpec::builder(name)
            .adopt("m")
            .source("203.0.113.9")
            .gateway("203.0.113.1")
            .build()
            .unwrap_err();
        assert_eq!(field_of(e), "name", "{name}");
    }
}

#[test]
fn invalid_spec_display_names_field_value_and_expectation() {
    let e = base().source("203.0.113.300/24").build().unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid sources[1] `203.0.113.300/24`: an IPv4 or IPv6 address with an optional /prefix"
    );
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
}

#[test]
fn every_source_rule() {
    let no_sources = RouterSpec::builder("r").adopt("m").build().unwrap_err();
    assert_eq!(field_of(no_sources), "sources");
    assert_eq!(
        field_of(base().source("203.0.113.9/33").build().unwrap_err()),
        "sources[1]"
    );
    assert_eq!(
        field_of(base().source("2001:db8::1/129").build().unwrap_err()),
        "sources[1]"
    );
    assert_eq!(
        field_of(base().source("224.0.0.1").build().unwrap_err()),
        "sources[1]"
    );
    assert_eq!(
        field_of(base().source("127.0.0.1").build().unwrap_err()),
        "sources[1]"
    );
    assert_eq!(
        field_of(base().source("203.0.113.99/24").build().unwrap_err()),
        "sources[1]"
    );
    assert_eq!(
        field_of(base().source("999.1.1.1").build().unwrap_err()),
        "sources[1]"
    );
}

#[test]
fn gateway_rules() {
    let wrong_family = base().gateway("2001:db8::1").build().unwrap_err();
    assert_eq!(field_of(wrong_family), "gateways[1]");
    let two = base().gateway("203.0.113.2").build().unwrap_err();
    assert_eq!(field_of(two), "gateways[1]");
    let missing = RouterSpec::builder("r")
        .adopt("m")
        .source("203.0.113.9")
        .build()
        .unwrap_err();
    assert_eq!(field_of(missing), "gateways");
    let missing6 = base().source("2001:db8::9/64").build().unwrap_err();
    assert!(missing6.to_string().contains("IPv6 gateway"), "{missing6}");
}

#[test]
fn redirect_rules() {
    let r = |p: u64, proto: &str, to: &str, to_port: Option<u64>| {
        let mut b = base();
        b.raw.redirects.push(RawRedirect {
            protocol: proto.into(),
            port: p,
            to: to.into(),
            to_port,
        });
        b
    };
    assert_eq!(
        field_of(r(0, "tcp", "198.51.100.1", None).build().unwrap_err()),
        "redirects[0].port"
    );
    assert_eq!(
        field_of(r(65536, "tcp", "198.51.100.1", None).build().unwrap_err()),
        "redirects[0].port"
    );
    assert_eq!(
        field_of(r(80, "icmp", "198.51.100.1", None).build().unwrap_err()),
        "redirects[0].protocol"
    );
    assert_eq!(
        field_of(r(80, "tcp", "198.51.100.1", Some(0)).build().unwrap_err()),
        "redirects[0].to_port"
    );
    assert_eq!(
        field_of(r(80, "tcp", "2001:db8::1", None).build().unwrap_err()),
        "redirects[0].to"
    );
    assert_eq!(
        field_of(r(80, "tcp", "nope", None).build().unwrap_err()),
        "redirects[0].to"
    );
    // Unique per protocol: 80/tcp twice is an error, 80/tcp beside 80/udp is fine.
    let dup = r(80, "tcp", "198.51.100.1", None)
        .redirect(Protocol::Tcp, 80, "198.51.100.2", None)
        .build()
        .unwrap_err();
    assert_eq!(field_of(dup), "redirects[1].port");
    let spec = r(80, "tcp", "198.51.100.1", None)
        .redirect(Protocol::Udp, 80, "198.51.100.2", None)
        .build()
        .unwrap();
    assert_eq!(spec.redirects()[0].to_port, 80);
    // Protocols are case-insensitive, as the OpenShift operator renders `UDP`.
    assert!(r(53, "UDP", "198.51.100.1", None).build().is_ok());
}

#[test]
fn fallback_and_kept_route_rules() {
    assert_eq!(
        field_of(
            base()
                .fallback("198.51.100.9")
                .fallback("198.51.100.8")
                .build()
                .unwrap_err()
        ),
        "fallback[1]"
    );
    assert_eq!(
        field_of(base().fallback("2001:db8::9").build().unwrap_err()),
        "fallback[0]"
    );
    assert_eq!(
        field_of(
            base()
                .keep_route("10.128.0.1/14", None)
                .build()
                .unwrap_err()
        ),
        "kept_routes[0].to"
    );
    assert_eq!(
        field_of(base().keep_route("0.0.0.0/0", None).build().unwrap_err()),
        "kept_routes[0].to"
    );
    assert_eq!(
        field_of(
            base()
                .keep_route("10.128.0.0/14", Some("2001:db8::1"))
                .build()
                .unwrap_err()
        ),
        "kept_routes[0].via"
    );
}

#[test]
fn link_rules() {
    assert_eq!(
        field_of(base().internal("macvlan0").build().unwrap_err()),
        "internal"
    );
    assert_eq!(
        field_of(
            base()
                .internal("a-very-long-link-name")
                .build()
                .unwrap_err()
        ),
        "internal"
    );
    assert_eq!(
        field_of(base().mac("01:00:00:00:00:01").build().unwrap_err()),
        "external.macvlan.mac"
    );
    assert_eq!(
        field_of(base().mac("02:00:00:00:00").build().unwrap_err()),
        "external.macvlan.mac"
    );
    assert_eq!(
        field_of(base().mtu(67).build().unwrap_err()),
        "external.macvlan.mtu"
    );
    let v6 = base()
        .source("2001:db8::9/64")
        .gateway("2001:db8::1")
        .mtu(1000);
    assert_eq!(field_of(v6.build().unwrap_err()), "external.macvlan.mtu");
    assert_eq!(
        field_of(base().announce(17).build().unwrap_err()),
        "announce"
    );
    let no_external = RouterSpec::builder("r")
        .source("203.0.113.9")
        .gateway("203.0.113.1");
    assert_eq!(field_of(no_external.build().unwrap_err()), "external");
    assert_eq!(
        field_of(base().netns_path("relative/ns").build().unwrap_err()),
        "netns.path"
    );
}

#[test]
fn json_round_trip() {
    let json = r#"{
      "name": "egress-1",
      "netns": {"path": "/run/netns/pod"},
      "external": {"macvlan": {"parent": "eth1", "parent_netns": {"pid": 1}, "mode": "private",
                               "mtu": 1500, "mac": "02:00:00:00:00:99", "name": "macvlan0"}},
      "internal": "eth0",
      "sources": ["203.0.113.99/24", "2001:db8:1::99/64"],
      "gateways": ["203.0.113.1", "2001:db8:1::1"],
      "redirects": [{"protocol": "tcp", "port": 80, "to": "198.51.100.25", "to_port": 8080}],
      "fallback": ["198.51.100.9"],
      "kept_routes": [{"to": "10.128.0.0/14", "via": "10.129.0.1"}],
      "announce": 2
    }"#;
    let spec = RouterSpec::from_json(json).unwrap();
    assert_eq!(spec.netns(), &Netns::Path("/run/netns/pod".into()));
    let External::Macvlan(m) = spec.external() else {
        panic!()
    };
    assert_eq!(m.parent_netns(), &Netns::Pid(1));
    assert_eq!(m.mac(), Some([2, 0, 0, 0, 0, 0x99]));
    assert_eq!(spec.redirects()[0].to_port, 8080);
    assert_eq!(RouterSpec::from_json(&spec.to_json()).unwrap(), spec);
    let built = base().build().unwrap();
    assert_eq!(RouterSpec::from_json(&built.to_json()).unwrap(), built);
}

#[test]
fn json_unknown_key_is_named() {
    let e = RouterSpec::from_json(
        r#"{"name": "r", "external": {"adopt": "m"}, "sources": ["203.0.113.9"],
            "gateways": ["203.0.113.1"], "fallbackIP": "198.51.100.9"}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("unknown field `fallbackIP`"), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
}

#[test]
fn table_names_map_back_to_router_names() {
    assert_eq!(table_name("egress-1"), "egress_egress_1");
    assert_eq!(
        router_of_table("egress_egress_1").as_deref(),
        Some("egress-1")
    );
    assert_eq!(router_of_table("filter"), None);
}

#[test]
fn every_invalid_field_is_reported_at_once() {
    let e = RouterSpec::from_json(
        r#"{"name": "Egress_1", "external": {"macvlan": {"parent": "eth%d", "mac": "01:00:00:00:00:01"}},
            "sources": ["203.0.113.99/24", "203.0.113.300"],
            "gateways": ["203.0.113.99"],
            "redirects": [{"protocol": "icmp", "port": 0, "to": "203.0.113.99"}],
            "fallback": ["198.51.100.9"],
            "kept_routes": [{"to": "10.0.0.0/8"}, {"to": "10.0.0.0/8", "via": "10.0.0.1"}],
            "announce": 99}"#,
    )
    .unwrap_err();
    let fields: Vec<String> = e.invalid_fields().into_iter().map(|f| f.field).collect();
    assert_eq!(
        fields,
        [
            "name",
            "external.macvlan.parent",
            "external.macvlan.mac",
            "sources[1]",
            "gateways[0]",
            "redirects[0].protocol",
            "redirects[0].port",
            "redirects[0].to",
            "kept_routes[1].to",
            "announce",
        ],
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    assert!(e.to_string().starts_with("invalid name `Egress_1`"), "{e}");
    assert!(e.to_string().contains("and 9 more"), "{e}");
}

#[test]
fn the_egress_source_is_never_a_next_hop_or_a_destination() {
    let own = "an address other than an egress source (the router's own address)";
    for (builder, field) in [
        (
            RouterSpec::builder("r")
                .adopt("m")
                .source("203.0.113.9/24")
                .gateway("203.0.113.9"),
            "gateways[0]",
        ),
        (base().fallback("203.0.113.99"), "fallback[0]"),
        (
            base().redirect(Protocol::Tcp, 80, "203.0.113.99", None),
            "redirects[0].to",
        ),
    ] {
        let e = builder.build().unwrap_err();
        let f = &e.invalid_fields()[0];
        assert_eq!((f.field.as_str(), f.expected.as_str()), (field, own), "{e}");
    }
}

/// An egress source with prefix /0 (either family) is invalid, with the field and the value
/// named; /32 and /128 are valid (OpenShift's script added the egress IP as /32, the gateway
/// is reached through its host route).
#[test]
fn a_source_prefix_of_zero_is_invalid_and_a_host_prefix_is_not() {
    let e = RouterSpec::builder("r")
        .adopt("m")
        .source("203.0.113.99/0")
        .source("2001:db8:2::99/0")
        .gateway("203.0.113.1")
        .gateway("2001:db8:2::1")
        .build()
        .unwrap_err();
    let invalid = e.invalid_fields();
    let fields: Vec<(&str, &str, &str)> = invalid
        .iter()
        .map(|f| (f.field.as_str(), f.value.as_str(), f.expected.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            (
                "sources[0]",
                "203.0.113.99/0",
                "a prefix length from 1 to 32 (/0 would put every address on the external link)"
            ),
            (
                "sources[1]",
                "2001:db8:2::99/0",
                "a prefix length from 1 to 128 (/0 would put every address on the external \
                 link)"
            ),
        ],
        "{e}"
    );
    for source in ["203.0.113.99/32", "2001:db8:2::99/128"] {
        let gateway = if source.contains(':') {
            "2001:db8:2::1"
        } else {
            "203.0.113.1"
        };
        RouterSpec::builder("r")
            .adopt("m")
            .source(source)
            .gateway(gateway)
            .build()
            .unwrap();
    }
}

/// The broadcast address of an egress subnet (IPv4) and its network address (both families:
/// in IPv6 the subnet-router anycast address, which the forwarding router answers itself) are
/// no host: invalid as a gateway, a redirect's destination or a fallback, each field named.
/// Subnets without them (/31, /127) do not restrict.
#[test]
fn an_egress_subnet_s_broadcast_and_network_addresses_are_no_destination() {
    let dual = || base().source("2001:db8:2::99/64").gateway("2001:db8:2::1");
    let expect = |what: &str, net: &str| {
        format!("an address other than the {what} of the egress subnet {net}")
    };
    let cases = [
        (
            dual().fallback("203.0.113.255"),
            "fallback[0]",
            expect("broadcast address", "203.0.113.0/24"),
        ),
        (
            dual().fallback("203.0.113.0"),
            "fallback[0]",
            expect("network address", "203.0.113.0/24"),
        ),
        (
            dual().redirect(Protocol::Tcp, 80, "203.0.113.255", None),
            "redirects[0].to",
            expect("broadcast address", "203.0.113.0/24"),
        ),
        (
            dual().redirect(Protocol::Udp, 53, "2001:db8:2::", None),
            "redirects[0].to",
            expect("network address", "2001:db8:2::/64"),
        ),
        (
            RouterSpec::builder("r")
                .adopt("m")
                .source("203.0.113.99/24")
                .gateway("203.0.113.255"),
            "gateways[0]",
            expect("broadcast address", "203.0.113.0/24"),
        ),
        (
            RouterSpec::builder("r")
                .adopt("m")
                .source("2001:db8:2::99/64")
                .gateway("2001:db8:2::"),
            "gateways[0]",
            expect("network address", "2001:db8:2::/64"),
        ),
    ];
    for (builder, field, expected) in cases {
        let e = builder.build().unwrap_err();
        let invalid = e.invalid_fields();
        let f = &invalid[0];
        assert_eq!(
            (invalid.len(), f.field.as_str(), f.expected.as_str()),
            (1, field, expected.as_str()),
            "{e}"
        );
    }
    // A /31 (RFC 3021) and a /127 (RFC 6164): both addresses are hosts.
    RouterSpec::builder("r")
        .adopt("m")
        .source("203.0.113.1/31")
        .gateway("203.0.113.0")
        .source("2001:db8:2::1/127")
        .gateway("2001:db8:2::")
        .build()
        .unwrap();
}

#[test]
fn kept_routes_are_unique_and_link_names_have_no_template() {
    let dup = base()
        .keep_route("10.128.0.0/14", None)
        .keep_route("10.128.0.0/14", Some("192.0.2.1"))
        .build()
        .unwrap_err();
    assert_eq!(field_of(dup), "kept_routes[1].to");
    assert_eq!(
        field_of(base().internal("eth%d").build().unwrap_err()),
        "internal"
    );
    assert_eq!(
        field_of(base().link_name("mv%d").build().unwrap_err()),
        "external.macvlan.name"
    );
}

#[test]
fn a_misplaced_builder_option_is_reported_with_the_rest() {
    let e = RouterSpec::builder("r")
        .mtu(1400)
        .adopt("m")
        .source("nope")
        .build()
        .unwrap_err();
    let fields: Vec<String> = e.invalid_fields().into_iter().map(|f| f.field).collect();
    assert_eq!(fields, ["external.macvlan.mtu", "sources[0]"], "{e}");
}

#[test]
fn the_probe_is_opt_in_validated_and_round_trips_through_json() {
    assert_eq!(base().build().unwrap().probe(), None);
    assert!(!base().build().unwrap().to_json().contains("probe"));

    let spec = base()
        .probe(std::time::Duration::from_millis(150))
        .build()
        .unwrap();
    assert_eq!(spec.probe(), Some(std::time::Duration::from_millis(150)));
    assert_eq!(spec.to_json_value()["probe"]["timeout_ms"], 150);
    assert_eq!(RouterSpec::from_json(&spec.to_json()).unwrap(), spec);

    // In the JSON form, without a timeout: the default.
    let mut json = base().build().unwrap().to_json_value();
    json["probe"] = serde_json::json!({});
    let spec = RouterSpec::from_json_value(json.clone()).unwrap();
    assert_eq!(spec.probe(), Some(crate::DEFAULT_PROBE_TIMEOUT));

    for (timeout, expected) in [
        (serde_json::json!({"timeout_ms": 0}), "probe.timeout_ms"),
        (
            serde_json::json!({"timeout_ms": 10_001}),
            "probe.timeout_ms",
        ),
    ] {
        json["probe"] = timeout;
        let e = RouterSpec::from_json_value(json.clone()).unwrap_err();
        assert_eq!(field_of(e), expected);
    }
    json["probe"] = serde_json::json!({"timeout": 5});
    let e = RouterSpec::from_json_value(json).unwrap_err();
    assert!(e.to_string().contains("unknown field `timeout`"), "{e}");
    let e = base()
        .probe(std::time::Duration::from_micros(500))
        .build()
        .unwrap_err();
    assert_eq!(field_of(e), "probe.timeout_ms");
}

#[test]
fn local_ports_are_validated_named_and_round_trip_through_json() {
    let spec = base()
        .redirect(Protocol::Tcp, 80, "198.51.100.25", None)
        .fallback("198.51.100.9")
        .local_port(Protocol::Tcp, 9100)
        // Another protocol on a redirected port is the router's own.
        .local_port(Protocol::Udp, 80)
        .build()
        .unwrap();
    assert_eq!(
        spec.local_ports(),
        [
            LocalPort {
                protocol: Protocol::Tcp,
                port: 9100
            },
            LocalPort {
                protocol: Protocol::Udp,
                port: 80
            }
        ]
    );
    assert_eq!(RouterSpec::from_json(&spec.to_json()).unwrap(), spec);
    // Absent from the JSON form when empty, as redirects are.
    assert!(base()
        .build()
        .unwrap()
        .to_json_value()
        .get("local_ports")
        .is_none());

    let e = base().local_port(Protocol::Tcp, 0).build().unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid local_ports[0].port `0`: a port from 1 to 65535"
    );
    let e = RouterSpec::from_json(
        r#"{"name": "r", "external": {"adopt": "macvlan0"}, "sources": ["203.0.113.99"],
            "gateways": ["203.0.113.1"],
            "local_ports": [{"protocol": "icmp", "port": 1}, {"protocol": "tcp", "port": 65536}]}"#,
    )
    .unwrap_err();
    let fields: Vec<String> = e.invalid_fields().into_iter().map(|f| f.field).collect();
    assert_eq!(fields, ["local_ports[0].protocol", "local_ports[1].port"]);

    let e = base()
        .local_port(Protocol::Tcp, 9100)
        .local_port(Protocol::Tcp, 9100)
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid local_ports[1].port `tcp/9100`: a local port not listed before"
    );
    // A port a redirect takes (in any family, whatever the case of its protocol) is a
    // conflict that names the redirect.
    let e = base()
        .redirect(Protocol::Tcp, 80, "198.51.100.25", Some(8080))
        .local_port(Protocol::Udp, 53)
        .local_port(Protocol::Tcp, 80)
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid local_ports[1].port `tcp/80`: a port no redirect takes (redirects[0] sends \
         tcp/80 to 198.51.100.25)"
    );
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    let mut b = base().local_port(Protocol::Udp, 53);
    b.raw.redirects.push(RawRedirect {
        protocol: "UDP".into(),
        port: 53,
        to: "198.51.100.26".into(),
        to_port: None,
    });
    assert_eq!(field_of(b.build().unwrap_err()), "local_ports[0].port");
}
