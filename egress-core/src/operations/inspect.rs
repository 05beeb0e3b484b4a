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
    model::{parts::external_link_sysctls, Desired},
    objects::{
        addr,
        link::{self, is_macvlan},
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

/// Router `name` as `now` holds it: its read-back model ([`Desired::read`]) rendered — the
/// crash record, the role, the external link, the egress addresses its link holds, the
/// routes of ours, the saved default routes, the sysctls it sets and its table's rules.
/// `None` without a proven crash record.
fn state(now: &Current, name: &str) -> Option<RouterState> {
    let (model, record) = Desired::read(now, name)?;
    let parts = model.parts();
    let names = now.names();
    let ext = now.link(&parts.external.name);
    let link = ext.map(|l| LinkState {
        name: l.name.clone(),
        index: l.index,
        kind: l.kind.clone(),
        mode: l.macvlan_mode,
        mtu: l.mtu,
        mac: format_mac(&l.mac),
        up: l.up,
        created: parts.external.find(now).is_some_and(|f| f.index == l.index)
            && parts.external.created()
            && is_macvlan(l),
    });
    // (key as shown, key as read): IPv4's `all/forwarding` is the value of `ip_forward`; then
    // the external link's own sysctls a router sets, of both families.
    let mut keys = vec![
        (
            sysctl::forwarding_key(false),
            SysctlKey::knob(Family::V4, ConfEntry::All, Knob::Forwarding),
        ),
        (sysctl::forwarding_key(true), sysctl::forwarding_key(true)),
    ];
    if let Some(l) = ext {
        keys.extend(
            external_link_sysctls(&l.name, (true, true))
                .into_iter()
                .map(|(k, _)| (k.clone(), k)),
        );
    }
    let sysctls = keys
        .iter()
        .filter_map(|(shown, read)| Some((shown.to_string(), now.sysctl(read)?.to_string())))
        .collect();
    // Each saved route once: its copy in the journal table, else in the mirror.
    let mut saved = BTreeMap::new();
    for t in [MIRROR_TABLE, JOURNAL_TABLE] {
        for r in Stores::copies(now, &record, t) {
            saved.insert(
                fingerprint(&route::in_table(r, route::main_table())),
                r.describe(&names),
            );
        }
    }
    // The egress addresses of the model that its link holds, with the router's marker.
    let addresses = ext
        .map(|l| {
            now.addrs
                .iter()
                .filter(|a| {
                    a.index == l.index
                        && parts.sources.contains(&a.net)
                        && addr::marked(now, a, name)
                })
                .map(|a| a.net)
                .collect()
        })
        .unwrap_or_default();
    Some(RouterState {
        name: name.to_string(),
        table: table_name(name),
        role: model.role(),
        journal: record.encode().ok(),
        link,
        addresses,
        routes: now
            .routes
            .iter()
            .filter(|r| r.is_ours() && r.table == route::main_table())
            .map(|r| r.describe(&names))
            .collect(),
        saved_routes: saved.into_values().collect(),
        sysctls,
        nat: now.table.as_ref().map(|n| n.lines()).unwrap_or_default(),
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
