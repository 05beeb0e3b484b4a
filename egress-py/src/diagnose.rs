//! `egress.diagnose()` and `RouterSpec.diagnose()`: what [`egress_core::diagnose`] answers, as
//! the typed objects Diagnosis and Check, whose to_dict() is the documented JSON form.

use std::time::Duration;

use egress_core::{blocking, DiagnoseOptions, MAX_PROBE_TIMEOUT};
use pyo3::{
    exceptions::PyTypeError,
    prelude::*,
    types::{PyDict, PyList, PyTuple},
};

use crate::{
    convert::{int_field, json_to_py, netns_checked, type_name},
    errors::CoreError,
    log,
};

/// The probe options from the keyword arguments: `timeout_ms` (an int, milliseconds) and
/// `fallback_ports` (a list or tuple of ints). Out of range: InvalidSpecError naming
/// `timeout_ms` or `fallback_ports[i]` (the core checks the ranges the types allow).
pub(crate) fn options(
    timeout_ms: Option<&Bound<'_, PyAny>>,
    fallback_ports: Option<&Bound<'_, PyAny>>,
) -> PyResult<DiagnoseOptions> {
    let mut options = DiagnoseOptions::new();
    if let Some(t) = timeout_ms.filter(|t| !t.is_none()) {
        let expected = format!("a timeout from 1 to {} ms", MAX_PROBE_TIMEOUT.as_millis());
        let ms: u64 = int_field(t, "timeout_ms", "timeout_ms", &expected)?;
        options = options.timeout(Duration::from_millis(ms));
    }
    if let Some(ports) = fallback_ports.filter(|p| !p.is_none()) {
        if !ports.is_instance_of::<PyList>() && !ports.is_instance_of::<PyTuple>() {
            return Err(PyTypeError::new_err(format!(
                "fallback_ports must be a list of int, not {}",
                type_name(ports)
            )));
        }
        for (i, port) in ports.try_iter()?.enumerate() {
            let field = format!("fallback_ports[{i}]");
            let port: u16 = int_field(&port?, &field, &field, "a port from 1 to 65535")?;
            options = options.fallback_port(port);
        }
    }
    Ok(options)
}

/// The diagnosis of the router `spec` describes (RouterSpec.diagnose(), Router.diagnose()).
pub(crate) fn of_spec(
    py: Python<'_>,
    spec: &egress_core::RouterSpec,
    options: &DiagnoseOptions,
) -> PyResult<Diagnosis> {
    let d = log::detached(py, || blocking::diagnose_spec(spec, options)).map_err(CoreError)?;
    Diagnosis::new(py, d)
}

/// One question a diagnosis answered: name (stable: state, link, sysctl, gateway, l2_filter,
/// duplicate_address, destination, traffic), status ("ok", "warn", "fail" or "skipped"),
/// summary (one line), hint (what to change, for warn and fail; else None) and evidence (a
/// dict of what it saw: addresses, MACs, timings in ms). docs/diagnose.md explains each.
#[pyclass(module = "egress", frozen)]
pub(crate) struct Check {
    check: egress_core::Check,
}

#[pymethods]
impl Check {
    /// The check's stable name.
    #[getter]
    fn name(&self) -> &str {
        &self.check.name
    }

    /// "ok", "warn", "fail" or "skipped".
    #[getter]
    fn status(&self) -> &'static str {
        self.check.status.as_str()
    }

    /// One line that says what was found.
    #[getter]
    fn summary(&self) -> &str {
        &self.check.summary
    }

    /// For warn and fail: what to change; None otherwise.
    #[getter]
    fn hint(&self) -> Option<&str> {
        self.check.hint.as_deref()
    }

    /// What the check saw, as a new dict each time.
    #[getter]
    fn evidence<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.check.evidence)
    }

    /// Whether its status is "ok".
    #[getter]
    fn ok(&self) -> bool {
        self.check.status == egress_core::Status::Ok
    }

    /// Whether its status is "fail".
    #[getter]
    fn failed(&self) -> bool {
        self.check.status == egress_core::Status::Fail
    }

    /// The JSON form: {"name", "status", "summary", "hint", "evidence"}, in that order.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("name", self.name())?;
        d.set_item("status", self.status())?;
        d.set_item("summary", self.summary())?;
        d.set_item("hint", self.hint())?;
        d.set_item("evidence", self.evidence(py)?)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "<egress.Check {} {}: {}>",
            self.check.name, self.check.status, self.check.summary
        )
    }
}

