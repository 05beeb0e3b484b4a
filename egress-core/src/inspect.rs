//! Reading a router back from the kernel: `inspect`, `check` (drift), `ensure` (converge) and
//! `teardown_by_name` (the journal rebuilt from ownership markers).

use std::{collections::BTreeMap, fmt, net::IpAddr};

use ipnetwork::IpNetwork;
use serde::Serialize;

use crate::{
    apply::{open_parent, require_net_admin, transaction},
    error::{Error, Result},
    journal::{names, Conn, Journal, Record, Undo},
    netns::NsHandle,
    ops::{addr, link, nat, route, sysctl},
    plan::nat_rules,
    spec::{router_of_table, table_name, External, MacvlanMode, Netns, RouterSpec},
};

/// The external link as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkState {
    /// Name in the router namespace.
    pub name: String,
    /// Kernel index.
    pub index: u32,
    /// Link kind (`macvlan`), if any.
    pub kind: Option<String>,
    /// Macvlan mode, for a macvlan.
    pub mode: Option<MacvlanMode>,
    /// MTU.
    pub mtu: u32,
    /// MAC address.
    pub mac: String,
    /// Administratively up.
    pub up: bool,
    /// Created by the router (carries its group marker), as opposed to adopted.
    pub created: bool,
}

/// Everything a router owns in its namespace, read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouterState {
    /// The router's name.
    pub name: String,
    /// Its nftables table (family `inet`).
    pub table: String,
    /// The crash journal kept in the table's comment.
    pub journal: Option<String>,
    /// The external link.
    pub link: Option<LinkState>,
    /// Addresses the router added (marked with its address protocol).
    pub addresses: Vec<IpNetwork>,
    /// Routes the router added (marked with its route protocol), as `ip route` prints them.
    pub routes: Vec<String>,
    /// The default routes it replaced, saved in its journal table.
    pub saved_routes: Vec<String>,
    /// The sysctls a router sets, with their current values.
    pub sysctls: BTreeMap<String, String>,
    /// The NAT and filter rules, one line per rule, and the redirect map elements.
    pub nat: Vec<String>,
}

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
        }
    }
}

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnsureAction {
    /// Nothing was configured: the router was applied.
    Created,
    /// The kernel already matched the spec: nothing changed.
    Unchanged,
    /// The kernel had drifted: the router was rebuilt (teardown by name, then apply).
    Repaired,
}

/// The result of [`ensure`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnsureOutcome {
    /// What was done.
    pub action: EnsureAction,
    /// The drift found before (empty when unchanged; `RouterMissing` when created).
    pub drift: Vec<Drift>,
}

impl EnsureOutcome {
    /// Whether the kernel was changed.
    pub fn changed(&self) -> bool {
        self.action != EnsureAction::Unchanged
    }
}

struct Snapshot {
    record: Option<Record>,
    table_found: bool,
    other_router: Option<String>,
    links: Vec<link::Link>,
    addrs: Vec<addr::Addr>,
    routes: Vec<route::Route>,
}

async fn snapshot(c: &mut Conn, name: &str) -> Result<Snapshot> {
    let table = table_name(name);
    let mut record = None;
    let mut table_found = false;
    let mut other_router = None;
    for t in c.nft.tables()? {
        if t.name == table {
            table_found = true;
            record = t.comment.as_deref().and_then(Record::decode);
        } else if let Some(other) = router_of_table(&t.name) {
            other_router = Some(other);
        }
    }
    let links = link::list(&c.rt).await?;
    let addrs = addr::list(&c.rt, None).await?;
    let mut routes = route::list(&c.rt, false).await?;
    routes.extend(route::list(&c.rt, true).await?);
    Ok(Snapshot {
        record,
        table_found,
        other_router,
        links,
        addrs,
        routes,
    })
}

impl Snapshot {
    /// The external link: the macvlan carrying our marker, or the adopted link the journal names.
    fn external(&self, name: &str) -> Option<(&link::Link, bool)> {
        let marker = link::group_marker(name);
        let created = self
            .links
            .iter()
            .find(|l| l.group == marker && link::is_macvlan(l));
        if let Some(l) = created {
            return Some((l, true));
        }
        let rec = self.record.as_ref()?;
        self.links
            .iter()
            .find(|l| l.name == rec.link)
            .map(|l| (l, false))
    }

