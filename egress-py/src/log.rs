//! The core's `tracing` events, forwarded to Python's `logging`, logger `egress`.
//!
//! The core emits spans (`apply`, `ensure`, `check`, `teardown`, `rollback`, `inspect`) and
//! events (`step done` with `step` and `us` at DEBUG, `step failed` with `error` at WARN, the
//! repairs of an ensure at INFO). One `tracing` layer, installed when the module is imported,
//! turns each event into a `logging.LogRecord`: its level (TRACE is 5), its message followed by
//! its fields (`step done step=… us=41`), its fields as the dict `record.egress_fields`, the
//! Rust module as `record.egress_target`, and the Rust file and line as `pathname` and
//! `lineno`. (The spans' fields, such as the router's name, are not added: the core runs each
//! call on a thread of its own, which its span does not follow, so no event has a span yet.)
//!
//! Cost when nothing listens: the lowest level the `egress` logger passes is read on the
//! caller's thread at each call into the core ([`refresh`]) and kept in an atomic, and the
//! layer tells `tracing` that nothing below it is wanted (`max_level_hint`, `enabled`), so a
//! disabled event costs the core one relaxed load and a compare — the GIL is never taken for
//! it. A level changed while a call runs takes effect at the next call.
//!
//! Threads and namespaces: events fire on the core's namespace threads, each inside the
//! namespace it works in, while the calling thread waits with the GIL released. A handler run
//! there would run inside the router's namespace (a `SocketHandler` would connect from it) and
//! on a thread of the library's. So the layer only queues each event (no GIL, a lock held for
//! one push), and the thread that called the library emits the queued records when the call
//! returns, in order, before it returns itself ([`detached`]): handlers run on the caller's
//! thread, in the caller's namespace, and every record of a call has been handled when the
//! call returns. With several threads calling at once, a thread emits whatever is queued when
//! its call returns, which may include records of another thread's call that finished in the
//! meantime. A record's `created` time is when it is emitted; the durations it reports (`us`)
//! are measured where the event fired.

use std::{
    fmt, mem,
    sync::{
        atomic::{AtomicU8, Ordering},
        Mutex, PoisonError,
    },
};

use pyo3::{
    exceptions::PyKeyboardInterrupt,
    intern,
    prelude::*,
    sync::PyOnceLock,
    types::{PyDict, PyTuple},
};
use tracing::{
    field::{Field, Visit},
    level_filters::LevelFilter,
    subscriber::Interest,
    Event, Level, Metadata, Subscriber,
};
use tracing_subscriber::{
    layer::{Context, SubscriberExt},
    Layer, Registry,
};

/// The logger every event goes to.
const LOGGER: &str = "egress";

/// The most verbose level forwarded, as [`rank`] numbers it; 0: none.
static THRESHOLD: AtomicU8 = AtomicU8::new(0);

/// The events the core logged that no caller has emitted yet, in the order they fired.
/// Locked for a push or a swap only, never while the GIL is awaited.
static QUEUED: Mutex<Vec<Queued>> = Mutex::new(Vec::new());

/// One event, as it waits in [`QUEUED`].
struct Queued {
    metadata: &'static Metadata<'static>,
    fields: Fields,
}

