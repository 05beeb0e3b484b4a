//! Reading from the kernel: a router ([`inspect`]), and the questions a front end asks about a
//! namespace before it can build a spec ([`default_route_link`], [`link_exists`]). Only reads.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use serde::Serialize;
use tracing::info_span;
use tracing::Instrument;

use crate::{
    error::Result,
    kernel::netns::{require_net_admin, Conn, NsHandle},
    kernel::procfs::{ConfEntry, Family, Knob, SysctlKey},
    objects::{
        addr,
        link::{self, group_marker, is_macvlan},
        record::{fingerprint, Stores, JOURNAL_TABLE, MIRROR_TABLE},
        route, sysctl, Current,
    },
    spec::{format_mac, table_name, validate_name, MacvlanMode, Netns},
    Error,
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
    /// Its role, as its record (the role marker) holds it.
    pub role: crate::Role,
    /// The crash record (what the router replaced), as its table's comment and its notes hold
    /// it.
    pub journal: Option<String>,
    /// The external link.
    pub link: Option<LinkState>,
    /// Addresses the router added (marked with its address protocol).
    pub addresses: Vec<IpNetwork>,
    /// Routes the router added (marked with its route protocol), as `ip route` prints them.
    pub routes: Vec<String>,
    /// The default routes it replaced, saved in its journal tables.
    pub saved_routes: Vec<String>,
    /// The sysctls a router sets, with their current values.
    pub sysctls: BTreeMap<String, String>,
    /// The NAT and filter rules, one line per rule, and the redirect map elements.
    pub nat: Vec<String>,
}

/// What router `name` owns in `netns` now, or `None` when it is not configured there.
///
/// ```no_run
/// # fn main() -> egress_core::Result<()> {
/// use egress_core::{blocking, Netns};
/// if let Some(state) = blocking::inspect(&Netns::Name("pod".into()), "egress-1")? {
///     println!("{}", serde_json::to_string_pretty(&state).unwrap());
/// }
/// # Ok(()) }
/// ```
pub async fn inspect(netns: &Netns, name: &str) -> Result<Option<RouterState>> {
    validate_name(name).map_err(|f| Error::invalid_spec(f.field, f.value, f.expected))?;
    require_net_admin("inspect an egress router")?;
    let span = info_span!("inspect", router = %name);
    let name = name.to_string();
    NsHandle::open(netns, "netns")?
        .within(move |ns| async move {
            let mut c = Conn::open(ns)?;
            let now = Current::read(&mut c, &name).await?;
            Ok(state(&now, &name))
        })
        .instrument(span)
        .await
}

/// Router `name` as `now` holds it; `None` without its table or its crash record.
fn state(now: &Current, name: &str) -> Option<RouterState> {
    let table = table_name(name);
    let stores = Stores::of(now, name);
    let record = stores.proven(now)?.clone();
    let names = now.names();
    let marker = group_marker(name);
    let ext = now.link(record.link.as_str());
    let link = ext.map(|l| LinkState {
        name: l.name.clone(),
        index: l.index,
        kind: l.kind.clone(),
        mode: l.macvlan_mode,
        mtu: l.mtu,
        mac: format_mac(&l.mac),
        up: l.up,
        created: l.group == marker && is_macvlan(l),
    });
    // (key as shown, key as read): IPv4's `all/forwarding` is the value of `ip_forward`.
    let mut keys = vec![
        (
            sysctl::forwarding_key(false),
            SysctlKey::knob(Family::V4, ConfEntry::All, Knob::Forwarding),
        ),
        (sysctl::forwarding_key(true), sysctl::forwarding_key(true)),
    ];
    if let Some(entry) = ext.and_then(|l| ConfEntry::link(&l.name)) {
        for (family, knob) in [
            (Family::V4, Knob::ArpNotify),
            (Family::V6, Knob::NdiscNotify),
        ] {
            let key = SysctlKey::knob(family, entry.clone(), knob);
            keys.push((key.clone(), key));
        }
    }
    let sysctls = keys
        .iter()
        .filter_map(|(shown, read)| Some((shown.to_string(), now.sysctl(read)?.to_string())))
        .collect();
    // Each saved route once: its copy in the journal table, else in the mirror.
    let mut saved = BTreeMap::new();
    for t in [MIRROR_TABLE, JOURNAL_TABLE] {
        for r in Stores::copies(now, &record, t) {
            let main = crate::objects::route::in_table(r, crate::objects::route::main_table());
            saved.insert(fingerprint(&main), r.describe(&names));
        }
    }
    let saved_routes = saved.into_values().collect();
    Some(RouterState {
        name: name.to_string(),
        role: crate::objects::role::role_in(now, name),
        journal: record.encode().ok(),
        link,
        addresses: ext
            .map(|l| {
                now.addrs
                    .iter()
                    .filter(|a| a.index == l.index && addr::marked(now, a, name))
                    .map(|a| a.net)
                    .collect()
            })
            .unwrap_or_default(),
        routes: now
            .routes
            .iter()
            .filter(|r| r.is_ours() && r.table == crate::objects::route::main_table())
            .map(|r| r.describe(&names))
            .collect(),
        saved_routes,
        sysctls,
        nat: now.table.as_ref().map(|n| n.lines()).unwrap_or_default(),
        table,
    })
}

/// The name of the link the main table's default route goes out of in `netns` (IPv6 when
/// `ipv6`), or `None` when that table has no default route with an outgoing link. Equivalent
/// to `ip [-6] route show default table main`.
///
/// ```no_run
/// use egress_core::{default_route_link, Netns};
///
/// # async fn uplink() -> egress_core::Result<()> {
/// if let Some(link) = default_route_link(&Netns::Current, false).await? {
///     println!("the default route goes out of {link}");
/// }
/// # Ok(())
/// # }
/// ```
pub async fn default_route_link(netns: &Netns, ipv6: bool) -> Result<Option<String>> {
    require_net_admin("read the default route")?;
    NsHandle::open(netns, "netns")?
        .within(move |ns| async move {
            let h = ns.route_connection()?;
            let routes = route::list(&h, ipv6).await?;
            let links = link::list(&h).await?;
            Ok(routes
                .iter()
                .filter(|r| r.table == route::main_table() && r.is_default())
                .find_map(|r| r.oif)
                .and_then(|oif| links.iter().find(|l| l.index == oif))
                .map(|l| l.name.clone()))
        })
        .await
}

/// Whether `netns` has a link called `name`. Equivalent to `ip link show dev NAME`.
///
/// ```no_run
/// use egress_core::{link_exists, Netns};
///
/// # async fn parent() -> egress_core::Result<()> {
/// if !link_exists(&Netns::Current, "eth1").await? {
///     eprintln!("no eth1 here to put a macvlan on");
/// }
/// # Ok(())
/// # }
/// ```
pub async fn link_exists(netns: &Netns, name: &str) -> Result<bool> {
    require_net_admin("look up a link")?;
    let name = name.to_string();
    NsHandle::open(netns, "netns")?
        .within(move |ns| async move {
            let h = ns.route_connection()?;
            Ok(link::get(&h, &name).await?.is_some())
        })
        .await
}
