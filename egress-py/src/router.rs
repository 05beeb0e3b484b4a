//! What the operations return (Router, Step, Drift, EnsureResult) and the operations by name
//! (teardown, plan_teardown, inspect, stats, promote, demote; diagnose is in the diagnose
//! module).
//!
//! Threads: every method of a Router may be called from any thread while another runs. The
//! core handle sits behind a read-write lock that is only ever taken with the GIL released
//! (inside the `detach` of the call) and dropped before the GIL is taken back, so a thread
//! that holds the GIL never waits for a thread that waits for the GIL; what the getters and
//! `repr()` read (the name, the spec, whether it is torn down) is outside the lock. Only
//! teardown, which takes the core handle away, locks it for writing; the calls that use it
//! share it (the core runs one role change of a handle at a time).

use std::sync::{
    atomic::{AtomicBool, Ordering},
    PoisonError, RwLock,
};

use egress_core::{blocking, Netns, RoleChange};
use pyo3::{exceptions::PyTypeError, prelude::*, types::PyType};
use serde_json::Value;

use crate::{
    convert::{json_to_py, netns_checked, to_py},
    diagnose::Diagnosis,
    errors::{add_note, CoreError},
    log,
    spec::PyRouterSpec,
};

/// A configured egress router: the handle RouterSpec.apply() returns.
///
/// teardown() undoes everything the apply did, in reverse order, and restores what it
/// replaced. As a context manager (`with spec.apply() as router:`) it tears down when the
/// block ends, also on an exception. Dropping the handle leaves the router configured.
///
/// Every method may be called from any thread, also while another thread is in one: promote
/// and demote run one at a time; teardown waits for the calls under way (stats and diagnose
/// included), and the calls after it find the handle spent; name, spec, active and repr()
/// never wait.
#[pyclass(name = "Router", module = "egress", frozen)]
pub(crate) struct PyRouter {
    name: String,
    spec: egress_core::RouterSpec,
    /// The core's handle until teardown takes it; locked with the GIL released only.
    handle: RwLock<Option<egress_core::Router>>,
    /// Whether teardown has not taken the handle yet (read without the lock).
    active: AtomicBool,
}

impl PyRouter {
    pub(crate) fn new(router: egress_core::Router) -> Self {
        PyRouter {
            name: router.spec().name().to_owned(),
            spec: router.spec().clone(),
            handle: RwLock::new(Some(router)),
            active: AtomicBool::new(true),
        }
    }

    /// Runs `f` on the core's handle (None once this handle tore its router down) with the GIL
    /// released: the lock is taken and dropped without it.
    fn with_handle<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(Option<&egress_core::Router>) -> egress_core::Result<T> + Send,
    ) -> Result<T, CoreError> {
        log::detached(py, || {
            f(self
                .handle
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref())
        })
        .map_err(CoreError)
    }

    /// What a role change through this handle is once it tore its router down.
    fn torn_down(&self) -> egress_core::Error {
        egress_core::Error::StaleHandle {
            name: self.name.clone(),
            netns: self.spec.netns().to_string(),
            reason: "this handle tore it down".into(),
        }
    }
}

#[pymethods]
impl PyRouter {
    /// The router's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The spec it was applied from (validated, in its canonical form).
    #[getter]
    fn spec(&self) -> PyRouterSpec {
        PyRouterSpec::from_core(&self.spec)
    }

    /// True until teardown() has run.
    #[getter]
    fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Undoes everything the apply did, in reverse order; returns what was undone.
    ///
    /// Runs every undo even when one fails ("already gone" counts as done) and then raises
    /// TeardownError listing the failures. A router that is gone already is success: [].
    /// First the handle checks that the router in the kernel is still the one it applied:
    /// one torn down and applied again by someone else (egress.teardown(), then another
    /// apply or ensure) is left alone, and StaleHandleError says so. Either way the handle
    /// is spent: active is False after the first call, and a second call returns [].
    /// A promote() or demote() running in another thread finishes first. The GIL is
    /// released while the kernel is programmed.
    fn teardown(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let undone = log::detached(py, || {
            let taken = self
                .handle
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            self.active.store(false, Ordering::Release);
            taken.map_or(Ok(Vec::new()), blocking::teardown)
        });
        Ok(undone.map_err(CoreError)?)
    }

