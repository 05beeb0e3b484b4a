//! The markers an operation puts in the journal table while it runs, so that a watcher (of
//! another process) leaves the router alone meanwhile:
//!
//! - the *teardown marker*, `blackhole 6578:<apply id>:<since>::/128 table 1701278323 proto
//!   158` ("ex"), where `since` is the teardown's start in `CLOCK_BOOTTIME` seconds: a marker
//!   older than [`TEARDOWN_AT_MOST`] was left by a teardown that was killed, and is looked past;
//! - the *role change marker*, `blackhole 6563:<apply id>::/128 …` ("ec"), put first in a
//!   promotion's or demotion's flight of requests and taken away once it is verified.
//!
//! Both are keyed by the apply id of the router's crash record, which the record ties to the
//! router's full name. The markers of 7508fe2 (format 1) were keyed by the name's 16-bit link
//! group marker instead, and carried no time: they are still recognised (with the router's
//! record proven, the hash is only a hint among its own objects), their age unknown.

use std::{net::Ipv6Addr, time::Duration};

use super::{
    notes::{address, is_tagged, note},
    Stores, JOURNAL_TABLE,
};
use crate::objects::{link::group_marker, route::Route, Current};

/// The tag of a teardown marker (`6578:`, "ex").
const TEARDOWN_TAG: [u8; 2] = [0x65, 0x78];
/// The tag of a role change marker (`6563:`, "ec").
const ROLE_CHANGE_TAG: [u8; 2] = [0x65, 0x63];

/// How long a teardown may take: a marker older than this was left by one that did not finish
/// (killed). A teardown takes tens of milliseconds; 300 side by side took 3 s at most.
pub(crate) const TEARDOWN_AT_MOST: Duration = Duration::from_secs(10);

/// `CLOCK_BOOTTIME` in whole seconds (at least 1: 0 is the "no time" of a format 1 marker).
/// Namespaces share it (a time namespace could offset it: egress never runs in one).
pub(crate) fn boottime() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes one `timespec` into `ts`, which lives across the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    match rc {
        0 => u32::try_from(ts.tv_sec).unwrap_or(u32::MAX).max(1),
        _ => 1,
    }
}

/// A marker as read back: its key (an apply id; format 1: a name's group marker) and, for a
/// teardown marker of format 2, when it was put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Marker {
    key: u32,
    since: Option<u32>,
}

/// `r` as a marker tagged `tag`: a note of place 1 whose address holds a key, then (teardown
/// markers) a time, then zeros; `None` for anything else.
fn parse(r: &Route, tag: [u8; 2], timed: bool) -> Option<Marker> {
    let b = address(r);
    let zeros_from = if timed { 10 } else { 6 };
    if !is_tagged(r, tag) || r.metric() != 1 || b[zeros_from..].iter().any(|x| *x != 0) {
        return None;
    }
    let since = u32::from_be_bytes([b[6], b[7], b[8], b[9]]);
    Some(Marker {
        key: u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
        since: (since != 0).then_some(since),
    })
}

fn marker_route(tag: [u8; 2], key: u32, since: u32) -> Route {
    let mut bytes = [0u8; 16];
    bytes[..2].copy_from_slice(&tag);
    bytes[2..6].copy_from_slice(&key.to_be_bytes());
    bytes[6..10].copy_from_slice(&since.to_be_bytes());
    note(Ipv6Addr::from(bytes), 1)
}

/// The marker a teardown of the router with apply id `id` puts while it runs, started at
/// `since` ([`boottime`]).
pub(crate) fn teardown_marker(id: u32, since: u32) -> Route {
    marker_route(TEARDOWN_TAG, id, since)
}

/// The marker a role change of the router with apply id `id` puts while it runs.
pub(crate) fn role_change_marker(id: u32) -> Route {
    marker_route(ROLE_CHANGE_TAG, id, 0)
}

/// Whether marker `m` is router `name`'s, whose record holds apply id `id`: keyed by the id,
/// or (format 1, no time) by the name's group marker.
fn is_of(m: Marker, name: &str, id: u32) -> bool {
    m.key == id || (m.since.is_none() && m.key == group_marker(name))
}

/// A teardown of a router under way (or interrupted), as its marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TeardownSeen {
    /// How long ago it started, when the marker says (format 2).
    pub age: Option<Duration>,
}

