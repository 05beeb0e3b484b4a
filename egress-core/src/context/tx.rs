//! Runs a plan as one transaction: each step's undo is journaled only after the kernel accepted
//! it; then the namespace is read again and compared with the desired state (verify); on any
//! failure the journal is unwound. `apply`, `ensure` and the role changes all run here.

use std::time::Instant;

use rtnetlink::Handle;
use tracing::{debug, info_span, warn, Instrument};

use crate::{
    context::undo::{Journal, Undo},
    error::{Error, Result, Rollback},
    kernel::netns::{this_process, Conn, Length, NsHandle},
    kernel::procfs::{self},
    model::desired::{nat_rules, Desired},
    model::plan::Plan,
    objects::{
        link::{self, Link},
        record::{self, Record, Stores},
        route::{self},
        sysctl, Current, Step,
    },
    spec::{External, RouterSpec},
};

use super::change::Change;

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
    pub(super) spec: RouterSpec,
    pub(super) c: Conn,
    /// The namespace when the transaction began.
    pub(super) now: Current,
    pub(super) parent: Option<NsHandle>,
    /// The crash record the transaction writes (or keeps).
    pub(super) record: Record,
    pub(super) journal: Journal,
    /// The macvlan, once this transaction created it.
    pub(super) created: Option<Link>,
    /// Route and address requests held to be sent together (step index, request).
    pub(super) batch: Vec<(usize, Change)>,
    /// The macvlan's parent link and a socket of its namespace, looked up before the first
    /// change when the plan creates the macvlan.
    pub(super) parent_link: Option<(Handle, Link)>,
    /// The MAC address this transaction gave the external link, if it changed it.
    pub(super) mac_set: Option<[u8; 6]>,
    /// Whether the transaction changes the role only: verified against the identity objects.
    pub(super) identity_only: bool,
    /// The announcements still to send after the transaction returns.
    pub(super) pending: Option<Pending>,
}

/// The announcements of a promotion still being sent (spaced) after it returned, by a thread
/// of the process that promoted.
#[derive(Debug)]
pub(crate) struct Pending {
    sent: Option<futures::channel::oneshot::Receiver<Result<Result<()>>>>,
    process: (u32, u64),
}

impl Pending {
    fn new(sent: futures::channel::oneshot::Receiver<Result<Result<()>>>) -> Pending {
        Pending {
            sent: Some(sent),
            process: this_process(),
        }
    }

