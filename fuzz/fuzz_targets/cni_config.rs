//! `egress_cni::parse_config` on any bytes (a CNI network configuration on stdin), and a
//! configuration that parses mapped onto the router of an attachment: a spec that prints and
//! parses back to itself and plans, and an ADD result with every address on the macvlan;
//! anything else is a CNI error with the spec's code and a message that is one line of the
//! log whatever the input holds (control characters escaped). Never a panic.

#![no_main]

use egress_cni::{self as cni, code, CniVersion, Invocation};
use egress_core::{LinkState, RouterSpec};
use libfuzzer_sys::fuzz_target;

/// What the plugin logs of an error, and the `msg` a runtime logs: one line, nothing a
/// terminal or a log reader would take as control.
fn assert_one_clean_line(e: &cni::CniError) {
    let unsafe_char = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    assert!(!e.to_string().contains(unsafe_char), "{e:?}");
    let reply = e.to_json(CniVersion::LATEST);
    assert!(!reply["msg"].as_str().unwrap_or_default().contains(unsafe_char), "{reply}");
}

fuzz_target!(|data: &[u8]| {
    let conf = match cni::parse_config(data) {
        Ok(conf) => conf,
        Err(e) => {
            assert_one_clean_line(&e);
            assert!(
                matches!(
                    e.code,
                    code::INCOMPATIBLE_VERSION
                        | code::UNSUPPORTED_FIELD
                        | code::DECODING_FAILURE
                        | code::INVALID_CONFIG
                ),
                "{e:?}"
            );
            assert!(!e.msg.is_empty());
            assert_eq!(e.to_json(CniVersion::LATEST)["code"], e.code);
            return;
        }
    };
    let inv = Invocation::from_env([
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "0123456789abcdef"),
        ("CNI_NETNS", "/run/netns/fuzz"),
        ("CNI_IFNAME", "net1"),
    ])
    .expect("a valid environment");
    let master = conf.master().unwrap_or("eth1").to_string();
    match conf.router_spec(&inv, &master) {
        Ok(spec) => {
            let again = RouterSpec::from_json(&spec.to_json()).expect("a printed spec parses");
            assert_eq!(again, spec);
            assert!(!spec.plan().to_string().is_empty());
            let link = LinkState {
                name: "net1".into(),
                index: 2,
                kind: Some("macvlan".into()),
                mode: None,
                mtu: 1500,
                mac: "02:00:00:00:00:01".into(),
                up: true,
                created: true,
            };
            let result = cni::add_result(
                conf.cni_version(),
                &spec,
                std::path::Path::new("/run/netns/fuzz"),
                Some(&link),
            )
            .expect("a result");
            assert_eq!(
                result["ips"].as_array().map(Vec::len),
                Some(spec.sources().len())
            );
        }
        Err(e) => {
            assert_eq!(e.code, code::INVALID_CONFIG, "{e:?}");
            assert!(e.field.is_some(), "{e:?}");
            assert_one_clean_line(&e);
        }
    }
});
