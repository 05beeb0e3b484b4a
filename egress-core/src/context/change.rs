//! What each step of a plan sends to the kernel: its route netlink requests ([`Change`]),
//! each with the undo that is journaled once the kernel accepted it.

use ipnetwork::IpNetwork;
use rtnetlink::Handle;

use super::tx::{record_spec, Tx, ROLE_CHANGE};
use crate::{
    context::undo::Undo,
    error::Result,
    objects::{
        link,
        record::{self, Stores, JOURNAL_TABLE, MIRROR_TABLE},
        role::{self, Claim},
        route::{self, Route},
        Step,
    },
};

impl Tx {
    /// The route netlink requests of `step`, or `None` for a step that is not made of them.
    pub(super) fn changes(&self, step: &Step) -> Result<Option<Vec<Change>>> {
        let names = self.now.names();
        let add = |route: Route| {
            let what = route.describe(&names);
            Change::AddRoute { route, what }
        };
        let ext_ref = record_spec(&self.spec).link;
        Ok(Some(match step {
            // Each note is a request of its own, so that exactly what the kernel took is
            // undone.
            Step::WriteJournal { .. } => {
                let stores = Stores::of(&self.now, &self.spec.name);
                // The notes of its record, and those with its apply id that a rewrite cut
                // short left (they would mix with the new ones).
                let id = self.record.id;
                let mut out: Vec<Change> = stores
                    .note_routes
                    .into_iter()
                    .chain(
                        stores
                            .debris
                            .into_iter()
                            .filter(|r| record::note_id(r) == id),
                    )
                    .map(|r| Change::DeleteRoute {
                        route: r.clone(),
                        what: NOTE.into(),
                    })
                    .collect();
                out.extend(
                    self.record
                        .notes()?
                        .into_iter()
                        .map(|route| Change::AddRoute {
                            route,
                            what: NOTE.into(),
                        }),
                );
                // The identity notes, with the record's apply id.
                out.extend(
                    Claim::notes_in(&self.now, &self.spec.name)
                        .into_iter()
                        .map(|r| Change::DeleteRoute {
                            route: r.clone(),
                            what: CLAIM_NOTE.into(),
                        }),
                );
                out.extend(
                    Claim::of(&self.spec)
                        .notes(self.record.id)
                        .into_iter()
                        .map(|route| Change::AddRoute {
                            route,
                            what: CLAIM_NOTE.into(),
                        }),
                );
                out
            }
            Step::RestoreSavedRoutes { table } => {
                let from = record::other_copy_table(*table);
                Stores::copies(&self.now, &self.record, from)
                    .into_iter()
                    .map(|r| add(route::in_table(r, *table)))
                    .collect()
            }
            Step::SaveDefaultRoutes { ipv6 } => {
                let mut out = Vec::new();
                for r in route::to_save(&self.now, &ext_ref, *ipv6) {
                    for table in [JOURNAL_TABLE, MIRROR_TABLE] {
                        let copy = route::in_table(r, table);
                        if !self.now.routes.iter().any(|o| o.same_as(&copy)) {
                            out.push(add(copy));
                        }
                    }
                }
                out
            }
            Step::AddAddress { link, address } => vec![Change::AddAddress {
                index: self.index_of(link)?,
                link: link.clone(),
                net: *address,
            }],
            Step::DeleteAddress { link, address } => vec![Change::DeleteAddress {
                index: self.index_of(link)?,
                link: link.clone(),
                net: *address,
            }],
            Step::WithdrawAddress { link, address } => {
                let index = self.index_of(link)?;
                // The last IPv4 address of a link takes the IPv4 routes through it along: its
                // undo puts them back too.
                let withdrawn = |net: &IpNetwork| {
                    *net == *address
                        || self.batch.iter().any(|(_, ch)| {
                            matches!(ch, Change::WithdrawAddress { index: i, net: n, .. }
                                if *i == index && n == net)
                        })
                };
                let last = address.is_ipv4()
                    && !self
                        .now
                        .addrs
                        .iter()
                        .any(|a| a.index == index && a.net.is_ipv4() && !withdrawn(&a.net));
                let lost = match last {
                    true => self
                        .now
                        .routes
                        .iter()
                        .filter(|r| r.oif == Some(index) && r.dst.is_ipv4())
                        .filter(|r| r.table == route::main_table() && r.is_ours())
                        .cloned()
                        .collect(),
                    false => Vec::new(),
                };
                vec![Change::WithdrawAddress {
                    index,
                    link: link.clone(),
                    net: *address,
                    lost,
                }]
            }
            Step::WithdrawDefaultRoute { via, link } => {
                let oif = self.index_of(link)?;
                let ours = route::ours(route::default_dst(via.is_ipv6()), Some(*via), oif);
                self.now
                    .routes
                    .iter()
                    .filter(|r| r.table == route::main_table() && r.is_default())
                    .filter(|r| r.dst.is_ipv6() == via.is_ipv6())
                    .filter(|r| !r.is_ours() || r.same_as(&ours))
                    // Gone already with the link's last IPv4 address (its undo restores it).
                    .filter(|r| {
                        !self.batch.iter().any(|(_, ch)| {
                            matches!(ch, Change::WithdrawAddress { lost, .. }
                                if lost.iter().any(|l| l.same_as(r)))
                        })
                    })
                    .map(|r| Change::DeleteRoute {
                        route: r.clone(),
                        what: r.describe(&names),
                    })
                    .collect()
            }
            Step::SetMac { link, mac } => {
                let index = self.index_of(link)?;
                let old = self
                    .created
                    .as_ref()
                    .filter(|l| l.name == *link)
                    .or_else(|| self.now.link(link))
                    .and_then(|l| l.mac.as_slice().try_into().ok());
                vec![Change::SetMac {
                    index,
                    link: link.clone(),
                    mac: *mac,
                    old,
                }]
            }
            Step::MarkRole { role } => {
                // The link's own MAC: kept by the marker there is (replaced in place), else
                // the one the link has while it does not hold the stable MAC.
                let own = match role::marker_in(&self.now, &self.spec.name) {
                    Some(_) => role::own_mac_in(&self.now, &self.spec.name),
                    None => {
                        let ext = self.spec.external.link_name();
                        self.created
                            .as_ref()
                            .filter(|l| l.name == ext)
                            .or_else(|| self.now.link(ext))
                            .and_then(|l| <[u8; 6]>::try_from(l.mac.as_slice()).ok())
                            .filter(|m| Some(*m) != self.spec.stable_mac)
                    }
                };
                // The journal table's first (the commit point), then its copy.
                let current = role::marker(&self.spec.name, *role, own);
                role::MARKER_TABLES
                    .into_iter()
                    .map(|table| Change::MarkRole {
                        current: route::in_table(&current, table),
                        previous: role::marker_in_table(&self.now, &self.spec.name, table).cloned(),
                    })
                    .collect()
            }
            Step::AddRoute { dst, via, link } => {
                let oif = self.index_of(link)?;
                vec![add(route::ours(*dst, *via, oif))]
            }
            Step::ReplaceDefaultRoute { via, link } => {
                let oif = self.index_of(link)?;
                let dst = route::default_dst(via.is_ipv6());
                let mut changes: Vec<Change> = self
                    .now
                    .routes
                    .iter()
                    .filter(|r| r.table == route::main_table() && r.is_default())
                    .filter(|r| !r.is_ours() && r.dst.is_ipv6() == via.is_ipv6())
                    .map(|r| Change::DeleteRoute {
                        route: r.clone(),
                        what: r.describe(&names),
                    })
                    .collect();
                let ours = route::ours(dst, Some(*via), oif);
                if !self.now.routes.iter().any(|r| r.same_as(&ours)) {
                    changes.push(add(ours));
                }
                changes
            }
            Step::CreateTable { .. }
            | Step::RewriteJournal { .. }
            | Step::ReplaceRuleset { .. }
            | Step::CreateMacvlan { .. }
            | Step::SetLinkUp { .. }
            | Step::SetLink { .. }
            | Step::SetSysctl { .. }
            | Step::EnableForwarding { .. }
            | Step::Announce { .. } => return Ok(None),
        }))
    }
}

