//! Routes: the router's own (marked with our route protocol) and the copies of the default
//! routes it replaced; the [`OurRoute`] object (a gateway host route, a kept route) and
//! [`DefaultRoute`] (the router's default route, and no other in the main table).

use std::{collections::HashMap, net::IpAddr};

use ipnetwork::IpNetwork;
use netlink_packet_route::{
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
    AddressFamily,
};
use rtnetlink::Handle;

use super::{
    addr::Addr,
    change::{boxed, At, Change, Done, Kernel, Phase, Sent},
    link::LinkRef,
    record::{JOURNAL_TABLE, MIRROR_TABLE},
    Current, Inverse, KernelObject, Step,
};
use crate::{
    drift::Drift,
    error::{is_gone, Error, Result},
    kernel::netlink::{dump, errno},
};

/// Route protocol of every route this library adds (`ip route … proto 158`); not listed in
/// iproute2's `rt_protos`, so no routing daemon claims it.
pub const ROUTE_PROTOCOL: u8 = 158;

const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// The fields of a route the library reasons about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub dst: IpNetwork,
    pub via: Option<IpAddr>,
    pub oif: Option<u32>,
    pub table: u32,
    pub protocol: u8,
    pub kind: RouteType,
    pub message: RouteMessage,
}

impl Route {
    pub(crate) fn from_message(m: RouteMessage) -> Option<Self> {
        let v6 = m.header.address_family == AddressFamily::Inet6;
        let mut dst = None;
        let mut via = None;
        let mut oif = None;
        let mut table = u32::from(m.header.table);
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(d) => dst = ip_of(d),
                RouteAttribute::Gateway(g) => via = ip_of(g),
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Table(t) => table = *t,
                _ => {}
            }
        }
        let zero: IpAddr = if v6 {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        };
        let dst = IpNetwork::new(dst.unwrap_or(zero), m.header.destination_prefix_length).ok()?;
        Some(Route {
            dst,
            via,
            oif,
            table,
            protocol: u8::from(m.header.protocol),
            kind: m.header.kind,
            message: m,
        })
    }

    pub(crate) fn is_default(&self) -> bool {
        self.dst.prefix() == 0 && self.kind == RouteType::Unicast
    }

    pub(crate) fn is_ours(&self) -> bool {
        self.protocol == ROUTE_PROTOCOL
    }

    /// Whether `other` is the same route: table, destination, next hop, output link,
    /// protocol and metric (absent: the kernel's default, 0 for IPv4 and 1024 for IPv6).
    pub(crate) fn same_as(&self, other: &Route) -> bool {
        (self.table, self.dst, self.via, self.oif, self.protocol)
            == (other.table, other.dst, other.via, other.oif, other.protocol)
            && self.metric() == other.metric()
    }

    /// The metric (absent: the kernel's default, 0 for IPv4 and 1024 for IPv6).
    pub(crate) fn metric(&self) -> u32 {
        let given = self.message.attributes.iter().find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        });
        given.unwrap_or(if self.dst.is_ipv6() { 1024 } else { 0 })
    }

    /// `default via 192.0.2.1 dev eth0 proto 158 table 1701278323`, close to `ip route`.
    pub(crate) fn describe(&self, names: &HashMap<u32, String>) -> String {
        let dst = if self.dst.prefix() == 0 {
            "default".to_string()
        } else {
            self.dst.to_string()
        };
        let mut s = dst;
        if let Some(v) = self.via {
            s += &format!(" via {v}");
        }
        if let Some(i) = self.oif {
            match names.get(&i) {
                Some(n) => s += &format!(" dev {n}"),
                None => s += &format!(" dev #{i}"),
            }
        }
        if self.protocol == ROUTE_PROTOCOL {
            s += &format!(" proto {ROUTE_PROTOCOL}");
        }
        if self.table != MAIN_TABLE {
            s += &format!(" table {}", self.table);
        }
        s
    }
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some((*v).into()),
        RouteAddress::Inet6(v) => Some((*v).into()),
        _ => None,
    }
}

