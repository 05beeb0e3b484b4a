//! Route netlink: what the objects' requests have in common (the errno of a failed request, a
//! dump that the kernel interrupted, retried).

use futures::TryStreamExt;

use crate::error::Result;

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
