//! The bytes on stdin as JSON, strictly: at most [`MAX_CONFIG_LEN`] bytes, and every key of an
//! object once. `serde_json` keeps the last of two equal keys without a word, and other readers
//! keep the first: a configuration that says two things is refused, naming the key.

use std::{cell::RefCell, fmt};

use serde::{
    de::{DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor},
    Deserialize, Deserializer, Serialize,
};
use serde_json::{Map, Value};

/// The largest network configuration read from stdin: 1 MiB. A CNI configuration is a few
/// hundred bytes; OpenShift's operator renders under 1 KiB.
pub const MAX_CONFIG_LEN: usize = 1 << 20;

/// `stdin` as a JSON value. A key an object repeats keeps its first value, and its path
/// (`ip.gateway`, `redirectRules[1].port`) is in the second element.
pub(crate) fn decode(stdin: &[u8]) -> Result<(Value, Vec<String>), serde_json::Error> {
    let repeated = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(stdin);
    let value = Node {
        at: At::Root,
        repeated: &repeated,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok((value, repeated.into_inner()))
}

/// Where a value is, for the name of a repeated key.
#[derive(Clone, Copy)]
enum At<'a> {
    Root,
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Root => Ok(()),
            At::Key(At::Root, key) => f.write_str(key),
            At::Key(parent, key) => write!(f, "{parent}.{key}"),
            At::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// One value of the document, decoded into a [`Value`] with its objects' keys checked.
struct Node<'a> {
    at: At<'a>,
    repeated: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Node {
            at: At::Index(&self.at, items.len()),
            repeated: self.repeated,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let at = At::Key(&self.at, &key);
            let value = map.next_value_seed(Node {
                at,
                repeated: self.repeated,
            })?;
            if object.contains_key(&key) {
                self.repeated.borrow_mut().push(at.to_string());
            } else {
                object.insert(key, value);
            }
        }
        Ok(Value::Object(object))
    }
}

/// A key of the configuration: missing, of the shape its type describes, or not (the value
/// kept for the error that names it). Every key of the configuration's types is one, so that
/// one pass over them finds every invalid key.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) enum Field<T> {
    #[default]
    Missing,
    Valid(T),
    Invalid(Value),
}

impl<T: Serialize> Field<T> {
    /// The value as the configuration has it, for an error message (`null` when missing).
    pub(crate) fn shown(&self) -> Value {
        match self {
            Field::Missing => Value::Null,
            Field::Valid(t) => serde_json::to_value(t).unwrap_or_default(),
            Field::Invalid(v) => v.clone(),
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(match T::deserialize(&value) {
            Ok(t) => Field::Valid(t),
            Err(_) => Field::Invalid(value),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn repeated_keys_are_named_by_their_path_and_keep_their_first_value() {
        let (value, repeated) = decode(
            br#"{"a": 1, "ip": {"gateway": "x", "gateway": "y"},
                 "r": [{"port": 1}, {"port": 2, "port": 3}], "a": 2, "cni.dev/x": [], "cni.dev/x": 0}"#,
        )
        .unwrap();
        assert_eq!(
            value,
            json!({"a": 1, "ip": {"gateway": "x"}, "r": [{"port": 1}, {"port": 2}], "cni.dev/x": []})
        );
        assert_eq!(repeated, ["ip.gateway", "r[1].port", "a", "cni.dev/x"]);
        let (_, repeated) = decode(br#"[{"k": 1, "k": 1}]"#).unwrap();
        assert_eq!(repeated, ["[0].k"]);
    }

    #[test]
    fn what_serde_json_refuses_is_refused() {
        for bad in [&b""[..], b"{", b"{} {}", b"{\"a\": 1,}", b"[1 2]"] {
            assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let e = decode(deep.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("recursion limit"), "{e}");
    }
}
