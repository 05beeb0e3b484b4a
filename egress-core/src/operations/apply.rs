//! [`apply`]: a new router, from its spec — the checks only a new router needs, then the whole
//! plan as one transaction — and [`Router`], the handle it returns.

use tracing::{info_span, Instrument};

use crate::{
    context::{Identity, Tx},
    error::{Error, Result},
    kernel::netns::{require_net_admin, Conn, NsHandle, PerProcess},
    model::Desired,
    objects::{record::Stores, Current},
    role::Role,
    spec::{router_of_table, External, RouterSpec},
};

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
            .within(move |ns| crate::operations::teardown::teardown_in(ns, name, Some(identity)))
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
        crate::operations::diagnose::before_claim(&spec, &c, &now, parent.as_ref()).await?;
    }
    let plan = desired.plan(&now)?;
    let (c, done) = Tx::new(&desired, c, now, parent.clone(), random_id())?
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