/// A route of ours in the main table: `ip route add DST [via VIA] dev OIF proto 158`.
pub(crate) fn ours(dst: IpNetwork, via: Option<IpAddr>, oif: u32) -> Route {
    let mut m = RouteMessage::default();
    m.header.address_family = if dst.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.destination_prefix_length = dst.prefix();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::from(ROUTE_PROTOCOL);
    m.header.scope = if via.is_none() && dst.prefix() != 0 {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    m.header.kind = RouteType::Unicast;
    if dst.prefix() != 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst.ip())));
    }
    if let Some(v) = via {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(v)));
    }
    m.attributes.push(RouteAttribute::Oif(oif));
    Route::from_message(m).expect("a well-formed route")
}

/// The same route in another table, with only the attributes that describe it (no cache info,
/// no expiry), so it can be added back exactly.
pub(crate) fn in_table(r: &Route, table: u32) -> Route {
    let mut m = RouteMessage::default();
    m.header = r.message.header.clone();
    m.header.flags = Default::default();
    m.header.table = if table > 255 {
        RouteHeader::RT_TABLE_UNSPEC
    } else {
        table as u8
    };
    m.attributes = r
        .message
        .attributes
        .iter()
        .filter(|a| {
            matches!(
                a,
                RouteAttribute::Destination(_)
                    | RouteAttribute::Source(_)
                    | RouteAttribute::Gateway(_)
                    | RouteAttribute::Via(_)
                    | RouteAttribute::Oif(_)
                    | RouteAttribute::Priority(_)
                    | RouteAttribute::PrefSource(_)
                    | RouteAttribute::Metrics(_)
                    | RouteAttribute::MultiPath(_)
                    | RouteAttribute::Preference(_)
                    | RouteAttribute::Realm(_)
                    | RouteAttribute::EncapType(_)
                    | RouteAttribute::Encap(_)
                    | RouteAttribute::NhId(_)
            )
        })
        .cloned()
        .collect();
    m.attributes.push(RouteAttribute::Table(table));
    Route::from_message(m).expect("a well-formed route")
}

/// Every route of one family in every table (`ip [-6] route show table all`).
pub(crate) async fn list(h: &Handle, v6: bool) -> Result<Vec<Route>> {
    let op = if v6 {
        "ip -6 route show table all"
    } else {
        "ip route show table all"
    };
    let msgs = dump(op, || {
        let mut m = RouteMessage::default();
        m.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        h.route().get(m).execute()
    })
    .await?;
    Ok(msgs.into_iter().filter_map(Route::from_message).collect())
}

/// `ip route add …`: fails with EEXIST when the same route is there.
pub(crate) async fn add(h: &Handle, r: &Route, what: &str) -> Result<()> {
    h.route()
        .add(r.message.clone())
        .execute()
        .await
        .map_err(|e| Error::kernel(format!("ip route add {what}"), errno(&e)))
}

/// `ip route replace …`: the route with `r`'s destination, table and metric becomes `r`.
pub(crate) async fn replace(h: &Handle, r: &Route, what: &str) -> Result<()> {
    h.route()
        .add(r.message.clone())
        .replace()
        .execute()
        .await
        .map_err(|e| Error::kernel(format!("ip route replace {what}"), errno(&e)))
}

/// `ip route del …`; Ok(false) when it was already gone.
pub(crate) async fn delete(h: &Handle, r: &Route, what: &str) -> Result<bool> {
    let mut m = in_table(r, r.table).message;
    m.header.protocol = r.message.header.protocol;
    match h.route().del(m).execute().await {
        Ok(()) => Ok(true),
        Err(e) if is_gone(errno(&e)) => Ok(false),
        Err(e) => Err(Error::kernel(format!("ip route del {what}"), errno(&e))),
    }
}

pub(crate) fn main_table() -> u32 {
    MAIN_TABLE
}

/// `ip route add DST [via VIA] dev LINK proto 158`.
pub(crate) fn add_command(dst: IpNetwork, via: Option<IpAddr>, link: &str) -> String {
    let mut s = format!("ip route add {dst}");
    if let Some(v) = via {
        s += &format!(" via {v}");
    }
    s + &format!(" dev {link} proto {ROUTE_PROTOCOL}")
}

/// The default destination of a family.
pub(crate) fn default_dst(ipv6: bool) -> IpNetwork {
    let zero: IpAddr = if ipv6 {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    };
    IpNetwork::new(zero, 0).expect("prefix 0 is valid")
}

