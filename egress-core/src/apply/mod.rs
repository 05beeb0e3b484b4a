//! Runs a plan as one transaction: each step's undo is journaled only after the kernel accepted
//! it; then the namespace is read again and compared with the desired state (verify); on any
//! failure the journal is unwound. `apply`, `ensure` and the role changes all run here.

use std::time::Instant;

use rtnetlink::Handle;
use tracing::{debug, info_span, warn, Instrument};

use crate::{
    desired::{nat_rules, Desired},
    error::{Error, Result, Rollback},
    journal::{Journal, Undo},
    netns::{require_net_admin, this_process, Conn, Length, NsHandle, PerProcess},
    ops::{
        link::{self, Link},
        record::{self, Record, Stores},
        role::Role,
        route::{self},
        sysctl, Current, Step,
    },
    plan::Plan,
    spec::{router_of_table, External, RouterSpec},
};

mod change;

use change::Change;

/// A live router: what [`apply`] built.
///
/// Dropping it leaves the router in place (it is a kernel configuration, not a process); call
/// [`Router::teardown`], or [`teardown_by_name`](crate::teardown_by_name) from anywhere later.
///
/// It holds the namespaces it was applied in (open, as file descriptors: a namespace given as
/// [`Netns::Current`](crate::Netns::Current) or by pid stays the one it was) and the apply id
/// of its crash record. Every method acts on the router in the namespace the handle holds, and
/// only on the router this handle applied: one torn down and applied again by someone else
/// since is refused ([`Error::StaleHandle`]), as one that is gone is reported gone.
///
/// `Send` and `Sync`: any number of threads may use one handle at once (a
/// [`teardown`](Router::teardown) takes it, so none may use it afterwards). Role changes through
/// one handle run one at a time, in turn; reads run beside them. After `fork`, a child may use a
/// handle its parent made (the namespace descriptors are copied): to tear the router down, or
/// anything else — the router is kernel state, shared by parent and child alike.
#[derive(Debug)]
pub struct Router {
    spec: RouterSpec,
    ns: NsHandle,
    /// The namespace of the macvlan's parent link, as the apply opened it.
    parent: Option<NsHandle>,
    identity: Identity,
    /// Held while a role change through this handle runs: one at a time. Per process: a child
    /// of `fork` does not inherit one its parent's thread was making.
    changing: PerProcess<futures::lock::Mutex<()>>,
}

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

impl Router {
    /// The spec this router was applied from.
    pub fn spec(&self) -> &RouterSpec {
        &self.spec
    }

    /// Its namespace.
    pub(crate) fn ns(&self) -> &NsHandle {
        &self.ns
    }

    /// The namespace of its macvlan's parent, as the apply opened it.
    pub(crate) fn parent(&self) -> Option<&NsHandle> {
        self.parent.as_ref()
    }

    /// Waits until no other role change runs through this handle; the change runs while the
    /// guard lives.
    pub(crate) async fn one_change_at_a_time(&self) -> futures::lock::MutexGuard<'_, ()> {
        self.changing.get().lock().await
    }

    /// The apply id it recognises its router by.
    pub(crate) fn identity(&self) -> Identity {
        self.identity
    }

    /// Undoes everything the apply did and what the router replaced since (a default route
    /// that `ensure` replaced): restores the previous default routes and sysctl values,
    /// deletes what it created. Runs every undo even when one fails; "already gone" is
    /// success. Returns what was undone.
    ///
    /// The handle first checks that the router in the kernel is still the one it applied (its
    /// apply id and its link): one torn down and applied again by someone else is not touched
    /// ([`Error::StaleHandle`]); one that is gone is success with nothing undone.
    pub async fn teardown(self) -> Result<Vec<String>> {
        let name = self.spec.name.clone();
        let identity = self.identity;
        self.ns
            .within(move |ns| crate::reconcile::teardown_in(ns, name, Some(identity)))
            .instrument(info_span!("teardown", router = %self.spec.name))
            .await
    }
}