    fn journal_copies(&self) -> impl Iterator<Item = &route::Route> {
        self.routes
            .iter()
            .filter(|r| r.table == route::JOURNAL_TABLE)
    }
}

/// Rebuilds the undo journal of router `name` from the kernel (in apply order).
///
/// Touches only what carries a marker: the table `egress_<name>`, the macvlan with the router's
/// group, addresses and routes with the library's protocol numbers (and only when no *other*
/// router owns the namespace), and the sysctls the journal recorded.
fn rebuild(s: &Snapshot, name: &str) -> Journal {
    let mut j = Journal::default();
    let names = names(&s.links);
    if s.table_found {
        j.push(Undo::DeleteTable {
            table: table_name(name),
        });
    }
    let sweep = s.other_router.is_none();
    if sweep {
        for copy in s.journal_copies() {
            j.push(Undo::DeleteRoute {
                route: copy.clone(),
                what: copy.describe(&names),
            });
        }
    }
    match s.external(name) {
        Some((l, true)) => j.push(Undo::DeleteLink {
            index: l.index,
            name: l.name.clone(),
        }),
        Some((l, false)) if sweep && !s.record.as_ref().is_some_and(|r| r.was_up) => {
            j.push(Undo::SetLinkDown {
                index: l.index,
                name: l.name.clone(),
            })
        }
        _ => {}
    }
    if sweep {
        for a in s.addrs.iter().filter(|a| a.ours) {
            j.push(Undo::DeleteAddress {
                index: a.index,
                link: names.get(&a.index).cloned().unwrap_or_default(),
                net: a.net,
            });
        }
        for copy in s.journal_copies() {
            j.push(Undo::RestoreRoute {
                route: route::in_table(copy, route::main_table()),
                what: copy.describe(&names),
            });
        }
        for r in s
            .routes
            .iter()
            .filter(|r| r.is_ours() && r.table != route::JOURNAL_TABLE)
        {
            j.push(Undo::DeleteRoute {
                route: r.clone(),
                what: r.describe(&names),
            });
        }
    }
    if let Some(rec) = &s.record {
        if !rec.restore.is_empty() {
            j.push(Undo::RestoreSysctls {
                writes: rec.restore.clone(),
            });
        }
    }
    j
}

/// Tears down router `name` in namespace `netns` from what the kernel holds, after the process
/// that applied it is gone. Idempotent: a router that is not there is success (returns an empty
/// list). Never touches objects without its markers. Returns what was undone.
///
/// ```no_run
/// # fn main() -> egress_core::Result<()> {
/// use egress_core::{blocking, Netns};
/// blocking::teardown_by_name(&Netns::Name("pod".into()), "egress-1")?;
/// # Ok(()) }
/// ```
pub async fn teardown_by_name(netns: &Netns, name: &str) -> Result<Vec<String>> {
    require_net_admin("tear down an egress router")?;
    let name = name.to_string();
    NsHandle::open(netns, "netns")?
        .within(move |ns| teardown_by_name_in(ns, name))
        .await
}

async fn teardown_by_name_in(ns: NsHandle, name: String) -> Result<Vec<String>> {
    let name = name.as_str();
    let mut c = Conn::open(ns)?;
    let s = snapshot(&mut c, name).await?;
    let journal = rebuild(&s, name);
    let undone: Vec<String> = journal.0.iter().rev().map(Undo::describe).collect();
    let failures = journal.unwind(&mut c).await;
    if failures.is_empty() {
        Ok(undone)
    } else {
        Err(Error::Teardown {
            failures: failures.into_iter().map(|(_, e)| e).collect(),
        })
    }
}

/// What router `name` owns in `netns` now, or `None` when it is not configured there.
pub async fn inspect(netns: &Netns, name: &str) -> Result<Option<RouterState>> {
    require_net_admin("inspect an egress router")?;
    let name = name.to_string();
    NsHandle::open(netns, "netns")?
        .within(move |ns| inspect_in(ns, name))
        .await
}

