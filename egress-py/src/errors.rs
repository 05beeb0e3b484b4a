//! The exception hierarchy, and the one place core errors become Python exceptions.
//!
//! Every core [`ErrorKind`] has its own class under `egress.EgressError`. A class that must
//! also be a builtin exception (`InvalidSpecError`, a `ValueError`) is declared in the Python
//! package (`egress/__init__.py`) and looked up from here; the others are created here.
//!
//! Errors inside errors keep their class: an `ApplyError`'s cause (the failed step's error, or
//! the `VerifyError` of a failed verify) is its `__cause__`, and a `TeardownError` lists each
//! failed undo as an exception in `errors`.

use std::fmt::Display;

use egress_core::{Error, ErrorKind, Rollback};
use pyo3::{
    create_exception,
    exceptions::PyException,
    prelude::*,
    sync::PyOnceLock,
    types::{PyDict, PyList, PyType},
};

use crate::router::Drift;

create_exception!(
    egress,
    EgressError,
    PyException,
    "Base class of every error egress raises (except TypeError for arguments of the wrong type)."
);
create_exception!(
    egress,
    PermissionDeniedError,
    EgressError,
    "The caller lacks a capability: CAP_NET_ADMIN, or CAP_SYS_ADMIN to enter another namespace.\n\n\
     Attributes: operation (what was about to be done), capability (the one missing)."
);
create_exception!(
    egress,
    NotFoundError,
    EgressError,
    "Something the spec names (a link, a namespace) does not exist in the kernel.\n\n\
     Attributes: field (the spec field that names it, such as \"netns\" or \"internal\"), \
     object (\"link\", \"network namespace\", \"router\"), value (its name), netns (the \
     namespace it was looked up in)."
);
create_exception!(
    egress,
    AlreadyExistsError,
    EgressError,
    "Something the router would create already exists (another router, a link of that name)."
);
create_exception!(
    egress,
    ConflictError,
    EgressError,
    "A spec value the kernel refuses given what it holds (an MTU above the parent's, ...)."
);
create_exception!(
    egress,
    KernelError,
    EgressError,
    "A kernel call failed.\n\nAttributes: operation (close to its ip/nft/sysctl equivalent), \
     errno (the positive errno)."
);
create_exception!(
    egress,
    ApplyError,
    EgressError,
    "An apply failed at one step and was rolled back.\n\n\
     Attributes: step (the failed step, as the plan prints it), step_index (counting from 1), \
     rolled_back (True when every change was undone), remaining (what rollback could not \
     remove), errno (the kernel's errno, or None)."
);
create_exception!(
    egress,
    RollbackIncompleteError,
    ApplyError,
    "An apply failed and its rollback left something behind (listed in .remaining; \
     .rolled_back is False)."
);
create_exception!(
    egress,
    TeardownError,
    EgressError,
    "A teardown ran every undo and some failed.\n\n\
     Attributes: failures (one message per undo that failed; what it names remains), errors \
     (the same failures as exceptions: KernelError, UndoSkippedError, ...)."
);
create_exception!(
    egress,
    StaleHandleError,
    EgressError,
    "Router.teardown() refused: the router in the kernel is not the one this handle applied \
     (it was torn down and applied again by someone else). Nothing was changed; remove it by \
     name with egress.teardown(name, netns=...) if it should go.\n\n\
     Attributes: name (the router's), netns (its namespace), reason (what differs)."
);
create_exception!(
    egress,
    TeardownInProgressError,
    EgressError,
    "ensure() refused: a teardown of the router is under way (its marker in the namespace is \
     younger than a teardown takes). Nothing was changed; once the teardown is done, ensure \
     applies the router again. A marker left by a teardown that was killed is looked past \
     once it is older than that.\n\n\
     Attributes: name (the router's), netns (its namespace), since (seconds since the \
     teardown started)."
);
create_exception!(
    egress,
    VerifyError,
    EgressError,
    "After the changes of an apply (or ensure), the namespace did not hold what the spec \
     describes: something changed it meanwhile, or the kernel did not take a change as sent. \
     The apply is rolled back, so this arrives as the __cause__ of an ApplyError whose step \
     starts with \"verify\".\n\n\
     Attributes: drift (a list of Drift: how the namespace differed)."
);
create_exception!(
    egress,
    UndoSkippedError,
    EgressError,
    "An undo of a teardown or rollback was skipped on purpose: what it would remove (the \
     router's crash record) is kept because something else could not be restored, and a \
     later teardown needs it. Found in TeardownError.errors.\n\n\
     Attributes: undo (close to its ip/nft equivalent), reason."
);

