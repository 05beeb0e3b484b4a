//! The frames a probe sends (ARP requests and probes, neighbour solicitations) and the answers
//! it listens for, parsed: pure functions over bytes.
//!
//! An ARP *request* carries the asker's address as sender (`arping -I macvlan0 GW`); an ARP
//! *probe* (RFC 5227) carries the unspecified sender 0.0.0.0, so that no host learns anything
//! from it (`arping -D`). IPv6 has the same pair: a neighbour solicitation from an address with
//! the source link-layer option, and a duplicate address detection solicitation from `::`
//! (RFC 4862), which its target answers with an advertisement to all nodes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Ethertype of ARP.
pub(crate) const ETH_P_ARP: u16 = 0x0806;
/// Ethertype of IPv6.
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
const ETH_HEADER: usize = 14;
const IPV6_HEADER: usize = 40;
const ICMPV6: u8 = 58;
const NEIGHBOUR_SOLICITATION: u8 = 135;
const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// A frame to send: its bytes and where the link layer takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// The whole Ethernet frame.
    pub bytes: Vec<u8>,
    /// Its ethertype.
    pub ethertype: u16,
}

impl Frame {
    /// The destination MAC (the first six bytes).
    pub(crate) fn destination(&self) -> [u8; 6] {
        mac_at(&self.bytes, 0)
    }
}

/// Who-has `target`, asked from `mac` with sender address `sender` (`None`: the unspecified
/// address: an ARP probe, a DAD solicitation). Both families.
pub(crate) fn who_has(mac: [u8; 6], sender: Option<IpAddr>, target: IpAddr) -> Frame {
    match target {
        IpAddr::V4(t) => {
            let s = match sender {
                Some(IpAddr::V4(s)) => s,
                _ => Ipv4Addr::UNSPECIFIED,
            };
            arp_request(mac, s, t)
        }
        IpAddr::V6(t) => {
            let s = match sender {
                Some(IpAddr::V6(s)) => Some(s),
                _ => None,
            };
            neighbour_solicitation(mac, s, t)
        }
    }
}

/// An ARP request for `target` from `mac`/`sender`, broadcast (sender 0.0.0.0: an ARP probe).
fn arp_request(mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Frame {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]); // Ethernet, IPv4
    f.extend_from_slice(&ARP_REQUEST.to_be_bytes());
    f.extend_from_slice(&mac);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    Frame {
        bytes: f,
        ethertype: ETH_P_ARP,
    }
}

/// The solicited-node multicast address of `ip` (RFC 4291 §2.7.1).
fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// A neighbour solicitation for `target` from `mac`, to the target's solicited-node group; from
/// `source` with the source link-layer option, or from `::` without it (DAD, RFC 4862 §5.4.2).
fn neighbour_solicitation(mac: [u8; 6], source: Option<Ipv6Addr>, target: Ipv6Addr) -> Frame {
    let group = solicited_node(target);
    let mut icmp = vec![NEIGHBOUR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    if source.is_some() {
        icmp.extend_from_slice(&[1, 1]); // source link-layer address option, 8 bytes
        icmp.extend_from_slice(&mac);
    }
    let src = source.unwrap_or(Ipv6Addr::UNSPECIFIED);
    let sum = icmpv6_checksum(src, group, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let g = group.octets();
    let mut f = Vec::with_capacity(ETH_HEADER + IPV6_HEADER + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, g[12], g[13], g[14], g[15]]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[ICMPV6, 255]); // next header, hop limit 255 (RFC 4861 §7.1.1)
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&g);
    f.extend_from_slice(&icmp);
    Frame {
        bytes: f,
        ethertype: ETH_P_IPV6,
    }
}

