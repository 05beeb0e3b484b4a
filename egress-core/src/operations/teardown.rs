//! Teardown: a router's read-back model ([`Desired::read`]), inverted — each object's
//! inverse, the crash record's putting back what the router replaced — and unwound. The
//! namespace is returned to what it was, from what the kernel proves the router's alone.

use tracing::{info_span, warn, Instrument};

use crate::{
    context::{undo::UndoLog, Identity},
    error::{Error, Result},
    kernel::netns::{require_net_admin, Conn, NsHandle},
    model::Desired,
    objects::{
        link::{group_marker, is_macvlan},
        record::{self, DeleteNotes, Record, Stores, JOURNAL_TABLE},
        route, Current,
    },
    spec::{table_name, validate_name, Netns},
};

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

/// What [`teardown_by_name`] would undo now, in its words and its order; changes nothing (the
/// dry run of a teardown by name: Ansible's check mode of `state: absent`). Empty when nothing
/// of the router is there. Like the teardown, it counts only what is proven the router's: a
/// look-alike table, or a marked macvlan no crash record names, is not listed.
pub async fn plan_teardown(netns: &Netns, name: &str) -> Result<Vec<String>> {
    validate_name(name).map_err(|f| Error::invalid_spec(f.field, f.value, f.expected))?;
    require_net_admin("plan the teardown of an egress router")?;
    let name = name.to_string();
    NsHandle::open(netns, "netns")?
        .within(move |ns| async move {
            let mut c = Conn::open(ns)?;
            let now = Current::read(&mut c, &name).await?;
            let stores = Stores::of(&now, &name);
            let read = Desired::read(&now, &name);
            Ok(undo_log(&now, &name, read.as_ref().map(|(m, r)| (m, r)), &stores).described())
        })
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
    let stores = Stores::of(&now, &name);
    stores.warn_rejected(&name);
    let read = Desired::read(&now, &name);
    if let Some(expect) = expect {
        let record = read.as_ref().map(|(_, r)| r);
        let anything =
            record.is_some() || now.has_table(&table_name(&name)) || !stores.debris.is_empty();
        match (record, anything) {
            (_, false) => return Ok(Vec::new()),
            (Some(r), true) if r.id == expect.id => {}
            (record, true) => return Err(stale(&name, &now, record, expect)),
        }
    }
    let log = undo_log(&now, &name, read.as_ref().map(|(m, r)| (m, r)), &stores);
    let undone = log.described();
    // While it runs, a watcher of the router (another process's) must not repair it.
    let marker = read
        .as_ref()
        .map(|(_, r)| record::teardown_marker(r.id, record::boottime()));
    if let Some(m) = &marker {
        match route::add(&c.rt, m, "the teardown marker").await {
            Err(e) if e.errno() != Some(libc::EEXIST) => return Err(e),
            _ => {}
        }
    }
    let mut failures = log.unwind(&c).await;
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

/// The undo log of a teardown of router `name`: the inverse of its read-back model (`read`,
/// with its proven crash record), or, without one, the debris of a record whose writing a
/// crash cut short — this router's, and nothing else.
fn undo_log(
    now: &Current,
    name: &str,
    read: Option<(&Desired, &Record)>,
    stores: &Stores<'_>,
) -> UndoLog {
    if let Some((model, record)) = read {
        return UndoLog::of(model.inverse(now, record));
    }
    if let Some(why) = unproven(now, name) {
        warn!(router = %name, reason = %why, "not proven to be the router's: left untouched");
    }
    let mut log = UndoLog::default();
    if !stores.debris.is_empty() {
        log.push(Box::new(DeleteNotes {
            routes: stores.debris.iter().map(|r| (*r).clone()).collect(),
        }));
    }
    log
}

/// A handle's router that is not the one in the kernel: another apply id, or no record to
/// tell.
fn stale(name: &str, now: &Current, record: Option<&Record>, expect: Identity) -> Error {
    Error::StaleHandle {
        name: name.to_string(),
        netns: now.netns.clone(),
        reason: match record {
            Some(r) => format!(
                "its crash record holds apply id {:08x}, this handle applied {:08x}",
                r.id, expect.id
            ),
            None => {
                "its crash record is gone, so it cannot be told apart; tear it down by name".into()
            }
        },
    }
}

/// Why something that looks like router `name`'s is left alone, when its crash record is not
/// proven.
fn unproven(now: &Current, name: &str) -> Option<String> {
    let marker = group_marker(name);
    if now.has_table(&table_name(name)) {
        return Some(format!(
            "table inet {} exists, but no marked object of the router vouches for it (no crash \
             record routes in table {JOURNAL_TABLE}, no macvlan with group {marker:#x} where \
             its comment says, no address or route of ours on the link its comment names)",
            table_name(name)
        ));
    }
    now.links
        .iter()
        .find(|l| l.group == marker && is_macvlan(l))
        .map(|l| {
            format!(
                "macvlan {} carries the group marker {marker:#x} of this name, but no crash \
                 record of router `{name}` names it (the marker is a hash of the name: another \
                 router's, or the record was flushed)",
                l.name
            )
        })
}
