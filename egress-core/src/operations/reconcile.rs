//! Reconciliation of a namespace with a router: [`check`] (how it differs), [`plan`] (what it
//! still needs), [`ensure`] (do that) and [`teardown_by_name`] (the router removed, from what
//! the kernel holds: its markers and its crash record).

use std::collections::BTreeMap;

use serde::Serialize;
use tracing::{info, info_span, warn, Instrument};

use crate::{
    context::undo::UndoLog,
    context::{Identity, Tx},
    drift::Drift,
    error::{Error, Result},
    kernel::netns::{require_net_admin, Conn, NsHandle},
    kernel::procfs::Knob,
    model::desired::Desired,
    model::plan::Plan,
    objects::{
        addr::{self, DeleteAddress},
        change::boxed,
        link::{group_marker, is_macvlan},
        link::{DeleteLink, SetLinkDown},
        nat::DeleteTable,
        record::{self, DeleteNotes, Record, Restore, Stores, JOURNAL_TABLE, MIRROR_TABLE},
        role::{role_in, Claim},
        route::{self, DeleteRoute, RestoreRoute, Route},
        sysctl::RestoreSysctls,
        Current,
    },
    operations::apply::{fresh, open_parent},
    role::Role,
    spec::{table_name, validate_name, Netns, RouterSpec},
};

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnsureAction {
    /// Nothing was configured: the router was applied.
    Created,
    /// The kernel already matched the spec: nothing changed.
    Unchanged,
    /// The kernel had drifted: what differed was changed back, in place.
    Repaired,
}

/// The result of [`ensure`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnsureOutcome {
    /// What was done.
    pub action: EnsureAction,
    /// The drift found before (empty when unchanged; `RouterMissing` when created).
    pub drift: Vec<Drift>,
}

impl EnsureOutcome {
    /// Whether the kernel was changed.
    pub fn changed(&self) -> bool {
        self.action != EnsureAction::Unchanged
    }
}

/// How the kernel differs from `spec`; changes nothing. Empty = configured exactly.
///
/// ```no_run
/// # fn main() -> egress_core::Result<()> {
/// # let spec: egress_core::RouterSpec = unimplemented!();
/// for drift in egress_core::blocking::check(&spec)? {
///     println!("{drift}");
/// }
/// # Ok(()) }
/// ```
pub async fn check(spec: &RouterSpec) -> Result<Vec<Drift>> {
    require_net_admin("check an egress router")?;
    let span = info_span!("check", router = %spec.name);
    let spec = spec.clone();
    NsHandle::open(&spec.netns, "netns")?
        .within(move |ns| async move {
            let mut c = Conn::open(ns)?;
            let now = Current::read(&mut c, &spec.name).await?;
            Ok(Desired::with_role(&spec, role_in(&now, &spec.name)).compare(&now))
        })
        .instrument(span)
        .await
}

/// The steps that would take the namespace to `spec` now — only what is missing or wrong, the
/// whole plan when the router is not there; changes nothing (Ansible's check mode, a dry run of
/// [`ensure`]).
pub async fn plan(spec: &RouterSpec) -> Result<Plan> {
    require_net_admin("plan an egress router")?;
    let spec = spec.clone();
    NsHandle::open(&spec.netns, "netns")?
        .within(move |ns| async move {
            let mut c = Conn::open(ns)?;
            let now = Current::read(&mut c, &spec.name).await?;
            Desired::with_role(&spec, role_in(&now, &spec.name)).plan(&now)
        })
        .await
}

/// Converges the kernel to `spec` and says what it did: not configured → apply; configured
/// exactly → nothing; drifted → only what differs is changed back, in place (a missing route
/// is added, a flushed ruleset installed again, a deleted macvlan created again with what it
/// carries), as one transaction that is verified and rolled back on failure. What the router
/// replaced is never recorded again from current values: a damaged crash record is written
/// again from the place that still holds it.
///
/// The router keeps the role its record holds (a standby is never "repaired" into an active
/// one); a router that is not there is applied active ([`ensure_as`] chooses).
///
/// The router is left in place (there is no handle to drop); remove it with
/// [`teardown_by_name`].
pub async fn ensure(spec: &RouterSpec) -> Result<EnsureOutcome> {
    ensure_as(spec, Role::Active).await
}

