//! The model: what a router is made of ([`Desired`], from a spec), how a namespace differs from
//! it, and the [`Plan`] that takes a namespace there.

pub(crate) mod desired;
pub(crate) mod parts;
pub(crate) mod plan;

pub use self::{desired::Desired, plan::Plan};