pub(crate) fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for c in bytes.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(payload.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(payload);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A frame that says something about who holds an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim {
    /// The address.
    pub address: IpAddr,
    /// The MAC that claims it (ARP's sender hardware address, the NA's target link-layer
    /// option, else the frame's source).
    pub mac: [u8; 6],
    /// An answer (ARP reply, neighbour advertisement), as opposed to an announcement (a
    /// gratuitous ARP request: sender and target the same address).
    pub answer: bool,
}

/// What `frame` claims: an ARP reply or gratuitous request, a neighbour advertisement; `None`
/// for anything else (requests of others, other traffic, truncated frames).
pub(crate) fn claim(frame: &[u8]) -> Option<Claim> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    match ethertype {
        ETH_P_ARP => {
            let arp = frame.get(ETH_HEADER..ETH_HEADER + 28)?;
            if arp[..6] != [0, 1, 0x08, 0x00, 6, 4] {
                return None;
            }
            let op = u16::from_be_bytes([arp[6], arp[7]]);
            let sha = mac_at(arp, 8);
            let spa = Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]);
            let tpa = Ipv4Addr::new(arp[24], arp[25], arp[26], arp[27]);
            let answer = op == ARP_REPLY;
            let announcement = op == ARP_REQUEST && spa == tpa;
            (!spa.is_unspecified() && (answer || announcement)).then_some(Claim {
                address: spa.into(),
                mac: sha,
                answer,
            })
        }
        ETH_P_IPV6 => {
            let ip6 = frame.get(ETH_HEADER..ETH_HEADER + IPV6_HEADER)?;
            if ip6[0] >> 4 != 6 || ip6[6] != ICMPV6 {
                return None;
            }
            let icmp = frame.get(ETH_HEADER + IPV6_HEADER..)?;
            if *icmp.first()? != NEIGHBOUR_ADVERTISEMENT || icmp.len() < 24 {
                return None;
            }
            let target: [u8; 16] = icmp[8..24].try_into().ok()?;
            let mut mac = mac_at(frame, 6);
            let mut options = &icmp[24..];
            while options.len() >= 8 {
                let len = usize::from(options[1]) * 8;
                if len == 0 || len > options.len() {
                    break;
                }
                if options[0] == 2 {
                    mac = mac_at(options, 2);
                }
                options = &options[len..];
            }
            Some(Claim {
                address: Ipv6Addr::from(target).into(),
                mac,
                answer: true,
            })
        }
        _ => None,
    }
}

/// The source MAC of an Ethernet frame.
pub(crate) fn source_mac(frame: &[u8]) -> Option<[u8; 6]> {
    (frame.len() >= ETH_HEADER).then(|| mac_at(frame, 6))
}

