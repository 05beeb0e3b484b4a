//! `RouterSpec::from_json` on any text: a spec that parses prints and parses back to itself
//! and plans; anything else is an `InvalidSpec` error with a message. Never a panic.

#![no_main]

use egress_core::{ErrorKind, RouterSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match RouterSpec::from_json(text) {
        Ok(spec) => {
            let again = RouterSpec::from_json(&spec.to_json()).expect("a printed spec parses");
            assert_eq!(again, spec);
            assert!(!spec.plan().to_string().is_empty());
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
            assert!(!e.to_string().is_empty());
        }
    }
});
