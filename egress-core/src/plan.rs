//! A spec as an ordered list of kernel changes: the dry run, and the order `apply` follows.

use std::{fmt, net::IpAddr};

use ipnetwork::IpNetwork;

use crate::{
    ops::{addr, announce, link, nat::NatRules, route},
    spec::{External, Macvlan, RouterSpec},
};

/// One kernel change of an apply. `Display` renders it close to its `ip`/`nft`/`sysctl`
/// equivalent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Create the router's nftables table with its DNAT, SNAT and forward filter, in one atomic
    /// batch. Its comment is the crash journal: what the router is about to replace (sysctl
    /// values, the adopted link's state), written before anything is replaced. The rules name
    /// links, not indexes, so they can exist before the macvlan does.
    CreateTable {
        /// The table (family `inet`).
        table: String,
        /// One-line summary of the ruleset.
        summary: String,
    },
    /// Copy the namespace's default routes of one family into the journal table, so that they
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
    /// Bring an adopted link up (no change when it already is).
    SetLinkUp {
        /// The link.
        link: String,
    },
    /// Set a per-link sysctl.
    SetSysctl {
        /// The key in path form (`net/ipv4/conf/macvlan0/arp_notify`).
        key: String,
        /// The value.
        value: String,
    },
    /// Add an egress source address to the external link.
    AddAddress {
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
    /// Delete the namespace's default routes of one family and add the router's.
    ReplaceDefaultRoute {
        /// The gateway.
        via: IpAddr,
        /// The external link.
        link: String,
    },
    /// Turn on forwarding for one family.
    EnableForwarding {
        /// IPv6 (else IPv4).
        ipv6: bool,
    },
    /// Send gratuitous ARP / unsolicited NA for the egress addresses.
    Announce {
        /// The external link.
        link: String,
        /// The addresses.
        addresses: Vec<IpAddr>,
        /// Announcements per address.
        count: u8,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateTable { table, summary } => write!(
                f,
                "nft add table inet {table} {{ comment \"<journal>\" }} with {summary} (one batch)"
            ),
            Step::SaveDefaultRoutes { ipv6 } => write!(
                f,
                "ip {}route save: copy the default routes of table main to table {}",
                if *ipv6 { "-6 " } else { "" },
                route::JOURNAL_TABLE
            ),
            Step::CreateMacvlan {
                macvlan,
                netns,
                group,
            } => write!(
                f,
                "{} group {group:#x}",
                link::create_macvlan_command(macvlan).replace("ROUTER", netns)
            ),
            Step::SetLinkUp { link } => write!(f, "ip link set dev {link} up"),
            Step::SetSysctl { key, value } => {
                write!(f, "sysctl -w {}={value}", crate::ops::sysctl::dotted(key))
            }
            Step::AddAddress { link, address } => f.write_str(&addr::add_command(link, *address)),
            Step::AddRoute { dst, via, link } => {
                write!(f, "ip route add {dst}")?;
                if let Some(v) = via {
                    write!(f, " via {v}")?;
                }
                write!(f, " dev {link} proto {}", route::ROUTE_PROTOCOL)
            }
            Step::ReplaceDefaultRoute { via, link } => write!(
                f,
                "ip {}route replace default via {via} dev {link} proto {} (previous default routes removed)",
                if via.is_ipv6() { "-6 " } else { "" },
                route::ROUTE_PROTOCOL
            ),
            Step::EnableForwarding { ipv6 } => f.write_str(if *ipv6 {
                "sysctl -w net.ipv6.conf.all.forwarding=1"
            } else {
                "sysctl -w net.ipv4.ip_forward=1"
            }),
            Step::Announce {
                link,
                addresses,
                count,
            } => {
                let cmds: Vec<String> = addresses
                    .iter()
                    .map(|a| announce::command(link, *a))
                    .collect();
                write!(f, "{} (x{count})", cmds.join("; "))
            }
        }
    }
}

/// The ordered steps of an apply; `Display` is the dry run, one numbered line per change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    steps: Vec<Step>,
}

impl Plan {
    /// The steps, in the order `apply` runs them.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "{:>2}. {s}", i + 1)?;
        }
        Ok(())
    }
}

impl RouterSpec {
    /// The dry run: every kernel change `apply` makes, in order. Changes nothing.
    ///
    /// ```
    /// # use egress_core::{MacvlanMode, RouterSpec};
    /// let spec = RouterSpec::builder("egress-1")
    ///     .macvlan("eth1", MacvlanMode::Private)
    ///     .source("203.0.113.99/24")
    ///     .gateway("203.0.113.1")
    ///     .build()?;
    /// println!("{}", spec.plan());
    /// # Ok::<(), egress_core::Error>(())
    /// ```
    pub fn plan(&self) -> Plan {
        let link = self.external.link_name().to_string();
        let has4 = self.gateway4.is_some();
        let has6 = self.gateway6.is_some();
        let mut steps = vec![Step::CreateTable {
            table: self.table_name(),
            summary: nat_rules(self).summary(),
        }];
        for (on, ipv6) in [(has4, false), (has6, true)] {
            if on {
                steps.push(Step::SaveDefaultRoutes { ipv6 });
            }
        }
        steps.push(match &self.external {
            External::Macvlan(m) => Step::CreateMacvlan {
                macvlan: m.clone(),
                netns: self.netns.to_string(),
                group: link::group_marker(&self.name),
            },
            External::Adopt(_) => Step::SetLinkUp { link: link.clone() },
        });
        if has4 {
            steps.push(Step::SetSysctl {
                key: format!("net/ipv4/conf/{link}/arp_notify"),
                value: "1".into(),
            });
        }
        if has6 {
            steps.push(Step::SetSysctl {
                key: format!("net/ipv6/conf/{link}/ndisc_notify"),
                value: "1".into(),
            });
        }
        for s in &self.sources {
            steps.push(Step::AddAddress {
                link: link.clone(),
                address: *s,
            });
        }
        let gateways: Vec<IpAddr> = self
            .gateway4
            .map(IpAddr::from)
            .into_iter()
            .chain(self.gateway6.map(IpAddr::from))
            .collect();
        for g in &gateways {
            steps.push(Step::AddRoute {
                dst: IpNetwork::from(*g),
                via: None,
                link: link.clone(),
            });
        }
        for g in &gateways {
            steps.push(Step::ReplaceDefaultRoute {
                via: *g,
                link: link.clone(),
            });
        }
        for k in &self.kept_routes {
            steps.push(Step::AddRoute {
                dst: k.to,
                via: k.via,
                link: self.internal.clone(),
            });
        }
        for (on, ipv6) in [(has4, false), (has6, true)] {
            if on {
                steps.push(Step::EnableForwarding { ipv6 });
            }
        }
        if self.announce > 0 {
            steps.push(Step::Announce {
                link,
                addresses: self.sources.iter().map(IpNetwork::ip).collect(),
                count: self.announce,
            });
        }
        Plan { steps }
    }
}

/// The NAT ruleset of a spec.
pub(crate) fn nat_rules(spec: &RouterSpec) -> NatRules {
    NatRules {
        table: spec.table_name(),
        internal: spec.internal.clone(),
        external: spec.external.link_name().to_string(),
        snat4: spec.snat4(),
        snat6: spec.snat6(),
        redirects: spec.redirects.clone(),
        fallback4: spec.fallback4,
        fallback6: spec.fallback6,
    }
}