/// [`ensure`], applying the router in role `role` when it is not there (`EGRESS_ROUTER_ROLE`
/// of the OpenShift drop-in); a router that is there keeps the role its record holds.
pub async fn ensure_as(spec: &RouterSpec, role: Role) -> Result<EnsureOutcome> {
    require_net_admin("ensure an egress router")?;
    let parent = open_parent(spec)?;
    let span = info_span!("ensure", router = %spec.name, netns = %spec.netns);
    let spec = spec.clone();
    NsHandle::open(&spec.netns, "netns")?
        .within(move |ns| ensure_in(ns, spec, role, parent))
        .instrument(span)
        .await
}

async fn ensure_in(
    ns: NsHandle,
    spec: RouterSpec,
    role: Role,
    parent: Option<NsHandle>,
) -> Result<EnsureOutcome> {
    let mut c = Conn::open(ns)?;
    let now = Current::read(&mut c, &spec.name).await?;
    // A teardown under way is not drift: it is let finish. A marker older than a teardown
    // takes (or of 7508fe2, whose age is unknown) was left by one that was killed.
    if let Some(t) = record::tearing_down(&now, &spec.name) {
        match t.age {
            Some(age) if !t.is_stale() => {
                return Err(Error::TeardownInProgress {
                    name: spec.name.clone(),
                    netns: now.netns.clone(),
                    since: age,
                })
            }
            _ => warn!(
                age_s = t.age.map(|a| a.as_secs()),
                "a teardown marker left by a teardown that did not finish: repairing"
            ),
        }
    }
    let desired = Desired::with_role(&spec, role_in(&now, &spec.name));
    let drift = desired.compare(&now);
    if drift.is_empty() {
        return Ok(EnsureOutcome {
            action: EnsureAction::Unchanged,
            drift,
        });
    }
    if !desired.exists_in(&now) {
        fresh(spec, role, c, now, parent).await?;
        info!("router applied");
        return Ok(EnsureOutcome {
            action: EnsureAction::Created,
            drift,
        });
    }
    let plan = desired.plan(&now)?;
    for d in &drift {
        info!(drift = %d, kind = %d.kind(), "repairing");
    }
    Tx::new(spec, c, now, parent, 0)?
        .run(&desired, &plan)
        .await?;
    Ok(EnsureOutcome {
        action: EnsureAction::Repaired,
        drift,
    })
}

/// Tears down router `name` in namespace `netns` from what the kernel holds, after the process
/// that applied it is gone. Idempotent: a router that is not there is success (returns an empty
/// list). Touches only what is proven the router's: objects carrying its markers, and the
/// table and crash record once another marked object vouches for them (a table whose comment
/// merely looks like a router's is left alone). Returns what was undone.
///
/// ```no_run
/// # fn main() -> egress_core::Result<()> {
/// use egress_core::{blocking, Netns};
/// blocking::teardown_by_name(&Netns::Name("pod".into()), "egress-1")?;
/// # Ok(()) }
/// ```
pub async fn teardown_by_name(netns: &Netns, name: &str) -> Result<Vec<String>> {
    validate_name(name).map_err(|f| Error::invalid_spec(f.field, f.value, f.expected))?;
    require_net_admin("tear down an egress router")?;
    let span = info_span!("teardown", router = %name, netns = %netns);
    let name = name.to_string();
    NsHandle::open(netns, "netns")?
        .within(move |ns| teardown_in(ns, name, None))
        .instrument(span)
        .await
}

