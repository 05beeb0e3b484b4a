//! Entry points for the fuzz targets (feature `fuzzing`; never in a build you ship): the
//! parsers of what egress reads back from a namespace — the crash record, the notes that hold
//! it, the identity notes — on any input. `fuzz/fuzz_targets/crash_record.rs` drives them.

use std::net::Ipv6Addr;

use crate::objects::{
    record::{note, Record, Stores},
    role::Claim,
    Current,
};

/// A text that is a crash record, as the grammar read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashRecord {
    /// The record as egress writes it (the grammar accepts nothing else: it equals the text).
    pub text: String,
    /// The sysctl files a teardown would write back, each as its directory and its path
    /// there.
    pub writes: Vec<(&'static str, String)>,
}

/// The crash record in `text`, or `None` when `text` is not one.
pub fn crash_record(text: &str) -> Option<CrashRecord> {
    let r = Record::decode(text)?;
    Some(CrashRecord {
        text: r.encode().ok()?,
        writes: r
            .restore
            .iter()
            .map(|e| {
                let (dir, rel) = e.write().0.location();
                (dir.path(), rel)
            })
            .collect(),
    })
}

/// The identity notes' claim in `text`, as egress writes it, or `None`.
pub fn identity_notes(text: &str) -> Option<String> {
    Claim::decode(text).map(|c| c.encode())
}

/// Router `name`'s record among `notes` (each a place and a 16-byte address, as the journal
/// table holds them), as egress writes it, and how many of them are its debris.
pub fn notes(name: &str, notes: &[(u32, [u8; 16])]) -> (Option<String>, usize) {
    let now = Current {
        routes: notes
            .iter()
            .map(|(place, addr)| note(Ipv6Addr::from(*addr), *place))
            .collect(),
        ..Current::default()
    };
    let stores = Stores::of(&now, name);
    let record = stores.notes.as_ref().and_then(|r| r.encode().ok());
    (record, stores.debris.len())
}
