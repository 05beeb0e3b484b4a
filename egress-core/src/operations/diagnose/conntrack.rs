//! The connections the router DNAT-ed that its namespace tracks now, and whether each one saw a
//! reply: what tells "nobody uses it" from "it is used but nothing comes back".

use std::net::IpAddr;

use netlink_packet_netfilter::conntrack::{ConntrackAttribute, IPTuple, ProtoTuple, Status, Tuple};

/// One tracked connection that was DNAT-ed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Flow {
    /// IP protocol number.
    pub protocol: u8,
    /// The port the client asked the router for (the original destination port).
    pub port: u16,
    /// Where it was sent (the reply direction's source).
    pub to: IpAddr,
    /// The client (the original source).
    pub client: IpAddr,
    /// Whether a packet came back.
    pub replied: bool,
}

/// The DNAT-ed connections among conntrack's entries.
pub(super) fn dnat_flows(entries: &[Vec<ConntrackAttribute>]) -> Vec<Flow> {
    entries.iter().filter_map(|e| flow(e)).collect()
}

fn flow(attrs: &[ConntrackAttribute]) -> Option<Flow> {
    let mut status = None;
    let (mut protocol, mut port, mut to, mut client) = (None, None, None, None);
    for a in attrs {
        match a {
            ConntrackAttribute::CtaStatus(s) => status = Some(*s),
            ConntrackAttribute::CtaTupleOrig(t) => {
                client = client.or_else(|| source(t));
                for p in protos(t) {
                    match p {
                        ProtoTuple::Protocol(n) => protocol = Some(u8::from(*n)),
                        ProtoTuple::DestinationPort(d) => port = Some(*d),
                        _ => {}
                    }
                }
            }
            ConntrackAttribute::CtaTupleReply(t) => to = to.or_else(|| source(t)),
            _ => {}
        }
    }
    let status = status?;
    status.contains(Status::DstNat).then_some(Flow {
        protocol: protocol?,
        port: port?,
        to: to?,
        client: client?,
        replied: status.contains(Status::SeenReply),
    })
}

/// A tuple's source address.
fn source(t: &[Tuple]) -> Option<IpAddr> {
    t.iter()
        .filter_map(|t| match t {
            Tuple::Ip(ips) => Some(ips),
            _ => None,
        })
        .flatten()
        .find_map(|i| match i {
            IPTuple::SourceAddress(a) => Some(*a),
            _ => None,
        })
}

fn protos(t: &[Tuple]) -> impl Iterator<Item = &ProtoTuple> {
    t.iter()
        .filter_map(|t| match t {
            Tuple::Proto(p) => Some(p),
            _ => None,
        })
        .flatten()
}

/// How many of `flows` `keep` holds: (tracked, of which without a reply).
pub(super) fn tally(flows: &[Flow], keep: impl Fn(&Flow) -> bool) -> (u64, u64) {
    let mut tracked = 0;
    let mut unreplied = 0;
    for f in flows.iter().filter(|f| keep(f)) {
        tracked += 1;
        if !f.replied {
            unreplied += 1;
        }
    }
    (tracked, unreplied)
}
