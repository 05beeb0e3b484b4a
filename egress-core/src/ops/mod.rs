//! One module per kernel object; each owns its apply and its inverse.

pub(crate) mod nat;
