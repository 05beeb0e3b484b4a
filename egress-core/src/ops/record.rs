//! The crash record: what a router replaced, kept in the kernel so that a teardown restores it
//! even after the process that applied the router is gone.
//!
//! One [`Record`] (the sysctl values the router replaced, the adopted link's state, which
//! default routes it saved, an apply id) is kept in two places that no single outside change
//! removes together:
//! - the comment of the router's nftables table (a flush of routing tables leaves it);
//! - *notes*: the record's text in the addresses of IPv6 `blackhole` routes with protocol 158
//!   in the journal routing table [`JOURNAL_TABLE`], which no rule ever looks up (a flush of
//!   nftables leaves them). They are written first, before anything is replaced. Each note's
//!   address is `6567:` ("eg"), the apply id (4 bytes), then 10 bytes of the record's text; its
//!   metric is its place in the text (from 1). Notes of two records (two applies racing) never
//!   mix: they are told apart by their apply id.
//!
//! The default routes a router replaced are copied, exactly as they were, into two routing
//! tables, [`JOURNAL_TABLE`] and [`MIRROR_TABLE`]; the record lists their fingerprints, so
//! that a foreign route put into those tables is never taken for a saved one.
//!
//! A recorded original is never overwritten by a current value: `ensure` writes a damaged
//! place again from the other one, and only adds the fingerprints of default routes it is about
//! to replace.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr},
};

use netlink_packet_route::{
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
    AddressFamily,
};

use super::{
    link::LinkRef,
    route::{self, Route, ROUTE_PROTOCOL},
    sysctl, Current, KernelObject, Step,
};
use crate::{
    drift::Drift,
    error::{Error, Result},
};

/// The routing table that keeps the crash record's notes and a copy of the default routes a
/// router replaced (`ip route show table 1701278323`: "egrs").
pub const JOURNAL_TABLE: u32 = 0x6567_7273;
/// The routing table that keeps a second copy of the replaced default routes ("egrm").
pub const MIRROR_TABLE: u32 = 0x6567_726d;
/// How the notes' addresses begin (`6567:` is "eg"), for the plan.
pub(crate) const NOTE_PREFIX: &str = "6567:";

const MAGIC: &str = "egress/2";
/// Bytes of record text per note: an IPv6 address is 16 bytes, after the two-byte tag and the
/// four-byte apply id.
const NOTE_PAYLOAD: usize = 10;
/// The kernel keeps at most 256 bytes of table userdata: a 2-byte TLV header, the comment and
/// its NUL.
const MAX_RECORD: usize = 253;
const KEYS: [(&str, &str); 4] = [
    ("f", "forwarding"),
    ("ar", "accept_redirects"),
    ("an", "arp_notify"),
    ("nn", "ndisc_notify"),
];

/// The other copy table.
pub(crate) fn other_copy_table(table: u32) -> u32 {
    if table == JOURNAL_TABLE {
        MIRROR_TABLE
    } else {
        JOURNAL_TABLE
    }
}

/// What a router replaced, and how to recognise it:
/// `egress/2 r=egress-1 id=1a2b3c4d link=macvlan0 c=1 up=0 s=9f3e0a11 4all.f=0 6all.f=0`.
///
/// Restore entries are `<4|6><conf entry>.<key>=<value>`, written back in order; keys are
/// abbreviated (`f` forwarding, `ar` accept_redirects, `an` arp_notify, `nn` ndisc_notify) to fit
/// the kernel's 256-byte limit on table userdata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Record {
    /// The router's name.
    pub router: String,
    /// Chosen at random by the apply that wrote it: a handle recognises its router by it.
    pub id: u32,
    /// The external link.
    pub link: String,
    /// Whether the router created the link (else it adopted it).
    pub created: bool,
    /// Whether an adopted link was up before.
    pub was_up: bool,
    /// Fingerprints of the default routes the router replaced (copied to the copy tables),
    /// sorted.
    pub saved: Vec<u32>,
    /// Sysctl writes that restore what the router changed, in order (path form).
    pub restore: Vec<(String, String)>,
}

