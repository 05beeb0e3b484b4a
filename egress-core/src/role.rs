//! [`Role`]: whether a router holds the egress identity. A leaf: the model, the objects, drift and
//! errors all speak of it (its parsing is the spec's).

use std::fmt;

use serde::Serialize;

/// Whether a router holds the egress identity (its addresses, its default route via the
/// gateway, its stable MAC, and announces them) or only has everything else staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Holds the egress identity and forwards.
    #[default]
    Active,
    /// Everything staged (link, NAT table, forward filter, sysctls, gateway host route) but
    /// what claims the egress identity: never answers for the egress IP, never forwards.
    Standby,
}

impl Role {
    /// `active` / `standby`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
