//! One call's transaction: the plan's steps run against the namespace, each undo logged once the
//! kernel accepted its change, verified, rolled back on failure.

pub(crate) mod tx;
pub(crate) mod undo;

pub(crate) use self::tx::{Identity, Tx};