    /// Waits until the last of them is sent. In a child of `fork`, at once: the parent's
    /// thread sends them (the child has none to wait for).
    pub(crate) async fn finish(mut self) -> Result<()> {
        // In a child, `drop` lets the channel go.
        if self.process != this_process() {
            return Ok(());
        }
        let Some(sent) = self.sent.take() else {
            return Ok(());
        };
        match sent.await {
            Ok(r) => r?,
            // The pool thread is gone: nothing more will be sent.
            Err(_) => Ok(()),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // In a child of `fork`, the channel is let go without a word: its other end is a
        // parent's thread.
        if self.process != this_process() {
            std::mem::forget(self.sent.take());
        }
    }
}

impl Tx {
    /// A transaction of router `spec` from `now`; its crash record is the one `now` holds, or
    /// a fresh one with apply id `id` (an error when `now` holds a value it cannot keep).
    pub(crate) fn new(
        spec: RouterSpec,
        c: Conn,
        now: Current,
        parent: Option<NsHandle>,
        id: u32,
    ) -> Result<Tx> {
        let record = record_spec(&spec).wanted(&now, id)?;
        Ok(Tx {
            spec,
            c,
            now,
            parent,
            record,
            journal: Journal::default(),
            created: None,
            batch: Vec::new(),
            parent_link: None,
            mac_set: None,
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
            let route = record::role_change_marker(self.record.id);
            self.batch.push((
                0,
                Change::RoleChanging {
                    route: route.clone(),
                },
            ));
            route
        });
        for (i, step) in plan.steps().iter().enumerate() {
            #[cfg(feature = "fault-injection")]
            if let Err(e) = crate::fault::at_step(i + 1, || step.to_string()) {
                // The steps before this one were done, pipelined requests included.
                let (k, e) = self.flush().await.err().unwrap_or((i, e));
                return Err(self.fail_at(plan, k, e).await);
            }
            let started = Instant::now();
            let result = match self.changes(step) {
                Ok(Some(changes)) => {
                    self.batch.extend(changes.into_iter().map(|ch| (i, ch)));
                    Ok(())
                }
                Ok(None) => match self.flush().await {
                    Err((k, e)) => return Err(self.fail_at(plan, k, e).await),
                    Ok(()) => self.exec(step).await,
                },
                Err(e) => Err(e),
            };
            match &result {
                Ok(()) => {
                    debug!(step = %step, us = started.elapsed().as_micros() as u64, "step done")
                }
                Err(e) => warn!(step = %step, error = %e, "step failed"),
            }
            if let Err(e) = result {
                return Err(self.fail_at(plan, i, e).await);
            }
        }
        if let Err((k, e)) = self.flush().await {
            return Err(self.fail_at(plan, k, e).await);
        }
        if let Err(e) = self.verify(desired).await {
            return Err(self
                .fail(VERIFY.to_string(), plan.steps().len() + 1, e)
                .await);
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

    /// Reads the namespace again: it must hold `desired` exactly.
    async fn verify(&mut self, desired: &Desired) -> Result<()> {
        #[cfg(feature = "fault-injection")]
        crate::fault::at_verify()?;
        let name = &self.spec.name;
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
        if self.journal.is_empty() {
            return e;
        }
        let failures = {
            let span = info_span!("rollback", router = %self.spec.name, step = %step);
            let journal = std::mem::take(&mut self.journal);
            journal.unwind(&mut self.c).instrument(span).await
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

    /// The index of link `name`: the one this transaction created, or one the namespace had.
    pub(super) fn index_of(&self, name: &str) -> Result<u32> {
        if let Some(l) = self.created.as_ref().filter(|l| l.name == name) {
            return Ok(l.index);
        }
        self.now
            .link(name)
            .map(|l| l.index)
            .ok_or_else(|| Error::NotFound {
                field: if name == self.spec.internal {
                    "internal"
                } else {
                    "external"
                }
                .into(),
                object: "link",
                value: name.to_string(),
                netns: self.now.netns.clone(),
            })
    }

    /// Sends the held requests together and journals each one the kernel accepted; on failure,
    /// the step (index) of the first request that failed, and why.
    async fn flush(&mut self) -> std::result::Result<(), (usize, Error)> {
        let sent = std::mem::take(&mut self.batch);
        if sent.is_empty() {
            return Ok(());
        }
        let rt = &self.c.rt;
        let results = futures::future::join_all(sent.iter().map(|(_, ch)| ch.send(rt))).await;
        let mut failed = None;
        for ((i, ch), result) in sent.into_iter().zip(results) {
            match result {
                Ok(()) => {
                    if let Change::SetMac { mac, .. } = &ch {
                        self.mac_set = Some(*mac);
                    }
                    self.journal.push(ch.undo())
                }
                Err(e) => {
                    failed.get_or_insert((i, e));
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Runs a step that is not made of route netlink requests.
    async fn exec(&mut self, step: &Step) -> Result<()> {
        match step {
            Step::CreateTable { table, .. } => {
                let comment = self.record.encode()?;
                self.c
                    .nft
                    .create(&comment, &nat_rules(&self.spec))
                    .map_err(|e| match e.errno() {
                        Some(libc::EEXIST) => Error::AlreadyExists {
                            object: "router",
                            value: self.spec.name.clone(),
                            netns: self.now.netns.clone(),
                            hint: Some("another apply of the same router won the race".into()),
                        },
                        _ => e,
                    })?;
                self.journal.push(Undo::DeleteTable {
                    table: table.clone(),
                });
            }
            Step::RewriteJournal { table } => {
                let old = self.now.comment_of(table).unwrap_or_default().to_string();
                let rules = nat_rules(&self.spec);
                self.c.nft.rewrite(&self.record.encode()?, &rules)?;
                self.journal.push(Undo::RewriteTable {
                    comment: old,
                    rules,
                });
            }
            // The previous ruleset was drift: a failed repair leaves the repaired one.
            Step::ReplaceRuleset { .. } => self.c.nft.reinstall(&nat_rules(&self.spec))?,
            Step::CreateMacvlan { macvlan, group, .. } => {
                let (prt, parent) = self
                    .parent_link
                    .clone()
                    .expect("the parent is looked up before the first change");
                let free_index = self
                    .now
                    .links
                    .iter()
                    .map(|l| l.index)
                    .max()
                    .and_then(|i| i.checked_add(1))
                    .filter(|i| *i <= i32::MAX as u32);
                #[cfg(feature = "fault-injection")]
                let free_index = match crate::fault::index_taken() {
                    true => self.now.link(&self.spec.internal).map(|l| l.index),
                    false => free_index,
                };
                let router = link::RouterNs {
                    rt: &self.c.rt,
                    fd: self.c.ns.raw_fd(),
                    label: self.c.ns.label(),
                };
                let created =
                    link::create_macvlan(&prt, &router, macvlan, &parent, *group, free_index)
                        .await?;
                self.journal.push(Undo::DeleteLink {
                    index: created.index,
                    name: created.name.clone(),
                });
                self.created = Some(created);
            }
            Step::SetLinkUp { link: name } => {
                let index = self.index_of(name)?;
                link::set_up(&self.c.rt, index, name, true).await?;
                self.journal.push(Undo::SetLinkDown {
                    index,
                    name: name.clone(),
                });
            }
            Step::SetLink {
                link: name,
                mtu,
                mac,
                mode,
            } => {
                let index = self.index_of(name)?;
                let old = self.now.link(name).cloned();
                link::set_props(&self.c.rt, index, name, *mtu, *mac, *mode).await?;
                self.mac_set = mac.or(self.mac_set);
                if let Some(old) = old {
                    self.journal.push(Undo::SetLink {
                        index,
                        name: name.clone(),
                        mtu: mtu.map(|_| old.mtu),
                        mac: mac.and_then(|_| old.mac.as_slice().try_into().ok()),
                        mode: mode.and(old.macvlan_mode),
                    });
                }
            }
            Step::SetSysctl { key, value } => {
                let old = self.now.sysctl(key);
                if old != Some(*value) {
                    let writes = [(key.clone(), *value)];
                    if let (_, Some(e)) = procfs::write_gated(&self.c.ns, &writes).await? {
                        return Err(e);
                    }
                    // A created link's sysctls vanish with it; a link that was there gets its
                    // value back.
                    if let Some(old) = old {
                        self.journal.push(Undo::RestoreSysctls {
                            writes: vec![(key.clone(), old)],
                        });
                    }
                }
            }
            Step::EnableForwarding { ipv6 } => {
                let family = procfs::Family::of(*ipv6);
                if let Some(restore) = sysctl::forwarding_restore(&self.now.sysctls, family) {
                    let writes = [(sysctl::forwarding_key(*ipv6), 1)];
                    if let (_, Some(e)) = procfs::write_gated(&self.c.ns, &writes).await? {
                        return Err(e);
                    }
                    self.journal.push(Undo::RestoreSysctls { writes: restore });
                }
            }
            Step::Announce {
                link: name,
                count,
                interval,
                ..
            } => {
                let (index, mac) = match self.created.as_ref().filter(|l| l.name == *name) {
                    // The MAC the link has now: this transaction may have set it.
                    Some(l) => (
                        l.index,
                        self.mac_set.map_or_else(|| l.mac.clone(), |m| m.to_vec()),
                    ),
                    None => {
                        let l = self.now.link(name).ok_or_else(|| Error::NotFound {
                            field: "external".into(),
                            object: "link",
                            value: name.clone(),
                            netns: self.now.netns.clone(),
                        })?;
                        // The MAC the link has now: this transaction may have set it.
                        let mac = self.mac_set.map_or_else(|| l.mac.clone(), |m| m.to_vec());
                        (l.index, mac)
                    }
                };
                link::announce(&self.c.rt, index, name, &mac).await?;
                // The others, spaced, on a thread of their own: the claim is done.
                if *count > 1 {
                    let (more, interval, name) = (*count - 1, *interval, name.clone());
                    let rx = self.c.ns.spawn_within(Length::Call, move |ns| async move {
                        let h = ns.route_connection()?;
                        for _ in 0..more {
                            tokio::time::sleep(interval).await;
                            // A demotion meanwhile gave the MAC (or the link) up: announcing
                            // would take it back.
                            match link::get(&h, &name).await? {
                                Some(l) if l.index == index && l.mac == mac => {}
                                _ => break,
                            }
                            link::announce(&h, index, &name, &mac).await?;
                        }
                        Ok(())
                    })?;
                    self.pending = Some(Pending::new(rx));
                }
            }
            Step::WriteJournal { .. }
            | Step::RestoreSavedRoutes { .. }
            | Step::SaveDefaultRoutes { .. }
            | Step::AddAddress { .. }
            | Step::DeleteAddress { .. }
            | Step::AddRoute { .. }
            | Step::ReplaceDefaultRoute { .. }
            | Step::WithdrawAddress { .. }
            | Step::WithdrawDefaultRoute { .. }
            | Step::SetMac { .. }
            | Step::MarkRole { .. } => {
                unreachable!("route, address and link address steps are sent by flush")
            }
        }
        Ok(())
    }

    /// The macvlan's parent link and a socket of its namespace; checks the spec's MTU.
    async fn find_parent(&self, parent_ns: &NsHandle) -> Result<(Handle, Link)> {
        let External::Macvlan(m) = &self.spec.external else {
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

/// How the role change marker is named in errors.
pub(super) const ROLE_CHANGE: &str =
    "the role change marker (ip -6 route … 6563:…/128 table 1701278323 proto 158)";

/// The step name of the verification, in errors.
const VERIFY: &str =
    "verify: read the namespace again and compare it with the router's desired state";

pub(super) fn record_spec(spec: &RouterSpec) -> record::RecordSpec {
    Desired::record_spec(spec)
}
