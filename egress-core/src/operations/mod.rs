//! What callers do with a router: apply it, converge it, tear it down, watch it, change its
//! role, diagnose it, read its counters, inspect it.

pub(crate) mod apply;
pub(crate) mod diagnose;
pub(crate) mod ensure;
pub(crate) mod inspect;
pub(crate) mod roles;
pub(crate) mod stats;
pub(crate) mod teardown;
pub(crate) mod watch;
