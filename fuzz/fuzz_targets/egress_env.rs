//! `egress_openshift::from_env` on any environment of `EGRESS_*` variables (and others): a
//! config whose spec prints and parses back to itself and plans, or an error that names an
//! `EGRESS_*` variable. Never a panic.

#![no_main]

use arbitrary::Arbitrary;
use egress_core::{ErrorKind, RouterSpec};
use egress_openshift as openshift;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Var {
    Source,
    Gateway,
    Destination,
    RouterMode,
    Debug,
    Name,
    MacvlanParent,
    MacvlanMode,
    ParentNetns,
    Other(String),
}

impl Var {
    fn name(&self) -> &str {
        match self {
            Var::Source => "EGRESS_SOURCE",
            Var::Gateway => "EGRESS_GATEWAY",
            Var::Destination => "EGRESS_DESTINATION",
            Var::RouterMode => "EGRESS_ROUTER_MODE",
            Var::Debug => "EGRESS_ROUTER_DEBUG",
            Var::Name => "EGRESS_ROUTER_NAME",
            Var::MacvlanParent => "EGRESS_MACVLAN_PARENT",
            Var::MacvlanMode => "EGRESS_MACVLAN_MODE",
            Var::ParentNetns => "EGRESS_MACVLAN_PARENT_NETNS",
            Var::Other(name) => name,
        }
    }
}

fuzz_target!(|env: Vec<(Var, String)>| {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.name(), v.as_str())).collect();
    match openshift::from_env(pairs) {
        Ok(config) => {
            let spec = &config.spec;
            let again = RouterSpec::from_json(&spec.to_json()).expect("a printed spec parses");
            assert_eq!(&again, spec);
            assert!(!spec.plan().to_string().is_empty());
        }
        Err(e) => {
            assert!(e.variable().starts_with("EGRESS_"), "{e:?}");
            assert!(!e.to_string().is_empty());
            assert_eq!(egress_core::Error::from(e).kind(), ErrorKind::InvalidSpec);
        }
    }
});
