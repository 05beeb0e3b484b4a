//! The crash record: what a router replaced, kept in the kernel so that a teardown restores it
//! even after the process that applied it is gone.
//!
//! One [`Record`] (the sysctl values the router replaced, the adopted link's state, which
//! default routes it saved, an apply id) is kept in two places that no single outside change
//! removes together:
//! - the comment of the router's nftables table (a flush of routing tables leaves it);
//! - *notes* ([`notes`]): the record's text in the addresses of IPv6 `blackhole` routes with
//!   protocol 158 in the journal routing table [`JOURNAL_TABLE`], which no rule ever looks up
//!   (a flush of nftables leaves them). They are written first, before anything is replaced
//!   (so the macvlan a router creates never exists without them). Notes of two records (two
//!   applies racing) never mix: they are told apart by their apply id.
//!
//! The default routes a router replaced are copied, exactly as they were, into two routing
//! tables, [`JOURNAL_TABLE`] and [`MIRROR_TABLE`]; the record lists their fingerprints, so
//! that a foreign route put into those tables is never taken for a saved one.
//!
//! A recorded original is never overwritten by a current value: `ensure` writes a damaged
//! place again from the other one, and only adds what it is about to replace and the record
//! lacks: the fingerprints of default routes, and the value of an adopted link's sysctl the
//! record has no entry for (a record of a version that did not set that key, or a value that
//! was already right at apply and was changed since).
//!
//! Both places can be forged by anyone with `CAP_NET_ADMIN` in the namespace, so the text is
//! parsed with a strict grammar ([`Record::parse`]) into typed values: a restore entry names a
//! family, `all`, `default` or a link name as the kernel allows one, a [`Knob`] of that family,
//! and a value in the knob's range. Anything else is not a record, and nothing it names is
//! acted on.

use std::{collections::BTreeMap, fmt};

use tracing::warn;

use super::{
    change::boxed,
    link::{group_marker, is_macvlan, Link, LinkRef},
    role::Claim,
    route::{self, DeleteRoute, RestoreRoute, Route},
    sysctl::{self, RestoreSysctls},
    Current, Inverse, KernelObject, Step,
};
use crate::{
    drift::Drift,
    error::{Error, Result},
    kernel::ifname::IfName,
    kernel::procfs::{ConfEntry, ConfName, Family, Knob, SysctlKey},
    spec::validate_name,
};

mod change;
mod markers;
mod notes;

pub(crate) use self::{
    change::{mark_role_changing, DeleteNotes, ROLE_CHANGE},
    markers::{
        boottime, role_change_in, teardown_marker, teardown_markers, tearing_down, TEARDOWN_AT_MOST,
    },
    notes::{is_tagged, note, note_id, read_text_notes, text_notes},
};

/// The routing table that keeps the crash record's notes and a copy of the default routes a
/// router replaced (`ip route show table 1701278323`: "egrs").
pub const JOURNAL_TABLE: u32 = 0x6567_7273;
/// The routing table that keeps a second copy of the replaced default routes ("egrm").
pub const MIRROR_TABLE: u32 = 0x6567_726d;
/// How the notes' addresses begin (`6567:` is "eg"), for the plan.
pub(crate) const NOTE_PREFIX: &str = "6567:";

const MAGIC: &str = "egress/2";
/// The kernel keeps at most 256 bytes of table userdata: a 2-byte TLV header, the comment and
/// its NUL.
const MAX_RECORD: usize = 253;

/// The other copy table.
pub(crate) fn other_copy_table(table: u32) -> u32 {
    if table == JOURNAL_TABLE {
        MIRROR_TABLE
    } else {
        JOURNAL_TABLE
    }
}

/// One sysctl value a router replaced, to write back at teardown: a family, a conf entry, a
/// [`Knob`] of the family, and its value, within the knob's range ([`Restore::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Restore {
    family: Family,
    entry: ConfEntry,
    knob: Knob,
    value: u8,
}

impl Restore {
    /// The entry that writes `value` back to `knob` of `entry`; `None` when the knob does not
    /// exist in `family` or the value is out of its range.
    fn new(family: Family, entry: ConfEntry, knob: Knob, value: i64) -> Option<Restore> {
        let value = u8::try_from(value).ok()?;
        (knob.exists_in(family) && knob.row().values.contains(&value)).then_some(Restore {
            family,
            entry,
            knob,
            value,
        })
    }

    /// The entry that writes `value` to `key` back; an error naming them when the record
    /// cannot hold it (not a knob, or a value out of the knob's range).
    pub(crate) fn of(key: &SysctlKey, value: i64) -> Result<Restore> {
        let conflict = |reason: String| Error::Conflict {
            field: "sysctl".into(),
            value: format!("{key}={value}"),
            reason,
        };
        let Some((family, entry, ConfName::Knob(knob))) = key.conf_parts() else {
            return Err(conflict("not a key the crash record can hold".into()));
        };
        Restore::new(family, entry.clone(), knob, value).ok_or_else(|| {
            let values = &knob.row().values;
            let (lo, hi) = (values.start(), values.end());
            conflict(format!(
                "the crash record keeps {lo} to {hi} for {knob} (the values egress restores): \
                 set it to one of them before applying",
                knob = knob.as_str()
            ))
        })
    }

    /// The write that restores it.
    pub(crate) fn write(&self) -> (SysctlKey, i64) {
        (
            SysctlKey::knob(self.family, self.entry.clone(), self.knob),
            i64::from(self.value),
        )
    }

    /// Whether it restores forwarding or what writing forwarding changes (`accept_redirects`).
    fn of_forwarding(&self) -> bool {
        matches!(self.knob, Knob::Forwarding | Knob::AcceptRedirects)
    }

