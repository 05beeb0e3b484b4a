//! Python values <-> the JSON form, and the argument conventions shared by every function.
//!
//! Whatever a caller passes, conversion ends in a value or an exception, never in a crash: the
//! walk over a dict is bounded in depth and refuses a container that contains itself, runs no
//! Python code of the caller's (no `__iter__`, `__str__` or `__index__` of a subclass), and
//! names the field of every mistake the way the core does (`redirects[0].port`).

use std::{borrow::Cow, fmt};

use egress_core::{Error, Netns, RouterSpec as CoreSpec};
use pyo3::{
    exceptions::PyTypeError,
    prelude::*,
    types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple},
};
use serde_json::{Map, Number, Value};

use crate::errors::{invalid, CoreError};

/// How deep a value passed as a spec may nest. The JSON form itself is at most 4 levels deep
/// (`external.macvlan.parent_netns.pid`); anything far deeper is a mistake, and a bound keeps
/// the walk (and everything after it) off the end of the stack.
pub(crate) const MAX_DEPTH: usize = 32;

/// The longest value an error message repeats.
const VALUE_CHARS: usize = 80;

/// A JSON value as plain Python objects (dict, list, str, int, float, bool, None).
pub(crate) fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.into_pyobject(py)?.into_any(),
            (None, Some(i), _) => i.into_pyobject(py)?.into_any(),
            (None, None, f) => PyFloat::new(py, f.unwrap_or(f64::NAN)).into_any(),
        },
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, json_to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// Anything serde can serialize (RouterState, Drift, …) as plain Python objects.
pub(crate) fn to_py<'py>(
    py: Python<'py>,
    value: &impl serde::Serialize,
) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(value)
        .map_err(|e| PyTypeError::new_err(format!("egress: cannot convert a result: {e}")))?;
    json_to_py(py, &value)
}

/// One step into a JSON value: a key of an object or an index of an array.
#[derive(Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Where a value sits in the JSON form, written as the core names fields: `redirects[0].port`,
/// `external.macvlan.mtu`; the whole spec is `spec`.
#[derive(Clone, Default)]
struct FieldPath(Vec<Seg>);

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("spec");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A Python value as JSON. Only the JSON types are accepted (dict with str keys, list, tuple,
/// str, int, float, bool, None), their subclasses read as the base type; another type is a
/// `TypeError` naming the field. An int beyond 64 bits, a float that is not finite, a str
/// with lone surrogates, a container inside itself and nesting deeper than [`MAX_DEPTH`] are
/// `InvalidSpecError`s naming the field.
pub(crate) fn py_to_json(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    Walk::default().value(obj)
}

/// The state of one [`py_to_json`]: where it is, and the containers it is inside.
#[derive(Default)]
struct Walk {
    path: FieldPath,
    open: Vec<*mut pyo3::ffi::PyObject>,
}

impl Walk {
    fn value(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<Value> {
        if obj.is_none() {
            return Ok(Value::Null);
        }
        if let Ok(b) = obj.cast::<PyBool>() {
            return Ok(Value::Bool(b.is_true()));
        }
        if obj.is_instance_of::<PyInt>() {
            if let Ok(u) = obj.extract::<u64>() {
                return Ok(Value::from(u));
            }
            if let Ok(i) = obj.extract::<i64>() {
                return Ok(Value::from(i));
            }
            return Err(invalid(
                self.path.to_string(),
                int_text(obj),
                "an integer that fits in 64 bits",
            ));
        }
        if let Ok(f) = obj.cast::<PyFloat>() {
            let v = f.value();
            return Number::from_f64(v)
                .map(Value::Number)
                .ok_or_else(|| invalid(self.path.to_string(), v, "a finite number"));
        }
        if let Ok(s) = obj.cast::<PyString>() {
            return Ok(Value::String(self.text(s)?.into_owned()));
        }
        let is_dict = obj.is_instance_of::<PyDict>();
        if !is_dict && !obj.is_instance_of::<PyList>() && !obj.is_instance_of::<PyTuple>() {
            return Err(PyTypeError::new_err(format!(
                "{} must be a JSON value (dict, list, str, int, float, bool or None), not {}",
                self.path,
                type_name(obj)
            )));
        }
        if self.open.contains(&obj.as_ptr()) {
            return Err(invalid(
                self.path.to_string(),
                format!("({} that contains itself)", type_name(obj)),
                "a JSON value (a dict or list cannot contain itself)",
            ));
        }
        if self.open.len() >= MAX_DEPTH {
            return Err(invalid(
                self.path.to_string(),
                format!("({} nested {MAX_DEPTH} levels deep)", type_name(obj)),
                &format!("a JSON value nested at most {MAX_DEPTH} levels deep"),
            ));
        }
        self.open.push(obj.as_ptr());
        let value = if let Ok(d) = obj.cast::<PyDict>() {
            self.dict(d)
        } else if let Ok(l) = obj.cast::<PyList>() {
            self.array(l.iter())
        } else {
            self.array(obj.cast::<PyTuple>()?.iter())
        };
        self.open.pop();
        value
    }

    fn dict(&mut self, d: &Bound<'_, PyDict>) -> PyResult<Value> {
        let mut map = Map::new();
        for (k, v) in d.iter() {
            let key = k.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "{}: keys must be str, not {}",
                    self.path,
                    type_name(&k)
                ))
            })?;
            let key = self.text(key)?.into_owned();
            self.path.0.push(Seg::Key(key.clone()));
            let value = self.value(&v);
            self.path.0.pop();
            map.insert(key, value?);
        }
        Ok(Value::Object(map))
    }

    fn array<'py>(&mut self, items: impl Iterator<Item = Bound<'py, PyAny>>) -> PyResult<Value> {
        let mut out = Vec::new();
        for (i, v) in items.enumerate() {
            self.path.0.push(Seg::Index(i));
            let value = self.value(&v);
            self.path.0.pop();
            out.push(value?);
        }
        Ok(Value::Array(out))
    }

    /// A str as UTF-8; one with lone surrogates cannot be (the error shows it as `str.__repr__`
    /// does, escapes and all).
    fn text<'a>(&self, s: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, str>> {
        s.to_cow().map_err(|_| {
            let shown = s
                .py()
                .get_type::<PyString>()
                .call_method1("__repr__", (s,))
                .and_then(|r| r.extract::<String>())
                .unwrap_or_else(|_| s.to_string_lossy().into_owned());
            invalid(
                self.path.to_string(),
                shown,
                "a str of valid Unicode (no lone surrogates)",
            )
        })
    }
}