/// Registers the classes created here on the native module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("EgressError", py.get_type::<EgressError>())?;
    m.add(
        "PermissionDeniedError",
        py.get_type::<PermissionDeniedError>(),
    )?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("AlreadyExistsError", py.get_type::<AlreadyExistsError>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    m.add("KernelError", py.get_type::<KernelError>())?;
    m.add("ApplyError", py.get_type::<ApplyError>())?;
    m.add(
        "RollbackIncompleteError",
        py.get_type::<RollbackIncompleteError>(),
    )?;
    m.add("TeardownError", py.get_type::<TeardownError>())?;
    m.add("StaleHandleError", py.get_type::<StaleHandleError>())?;
    m.add(
        "TeardownInProgressError",
        py.get_type::<TeardownInProgressError>(),
    )?;
    m.add("VerifyError", py.get_type::<VerifyError>())?;
    m.add("UndoSkippedError", py.get_type::<UndoSkippedError>())?;
    Ok(())
}

/// A core error on its way to Python: `?` on a `Result<_, CoreError>` raises the right class.
pub(crate) struct CoreError(pub(crate) Error);

impl From<Error> for CoreError {
    fn from(e: Error) -> Self {
        CoreError(e)
    }
}

/// A class the Python package declares (one that is also a builtin exception), looked up once.
fn package_type<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
) -> PyResult<Bound<'py, PyType>> {
    cell.get_or_try_init(py, || {
        let ty = py.import("egress")?.getattr(name)?;
        Ok::<_, PyErr>(ty.cast_into::<PyType>()?.unbind())
    })
    .map(|t| t.bind(py).clone())
}

/// `egress.InvalidSpecError(EgressError, ValueError)`.
fn invalid_spec_type(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    package_type(py, &TYPE, "InvalidSpecError")
}

impl From<CoreError> for PyErr {
    fn from(CoreError(e): CoreError) -> PyErr {
        Python::attach(|py| match exception(py, &e) {
            Ok(exc) => PyErr::from_value(exc),
            // Only reachable if the `egress` package itself is broken; keep the original message.
            Err(lookup) => {
                let err = EgressError::new_err(e.to_string());
                err.set_cause(py, Some(lookup));
                err
            }
        })
    }
}