    /// Whether it restores the same key as `other`.
    fn same_key(&self, other: &Restore) -> bool {
        (self.family, &self.entry, self.knob) == (other.family, &other.entry, other.knob)
    }
}

/// What a router replaced, and how to recognise it:
/// `egress/2 r=egress-1 id=1a2b3c4d link=macvlan0 c=1 up=0 s=9f3e0a11 4all.f=0 6all.f=0`.
///
/// Restore entries are `<4|6><conf entry>.<key>=<value>`, written back in order; the key is the
/// knob's short name in the record (its [`Knob::row`]: `f` forwarding, `ar` accept_redirects, …),
/// to fit the kernel's 256-byte limit on table userdata, and the value is in decimal, within the
/// knob's range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// The router's name (`[a-z0-9-]`, at most 32 characters).
    pub router: String,
    /// Chosen at random by the apply that wrote it: a handle recognises its router by it.
    pub id: u32,
    /// The external link.
    pub link: IfName,
    /// Whether the router created the link (else it adopted it).
    pub created: bool,
    /// Whether an adopted link was up before.
    pub was_up: bool,
    /// Fingerprints of the default routes the router replaced (copied to the copy tables),
    /// sorted.
    pub saved: Vec<u32>,
    /// Sysctl writes that restore what the router changed, in order.
    pub restore: Vec<Restore>,
}

/// Why a text is not a crash record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotARecord(String);

impl fmt::Display for NotARecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A boolean field's text.
fn bit(b: bool) -> u8 {
    u8::from(b)
}

impl Record {
    /// The record's text: the table comment, and what the notes hold. An error when it would
    /// not fit in a table comment.
    pub(crate) fn encode(&self) -> Result<String> {
        let mut s = format!(
            "{MAGIC} r={} id={:08x} link={} c={} up={}",
            self.router,
            self.id,
            self.link,
            bit(self.created),
            bit(self.was_up)
        );
        if !self.saved.is_empty() {
            let saved: Vec<String> = self.saved.iter().map(|f| format!("{f:08x}")).collect();
            s += &format!(" s={}", saved.join(","));
        }
        for e in &self.restore {
            let family = match e.family {
                Family::V4 => '4',
                Family::V6 => '6',
            };
            let short = e.knob.row().record;
            s += &format!(" {family}{}.{short}={}", e.entry.as_str(), e.value);
        }
        if s.len() > MAX_RECORD {
            return Err(Error::Conflict {
                field: "netns".into(),
                value: format!(
                    "{} sysctl values and {} default routes to restore",
                    self.restore.len(),
                    self.saved.len()
                ),
                reason: format!(
                    "the crash record would take {} bytes, more than the {MAX_RECORD} a table comment holds (too many links with a forwarding value of their own, or default routes)",
                    s.len()
                ),
            });
        }
        Ok(s)
    }

    /// The record in `s`, or `None` when `s` is not one.
    pub(crate) fn decode(s: &str) -> Option<Record> {
        Record::parse(s).ok()
    }

    /// The record in `s`, read with the grammar [`encode`](Self::encode) writes and nothing
    /// else: `egress/2`, then `r=` a router name, `id=` eight hex digits, `link=` a link name,
    /// `c=` and `up=` 0 or 1, optionally `s=` fingerprints in increasing order, then restore
    /// entries, each key once; single spaces, at most 253 bytes. Otherwise why it is not one.
    pub(crate) fn parse(s: &str) -> std::result::Result<Record, NotARecord> {
        let no = |why: String| NotARecord(why);
        if s.len() > MAX_RECORD {
            return Err(no(format!("longer than {MAX_RECORD} bytes")));
        }
        let mut tokens = s.split(' ').peekable();
        if tokens.next() != Some(MAGIC) {
            return Err(no(format!("does not begin with `{MAGIC} `")));
        }
        let mut field = |name: &str| {
            tokens
                .next()
                .and_then(|t| t.strip_prefix(name))
                .ok_or_else(|| no(format!("no `{name}` where it belongs")))
        };
        let router = field("r=")?.to_string();
        validate_name(&router).map_err(|f| no(format!("r=: {}", f.expected)))?;
        let id = hex8(field("id=")?).ok_or_else(|| no("id=: not 8 hex digits".into()))?;
        let link =
            IfName::parse(field("link=")?).ok_or_else(|| no("link=: not a link name".into()))?;
        let created = flag(field("c=")?).ok_or_else(|| no("c=: not 0 or 1".into()))?;
        let was_up = flag(field("up=")?).ok_or_else(|| no("up=: not 0 or 1".into()))?;
        let mut saved = Vec::new();
        if let Some(list) = tokens.peek().and_then(|t| t.strip_prefix("s=")) {
            for f in list.split(',') {
                let f = hex8(f).ok_or_else(|| no("s=: not 8 hex digits".into()))?;
                if saved.last().is_some_and(|last| *last >= f) {
                    return Err(no("s=: not in increasing order".into()));
                }
                saved.push(f);
            }
            tokens.next();
        }
        let mut restore: Vec<Restore> = Vec::new();
        for tok in tokens {
            let e =
                restore_entry(tok).ok_or_else(|| no(format!("`{tok}`: not a restore entry")))?;
            if restore.iter().any(|r| r.same_key(&e)) {
                return Err(no(format!("`{tok}`: a key restored twice")));
            }
            restore.push(e);
        }
        Ok(Record {
            router,
            id,
            link,
            created,
            was_up,
            saved,
            restore,
        })
    }

    /// The notes that hold this record: blackhole routes in [`JOURNAL_TABLE`], one per 10
    /// bytes of its text.
    pub(crate) fn notes(&self) -> Result<Vec<Route>> {
        Ok(text_notes(RECORD_TAG, self.id, &self.encode()?))
    }
}