impl Record {
    /// The record's text: the table comment, and what the notes hold.
    pub(crate) fn encode(&self) -> Result<String> {
        let mut s = format!(
            "{MAGIC} r={} id={:08x} link={} c={} up={}",
            self.router, self.id, self.link, self.created as u8, self.was_up as u8
        );
        if !self.saved.is_empty() {
            let saved: Vec<String> = self.saved.iter().map(|f| format!("{f:08x}")).collect();
            s += &format!(" s={}", saved.join(","));
        }
        for (path, value) in &self.restore {
            let (fam, entry, key) = split_conf_path(path).ok_or_else(|| Error::Conflict {
                field: "sysctl".into(),
                value: path.clone(),
                reason: "not a net/ipv4|ipv6/conf key the crash record can hold".into(),
            })?;
            let short = KEYS.iter().find(|(_, k)| *k == key).map(|(s, _)| *s);
            let short = short.ok_or_else(|| Error::Conflict {
                field: "sysctl".into(),
                value: path.clone(),
                reason: "a key the crash record cannot hold".into(),
            })?;
            s += &format!(" {fam}{entry}.{short}={value}");
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
        let mut it = s.split(' ');
        if it.next()? != MAGIC {
            return None;
        }
        let mut r = Record::default();
        let mut id = None;
        for tok in it {
            if let Some(v) = tok.strip_prefix("r=") {
                r.router = v.to_string();
            } else if let Some(v) = tok.strip_prefix("id=") {
                id = Some(u32::from_str_radix(v, 16).ok()?);
            } else if let Some(v) = tok.strip_prefix("link=") {
                r.link = v.to_string();
            } else if let Some(v) = tok.strip_prefix("c=") {
                r.created = v == "1";
            } else if let Some(v) = tok.strip_prefix("up=") {
                r.was_up = v == "1";
            } else if let Some(v) = tok.strip_prefix("s=") {
                for f in v.split(',') {
                    r.saved.push(u32::from_str_radix(f, 16).ok()?);
                }
            } else {
                let fam = match tok.as_bytes().first()? {
                    b'4' => "ipv4",
                    b'6' => "ipv6",
                    _ => return None,
                };
                let (lhs, value) = tok[1..].rsplit_once('=')?;
                let (entry, short) = lhs.rsplit_once('.')?;
                let key = KEYS.iter().find(|(s, _)| *s == short)?.1;
                r.restore
                    .push((format!("net/{fam}/conf/{entry}/{key}"), value.to_string()));
            }
        }
        r.id = id?;
        (!r.router.is_empty() && !r.link.is_empty()).then_some(r)
    }

    /// The notes that hold this record: blackhole routes in [`JOURNAL_TABLE`], one per
    /// [`NOTE_PAYLOAD`] bytes of its text.
    pub(crate) fn notes(&self) -> Result<Vec<Route>> {
        Ok(text_notes(RECORD_TAG, self.id, &self.encode()?))
    }

    /// The records the notes among `routes` hold (one per apply id whose notes decode), each
    /// with its notes.
    pub(crate) fn from_notes(routes: &[Route]) -> Vec<(Record, Vec<&Route>)> {
        read_text_notes(RECORD_TAG, routes)
            .into_iter()
            .filter_map(|(id, text, notes)| {
                let record = Record::decode(&text).filter(|r| r.id == id)?;
                Some((record, notes))
            })
            .collect()
    }
}

/// The tag of the crash record's notes (`6567:`, "eg").
const RECORD_TAG: [u8; 2] = [0x65, 0x67];

/// `text` as notes tagged `tag`: blackhole routes in [`JOURNAL_TABLE`] whose addresses are the
/// tag, the apply id `id` and [`NOTE_PAYLOAD`] bytes of the text each; a note's metric is its
/// place in the text (from 1).
pub(crate) fn text_notes(tag: [u8; 2], id: u32, text: &str) -> Vec<Route> {
    text.as_bytes()
        .chunks(NOTE_PAYLOAD)
        .enumerate()
        .map(|(seq, chunk)| {
            let mut bytes = [0u8; 16];
            bytes[..2].copy_from_slice(&tag);
            bytes[2..6].copy_from_slice(&id.to_be_bytes());
            bytes[6..6 + chunk.len()].copy_from_slice(chunk);
            note(Ipv6Addr::from(bytes), seq as u32 + 1)
        })
        .collect()
}

/// The texts the notes tagged `tag` among `routes` hold, one per apply id whose notes are
/// whole (every place from 1 on, UTF-8), each with its id and its notes.
pub(crate) fn read_text_notes(tag: [u8; 2], routes: &[Route]) -> Vec<(u32, String, Vec<&Route>)> {
    let mut by_id: BTreeMap<u32, Vec<Note>> = BTreeMap::new();
    for r in routes.iter().filter(|r| is_tagged(r, tag)) {
        if let IpAddr::V6(a) = r.dst.ip() {
            by_id
                .entry(note_id(r))
                .or_default()
                .push((r.metric(), a.octets(), r));
        }
    }
    by_id
        .into_iter()
        .filter_map(|(id, mut notes)| {
            notes.sort_by_key(|n| n.0);
            let contiguous = notes.iter().enumerate().all(|(i, n)| n.0 as usize == i + 1);
            let mut text = Vec::with_capacity(notes.len() * NOTE_PAYLOAD);
            for (_, bytes, _) in &notes {
                text.extend_from_slice(&bytes[6..]);
            }
            while text.last() == Some(&0) {
                text.pop();
            }
            let text = contiguous.then(|| String::from_utf8(text).ok()).flatten()?;
            Some((id, text, notes.into_iter().map(|n| n.2).collect()))
        })
        .collect()
}

/// Whether `r` is a note tagged `tag` (of any router).
pub(crate) fn is_tagged(r: &Route, tag: [u8; 2]) -> bool {
    r.table == JOURNAL_TABLE
        && r.is_ours()
        && r.kind == RouteType::BlackHole
        && r.dst.prefix() == 128
        && matches!(r.dst.ip(), IpAddr::V6(a) if a.octets()[..2] == tag)
}

/// A note as read back: its place in the text (metric), its address, the route.
type Note<'a> = (u32, [u8; 16], &'a Route);