async fn inspect_in(ns: NsHandle, name: String) -> Result<Option<RouterState>> {
    let name = name.as_str();
    let mut c = Conn::open(ns)?;
    let s = snapshot(&mut c, name).await?;
    if !s.table_found {
        return Ok(None);
    }
    let names = names(&s.links);
    let table = table_name(name);
    let ext = s.external(name);
    let link = ext.map(|(l, created)| LinkState {
        name: l.name.clone(),
        index: l.index,
        kind: l.kind.clone(),
        mode: l.macvlan_mode,
        mtu: l.mtu,
        mac: crate::spec::format_mac(&l.mac),
        up: l.up,
        created,
    });
    let keys = sysctl_keys(ext.map(|(l, _)| l.name.as_str()));
    let values = sysctl::read_many(&c.ns, &keys)?;
    let sysctls = keys
        .iter()
        .zip(values)
        .filter_map(|(k, v)| Some((sysctl::dotted(k), v?)))
        .collect();
    let nat = c.nft.read(&table)?.map(|n| n.lines()).unwrap_or_default();
    Ok(Some(RouterState {
        name: name.to_string(),
        journal: s.record.as_ref().and_then(|r| r.encode().ok()),
        table,
        link,
        addresses: s.addrs.iter().filter(|a| a.ours).map(|a| a.net).collect(),
        routes: s
            .routes
            .iter()
            .filter(|r| r.is_ours())
            .map(|r| r.describe(&names))
            .collect(),
        saved_routes: s.journal_copies().map(|r| r.describe(&names)).collect(),
        sysctls,
        nat,
    }))
}

fn sysctl_keys(link: Option<&str>) -> Vec<String> {
    let mut keys = vec![
        "net/ipv4/ip_forward".to_string(),
        "net/ipv6/conf/all/forwarding".to_string(),
    ];
    if let Some(l) = link {
        keys.push(format!("net/ipv4/conf/{l}/arp_notify"));
        keys.push(format!("net/ipv6/conf/{l}/ndisc_notify"));
    }
    keys
}

/// How the kernel differs from `spec`; changes nothing. Empty = configured exactly.
pub async fn check(spec: &RouterSpec) -> Result<Vec<Drift>> {
    require_net_admin("check an egress router")?;
    let spec = spec.clone();
    NsHandle::open(&spec.netns, "netns")?
        .within(move |ns| async move { check_with(&spec, &mut Conn::open(ns)?).await })
        .await
}

async fn check_with(spec: &RouterSpec, c: &mut Conn) -> Result<Vec<Drift>> {
    let table = spec.table_name();
    let s = snapshot(c, &spec.name).await?;
    if !s.table_found {
        return Ok(vec![Drift::RouterMissing { table }]);
    }
    let mut drift = Vec::new();
    let names = names(&s.links);
    let link_name = spec.external.link_name().to_string();
    let ext = s
        .links
        .iter()
        .find(|l| l.name == link_name)
        .filter(|l| match &spec.external {
            External::Macvlan(_) => l.group == link::group_marker(&spec.name),
            External::Adopt(_) => true,
        });
    let Some(ext) = ext else {
        drift.push(Drift::LinkMissing { link: link_name });
        return Ok(drift);
    };
    if !ext.up {
        drift.push(Drift::LinkDown {
            link: link_name.clone(),
        });
    }
    if let External::Macvlan(m) = &spec.external {
        let mut changed = |field, expected: String, actual: String| {
            if expected != actual {
                drift.push(Drift::LinkChanged {
                    link: link_name.clone(),
                    field,
                    expected,
                    actual,
                });
            }
        };
        changed(
            "mode",
            m.mode.as_str().into(),
            ext.macvlan_mode.map_or("?", |m| m.as_str()).into(),
        );
        if let Some(mtu) = m.mtu {
            changed("mtu", mtu.to_string(), ext.mtu.to_string());
        }
        if let Some(mac) = m.mac {
            changed(
                "mac",
                crate::spec::format_mac(&mac),
                crate::spec::format_mac(&ext.mac),
            );
        }
    }
    for src in &spec.sources {
        let present = s
            .addrs
            .iter()
            .any(|a| a.index == ext.index && a.net == *src);
        if !present {
            drift.push(Drift::AddressMissing {
                link: link_name.clone(),
                address: *src,
            });
        }
    }
    let internal = s.links.iter().find(|l| l.name == spec.internal);
    let mut expected: Vec<route::Route> = Vec::new();
    let gateways: Vec<IpAddr> = spec
        .gateway4
        .map(IpAddr::from)
        .into_iter()
        .chain(spec.gateway6.map(IpAddr::from))
        .collect();
    for g in &gateways {
        expected.push(route::ours(IpNetwork::from(*g), None, ext.index));
        let zero = IpNetwork::new(
            if g.is_ipv4() {
                IpAddr::from([0u8; 4])
            } else {
                IpAddr::from([0u16; 8])
            },
            0,
        )
        .expect("prefix 0 is valid");
        expected.push(route::ours(zero, Some(*g), ext.index));
    }
    for k in &spec.kept_routes {
        expected.push(route::ours(k.to, k.via, internal.map_or(0, |l| l.index)));
    }
    for e in &expected {
        let present = s.routes.iter().any(|r| {
            r.is_ours()
                && r.table == route::main_table()
                && r.dst == e.dst
                && r.via == e.via
                && r.oif == e.oif
        });
        if !present {
            drift.push(Drift::RouteMissing {
                route: e.describe(&names),
            });
        }
    }
    for r in route::foreign_defaults(&s.routes) {
        let family_in_use = if r.dst.is_ipv4() {
            spec.gateway4.is_some()
        } else {
            spec.gateway6.is_some()
        };
        if family_in_use {
            drift.push(Drift::ForeignDefaultRoute {
                route: r.describe(&names),
            });
        }
    }
    let mut want: Vec<(String, &str)> = Vec::new();
    if spec.gateway4.is_some() {
        want.push(("net/ipv4/ip_forward".into(), "1"));
        want.push((format!("net/ipv4/conf/{link_name}/arp_notify"), "1"));
    }
    if spec.gateway6.is_some() {
        want.push(("net/ipv6/conf/all/forwarding".into(), "1"));
        want.push((format!("net/ipv6/conf/{link_name}/ndisc_notify"), "1"));
    }
    let keys: Vec<String> = want.iter().map(|(k, _)| k.clone()).collect();
    for ((k, v), actual) in want.iter().zip(sysctl::read_many(&c.ns, &keys)?) {
        let actual = actual.unwrap_or_else(|| "(missing)".into());
        if actual != *v {
            drift.push(Drift::SysctlChanged {
                key: sysctl::dotted(k),
                expected: v.to_string(),
                actual,
            });
        }
    }
    let rules = nat_rules(spec);
    let want = rules.expected();
    let have = c.nft.read(&table)?;
    match have {
        Some(have) if have == want => {}
        have => drift.push(Drift::NatChanged {
            table,
            detail: nat::describe_difference(&want, have.as_ref()),
        }),
    }
    Ok(drift)
}