/// Eight lowercase hex digits.
fn hex8(s: &str) -> Option<u32> {
    let ok = s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then(|| u32::from_str_radix(s, 16).ok()).flatten()
}

/// `0` or `1`.
fn flag(s: &str) -> Option<bool> {
    match s {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// `<4|6><entry>.<key>=<value>`: the value after the last `=`, the key after the last `.` (a
/// link name may hold both); the value in decimal as `encode` writes it (no sign, no leading
/// zero), within the knob's range.
fn restore_entry(tok: &str) -> Option<Restore> {
    let family = match tok.as_bytes().first()? {
        b'4' => Family::V4,
        b'6' => Family::V6,
        _ => return None,
    };
    let (lhs, value) = tok[1..].rsplit_once('=')?;
    let (entry, short) = lhs.rsplit_once('.')?;
    let v: u8 = value.parse().ok()?;
    if v.to_string() != value {
        return None;
    }
    Restore::new(
        family,
        ConfEntry::parse(entry)?,
        Knob::recorded_as(short)?,
        v.into(),
    )
}

/// The tag of the crash record's notes (`6567:`, "eg").
const RECORD_TAG: [u8; 2] = [0x65, 0x67];

/// Whether the text of notes that hold no record is what a write of router `name`'s record
/// cut short leaves: the beginning of its header (`egress/2 r=<name> `), or all of it followed
/// only by bytes a record can hold. Notes written in order and cut short are the places 1 to
/// k of the text, so a text that holds anything else is not debris of ours.
fn truncated_record_of(text: &str, name: &str) -> bool {
    let header = format!("{MAGIC} r={name} ");
    match text.strip_prefix(&header) {
        Some(rest) => rest.bytes().all(|b| {
            b == b' '
                || (b.is_ascii_graphic() && !matches!(b, b'/' | b':' | b'%'))
                || (b >= 0x80 && b != 0xa0)
        }),
        None => header.starts_with(text),
    }
}

/// A default route's fingerprint, as it is (was) in the main table: family, destination, next
/// hop, output link, metric and protocol (FNV-1a, 32 bits).
pub(crate) fn fingerprint(r: &Route) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    let ip = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    eat(&[u8::from(r.dst.is_ipv6()), r.dst.prefix()]);
    eat(&ip(r.dst.ip()));
    eat(&r.via.map(ip).unwrap_or_default());
    eat(&r.oif.unwrap_or(0).to_be_bytes());
    eat(&r.metric().to_be_bytes());
    eat(&[r.protocol]);
    h
}

/// Which copy in a copy table is which saved route: its fingerprint as a main-table route.
fn copy_fingerprint(copy: &Route) -> u32 {
    fingerprint(&route::in_table(copy, route::main_table()))
}

/// The two places of one router's record, as a namespace holds them now.
#[derive(Debug, Default)]
pub(crate) struct Stores<'a> {
    /// The record in the table comment (`None`: no table, no comment, or not a record of
    /// this router).
    pub comment: Option<Record>,
    /// The record the notes hold, when they are this router's.
    pub notes: Option<Record>,
    /// The note routes of this router's record (to delete at teardown).
    pub note_routes: Vec<&'a Route>,
    /// The name of another router whose record the notes hold, if any.
    pub other_router: Option<String>,
    /// Notes of this router that hold no record: what a write cut short by a crash leaves —
    /// the places 1 to k of its record's text ([`truncated_record_of`]; only when no other
    /// router has a record here), or notes with the apply id of the router's record mixed
    /// with others (an interrupted rewrite). Only teardown removes them; they change nothing
    /// meanwhile.
    pub debris: Vec<&'a Route>,
    /// Texts in the place of a record (the comment, whole notes) that are not one, and why:
    /// nothing they name is acted on.
    pub rejected: Vec<String>,
}

