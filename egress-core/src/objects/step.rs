//! [`Step`]: one kernel change, as the dry run prints it and the transaction runs it.

use std::{fmt, net::IpAddr, time::Duration};

use ipnetwork::IpNetwork;

use super::{
    addr,
    change::{boxed, At, Change},
    link, record, route, sysctl,
};
use crate::error::Result;
use crate::kernel::procfs::{self};
use crate::role::Role;
use crate::spec::{format_mac, Macvlan, MacvlanMode};

/// One kernel change of an apply, an ensure, a promotion or a demotion. `Display` renders it
/// close to its `ip`/`nft`/`sysctl` equivalent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Write the router's crash record — what it is about to replace (sysctl values, the
    /// adopted link's state, which default routes it saves) — into the journal routing table,
    /// before anything is replaced.
    WriteJournal {
        /// The journal routing table.
        table: u32,
    },
    /// Create the router's nftables table with its DNAT, SNAT and forward filter, in one atomic
    /// batch; its comment holds the crash record again (the second place that keeps it). The
    /// rules name links, not indexes, so they can exist before the macvlan does.
    CreateTable {
        /// The table (family `inet`).
        table: String,
        /// One-line summary of the ruleset.
        summary: String,
    },
    /// Write the crash record again in both places (the journal routing table and the table's
    /// comment, replacing the table in one atomic batch): one place lost it, or it must list
    /// default routes about to be replaced.
    RewriteJournal {
        /// The table (family `inet`).
        table: String,
    },
    /// Put the saved default routes back into a journal table that lost them, from the other.
    RestoreSavedRoutes {
        /// The routing table that lost them.
        table: u32,
    },
    /// Install the ruleset again in the router's table, in one batch (the table and its
    /// comment stay).
    ReplaceRuleset {
        /// The table (family `inet`).
        table: String,
        /// One-line summary of the ruleset.
        summary: String,
    },
    /// Copy the namespace's default routes of one family into the journal tables, so that they
    /// can be restored even after a crash.
    SaveDefaultRoutes {
        /// IPv6 (else IPv4).
        ipv6: bool,
    },
    /// Create the macvlan on its parent, directly inside the router namespace, up.
    CreateMacvlan {
        /// What to create.
        macvlan: Macvlan,
        /// The router namespace, as named in the spec.
        netns: String,
        /// The ownership marker put in the link's group.
        group: u32,
    },
    /// Bring the external link up.
    SetLinkUp {
        /// The link.
        link: String,
    },
    /// Put a property of the created macvlan back to the spec's value.
    SetLink {
        /// The link.
        link: String,
        /// The MTU, if it differs.
        mtu: Option<u32>,
        /// The MAC address, if it differs.
        mac: Option<[u8; 6]>,
        /// The macvlan mode, if it differs.
        mode: Option<MacvlanMode>,
    },
    /// Set a sysctl.
    SetSysctl {
        /// The key (`net.ipv4.conf.macvlan0.arp_notify`).
        key: procfs::SysctlKey,
        /// The value.
        value: i64,
    },
    /// Add an egress source address to the external link.
    AddAddress {
        /// The link.
        link: String,
        /// The address with its prefix.
        address: IpNetwork,
    },
    /// Remove an address that is not the router's from the link the router created.
    DeleteAddress {
        /// The link.
        link: String,
        /// The address with its prefix.
        address: IpNetwork,
    },
    /// Add a route of ours.
    AddRoute {
        /// Destination.
        dst: IpNetwork,
        /// Next hop, if any.
        via: Option<IpAddr>,
        /// Output link.
        link: String,
    },
    /// Delete the namespace's default routes of one family (the ones saved before) and add
    /// the router's.
    ReplaceDefaultRoute {
        /// The gateway.
        via: IpAddr,
        /// The external link.
        link: String,
    },
    /// Withdraw an egress address (demotion: the instance stops answering ARP / ND for it).
    WithdrawAddress {
        /// The link.
        link: String,
        /// The address with its prefix.
        address: IpNetwork,
    },
    /// Delete the router's default route of one family, and any other default route of that
    /// family (saved before): a standby has none.
    WithdrawDefaultRoute {
        /// The gateway.
        via: IpAddr,
        /// The external link.
        link: String,
    },
    /// Give the external link a MAC address: the stable MAC on promotion, its own on demotion.
    SetMac {
        /// The link.
        link: String,
        /// The MAC address.
        mac: [u8; 6],
    },
    /// Record the router's role (its role marker, replaced in place): the last request of a
    /// promotion or demotion.
    MarkRole {
        /// The role.
        role: Role,
    },
    /// Turn on forwarding for one family.
    EnableForwarding {
        /// IPv6 (else IPv4).
        ipv6: bool,
    },
    /// Have the kernel announce the egress addresses (gratuitous ARP, unsolicited NA).
    Announce {
        /// The external link.
        link: String,
        /// The addresses.
        addresses: Vec<IpAddr>,
        /// Announcements per address: the first right away, the others spaced by
        /// `interval` without holding up the transaction.
        count: u8,
        /// The time between two announcements.
        interval: Duration,
    },
}

