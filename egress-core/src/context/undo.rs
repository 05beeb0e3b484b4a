//! [`UndoLog`]: the undos of the changes a transaction made, in the order they were made, and
//! how they are unwound (on rollback; and at teardown, where the log is the inverse of what
//! the kernel holds of the router).

use tracing::{debug, warn};

use crate::{
    error::{Error, Result},
    kernel::netns::Conn,
    objects::{
        addr,
        change::{Change, Kernel, Phase},
        record::DeleteNotes,
        route, Inverse,
    },
};

/// Undos in the order their changes were made.
#[derive(Debug, Default)]
pub(crate) struct UndoLog(Vec<Box<dyn Change>>);

impl UndoLog {
    /// Adds the undo of the latest change (the deletions of one crash record's notes are one
    /// undo: the last one takes the next in).
    pub(crate) fn push(&mut self, u: Box<dyn Change>) {
        if let Some(last) = self.0.last_mut() {
            if last.absorb(u.as_ref()) {
                return;
            }
        }
        self.0.push(u)
    }

    /// The log that undoes a router read back from the kernel (a teardown): the deletion of
    /// its notes and markers, then each object's undos, as a transaction would have logged
    /// them.
    pub(crate) fn of(inverse: Inverse<'_>) -> UndoLog {
        let mut log = UndoLog::default();
        if !inverse.notes.is_empty() {
            log.push(Box::new(DeleteNotes {
                routes: inverse.notes,
            }));
        }
        for u in inverse.undos {
            log.push(u);
        }
        log
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What [`unwind`](Self::unwind) will do, in its order, described.
    pub(crate) fn described(&self) -> Vec<String> {
        let p = self.phases();
        [p.first, p.slow, p.rest, p.last]
            .iter()
            .flatten()
            .map(|i| self.0[*i].describe())
            .collect()
    }

    /// The undos in the order they run (by index into the log).
    fn phases(&self) -> Phases {
        let link = self.0.iter().find_map(|u| u.deletes_link());
        let goes_with_link = |u: &dyn Change| link.is_some_and(|l| u.goes_with_link(l));
        let mut p = Phases::default();
        for (i, u) in self.0.iter().enumerate().rev() {
            match u.phase() {
                Phase::First => p.first.push(i),
                Phase::Slow => p.slow.push(i),
                Phase::Record => p.last.push(i),
                Phase::Rest if goes_with_link(u.as_ref()) => p.with_link.push(i),
                Phase::Rest => p.rest.push(i),
            }
        }
        p
    }

    /// Runs every undo, whatever fails, in this order: forwarding restored first (the router
    /// stops forwarding); the router's own link and its table deleted side by side (each waits
    /// for the kernel, an RCU grace period; routes and addresses through the link go with it —
    /// unless its deletion fails: then they are removed one by one —, so that nothing of the
    /// router stands in the way of what is restored); everything else in reverse order; the
    /// crash record (its notes, the copies of the saved routes) last — and kept when something
    /// could not be restored, so that a later teardown can finish. Returns one error per failed
    /// undo, naming what remains.
    pub(crate) async fn unwind(self, c: &Conn) -> Vec<(String, Error)> {
        let p = self.phases();
        let k = Kernel {
            c,
            parent: None,
            at: None,
        };
        let log = &self.0;
        let mut failures: Vec<(usize, Error)> = Vec::new();
        for &i in &p.first {
            if let Err(e) = run(c, &k, log[i].as_ref()).await {
                failures.push((i, e));
            }
        }
        // The slow ones that can, on threads of their own; the others (the link) here.
        let mut beside = Vec::new();
        for &i in &p.slow {
            if let Some(job) = log[i].beside() {
                let started = injected(c, log[i].as_ref()).and_then(|()| c.ns.spawn(job));
                beside.push((i, started));
            }
        }
        for &i in p.slow.iter().filter(|i| log[**i].beside().is_none()) {
            if let Err(e) = run(c, &k, log[i].as_ref()).await {
                failures.push((i, e));
                // The link stays: what would have gone with it is removed one by one.
                for &j in &p.with_link {
                    if let Err(e) = run(c, &k, log[j].as_ref()).await {
                        failures.push((j, e));
                    }
                }
            }
        }
        for (i, job) in beside {
            // Whether the job ran (its reply), then whether the undo worked.
            let result = match job {
                Ok(rx) => rx
                    .await
                    .unwrap_or_else(|_| Err(Error::kernel(log[i].remains(), libc::ECANCELED)))
                    .and_then(|done| done),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                failures.push((i, e));
            }
        }
        for &i in &p.rest {
            if let Err(e) = run(c, &k, log[i].as_ref()).await {
                failures.push((i, e));
            }
        }
        for &i in &p.last {
            if !failures.is_empty() {
                let e = Error::UndoSkipped {
                    undo: log[i].describe(),
                    reason: "kept: it is the crash record a later teardown needs to prove \
                             what is the router's and restore what it replaced"
                        .into(),
                };
                failures.push((i, e));
            } else if let Err(e) = run(c, &k, log[i].as_ref()).await {
                failures.push((i, e));
            }
        }
        still_there(log, failures, c).await
    }
}

/// The undos of a log in the order they run (indexes into it): forwarding first; the slow
/// deletions, the link and the table, side by side; the rest in reverse order, without what
/// goes with the link (run only when the link stays); the crash record last.
#[derive(Default)]
struct Phases {
    first: Vec<usize>,
    slow: Vec<usize>,
    with_link: Vec<usize>,
    rest: Vec<usize>,
    last: Vec<usize>,
}

/// Runs undo `u`, and says how it went (a `tracing` event with its duration).
async fn run(c: &Conn, k: &Kernel<'_>, u: &dyn Change) -> Result<()> {
    injected(c, u)?;
    let started = std::time::Instant::now();
    let result = u.send(k).await.map(drop);
    let us = started.elapsed().as_micros() as u64;
    match &result {
        Ok(()) => debug!(undo = %u.describe(), us, "undone"),
        Err(e) => warn!(undo = %u.describe(), us, error = %e, "undo failed"),
    }
    result
}

/// Fails the undo if a test injected a fault for it (feature `fault-injection`).
fn injected(c: &Conn, u: &dyn Change) -> Result<()> {
    #[cfg(feature = "fault-injection")]
    {
        c.undos_run.set(c.undos_run.get() + 1);
        crate::fault::at_undo(c.undos_run.get(), || u.remains())?;
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = (c, u);
    Ok(())
}

/// The failures whose object is still in the kernel, with what remains: a route or address
/// whose deletion failed may have gone with its link all the same (deleting a link, or setting
/// it down, takes its routes and IPv6 addresses with it). When the kernel cannot be read back,
/// every failure is kept.
async fn still_there(
    log: &[Box<dyn Change>],
    failures: Vec<(usize, Error)>,
    c: &Conn,
) -> Vec<(String, Error)> {
    let asks = failures
        .iter()
        .any(|(i, _)| log[*i].still_in(&[], &[]).is_some());
    let now = match asks {
        false => None,
        true => {
            let read = async {
                let mut routes = route::list(&c.rt, false).await?;
                routes.extend(route::list(&c.rt, true).await?);
                Ok::<_, Error>((routes, addr::list(&c.rt, None).await?))
            };
            read.await.ok()
        }
    };
    failures
        .into_iter()
        .filter(|(i, _)| match &now {
            Some((routes, addrs)) => log[*i].still_in(routes, addrs).unwrap_or(true),
            None => true,
        })
        .map(|(i, e)| (log[i].remains(), e))
        .collect()
}
