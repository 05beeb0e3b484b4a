//! `/proc/sys` of a namespace, read and written on a thread inside it.
//!
//! A write to `/proc/sys/net/...` applies to the namespace of the writing thread, so every access
//! runs on a thread that has entered the namespace ([`NsHandle::run`]). Keys are typed
//! ([`SysctlKey`]: a family, a conf entry, a known name), and each file is opened beneath its
//! fixed directory without following links or creating anything (`file`): what a namespace
//! holds can name no other file.

use super::netns::{NsHandle, PerProcess};
use crate::error::{Error, Result};

mod file;
mod key;
mod knob;

pub use self::key::SysctlKey;
pub(crate) use self::{
    key::{ConfEntry, ConfName, Family},
    knob::Knob,
};

/// Reads each key, in one trip into the namespace; `None` for a key that does not exist.
pub(crate) fn read_many(ns: &NsHandle, keys: &[SysctlKey]) -> Result<Vec<Option<i64>>> {
    let keys = keys.to_vec();
    ns.run(move || {
        let mut dirs = file::Dirs::default();
        keys.iter()
            .map(|k| {
                dirs.read(k)
                    .map_err(|e| Error::kernel(format!("sysctl -n {k}"), e as i32))
            })
            .collect()
    })?
}

/// Writes each `(key, value)` in order, stopping at the first failure; returns how many were
/// written and the failure.
pub(crate) fn write_many(
    ns: &NsHandle,
    writes: &[(SysctlKey, i64)],
) -> Result<(usize, Option<Error>)> {
    let writes = writes.to_vec();
    ns.run(move || {
        let mut dirs = file::Dirs::default();
        for (i, (k, v)) in writes.iter().enumerate() {
            if let Err(e) = dirs.write(k, *v) {
                return (
                    i,
                    Some(Error::kernel(format!("sysctl -w {k}={v}"), e as i32)),
                );
            }
        }
        (writes.len(), None)
    })
}

/// Link deletions of this process take this gate shared; writes of `forwarding` take it
/// exclusively.
///
/// The kernel changes `forwarding` only when it gets the RTNL lock with a trylock; when the
/// lock is taken it restarts the write (`restart_syscall`) in a busy loop, and a trylock
/// keeps losing against the link deletions queued on the lock, each of which holds it while
/// it waits for RCU grace periods. With 16 routers torn down side by side, a write took 73 ms
/// at the median and 256 ms at p90 (300 routers: 3.2 s); with the gate the write itself takes
/// 0.1 ms, and more teardowns can run side by side, sharing grace periods, instead of
/// spinning (300 routers, 128 at a time: 0.6 s; without the gate more at a time is slower).
/// The gate orders this process's own calls only: another process deleting links still makes
/// the kernel retry the write, as before. Per process: a child of `fork` does not inherit a
/// gate held by one of its parent's threads.
pub(crate) static RTNL_GATE: PerProcess<tokio::sync::RwLock<()>> = PerProcess::new();

/// [`write_many`], holding [`RTNL_GATE`] exclusively when a key needs it.
pub(crate) async fn write_gated(
    ns: &NsHandle,
    writes: &[(SysctlKey, i64)],
) -> Result<(usize, Option<Error>)> {
    let _writing = match writes.iter().any(|(k, _)| k.takes_rtnl()) {
        true => Some(RTNL_GATE.get().write().await),
        false => None,
    };
    write_many(ns, writes)
}
