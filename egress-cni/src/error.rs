//! The CNI error object (with its codes mapped from the core's errors).

use std::fmt;

use serde_json::{json, Value};

use egress_core::Error;

use crate::{code, escape_control, CniVersion};

/// A CNI error: the spec's error object (`code`, `msg`, `details`), and the configuration key
/// or environment variable at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// The error code ([`code`]).
    pub code: u32,
    /// What went wrong, in one line, naming the key or variable and its value.
    pub msg: String,
    /// More: what would be valid, what remains, each difference; may be empty.
    pub details: String,
    /// The configuration key (`ip.addresses[1]`) or environment variable (`CNI_IFNAME`) at
    /// fault, when there is one.
    pub field: Option<String>,
}

impl CniError {
    pub(crate) fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
            field: None,
        }
    }

    /// `invalid FIELD `VALUE``, with what would be valid as the details.
    pub(crate) fn invalid(
        code: u32,
        field: &str,
        value: &str,
        expected: impl Into<String>,
    ) -> Self {
        let expected = expected.into();
        CniError {
            code,
            msg: format!("invalid {} `{}`: {expected}", clip(field), clip(value)),
            details: String::new(),
            field: Some(field.to_string()),
        }
    }

    pub(crate) fn env(var: &str, value: &str, expected: impl Into<String>) -> Self {
        CniError::invalid(code::INVALID_ENVIRONMENT, var, value, expected)
    }

    pub(crate) fn config(field: &str, value: &Value, expected: impl Into<String>) -> Self {
        CniError::invalid(code::INVALID_CONFIG, field, &shown(value), expected)
    }

    pub(crate) fn missing(field: &str, expected: impl Into<String>) -> Self {
        CniError {
            code: code::INVALID_CONFIG,
            msg: format!("{} is missing: {}", clip(field), expected.into()),
            details: String::new(),
            field: Some(field.to_string()),
        }
    }

    pub(crate) fn unsupported(field: &str, value: &Value, why: impl Into<String>) -> Self {
        CniError {
            code: code::UNSUPPORTED_FIELD,
            msg: format!(
                "unsupported field {} = {}",
                clip(field),
                clip(&value.to_string())
            ),
            details: why.into(),
            field: Some(field.to_string()),
        }
    }

    /// A key an object of the configuration repeats (code 7): JSON readers disagree on which
    /// of its values counts.
    pub(crate) fn repeated(field: &str) -> Self {
        CniError {
            code: code::INVALID_CONFIG,
            msg: format!(
                "duplicate key {}: each key once (JSON readers differ on which value counts)",
                clip(field)
            ),
            details: String::new(),
            field: Some(field.to_string()),
        }
    }

    /// Every problem of a configuration as one error: the most fundamental first (the lowest
    /// code: a version, then unknown keys, then values; in the order found within a code),
    /// its message naming the other keys, and the details every problem, one per line.
    /// `problems` is not empty.
    pub(crate) fn all(mut problems: Vec<CniError>) -> Self {
        problems.sort_by_key(|e| e.code);
        let mut first = problems.remove(0);
        if problems.is_empty() {
            return first;
        }
        let keys: Vec<&str> = problems.iter().filter_map(|e| e.field.as_deref()).collect();
        let details: Vec<String> = std::iter::once(&first)
            .chain(&problems)
            .map(|e| match e.details.as_str() {
                "" => e.msg.clone(),
                details => format!("{}: {details}", e.msg),
            })
            .collect();
        first.msg = format!(
            "{}; and {} more: {}",
            first.msg,
            problems.len(),
            keys.join(", ")
        );
        first.details = details.join("\n");
        first
    }

    /// An I/O failure (code 5): reading stdin, opening the log file.
    pub fn io(what: impl fmt::Display, e: &std::io::Error) -> Self {
        CniError::new(code::IO_FAILURE, format!("{what}: {e}"), "")
    }

    /// A CHECK that found differences (code 104), one per line in the details.
    pub fn drift(differences: &[String]) -> Self {
        CniError::new(
            code::DRIFT,
            format!(
                "the attachment differs from its configuration ({} difference{})",
                differences.len(),
                if differences.len() == 1 { "" } else { "s" }
            ),
            differences.join("\n"),
        )
    }

    /// STATUS: the plugin cannot service ADD requests (code 50), because of `cause`.
    pub fn not_available(cause: &Error) -> Self {
        CniError::new(
            code::NOT_AVAILABLE,
            "egress-cni cannot add routers on this node",
            cause.to_string(),
        )
    }

    /// A bug (code 999): the plugin panicked with `what`.
    pub fn internal(what: impl fmt::Display) -> Self {
        CniError::new(
            code::INTERNAL,
            format!("egress-cni failed unexpectedly: {what}"),
            "this is a bug; the kernel changes of an ADD that got this far are rolled back \
             only by a DEL",
        )
    }

    /// The spec's error object in `version` (`details` omitted when empty). Control
    /// characters are escaped (a runtime logs `msg`), but the line breaks between the lines of
    /// `details`.
    pub fn to_json(&self, version: CniVersion) -> Value {
        let msg = escape_control(&self.msg);
        let mut v = json!({"cniVersion": version.as_str(), "code": self.code, "msg": msg});
        if !self.details.is_empty() {
            let lines: Vec<_> = self.details.lines().map(escape_control).collect();
            v["details"] = lines.join("\n").into();
        }
        v
    }

    /// Maps an error of the core to the spec's codes, naming configuration keys rather than
    /// spec fields.
    pub fn from_core(e: &Error) -> Self {
        let c = match e {
            Error::InvalidSpec {
                field,
                value,
                expected,
                others,
            } => {
                let (code, field) = config_field(field);
                return CniError::invalid(code, &field, value, with_others(expected, others));
            }
            Error::NotFound { field, .. } if field == "netns" => code::UNKNOWN_CONTAINER,
            Error::NotFound { .. } | Error::AlreadyExists { .. } | Error::Conflict { .. } => {
                code::KERNEL_STATE
            }
            Error::PermissionDenied { .. } => code::PERMISSION_DENIED,
            Error::Kernel { errno, .. } if transient(*errno) => code::TRY_AGAIN_LATER,
            Error::Kernel { .. } => code::ROLLED_BACK,
            Error::Apply {
                source, rollback, ..
            } => match (rollback.is_complete(), &**source) {
                (false, _) => code::LEFT_BEHIND,
                (true, Error::PermissionDenied { .. }) => code::PERMISSION_DENIED,
                (true, s) if s.errno().is_some_and(transient) => code::TRY_AGAIN_LATER,
                (true, _) => code::ROLLED_BACK,
            },
            Error::Teardown { .. } | Error::UndoSkipped { .. } => code::LEFT_BEHIND,
            Error::Verify { .. } => code::ROLLED_BACK,
            // A teardown of the router runs (its marker is fresh): nothing was changed.
            Error::TeardownInProgress { .. } => code::TRY_AGAIN_LATER,
            // The core's error is non-exhaustive: a variant added after this mapping was
            // written is a bug here until it gets its code, not a code to guess.
            _ => code::INTERNAL,
        };
        let (msg, details) = match e {
            Error::NotFound {
                field,
                object,
                value,
                netns,
            } => {
                let (_, field) = config_field(field);
                (
                    format!("{field}: {object} `{value}` not found"),
                    format!("looked up in namespace {netns}"),
                )
            }
            Error::Conflict {
                field,
                value,
                reason,
            } => {
                let (_, field) = config_field(field);
                (format!("{field} `{value}`: {reason}"), String::new())
            }
            Error::Apply {
                step_index,
                step,
                source,
                rollback,
            } => (
                format!("step {step_index} failed: {source}; {rollback}"),
                format!("the failed step: {step}"),
            ),
            other => (other.to_string(), String::new()),
        };
        CniError::new(c, msg, details)
    }
}