/// The answer of egress.diagnose() and RouterSpec.diagnose(): router (its name) and checks
/// (every Check, in a fixed order: state, link, sysctl, gateway, l2_filter,
/// duplicate_address, destination, traffic).
///
/// failed is True when a check failed (the egress-router binary then exits 6); ok when every
/// check is "ok"; status is the worst status ("fail" > "warn" > "skipped" > "ok").
/// str() prints one line per check, with its hint; to_dict() is the documented JSON form,
/// {"router": NAME, "checks": [{"name", "status", "summary", "hint", "evidence"}, ...]}.
#[pyclass(module = "egress", frozen)]
pub(crate) struct Diagnosis {
    diagnosis: egress_core::Diagnosis,
    checks: Vec<Py<Check>>,
}

impl Diagnosis {
    pub(crate) fn new(py: Python<'_>, diagnosis: egress_core::Diagnosis) -> PyResult<Self> {
        let checks = diagnosis
            .checks
            .iter()
            .map(|c| Py::new(py, Check { check: c.clone() }))
            .collect::<PyResult<_>>()?;
        Ok(Diagnosis { diagnosis, checks })
    }
}

#[pymethods]
impl Diagnosis {
    /// The router's name.
    #[getter]
    fn router(&self) -> &str {
        &self.diagnosis.router
    }

    /// Every check, in order.
    #[getter]
    fn checks(&self, py: Python<'_>) -> Vec<Py<Check>> {
        self.checks.iter().map(|c| c.clone_ref(py)).collect()
    }

    /// The worst status of all checks.
    #[getter]
    fn status(&self) -> &'static str {
        self.diagnosis.status().as_str()
    }

    /// Whether every check is "ok".
    #[getter]
    fn ok(&self) -> bool {
        self.diagnosis
            .checks
            .iter()
            .all(|c| c.status == egress_core::Status::Ok)
    }

    /// Whether a check failed.
    #[getter]
    fn failed(&self) -> bool {
        self.diagnosis.failed()
    }

    /// The checks called `name`, in order.
    fn named(&self, py: Python<'_>, name: &str) -> Vec<Py<Check>> {
        self.checks
            .iter()
            .filter(|c| c.get().check.name == name)
            .map(|c| c.clone_ref(py))
            .collect()
    }

    /// The JSON form, as a dict: {"router": NAME, "checks": [...]}, in that order.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let checks = PyList::empty(py);
        for c in &self.checks {
            checks.append(c.get().to_dict(py)?)?;
        }
        let d = PyDict::new(py);
        d.set_item("router", self.router())?;
        d.set_item("checks", checks)?;
        Ok(d)
    }

    fn __str__(&self) -> String {
        self.diagnosis.to_string()
    }

    fn __repr__(&self) -> String {
        let failed = self.checks.iter().filter(|c| c.get().failed()).count();
        format!(
            "<egress.Diagnosis {:?}: {} checks, {failed} failed>",
            self.diagnosis.router,
            self.checks.len()
        )
    }
}

/// Diagnoses router `name` in namespace `netns` as the kernel holds it (no spec needed): why
/// does it not work, and what to change. Returns a Diagnosis. It changes nothing in the
/// router: it sends probe frames (ARP/neighbour discovery) and opens and closes probe TCP
/// connections, each bounded by timeout_ms (default 300, 1 to 10000). fallback_ports: TCP
/// ports to try on the fallback destinations (default: their route is checked only).
///
/// A router that is not there is no error: its state check fails and says so. An invalid
/// name, namespace or option raises InvalidSpecError naming the field ("name",
/// "netns.name", "timeout_ms", `"fallback_ports[0]"`) and the value. Needs CAP_NET_ADMIN; the
/// GIL is released while it probes.
#[pyfunction]
#[pyo3(signature = (name, *, netns=None, timeout_ms=None, fallback_ports=None))]
pub(crate) fn diagnose(
    py: Python<'_>,
    name: String,
    netns: Option<&Bound<'_, PyAny>>,
    timeout_ms: Option<&Bound<'_, PyAny>>,
    fallback_ports: Option<&Bound<'_, PyAny>>,
) -> PyResult<Diagnosis> {
    let ns = netns_checked(netns)?;
    let options = options(timeout_ms, fallback_ports)?;
    let d = log::detached(py, || blocking::diagnose(&ns, &name, &options)).map_err(CoreError)?;
    Diagnosis::new(py, d)
}
