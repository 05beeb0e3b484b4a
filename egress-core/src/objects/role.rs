//! The router's role (active or standby) and what claims the egress identity.
//!
//! - the *role marker*: one route in the journal table, `6572:<router marker>:<own MAC>::/128
//!   table 1701278323 proto 158 metric 1`, a `blackhole` for a standby and `unreachable` for an
//!   active router (no rule ever looks that table up), and its copy in the mirror table
//!   1701278317, so that a flush of one routing table does not lose the role (a standby taken
//!   for active would be "repaired" into a second active instance). It keeps the external
//!   link's own MAC, which a standby takes back when it gives the stable MAC up. A role change
//!   replaces both in place (`NLM_F_REPLACE`), last in its flight of requests, the journal
//!   table's first: that one is the commit point, and the one read while both are there. A
//!   copy that is missing or differs is drift (`journal_damaged`) that `ensure` and the watch
//!   write again. A router without either (applied before roles existed, or applied active;
//!   or both tables flushed) is active.
//! - the *identity notes*: what a promotion claims (the egress addresses, the gateways, the
//!   stable MAC, the announcements, the links), written with the crash record as notes tagged
//!   `6569:` ("ei"), so that `promote` / `demote` by name need nothing but the kernel.
//! - [`StableMac`] and [`RoleMark`], the identity objects of [`crate::Desired`] besides the
//!   addresses and the default routes.

use std::{
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
    time::Duration,
};

use ipnetwork::IpNetwork;
use netlink_packet_route::route::RouteType;

use super::{
    change::{boxed, At, Change, Done, Kernel, Sent},
    link::{group_marker, random_mac, LinkRef},
    record::{is_tagged, note, note_id, read_text_notes, text_notes, JOURNAL_TABLE, MIRROR_TABLE},
    route::{self, Route},
    Current, Inverse, KernelObject, Step,
};
use crate::{
    drift::Drift,
    error::{Error, Result},
    kernel::ifname::IfName,
    role::Role,
    spec::{
        format_mac, validate_name, Announce, External, RouterSpec, MAX_ANNOUNCE,
        MAX_ANNOUNCE_INTERVAL,
    },
};

/// The role marker of router `router` holding `role`, keeping the link's own MAC `own`.
pub(crate) fn marker(router: &str, role: Role, own: Option<[u8; 6]>) -> Route {
    let mut bytes = [0u8; 16];
    bytes[..2].copy_from_slice(&[0x65, 0x72]);
    bytes[2..6].copy_from_slice(&group_marker(router).to_be_bytes());
    bytes[6..12].copy_from_slice(&own.unwrap_or_default());
    let mut r = note(Ipv6Addr::from(bytes), 1);
    let kind = match role {
        Role::Standby => RouteType::BlackHole,
        Role::Active => RouteType::Unreachable,
    };
    r.message.header.kind = kind;
    r.kind = kind;
    r
}

/// The tables that keep the role marker, the one read first first.
pub(crate) const MARKER_TABLES: [u32; 2] = [JOURNAL_TABLE, MIRROR_TABLE];

/// Router `router`'s role marker in table `table` of `now`, if any: a `/128` route of ours
/// of place (metric) 1, a blackhole or an unreachable one, whose address is the tag, the
/// router's group marker and a MAC, then zeros. (The group marker is a hint among the
/// namespace's objects: one router per namespace, its record proven before a marker is acted
/// on by name.)
pub(crate) fn marker_in_table<'a>(now: &'a Current, router: &str, table: u32) -> Option<&'a Route> {
    let prefix = marker_bytes(&marker(router, Role::Active, None));
    // The kernel reports these routes on `lo`: compared by what the marker is made of.
    now.routes.iter().find(|r| {
        let b = marker_bytes(r);
        r.table == table
            && r.is_ours()
            && r.dst.prefix() == 128
            && r.metric() == 1
            && matches!(r.kind, RouteType::BlackHole | RouteType::Unreachable)
            && b[..6] == prefix[..6]
            && b[12..] == [0; 4]
    })
}

/// Router `router`'s role marker in `now`, if any: the journal table's, else its copy.
pub(crate) fn marker_in<'a>(now: &'a Current, router: &str) -> Option<&'a Route> {
    MARKER_TABLES
        .iter()
        .find_map(|t| marker_in_table(now, router, *t))
}

/// Both copies of router `router`'s role marker in `now` (for teardown).
pub(crate) fn markers_in<'a>(now: &'a Current, router: &str) -> Vec<&'a Route> {
    MARKER_TABLES
        .iter()
        .filter_map(|t| marker_in_table(now, router, *t))
        .collect()
}

