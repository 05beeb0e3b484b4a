//! Routes: the router's own (marked with our route protocol), and the journal copies of the
//! default routes it replaced.

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

use super::{dump, errno};
use crate::error::{is_gone, Error, Result};

/// Route protocol of every route this library adds (`ip route … proto 158`); not listed in
/// iproute2's `rt_protos`, so no routing daemon claims it.
pub const ROUTE_PROTOCOL: u8 = 158;

/// The routing table that keeps copies of the default routes a router replaced, so that a
/// teardown after a crash can restore them (`ip route show table 1701278323`: "egrs").
pub const JOURNAL_TABLE: u32 = 0x6567_7273;

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
        let metric = |r: &Route| {
            let given = r.message.attributes.iter().find_map(|a| match a {
                RouteAttribute::Priority(p) => Some(*p),
                _ => None,
            });
            given.unwrap_or(if r.dst.is_ipv6() { 1024 } else { 0 })
        };
        (self.table, self.dst, self.via, self.oif, self.protocol)
            == (other.table, other.dst, other.via, other.oif, other.protocol)
            && metric(self) == metric(other)
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

/// Default routes of the main table that are not ours: what a router replaces.
pub(crate) fn foreign_defaults(routes: &[Route]) -> Vec<Route> {
    routes
        .iter()
        .filter(|r| r.table == MAIN_TABLE && r.is_default() && !r.is_ours())
        .cloned()
        .collect()
}

/// `ip route add …`: fails with EEXIST when the same route is there.
pub(crate) async fn add(h: &Handle, r: &Route, what: &str) -> Result<()> {
    h.route()
        .add(r.message.clone())
        .execute()
        .await
        .map_err(|e| Error::kernel(format!("ip route add {what}"), errno(&e)))
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