/// One line: the message, the code, and the details' lines joined by `; `, every control
/// character escaped (a value of the configuration cannot start a line of the log).
impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (CNI error {})", escape_control(&self.msg), self.code)?;
        if !self.details.is_empty() {
            let lines: Vec<_> = self.details.lines().map(escape_control).collect();
            write!(f, ": {}", lines.join("; "))?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// Errnos after which the same request may well succeed.
pub(crate) fn transient(errno: i32) -> bool {
    matches!(
        errno,
        libc::EAGAIN | libc::EBUSY | libc::EINTR | libc::ENOBUFS
    )
}

/// The configuration key (or variable) a spec field comes from, with the error code a bad
/// value there earns.
pub(crate) fn config_field(field: &str) -> (u32, String) {
    let (code, name) = match field {
        "netns" | "netns.path" => (code::INVALID_ENVIRONMENT, "CNI_NETNS"),
        "external.macvlan.name" => (code::INVALID_ENVIRONMENT, "CNI_IFNAME"),
        "name" => (code::INVALID_ENVIRONMENT, "CNI_CONTAINERID"),
        "external.macvlan.parent" => (code::INVALID_CONFIG, "interfaceArgs.master"),
        "external.macvlan.mtu" => (code::INVALID_CONFIG, "interfaceArgs.mtu"),
        "external.macvlan.mode" => (code::INVALID_CONFIG, "interfaceArgs.mode"),
        "internal" => (code::INVALID_CONFIG, "internalInterface"),
        other => (code::INVALID_CONFIG, other),
    };
    (code, name.to_string())
}

/// What would be valid, followed by every other invalid field of the spec, so that one run
/// reports every mistake.
pub(crate) fn with_others(expected: &str, others: &[egress_core::InvalidField]) -> String {
    match others.len() {
        0 => expected.to_string(),
        n => format!(
            "{expected}; and {n} more: {}",
            others
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// A JSON value as a message shows it: strings bare, everything else as JSON.
pub(crate) fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// At most 80 characters, for messages, control characters escaped.
pub(crate) fn clip(s: &str) -> String {
    let s = escape_control(s);
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.into_owned(),
    }
}