fn marker_bytes(r: &Route) -> [u8; 16] {
    match r.dst.ip() {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => [0; 16],
    }
}

/// The external link's own MAC, as router `router`'s role marker in `now` keeps it.
pub(crate) fn own_mac_in(now: &Current, router: &str) -> Option<[u8; 6]> {
    let b = marker_bytes(marker_in(now, router)?);
    let mac: [u8; 6] = b[6..12].try_into().ok()?;
    (mac != [0; 6]).then_some(mac)
}

/// The role router `router` holds in `now`, as its marker says (active without one).
pub(crate) fn role_in(now: &Current, router: &str) -> Role {
    match marker_in(now, router).map(|r| r.kind) {
        Some(RouteType::BlackHole) => Role::Standby,
        _ => Role::Active,
    }
}

/// The tag of the identity notes (`6569:`, "ei").
const CLAIM_TAG: [u8; 2] = [0x65, 0x69];
const CLAIM_MAGIC: &str = "ha/1";

/// What a promotion claims and a demotion gives back, as the identity notes hold it:
/// `ha/1 r=egress-1 i=eth0 l=macvlan0 c=1 s=203.0.113.99/24 g=203.0.113.1 m=00005e000133 o=- a=3,100`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    pub router: String,
    pub internal: IfName,
    pub link: IfName,
    pub created: bool,
    pub sources: Vec<IpNetwork>,
    pub gateways: Vec<IpAddr>,
    pub stable_mac: Option<[u8; 6]>,
    pub own_mac: Option<[u8; 6]>,
    pub announce: Announce,
}

impl Claim {
    pub(crate) fn of(spec: &RouterSpec) -> Claim {
        let own_mac = match &spec.external {
            External::Macvlan(m) => m.mac,
            External::Adopt(_) => None,
        };
        // A spec's link names passed the same rule when it was validated.
        let link_name = |n: &str| IfName::parse(n).expect("a spec's link names are link names");
        Claim {
            router: spec.name.clone(),
            internal: link_name(&spec.internal),
            link: link_name(spec.external.link_name()),
            created: matches!(spec.external, External::Macvlan(_)),
            sources: spec.sources.clone(),
            gateways: spec
                .gateway4
                .map(IpAddr::from)
                .into_iter()
                .chain(spec.gateway6.map(IpAddr::from))
                .collect(),
            stable_mac: spec.stable_mac,
            own_mac,
            announce: spec.announce,
        }
    }

    pub(crate) fn encode(&self) -> String {
        let list = |v: Vec<String>| match v.is_empty() {
            true => "-".to_string(),
            false => v.join(","),
        };
        let mac = |m: Option<[u8; 6]>| m.map_or("-".to_string(), |m| hex(&m));
        format!(
            "{CLAIM_MAGIC} r={} i={} l={} c={} s={} g={} m={} o={} a={},{}",
            self.router,
            self.internal,
            self.link,
            self.created as u8,
            list(self.sources.iter().map(ToString::to_string).collect()),
            list(self.gateways.iter().map(ToString::to_string).collect()),
            mac(self.stable_mac),
            mac(self.own_mac),
            self.announce.count,
            self.announce.interval.as_millis()
        )
    }

    /// The claim in `s`, read with the grammar [`encode`](Self::encode) writes and nothing
    /// else (each field in its place, once; names, addresses and numbers as a spec allows
    /// them, each written as `encode` writes it); `None` for anything else.
    pub(crate) fn decode(s: &str) -> Option<Claim> {
        let mut it = s.split(' ');
        if it.next()? != CLAIM_MAGIC {
            return None;
        }
        let mut field = |name: &str| it.next()?.strip_prefix(name);
        let router = field("r=")?.to_string();
        validate_name(&router).ok()?;
        let internal = IfName::parse(field("i=")?)?;
        let link = IfName::parse(field("l=")?)?;
        let created = match field("c=")? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let sources = canonical_list::<IpNetwork>(field("s=")?)?;
        let gateways = canonical_list::<IpAddr>(field("g=")?)?;
        let one_of_each = gateways.iter().filter(|g| g.is_ipv4()).count() <= 1
            && gateways.iter().filter(|g| g.is_ipv6()).count() <= 1;
        let mac = |v: &str| -> Option<Option<[u8; 6]>> {
            match v {
                "-" => Some(None),
                v => unhex(v).map(Some),
            }
        };
        let stable_mac = mac(field("m=")?)?;
        let own_mac = mac(field("o=")?)?;
        let (count, ms) = field("a=")?.split_once(',')?;
        let announce = Announce {
            count: canonical::<u8>(count).filter(|c| *c <= MAX_ANNOUNCE)?,
            interval: Duration::from_millis(canonical::<u64>(ms)?),
        };
        let interval_ok =
            !announce.interval.is_zero() && announce.interval <= MAX_ANNOUNCE_INTERVAL;
        if it.next().is_some() || !one_of_each || !interval_ok {
            return None;
        }
        Some(Claim {
            router,
            internal,
            link,
            created,
            sources,
            gateways,
            stable_mac,
            own_mac,
            announce,
        })
    }