/// Whether `now` holds route `dst [via VIA]` of ours in the main table through link `oif`.
fn present(now: &Current, dst: IpNetwork, via: Option<IpAddr>, oif: u32) -> bool {
    now.routes.iter().any(|r| {
        r.is_ours() && r.table == MAIN_TABLE && r.dst == dst && r.via == via && r.oif == Some(oif)
    })
}

/// A route of the router in the main table: a gateway's host route on the external link, or a
/// route kept through the internal link.
#[derive(Debug, Clone)]
pub(crate) struct OurRoute {
    /// Destination.
    pub dst: IpNetwork,
    /// Next hop, if any.
    pub via: Option<IpAddr>,
    /// Output link.
    pub link: LinkRef,
}

impl KernelObject for OurRoute {
    fn render(&self) -> String {
        add_command(self.dst, self.via, &self.link.name)
    }

    fn compare(&self, now: &Current, drift: &mut Vec<Drift>) {
        // A missing created link is the link's drift; a missing internal link leaves the route
        // missing.
        let missing = match self.link.find(now) {
            Some(l) => !present(now, self.dst, self.via, l.index),
            None => !self.link.created(),
        };
        if missing {
            drift.push(Drift::RouteMissing {
                route: describe_ours(self.dst, self.via, &self.link.name),
            });
        }
    }

    fn repair(&self, now: &Current, steps: &mut Vec<Step>) -> Result<()> {
        let here = self
            .link
            .find(now)
            .is_some_and(|l| present(now, self.dst, self.via, l.index));
        if !here {
            steps.push(Step::AddRoute {
                dst: self.dst,
                via: self.via,
                link: self.link.name.clone(),
            });
        }
        Ok(())
    }

    /// The route deleted, when the main table holds it (through the link of that name).
    fn remove(&self, now: &Current, inverse: &mut Inverse<'_>) {
        delete_ours(now, inverse, self.dst, self.via, &self.link.name);
    }
}

/// The router's default route of one family through the gateway, and no other default route
/// of that family in the main table: the ones found are saved (to be restored at teardown)
/// and replaced.
#[derive(Debug, Clone)]
pub(crate) struct DefaultRoute {
    /// The gateway.
    pub via: IpAddr,
    /// The external link.
    pub link: LinkRef,
    /// Held (active) or withdrawn (standby: no default route at all, the ones replaced saved).
    pub held: bool,
}

impl DefaultRoute {
    fn ours_present(&self, now: &Current) -> Option<bool> {
        let l = self.link.find(now)?;
        Some(present(
            now,
            default_dst(self.via.is_ipv6()),
            Some(self.via),
            l.index,
        ))
    }

    fn foreign<'a>(&self, now: &'a Current) -> impl Iterator<Item = &'a Route> + 'a {
        let v6 = self.via.is_ipv6();
        now.routes
            .iter()
            .filter(move |r| r.table == MAIN_TABLE && r.is_default() && !r.is_ours())
            .filter(move |r| r.dst.is_ipv6() == v6)
    }
}

impl KernelObject for DefaultRoute {
    fn render(&self) -> String {
        match self.held {
            true => Step::ReplaceDefaultRoute {
                via: self.via,
                link: self.link.name.clone(),
            }
            .to_string(),
            false => format!(
                "(no default route while standby; the namespace's own are saved in table {})",
                super::record::JOURNAL_TABLE
            ),
        }
    }

    fn compare(&self, now: &Current, drift: &mut Vec<Drift>) {
        let ours = describe_ours(
            default_dst(self.via.is_ipv6()),
            Some(self.via),
            &self.link.name,
        );
        match (self.held, self.ours_present(now)) {
            (true, Some(false)) => drift.push(Drift::RouteMissing { route: ours }),
            (false, Some(true)) => drift.push(Drift::IdentityHeld { what: ours }),
            _ => {}
        }
        let names = now.names();
        for r in self.foreign(now) {
            drift.push(Drift::ForeignDefaultRoute {
                route: r.describe(&names),
            });
        }
    }