/// Applies `spec`: reads the namespace, checks everything that needs the kernel, runs each step
/// of the plan, then verifies that the namespace holds the router's desired state. On failure
/// everything done so far is undone and the error names the failed step (or "verify") and the
/// rollback outcome; when nothing had been changed yet, the cause is returned as it is.
///
/// ```no_run
/// # async fn demo() -> egress_core::Result<()> {
/// use egress_core::{apply, MacvlanMode, RouterSpec};
/// let spec = RouterSpec::builder("egress-1")
///     .netns_name("pod")
///     .macvlan("eth1", MacvlanMode::Private)
///     .source("203.0.113.99/24")
///     .gateway("203.0.113.1")
///     .fallback("198.51.100.9")
///     .build()?;
/// let router = apply(&spec).await?;
/// router.teardown().await?;
/// # Ok(()) }
/// ```
pub async fn apply(spec: &RouterSpec) -> Result<Router> {
    apply_as(spec, Role::Active).await
}

/// Applies `spec` in role `role`: as [`apply`] for [`Role::Active`]; for [`Role::Standby`],
/// everything is staged (link, NAT table, forward filter, sysctls, gateway host routes, the
/// namespace's default routes saved and withdrawn) but what claims the egress identity (the
/// egress addresses, the default routes via the gateways, the stable MAC, the
/// announcements): [`promote`](crate::promote) claims it later.
pub async fn apply_as(spec: &RouterSpec, role: Role) -> Result<Router> {
    require_net_admin("apply an egress router")?;
    let ns = NsHandle::open(&spec.netns, "netns")?;
    let parent = open_parent(spec)?;
    let span = info_span!("apply", router = %spec.name, netns = %spec.netns);
    let spec = spec.clone();
    ns.within(move |ns| async move {
        let mut c = Conn::open(ns)?;
        let now = Current::read(&mut c, &spec.name).await?;
        fresh(spec, role, c, now, parent).await
    })
    .instrument(span)
    .await
}

/// Opens the macvlan's parent namespace, if the spec creates one: on the caller's thread, where
/// [`Netns::Current`](crate::Netns::Current) means what the caller means.
pub(crate) fn open_parent(spec: &RouterSpec) -> Result<Option<NsHandle>> {
    match &spec.external {
        External::Macvlan(m) => Ok(Some(NsHandle::open(
            &m.parent_netns,
            "external.macvlan.parent_netns",
        )?)),
        External::Adopt(_) => Ok(None),
    }
}

/// A new router in a namespace that has none: the checks only an apply makes (one router per
/// namespace, the links it needs), then the whole plan.
pub(crate) async fn fresh(
    spec: RouterSpec,
    role: Role,
    c: Conn,
    now: Current,
    parent: Option<NsHandle>,
) -> Result<Router> {
    let desired = Desired::with_role(&spec, role);
    preflight(&spec, &desired, &now)?;
    // Opt-in (the spec's `probe`): nobody else may answer for an egress address.
    if role == Role::Active {
        crate::diagnose::before_claim(&spec, &c, &now, parent.as_ref()).await?;
    }
    let plan = desired.plan(&now)?;
    let (c, done) = Tx::new(spec.clone(), c, now, parent.clone(), random_id())
        .run(&desired, &plan)
        .await?;
    Ok(Router {
        spec,
        ns: c.ns,
        parent,
        identity: done,
        changing: PerProcess::new(),
    })
}