/// Teardown inside the router's namespace; with `expect`, only of the router a handle applied.
pub(crate) async fn teardown_in(
    ns: NsHandle,
    name: String,
    expect: Option<Identity>,
) -> Result<Vec<String>> {
    let mut c = Conn::open(ns)?;
    let now = Current::read(&mut c, &name).await?;
    let owned = Owned::of(&now, &name);
    if let Some(expect) = expect {
        match (&owned.record, owned.anything()) {
            (_, false) => return Ok(Vec::new()),
            (Some(r), true) if r.id == expect.id => {}
            (record, true) => return Err(Error::StaleHandle {
                name,
                netns: now.netns.clone(),
                reason: match record {
                    Some(r) => format!(
                        "its crash record holds apply id {:08x}, this handle applied {:08x}",
                        r.id, expect.id
                    ),
                    None => {
                        "its crash record is gone, so it cannot be told apart; tear it down by name"
                            .into()
                    }
                },
            }),
        }
    }
    if let Some(why) = &owned.unproven {
        warn!(router = %name, reason = %why, "not proven to be the router's: left untouched");
    }
    let journal = owned.journal(&now);
    let undone = journal.described();
    // While it runs, a watcher of the router (another process's) must not repair it.
    let marker = owned
        .record
        .as_ref()
        .map(|r| record::teardown_marker(r.id, record::boottime()));
    if let Some(m) = &marker {
        match route::add(&c.rt, m, "the teardown marker").await {
            Err(e) if e.errno() != Some(libc::EEXIST) => return Err(e),
            _ => {}
        }
    }
    let mut failures = journal.unwind(&c).await;
    if let Some(m) = marker {
        if let Err(e) = route::delete(&c.rt, &m, "the teardown marker").await {
            failures.push((m.describe(&now.names()), e));
        }
    }
    if failures.is_empty() {
        Ok(undone)
    } else {
        Err(Error::Teardown {
            failures: failures.into_iter().map(|(_, e)| e).collect(),
        })
    }
}

/// What of router `name` a namespace holds that is proven the router's: nothing without its
/// crash record (but the debris of a record whose writing a crash cut short), and with it
/// what the record names and what carries the router's markers.
struct Owned<'a> {
    name: &'a str,
    /// The crash record, when proven.
    record: Option<Record>,
    /// The note routes (proto 158 in the journal table) of this router.
    notes: Vec<&'a Route>,
    /// Whether the table is proven the router's.
    table: bool,
    /// The macvlan the router created: the one its record names, with its group marker.
    created_link: Option<(u32, String)>,
    /// Why something that looks like the router's was left alone.
    unproven: Option<String>,
}