fn exception<'py>(py: Python<'py>, e: &Error) -> PyResult<Bound<'py, PyAny>> {
    let ty = match e.kind() {
        ErrorKind::InvalidSpec => invalid_spec_type(py)?,
        ErrorKind::PermissionDenied => py.get_type::<PermissionDeniedError>(),
        ErrorKind::NotFound => py.get_type::<NotFoundError>(),
        ErrorKind::AlreadyExists => py.get_type::<AlreadyExistsError>(),
        ErrorKind::Conflict => py.get_type::<ConflictError>(),
        ErrorKind::Kernel => py.get_type::<KernelError>(),
        ErrorKind::Apply => py.get_type::<ApplyError>(),
        ErrorKind::RollbackIncomplete => py.get_type::<RollbackIncompleteError>(),
        ErrorKind::Teardown => py.get_type::<TeardownError>(),
        ErrorKind::StaleHandle => py.get_type::<StaleHandleError>(),
        ErrorKind::TeardownInProgress => py.get_type::<TeardownInProgressError>(),
        ErrorKind::Verify => py.get_type::<VerifyError>(),
        ErrorKind::UndoSkipped => py.get_type::<UndoSkippedError>(),
        // The core may grow kinds: they still arrive as egress errors, with their message.
        _ => py.get_type::<EgressError>(),
    };
    let exc = ty.call1((e.to_string(),))?;
    match e {
        Error::InvalidSpec {
            field,
            value,
            expected,
            ..
        } => {
            exc.setattr("field", field)?;
            exc.setattr("value", value)?;
            exc.setattr("expected", expected)?;
            let errors = PyList::empty(py);
            for f in e.invalid_fields() {
                let d = PyDict::new(py);
                d.set_item("field", f.field)?;
                d.set_item("value", f.value)?;
                d.set_item("expected", f.expected)?;
                errors.append(d)?;
            }
            exc.setattr("errors", errors)?;
        }
        Error::NotFound {
            field,
            object,
            value,
            netns,
        } => {
            exc.setattr("field", field)?;
            exc.setattr("object", *object)?;
            exc.setattr("value", value)?;
            exc.setattr("netns", netns)?;
        }
        Error::PermissionDenied {
            operation,
            capability,
        } => {
            exc.setattr("operation", operation)?;
            exc.setattr("capability", *capability)?;
        }
        Error::Kernel { operation, errno } => {
            exc.setattr("operation", operation)?;
            exc.setattr("errno", *errno)?;
        }
        Error::Apply {
            step,
            step_index,
            rollback,
            source,
        } => {
            exc.setattr("__cause__", exception(py, source)?)?;
            exc.setattr("step", step)?;
            exc.setattr("step_index", *step_index)?;
            exc.setattr("rolled_back", rollback.is_complete())?;
            let remaining = match rollback {
                Rollback::Complete => Vec::new(),
                Rollback::Incomplete(left) => left.clone(),
            };
            exc.setattr("remaining", remaining)?;
            exc.setattr("errno", e.errno())?;
        }
        Error::Teardown { failures } => {
            let messages: Vec<String> = failures.iter().map(ToString::to_string).collect();
            exc.setattr("failures", messages)?;
            let errors = PyList::empty(py);
            for f in failures {
                errors.append(exception(py, f)?)?;
            }
            exc.setattr("errors", errors)?;
        }
        Error::StaleHandle {
            name,
            netns,
            reason,
        } => {
            exc.setattr("name", name)?;
            exc.setattr("netns", netns)?;
            exc.setattr("reason", reason)?;
        }
        Error::TeardownInProgress { name, netns, since } => {
            exc.setattr("name", name)?;
            exc.setattr("netns", netns)?;
            exc.setattr("since", since.as_secs_f64())?;
        }
        Error::Verify { drift } => {
            let drift = drift.iter().map(Drift::new).collect::<PyResult<Vec<_>>>()?;
            exc.setattr("drift", drift)?;
        }
        Error::UndoSkipped { undo, reason } => {
            exc.setattr("undo", undo)?;
            exc.setattr("reason", reason)?;
        }
        _ => {}
    }
    Ok(exc)
}

/// An `InvalidSpecError` for a value the binding rejects before the core sees it (a negative
/// port cannot even be written in the JSON form's unsigned fields).
pub(crate) fn invalid(field: impl Into<String>, value: impl Display, expected: &str) -> PyErr {
    CoreError(Error::invalid_spec(field, value, expected)).into()
}

/// Adds `text` to exception `exc` as a note (PEP 678: `add_note`, shown under its traceback);
/// before Python 3.11, which has no `add_note`, appended to `__notes__` as it would be. A
/// note that cannot be added is reported as unraisable.
pub(crate) fn add_note(exc: &Bound<'_, PyAny>, text: &str) {
    let added = match exc.hasattr("add_note") {
        Ok(true) => exc.call_method1("add_note", (text,)).map(drop),
        _ => exc
            .getattr("__notes__")
            .or_else(|_| {
                let notes = PyList::empty(exc.py()).into_any();
                exc.setattr("__notes__", &notes).map(|()| notes)
            })
            .and_then(|notes| notes.call_method1("append", (text,)).map(drop)),
    };
    if let Err(e) = added {
        e.write_unraisable(exc.py(), Some(exc));
    }
}