/// The checks of a new router that need the kernel and change nothing.
fn preflight(spec: &RouterSpec, desired: &Desired, now: &Current) -> Result<()> {
    let netns = now.netns.clone();
    let stores = Stores::of(now, &spec.name);
    let other = now
        .tables
        .iter()
        .filter_map(|t| router_of_table(&t.name))
        .find(|r| *r != spec.name)
        .or(stores.other_router);
    if let Some(other) = other {
        return Err(Error::AlreadyExists {
            object: "router",
            value: other.clone(),
            netns,
            hint: Some(format!(
                "one router per namespace: router `{other}` is configured here"
            )),
        });
    }
    if desired.exists_in(now) {
        return Err(Error::AlreadyExists {
            object: "router",
            value: spec.name.clone(),
            netns,
            hint: Some("use ensure to converge it, or tear it down first".into()),
        });
    }
    if now.link(&spec.internal).is_none() {
        return Err(Error::NotFound {
            field: "internal".into(),
            object: "link",
            value: spec.internal.clone(),
            netns,
        });
    }
    match &spec.external {
        External::Adopt(name) if now.link(name).is_none() => Err(Error::NotFound {
            field: "external.adopt".into(),
            object: "link",
            value: name.clone(),
            netns,
        }),
        External::Macvlan(m) if now.link(&m.name).is_some() => Err(Error::AlreadyExists {
            object: "link",
            value: m.name.clone(),
            netns,
            hint: Some("choose another external.macvlan.name, or adopt it".into()),
        }),
        _ => Ok(()),
    }
}

/// A random apply id (what tells two applies of the same router apart).
fn random_id() -> u32 {
    let mut id = [0u8; 4];
    // SAFETY: getrandom(2) writes at most `id.len()` bytes into `id`.
    let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
    match n {
        4 => u32::from_ne_bytes(id),
        // No random bytes: the clock still tells applies apart.
        _ => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos() | 1),
    }
}

/// One transaction: a plan's steps against what the namespace held when it began.
pub(crate) struct Tx {
    spec: RouterSpec,
    c: Conn,
    /// The namespace when the transaction began.
    now: Current,
    parent: Option<NsHandle>,
    /// The crash record the transaction writes (or keeps).
    record: Record,
    journal: Journal,
    /// The macvlan, once this transaction created it.
    created: Option<Link>,
    /// Route and address requests held to be sent together (step index, request).
    batch: Vec<(usize, Change)>,
    /// The macvlan's parent link and a socket of its namespace, looked up before the first
    /// change when the plan creates the macvlan.
    parent_link: Option<(Handle, Link)>,
    /// The MAC address this transaction gave the external link, if it changed it.
    mac_set: Option<[u8; 6]>,
    /// Whether the transaction changes the role only: verified against the identity objects.
    identity_only: bool,
    /// The announcements still to send after the transaction returns.
    pending: Option<Pending>,
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
    pub(crate) fn new(
        spec: RouterSpec,
        c: Conn,
        now: Current,
        parent: Option<NsHandle>,
        id: u32,
    ) -> Tx {
        let record = record_spec(&spec).wanted(&now, id);
        Tx {
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
        }
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
            let route = record::role_change_marker(&self.spec.name);
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
    fn index_of(&self, name: &str) -> Result<u32> {
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
                let old = self.now.sysctl(key).map(str::to_string);
                if old.as_deref() != Some(value.as_str()) {
                    let writes = [(key.clone(), value.clone())];
                    if let (_, Some(e)) = sysctl::write_gated(&self.c.ns, &writes).await? {
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
                let family = if *ipv6 { "ipv6" } else { "ipv4" };
                if let Some(restore) = sysctl::forwarding_restore(&self.now.sysctls, family) {
                    let writes = [(sysctl::forwarding_key(*ipv6).to_string(), "1".to_string())];
                    if let (_, Some(e)) = sysctl::write_gated(&self.c.ns, &writes).await? {
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
const ROLE_CHANGE: &str =
    "the role change marker (ip -6 route … 6563:…/128 table 1701278323 proto 158)";

/// The step name of the verification, in errors.
const VERIFY: &str =
    "verify: read the namespace again and compare it with the router's desired state";

fn record_spec(spec: &RouterSpec) -> record::RecordSpec {
    Desired::record_spec(spec)
}
