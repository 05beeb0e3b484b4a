//! egress-core: turn a Linux network namespace into an egress router.

mod error;
mod netns;
mod ops;
mod spec;

pub use error::{Error, ErrorKind, Result, Rollback};
pub use spec::{
    External, KeptRoute, Macvlan, MacvlanMode, Netns, Protocol, Redirect, RouterSpec,
    RouterSpecBuilder, MAX_ANNOUNCE, MAX_IFNAME_LEN, MAX_NAME_LEN,
};