    /// The notes that hold this claim, with apply id `id` (the crash record's).
    pub(crate) fn notes(&self, id: u32) -> Vec<Route> {
        text_notes(CLAIM_TAG, id, &self.encode())
    }

    /// Router `router`'s claim in `now`, with its notes.
    pub(crate) fn in_kernel<'a>(now: &'a Current, router: &str) -> Option<(Claim, Vec<&'a Route>)> {
        read_text_notes(CLAIM_TAG, &now.routes)
            .into_iter()
            .filter_map(|(_, text, notes)| Some((Claim::decode(&text)?, notes)))
            .find(|(c, _)| c.router == router)
    }

    /// The identity notes of apply `id` whose claim does not decode: a crash cut their writing
    /// short (they carry the record's apply id, not the router's name). For teardown.
    pub(crate) fn unfinished(now: &Current, id: u32) -> Vec<&Route> {
        let whole = read_text_notes(CLAIM_TAG, &now.routes)
            .into_iter()
            .any(|(i, text, _)| i == id && Claim::decode(&text).is_some());
        match whole {
            true => Vec::new(),
            false => now
                .routes
                .iter()
                .filter(|r| is_tagged(r, CLAIM_TAG) && note_id(r) == id)
                .collect(),
        }
    }

    /// Every identity note of router `router` in `now` (whole or not), for teardown.
    pub(crate) fn notes_in<'a>(now: &'a Current, router: &str) -> Vec<&'a Route> {
        Claim::in_kernel(now, router)
            .map(|(_, notes)| notes)
            .unwrap_or_default()
    }
}

