//! The one error type of the crate.

use std::fmt;

use crate::drift::Drift;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One invalid field of a spec: where, what was given, what would be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    /// The field, as a JSON path (`redirects[1].port`).
    pub field: String,
    /// The value given, as the user wrote it.
    pub value: String,
    /// What would be valid.
    pub expected: String,
}

impl InvalidField {
    pub(crate) fn new(
        field: impl Into<String>,
        value: impl fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        InvalidField {
            field: field.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

impl fmt::Display for InvalidField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} `{}`: {}",
            self.field, self.value, self.expected
        )
    }
}

/// Everything that can go wrong, with the field, value, step or errno a user needs.
///
/// Match on [`Error::kind`] to branch; the bindings map each [`ErrorKind`] to their own
/// exception class or result code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Spec fields hold values that can never work, whatever the kernel holds. The first
    /// invalid field is named in `field`, `value` and `expected`; `others` lists the rest, so
    /// that every mistake is reported at once ([`Error::invalid_fields`] gives them all).
    #[error("invalid {field} `{value}`: {expected}{}", others_suffix(.others))]
    InvalidSpec {
        /// The field, as a JSON path (`redirects[1].port`).
        field: String,
        /// The value given, as the user wrote it.
        value: String,
        /// What would be valid.
        expected: String,
        /// Every other invalid field, in the order the spec lists them.
        others: Vec<InvalidField>,
    },
    /// The caller lacks a capability (CAP_NET_ADMIN, CAP_SYS_ADMIN for namespaces).
    #[error("permission denied: {operation} needs {capability} (run as root or grant it)")]
    PermissionDenied {
        /// What was about to be done.
        operation: String,
        /// The capability that is missing.
        capability: &'static str,
    },
    /// Something the spec names does not exist in the kernel.
    #[error("{field}: {object} `{value}` not found in namespace {netns}")]
    NotFound {
        /// The spec field that names the object.
        field: String,
        /// The kind of object (link, namespace, router).
        object: &'static str,
        /// Its name.
        value: String,
        /// The namespace it was looked up in.
        netns: String,
    },
    /// Something the router would create already exists.
    #[error("{object} `{value}` already exists in namespace {netns}{}", hint_suffix(.hint))]
    AlreadyExists {
        /// The kind of object (link, router).
        object: &'static str,
        /// Its name.
        value: String,
        /// The namespace it was found in.
        netns: String,
        /// What to do instead.
        hint: Option<String>,
    },
    /// A spec value the kernel refuses given what it holds (MTU above the parent's, …).
    #[error("{field} `{value}` does not fit the kernel state: {reason}")]
    Conflict {
        /// The spec field.
        field: String,
        /// The value given.
        value: String,
        /// Why the kernel state rules it out.
        reason: String,
    },
    /// A kernel call failed: the kernel returned this errno.
    #[error("{operation} failed: {} (errno {errno})", errno_text(*.errno))]
    Kernel {
        /// The operation, close to its `ip`/`nft`/`sysctl` equivalent.
        operation: String,
        /// The positive errno the kernel returned.
        errno: i32,
    },
    /// An undo was skipped on purpose: what it would have removed is kept because something
    /// else could not be restored, and is needed to finish later (the router's crash record).
    #[error("{undo} skipped: {reason}")]
    UndoSkipped {
        /// The undo, close to its `ip`/`nft` equivalent.
        undo: String,
        /// Why it was skipped.
        reason: String,
    },
    /// After an apply, the kernel did not hold what the spec describes (something changed
    /// the namespace meanwhile, or the kernel did not take a change as sent).
    #[error("the namespace differs from the spec after the change: {}", drift_list(.drift))]
    Verify {
        /// How the kernel differs.
        drift: Vec<Drift>,
    },
    /// A [`Router`](crate::Router) handle no longer names the router it applied: the router
    /// was torn down and applied again by someone else. Nothing was changed.
    #[error("router `{name}` in namespace {netns} is not the one this handle applied ({reason}); nothing was changed")]
    StaleHandle {
        /// The router's name.
        name: String,
        /// Its namespace.
        netns: String,
        /// What differs.
        reason: String,
    },
    /// An apply failed at one step and was rolled back.
    #[error("apply failed at step {step_index} ({step}): {source}; {rollback}")]
    Apply {
        /// The failed step, as printed by the plan.
        step: String,
        /// Its position in the plan, counting from 1.
        step_index: usize,
        /// Why it failed.
        #[source]
        source: Box<Error>,
        /// What rollback achieved.
        rollback: Rollback,
    },
    /// A teardown ran every undo, and some failed.
    #[error("teardown incomplete: {}", list(.failures))]
    Teardown {
        /// One error per undo that failed; whatever it names remains in the kernel.
        failures: Vec<Error>,
    },
}

/// What rollback of a failed apply achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollback {
    /// Every change the apply made was undone; the kernel is as it was.
    Complete,
    /// Some undos failed; each entry names what remains and why.
    Incomplete(Vec<String>),
}

impl Rollback {
    /// Whether every change was undone.
    pub fn is_complete(&self) -> bool {
        matches!(self, Rollback::Complete)
    }
}

impl fmt::Display for Rollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rollback::Complete => f.write_str("rolled back completely"),
            Rollback::Incomplete(left) => {
                write!(f, "rollback incomplete, remaining: {}", left.join("; "))
            }
        }
    }
}

