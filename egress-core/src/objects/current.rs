//! [`Current`]: what a namespace holds, read once, for every object to compare itself with.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnetwork::IpNetwork;

use super::{
    addr::Addr,
    link::{Link, LinkConf},
    nat::{NatState, TableInfo},
    route::{self, Route},
    sysctl,
};
use crate::{
    error::Result,
    kernel::netns::Conn,
    kernel::procfs::{ConfEntry, Family, Knob, SysctlKey},
    spec::{table_name, External, RouterSpec},
};

/// Everything of one namespace that a router's objects are compared with.
#[derive(Debug, Clone, Default)]
pub(crate) struct Current {
    /// The namespace, as named by the caller (for messages).
    pub netns: String,
    /// Every `inet` table, with its comment.
    pub tables: Vec<TableInfo>,
    /// What the router's table holds, when it exists.
    pub table: Option<NatState>,
    /// Every link.
    pub links: Vec<Link>,
    /// Every address.
    pub addrs: Vec<Addr>,
    /// Every route of both families, in every table.
    pub routes: Vec<Route>,
    /// Sysctl values: the files read, and each link's own values from the link dump.
    pub sysctls: BTreeMap<SysctlKey, i64>,
    /// Whether the kernel keeps an address's protocol (`IFA_PROTO`, Linux 6.3): without it, no
    /// address carries our marker.
    pub addr_protocol: bool,
}

impl Current {
    /// Reads everything the objects of router `name` compare with.
    pub(crate) async fn read(c: &mut Conn, name: &str) -> Result<Current> {
        Current::read_of(c, name, true).await
    }

    /// Reads what a role change compares with and changes (the identity objects, the crash
    /// record, the role marker and the identity notes): the links, the addresses, the routes,
    /// the `inet` tables with their comments — not the content of the router's table (its
    /// ruleset with every map element: most of a whole read's time) nor the sysctl files,
    /// which no role change touches. `table` is `None` and `sysctls` holds only the links'
    /// own values.
    pub(crate) async fn read_identity(c: &mut Conn, name: &str) -> Result<Current> {
        Current::read_of(c, name, false).await
    }

    async fn read_of(c: &mut Conn, name: &str, whole: bool) -> Result<Current> {
        let table = table_name(name);
        let tables = c.nft().tables()?;
        let content = match whole && tables.iter().any(|t| t.name == table) {
            true => c.nft().read(&table)?.1,
            false => None,
        };
        let links = super::link::list(&c.rt).await?;
        let addrs = super::addr::list(&c.rt, None).await?;
        let (routes4, routes6) =
            futures::try_join!(route::list(&c.rt, false), route::list(&c.rt, true))?;
        let mut sysctls = match whole {
            true => sysctl::read_forwarding(&c.ns, &[Family::V4, Family::V6])?,
            false => BTreeMap::new(),
        };
        sysctls.extend(links.iter().flat_map(|l| l.conf.sysctls(&l.name)));
        Ok(Current {
            netns: c.ns.label().to_string(),
            tables,
            table: content,
            links,
            addr_protocol: super::addr::kernel_keeps_protocol(&addrs),
            addrs,
            routes: routes4.into_iter().chain(routes6).collect(),
            sysctls,
        })
    }

    /// What a namespace without the router is assumed to hold, for the dry run that needs no
    /// kernel ([`RouterSpec::plan`]): the internal link (and an adopted link, down), a default
    /// route of each family the spec uses through the internal link, forwarding off, no
    /// nftables table.
    pub(crate) fn assumed(spec: &RouterSpec) -> Current {
        let internal = Link::assumed(1, spec.internal(), true);
        let mut links = vec![internal];
        if let External::Adopt(name) = spec.external() {
            links.push(Link::assumed(2, name, false));
        }
        let mut routes = Vec::new();
        let defaults: [(bool, IpAddr); 2] = [
            (spec.gateway4().is_some(), Ipv4Addr::UNSPECIFIED.into()),
            (spec.gateway6().is_some(), Ipv6Addr::UNSPECIFIED.into()),
        ];
        for (used, zero) in defaults {
            if used {
                let dst = IpNetwork::new(zero, 0).expect("prefix 0 is valid");
                let mut r = route::ours(dst, None, 1);
                r.protocol = 0;
                routes.push(r);
            }
        }
        let mut sysctls = BTreeMap::new();
        for family in [Family::V4, Family::V6] {
            for entry in [ConfEntry::All, ConfEntry::Default] {
                sysctls.insert(SysctlKey::knob(family, entry, Knob::Forwarding), 0);
            }
        }
        sysctls.insert(
            SysctlKey::knob(Family::V4, ConfEntry::All, Knob::AcceptRedirects),
            1,
        );
        for l in &links {
            sysctls.extend(l.conf.sysctls(&l.name));
        }
        Current {
            netns: spec.netns().to_string(),
            links,
            routes,
            sysctls,
            ..Current::default()
        }
    }

    /// The link called `name`.
    pub(crate) fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// A sysctl's value, when it was read and exists.
    pub(crate) fn sysctl(&self, key: &SysctlKey) -> Option<i64> {
        self.sysctls.get(key).copied()
    }

    /// Link names by index, for describing routes.
    pub(crate) fn names(&self) -> HashMap<u32, String> {
        self.links
            .iter()
            .map(|l| (l.index, l.name.clone()))
            .collect()
    }

    /// The comment of `inet` table `table`, when it exists and has one.
    pub(crate) fn comment_of(&self, table: &str) -> Option<&str> {
        self.tables
            .iter()
            .find(|t| t.name == table)
            .and_then(|t| t.comment.as_deref())
    }

    /// Whether `inet` table `table` exists.
    pub(crate) fn has_table(&self, table: &str) -> bool {
        self.tables.iter().any(|t| t.name == table)
    }
}

impl Link {
    /// A link a namespace without the router is assumed to have, for the pure dry run.
    fn assumed(index: u32, name: &str, up: bool) -> Link {
        Link {
            index,
            name: name.to_string(),
            mtu: 1500,
            up,
            kind: None,
            macvlan_mode: None,
            mac: vec![2, 0, 0, 0, 0, index as u8],
            group: 0,
            conf: LinkConf::new_link(),
        }
    }
}