    fn repair(&self, now: &Current, steps: &mut Vec<Step>) -> Result<()> {
        let ipv6 = self.via.is_ipv6();
        if to_save(now, &self.link, ipv6).next().is_some() {
            steps.push(Step::SaveDefaultRoutes { ipv6 });
        }
        let foreign = self.foreign(now).next().is_some();
        let ours = self.ours_present(now) == Some(true);
        if self.held && (!ours || foreign) {
            steps.push(Step::ReplaceDefaultRoute {
                via: self.via,
                link: self.link.name.clone(),
            });
        }
        if !self.held && (ours || foreign) {
            steps.push(Step::WithdrawDefaultRoute {
                via: self.via,
                link: self.link.name.clone(),
            });
        }
        Ok(())
    }

    /// The router's default route deleted (what it replaced is the crash record's to put
    /// back).
    fn remove(&self, now: &Current, inverse: &mut Inverse<'_>) {
        let dst = default_dst(self.via.is_ipv6());
        delete_ours(now, inverse, dst, Some(self.via), &self.link.name);
    }
}

/// Deletes the routes of ours in the main table to `dst` via `via` through link `link` (by
/// name; a route whose link is gone, or that names none, where no link is called so).
fn delete_ours(
    now: &Current,
    inverse: &mut Inverse<'_>,
    dst: IpNetwork,
    via: Option<IpAddr>,
    link: &str,
) {
    let oif = now.link(link).map(|l| l.index);
    let names = now.names();
    for r in now.routes.iter().filter(|r| {
        r.is_ours() && r.table == MAIN_TABLE && r.dst == dst && r.via == via && r.oif == oif
    }) {
        inverse.undo(boxed(DeleteRoute {
            route: r.clone(),
            what: r.describe(&names),
        }));
    }
}

/// The default routes of a family that replacing them would lose: in the main table, not the
/// router's, and not through the router's external link `ext` (a route through the router's
/// own link is a copy of the router's route, and could not come back without it).
pub(crate) fn to_save<'a>(
    now: &'a Current,
    ext: &LinkRef,
    ipv6: bool,
) -> impl Iterator<Item = &'a Route> + 'a {
    let ext = ext.find(now).map(|l| l.index);
    now.routes.iter().filter(move |r| {
        r.table == MAIN_TABLE
            && r.is_default()
            && !r.is_ours()
            && r.dst.is_ipv6() == ipv6
            && (ext.is_none() || r.oif != ext)
    })
}

/// A route of ours as `ip route` prints it.
fn describe_ours(dst: IpNetwork, via: Option<IpAddr>, link: &str) -> String {
    let mut s = if dst.prefix() == 0 {
        "default".to_string()
    } else {
        dst.to_string()
    };
    if let Some(v) = via {
        s += &format!(" via {v}");
    }
    s + &format!(" dev {link} proto {ROUTE_PROTOCOL}")
}

/// `ip route add …`: a route of ours (or a note, a copy of a saved route); undone by deleting it.
#[derive(Debug)]
pub(crate) struct AddRoute {
    pub route: Route,
    /// How it is named in messages.
    pub what: String,
}

impl Change for AddRoute {
    fn describe(&self) -> String {
        format!("ip route add {}", self.what)
    }

    fn remains(&self) -> String {
        format!("route {} not added", self.what)
    }

    fn pipelined(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            add(&k.c.rt, &self.route, &self.what).await?;
            Ok(Done::Nothing)
        })
    }

    fn undo(&self, _: &Done) -> Option<Box<dyn Change>> {
        Some(boxed(DeleteRoute {
            route: self.route.clone(),
            what: self.what.clone(),
        }))
    }
}

/// `ip route del …`: a route the router replaces (a default route, saved before), an older
/// note, or (as an undo, or at teardown) one of the router's; undone by putting it back.
#[derive(Debug)]
pub(crate) struct DeleteRoute {
    pub route: Route,
    /// How it is named in messages.
    pub what: String,
}

impl Change for DeleteRoute {
    fn describe(&self) -> String {
        format!("ip route del {}", self.what)
    }

    fn remains(&self) -> String {
        format!("route {}", self.what)
    }

