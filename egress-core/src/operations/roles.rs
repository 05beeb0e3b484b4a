//! Role changes: [`promote`] claims the egress identity, [`demote`] gives it back, each as one
//! transaction (rolled back on failure, verified), by name from what the kernel holds or
//! through a [`Router`] handle. An election engine (keepalived VRRP, a Kubernetes Lease,
//! Pacemaker) decides which instance is active; these execute its decision.
//!
//! A role change is the plan of the identity objects of the router's [`Desired`] state in the
//! new role: for a promotion, the egress addresses, the default routes via the gateways, the
//! stable MAC and the role marker, sent in one pipelined flight of netlink requests, then the
//! first announcement (the others follow, spaced, without holding up the call); for a
//! demotion, the addresses first (the instance stops answering ARP / ND for the egress IP
//! before anything else), then the default routes, the MAC of its own, the role marker.

use serde::Serialize;
use tracing::{info, info_span, Instrument};

use crate::{
    context::Tx,
    error::{Error, Result},
    kernel::netns::{require_net_admin, Conn, NsHandle},
    model::desired::Desired,
    objects::{link::Pending, role::role_in, Current},
    operations::apply::Router,
    role::Role,
    spec::{table_name, validate_name, Netns},
};

/// What a [`promote`] or [`demote`] did.
#[derive(Debug, Serialize)]
pub struct RoleChange {
    /// The router's name.
    pub name: String,
    /// The role before.
    pub previous: Role,
    /// The role now.
    pub role: Role,
    /// The kernel changes made, in order (empty: the router held the role already).
    pub steps: Vec<String>,
    #[serde(skip)]
    pending: Option<Pending>,
}

impl RoleChange {
    /// Whether the kernel was changed.
    pub fn changed(&self) -> bool {
        !self.steps.is_empty()
    }

    /// Waits until the announcements a promotion still sends (count > 1, spaced by the
    /// interval) are sent; at once when there are none. A process that exits right after a
    /// promotion (a keepalived notify command) calls it before exiting.
    pub async fn finish_announcements(mut self) -> Result<()> {
        match self.pending.take() {
            Some(p) => p.finish().await,
            None => Ok(()),
        }
    }
}

/// Promotes router `name` in `netns` to active, from what the kernel holds (its crash record
/// and identity notes; no spec needed). Idempotent: an active router is left as it is.
///
/// ```no_run
/// # fn main() -> egress_core::Result<()> {
/// use egress_core::{blocking, Netns};
/// let change = blocking::promote(&Netns::Name("pod".into()), "egress-1")?;
/// assert_eq!(change.role, egress_core::Role::Active);
/// # Ok(()) }
/// ```
pub async fn promote(netns: &Netns, name: &str) -> Result<RoleChange> {
    change_by_name(netns, name, Role::Active).await
}

/// Demotes router `name` in `netns` to standby, from what the kernel holds. Idempotent.
pub async fn demote(netns: &Netns, name: &str) -> Result<RoleChange> {
    change_by_name(netns, name, Role::Standby).await
}

async fn change_by_name(netns: &Netns, name: &str, role: Role) -> Result<RoleChange> {
    validate_name(name).map_err(|f| Error::invalid_spec(f.field, f.value, f.expected))?;
    require_net_admin("change the role of an egress router")?;
    let span = info_span!("role", router = %name, role = %role);
    let name = name.to_string();
    NsHandle::open(netns, "netns")?
        .within(move |ns| async move {
            let mut c = Conn::open(ns)?;
            let now = Current::read_identity(&mut c, &name).await?;
            let model = read_back(&now, &name)?;
            change_in(c, now, model.as_role(role), role).await
        })
        .instrument(span)
        .await
}

/// Router `name` as `now` holds it, with what a role change needs: its identity notes (what a
/// promotion claims).
fn read_back(now: &Current, name: &str) -> Result<Desired> {
    let Some((model, _)) = Desired::read(now, name) else {
        return Err(Error::NotFound {
            field: "name".into(),
            object: "router",
            value: name.to_string(),
            netns: now.netns.clone(),
        });
    };
    match model.parts().record.claim {
        Some(_) => Ok(model),
        None => Err(Error::Conflict {
            field: "name".into(),
            value: name.to_string(),
            reason: format!(
                "router `{name}` (table inet {}) holds no identity notes (applied by an older \
                 version, or table 1701278323 was flushed): run ensure with its spec once",
                table_name(name)
            ),
        }),
    }
}

/// The role change of router `model` to `role`, inside its namespace.
async fn change_in(c: Conn, now: Current, model: Desired, role: Role) -> Result<RoleChange> {
    let name = model.parts().name.clone();
    if !model.exists_in(&now) {
        return Err(Error::NotFound {
            field: "name".into(),
            object: "router",
            value: name,
            netns: now.netns.clone(),
        });
    }
    let previous = role_in(&now, &name);
    let plan = model.plan_identity(&now)?;
    let steps: Vec<String> = plan.steps().iter().map(ToString::to_string).collect();
    if plan.is_empty() {
        return Ok(RoleChange {
            name,
            previous,
            role,
            steps,
            pending: None,
        });
    }
    let (_, _, pending) = Tx::new(&model, c, now, None, 0)?
        .identity_only()
        .run_announcing(&model, &plan)
        .await?;
    info!(%previous, %role, steps = steps.len(), "role changed");
    Ok(RoleChange {
        name,
        previous,
        role,
        steps,
        pending,
    })
}

impl Router {
    /// Promotes this router to active (see [`promote`]), from its spec. A handle whose router
    /// was torn down and applied again (another apply id in its crash record) changes nothing:
    /// [`Error::StaleHandle`]. Role changes through one handle run one at a time: one called
    /// while another runs starts when it ends.
    pub async fn promote(&self) -> Result<RoleChange> {
        self.change_role(Role::Active).await
    }

    /// Demotes this router to standby (see [`demote`]), from its spec; refused on a stale
    /// handle as [`promote`](Router::promote) is.
    pub async fn demote(&self) -> Result<RoleChange> {
        self.change_role(Role::Standby).await
    }

    async fn change_role(&self, role: Role) -> Result<RoleChange> {
        require_net_admin("change the role of an egress router")?;
        let _one_at_a_time = self.one_change_at_a_time().await;
        let spec = self.spec().clone();
        let identity = self.identity();
        let span = info_span!("role", router = %spec.name, role = %role);
        self.ns()
            .within(move |ns| async move {
                let mut c = Conn::open(ns)?;
                let now = Current::read_identity(&mut c, &spec.name).await?;
                let model = Desired::with_role(&spec, role);
                identity.check(&now, &spec.name, &model)?;
                change_in(c, now, model, role).await
            })
            .instrument(span)
            .await
    }
}