/// A note route: `blackhole ADDR/128 table JOURNAL_TABLE proto 158 metric SEQ`.
pub(crate) fn note(addr: Ipv6Addr, seq: u32) -> Route {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet6;
    m.header.destination_prefix_length = 128;
    m.header.table = RouteHeader::RT_TABLE_UNSPEC;
    m.header.protocol = RouteProtocol::from(ROUTE_PROTOCOL);
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::BlackHole;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(IpAddr::V6(
            addr,
        ))));
    m.attributes.push(RouteAttribute::Table(JOURNAL_TABLE));
    m.attributes.push(RouteAttribute::Priority(seq));
    Route::from_message(m).expect("a well-formed route")
}

/// Whether `r` is a note of some router's record.
pub(crate) fn is_note(r: &Route) -> bool {
    is_tagged(r, RECORD_TAG)
}

/// The marker a teardown puts in the journal table while it runs: a watcher that sees it
/// leaves the router alone (`blackhole 6578:<router marker>::/128 table … proto 158`, "ex").
pub(crate) fn teardown_marker(router: &str) -> Route {
    let mut bytes = [0u8; 16];
    bytes[..2].copy_from_slice(&[0x65, 0x78]);
    bytes[2..6].copy_from_slice(&super::link::group_marker(router).to_be_bytes());
    note(Ipv6Addr::from(bytes), 1)
}

/// The marker a role change (promotion, demotion) puts in the journal table, first in its
/// flight of requests, and takes away once it is verified (or rolled back): a watcher that
/// sees it leaves the router alone meanwhile, rather than take a promotion half done (an
/// address claimed, the role marker not yet replaced) for drift of a standby and undo it
/// (`blackhole 6563:<router marker>::/128 table … proto 158`, "ec").
pub(crate) fn role_change_marker(router: &str) -> Route {
    let mut bytes = [0u8; 16];
    bytes[..2].copy_from_slice(&[0x65, 0x63]);
    bytes[2..6].copy_from_slice(&super::link::group_marker(router).to_be_bytes());
    note(Ipv6Addr::from(bytes), 1)
}

/// Router `router`'s role change marker in `now`, if a role change is running (or a crash
/// left it).
pub(crate) fn role_change_in<'a>(now: &'a Current, router: &str) -> Option<&'a Route> {
    let marker = role_change_marker(router);
    now.routes
        .iter()
        .find(|r| r.table == JOURNAL_TABLE && r.is_ours() && r.dst == marker.dst)
}

/// Whether a teardown of router `router` is running (or was interrupted) in `now`.
pub(crate) fn tearing_down(now: &Current, router: &str) -> bool {
    let marker = teardown_marker(router);
    // The kernel reports a blackhole route on `lo`: compared by what the marker is made of.
    now.routes
        .iter()
        .any(|r| r.table == JOURNAL_TABLE && r.is_ours() && r.dst == marker.dst)
}