    fn pipelined(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            delete(&k.c.rt, &self.route, &self.what).await?;
            Ok(Done::Nothing)
        })
    }

    fn undo(&self, _: &Done) -> Option<Box<dyn Change>> {
        Some(boxed(RestoreRoute {
            route: in_table(&self.route, self.route.table),
            what: self.what.clone(),
        }))
    }

    /// A copy of a saved route (or a note) is part of the crash record: it goes last.
    fn phase(&self) -> Phase {
        match self.route.table == JOURNAL_TABLE || self.route.table == MIRROR_TABLE {
            true => Phase::Record,
            false => Phase::Rest,
        }
    }

    fn goes_with_link(&self, index: u32) -> bool {
        self.route.oif == Some(index) && self.route.table == MAIN_TABLE
    }

    fn still_in(&self, routes: &[Route], _: &[Addr]) -> Option<bool> {
        Some(routes.iter().any(|r| r.same_as(&self.route)))
    }
}

/// `ip route add …` of a route that was there before (a replaced default route): "already
/// there" is success when it is this route, not another one in its place.
#[derive(Debug)]
pub(crate) struct RestoreRoute {
    pub route: Route,
    /// How it is named in messages.
    pub what: String,
}

impl Change for RestoreRoute {
    fn describe(&self) -> String {
        format!("ip route add {}", self.what)
    }

    fn remains(&self) -> String {
        format!("route {} not restored", self.what)
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            match add(&k.c.rt, &self.route, &self.what).await {
                Err(e) if e.errno() == Some(libc::EEXIST) => {
                    let routes = list(&k.c.rt, self.route.dst.is_ipv6()).await?;
                    match routes.iter().any(|r| r.same_as(&self.route)) {
                        true => Ok(Done::Nothing),
                        false => Err(e),
                    }
                }
                r => r.map(|()| Done::Nothing),
            }
        })
    }
}

impl Step {
    /// `ip route add DST [via VIA] dev LINK proto 158`.
    pub(crate) fn add_route_changes(
        at: &At<'_>,
        dst: IpNetwork,
        via: Option<IpAddr>,
        link: &str,
    ) -> Result<Vec<Box<dyn Change>>> {
        let route = ours(dst, via, at.index_of(link)?);
        let what = route.describe(&at.names());
        Ok(vec![boxed(AddRoute { route, what })])
    }

    /// The namespace's default routes of `via`'s family deleted (the router saved them
    /// before), and the router's added.
    pub(crate) fn replace_default_changes(
        at: &At<'_>,
        via: IpAddr,
        link: &str,
    ) -> Result<Vec<Box<dyn Change>>> {
        let oif = at.index_of(link)?;
        let names = at.names();
        let mut changes: Vec<Box<dyn Change>> = at
            .now
            .routes
            .iter()
            .filter(|r| r.table == MAIN_TABLE && r.is_default())
            .filter(|r| !r.is_ours() && r.dst.is_ipv6() == via.is_ipv6())
            .map(|r| {
                boxed(DeleteRoute {
                    route: r.clone(),
                    what: r.describe(&names),
                })
            })
            .collect();
        let ours = ours(default_dst(via.is_ipv6()), Some(via), oif);
        if !at.now.routes.iter().any(|r| r.same_as(&ours)) {
            let what = ours.describe(&names);
            changes.push(boxed(AddRoute { route: ours, what }));
        }
        Ok(changes)
    }

    /// The router's default route of `via`'s family deleted, and any other of that family
    /// (saved before): a standby has none. The routes an earlier step's withdrawal of the
    /// link's last IPv4 address takes along are gone already (that withdrawal's undo puts
    /// them back).
    pub(crate) fn withdraw_default_changes(
        at: &At<'_>,
        via: IpAddr,
        link: &str,
    ) -> Result<Vec<Box<dyn Change>>> {
        let oif = at.index_of(link)?;
        let names = at.names();
        let ours = ours(default_dst(via.is_ipv6()), Some(via), oif);
        let lost = crate::objects::addr::lost_with_withdrawals(at);
        Ok(at
            .now
            .routes
            .iter()
            .filter(|r| r.table == MAIN_TABLE && r.is_default())
            .filter(|r| r.dst.is_ipv6() == via.is_ipv6())
            .filter(|r| !r.is_ours() || r.same_as(&ours))
            .filter(|r| !lost.iter().any(|l| l.same_as(r)))
            .map(|r| {
                boxed(DeleteRoute {
                    route: r.clone(),
                    what: r.describe(&names),
                })
            })
            .collect())
    }
}