fn hex(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

/// Twelve lowercase hex digits (what [`hex`] writes).
fn unhex(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    if s.len() != 12 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    for (i, b) in mac.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(mac)
}

/// `s` as a `T`, when `T` writes it back exactly so (no sign, no leading zero, no other
/// spelling of the same value).
fn canonical<T: FromStr + ToString>(s: &str) -> Option<T> {
    s.parse().ok().filter(|v: &T| v.to_string() == s)
}

/// `-` (none) or values separated by `,`, each [`canonical`].
fn canonical_list<T: FromStr + ToString>(s: &str) -> Option<Vec<T>> {
    match s {
        "-" => Some(Vec::new()),
        s => s.split(',').map(canonical).collect(),
    }
}

/// The stable MAC of the external macvlan: held while active, never while standby (the
/// standby keeps, or gets back, its own).
#[derive(Debug, Clone)]
pub(crate) struct StableMac {
    pub router: String,
    pub link: LinkRef,
    pub stable: [u8; 6],
    /// The link's own MAC, when the spec sets one (the external link object keeps it).
    pub own: Option<[u8; 6]>,
    pub held: bool,
}

impl KernelObject for StableMac {
    fn render(&self) -> String {
        match self.held {
            true => format!(
                "ip link set dev {} address {} (the stable MAC, while active)",
                self.link.name,
                format_mac(&self.stable)
            ),
            false => format!(
                "(not the stable MAC {} on {} while standby)",
                format_mac(&self.stable),
                self.link.name
            ),
        }
    }

    fn compare(&self, now: &Current, drift: &mut Vec<Drift>) {
        let Some(l) = self.link.find(now) else { return };
        let holds = l.mac[..] == self.stable[..];
        match (self.held, holds) {
            (true, false) => drift.push(Drift::LinkChanged {
                link: self.link.name.clone(),
                field: "mac",
                expected: format_mac(&self.stable),
                actual: format_mac(&l.mac),
            }),
            // With a MAC of its own in the spec, the link object reports it.
            (false, true) if self.own.is_none() => drift.push(Drift::IdentityHeld {
                what: format!(
                    "the stable MAC {} on {}",
                    format_mac(&self.stable),
                    self.link.name
                ),
            }),
            _ => {}
        }
    }

    fn repair(&self, now: &Current, steps: &mut Vec<Step>) -> Result<()> {
        let Some(l) = self.link.find(now) else {
            // Created again by the plan, with its own MAC.
            if self.held {
                steps.push(Step::SetMac {
                    link: self.link.name.clone(),
                    mac: self.stable,
                });
            }
            return Ok(());
        };
        let holds = l.mac[..] == self.stable[..];
        match (self.held, holds) {
            (true, false) => steps.push(Step::SetMac {
                link: self.link.name.clone(),
                mac: self.stable,
            }),
            (false, true) => steps.push(Step::SetMac {
                link: self.link.name.clone(),
                mac: match self
                    .own
                    .or_else(|| own_mac_in(now, &self.router))
                    .or_else(random_mac)
                {
                    Some(own) => own,
                    None => {
                        return Err(Error::kernel(
                            "getrandom: a MAC of its own for the standby",
                            libc::EIO,
                        ))
                    }
                },
            }),
            _ => {}
        }
        Ok(())
    }
}

/// The role marker: what the router's record says its role is.
#[derive(Debug, Clone)]
pub(crate) struct RoleMark {
    pub router: String,
    pub role: Role,
}

impl KernelObject for RoleMark {
    fn render(&self) -> String {
        Step::MarkRole { role: self.role }.to_string()
    }

    fn compare(&self, now: &Current, drift: &mut Vec<Drift>) {
        let actual = role_in(now, &self.router);
        if actual != self.role {
            drift.push(Drift::RoleChanged {
                expected: self.role,
                actual,
            });
            return;
        }
        for table in self.copies_damaged(now) {
            drift.push(Drift::JournalDamaged {
                store: format!("role marker (table {table})"),
                detail: format!("the copy of the role marker ({actual}) is missing or differs"),
            });
        }
    }

    fn repair(&self, now: &Current, steps: &mut Vec<Step>) -> Result<()> {
        // An active router needs no marker; a standby one always does.
        let marked = marker_in(now, &self.router).map(|_| role_in(now, &self.router));
        let wanted = match self.role {
            Role::Active => marked.is_some_and(|r| r != Role::Active),
            Role::Standby => marked != Some(Role::Standby),
        };
        if wanted || !self.copies_damaged(now).is_empty() {
            steps.push(Step::MarkRole { role: self.role });
        }
        Ok(())
    }

    /// Both copies of the role marker, deleted with the crash record's notes.
    fn remove(&self, now: &Current, inverse: &mut Inverse<'_>) {
        inverse
            .notes
            .extend(markers_in(now, &self.router).into_iter().cloned());
    }
}

impl RoleMark {
    /// The tables whose copy of the marker is missing or of another role, when the router is
    /// marked at all (an active router may have no marker).
    fn copies_damaged(&self, now: &Current) -> Vec<u32> {
        let Some(read) = marker_in(now, &self.router) else {
            return Vec::new();
        };
        MARKER_TABLES
            .into_iter()
            .filter(|t| marker_in_table(now, &self.router, *t).is_none_or(|m| m.kind != read.kind))
            .collect()
    }
}

/// `ip -6 route replace … 6572:…/128` in one marker table: the role marker set, replaced in
/// place; undone by putting the one before back (or deleting it: there was none).
#[derive(Debug)]
pub(crate) struct MarkRole {
    pub set: Route,
    pub previous: Option<Route>,
}

impl Change for MarkRole {
    fn describe(&self) -> String {
        "ip -6 route replace …: the role marker".to_string()
    }

    fn remains(&self) -> String {
        "the role marker of the old role".to_string()
    }

    fn pipelined(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            route::replace(&k.c.rt, &self.set, "the role marker").await?;
            Ok(Done::Nothing)
        })
    }

    fn undo(&self, _: &Done) -> Option<Box<dyn Change>> {
        Some(boxed(UnmarkRole {
            current: self.set.clone(),
            previous: self.previous.clone(),
        }))
    }
}

/// The role marker put back as it was: `previous`, or none.
#[derive(Debug)]
pub(crate) struct UnmarkRole {
    pub current: Route,
    pub previous: Option<Route>,
}

impl Change for UnmarkRole {
    fn describe(&self) -> String {
        match self.previous {
            Some(_) => "ip -6 route replace …: the previous role marker".to_string(),
            None => "ip -6 route del …: the role marker".to_string(),
        }
    }

    fn remains(&self) -> String {
        "the role marker of the new role".to_string()
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            match &self.previous {
                Some(p) => route::replace(&k.c.rt, p, "the previous role marker").await?,
                None => drop(route::delete(&k.c.rt, &self.current, "the role marker").await?),
            }
            Ok(Done::Nothing)
        })
    }
}

