//! One call's transaction: the plan's steps run against the namespace, each undo logged once the
//! kernel accepted its change, verified, rolled back on failure.

pub(crate) mod tx;
pub(crate) mod undo;

pub(crate) use self::tx::{Identity, Tx};
use crate::{
    error::Result,
    kernel::netns::{Conn, NsHandle},
    model::Desired,
    objects::Current,
};

/// Takes a namespace that holds the router, drifted, back to `desired`: the plan of what
/// differs from `now`, run as one verified transaction (rolled back on failure). The one
/// repair that [`ensure`](crate::ensure) and the [`watch`](crate::watch) share. A plan that
/// cannot be made (an adopted link is gone) is an error like a failed change.
pub(crate) async fn converge(
    desired: &Desired,
    c: Conn,
    now: Current,
    parent: Option<NsHandle>,
) -> Result<Conn> {
    let plan = desired.plan(&now)?;
    let (c, _) = Tx::new(desired, c, now, parent, 0)?
        .run(desired, &plan)
        .await?;
    Ok(c)
}
