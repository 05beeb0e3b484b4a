//! Runs a plan as one transaction: each step is turned into its changes (each object's module
//! says what they are and what undoes each); route netlink requests are sent back to back and
//! acknowledged together, the others one at a time; each change's undo is logged once the
//! kernel took it; then the namespace is read again and compared with the model (verify); on
//! any failure the log is unwound. `apply`, `ensure`, the watch and the role changes all run
//! here.

use std::time::Instant;

use rtnetlink::Handle;
use tracing::{debug, info_span, warn, Instrument};

use super::undo::UndoLog;
use crate::{
    error::{Error, Result, Rollback},
    kernel::netns::{Conn, NsHandle},
    model::{desired::Desired, parts::Parts, plan::Plan},
    objects::{
        change::{At, Change, Kernel, Made},
        link::{self, Link, Pending},
        record::{self, Record, Stores, ROLE_CHANGE},
        route, Current, Step,
    },
};

/// What tells the router a handle applied from one applied again later: the random apply id
/// its crash record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub id: u32,
}

impl Identity {
    /// Whether router `name` in `now` is the one this identity applied: its crash record (in
    /// either place) holds the same apply id. One torn down and applied again, or whose record
    /// is gone (it cannot be told apart), is [`Error::StaleHandle`]; one that is gone
    /// altogether is left to the caller (`desired` says whether anything of it is there).
    pub(crate) fn check(&self, now: &Current, name: &str, desired: &Desired) -> Result<()> {
        if !desired.exists_in(now) {
            return Ok(());
        }
        let reason = match Stores::of(now, name).record() {
            Some(r) if r.id == self.id => return Ok(()),
            Some(r) => format!(
                "its crash record holds apply id {:08x}, this handle applied {:08x}",
                r.id, self.id
            ),
            None => "its crash record is gone, so it cannot be told apart; use it by name".into(),
        };
        Err(Error::StaleHandle {
            name: name.to_string(),
            netns: now.netns.clone(),
            reason,
        })
    }
}

/// One transaction: a plan's steps against what the namespace held when it began.
pub(crate) struct Tx {
    /// What the router is made of.
    parts: Parts,
    c: Conn,
    /// The namespace when the transaction began.
    now: Current,
    parent: Option<NsHandle>,
    /// The crash record the transaction writes (or keeps).
    record: Record,
    log: UndoLog,
    /// What the transaction made that `now` does not hold.
    made: Made,
    /// Route netlink requests held to be sent together (step index, request).
    batch: Vec<(usize, Box<dyn Change>)>,
    /// The macvlan's parent link and a socket of its namespace, looked up before the first
    /// change when the plan creates the macvlan.
    parent_link: Option<(Handle, Link)>,
    /// Whether the transaction changes the role only: verified against the identity objects.
    identity_only: bool,
    /// The announcements still to send after the transaction returns.
    pending: Option<Pending>,
}

impl Tx {
    /// A transaction of router `model` from `now`; its crash record is the one `now` holds,
    /// or a fresh one with apply id `id` (an error when `now` holds a value it cannot keep).
    pub(crate) fn new(
        model: &Desired,
        c: Conn,
        now: Current,
        parent: Option<NsHandle>,
        id: u32,
    ) -> Result<Tx> {
        let parts = model.parts().clone();
        let record = parts.record.wanted(&now, id)?;
        Ok(Tx {
            parts,
            c,
            now,
            parent,
            record,
            log: UndoLog::default(),
            made: Made::default(),
            batch: Vec::new(),
            parent_link: None,
            identity_only: false,
            pending: None,
        })
    }

    /// A transaction that changes the role only (promotion, demotion): verified against
    /// what claims the egress identity.
    pub(crate) fn identity_only(mut self) -> Tx {
        self.identity_only = true;
        self
    }

    /// Runs `plan`, then verifies the result against `desired`; on failure rolls back. Returns
    /// the connection and the router's identity.
    pub(crate) async fn run(self, desired: &Desired, plan: &Plan) -> Result<(Conn, Identity)> {
        let (c, id, _) = self.run_announcing(desired, plan).await?;
        Ok((c, id))
    }

