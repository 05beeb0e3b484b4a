//! The changes of the crash record, each with what undoes it: its notes written (deleted, as
//! one undo), older ones deleted (put back), the default routes it lists copied into the copy
//! tables, a copy table that lost them filled again; and the role change marker.

use super::{
    markers::role_change_marker, note_id, other_copy_table, Stores, JOURNAL_TABLE, MIRROR_TABLE,
};
use crate::{
    error::Result,
    objects::{
        addr::Addr,
        change::{boxed, At, Change, Done, Kernel, Phase, Sent},
        role::Claim,
        route::{self, AddRoute, DeleteRoute, Route, ROUTE_PROTOCOL},
        Step,
    },
};

/// How a note of the crash record is named in errors.
const NOTE: &str = "a note of the crash record (ip -6 route … table 1701278323 proto 158)";

/// How an identity note is named in errors.
const CLAIM_NOTE: &str =
    "a note of what a promotion claims (ip -6 route … table 1701278323 proto 158)";

/// How the role change marker is named in errors.
pub(crate) const ROLE_CHANGE: &str =
    "the role change marker (ip -6 route … 6563:…/128 table 1701278323 proto 158)";

/// `ip -6 route add blackhole …`: one note of the crash record; undone by deleting it — the
/// deletions of one record's notes are one undo ([`DeleteNotes`]).
#[derive(Debug)]
pub(crate) struct AddNote {
    pub route: Route,
}

impl Change for AddNote {
    fn describe(&self) -> String {
        format!("ip route add {NOTE}")
    }

    fn remains(&self) -> String {
        format!("{NOTE} not added")
    }

    fn pipelined(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            route::add(&k.c.rt, &self.route, NOTE).await?;
            Ok(Done::Nothing)
        })
    }

    fn undo(&self, _: &Done) -> Option<Box<dyn Change>> {
        Some(boxed(DeleteNotes {
            routes: vec![self.route.clone()],
        }))
    }
}

/// `ip -6 route del blackhole …`: the notes of the crash record (at teardown, with the markers
/// and identity notes beside them), one undo; last in an unwind, and kept when anything else
/// could not be undone.
#[derive(Debug)]
pub(crate) struct DeleteNotes {
    pub routes: Vec<Route>,
}

impl Change for DeleteNotes {
    fn describe(&self) -> String {
        format!(
            "ip -6 route del blackhole … table {JOURNAL_TABLE} proto {ROUTE_PROTOCOL} (the crash \
             record, {} routes)",
            self.routes.len()
        )
    }

    fn remains(&self) -> String {
        format!(
            "crash record: {} routes in table {JOURNAL_TABLE}",
            self.routes.len()
        )
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            for r in &self.routes {
                route::delete(&k.c.rt, r, "a note of the crash record").await?;
            }
            Ok(Done::Nothing)
        })
    }

    fn phase(&self) -> Phase {
        Phase::Record
    }

    fn absorb(&mut self, next: &dyn Change) -> bool {
        match next.as_any().downcast_ref::<DeleteNotes>() {
            Some(more) => {
                self.routes.extend(more.routes.iter().cloned());
                true
            }
            None => false,
        }
    }

    fn still_in(&self, _: &[Route], _: &[Addr]) -> Option<bool> {
        None
    }
}

/// The role change marker put (one a crash left is taken over), first in a role change's
/// flight of requests; undone by deleting it.
#[derive(Debug)]
pub(crate) struct MarkRoleChanging {
    pub route: Route,
}

impl Change for MarkRoleChanging {
    fn describe(&self) -> String {
        format!("ip route replace {ROLE_CHANGE}")
    }

    fn remains(&self) -> String {
        format!("{ROLE_CHANGE} not put")
    }

    fn pipelined(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            route::replace(&k.c.rt, &self.route, ROLE_CHANGE).await?;
            Ok(Done::Nothing)
        })
    }

    fn undo(&self, _: &Done) -> Option<Box<dyn Change>> {
        Some(boxed(DeleteRoute {
            route: self.route.clone(),
            what: ROLE_CHANGE.into(),
        }))
    }
}

/// The marker of a role change of the router with apply id `id`, as a change.
pub(crate) fn mark_role_changing(id: u32) -> (Route, Box<dyn Change>) {
    let route = role_change_marker(id);
    let change = boxed(MarkRoleChanging {
        route: route.clone(),
    });
    (route, change)
}

impl Step {
    /// The crash record written in its notes: the notes of the record there is (and those of
    /// its apply id that a rewrite cut short) deleted, the new ones added, one request each so
    /// that exactly what the kernel took is undone; the identity notes likewise.
    pub(crate) fn write_record_changes(at: &At<'_>) -> Result<Vec<Box<dyn Change>>> {
        let stores = Stores::of(at.now, at.name);
        let id = at.record.id;
        let delete = |r: &Route, what: &str| {
            boxed(DeleteRoute {
                route: r.clone(),
                what: what.into(),
            })
        };
        let mut out: Vec<Box<dyn Change>> = stores
            .note_routes
            .into_iter()
            .chain(stores.debris.into_iter().filter(|r| note_id(r) == id))
            .map(|r| delete(r, NOTE))
            .collect();
        out.extend(
            at.record
                .notes()?
                .into_iter()
                .map(|route| boxed(AddNote { route })),
        );
        // The identity notes, with the record's apply id (a router read back by name keeps
        // the ones the kernel holds).
        if let Some(claim) = at.claim {
            out.extend(
                Claim::notes_in(at.now, at.name)
                    .into_iter()
                    .map(|r| delete(r, CLAIM_NOTE)),
            );
            out.extend(claim.notes(id).into_iter().map(|route| {
                boxed(AddRoute {
                    route,
                    what: CLAIM_NOTE.into(),
                })
            }));
        }
        Ok(out)
    }

    /// The saved default routes put back into copy table `table`, from the other.
    pub(crate) fn restore_saved_changes(at: &At<'_>, table: u32) -> Vec<Box<dyn Change>> {
        let names = at.names();
        Stores::copies(at.now, at.record, other_copy_table(table))
            .into_iter()
            .map(|r| {
                let route = route::in_table(r, table);
                let what = route.describe(&names);
                boxed(AddRoute { route, what })
            })
            .collect()
    }

    /// The default routes of a family that the router is about to replace, copied into both
    /// copy tables (where a copy is not there yet).
    pub(crate) fn save_default_changes(at: &At<'_>, ipv6: bool) -> Vec<Box<dyn Change>> {
        let names = at.names();
        let mut out = Vec::new();
        for r in route::to_save(at.now, at.external, ipv6) {
            for table in [JOURNAL_TABLE, MIRROR_TABLE] {
                let copy = route::in_table(r, table);
                if !at.now.routes.iter().any(|o| o.same_as(&copy)) {
                    let what = copy.describe(&names);
                    out.push(boxed(AddRoute { route: copy, what }));
                }
            }
        }
        out
    }
}