impl<'a> Stores<'a> {
    /// Router `name`'s record in `now`, from both places. Of several records in notes (two
    /// applies racing), the one the table's comment names is the router's.
    pub(crate) fn of(now: &'a Current, name: &str) -> Stores<'a> {
        let mut rejected = Vec::new();
        let table = crate::spec::table_name(name);
        let comment = now
            .comment_of(&table)
            .and_then(|c| match Record::parse(c) {
                Ok(r) => Some(r),
                Err(why) => {
                    rejected.push(format!("the comment of table inet {table}: {why}"));
                    None
                }
            })
            .filter(|r| r.router == name);
        let mut mine = Vec::new();
        let mut other_router = None;
        let mut unread = Vec::new();
        for (id, set) in notes::note_sets(RECORD_TAG, &now.routes) {
            let text = notes::whole_text(&set);
            match text.as_deref().map(Record::parse) {
                Some(Ok(record)) if record.id == id => match record.router == name {
                    true => mine.push((record, set)),
                    false => other_router = Some(record.router),
                },
                Some(Ok(_)) => rejected.push(format!("notes {id:08x}: another apply id inside")),
                Some(Err(why)) => {
                    if !text
                        .as_deref()
                        .is_some_and(|t| truncated_record_of(t, name))
                    {
                        rejected.push(format!("notes {id:08x}: {why}"));
                    }
                    unread.push((id, text, set));
                }
                None => unread.push((id, None, set)),
            }
        }
        let chosen = match comment.as_ref() {
            Some(c) => mine.iter().position(|(r, _)| r.id == c.id).unwrap_or(0),
            None => 0,
        };
        let (notes, note_routes) = match mine.into_iter().nth(chosen) {
            Some((r, routes)) => (Some(r), routes),
            None => (None, Vec::new()),
        };
        let id = notes.as_ref().or(comment.as_ref()).map(|r| r.id);
        let debris = unread
            .into_iter()
            .filter(|(set_id, text, _)| {
                Some(*set_id) == id
                    || (other_router.is_none()
                        && text
                            .as_deref()
                            .is_some_and(|t| truncated_record_of(t, name)))
            })
            .flat_map(|(_, _, set)| set)
            .collect();
        Stores {
            comment,
            notes,
            note_routes,
            other_router,
            debris,
            rejected,
        }
    }

    /// Logs (warn) the texts that looked like records and are not.
    pub(crate) fn warn_rejected(&self, router: &str) {
        for why in &self.rejected {
            warn!(router, reason = %why, "not a crash record: nothing it names is acted on");
        }
    }

    /// The record to trust: the notes (written first), else the comment.
    pub(crate) fn record(&self) -> Option<&Record> {
        self.notes.as_ref().or(self.comment.as_ref())
    }

    /// The record when it is proven the router's: the notes are marked routes that name the
    /// router in full; the table comment alone proves nothing until a marked object vouches
    /// for it — the macvlan the record names (with the router's group marker), or, for an
    /// adopted link, an address or a route of ours on the link the record names.
    pub(crate) fn proven(&self, now: &Current) -> Option<&Record> {
        if let Some(notes) = &self.notes {
            return Some(notes);
        }
        let r = self.comment.as_ref()?;
        let vouched = match r.created {
            true => now.links.iter().any(|l| {
                l.name == r.link.as_str() && l.group == group_marker(&r.router) && is_macvlan(l)
            }),
            false => now.link(r.link.as_str()).is_some_and(|l| {
                now.addrs.iter().any(|a| a.index == l.index && a.ours)
                    || now
                        .routes
                        .iter()
                        .any(|rt| rt.is_ours() && rt.oif == Some(l.index))
            }),
        };
        vouched.then_some(r)
    }

    /// The copies in routing table `table` of the default routes `record` saved.
    pub(crate) fn copies(now: &'a Current, record: &Record, table: u32) -> Vec<&'a Route> {
        now.routes
            .iter()
            .filter(|r| r.table == table && record.saved.contains(&copy_fingerprint(r)))
            .collect()
    }
}

/// What the crash record needs from the spec.
#[derive(Debug, Clone)]
pub(crate) struct RecordSpec {
    /// The router's name.
    pub router: String,
    /// The external link.
    pub link: LinkRef,
    /// The families in use (IPv4, IPv6).
    pub families: (bool, bool),
    /// The external link's own sysctls the router sets, with their values (adopted link: what
    /// they held is restored at teardown).
    pub link_sysctls: Vec<(SysctlKey, i64)>,
    /// What claims the egress identity, written with the record (its identity notes); `None`
    /// to take the one the kernel holds (a router read back by name).
    pub claim: Option<super::role::Claim>,
}

impl RecordSpec {
    /// The record `now` should hold: the one it has (in either place) — never rewritten from
    /// current values — plus what is about to be replaced that it lacks (the fingerprints of
    /// default routes, an adopted link's sysctl it has no entry for); with no record at all, a
    /// fresh one of the values `now` holds, with apply id `id` (an error when a value cannot be
    /// kept: see [`Restore::of`]).
    pub(crate) fn wanted(&self, now: &Current, id: u32) -> Result<Record> {
        let mut r = match self.existing(now) {
            Some(mut r) => {
                for (k, v) in self.link_writes(now) {
                    if !r.restore.iter().any(|have| have.write().0 == k) {
                        r.restore.push(Restore::of(&k, v)?);
                    }
                }
                r
            }
            None => self.fresh(now, id)?,
        };
        for (used, ipv6) in [(self.families.0, false), (self.families.1, true)] {
            if used {
                r.saved
                    .extend(route::to_save(now, &self.link, ipv6).map(fingerprint));
            }
        }
        r.saved.sort_unstable();
        r.saved.dedup();
        Ok(r)
    }

    /// The record `now` holds in either place, as it is.
    pub(crate) fn existing(&self, now: &Current) -> Option<Record> {
        Stores::of(now, &self.router).record().cloned()
    }

    /// The adopted link in `now` (`None` for a created one).
    fn adopted<'a>(&self, now: &'a Current) -> Option<&'a Link> {
        (!self.link.created())
            .then(|| self.link.find(now))
            .flatten()
    }

    /// The adopted link's own sysctls the router is about to change, with the values they hold
    /// now: what teardown writes back (a created link's vanish with it).
    fn link_writes(&self, now: &Current) -> Vec<(SysctlKey, i64)> {
        if self.adopted(now).is_none() {
            return Vec::new();
        }
        self.link_sysctls
            .iter()
            .filter_map(|(k, value)| {
                let v = now.sysctl(k)?;
                (v != *value).then(|| (k.clone(), v))
            })
            .collect()
    }

    /// A record of what `now` holds, before the router changes it.
    fn fresh(&self, now: &Current, id: u32) -> Result<Record> {
        let mut writes = Vec::new();
        for (used, family) in [(self.families.0, Family::V4), (self.families.1, Family::V6)] {
            if used {
                writes.extend(
                    sysctl::forwarding_restore(&now.sysctls, family)
                        .into_iter()
                        .flatten(),
                );
            }
        }
        writes.extend(self.link_writes(now));
        let adopted = self.adopted(now);
        let link = IfName::parse(&self.link.name).ok_or_else(|| {
            Error::invalid("external", &self.link.name, "a link name the kernel allows")
        })?;
        Ok(Record {
            router: self.router.clone(),
            id,
            link,
            created: self.link.created(),
            was_up: adopted.is_some_and(|l| l.up),
            saved: Vec::new(),
            restore: writes
                .iter()
                .map(|(k, v)| Restore::of(k, *v))
                .collect::<Result<_>>()?,
        })
    }
}