impl Step {
    /// The role marker replaced in both marker tables, the journal table's first (the commit
    /// point). It keeps the link's own MAC: the one the marker there keeps (replaced in
    /// place), else the one the link has while it does not hold the stable MAC.
    pub(crate) fn mark_role_changes(at: &At<'_>, role: Role) -> Vec<Box<dyn Change>> {
        let own = match marker_in(at.now, at.name) {
            Some(_) => own_mac_in(at.now, at.name),
            None => at
                .link(&at.external.name)
                .and_then(|l| <[u8; 6]>::try_from(l.mac.as_slice()).ok())
                .filter(|m| Some(*m) != at.stable_mac),
        };
        let current = marker(at.name, role, own);
        MARKER_TABLES
            .into_iter()
            .map(|table| {
                boxed(MarkRole {
                    set: route::in_table(&current, table),
                    previous: marker_in_table(at.now, at.name, table).cloned(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_round_trips_as_text() {
        let c = Claim {
            router: "egress-1".into(),
            internal: IfName::parse("eth0").unwrap(),
            link: IfName::parse("macvlan0").unwrap(),
            created: true,
            sources: vec![
                "203.0.113.99/24".parse().unwrap(),
                "2001:db8:1::99/64".parse().unwrap(),
            ],
            gateways: vec!["203.0.113.1".parse().unwrap()],
            stable_mac: Some([0, 0, 0x5e, 0, 1, 0x33]),
            own_mac: None,
            announce: Announce {
                count: 3,
                interval: Duration::from_millis(100),
            },
        };
        let text = c.encode();
        assert_eq!(
            text,
            "ha/1 r=egress-1 i=eth0 l=macvlan0 c=1 s=203.0.113.99/24,2001:db8:1::99/64 \
             g=203.0.113.1 m=00005e000133 o=- a=3,100"
        );
        assert_eq!(Claim::decode(&text), Some(c.clone()));
        let notes = c.notes(7);
        let read = read_text_notes(CLAIM_TAG, &notes);
        assert_eq!(read.len(), 1);
        assert_eq!(Claim::decode(&read[0].1), Some(c));
        assert_eq!(Claim::decode("egress/2 r=x"), None);
    }

    const CLAIM: &str =
        "ha/1 r=egress-1 i=eth0 l=macvlan0 c=1 s=203.0.113.99/24,2001:db8:1::99/64 \
                         g=203.0.113.1,2001:db8:1::1 m=00005e000133 o=020000000007 a=3,100";

    #[test]
    fn a_claim_is_what_encode_writes_and_nothing_else() {
        let c = Claim::decode(CLAIM).unwrap();
        assert_eq!(c.encode(), CLAIM);
        let with = |from: &str, to: &str| {
            assert!(CLAIM.contains(from), "{from}");
            CLAIM.replacen(from, to, 1)
        };
        for bad in [
            with("ha/1", "ha/2"),
            with("r=egress-1", "r=Egress"),
            with("i=eth0", "i=../../etc"),
            with("l=macvlan0", "l=a/b"),
            with("l=macvlan0", "l=1234567890123456"),
            with("c=1", "c=2"),
            with("s=203.0.113.99/24", "s=203.0.113.99"),
            with("s=203.0.113.99/24", "s=203.0.113.099/24"),
            with("s=203.0.113.99/24,", "s=,"),
            with("g=203.0.113.1,", "g=203.0.113.1,203.0.113.2,"),
            with("g=203.0.113.1", "g=foo"),
            with("m=00005e000133", "m=00005E000133"),
            with("m=00005e000133", "m=00005e00013"),
            with("o=020000000007", "o="),
            with("a=3,100", "a=17,100"),
            with("a=3,100", "a=3,0"),
            with("a=3,100", "a=3,10001"),
            with("a=3,100", "a=03,100"),
            with("a=3,100", "a=3"),
            with(" c=1", " c=1 c=1"),
            with(" c=1", ""),
            with("i=eth0 l=macvlan0", "l=macvlan0 i=eth0"),
            format!("{CLAIM} x=1"),
            format!("{CLAIM} "),
            with(" a=", "  a="),
        ] {
            assert_eq!(Claim::decode(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_role_marker_tells_the_roles_apart_by_kind_only() {
        let own = Some([2, 0, 0, 0, 0, 7]);
        let (a, s) = (
            marker("r", Role::Active, own),
            marker("r", Role::Standby, own),
        );
        assert_eq!(a.dst, s.dst);
        assert_ne!(a.kind, s.kind);
        assert_ne!(
            marker("r", Role::Active, own).dst,
            marker("q", Role::Active, own).dst
        );
        assert_eq!("standby".parse::<Role>().unwrap(), Role::Standby);
        assert!("primary".parse::<Role>().is_err());
    }
}
