//! Reconciliation of a namespace with a router's spec: [`check`] (how it differs), [`plan`]
//! (what it still needs) and [`ensure`] (do that). Its removal by name is
//! [`teardown`](super::teardown).

use serde::Serialize;
use tracing::{info, info_span, warn, Instrument};

use crate::{
    context::converge,
    drift::Drift,
    error::{Error, Result},
    kernel::netns::{require_net_admin, Conn, NsHandle},
    model::desired::Desired,
    model::plan::Plan,
    objects::{
        record::{self},
        role::role_in,
        Current,
    },
    operations::apply::{fresh, open_parent},
    role::Role,
    spec::RouterSpec,
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
    plan_as(spec, Role::Active).await
}

/// [`plan`], the dry run of [`ensure_as`]: a router that is not there is planned in role
/// `role` (a standby's plan stages everything but the egress identity); one that is there
/// keeps the role its record holds.
pub async fn plan_as(spec: &RouterSpec, role: Role) -> Result<Plan> {
    require_net_admin("plan an egress router")?;
    let spec = spec.clone();
    NsHandle::open(&spec.netns, "netns")?
        .within(move |ns| async move {
            let mut c = Conn::open(ns)?;
            let now = Current::read(&mut c, &spec.name).await?;
            let desired = Desired::with_role(&spec, role_in(&now, &spec.name));
            match desired.exists_in(&now) {
                true => desired.plan(&now),
                false => Desired::with_role(&spec, role).plan(&now),
            }
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
/// [`teardown_by_name`](crate::teardown_by_name).
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
    for d in &drift {
        info!(drift = %d, kind = %d.kind(), "repairing");
    }
    converge(&desired, c, now, parent).await?;
    Ok(EnsureOutcome {
        action: EnsureAction::Repaired,
        drift,
    })
}
