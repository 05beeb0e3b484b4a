//! `egress_openshift::parse_destination` on any text: redirects with real ports, or an error
//! that names `EGRESS_DESTINATION`. Never a panic.

#![no_main]

use egress_core::ErrorKind;
use egress_openshift as openshift;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match openshift::parse_destination(text) {
        Ok(d) => {
            assert!(!d.redirects.is_empty() || d.fallback.is_some(), "{d:?}");
            for r in &d.redirects {
                assert!(r.port != 0 && r.to_port != 0, "{r:?}");
            }
        }
        Err(e) => {
            assert_eq!(e.variable(), "EGRESS_DESTINATION");
            assert!(!e.to_string().is_empty());
            assert!(!e.expected().is_empty());
            assert_eq!(egress_core::Error::from(e).kind(), ErrorKind::InvalidSpec);
        }
    }
});
