//! What a router carries: the traffic counters of its ruleset, per redirect, for the fallback and
//! for SNAT, and the connections its namespace tracks. Only reads.

use std::net::IpAddr;

use serde::Serialize;
use tracing::{info_span, Instrument};

use crate::{
    error::{Error, Result},
    kernel::netns::{require_net_admin, Conn, NsHandle},
    kernel::procfs::{self},
    model::desired::Desired,
    objects::{
        current::Current,
        nat::{
            dnat_traffic_rule, fallback_rule, redirect_map, snat_rule, snat_traffic_rule,
            traffic_set, Count, Counters, NatState,
        },
    },
    role::Role,
    spec::{table_name, validate_name, Netns, Protocol},
    Router,
};

/// The traffic of one redirect since the router was applied (its ruleset installed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedirectStats {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Local port on the router.
    pub port: u16,
    /// Destination address.
    pub to: IpAddr,
    /// Destination port.
    pub to_port: u16,
    /// Connections redirected.
    pub connections: u64,
    /// Packets of those connections, both directions.
    pub packets: u64,
    /// Bytes of those connections, both directions.
    pub bytes: u64,
}

/// The traffic sent to the fallback of one family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FallbackStats {
    /// The fallback destination.
    pub to: IpAddr,
    /// Connections sent there.
    pub connections: u64,
    /// Packets of those connections, both directions.
    pub packets: u64,
    /// Bytes of those connections, both directions.
    pub bytes: u64,
}

/// What left through the external link in one family, translated to the egress source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnatStats {
    /// The egress source (SNAT address).
    pub source: IpAddr,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// A router's traffic, read from the kernel: the counters of its ruleset and the number of
/// connections its namespace tracks now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// The router's name.
    pub name: String,
    /// One entry per redirect.
    pub redirects: Vec<RedirectStats>,
    /// One entry per family with a fallback.
    pub fallback: Vec<FallbackStats>,
    /// One entry per family with an egress source.
    pub snat: Vec<SnatStats>,
    /// Connections tracked in the router's namespace now (`nf_conntrack_count`).
    pub conntrack_entries: u64,
}

/// The traffic of router `name` in `netns`, or `None` when it has no table there.
///
/// ```no_run
/// # fn main() -> egress_core::Result<()> {
/// use egress_core::{blocking, Netns};
/// if let Some(stats) = blocking::stats(&Netns::Name("pod".into()), "egress-1")? {
///     for r in &stats.redirects {
///         println!("{}/{}: {} connections", r.protocol, r.port, r.connections);
///     }
/// }
/// # Ok(()) }
/// ```
pub async fn stats(netns: &Netns, name: &str) -> Result<Option<Stats>> {
    validate_name(name).map_err(|f| Error::invalid_spec(f.field, f.value, f.expected))?;
    require_net_admin("read an egress router's counters")?;
    let span = info_span!("stats", router = %name);
    let name = name.to_string();
    NsHandle::open(netns, "netns")?
        .within(move |ns| stats_in(ns, name))
        .instrument(span)
        .await
}

impl Router {
    /// This router's traffic ([`stats`]), in the namespace the handle holds; `None` once it is
    /// gone. A router torn down and applied again by someone else since is
    /// [`Error::StaleHandle`]: its counters are not this handle's router's.
    pub async fn stats(&self) -> Result<Option<Stats>> {
        require_net_admin("read an egress router's counters")?;
        let span = info_span!("stats", router = %self.spec().name());
        let spec = self.spec().clone();
        let identity = self.identity();
        self.ns()
            .within(move |ns| async move {
                let mut c = Conn::open(ns)?;
                let now = Current::read_identity(&mut c, &spec.name).await?;
                identity.check(&now, &spec.name, &Desired::with_role(&spec, Role::Active))?;
                stats_of(c, spec.name)
            })
            .instrument(span)
            .await
    }
}

async fn stats_in(ns: NsHandle, name: String) -> Result<Option<Stats>> {
    stats_of(Conn::open(ns)?, name)
}

/// The traffic of router `name`, read through `c`.
fn stats_of(c: Conn, name: String) -> Result<Option<Stats>> {
    let table = table_name(&name);
    let Some(counters) = c.nft().counters(&table)? else {
        return Ok(None);
    };
    let Some(state) = c.nft().read(&table)?.1 else {
        return Ok(None);
    };
    let conntrack_entries = procfs::read_many(&c.ns, &[procfs::SysctlKey::CONNTRACK_COUNT])?
        .pop()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(0);
    Ok(Some(from_counters(
        name,
        &state,
        &counters,
        conntrack_entries,
    )))
}

/// The figures of a ruleset's counters.
pub(crate) fn from_counters(
    name: String,
    state: &NatState,
    c: &Counters,
    conntrack_entries: u64,
) -> Stats {
    let element = |set: &str, key: Vec<u8>| {
        c.elements
            .get(&(set.to_string(), key))
            .copied()
            .unwrap_or_default()
    };
    let rule = |comment: &str| c.rules.get(comment).copied().unwrap_or_default();
    let mut redirects = Vec::new();
    let mut fallback = Vec::new();
    let mut snat = Vec::new();
    for v6 in [false, true] {
        let mut redirected = Count::default();
        if let Some(map) = state.maps.iter().find(|m| m.name == redirect_map(v6)) {
            for &(protocol, port, to, to_port) in &map.elements {
                let key = [
                    protocol.number(),
                    0,
                    0,
                    0,
                    (port >> 8) as u8,
                    port as u8,
                    0,
                    0,
                ];
                let traffic = element(&traffic_set(protocol, v6), port.to_be_bytes().to_vec());
                redirected.packets += traffic.packets;
                redirected.bytes += traffic.bytes;
                redirects.push(RedirectStats {
                    protocol,
                    port,
                    to,
                    to_port,
                    connections: element(redirect_map(v6), key.to_vec()).packets,
                    packets: traffic.packets,
                    bytes: traffic.bytes,
                });
            }
        }
        if let (Some(first), Some(to)) = rule(&fallback_rule(v6)) {
            // What DNAT-ed traffic the redirects do not account for went to the fallback.
            let all = rule(&dnat_traffic_rule(v6)).0.unwrap_or_default();
            fallback.push(FallbackStats {
                to,
                connections: first.packets,
                packets: all.packets.saturating_sub(redirected.packets),
                bytes: all.bytes.saturating_sub(redirected.bytes),
            });
        }
        if let (Some(source), Some(out)) = (rule(&snat_rule(v6)).1, rule(&snat_traffic_rule(v6)).0)
        {
            snat.push(SnatStats {
                source,
                packets: out.packets,
                bytes: out.bytes,
            });
        }
    }
    Stats {
        name,
        redirects,
        fallback,
        snat,
        conntrack_entries,
    }
}