/// The kind of an [`Error`], for callers (and bindings) that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::InvalidSpec`].
    InvalidSpec,
    /// [`Error::PermissionDenied`].
    PermissionDenied,
    /// [`Error::NotFound`].
    NotFound,
    /// [`Error::AlreadyExists`].
    AlreadyExists,
    /// [`Error::Conflict`].
    Conflict,
    /// [`Error::Kernel`].
    Kernel,
    /// [`Error::Apply`] whose rollback was complete.
    Apply,
    /// [`Error::Apply`] whose rollback left something behind.
    RollbackIncomplete,
    /// [`Error::Teardown`].
    Teardown,
    /// [`Error::UndoSkipped`].
    UndoSkipped,
    /// [`Error::Verify`].
    Verify,
    /// [`Error::StaleHandle`].
    StaleHandle,
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidSpec { .. } => ErrorKind::InvalidSpec,
            Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::Kernel { .. } => ErrorKind::Kernel,
            Error::UndoSkipped { .. } => ErrorKind::UndoSkipped,
            Error::Verify { .. } => ErrorKind::Verify,
            Error::StaleHandle { .. } => ErrorKind::StaleHandle,
            Error::Apply { rollback, .. } if rollback.is_complete() => ErrorKind::Apply,
            Error::Apply { .. } => ErrorKind::RollbackIncomplete,
            Error::Teardown { .. } => ErrorKind::Teardown,
        }
    }

    /// The errno behind this error, when a kernel call failed (looking through [`Error::Apply`]).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            Error::Apply { source, .. } => source.errno(),
            _ => None,
        }
    }

    /// An [`Error::InvalidSpec`] of one field, for front ends that validate their own input
    /// format (an environment variable, a CNI configuration key).
    pub fn invalid_spec(
        field: impl Into<String>,
        value: impl fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Self::from_invalid(vec![InvalidField::new(field, value, expected)])
            .expect("one field is given")
    }

    /// Every invalid field of an [`Error::InvalidSpec`] (the first one first); empty for other
    /// errors.
    pub fn invalid_fields(&self) -> Vec<InvalidField> {
        match self {
            Error::InvalidSpec {
                field,
                value,
                expected,
                others,
            } => std::iter::once(InvalidField {
                field: field.clone(),
                value: value.clone(),
                expected: expected.clone(),
            })
            .chain(others.iter().cloned())
            .collect(),
            _ => Vec::new(),
        }
    }

    /// One [`Error::InvalidSpec`] holding all of `fields`, or `None` when there are none.
    pub(crate) fn from_invalid(fields: Vec<InvalidField>) -> Option<Self> {
        let mut fields = fields.into_iter();
        let first = fields.next()?;
        Some(Error::InvalidSpec {
            field: first.field,
            value: first.value,
            expected: first.expected,
            others: fields.collect(),
        })
    }

    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl fmt::Display,
        expected: impl Into<String>,
    ) -> Self {
        Self::invalid_spec(field, value, expected)
    }

    /// A failed kernel call; EPERM and EACCES are [`Error::PermissionDenied`].
    pub(crate) fn kernel(operation: impl Into<String>, errno: i32) -> Self {
        let operation = operation.into();
        if errno == libc::EPERM || errno == libc::EACCES {
            return Error::PermissionDenied {
                operation,
                capability: "CAP_NET_ADMIN",
            };
        }
        Error::Kernel { operation, errno }
    }
}

/// Whether an errno means "the object is already gone" (teardown treats it as success).
pub(crate) fn is_gone(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOENT | libc::ENODEV | libc::ESRCH | libc::EADDRNOTAVAIL
    )
}

fn errno_text(errno: i32) -> String {
    nix::errno::Errno::from_raw(errno).desc().to_string()
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_deref()
        .map(|h| format!(" ({h})"))
        .unwrap_or_default()
}

fn others_suffix(others: &[InvalidField]) -> String {
    match others.len() {
        0 => String::new(),
        n => format!(
            "; and {n} more: {}",
            others
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

fn drift_list(drift: &[Drift]) -> String {
    drift
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn list(errors: &[Error]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_error_names_operation_and_errno() {
        let e = Error::kernel("ip link add macvlan0", libc::EBUSY);
        assert_eq!(
            e.to_string(),
            "ip link add macvlan0 failed: Device or resource busy (errno 16)"
        );
        assert_eq!(e.kind(), ErrorKind::Kernel);
        assert_eq!(e.errno(), Some(libc::EBUSY));
    }

    #[test]
    fn eperm_is_permission_denied() {
        let e = Error::kernel("ip link add macvlan0", libc::EPERM);
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    }

    #[test]
    fn apply_error_kind_follows_rollback() {
        let e = Error::Apply {
            step: "ip link set macvlan0 up".into(),
            step_index: 3,
            source: Box::new(Error::kernel("ip link set macvlan0 up", libc::ENODEV)),
            rollback: Rollback::Incomplete(vec!["link macvlan0".into()]),
        };
        assert_eq!(e.kind(), ErrorKind::RollbackIncomplete);
        assert_eq!(e.errno(), Some(libc::ENODEV));
        assert!(e.to_string().contains("remaining: link macvlan0"), "{e}");
    }

    #[test]
    fn every_invalid_field_is_kept_and_shown() {
        let e = Error::from_invalid(vec![
            InvalidField::new("name", "A", "[a-z0-9-]"),
            InvalidField::new("sources[0]", "x", "an address"),
            InvalidField::new("gateways", "[]", "a gateway"),
        ])
        .unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidSpec);
        assert_eq!(
            e.to_string(),
            "invalid name `A`: [a-z0-9-]; and 2 more: invalid sources[0] `x`: an address; \
             invalid gateways `[]`: a gateway"
        );
        let fields: Vec<String> = e.invalid_fields().into_iter().map(|f| f.field).collect();
        assert_eq!(fields, ["name", "sources[0]", "gateways"]);
        assert!(Error::from_invalid(Vec::new()).is_none());
        assert_eq!(
            Error::invalid_spec("f", 1, "two").to_string(),
            "invalid f `1`: two"
        );
    }
}
