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
    fmt,
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
    time::Duration,
};

use ipnetwork::IpNetwork;
use netlink_packet_route::route::RouteType;
use serde::Serialize;

use super::{
    link::{group_marker, random_mac, LinkRef},
    record::{is_tagged, note, note_id, read_text_notes, text_notes, JOURNAL_TABLE, MIRROR_TABLE},
    route::Route,
    Current, KernelObject, Step,
};
use crate::{
    drift::Drift,
    error::{Error, Result},
    spec::{format_mac, Announce, External, Macvlan, RouterSpec},
};

/// Whether a router holds the egress identity (its addresses, its default route via the
/// gateway, its stable MAC, and announces them) or only has everything else staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Holds the egress identity and forwards.
    #[default]
    Active,
    /// Everything staged (link, NAT table, forward filter, sysctls, gateway host route) but
    /// what claims the egress identity: never answers for the egress IP, never forwards.
    Standby,
}

impl Role {
    /// `active` / `standby`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Role> {
        match s {
            "active" => Ok(Role::Active),
            "standby" => Ok(Role::Standby),
            _ => Err(Error::invalid("role", s, "active or standby")),
        }
    }
}

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

/// Router `router`'s role marker in table `table` of `now`, if any.
pub(crate) fn marker_in_table<'a>(now: &'a Current, router: &str, table: u32) -> Option<&'a Route> {
    let prefix = marker_bytes(&marker(router, Role::Active, None));
    // The kernel reports these routes on `lo`: compared by what the marker is made of.
    now.routes.iter().find(|r| {
        r.table == table
            && r.is_ours()
            && r.dst.prefix() == 128
            && marker_bytes(r)[..6] == prefix[..6]
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
    pub internal: String,
    pub link: String,
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
        Claim {
            router: spec.name.clone(),
            internal: spec.internal.clone(),
            link: spec.external.link_name().to_string(),
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

    pub(crate) fn decode(s: &str) -> Option<Claim> {
        let mut it = s.split(' ');
        if it.next()? != CLAIM_MAGIC {
            return None;
        }
        let mut fields = std::collections::HashMap::new();
        for tok in it {
            let (k, v) = tok.split_once('=')?;
            fields.insert(k, v);
        }
        fn list(v: &str) -> Vec<&str> {
            match v {
                "-" => Vec::new(),
                v => v.split(',').collect(),
            }
        }
        let mac = |v: &str| -> Option<Option<[u8; 6]>> {
            match v {
                "-" => Some(None),
                v => unhex(v).map(Some),
            }
        };
        let (count, ms) = fields.get("a")?.split_once(',')?;
        Some(Claim {
            router: fields.get("r")?.to_string(),
            internal: fields.get("i")?.to_string(),
            link: fields.get("l")?.to_string(),
            created: *fields.get("c")? == "1",
            sources: list(fields.get("s")?)
                .into_iter()
                .map(|s| s.parse().ok())
                .collect::<Option<_>>()?,
            gateways: list(fields.get("g")?)
                .into_iter()
                .map(|s| s.parse().ok())
                .collect::<Option<_>>()?,
            stable_mac: mac(fields.get("m")?)?,
            own_mac: mac(fields.get("o")?)?,
            announce: Announce {
                count: count.parse().ok()?,
                interval: Duration::from_millis(ms.parse().ok()?),
            },
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

    /// The spec of the router as the kernel holds it, enough to change its role: its identity,
    /// its links. (Its NAT rules and the macvlan's parent are not part of it.)
    pub(crate) fn spec(&self, netns: crate::Netns) -> RouterSpec {
        let (mut gateway4, mut gateway6) = (None, None);
        for g in &self.gateways {
            match g {
                IpAddr::V4(a) => gateway4 = Some(*a),
                IpAddr::V6(a) => gateway6 = Some(*a),
            }
        }
        RouterSpec {
            name: self.router.clone(),
            netns,
            external: match self.created {
                true => External::Macvlan(Macvlan {
                    parent: String::new(),
                    parent_netns: crate::Netns::Current,
                    mode: crate::MacvlanMode::default(),
                    mtu: None,
                    mac: self.own_mac,
                    name: self.link.clone(),
                }),
                false => External::Adopt(self.link.clone()),
            },
            internal: self.internal.clone(),
            sources: self.sources.clone(),
            gateway4,
            gateway6,
            redirects: Vec::new(),
            fallback4: None,
            fallback6: None,
            kept_routes: Vec::new(),
            local_ports: Vec::new(),
            announce: self.announce,
            probe: None,
            stable_mac: self.stable_mac,
        }
    }
}

fn hex(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    if s.len() != 12 {
        return None;
    }
    for (i, b) in mac.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(mac)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_round_trips_as_text() {
        let c = Claim {
            router: "egress-1".into(),
            internal: "eth0".into(),
            link: "macvlan0".into(),
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