/// An int as an error message shows it: its digits, or its size when it has too many (what
/// `int.__repr__` refuses). The base class's methods, so that no subclass code runs.
fn int_text(obj: &Bound<'_, PyAny>) -> String {
    let int = obj.py().get_type::<PyInt>();
    let bits = int
        .call_method1("bit_length", (obj,))
        .and_then(|b| b.extract::<u64>())
        .unwrap_or(u64::MAX);
    if bits > 256 {
        return format!("(an integer of {bits} bits)");
    }
    int.call_method1("__repr__", (obj,))
        .and_then(|r| r.extract::<String>())
        .unwrap_or_else(|_| format!("(an integer of {bits} bits)"))
}

/// Parses the JSON form with the core, naming the field of a type mistake.
///
/// The core names every field its validation checks, but a value of the wrong JSON type stops
/// serde before validation, and `RouterSpec::from_json_value` reports that as field `spec`
/// (serde's message has no path). Only then is the value parsed again, as text that holds one
/// field per line, so that the line serde reports names the field. Should the core's message
/// change shape, its error is passed on as it is.
pub(crate) fn parse_spec(value: Value) -> Result<CoreSpec, CoreError> {
    match CoreSpec::from_json_value(value.clone()) {
        Err(e) if serde_failure(&e) => {
            let lines = Lines::of(&value);
            Err(CoreError(match CoreSpec::from_json(&lines.text) {
                Err(again) => lines.locate(&again).unwrap_or(e),
                Ok(_) => e,
            }))
        }
        other => Ok(other?),
    }
}

/// Whether `e` is the core's report of a value serde could not read (the field is `spec`).
fn serde_failure(e: &Error) -> bool {
    matches!(e, Error::InvalidSpec { field, others, .. } if field == "spec" && others.is_empty())
}

/// A JSON value as text with one field (or array element) per line, and for each line the
/// field it holds, with that field's value as an error repeats it.
struct Lines {
    text: String,
    fields: Vec<(String, String)>,
}

impl Lines {
    fn of(value: &Value) -> Lines {
        let mut lines = Lines {
            text: String::new(),
            fields: Vec::new(),
        };
        lines.write(&mut FieldPath::default(), None, value, true);
        lines
    }

    fn line(&mut self, text: &str, path: &FieldPath, value: &Value) {
        self.text.push_str(text);
        self.text.push('\n');
        self.fields.push((path.to_string(), value_text(value)));
    }