/// A tracing level as a number that grows with verbosity (ERROR 1 … TRACE 5).
fn rank(level: Level) -> u8 {
    match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// The `logging` level of a tracing level (`logging` has no TRACE: it is 5).
fn python_level(level: Level) -> i64 {
    match level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// The most verbose tracing level (as a [`rank`]) that `logging` level `lowest` lets through.
fn threshold_for(lowest: i64) -> u8 {
    [
        Level::TRACE,
        Level::DEBUG,
        Level::INFO,
        Level::WARN,
        Level::ERROR,
    ]
    .into_iter()
    .find(|l| python_level(*l) >= lowest)
    .map_or(0, rank)
}

fn filter(threshold: u8) -> LevelFilter {
    match threshold {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// `logging.getLogger("egress")`, looked up once (loggers live as long as the process).
fn logger(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static LOGGER_OBJ: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    LOGGER_OBJ
        .get_or_try_init(py, || {
            let logging = py.import("logging")?;
            Ok::<_, PyErr>(logging.call_method1("getLogger", (LOGGER,))?.unbind())
        })
        .map(|l| l.bind(py))
}

/// Installs the layer as the process's `tracing` subscriber (for this module's copy of
/// `tracing`: the core linked into it). Called once, when the module is imported.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    THRESHOLD.store(threshold(py)?, Ordering::Relaxed);
    // Fails only if a subscriber is set already, which only this function does.
    let _ = tracing::subscriber::set_global_default(Registry::default().with(ToLogging));
    Ok(())
}

/// Runs `f` (a call into the core) with the GIL released, then emits the records it logged on
/// this thread: the level is read before, the queued records are handed to `logging` after,
/// whatever `f` returned.
pub(crate) fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    refresh(py);
    let out = py.detach(f);
    emit(py);
    out
}

/// Reads again which levels the `egress` logger passes; called on the caller's thread before
/// each call into the core. A `logging` that cannot be read (a broken configuration) is
/// reported as unraisable and leaves the last level in force.
fn refresh(py: Python<'_>) {
    match threshold(py) {
        Ok(t) => {
            if THRESHOLD.swap(t, Ordering::Relaxed) != t {
                // Recomputes tracing's global maximum level from `max_level_hint`.
                tracing::callsite::rebuild_interest_cache();
            }
        }
        Err(e) => e.write_unraisable(py, None),
    }
}

/// Hands every queued event to `logging`, on this thread. A handler that fails is reported as
/// unraisable, as `logging` itself would not raise either; the other records still go.
///
/// Python runs the handlers of signals that arrived during the call as soon as Python code runs
/// on this thread again — here, in `logging`, before the binding's own check. A Ctrl-C that
/// arrived meanwhile must reach the caller, not be reported as a handler's failure: its
/// `KeyboardInterrupt` is set pending again (`PyErr_SetInterrupt`), so the binding's check (or
/// the caller's next bytecode) raises it.
fn emit(py: Python<'_>) {
    let queued = mem::take(&mut *QUEUED.lock().unwrap_or_else(PoisonError::into_inner));
    let mut interrupted = false;
    for event in queued {
        match forward(py, event.metadata, &event.fields) {
            Ok(()) => {}
            Err(e) if e.is_instance_of::<PyKeyboardInterrupt>(py) => interrupted = true,
            Err(e) => e.write_unraisable(py, None),
        }
    }
    if interrupted {
        // SAFETY: called with the GIL held; it only marks SIGINT as tripped.
        unsafe { pyo3::ffi::PyErr_SetInterrupt() };
    }
}

/// The most verbose level the `egress` logger passes now: its effective level, raised by
/// `logging.disable()`; none when the logger is disabled.
fn threshold(py: Python<'_>) -> PyResult<u8> {
    let logger = logger(py)?;
    if logger.getattr(intern!(py, "disabled"))?.is_truthy()? {
        return Ok(0);
    }
    let level: i64 = logger
        .call_method0(intern!(py, "getEffectiveLevel"))?
        .extract()?;
    let disabled: i64 = logger
        .getattr(intern!(py, "manager"))?
        .getattr(intern!(py, "disable"))?
        .extract()?;
    Ok(threshold_for(level.max(disabled + 1)))
}

/// The layer: forwards every enabled event to `logging`.
struct ToLogging;

impl<S: Subscriber> Layer<S> for ToLogging {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Decided per call by `enabled`, against a level that changes at run time.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        rank(*metadata.level()) <= THRESHOLD.load(Ordering::Relaxed)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(filter(THRESHOLD.load(Ordering::Relaxed)))
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        QUEUED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Queued { metadata, fields });
    }
}

/// Hands one event to the `egress` logger, as `logger.log` would (level check, then the
/// logger's filters and handlers), with the record made from the event.
fn forward(py: Python<'_>, metadata: &Metadata<'_>, event: &Fields) -> PyResult<()> {
    let logger = logger(py)?;
    let level = python_level(*metadata.level());
    if !logger
        .call_method1(intern!(py, "isEnabledFor"), (level,))?
        .is_truthy()?
    {
        return Ok(());
    }
    // `name=value` after the message, as tracing's own formatter writes fields.
    let mut message = event.message.clone().unwrap_or_default();
    let fields = PyDict::new(py);
    for (name, value) in &event.values {
        message.push_str(&format!(" {name}={value}"));
        fields.set_item(*name, value.to_py(py)?)?;
    }
    let extra = PyDict::new(py);
    extra.set_item("egress_fields", fields)?;
    extra.set_item("egress_target", metadata.target())?;
    let record = logger.call_method1(
        intern!(py, "makeRecord"),
        (
            LOGGER,
            level,
            metadata.file().unwrap_or("<unknown>"),
            metadata.line().unwrap_or(0),
            message,
            PyTuple::empty(py),
            py.None(),
            py.None(),
            extra,
        ),
    )?;
    logger.call_method1(intern!(py, "handle"), (record,))?;
    Ok(())
}

/// The fields of an event: its message apart, the others in order.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    values: Vec<(&'static str, FieldValue)>,
}

impl Fields {
    fn set(&mut self, field: &Field, value: FieldValue) {
        match field.name() {
            "message" => self.message = Some(value.to_string()),
            name => self.values.push((name, value)),
        }
    }
}

enum FieldValue {
    Text(String),
    Int(i64),
    Unsigned(u64),
    Bool(bool),
    Float(f64),
}

impl FieldValue {
    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            FieldValue::Text(s) => s.into_pyobject(py)?.into_any(),
            FieldValue::Int(i) => i.into_pyobject(py)?.into_any(),
            FieldValue::Unsigned(u) => u.into_pyobject(py)?.into_any(),
            FieldValue::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
            FieldValue::Float(f) => f.into_pyobject(py)?.into_any(),
        })
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Text(s) => f.write_str(s),
            FieldValue::Int(i) => write!(f, "{i}"),
            FieldValue::Unsigned(u) => write!(f, "{u}"),
            FieldValue::Bool(b) => write!(f, "{b}"),
            FieldValue::Float(x) => write!(f, "{x}"),
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` fields and the message arrive here, their Debug being their Display.
        self.set(field, FieldValue::Text(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, FieldValue::Text(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field, FieldValue::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field, FieldValue::Unsigned(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field, FieldValue::Bool(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field, FieldValue::Float(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.set(field, FieldValue::Text(value.to_string()));
    }
}