    /// [`run`](Self::run), and the announcements still being sent, if any.
    pub(crate) async fn run_announcing(
        mut self,
        desired: &Desired,
        plan: &Plan,
    ) -> Result<(Conn, Identity, Option<Pending>)> {
        // Everything that can be known before the first change is checked first.
        self.record.encode()?;
        if plan
            .steps()
            .iter()
            .any(|s| matches!(s, Step::CreateMacvlan { .. }))
        {
            let parent_ns = self
                .parent
                .clone()
                .expect("a spec that creates a macvlan opens its parent namespace");
            self.parent_link = Some(self.find_parent(&parent_ns).await?);
        }
        // A role change tells watchers (another process's) to look on until it is done.
        let role_change = self.identity_only.then(|| {
            let (route, change) = record::mark_role_changing(self.record.id);
            self.batch.push((0, change));
            route
        });
        let steps = plan.steps();
        for (i, step) in steps.iter().enumerate() {
            #[cfg(feature = "fault-injection")]
            if let Err(e) = crate::fault::at_step(i + 1, || step.to_string()) {
                // The steps before this one were done, pipelined requests included.
                let (k, e) = self.flush(steps).await.err().unwrap_or((i, e));
                return Err(self.fail_at(plan, k, e).await);
            }
            let started = Instant::now();
            let result = match step.changes(&self.at(&steps[..i])) {
                Ok(changes) => self.take(steps, i, changes).await,
                Err(e) => Err((i, e)),
            };
            match &result {
                Ok(()) => {
                    debug!(step = %step, us = started.elapsed().as_micros() as u64, "step done")
                }
                Err((_, e)) => warn!(step = %step, error = %e, "step failed"),
            }
            if let Err((k, e)) = result {
                return Err(self.fail_at(plan, k, e).await);
            }
        }
        if let Err((k, e)) = self.flush(steps).await {
            return Err(self.fail_at(plan, k, e).await);
        }
        if let Err(e) = self.verify(desired).await {
            return Err(self.fail(VERIFY.to_string(), steps.len() + 1, e).await);
        }
        if let Some(marker) = role_change {
            // Done and verified: a marker left here only makes watchers wait (for a while).
            if let Err(e) = route::delete(&self.c.rt, &marker, ROLE_CHANGE).await {
                warn!(error = %e, "the role change marker stays: watchers look on for a while");
            }
        }
        let id = self.record.id;
        Ok((self.c, Identity { id }, self.pending))
    }

    /// What the transaction knows, for the step after `earlier`.
    fn at<'a>(&'a self, earlier: &'a [Step]) -> At<'a> {
        let p = &self.parts;
        At {
            now: &self.now,
            name: &p.name,
            internal: p.internal.as_deref().unwrap_or_default(),
            external: &p.external,
            stable_mac: p.stable_mac,
            rules: p.rules.as_ref(),
            claim: p.record.claim.as_ref(),
            record: &self.record,
            made: &self.made,
            earlier,
        }
    }

    /// Takes the changes of step `i`: route netlink requests are held to go together, any
    /// other is sent once the held ones are (in order).
    async fn take(
        &mut self,
        steps: &[Step],
        i: usize,
        changes: Vec<Box<dyn Change>>,
    ) -> std::result::Result<(), (usize, Error)> {
        for change in changes {
            if change.pipelined() {
                self.batch.push((i, change));
                continue;
            }
            self.flush(steps).await?;
            let done = {
                let at = self.at(&steps[..i]);
                let k = Kernel {
                    c: &self.c,
                    parent: self.parent_link.as_ref(),
                    at: Some(&at),
                };
                change.send(&k).await.map_err(|e| (i, e))?
            };
            if let Some(u) = change.undo(&done) {
                self.log.push(u);
            }
            self.learn(done);
        }
        Ok(())
    }