/// The crash record's notes and the copies of the saved default routes (the table comment is
/// the ruleset's: [`super::nat::Ruleset`]).
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    /// What the record is made of.
    pub spec: RecordSpec,
}

impl Journal {
    /// What is damaged, measured against `wanted`: (place, detail, the step that repairs it).
    fn damage(&self, now: &Current, wanted: &Record) -> Vec<(String, String, Step)> {
        let stores = Stores::of(now, &self.spec.router);
        let mut out = Vec::new();
        match &stores.notes {
            None => out.push((
                "journal notes".to_string(),
                format!("the record's routes in table {JOURNAL_TABLE} are missing"),
                Step::WriteJournal {
                    table: JOURNAL_TABLE,
                },
            )),
            Some(notes) if notes != wanted => out.push((
                "journal notes".to_string(),
                "the record's routes hold an older record".to_string(),
                Step::WriteJournal {
                    table: JOURNAL_TABLE,
                },
            )),
            Some(_) => {}
        }
        let claim = super::role::Claim::in_kernel(now, &self.spec.router).map(|(c, _)| c);
        let claim_right = match (&claim, &self.spec.claim) {
            (None, _) => false,
            (Some(have), Some(want)) => have == want,
            (Some(_), None) => true,
        };
        if stores.notes.as_ref() == Some(wanted) && !claim_right {
            out.push((
                "identity notes".to_string(),
                format!(
                    "the notes in table {JOURNAL_TABLE} that say what a promotion claims are \
                     missing or differ"
                ),
                Step::WriteJournal {
                    table: JOURNAL_TABLE,
                },
            ));
        }
        if let Some(record) = stores.record() {
            for table in [JOURNAL_TABLE, MIRROR_TABLE] {
                let copies = Stores::copies(now, record, table);
                let missing = record
                    .saved
                    .iter()
                    .filter(|f| !copies.iter().any(|c| copy_fingerprint(c) == **f))
                    .count();
                if missing > 0 {
                    out.push((
                        format!("saved routes (table {table})"),
                        format!(
                            "{missing} of {} saved default routes missing",
                            record.saved.len()
                        ),
                        Step::RestoreSavedRoutes { table },
                    ));
                }
            }
        }
        out
    }
}

impl KernelObject for Journal {
    fn render(&self) -> String {
        Step::WriteJournal {
            table: JOURNAL_TABLE,
        }
        .to_string()
    }

    fn compare(&self, now: &Current, drift: &mut Vec<Drift>) {
        // Against the record that exists: one that must grow (a default route about to be
        // replaced) is the default route's drift, not damage.
        let Some(existing) = self.spec.existing(now) else {
            drift.push(Drift::JournalDamaged {
                store: "table comment and journal notes".into(),
                detail: "the crash record is lost: what the router replaced cannot be restored"
                    .into(),
            });
            return;
        };
        for (store, detail, _) in self.damage(now, &existing) {
            drift.push(Drift::JournalDamaged { store, detail });
        }
    }

    fn repair(&self, now: &Current, steps: &mut Vec<Step>) -> Result<()> {
        let wanted = self.spec.wanted(now, 0)?;
        steps.extend(
            self.damage(now, &wanted)
                .into_iter()
                .map(|(_, _, step)| step),
        );
        Ok(())
    }