    fn write(&mut self, path: &mut FieldPath, key: Option<&str>, value: &Value, last: bool) {
        let key = key
            .map(|k| format!("{}: ", Value::from(k)))
            .unwrap_or_default();
        let comma = if last { "" } else { "," };
        match value {
            Value::Object(map) => {
                self.line(&format!("{key}{{"), path, value);
                for (i, (k, v)) in map.iter().enumerate() {
                    path.0.push(Seg::Key(k.clone()));
                    self.write(path, Some(k), v, i + 1 == map.len());
                    path.0.pop();
                }
                self.line(&format!("}}{comma}"), path, value);
            }
            Value::Array(items) => {
                self.line(&format!("{key}["), path, value);
                for (i, v) in items.iter().enumerate() {
                    path.0.push(Seg::Index(i));
                    self.write(path, None, v, i + 1 == items.len());
                    path.0.pop();
                }
                self.line(&format!("]{comma}"), path, value);
            }
            scalar => self.line(&format!("{key}{scalar}{comma}"), path, value),
        }
    }

    /// The core's error for this text, with the field its line holds: serde's message ends
    /// in "at line L column C".
    fn locate(&self, e: &Error) -> Option<Error> {
        let Error::InvalidSpec { expected, .. } = e else {
            return None;
        };
        let serde = expected.strip_prefix("valid router JSON: ")?;
        let (message, at) = serde.rsplit_once(" at line ")?;
        let (line, _column) = at.split_once(" column ")?;
        let (field, value) = self
            .fields
            .get(line.parse::<usize>().ok()?.checked_sub(1)?)?;
        Some(Error::invalid_spec(field, value, message))
    }
}

/// A value as an error repeats it: compact JSON, at most [`VALUE_CHARS`] characters.
fn value_text(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(VALUE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The type name of `obj`, for messages.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// An integer argument of a builder method, as field `field` of the JSON form, whose type
/// there is `T`: `arg` (the argument's name) must be an `int` (not a `bool`, which Python
/// counts as one), else `TypeError`; its value must fit `T`, else `InvalidSpecError` saying
/// what would be valid (`expected`). Values that fit are left to the core's validation.
pub(crate) fn int_field<T: TryFrom<u64>>(
    obj: &Bound<'_, PyAny>,
    arg: &str,
    field: &str,
    expected: &str,
) -> PyResult<T> {
    if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{arg} must be an int, not {}",
            type_name(obj)
        )));
    }
    obj.extract::<u64>()
        .ok()
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| invalid(field, int_text(obj), expected))
}

/// A namespace argument: `None` (the calling thread's namespace), a path (`str` starting with
/// `/`, or `os.PathLike`), a name under `/run/netns` (any other `str`), or a process id (`int`).
/// `field` names it in errors (`netns`, `external.macvlan.parent_netns`). Only its type is
/// checked here: a spec's namespaces are validated with the spec, and [`netns_checked`]
/// validates one that stands alone.
pub(crate) fn netns_arg(obj: Option<&Bound<'_, PyAny>>, field: &str) -> PyResult<Netns> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(Netns::Current);
    };
    if let Ok(s) = obj.cast::<PyString>() {
        let s = s.to_cow()?.into_owned();
        return Ok(if s.starts_with('/') {
            Netns::Path(s.into())
        } else {
            Netns::Name(s)
        });
    }
    if obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>() {
        let pid = int_field(obj, field, &format!("{field}.pid"), "a process id above 0")?;
        return Ok(Netns::Pid(pid));
    }
    if obj.hasattr("__fspath__")? {
        let path = obj.call_method0("__fspath__")?;
        let path = path
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err(format!("{field}: __fspath__ must return str")))?;
        return Ok(Netns::Path(path.to_cow()?.into_owned().into()));
    }
    Err(PyTypeError::new_err(format!(
        "{field} must be a namespace path or name (str, os.PathLike) or a process id (int), not {}",
        type_name(obj)
    )))
}

/// A namespace argument that names a namespace on its own (`egress.teardown(name,
/// netns=...)`), validated as a spec's `netns` is: a name with `/` or `..`, a relative path
/// or pid 0 is an `InvalidSpecError` naming `netns.name` (`.path`, `.pid`), before the kernel
/// is asked. The validation is the core's, through a spec holding only that namespace.
pub(crate) fn netns_checked(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Netns> {
    let ns = netns_arg(obj, "netns")?;
    let Err(e) = CoreSpec::builder("netns").netns(ns.clone()).build() else {
        return Ok(ns);
    };
    let wrong = e
        .invalid_fields()
        .into_iter()
        .find(|f| f.field.starts_with("netns."));
    match wrong {
        Some(f) => Err(invalid(f.field, f.value, &f.expected)),
        None => Ok(ns),
    }
}
