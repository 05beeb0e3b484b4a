//! The kernel objects a router is made of, one module each. A module owns the object's
//! desired form (built from a spec, compared with what the kernel holds, rendered as its
//! `ip`/`nft`/`sysctl` line), the netlink calls that change it, and their inverse.
//!
//! Every object implements [`KernelObject`]; [`crate::model::desired::Desired`] is a list of them.
//! [`Current`] is what one namespace holds, read once; [`Step`] is one kernel change, as the
//! plan shows it and the transaction runs it.

pub(crate) mod addr;
pub(crate) mod change;
pub(crate) mod current;
pub(crate) mod link;
pub(crate) mod nat;
pub(crate) mod record;
pub(crate) mod role;
pub(crate) mod route;
mod step;
pub(crate) mod sysctl;

use std::fmt;

pub(crate) use self::current::Current;
pub use self::step::Step;
use crate::{drift::Drift, error::Result};

/// What every kernel object of a router knows about itself.
pub(crate) trait KernelObject: fmt::Debug + Send + Sync {
    /// The object as its `ip` / `nft` / `sysctl` line (`ip route add default via … proto 158`).
    fn render(&self) -> String;

    /// How `now` differs from this object; nothing when the kernel holds it exactly.
    fn compare(&self, now: &Current, drift: &mut Vec<Drift>);

    /// The steps that make `now` hold this object; nothing when [`compare`](Self::compare)
    /// finds nothing. An error when no change can (the adopted link is gone).
    fn repair(&self, now: &Current, steps: &mut Vec<Step>) -> Result<()>;
}
