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
use self::{change::Change, record::Record, route::Route};
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

    /// The changes that take this object, as `now` holds it, out of the kernel: its inverse,
    /// for a router read back from the kernel (teardown). What it replaced is put back by the
    /// crash record's inverse; nothing by default (a sysctl, the role: the record restores
    /// them, or they go with the link).
    fn remove(&self, now: &Current, inverse: &mut Inverse<'_>) {
        let _ = (now, inverse);
    }
}

/// The inverse of a router read back from the kernel, as its objects add to it: the undos of a
/// teardown, in the order a transaction would have logged them, and the notes and markers of
/// its crash record (deleted as one undo, last).
pub(crate) struct Inverse<'a> {
    /// The router's name.
    pub name: &'a str,
    /// Its crash record, proven.
    pub record: &'a Record,
    /// The undos, in order.
    pub undos: Vec<Box<dyn Change>>,
    /// The routes of its crash record's notes, its identity notes and its markers.
    pub notes: Vec<Route>,
}

impl<'a> Inverse<'a> {
    /// An empty inverse of router `name`, whose record is `record`.
    pub(crate) fn new(name: &'a str, record: &'a Record) -> Inverse<'a> {
        Inverse {
            name,
            record,
            undos: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds an undo.
    pub(crate) fn undo(&mut self, u: Box<dyn Change>) {
        self.undos.push(u);
    }
}
