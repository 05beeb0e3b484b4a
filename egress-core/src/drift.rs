//! How a namespace differs from what a router should be: [`Drift`], what `check` reports and
//! `ensure` repairs.

use std::fmt;

use ipnetwork::IpNetwork;
use serde::Serialize;

/// One way the kernel differs from a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Drift {
    /// No router of this name in the namespace.
    RouterMissing {
        /// The table that marks it.
        table: String,
    },
    /// The external link is gone.
    LinkMissing {
        /// Its name.
        link: String,
    },
    /// The external link is down.
    LinkDown {
        /// Its name.
        link: String,
    },
    /// A property of the external link differs.
    LinkChanged {
        /// Its name.
        link: String,
        /// The property.
        field: &'static str,
        /// What the spec wants.
        expected: String,
        /// What the kernel has.
        actual: String,
    },
    /// An egress address is missing.
    AddressMissing {
        /// The link.
        link: String,
        /// The address.
        address: IpNetwork,
    },
    /// An address that is not the router's sits on the link the router created.
    ForeignAddress {
        /// The link.
        link: String,
        /// The address.
        address: IpNetwork,
    },
    /// A route of the router is missing.
    RouteMissing {
        /// The route, as `ip route` prints it.
        route: String,
    },
    /// A default route that is not the router's is back in the main table.
    ForeignDefaultRoute {
        /// The route.
        route: String,
    },
    /// A sysctl was reset.
    SysctlChanged {
        /// The key, dotted.
        key: String,
        /// What the router sets.
        expected: String,
        /// What the kernel has.
        actual: String,
    },
    /// The NAT / filter ruleset differs from the spec (flushed, edited, elements changed).
    NatChanged {
        /// The table.
        table: String,
        /// The rules or elements that are missing, or that should not be there.
        detail: String,
    },
    /// One of the places that keep the router's crash record (what it replaced, to restore at
    /// teardown) lost it: `ensure` writes it again from the place that still has it.
    JournalDamaged {
        /// Which place: `table comment`, `journal notes`, `saved routes`.
        store: String,
        /// What is missing or differs.
        detail: String,
    },
    /// A standby holds part of the egress identity (an egress address, the default route via
    /// the gateway, the stable MAC): it would answer for, or forward as, the active instance.
    IdentityHeld {
        /// What it holds, as `ip` shows it.
        what: String,
    },
    /// The role the router's record holds is not the one wanted (a promotion or demotion was
    /// interrupted before it was recorded).
    RoleChanged {
        /// The role wanted.
        expected: crate::Role,
        /// The role the record holds.
        actual: crate::Role,
    },
}

impl Drift {
    /// A short stable name of the kind of drift (`route_missing`, …), as JSON's `kind` field
    /// and metric labels use it.
    pub fn kind(&self) -> &'static str {
        match self {
            Drift::RouterMissing { .. } => "router_missing",
            Drift::LinkMissing { .. } => "link_missing",
            Drift::LinkDown { .. } => "link_down",
            Drift::LinkChanged { .. } => "link_changed",
            Drift::AddressMissing { .. } => "address_missing",
            Drift::ForeignAddress { .. } => "foreign_address",
            Drift::RouteMissing { .. } => "route_missing",
            Drift::ForeignDefaultRoute { .. } => "foreign_default_route",
            Drift::SysctlChanged { .. } => "sysctl_changed",
            Drift::NatChanged { .. } => "nat_changed",
            Drift::JournalDamaged { .. } => "journal_damaged",
            Drift::IdentityHeld { .. } => "identity_held",
            Drift::RoleChanged { .. } => "role_changed",
        }
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::RouterMissing { table } => {
                write!(f, "router not configured (no nftables table inet {table})")
            }
            Drift::LinkMissing { link } => write!(f, "link {link} is missing"),
            Drift::LinkDown { link } => write!(f, "link {link} is down"),
            Drift::LinkChanged {
                link,
                field,
                expected,
                actual,
            } => write!(f, "link {link}: {field} is {actual}, expected {expected}"),
            Drift::AddressMissing { link, address } => {
                write!(f, "address {address} missing on {link}")
            }
            Drift::ForeignAddress { link, address } => {
                write!(f, "foreign address {address} on {link}")
            }
            Drift::RouteMissing { route } => write!(f, "route missing: {route}"),
            Drift::ForeignDefaultRoute { route } => {
                write!(f, "foreign default route present: {route}")
            }
            Drift::SysctlChanged {
                key,
                expected,
                actual,
            } => write!(f, "sysctl {key} is {actual}, expected {expected}"),
            Drift::NatChanged { table, detail } => {
                write!(f, "nftables table inet {table} differs: {detail}")
            }
            Drift::JournalDamaged { store, detail } => {
                write!(f, "crash record damaged ({store}): {detail}")
            }
            Drift::IdentityHeld { what } => {
                write!(f, "standby holds the egress identity: {what}")
            }
            Drift::RoleChanged { expected, actual } => {
                write!(f, "the router's record says {actual}, expected {expected}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_kind_is_the_kind_name() {
        let drifts = [
            Drift::RouteMissing {
                route: "default via 203.0.113.1 dev macvlan0 proto 158".into(),
            },
            Drift::JournalDamaged {
                store: "table comment".into(),
                detail: "the table is missing".into(),
            },
            Drift::ForeignAddress {
                link: "macvlan0".into(),
                address: "203.0.113.7/24".parse().unwrap(),
            },
        ];
        for d in drifts {
            let json = serde_json::to_value(&d).unwrap();
            assert_eq!(json["kind"], d.kind(), "{d}");
        }
    }
}