    /// Claims the egress identity (a standby becomes active): the addresses, the default
    /// route, the stable MAC in one flight, then the announcements (announce's count,
    /// spaced by its interval). Returns once every announcement is sent, so that a process
    /// that exits right after it (keepalived's notify script) has sent them all. Rolled back
    /// on failure; nothing to do when active already. Returns {"name", "previous", "role",
    /// "steps"}. The GIL is released meanwhile.
    fn promote<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let change = self.with_handle(py, |r| {
            announced(blocking::promote_router(
                r.ok_or_else(|| self.torn_down())?,
            )?)
        })?;
        role_change(py, change)
    }

    /// Gives the egress identity back (active becomes standby): the addresses first, then
    /// the default route and the stable MAC. As promote() otherwise.
    fn demote<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let change = self.with_handle(py, |r| {
            announced(blocking::demote_router(r.ok_or_else(|| self.torn_down())?)?)
        })?;
        role_change(py, change)
    }

    /// Diagnoses the router through the handle (in the namespaces it holds), as
    /// RouterSpec.diagnose() does with the spec it was applied from. A router torn down and
    /// applied again by someone else since raises StaleHandleError; once this handle tore it
    /// down, the diagnosis's state check says it is not configured.
    #[pyo3(signature = (*, timeout_ms=None, fallback_ports=None))]
    fn diagnose(
        &self,
        py: Python<'_>,
        timeout_ms: Option<&Bound<'_, PyAny>>,
        fallback_ports: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Diagnosis> {
        let options = crate::diagnose::options(timeout_ms, fallback_ports)?;
        let d = self.with_handle(py, |r| match r {
            Some(r) => blocking::diagnose_router(r, &options),
            None => blocking::diagnose_spec(&self.spec, &options),
        })?;
        Diagnosis::new(py, d)
    }

    /// This router's traffic, read from the kernel now through the handle (in the namespace
    /// it holds), as egress.stats() returns it; None once it is gone. A router torn down and
    /// applied again by someone else since raises StaleHandleError: its counters are not
    /// this handle's router's. The GIL is released while the kernel is read.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stats = self.with_handle(py, |r| r.map_or(Ok(None), blocking::stats_router))?;
        to_py(py, &stats)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Tears the router down when the block ends. An exception raised in the block
    /// propagates: should the teardown fail too, its error is added to that exception as a
    /// note (PEP 678) rather than replacing it. Without one, the teardown's error is raised.
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<&Bound<'_, PyType>>,
        exc: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        match (self.teardown(py), exc) {
            (Ok(_), _) => Ok(false),
            (Err(e), None) => Err(e),
            (Err(e), Some(body)) => {
                let text = format!(
                    "egress: tearing down router {:?} when the with block ended failed as well: \
                     {}: {}",
                    self.name,
                    e.get_type(py).name()?,
                    e.value(py)
                );
                add_note(body, &text);
                Ok(false)
            }
        }
    }

    fn __repr__(&self) -> String {
        let state = if self.active() { "active" } else { "torn down" };
        format!("<egress.Router {:?} ({state})>", self.name)
    }
}

/// Waits for the announcements a role change still sends; the change as plain values (taken
/// before the wait, which consumes it).
fn announced(change: RoleChange) -> egress_core::Result<serde_json::Result<Value>> {
    let shown = serde_json::to_value(&change);
    blocking::finish_announcements(change)?;
    Ok(shown)
}

/// A role change as Python gets it: {"name", "previous", "role", "steps"}.
fn role_change<'py>(
    py: Python<'py>,
    change: serde_json::Result<Value>,
) -> PyResult<Bound<'py, PyAny>> {
    let change = change
        .map_err(|e| PyTypeError::new_err(format!("egress: cannot convert a result: {e}")))?;
    json_to_py(py, &change)
}

/// One kernel change of a plan. str() renders it close to its ip/nft/sysctl equivalent.
#[pyclass(module = "egress", frozen)]
pub(crate) struct Step {
    index: usize,
    text: String,
}

