//! Python values <-> the JSON form, and the argument conventions shared by every function.

use egress_core::Netns;
use pyo3::{
    exceptions::PyTypeError,
    prelude::*,
    types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple},
};
use serde_json::{Map, Number, Value};

use crate::errors::invalid;

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

/// A Python value as JSON; `path` names it in errors (`spec['redirects'][0]`). Only the JSON
/// types are accepted (dict with str keys, list, tuple, str, int, float, bool, None).
pub(crate) fn py_to_json(obj: &Bound<'_, PyAny>, path: &str) -> PyResult<Value> {
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
            path,
            obj.str()?.to_string(),
            "an integer that fits in 64 bits",
        ));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let v = f.value();
        return Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| invalid(path, v, "a finite number"));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Map::new();
        for (k, v) in d.iter() {
            let key = k.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!("{path}: keys must be str, not {}", type_name(&k)))
            })?;
            let key = key.to_cow()?.into_owned();
            let value = py_to_json(&v, &format!("{path}[{key:?}]"))?;
            map.insert(key, value);
        }
        return Ok(Value::Object(map));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for (i, v) in obj.try_iter()?.enumerate() {
            items.push(py_to_json(&v?, &format!("{path}[{i}]"))?);
        }
        return Ok(Value::Array(items));
    }
    Err(PyTypeError::new_err(format!(
        "{path} must be a JSON value (dict, list, str, int, float, bool or None), not {}",
        type_name(obj)
    )))
}

/// The type name of `obj`, for messages.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// An `int` argument (not a `bool`, which Python counts as one); anything else is a `TypeError`.
pub(crate) fn int_arg(obj: &Bound<'_, PyAny>, arg: &str) -> PyResult<i64> {
    if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{arg} must be an int, not {}",
            type_name(obj)
        )));
    }
    obj.extract()
}

/// An integer spec field whose JSON type holds `0..=max`; outside that range it is an
/// `InvalidSpecError` that says what would be valid (`expected`). Values inside the range are
/// left to the core's validation.
pub(crate) fn int_field(value: i64, max: u64, field: &str, expected: &str) -> PyResult<Value> {
    match u64::try_from(value) {
        Ok(v) if v <= max => Ok(Value::from(v)),
        _ => Err(invalid(field, value, expected)),
    }
}

/// A namespace argument: `None` (the calling thread's namespace), a path (`str` starting with
/// `/`, or `os.PathLike`), a name under `/run/netns` (any other `str`), or a process id (`int`).
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
        let pid = int_arg(obj, field)?;
        return u32::try_from(pid)
            .map(Netns::Pid)
            .map_err(|_| invalid(format!("{field}.pid"), pid, "a process id above 0"));
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

/// A namespace in the JSON form; `None` for the calling thread's namespace (an absent key).
pub(crate) fn netns_json(ns: &Netns) -> Option<Value> {
    let (key, value) = match ns {
        Netns::Path(p) => ("path", Value::from(p.to_string_lossy().into_owned())),
        Netns::Name(n) => ("name", Value::from(n.clone())),
        Netns::Pid(p) => ("pid", Value::from(*p)),
        Netns::Current => return None,
    };
    Some(Value::Object(Map::from_iter([(key.to_owned(), value)])))
}
