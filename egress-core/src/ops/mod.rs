//! The kernel objects a router is made of, one module each. A module owns the object's
//! desired form (built from a spec, compared with what the kernel holds, rendered as its
//! `ip`/`nft`/`sysctl` line), the netlink calls that change it, and their inverse.
//!
//! Every object implements [`KernelObject`]; [`crate::desired::Desired`] is a list of them.
//! [`Current`] is what one namespace holds, read once; [`Step`] is one kernel change, as the
//! plan shows it and the transaction runs it.

pub(crate) mod addr;
pub(crate) mod current;
pub(crate) mod ifname;
pub(crate) mod link;
pub(crate) mod nat;
pub(crate) mod record;
pub(crate) mod role;
pub(crate) mod route;
mod step;
pub(crate) mod sysctl;

use std::fmt;

use futures::TryStreamExt;

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

/// The positive errno behind an rtnetlink error (EIO when the kernel sent none).
pub(crate) fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map_or(0, |c| -c.get()),
        _ => libc::EIO,
    }
}

/// Runs an rtnetlink dump to completion; a dump the kernel interrupted (the table changed
/// while it was read, `NLM_F_DUMP_INTR`, surfaced as EINTR/EBUSY) is retried.
pub(crate) async fn dump<T, S, F>(operation: &str, mut request: F) -> crate::Result<Vec<T>>
where
    F: FnMut() -> S,
    S: futures::Stream<Item = Result<T, rtnetlink::Error>>,
{
    let mut attempts = 0;
    loop {
        match request().try_collect::<Vec<T>>().await {
            Ok(v) => return Ok(v),
            Err(e) if matches!(errno(&e), libc::EINTR | libc::EBUSY) && attempts < 5 => {
                attempts += 1;
            }
            Err(e) => return Err(crate::Error::kernel(operation, errno(&e))),
        }
    }
}