impl Step {
    /// The steps of `plan`, numbered from 1.
    pub(crate) fn all(plan: &egress_core::Plan) -> Vec<Step> {
        plan.steps()
            .iter()
            .enumerate()
            .map(|(i, s)| Step {
                index: i + 1,
                text: s.to_string(),
            })
            .collect()
    }
}

#[pymethods]
impl Step {
    /// Its position in the plan, counting from 1.
    #[getter]
    fn index(&self) -> usize {
        self.index
    }

    fn __str__(&self) -> &str {
        &self.text
    }

    fn __repr__(&self) -> String {
        format!("<egress.Step {}: {}>", self.index, self.text)
    }
}

/// One way the kernel differs from a spec. str() says it in a sentence; kind names it
/// (router_missing, link_missing, link_down, link_changed, address_missing, foreign_address,
/// route_missing, foreign_default_route, sysctl_changed, nat_changed, journal_damaged);
/// to_dict() has every detail.
#[pyclass(module = "egress", frozen)]
#[derive(Clone)]
pub(crate) struct Drift {
    kind: String,
    message: String,
    fields: Value,
}

impl Drift {
    pub(crate) fn new(drift: &egress_core::Drift) -> PyResult<Self> {
        let fields = serde_json::to_value(drift).map_err(|e| {
            pyo3::exceptions::PyTypeError::new_err(format!("egress: cannot convert a drift: {e}"))
        })?;
        Ok(Drift {
            kind: drift.kind().to_owned(),
            message: drift.to_string(),
            fields,
        })
    }
}

#[pymethods]
impl Drift {
    /// What drifted, in snake_case (see the class docs).
    #[getter]
    fn kind(&self) -> &str {
        &self.kind
    }

    /// Every detail as a dict: "kind" plus the fields of that kind (link, expected, actual, ...).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.fields)
    }

    fn __str__(&self) -> &str {
        &self.message
    }

    fn __repr__(&self) -> String {
        format!("<egress.Drift {}: {}>", self.kind, self.message)
    }
}

/// What RouterSpec.ensure() did.
///
/// changed is False only when the kernel already matched the spec; action is "created",
/// "unchanged" or "repaired"; drift lists what differed before (RouterMissing when created).
#[pyclass(module = "egress", frozen)]
pub(crate) struct EnsureResult {
    changed: bool,
    action: String,
    drift: Vec<Drift>,
}

impl EnsureResult {
    pub(crate) fn new(py: Python<'_>, outcome: &egress_core::EnsureOutcome) -> PyResult<Self> {
        Ok(EnsureResult {
            changed: outcome.changed(),
            action: to_py(py, &outcome.action)?.extract()?,
            drift: outcome
                .drift
                .iter()
                .map(Drift::new)
                .collect::<PyResult<_>>()?,
        })
    }
}

#[pymethods]
impl EnsureResult {
    /// Whether the kernel was changed.
    #[getter]
    fn changed(&self) -> bool {
        self.changed
    }

    /// "created", "unchanged" or "repaired".
    #[getter]
    fn action(&self) -> &str {
        &self.action
    }

    /// What differed from the spec before ensure() ran.
    #[getter]
    fn drift(&self) -> Vec<Drift> {
        self.drift.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "<egress.EnsureResult action={:?} changed={} drift={}>",
            self.action,
            if self.changed { "True" } else { "False" },
            self.drift.len()
        )
    }
}

/// Tears down router `name` in namespace `netns` from what the kernel holds (after the process
/// that applied it is gone). A router that is not there is success: returns []. Otherwise
/// returns what was undone. Never touches anything the router does not own.
///
/// netns takes the same forms as RouterSpec's (None = the calling thread's namespace). An
/// invalid name, or a namespace name with "/" or "..", raises InvalidSpecError (field
/// "name", "netns.name") before the kernel is asked. The GIL is released meanwhile.
#[pyfunction]
#[pyo3(signature = (name, *, netns=None))]
pub(crate) fn teardown<'py>(
    py: Python<'py>,
    name: String,
    netns: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    by_name(py, netns, move |ns| blocking::teardown_by_name(ns, &name))
}