    /// Sends the held requests together and logs the undo of each one the kernel took; on
    /// failure, the step (index) of the first request that failed, and why.
    async fn flush(&mut self, steps: &[Step]) -> std::result::Result<(), (usize, Error)> {
        let sent = std::mem::take(&mut self.batch);
        if sent.is_empty() {
            return Ok(());
        }
        let results = {
            let last = sent.last().map_or(0, |(i, _)| *i);
            let at = self.at(&steps[..last]);
            let k = Kernel {
                c: &self.c,
                parent: self.parent_link.as_ref(),
                at: Some(&at),
            };
            futures::future::join_all(sent.iter().map(|(_, ch)| ch.send(&k))).await
        };
        let mut failed = None;
        for ((i, ch), result) in sent.into_iter().zip(results) {
            match result {
                Ok(done) => {
                    if let Some(u) = ch.undo(&done) {
                        self.log.push(u);
                    }
                    self.learn(done);
                }
                Err(e) => {
                    failed.get_or_insert((i, e));
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Takes in what a change's sending yielded.
    fn learn(&mut self, done: crate::objects::change::Done) {
        if let Some(p) = self.made.learn(done) {
            self.pending = Some(p);
        }
    }

    /// Reads the namespace again: it must hold `desired` exactly.
    async fn verify(&mut self, desired: &Desired) -> Result<()> {
        #[cfg(feature = "fault-injection")]
        crate::fault::at_verify()?;
        let name = &self.parts.name;
        let drift = match self.identity_only {
            true => desired.compare_identity(&Current::read_identity(&mut self.c, name).await?),
            false => desired.compare(&Current::read(&mut self.c, name).await?),
        };
        match drift.is_empty() {
            true => Ok(()),
            false => Err(Error::Verify { drift }),
        }
    }

    async fn fail_at(self, plan: &Plan, index: usize, e: Error) -> Error {
        let step = plan.steps()[index].to_string();
        self.fail(step, index + 1, e).await
    }

    /// Step `index` (from 1) failed with `e`: undoes everything done so far and says so. When
    /// nothing had been changed yet, the cause is returned as it is.
    async fn fail(mut self, step: String, step_index: usize, e: Error) -> Error {
        if self.log.is_empty() {
            return e;
        }
        let failures = {
            let span = info_span!("rollback", router = %self.parts.name, step = %step);
            let log = std::mem::take(&mut self.log);
            log.unwind(&self.c).instrument(span).await
        };
        let rollback = match failures.is_empty() {
            true => Rollback::Complete,
            false => Rollback::Incomplete(
                failures
                    .into_iter()
                    .map(|(what, e)| format!("{what} ({e})"))
                    .collect(),
            ),
        };
        Error::Apply {
            step,
            step_index,
            source: Box::new(e),
            rollback,
        }
    }

    /// The macvlan's parent link and a socket of its namespace; checks the spec's MTU.
    async fn find_parent(&self, parent_ns: &NsHandle) -> Result<(Handle, Link)> {
        let Some(m) = &self.parts.macvlan else {
            unreachable!("only a created macvlan has a parent")
        };
        let prt = match parent_ns.same_as(&self.c.ns) {
            true => self.c.rt.clone(),
            false => parent_ns.route_connection()?,
        };
        let p = link::get(&prt, &m.parent)
            .await?
            .ok_or_else(|| Error::NotFound {
                field: "external.macvlan.parent".into(),
                object: "link",
                value: m.parent.clone(),
                netns: parent_ns.label().to_string(),
            })?;
        if let Some(mtu) = m.mtu.filter(|mtu| *mtu > p.mtu) {
            return Err(Error::Conflict {
                field: "external.macvlan.mtu".into(),
                value: mtu.to_string(),
                reason: format!(
                    "larger than the MTU {} of parent {}; at most {} is valid",
                    p.mtu, m.parent, p.mtu
                ),
            });
        }
        Ok((prt, p))
    }
}

/// The step name of the verification, in errors.
const VERIFY: &str =
    "verify: read the namespace again and compare it with the router's desired state";