/// Converges the kernel to `spec` and says what it did: not configured → apply (after sweeping
/// whatever its markers still find, e.g. when only its table was deleted); configured
/// exactly → nothing; only the NAT ruleset drifted → the ruleset is reinstalled in one batch
/// (the journal in the table is kept); anything else drifted → teardown by name, then apply.
/// Either way it ends in the same state as a fresh apply.
///
/// The router is left in place (there is no handle to drop); remove it with
/// [`teardown_by_name`].
pub async fn ensure(spec: &RouterSpec) -> Result<EnsureOutcome> {
    require_net_admin("ensure an egress router")?;
    let parent = open_parent(spec)?;
    let spec = spec.clone();
    NsHandle::open(&spec.netns, "netns")?
        .within(move |ns| ensure_in(ns, spec, parent))
        .await
}

async fn ensure_in(
    ns: NsHandle,
    spec: RouterSpec,
    parent: Option<NsHandle>,
) -> Result<EnsureOutcome> {
    let spec = &spec;
    let mut c = Conn::open(ns.clone())?;
    // Converges by tearing down and applying right here (this thread is inside the router's
    // namespace), with the namespaces the caller's thread opened.
    let teardown = || teardown_by_name_in(ns.clone(), spec.name.clone());
    let apply = || transaction(spec.clone(), ns.clone(), parent.clone());
    let drift = check_with(spec, &mut c).await?;
    let action = if drift.is_empty() {
        EnsureAction::Unchanged
    } else if drift.iter().all(|d| matches!(d, Drift::NatChanged { .. })) {
        c.nft.reinstall(&nat_rules(spec))?;
        EnsureAction::Repaired
    } else if matches!(drift.as_slice(), [Drift::RouterMissing { .. }]) {
        // No table, yet what else carries the router's markers may be left (a flushed
        // ruleset): swept first, or apply would find it in the way.
        let swept = teardown().await?;
        apply().await?;
        match swept.is_empty() {
            true => EnsureAction::Created,
            false => EnsureAction::Repaired,
        }
    } else {
        teardown().await?;
        apply().await?;
        EnsureAction::Repaired
    };
    Ok(EnsureOutcome { action, drift })
}