    /// The crash record's inverse: its notes (with the identity notes, the markers a crash
    /// left, and the debris of a write cut short), the copies of the saved default routes; and
    /// what the router replaced put back — its link's own sysctls, the saved default routes,
    /// forwarding (first, in the unwind).
    fn remove(&self, now: &Current, inverse: &mut Inverse<'_>) {
        let (name, record) = (inverse.name, inverse.record);
        let stores = Stores::of(now, name);
        inverse.notes.extend(stores.debris.into_iter().cloned());
        inverse
            .notes
            .extend(stores.note_routes.into_iter().cloned());
        inverse
            .notes
            .extend(Claim::notes_in(now, name).into_iter().cloned());
        inverse
            .notes
            .extend(Claim::unfinished(now, record.id).into_iter().cloned());
        inverse.notes.extend(role_change_in(now, name).cloned());
        inverse.notes.extend(
            teardown_markers(now, name)
                .into_iter()
                .map(|(m, _)| m.clone()),
        );
        let names = now.names();
        let mut saved: BTreeMap<u32, Route> = BTreeMap::new();
        for table in [MIRROR_TABLE, JOURNAL_TABLE] {
            for copy in Stores::copies(now, record, table) {
                saved.insert(copy_fingerprint(copy), copy.clone());
                inverse.undo(boxed(DeleteRoute {
                    route: copy.clone(),
                    what: copy.describe(&names),
                }));
            }
        }
        // Forwarding (and what writing it changes) last; the link's own values first.
        let (family, link_keys): (Vec<&Restore>, Vec<&Restore>) =
            record.restore.iter().partition(|e| e.of_forwarding());
        if !link_keys.is_empty() {
            inverse.undo(boxed(RestoreSysctls {
                writes: link_keys.into_iter().map(Restore::write).collect(),
            }));
        }
        for copy in saved.values() {
            let route = route::in_table(copy, route::main_table());
            let what = route.describe(&names);
            inverse.undo(boxed(RestoreRoute { route, what }));
        }
        if !family.is_empty() {
            inverse.undo(boxed(RestoreSysctls {
                writes: family.into_iter().map(Restore::write).collect(),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(family: Family, entry: &str, knob: Knob, value: i64) -> Restore {
        Restore::new(family, ConfEntry::parse(entry).unwrap(), knob, value).unwrap()
    }

    fn record() -> Record {
        Record {
            router: "egress-1".into(),
            id: 0x1a2b_3c4d,
            link: IfName::parse("macvlan0").unwrap(),
            created: false,
            was_up: true,
            saved: vec![0x9f3e_0a11, 0xdead_beef],
            restore: vec![
                entry(Family::V4, "all", Knob::Forwarding, 0),
                entry(Family::V4, "eth0.100", Knob::Forwarding, 1),
                entry(Family::V6, "macvlan0", Knob::NdiscNotify, 0),
            ],
        }
    }

    const TEXT: &str = "egress/2 r=egress-1 id=1a2b3c4d link=macvlan0 c=0 up=1 \
                        s=9f3e0a11,deadbeef 4all.f=0 4eth0.100.f=1 6macvlan0.nn=0";

    #[test]
    fn record_round_trips_as_text() {
        let r = record();
        assert_eq!(r.encode().unwrap(), TEXT);
        assert_eq!(Record::decode(TEXT), Some(r));
        // What 7508fe2 writes for a created macvlan, with nothing saved.
        let created = "egress/2 r=egress-router id=0000abcd link=macvlan0 c=1 up=0 4all.f=0 \
                       4all.ar=1 6all.f=0";
        let r = Record::decode(created).unwrap();
        assert_eq!(r.encode().unwrap(), created);
        let writes: Vec<String> = r.restore.iter().map(|e| e.write().0.path()).collect();
        assert_eq!(
            writes,
            [
                "net/ipv4/conf/all/forwarding",
                "net/ipv4/conf/all/accept_redirects",
                "net/ipv6/conf/all/forwarding"
            ]
        );
    }

    #[test]
    fn record_round_trips_as_notes() {
        let r = record();
        let notes = r.notes().unwrap();
        assert_eq!(
            notes.len(),
            r.encode().unwrap().len().div_ceil(notes::NOTE_PAYLOAD)
        );
        assert!(notes.iter().all(|n| is_tagged(n, RECORD_TAG)));
        let now = |routes: Vec<Route>| Current {
            routes,
            ..Current::default()
        };
        // Order does not matter: each note's metric does.
        let mut shuffled = notes.clone();
        shuffled.reverse();
        let held = now(shuffled);
        let stores = Stores::of(&held, "egress-1");
        assert_eq!(stores.notes.as_ref(), Some(&r));
        assert_eq!(stores.note_routes.len(), notes.len());
        // A lost note loses the record (it is not guessed).
        let held = now(notes[1..].to_vec());
        assert_eq!(Stores::of(&held, "egress-1").notes, None);
        // Two records side by side (two applies racing) do not mix; the comment chooses.
        let other = Record { id: 7, ..record() };
        let mut both = notes.clone();
        both.extend(other.notes().unwrap());
        let held = now(both);
        let stores = Stores::of(&held, "egress-1");
        assert!(matches!(stores.notes, Some(Record { id, .. }) if id == 7 || id == r.id));
        assert!(stores.debris.is_empty() && stores.rejected.is_empty());
    }

    /// `TEXT` with `from` replaced by `to`: one change to a valid record.
    fn with(from: &str, to: &str) -> String {
        assert!(TEXT.contains(from), "{from}");
        TEXT.replacen(from, to, 1)
    }

    #[track_caller]
    fn refused(text: &str) {
        assert_eq!(
            Record::parse(text).ok(),
            None,
            "{text:?} was taken for a record"
        );
    }

    #[test]
    fn every_field_is_where_the_grammar_puts_it_and_once() {
        refused("managed by someone else");
        refused("egress/1 link=macvlan0 created=1 up=0");
        refused(&with("egress/2", "egress/3"));
        // Missing, reordered, repeated, unknown.
        refused(&with("r=egress-1 ", ""));
        refused(&with(" id=1a2b3c4d", ""));
        refused(&with("link=macvlan0 c=0", "c=0 link=macvlan0"));
        refused(&with(" up=1", " up=1 up=1"));
        refused(&with(" up=1", ""));
        refused(&with("c=0", "c=0 x=1"));
        refused(&with(" 4all.f=0", " 4all.f=0 s=00000001"));
        // Spaces: one between tokens, none around.
        refused(&with(" id=", "  id="));
        refused(&format!("{TEXT} "));
        refused(&format!(" {TEXT}"));
        refused(&with(" id=", "\tid="));
    }

    #[test]
    fn the_router_name_is_a_router_name() {
        for bad in ["Egress-1", "egress_1", "a/b", "", &"a".repeat(33)] {
            refused(&with("r=egress-1", &format!("r={bad}")));
        }
        assert!(Record::decode(&with("r=egress-1", &format!("r={}", "a".repeat(32)))).is_some());
    }

    #[test]
    fn the_apply_id_is_eight_lowercase_hex_digits() {
        for bad in [
            "1a2b3c4",
            "1a2b3c4d0",
            "1A2B3C4D",
            "+a2b3c4d",
            "1a2b3c4g",
            "",
        ] {
            refused(&with("id=1a2b3c4d", &format!("id={bad}")));
        }
    }

    #[test]
    fn the_link_is_a_link_name_the_kernel_allows() {
        for bad in [
            "",
            "..",
            "../../etc",
            "a/b",
            "a:b",
            "eth%d",
            "1234567890123456",
        ] {
            refused(&with("link=macvlan0", &format!("link={bad}")));
        }
        assert!(Record::decode(&with("link=macvlan0", "link=eth0.100")).is_some());
    }

    #[test]
    fn flags_are_0_or_1() {
        for bad in ["2", "yes", "", "00", "-1"] {
            refused(&with("c=0", &format!("c={bad}")));
            refused(&with("up=1", &format!("up={bad}")));
        }
    }

    #[test]
    fn saved_fingerprints_are_hex_in_increasing_order() {
        for bad in [
            "s=",
            "s=deadbeef,9f3e0a11",
            "s=9f3e0a11,9f3e0a11",
            "s=9f3e0a11,,deadbeef",
            "s=9f3e0a1",
        ] {
            refused(&with("s=9f3e0a11,deadbeef", bad));
        }
        assert!(Record::decode(&with("s=9f3e0a11,deadbeef ", "")).is_some());
    }

    #[test]
    fn a_restore_entry_names_a_known_key_of_a_conf_entry_and_a_value_in_its_range() {
        for bad in [
            // The finding: an "entry" that climbs out of /proc/sys/net/ipv4/conf/.
            "4../../../../../etc/cron.d.f=1",
            "4../../../../../tmp/x.f=owned",
            "4...f=0",
            "4..f=0",
            "4a/b.f=0",
            // Unknown families and keys, or no key at all.
            "5all.f=0",
            "all.f=0",
            "4all.rp=0",
            "4all.forwarding=0",
            "4all=0",
            "4all.f",
            // A knob of the other family only.
            "4all.nn=0",
            "6all.an=0",
            // Values: in the knob's range (0 or 1 for forwarding), as `encode` writes them.
            "4all.f=2",
            "4all.f=-1",
            "4all.f=+1",
            "4all.f=01",
            "4all.f=00",
            "4all.f=256",
            "4all.f=owned",
            "4all.f=4294967297",
            "4all.f=",
        ] {
            refused(&with("4all.f=0", bad));
        }
        // A key restored twice is not a record egress wrote.
        refused(&format!("{TEXT} 4all.f=1"));
        // accept_ra keeps 0 to 2 (2: taken even while forwarding), IPv6 only.
        let r = Record::decode(&format!("{TEXT} 6macvlan0.ra=2")).unwrap();
        assert_eq!(
            r.restore[3],
            entry(Family::V6, "macvlan0", Knob::AcceptRa, 2)
        );
        assert_eq!(r.encode().unwrap(), format!("{TEXT} 6macvlan0.ra=2"));
        for bad in ["6macvlan0.ra=3", "4macvlan0.ra=0", "6macvlan0.ra=02"] {
            refused(&format!("{TEXT} {bad}"));
        }
        // A link name may hold `.` and `=`: the key and the value are read from the right.
        let r = Record::decode(&with("4eth0.100.f=1", "4a=b.c.an=1")).unwrap();
        assert_eq!(r.restore[1], entry(Family::V4, "a=b.c", Knob::ArpNotify, 1));
    }

    #[test]
    fn a_record_fits_a_table_comment() {
        let long = format!("{TEXT}{}", " 6all.f=0 6default.f=0".repeat(10));
        refused(&long);
        let r = Record {
            router: "r".into(),
            id: 1,
            link: IfName::parse("macvlan0").unwrap(),
            created: true,
            was_up: false,
            saved: Vec::new(),
            restore: (0..20)
                .map(|i| entry(Family::V4, &format!("veth{i:08}"), Knob::Forwarding, 1))
                .collect(),
        };
        let e = r.encode().unwrap_err();
        assert!(e.to_string().contains("253"), "{e}");
    }

    #[test]
    fn a_value_the_record_cannot_keep_is_an_error_before_any_change() {
        let key = |s: &str| s.parse::<SysctlKey>().unwrap();
        assert!(Restore::of(&key("net/ipv4/conf/all/forwarding"), 0).is_ok());
        let e = Restore::of(&key("net/ipv4/conf/all/forwarding"), 2).unwrap_err();
        assert!(
            e.to_string().contains("net.ipv4.conf.all.forwarding=2"),
            "{e}"
        );
        assert!(Restore::of(&key("net/ipv6/conf/eth0/accept_ra"), 2).is_ok());
        let e = Restore::of(&key("net/ipv6/conf/eth0/accept_ra"), 3).unwrap_err();
        assert!(e.to_string().contains("0 to 2 for accept_ra"), "{e}");
        assert!(Restore::of(&key("net/ipv4/conf/all/rp_filter"), 0).is_err());
        assert!(Restore::of(&SysctlKey::IP_FORWARD, 0).is_err());
    }

    /// An earlier record of an adopted link that has no entry for a link sysctl about to be
    /// changed gains it, with the value now; an entry it has is never rewritten.
    #[test]
    fn a_record_gains_the_link_sysctl_it_lacks_and_keeps_the_ones_it_has() {
        let key = |s: &str| s.parse::<SysctlKey>().unwrap();
        let spec = RecordSpec {
            router: "egress-1".into(),
            link: LinkRef::named("macvlan0"),
            families: (true, true),
            link_sysctls: vec![
                (key("net/ipv4/conf/macvlan0/arp_notify"), 1),
                (key("net/ipv6/conf/macvlan0/ndisc_notify"), 1),
            ],
            claim: None,
        };
        let earlier = Record {
            saved: Vec::new(),
            ..record()
        };
        let now = |arp: i64, ndisc: i64| Current {
            links: vec![Link {
                index: 2,
                name: "macvlan0".into(),
                mtu: 1500,
                up: true,
                kind: None,
                macvlan_mode: None,
                mac: vec![2, 0, 0, 0, 0, 2],
                group: 0,
                conf: Default::default(),
            }],
            routes: earlier.notes().unwrap(),
            sysctls: BTreeMap::from([
                (key("net/ipv4/conf/macvlan0/arp_notify"), arp),
                (key("net/ipv6/conf/macvlan0/ndisc_notify"), ndisc),
            ]),
            ..Current::default()
        };
        // Both already right: nothing to add.
        assert_eq!(spec.wanted(&now(1, 1), 0).unwrap(), earlier);
        // arp_notify is about to change and the record has no entry: it gains one; ndisc_notify
        // has one (6macvlan0.nn=0), kept as it is though the value now is 2.
        let wanted = spec.wanted(&now(0, 2), 0).unwrap();
        let mut restore = earlier.restore.clone();
        restore.push(entry(Family::V4, "macvlan0", Knob::ArpNotify, 0));
        assert_eq!(wanted, Record { restore, ..earlier });
    }

    #[test]
    fn debris_is_a_truncated_record_of_the_router_only() {
        assert!(truncated_record_of("egress/2 r", "egress-1"));
        assert!(truncated_record_of("egress/2 r=egr", "egress-1"));
        assert!(truncated_record_of(
            "egress/2 r=egress-1 id=1a2b3c4d lin",
            "egress-1"
        ));
        assert!(!truncated_record_of("egress/2 r=egress-2 ", "egress-1"));
        assert!(!truncated_record_of("egress/2 r=egress-10", "egress-1"));
        assert!(!truncated_record_of(
            "egress/2 r=egress-1 id=00000001 link=eth0 c=0 up=1 4../../tmp/x.f=1",
            "egress-1"
        ));
        let notes = record().notes().unwrap();
        let held = Current {
            routes: notes[..3].to_vec(),
            ..Current::default()
        };
        assert_eq!(Stores::of(&held, "egress-1").debris.len(), 3);
        assert!(Stores::of(&held, "egress-2").debris.is_empty());
        // A record of another router here: nothing is debris of ours.
        let mut with_other = held.routes.clone();
        with_other.extend(
            Record {
                router: "other".into(),
                id: 9,
                ..record()
            }
            .notes()
            .unwrap(),
        );
        let held = Current {
            routes: with_other,
            ..Current::default()
        };
        let stores = Stores::of(&held, "egress-1");
        assert!(stores.debris.is_empty());
        assert_eq!(stores.other_router.as_deref(), Some("other"));
    }

    /// A small seeded generator (xorshift): the same texts every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
            of[self.below(of.len())]
        }
    }

    /// Pieces a hostile text is made of: path traversal, separators, long names, unknown keys,
    /// huge values, bytes the kernel refuses in a link name.
    const PIECES: &[&str] = &[
        "../",
        "..",
        ".",
        "/",
        " ",
        "=",
        ",",
        ":",
        "%",
        "\0",
        "\t",
        "\u{a0}",
        "à",
        "4",
        "6",
        "all",
        "default",
        "eth0",
        "eth0.100",
        "f",
        "ar",
        "an",
        "nn",
        "ra",
        "rp",
        "0",
        "1",
        "2",
        "-1",
        "4294967297",
        "owned",
        "r=",
        "id=",
        "link=",
        "c=",
        "up=",
        "s=",
        "egress/2 ",
        "egress-1",
        "1a2b3c4d",
        "deadbeef",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "/proc/sys/kernel/",
        "cron.d",
        "\n",
    ];

    /// Property: whatever text is planted, a record is only what `encode` writes (parsing
    /// then encoding gives the text back), and each of its writes is one entry and one known
    /// key beneath a conf directory.
    #[test]
    fn hostile_texts_are_refused_or_exactly_a_record() {
        let mut rng = Rng(0x5eed_1234_abcd_ef01);
        let mut accepted = 0;
        for _ in 0..50_000 {
            let mut tokens: Vec<String> = TEXT.split(' ').map(str::to_string).collect();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(tokens.len());
                match rng.below(6) {
                    0 => {
                        let at = rng.below(tokens[i].len() + 1);
                        let at = (0..=at)
                            .rev()
                            .find(|a| tokens[i].is_char_boundary(*a))
                            .unwrap();
                        tokens[i].insert_str(at, rng.pick(PIECES));
                    }
                    1 => tokens[i] = rng.pick(PIECES).to_string(),
                    2 => {
                        let t = tokens[i].clone();
                        tokens.insert(rng.below(tokens.len() + 1), t);
                    }
                    3 => drop(tokens.remove(i)),
                    4 => {
                        let j = rng.below(tokens.len());
                        tokens.swap(i, j);
                    }
                    _ => tokens.push(format!(
                        "{}{}.{}={}",
                        rng.pick(&["4", "6", "5"]),
                        rng.pick(PIECES),
                        rng.pick(&["f", "ar", "an", "nn", "ra", "xx"]),
                        rng.pick(&["0", "1", "2", "owned"])
                    )),
                }
                if tokens.is_empty() {
                    tokens.push(String::new());
                }
            }
            let text = tokens.join(" ");
            if let Ok(r) = Record::parse(&text) {
                accepted += 1;
                assert_eq!(r.encode().unwrap(), text);
                for e in &r.restore {
                    let (_, rel) = e.write().0.location();
                    let parts: Vec<&str> = rel.split('/').collect();
                    assert_eq!(parts.len(), 2, "{text:?}");
                    assert!(crate::kernel::ifname::valid(parts[0]) || parts[0] == "all");
                }
            }
        }
        // The mutations leave some records valid (a token swapped with itself, a flag
        // flipped): the property is exercised on both sides.
        assert!(accepted > 100, "{accepted}");
    }

    #[test]
    fn fingerprints_tell_routes_apart_and_survive_the_copy() {
        let dst = route::default_dst(false);
        let a = route::ours(dst, Some("192.0.2.1".parse().unwrap()), 2);
        let b = route::ours(dst, Some("192.0.2.9".parse().unwrap()), 2);
        assert_ne!(fingerprint(&a), fingerprint(&b));
        let copy = route::in_table(&a, JOURNAL_TABLE);
        assert_eq!(copy_fingerprint(&copy), fingerprint(&a));
    }
}
