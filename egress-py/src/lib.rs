//! Python bindings for [`egress_core`]: the native module `egress._egress`, re-exported by the
//! Python package `egress` (see `python/egress/__init__.py`).
//!
//! The module holds no networking logic: Python's `RouterSpec` drives the core's
//! `RouterSpecBuilder` (or reads the JSON form, for `from_dict`), and every operation calls
//! [`egress_core::blocking`], releasing the GIL for each whole call. The Rust types behind
//! Python's classes carry a `Py` prefix (`PyRouterSpec`, `PyRouter`) so that they are not
//! taken for the core's types of the same name. Core errors become the exception classes of
//! the `errors` module, mapped in one place; the core's `tracing` events reach Python's
//! `logging` through the `log` module, on the calling thread.

mod convert;
mod diagnose;
mod errors;
mod log;
mod router;
mod spec;

use pyo3::prelude::*;

/// The native part of the egress package; import `egress` instead.
#[pymodule]
fn _egress(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<spec::PyRouterSpec>()?;
    m.add_class::<router::PyRouter>()?;
    m.add_class::<router::Step>()?;
    m.add_class::<router::Drift>()?;
    m.add_class::<router::EnsureResult>()?;
    m.add_class::<diagnose::Diagnosis>()?;
    m.add_class::<diagnose::Check>()?;
    m.add_function(wrap_pyfunction!(router::teardown, m)?)?;
    m.add_function(wrap_pyfunction!(router::plan_teardown, m)?)?;
    m.add_function(wrap_pyfunction!(router::inspect, m)?)?;
    m.add_function(wrap_pyfunction!(router::promote, m)?)?;
    m.add_function(wrap_pyfunction!(router::demote, m)?)?;
    m.add_function(wrap_pyfunction!(diagnose::diagnose, m)?)?;
    m.add_function(wrap_pyfunction!(router::stats, m)?)?;
    errors::register(m)?;
    log::install(m.py())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