impl TeardownSeen {
    /// Whether the marker is older than [`TEARDOWN_AT_MOST`]: left by a teardown that was
    /// killed. A time ahead of the clock by as much is taken for a leftover too.
    pub(crate) fn is_stale(&self) -> bool {
        self.age.is_some_and(|a| a > TEARDOWN_AT_MOST)
    }
}

/// Router `name`'s teardown markers in `now` (the router's record gives its apply id), with
/// the routes; empty without a record.
pub(crate) fn teardown_markers<'a>(now: &'a Current, name: &str) -> Vec<(&'a Route, TeardownSeen)> {
    let Some(id) = Stores::of(now, name).record().map(|r| r.id) else {
        return Vec::new();
    };
    let clock = boottime();
    now.routes
        .iter()
        .filter_map(|r| Some((r, parse(r, TEARDOWN_TAG, true)?)))
        .filter(|(_, m)| is_of(*m, name, id))
        .map(|(r, m)| {
            let age = m
                .since
                .map(|s| Duration::from_secs(u64::from(clock.abs_diff(s))));
            (r, TeardownSeen { age })
        })
        .collect()
}

/// Whether a teardown of router `name` is running in `now` (or was interrupted): the youngest
/// of its markers.
pub(crate) fn tearing_down(now: &Current, name: &str) -> Option<TeardownSeen> {
    teardown_markers(now, name)
        .into_iter()
        .map(|(_, t)| t)
        .min_by_key(|t| t.age.unwrap_or(Duration::ZERO))
}

/// Router `name`'s role change marker in `now`, if a role change is running (or a crash left
/// it); `None` without a record.
pub(crate) fn role_change_in<'a>(now: &'a Current, name: &str) -> Option<&'a Route> {
    let id = Stores::of(now, name).record()?.id;
    now.routes.iter().find(|r| {
        r.table == JOURNAL_TABLE
            && parse(r, ROLE_CHANGE_TAG, false).is_some_and(|m| is_of(m, name, id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_carry_the_apply_id_and_a_teardown_its_time() {
        let t = teardown_marker(0x1a2b_3c4d, 77);
        assert_eq!(
            parse(&t, TEARDOWN_TAG, true),
            Some(Marker {
                key: 0x1a2b_3c4d,
                since: Some(77)
            })
        );
        assert_eq!(parse(&t, ROLE_CHANGE_TAG, false), None);
        let c = role_change_marker(9);
        assert_eq!(
            parse(&c, ROLE_CHANGE_TAG, false),
            Some(Marker {
                key: 9,
                since: None
            })
        );
        // Format 1 (7508fe2): the name's group marker, no time; its own router's only.
        let legacy = Marker {
            key: group_marker("egress-1"),
            since: None,
        };
        assert!(is_of(legacy, "egress-1", 5));
        assert!(!is_of(legacy, "egress-2", 5));
        // A format 2 marker is keyed by the id, never by a hash.
        let timed = Marker {
            key: group_marker("egress-1"),
            since: Some(3),
        };
        assert!(!is_of(timed, "egress-1", 5));
    }

    #[test]
    fn a_marker_with_more_than_its_fields_is_not_one() {
        let mut b = address(&teardown_marker(1, 2));
        b[15] = 1;
        assert_eq!(parse(&note(Ipv6Addr::from(b), 1), TEARDOWN_TAG, true), None);
        let mut c = address(&role_change_marker(1));
        c[7] = 1;
        assert_eq!(
            parse(&note(Ipv6Addr::from(c), 1), ROLE_CHANGE_TAG, false),
            None
        );
        // Another place than 1.
        assert_eq!(
            parse(
                &note(Ipv6Addr::from(address(&teardown_marker(1, 2))), 2),
                TEARDOWN_TAG,
                true
            ),
            None
        );
    }

    #[test]
    fn a_teardown_marker_is_stale_past_the_bound_either_way() {
        let at = |secs: u64| TeardownSeen {
            age: Some(Duration::from_secs(secs)),
        };
        assert!(!at(0).is_stale());
        assert!(!at(TEARDOWN_AT_MOST.as_secs()).is_stale());
        assert!(at(TEARDOWN_AT_MOST.as_secs() + 1).is_stale());
        // Format 1: its age is unknown.
        assert!(!TeardownSeen { age: None }.is_stale());
    }
}