fn mac_at(bytes: &[u8], at: usize) -> [u8; 6] {
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&bytes[at..at + 6]);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x99];
    const OTHER: [u8; 6] = [2, 0, 0, 0, 0, 0x42];

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// The reply a host holding `ip` with MAC `mac` sends to an ARP request `req`.
    fn arp_reply(req: &Frame, mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
        let r = &req.bytes;
        let mut f = r[6..12].to_vec();
        f.extend_from_slice(&mac);
        f.extend_from_slice(&r[12..20]);
        f.extend_from_slice(&ARP_REPLY.to_be_bytes());
        f.extend_from_slice(&mac);
        f.extend_from_slice(&ip.octets());
        f.extend_from_slice(&r[22..32]);
        f
    }

    #[test]
    fn arp_request_and_probe_differ_only_in_the_sender_address() {
        let target = v4("203.0.113.1");
        let req = who_has(MAC, Some(v4("203.0.113.99").into()), target.into());
        let probe = who_has(MAC, None, target.into());
        assert_eq!(req.bytes.len(), 42);
        assert_eq!(req.destination(), [0xff; 6]);
        assert_eq!(&req.bytes[28..32], &[203, 0, 113, 99]);
        assert_eq!(&probe.bytes[28..32], &[0, 0, 0, 0]);
        assert_eq!(&probe.bytes[38..42], &target.octets());
        assert_eq!(req.bytes[..28], probe.bytes[..28]);
        // A request of ours claims nothing (sender and target differ), nor does a probe.
        assert_eq!(claim(&req.bytes), None);
        assert_eq!(claim(&probe.bytes), None);
    }

    #[test]
    fn an_arp_reply_and_a_gratuitous_arp_claim_their_sender_address() {
        let req = who_has(MAC, None, v4("203.0.113.99").into());
        let reply = arp_reply(&req, OTHER, v4("203.0.113.99"));
        assert_eq!(
            claim(&reply),
            Some(Claim {
                address: v4("203.0.113.99").into(),
                mac: OTHER,
                answer: true
            })
        );
        let garp = who_has(
            OTHER,
            Some(v4("203.0.113.7").into()),
            v4("203.0.113.7").into(),
        );
        assert_eq!(
            claim(&garp.bytes),
            Some(Claim {
                address: v4("203.0.113.7").into(),
                mac: OTHER,
                answer: false
            })
        );
        assert_eq!(claim(&reply[..30]), None, "truncated");
    }

    #[test]
    fn solicitations_go_to_the_solicited_node_group_with_a_valid_checksum() {
        let target = v6("2001:db8:2::1");
        for source in [Some(v6("2001:db8:2::99")), None] {
            let f = who_has(MAC, source.map(IpAddr::from), target.into());
            assert_eq!(f.destination(), [0x33, 0x33, 0xff, 0, 0, 1]);
            let dst = v6("ff02::1:ff00:1");
            assert_eq!(&f.bytes[38..54], &dst.octets());
            let icmp = &f.bytes[54..];
            assert_eq!(icmp[0], NEIGHBOUR_SOLICITATION);
            let src = source.unwrap_or(Ipv6Addr::UNSPECIFIED);
            assert_eq!(icmpv6_checksum(src, dst, icmp), 0, "checksum must verify");
            // The source link-layer option only with a source address (RFC 4861 §4.3).
            assert_eq!(icmp.len(), if source.is_some() { 32 } else { 24 });
            assert_eq!(f.bytes[21], 255, "hop limit");
        }
    }

    /// What a standby asks the gateway (it does not hold the egress address): an ARP probe and
    /// a DAD solicitation, from which the gateway learns nothing — no sender address, no
    /// source link-layer option — to the gateway's own solicited-node group; and the gateway's
    /// answer to the solicitation, an advertisement to all nodes without the solicited flag
    /// (RFC 4861 §7.2.4), counts as its answer.
    #[test]
    fn a_question_from_the_unspecified_address_names_no_address_and_is_answered() {
        let gateway = v6("2001:db8:2::1");
        let ns = who_has(MAC, None, gateway.into());
        assert_eq!(&ns.bytes[22..38], &[0; 16], "source ::");
        assert_eq!(&ns.bytes[38..54], &v6("ff02::1:ff00:1").octets());
        assert_eq!(ns.bytes.len(), ETH_HEADER + IPV6_HEADER + 24, "no option");
        let probe = who_has(MAC, None, v4("203.0.113.1").into());
        assert_eq!(&probe.bytes[28..32], &[0; 4], "sender 0.0.0.0");

        let all_nodes = v6("ff02::1");
        let mut icmp = vec![NEIGHBOUR_ADVERTISEMENT, 0, 0, 0, 0x20, 0, 0, 0]; // override only
        icmp.extend_from_slice(&gateway.octets());
        icmp.extend_from_slice(&[2, 1]);
        icmp.extend_from_slice(&OTHER);
        let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
        f.extend_from_slice(&OTHER);
        f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, icmp.len() as u8, ICMPV6, 255]);
        f.extend_from_slice(&gateway.octets());
        f.extend_from_slice(&all_nodes.octets());
        f.extend_from_slice(&icmp);
        assert_eq!(
            claim(&f),
            Some(Claim {
                address: gateway.into(),
                mac: OTHER,
                answer: true
            })
        );
    }

    #[test]
    fn an_advertisement_claims_its_target_with_the_option_s_mac() {
        let target = v6("2001:db8:2::1");
        let mut icmp = vec![NEIGHBOUR_ADVERTISEMENT, 0, 0, 0, 0x60, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        icmp.extend_from_slice(&[2, 1]);
        icmp.extend_from_slice(&OTHER);
        let mut f = MAC.to_vec();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 0x55]); // frame source differs from the option
        f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, icmp.len() as u8, ICMPV6, 255]);
        f.extend_from_slice(&[0; 32]);
        f.extend_from_slice(&icmp);
        assert_eq!(
            claim(&f),
            Some(Claim {
                address: target.into(),
                mac: OTHER,
                answer: true
            })
        );
        // A solicitation claims nothing.
        let ns = who_has(MAC, None, target.into());
        assert_eq!(claim(&ns.bytes), None);
    }
}