impl Step {
    /// Whether the step makes the router claim its identity on the external network (an
    /// address, a link or a MAC it did not have): an announcement must follow.
    pub(crate) fn claims_identity(&self) -> bool {
        matches!(
            self,
            Step::CreateMacvlan { .. }
                | Step::SetLinkUp { .. }
                | Step::AddAddress { .. }
                | Step::SetLink { mac: Some(_), .. }
                | Step::SetMac { .. }
        )
    }
}

impl Step {
    /// The changes that make this step, against what the transaction knows (`at`); each
    /// object's module says what they are.
    pub(crate) fn changes(&self, at: &At<'_>) -> Result<Vec<Box<dyn Change>>> {
        Ok(match self {
            Step::WriteJournal { .. } => Step::write_record_changes(at)?,
            Step::CreateTable { .. } => Step::create_table_changes(at)?,
            Step::RewriteJournal { table } => Step::rewrite_table_changes(at, table)?,
            Step::RestoreSavedRoutes { table } => Step::restore_saved_changes(at, *table),
            Step::ReplaceRuleset { .. } => Step::replace_ruleset_changes(at)?,
            Step::SaveDefaultRoutes { ipv6 } => Step::save_default_changes(at, *ipv6),
            Step::CreateMacvlan {
                macvlan,
                netns,
                group,
            } => Step::create_macvlan_changes(at, macvlan, netns, *group),
            Step::SetLinkUp { link } => Step::set_link_up_changes(at, link)?,
            Step::SetLink {
                link,
                mtu,
                mac,
                mode,
            } => Step::set_link_changes(at, link, *mtu, *mac, *mode)?,
            Step::SetSysctl { key, value } => Step::set_sysctl_changes(at, key, *value),
            Step::AddAddress { link, address } => Step::add_address_changes(at, link, *address)?,
            Step::DeleteAddress { link, address } => {
                Step::delete_address_changes(at, link, *address)?
            }
            Step::AddRoute { dst, via, link } => Step::add_route_changes(at, *dst, *via, link)?,
            Step::ReplaceDefaultRoute { via, link } => {
                Step::replace_default_changes(at, *via, link)?
            }
            Step::WithdrawAddress { link, address } => {
                Step::withdraw_address_changes(at, link, *address)?
            }
            Step::WithdrawDefaultRoute { via, link } => {
                Step::withdraw_default_changes(at, *via, link)?
            }
            Step::SetMac { link, mac } => Step::set_mac_changes(at, link, *mac)?,
            Step::MarkRole { role } => Step::mark_role_changes(at, *role),
            Step::EnableForwarding { ipv6 } => Step::enable_forwarding_changes(at, *ipv6),
            Step::Announce {
                link,
                count,
                interval,
                ..
            } => vec![boxed(crate::objects::link::Announce {
                name: link.clone(),
                count: *count,
                interval: *interval,
            })],
        })
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::WriteJournal { table } => write!(
                f,
                "ip -6 route add blackhole {}… table {table} proto {} (the crash record, one \
                 route per 16 bytes)",
                record::NOTE_PREFIX,
                route::ROUTE_PROTOCOL
            ),
            Step::CreateTable { table, summary } => write!(
                f,
                "nft add table inet {table} {{ comment \"<crash record>\" }} with {summary} (one batch)"
            ),
            Step::RewriteJournal { table } => write!(
                f,
                "write the crash record again: its routes in table {}, and nft delete table \
                 inet {table} + add it with the record as its comment (one batch)",
                record::JOURNAL_TABLE
            ),
            Step::RestoreSavedRoutes { table } => write!(
                f,
                "ip route add …: the saved default routes into table {table} again, from table {}",
                record::other_copy_table(*table)
            ),
            Step::ReplaceRuleset { table, summary } => {
                write!(f, "nft -f: {summary} again, in inet {table} (one batch)")
            }
            Step::SaveDefaultRoutes { ipv6 } => write!(
                f,
                "ip {}route save: copy the default routes of table main to tables {} and {}",
                if *ipv6 { "-6 " } else { "" },
                record::JOURNAL_TABLE,
                record::MIRROR_TABLE
            ),
            Step::CreateMacvlan {
                macvlan,
                netns,
                group,
            } => write!(
                f,
                "{} group {group:#x}",
                link::create_macvlan_command(macvlan, netns)
            ),
            Step::SetLinkUp { link } => write!(f, "ip link set dev {link} up"),
            Step::SetLink {
                link,
                mtu,
                mac,
                mode,
            } => f.write_str(&link::set_command(link, *mtu, *mac, *mode)),
            Step::SetSysctl { key, value } => write!(f, "sysctl -w {key}={value}"),
            Step::AddAddress { link, address } => f.write_str(&addr::add_command(link, *address)),
            Step::DeleteAddress { link, address } => {
                write!(f, "ip addr del {address} dev {link}")
            }
            Step::AddRoute { dst, via, link } => {
                f.write_str(&route::add_command(*dst, *via, link))
            }
            Step::ReplaceDefaultRoute { via, link } => write!(
                f,
                "ip {}route replace default via {via} dev {link} proto {} (previous default routes removed)",
                if via.is_ipv6() { "-6 " } else { "" },
                route::ROUTE_PROTOCOL
            ),
            Step::EnableForwarding { ipv6 } => f.write_str(&sysctl::forwarding_command(*ipv6)),
            Step::WithdrawAddress { link, address } => {
                write!(f, "ip addr del {address} dev {link} (withdrawn: standby)")
            }
            Step::WithdrawDefaultRoute { via, link } => write!(
                f,
                "ip {}route del default via {via} dev {link} proto {} (and any other default \
                 route, saved: standby)",
                if via.is_ipv6() { "-6 " } else { "" },
                route::ROUTE_PROTOCOL
            ),
            Step::SetMac { link, mac } => {
                write!(f, "ip link set dev {link} address {}", format_mac(mac))
            }
            Step::MarkRole { role } => write!(
                f,
                "ip -6 route replace {} 6572:…/128 table {} proto {}, and in table {} (the role \
                 marker: {role})",
                match role {
                    Role::Standby => "blackhole",
                    Role::Active => "unreachable",
                },
                record::JOURNAL_TABLE,
                route::ROUTE_PROTOCOL,
                record::MIRROR_TABLE
            ),
            Step::Announce {
                link,
                addresses,
                count,
                interval,
            } => write!(
                f,
                "{} (the kernel announces {}; x{count}, {} ms apart)",
                link::announce_command(link),
                addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                interval.as_millis()
            ),
        }
    }
}