/// How an identity note is named in errors.
const CLAIM_NOTE: &str =
    "a note of what a promotion claims (ip -6 route … table 1701278323 proto 158)";

/// How a note of the crash record is named in errors.
const NOTE: &str = "a note of the crash record (ip -6 route … table 1701278323 proto 158)";

/// One route netlink request of a step; its undo is journaled once the kernel accepted it.
pub(super) enum Change {
    AddRoute {
        route: Route,
        what: String,
    },
    /// The role change marker, replaced (one a crash left is taken over).
    RoleChanging {
        route: Route,
    },
    /// A default route the router replaces, or a note of an older crash record.
    DeleteRoute {
        route: Route,
        what: String,
    },
    AddAddress {
        index: u32,
        link: String,
        net: IpNetwork,
    },
    /// An address that is not the router's, on the link it created.
    DeleteAddress {
        index: u32,
        link: String,
        net: IpNetwork,
    },
    /// An egress address withdrawn (demotion), and the routes the kernel deletes with it.
    WithdrawAddress {
        index: u32,
        link: String,
        net: IpNetwork,
        lost: Vec<Route>,
    },
    /// The external link's MAC address (the stable one, or its own back).
    SetMac {
        index: u32,
        link: String,
        mac: [u8; 6],
        old: Option<[u8; 6]>,
    },
    /// The role marker, replaced in place.
    MarkRole {
        current: Route,
        previous: Option<Route>,
    },
}