/// The apply id in a note's address.
pub(crate) fn note_id(r: &Route) -> u32 {
    match r.dst.ip() {
        IpAddr::V6(a) => {
            let b = a.octets();
            u32::from_be_bytes([b[2], b[3], b[4], b[5]])
        }
        IpAddr::V4(_) => 0,
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
    let ip = |a: IpAddr| match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
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
    /// The note routes of another router, if any.
    pub other_router: Option<String>,
    /// Notes that hold no whole record, when no other router has a record here: debris of a
    /// write interrupted by a crash, marked as ours — or the write of an apply racing this
    /// one, still in flight. Only teardown removes them; they change nothing meanwhile.
    pub orphans: Vec<&'a Route>,
}

impl<'a> Stores<'a> {
    /// Router `name`'s record in `now`, from both places. Of several records in notes (two
    /// applies racing), the one the table's comment names is the router's.
    pub(crate) fn of(now: &'a Current, name: &str) -> Stores<'a> {
        let comment = now
            .comment_of(&crate::spec::table_name(name))
            .and_then(Record::decode)
            .filter(|r| r.router == name);
        let mut mine = Vec::new();
        let mut other_router = None;
        let records = Record::from_notes(&now.routes);
        let whole: Vec<u32> = records.iter().map(|(r, _)| r.id).collect();
        let orphans: Vec<&Route> = now
            .routes
            .iter()
            .filter(|r| is_note(r) && !whole.contains(&note_id(r)))
            .collect();
        for (record, routes) in records {
            match record.router == name {
                true => mine.push((record, routes)),
                false => other_router = Some(record.router),
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
        Stores {
            comment,
            notes,
            note_routes,
            orphans: match other_router {
                None => orphans,
                Some(_) => Vec::new(),
            },
            other_router,
        }
    }

    /// The record to trust: the notes (written first), else the comment.
    pub(crate) fn record(&self) -> Option<&Record> {
        self.notes.as_ref().or(self.comment.as_ref())
    }

    /// The record when it is proven the router's: the notes are marked routes of this router;
    /// the table comment alone proves nothing until a marked object vouches for it — the
    /// macvlan the router created (its group marker), or, for an adopted link, an address or
    /// a route of ours on the link the record names.
    pub(crate) fn proven(&self, now: &Current) -> Option<&Record> {
        if let Some(notes) = &self.notes {
            return Some(notes);
        }
        let r = self.comment.as_ref()?;
        let vouched = match r.created {
            true => now.links.iter().any(|l| {
                l.name == r.link
                    && l.group == super::link::group_marker(&r.router)
                    && super::link::is_macvlan(l)
            }),
            false => now.link(&r.link).is_some_and(|l| {
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
    /// The external link's own sysctls the router sets (adopted link: restored at teardown).
    pub link_sysctls: Vec<String>,
    /// What claims the egress identity, written with the record (its identity notes).
    pub claim: super::role::Claim,
}

impl RecordSpec {
    /// The record `now` should hold: the one it has (in either place) — never rewritten from
    /// current values — plus the fingerprints of the default routes about to be replaced;
    /// with no record at all, a fresh one of the values `now` holds, with apply id `id`.
    pub(crate) fn wanted(&self, now: &Current, id: u32) -> Record {
        let mut r = self.existing(now).unwrap_or_else(|| self.fresh(now, id));
        for (used, ipv6) in [(self.families.0, false), (self.families.1, true)] {
            if used {
                r.saved
                    .extend(route::to_save(now, &self.link, ipv6).map(fingerprint));
            }
        }
        r.saved.sort_unstable();
        r.saved.dedup();
        r
    }

    /// The record `now` holds in either place, as it is.
    pub(crate) fn existing(&self, now: &Current) -> Option<Record> {
        Stores::of(now, &self.router).record().cloned()
    }

    /// A record of what `now` holds, before the router changes it.
    fn fresh(&self, now: &Current, id: u32) -> Record {
        let mut restore = Vec::new();
        for (used, family) in [(self.families.0, "ipv4"), (self.families.1, "ipv6")] {
            if used {
                restore.extend(
                    sysctl::forwarding_restore(&now.sysctls, family)
                        .into_iter()
                        .flatten(),
                );
            }
        }
        let adopted = (!self.link.created())
            .then(|| self.link.find(now))
            .flatten();
        if adopted.is_some() {
            // An adopted link's own sysctls are restored (a created link's vanish with it).
            restore.extend(self.link_sysctls.iter().filter_map(|k| {
                let v = now.sysctl(k)?;
                (v != "1").then(|| (k.clone(), v.to_string()))
            }));
        }
        Record {
            router: self.router.clone(),
            id,
            link: self.link.name.clone(),
            created: self.link.created(),
            was_up: adopted.is_some_and(|l| l.up),
            saved: Vec::new(),
            restore,
        }
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
        let claim = super::role::Claim::in_kernel(now, &self.spec.router);
        if stores.notes.as_ref() == Some(wanted)
            && claim.as_ref().map(|(c, _)| c) != Some(&self.spec.claim)
        {
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
        let wanted = self.spec.wanted(now, 0);
        steps.extend(
            self.damage(now, &wanted)
                .into_iter()
                .map(|(_, _, step)| step),
        );
        Ok(())
    }
}

fn split_conf_path(path: &str) -> Option<(char, &str, &str)> {
    let rest = path.strip_prefix("net/")?;
    let (fam, rest) = rest.split_once("/conf/")?;
    let fam = match fam {
        "ipv4" => '4',
        "ipv6" => '6',
        _ => return None,
    };
    let (entry, key) = rest.rsplit_once('/')?;
    Some((fam, entry, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            router: "egress-1".into(),
            id: 0x1a2b_3c4d,
            link: "macvlan0".into(),
            created: false,
            was_up: true,
            saved: vec![0x9f3e_0a11, 0xdead_beef],
            restore: vec![
                ("net/ipv4/conf/all/forwarding".into(), "0".into()),
                ("net/ipv4/conf/eth0.100/forwarding".into(), "1".into()),
                ("net/ipv6/conf/macvlan0/ndisc_notify".into(), "0".into()),
            ],
        }
    }

    #[test]
    fn record_round_trips_as_text() {
        let r = record();
        let s = r.encode().unwrap();
        assert_eq!(
            s,
            "egress/2 r=egress-1 id=1a2b3c4d link=macvlan0 c=0 up=1 s=9f3e0a11,deadbeef \
             4all.f=0 4eth0.100.f=1 6macvlan0.nn=0"
        );
        assert_eq!(Record::decode(&s), Some(r));
    }

    #[test]
    fn record_round_trips_as_notes() {
        let r = record();
        let notes = r.notes().unwrap();
        assert_eq!(
            notes.len(),
            r.encode().unwrap().len().div_ceil(NOTE_PAYLOAD)
        );
        assert!(notes.iter().all(is_note));
        // Order does not matter: each note's metric does.
        let mut shuffled = notes.clone();
        shuffled.reverse();
        let found = Record::from_notes(&shuffled);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, r);
        assert_eq!(found[0].1.len(), notes.len());
        // A lost note loses the record (it is not guessed).
        assert!(Record::from_notes(&notes[1..]).is_empty());
        // Two records side by side (two applies racing) do not mix.
        let other = Record { id: 7, ..record() };
        let mut both = notes.clone();
        both.extend(other.notes().unwrap());
        let ids: Vec<u32> = Record::from_notes(&both)
            .iter()
            .map(|(r, _)| r.id)
            .collect();
        assert_eq!(ids, [7, r.id]);
    }

    #[test]
    fn foreign_text_is_not_a_record() {
        assert_eq!(Record::decode("managed by someone else"), None);
        assert_eq!(Record::decode("egress/2 r=x link=m 9bad.f=1"), None);
        assert_eq!(Record::decode("egress/2 link=m id=00000001"), None);
        assert_eq!(
            Record::decode("egress/1 link=macvlan0 created=1 up=0"),
            None
        );
    }

    #[test]
    fn oversized_record_is_refused() {
        let r = Record {
            router: "r".into(),
            link: "macvlan0".into(),
            restore: (0..20)
                .map(|i| (format!("net/ipv4/conf/veth{i:08}/forwarding"), "1".into()))
                .collect(),
            ..Record::default()
        };
        let e = r.encode().unwrap_err();
        assert!(e.to_string().contains("253"), "{e}");
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