/// What egress.teardown(name, netns=...) would undo now, in its words and order; changes
/// nothing (the dry run: Ansible's check mode of state absent). [] when nothing of the router
/// is there. Like the teardown, it counts only what is proven the router's (a marked macvlan
/// whose crash record is gone is listed). Names are checked as teardown() checks them; the
/// GIL is released while the kernel is read.
#[pyfunction]
#[pyo3(signature = (name, *, netns=None))]
pub(crate) fn plan_teardown<'py>(
    py: Python<'py>,
    name: String,
    netns: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    by_name(py, netns, move |ns| blocking::plan_teardown(ns, &name))
}

/// Promotes router `name` in namespace `netns` to active, from what the kernel holds (no
/// spec needed): see Router.promote(), which it is otherwise. It returns once every
/// announcement is sent: keepalived's notify script can exit right after it. Returns
/// {"name", "previous", "role", "steps"}.
#[pyfunction]
#[pyo3(signature = (name, *, netns=None))]
pub(crate) fn promote<'py>(
    py: Python<'py>,
    name: String,
    netns: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    role_by_name(py, netns, move |ns| blocking::promote(ns, &name))
}

/// Demotes router `name` in namespace `netns` to standby, from what the kernel holds: see
/// Router.demote().
#[pyfunction]
#[pyo3(signature = (name, *, netns=None))]
pub(crate) fn demote<'py>(
    py: Python<'py>,
    name: String,
    netns: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    role_by_name(py, netns, move |ns| blocking::demote(ns, &name))
}

/// What promote() and demote() by name share: the namespace checked, the GIL released while
/// the role changes and its announcements are sent.
fn role_by_name<'py>(
    py: Python<'py>,
    netns: Option<&Bound<'py, PyAny>>,
    change: impl FnOnce(&Netns) -> egress_core::Result<RoleChange> + Send,
) -> PyResult<Bound<'py, PyAny>> {
    let ns = netns_checked(netns)?;
    let change = log::detached(py, || announced(change(&ns)?));
    role_change(py, change.map_err(CoreError)?)
}

/// What router `name` owns in namespace `netns` now, as plain dicts (link, addresses, routes,
/// saved_routes, sysctls, nat, ...), or None when it is not configured there.
///
/// Invalid names raise InvalidSpecError as teardown() does. The GIL is released while the
/// kernel is read.
#[pyfunction]
#[pyo3(signature = (name, *, netns=None))]
pub(crate) fn inspect<'py>(
    py: Python<'py>,
    name: String,
    netns: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    by_name(py, netns, move |ns| blocking::inspect(ns, &name))
}

/// The traffic of router `name` in namespace `netns` since it was applied, read from the
/// kernel now, as plain dicts, or None when it is not configured there:
/// {"name", "redirects": [{"protocol", "port", "to", "to_port", "connections", "packets",
/// "bytes"}], "fallback": [{"to", "connections", "packets", "bytes"}], "snat": [{"source",
/// "packets", "bytes"}], "conntrack_entries"}. Connections count their first packet; packets
/// and bytes both directions; SNAT what left through the external link.
///
/// Invalid names raise InvalidSpecError as teardown() does. The GIL is released while the
/// kernel is read.
#[pyfunction]
#[pyo3(signature = (name, *, netns=None))]
pub(crate) fn stats<'py>(
    py: Python<'py>,
    name: String,
    netns: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    by_name(py, netns, move |ns| blocking::stats(ns, &name))
}

/// What the by-name calls share: the namespace checked, the GIL released while `call` runs,
/// its answer as plain Python values.
fn by_name<'py, T: serde::Serialize + Send>(
    py: Python<'py>,
    netns: Option<&Bound<'py, PyAny>>,
    call: impl FnOnce(&Netns) -> egress_core::Result<T> + Send,
) -> PyResult<Bound<'py, PyAny>> {
    let ns = netns_checked(netns)?;
    let answer = log::detached(py, || call(&ns)).map_err(CoreError)?;
    to_py(py, &answer)
}