impl Change {
    pub(super) async fn send(&self, h: &Handle) -> Result<()> {
        match self {
            Change::AddRoute { route, what } => route::add(h, route, what).await,
            Change::RoleChanging { route } => route::replace(h, route, ROLE_CHANGE).await,
            Change::DeleteRoute { route, what } => route::delete(h, route, what).await.map(drop),
            Change::AddAddress { index, link, net } => {
                crate::objects::addr::add(h, *index, link, *net).await
            }
            Change::DeleteAddress { index, link, net }
            | Change::WithdrawAddress {
                index, link, net, ..
            } => crate::objects::addr::delete(h, *index, link, *net)
                .await
                .map(drop),
            Change::SetMac {
                index, link, mac, ..
            } => link::set_mac(h, *index, link, *mac).await,
            Change::MarkRole { current, .. } => route::replace(h, current, "the role marker").await,
        }
    }

    pub(super) fn undo(self) -> Undo {
        match self {
            Change::AddRoute { route, what } => Undo::DeleteRoute { route, what },
            Change::RoleChanging { route } => Undo::DeleteRoute {
                route,
                what: ROLE_CHANGE.into(),
            },
            Change::DeleteRoute { route, what } => Undo::RestoreRoute {
                route: route::in_table(&route, route.table),
                what,
            },
            Change::AddAddress { index, link, net } => Undo::DeleteAddress { index, link, net },
            Change::DeleteAddress { index, link, net } => Undo::AddAddress { index, link, net },
            Change::WithdrawAddress {
                index,
                link,
                net,
                lost,
            } => Undo::ClaimAddress {
                index,
                link,
                net,
                routes: lost,
            },
            Change::SetMac {
                index, link, old, ..
            } => Undo::SetLink {
                index,
                name: link,
                mtu: None,
                mac: old,
                mode: None,
            },
            Change::MarkRole { current, previous } => Undo::MarkRole { current, previous },
        }
    }
}