impl<'a> Owned<'a> {
    fn of(now: &'a Current, name: &'a str) -> Owned<'a> {
        let stores = Stores::of(now, name);
        stores.warn_rejected(name);
        let record = stores.proven(now).cloned();
        let table_exists = now.has_table(&table_name(name));
        let marker = group_marker(name);
        let unproven = match &record {
            Some(_) => None,
            None if table_exists => Some(format!(
                "table inet {} exists, but no marked object of the router vouches for it \
                 (no crash record routes in table {JOURNAL_TABLE}, no macvlan with group \
                 {marker:#x} where its comment says, no address or route of ours on the link \
                 its comment names)",
                table_name(name)
            )),
            None => now
                .links
                .iter()
                .find(|l| l.group == marker && is_macvlan(l))
                .map(|l| {
                    format!(
                        "macvlan {} carries the group marker {marker:#x} of this name, but no \
                         crash record of router `{name}` names it (the marker is a hash of \
                         the name: another router's, or the record was flushed)",
                        l.name
                    )
                }),
        };
        // The debris of a record whose writing was cut short: this router's, and nothing else.
        let mut notes = stores.debris;
        let Some(r) = &record else {
            return Owned {
                name,
                record,
                notes,
                table: false,
                created_link: None,
                unproven,
            };
        };
        let created_link = now
            .links
            .iter()
            .find(|l| r.created && l.name == r.link.as_str() && l.group == marker && is_macvlan(l))
            .map(|l| (l.index, l.name.clone()));
        // The notes of its record; its identity notes and its role markers; the markers a
        // crash left (a role change's, a teardown's).
        notes.extend(stores.note_routes);
        notes.extend(Claim::notes_in(now, name));
        notes.extend(Claim::unfinished(now, r.id));
        notes.extend(crate::objects::role::markers_in(now, name));
        notes.extend(record::role_change_in(now, name));
        notes.extend(
            record::teardown_markers(now, name)
                .into_iter()
                .map(|(m, _)| m),
        );
        Owned {
            name,
            record,
            notes,
            table: table_exists,
            created_link,
            unproven,
        }
    }

    /// Whether anything of the router is here.
    fn anything(&self) -> bool {
        self.table || self.record.is_some() || self.created_link.is_some() || !self.notes.is_empty()
    }

    /// The undos of what is proven the router's, in apply order (unwinding runs them in the
    /// order teardown needs).
    fn journal(&self, now: &Current) -> UndoLog {
        let mut j = UndoLog::default();
        let names = now.names();
        if !self.notes.is_empty() {
            j.push(boxed(DeleteNotes {
                routes: self.notes.iter().map(|r| (*r).clone()).collect(),
            }));
        }
        let Some(record) = &self.record else {
            return j;
        };
        if self.table {
            j.push(boxed(DeleteTable {
                table: table_name(self.name),
            }));
        }
        let mut saved: BTreeMap<u32, Route> = BTreeMap::new();
        for table in [MIRROR_TABLE, JOURNAL_TABLE] {
            for copy in Stores::copies(now, record, table) {
                saved.insert(
                    crate::objects::record::fingerprint(&route::in_table(
                        copy,
                        route::main_table(),
                    )),
                    copy.clone(),
                );
                j.push(boxed(DeleteRoute {
                    route: copy.clone(),
                    what: copy.describe(&names),
                }));
            }
        }
        let ext = now.link(record.link.as_str());
        match (&self.created_link, ext) {
            (Some((index, link)), _) => j.push(boxed(DeleteLink {
                index: *index,
                name: link.clone(),
            })),
            (None, Some(l)) if !record.created && !record.was_up => j.push(boxed(SetLinkDown {
                index: l.index,
                name: l.name.clone(),
            })),
            _ => {}
        }
        // Forwarding (and what writing it changes) last; the link's own values first.
        let (family, link_keys): (Vec<&Restore>, Vec<&Restore>) = record
            .restore
            .iter()
            .partition(|e| matches!(e.knob, Knob::Forwarding | Knob::AcceptRedirects));
        let (family, link_keys): (Vec<_>, Vec<_>) = (
            family.into_iter().map(Restore::write).collect(),
            link_keys.into_iter().map(Restore::write).collect(),
        );
        if !link_keys.is_empty() {
            j.push(boxed(RestoreSysctls { writes: link_keys }));
        }
        if let Some(l) = ext {
            for a in now
                .addrs
                .iter()
                .filter(|a| a.index == l.index && addr::marked(now, a, self.name))
            {
                j.push(boxed(DeleteAddress {
                    index: a.index,
                    link: l.name.clone(),
                    net: a.net,
                }));
            }
        }
        for copy in saved.values() {
            j.push(boxed(RestoreRoute {
                route: route::in_table(copy, route::main_table()),
                what: route::in_table(copy, route::main_table()).describe(&names),
            }));
        }
        for r in now
            .routes
            .iter()
            .filter(|r| r.is_ours() && r.table == route::main_table())
        {
            j.push(boxed(DeleteRoute {
                route: r.clone(),
                what: r.describe(&names),
            }));
        }
        if !family.is_empty() {
            j.push(boxed(RestoreSysctls { writes: family }));
        }
        j
    }
}
