//! What egress reads back from a namespace, on any input: a crash record's text is either not
//! one, or exactly what egress writes, and every sysctl it would write back is one entry and
//! one known key beneath `/proc/sys/net`; the identity notes likewise; notes (any places, any
//! addresses) hold a record only when it is one. Never a panic.

#![no_main]

use arbitrary::Arbitrary;
use egress_core::fuzzing;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    text: &'a str,
    /// Notes: a place, whether to tag it as a crash record's note, and the rest of its address.
    notes: Vec<(u8, bool, [u8; 14])>,
}

fuzz_target!(|input: Input| {
    if let Some(r) = fuzzing::crash_record(input.text) {
        assert_eq!(r.text, input.text);
        for (dir, rel) in &r.writes {
            assert!(dir.starts_with("/proc/sys/net/"), "{dir}");
            let parts: Vec<&str> = rel.split('/').collect();
            assert!(parts.len() <= 2, "{rel}");
            assert!(parts.iter().all(|p| !p.is_empty() && *p != "." && *p != ".."), "{rel}");
        }
    }
    if let Some(claim) = fuzzing::identity_notes(input.text) {
        assert_eq!(claim, input.text);
    }
    let notes: Vec<(u32, [u8; 16])> = input
        .notes
        .iter()
        .map(|(place, tagged, rest)| {
            let mut addr = [0u8; 16];
            addr[..2].copy_from_slice(if *tagged { &[0x65, 0x67] } else { &rest[..2] });
            addr[2..].copy_from_slice(rest);
            (u32::from(*place), addr)
        })
        .collect();
    let name = input.text.split(' ').nth(1).and_then(|t| t.strip_prefix("r=")).unwrap_or("r");
    let (record, debris) = fuzzing::notes(name, &notes);
    if let Some(text) = record {
        assert!(fuzzing::crash_record(&text).is_some(), "{text:?}");
    }
    assert!(debris <= notes.len());
});
