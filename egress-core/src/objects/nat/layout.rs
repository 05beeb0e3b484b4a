//! The router's ruleset as data ([`Layout`]): the messages that install it, and the state that
//! reading it back must give; the map elements' encoding and libnftnl's userdata.

use std::{collections::BTreeSet, net::IpAddr};

use netlink_packet_core::{DefaultNla, NLA_F_NESTED, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_netfilter::{
    nftables::{
        ChainAttribute, ChainMessage, Hook, HookNumber, InetHookNumber, NfTablesMessage,
        RuleAttribute, RuleMessage, SetAttribute, SetDescription, SetElementList,
        SetElementMessage, SetFlags, SetMessage,
    },
    NetfilterMessage,
};

use super::{expr::Expr, ChainState, MapElement, MapState, NatRules, NatState, RuleState};
use crate::{
    kernel::nft::{align4, consts::*, inet},
    spec::Protocol,
};

/// What install writes, in a form both the encoder and [`NatRules::expected`] use.
pub(super) struct Layout {
    maps: Vec<MapPlan>,
    /// The traffic sets: one per family and protocol with redirects, of their local ports.
    port_sets: Vec<PortSetPlan>,
    pub(super) chains: Vec<ChainPlan>,
}

/// A set of local ports whose elements count the packets and bytes of the connections
/// redirected from them (`type inet_service; counter`).
struct PortSetPlan {
    name: String,
    id: u32,
    ports: Vec<u16>,
}

struct MapPlan {
    name: &'static str,
    id: u32,
    v6: bool,
    elements: Vec<MapElement>,
}

pub(super) struct ChainPlan {
    name: &'static str,
    kind: &'static str,
    hook: u32,
    priority: i32,
    policy: u32,
    pub(super) rules: Vec<RulePlan>,
}

pub(super) struct RulePlan {
    comment: String,
    pub(super) exprs: Vec<Expr>,
}

impl Layout {
    pub(super) fn of(rules: &NatRules) -> Layout {
        let mut elements4 = Vec::new();
        let mut elements6 = Vec::new();
        for r in &rules.redirects {
            let element = (r.protocol, r.port, r.to, r.to_port);
            match r.to {
                IpAddr::V4(_) => elements4.push(element),
                IpAddr::V6(_) => elements6.push(element),
            }
        }
        elements4.sort();
        elements6.sort();

        let mut maps = Vec::new();
        let mut prerouting = Vec::new();
        let families: [(bool, Vec<MapElement>, Option<IpAddr>); 2] = [
            (false, elements4, rules.fallback4.map(IpAddr::V4)),
            (true, elements6, rules.fallback6.map(IpAddr::V6)),
        ];
        for (v6, elements, fallback) in families {
            let (nfproto, map, id) = if v6 {
                (NFPROTO_IPV6, super::redirect_map(true), 2)
            } else {
                (NFPROTO_IPV4, super::redirect_map(false), 1)
            };
            let family = u32::from(nfproto);
            let head = || {
                let mut e = to_the_router(&rules.internal);
                e.extend(nfproto_match(nfproto));
                e
            };
            if !elements.is_empty() {
                let mut exprs = head();
                exprs.extend([
                    Expr::Meta {
                        key: NFT_META_L4PROTO,
                        dreg: NFT_REG_1,
                    },
                    Expr::Payload {
                        base: NFT_PAYLOAD_TRANSPORT_HEADER,
                        offset: 2,
                        len: 2,
                        dreg: NFT_REG32_01,
                    },
                    Expr::Lookup {
                        set: map.to_string(),
                        set_id: Some(id),
                        sreg: NFT_REG_1,
                        dreg: Some(NFT_REG_1),
                    },
                    Expr::Nat {
                        nat_type: NFT_NAT_DNAT,
                        family,
                        addr: Some(NFT_REG_1),
                        // The port follows the address in the looked-up data: right after
                        // 4 bytes (32-bit register 1) or after 16 bytes (register 2).
                        proto: Some(if v6 { NFT_REG_2 } else { NFT_REG32_01 }),
                    },
                ]);
                prerouting.push(RulePlan {
                    comment: if v6 {
                        "egress dnat6 map"
                    } else {
                        "egress dnat4 map"
                    }
                    .into(),
                    exprs,
                });
                maps.push(MapPlan {
                    name: map,
                    id,
                    v6,
                    elements,
                });
            }
            if let Some(to) = fallback {
                let mut exprs = head();
                // Counts the connections sent to the fallback (a NAT chain sees only the
                // first packet of each).
                exprs.extend([
                    Expr::Counter,
                    Expr::Immediate {
                        dreg: NFT_REG_1,
                        data: ip_bytes(to),
                    },
                    Expr::Nat {
                        nat_type: NFT_NAT_DNAT,
                        family,
                        addr: Some(NFT_REG_1),
                        proto: None,
                    },
                ]);
                prerouting.push(RulePlan {
                    comment: super::fallback_rule(v6),
                    exprs,
                });
            }
        }

        let mut postrouting = Vec::new();
        let sources = [
            (
                NFPROTO_IPV4,
                rules.snat4.map(IpAddr::V4),
                super::snat_rule(false),
            ),
            (
                NFPROTO_IPV6,
                rules.snat6.map(IpAddr::V6),
                super::snat_rule(true),
            ),
        ];
        for (nfproto, source, comment) in sources {
            let Some(source) = source else { continue };
            let mut exprs = ifname_match(NFT_META_OIFNAME, &rules.external);
            exprs.extend(nfproto_match(nfproto));
            exprs.extend([
                Expr::Immediate {
                    dreg: NFT_REG_1,
                    data: ip_bytes(source),
                },
                Expr::Nat {
                    nat_type: NFT_NAT_SNAT,
                    family: u32::from(nfproto),
                    addr: Some(NFT_REG_1),
                    proto: None,
                },
            ]);
            postrouting.push(RulePlan { comment, exprs });
        }

        // Counting first (no verdict): every packet of every DNAT-ed connection, both
        // directions, by the local port it was redirected from (its original destination port);
        // all DNAT-ed traffic of a family (the fallback's is what the redirects' leave); what
        // leaves through the external link, SNAT-ed.
        let mut forward = Vec::new();
        let mut port_sets = Vec::new();
        for (v6, nfproto, fam) in [(false, NFPROTO_IPV4, 4), (true, NFPROTO_IPV6, 6)] {
            for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                let mut ports: Vec<u16> = rules
                    .redirects
                    .iter()
                    .filter(|r| r.protocol == protocol && r.to.is_ipv6() == v6)
                    .map(|r| r.port)
                    .collect();
                if ports.is_empty() {
                    continue;
                }
                ports.sort_unstable();
                let name = super::traffic_set(protocol, v6);
                let id = 3 + port_sets.len() as u32;
                let mut exprs = nfproto_match(nfproto).to_vec();
                exprs.extend(l4proto_match(protocol.number()));
                exprs.extend(ct_bits(NFT_CT_STATUS, IPS_DST_NAT));
                exprs.extend([
                    Expr::Ct {
                        key: NFT_CT_PROTO_DST,
                        dreg: NFT_REG_1,
                        dir: Some(IP_CT_DIR_ORIGINAL),
                    },
                    Expr::Lookup {
                        set: name.clone(),
                        set_id: Some(id),
                        sreg: NFT_REG_1,
                        dreg: None,
                    },
                ]);
                forward.push(RulePlan {
                    comment: format!("egress traffic {protocol}{fam}"),
                    exprs,
                });
                port_sets.push(PortSetPlan { name, id, ports });
            }
            let dnat = rules.redirects.iter().any(|r| r.to.is_ipv6() == v6)
                || if v6 {
                    rules.fallback6.is_some()
                } else {
                    rules.fallback4.is_some()
                };
            if dnat {
                let mut exprs = nfproto_match(nfproto).to_vec();
                exprs.extend(ct_bits(NFT_CT_STATUS, IPS_DST_NAT));
                exprs.push(Expr::Counter);
                forward.push(RulePlan {
                    comment: super::dnat_traffic_rule(v6),
                    exprs,
                });
            }
            let snat = if v6 {
                rules.snat6.is_some()
            } else {
                rules.snat4.is_some()
            };
            if snat {
                let mut exprs = ifname_match(NFT_META_OIFNAME, &rules.external);
                exprs.extend(nfproto_match(nfproto));
                exprs.push(Expr::Counter);
                forward.push(RulePlan {
                    comment: super::snat_traffic_rule(v6),
                    exprs,
                });
            }
        }
        let mut replies = ct_bits(NFT_CT_STATE, CT_STATE_ESTABLISHED_RELATED).to_vec();
        replies.push(Expr::Accept);
        let mut dnated = ifname_match(NFT_META_IIFNAME, &rules.internal);
        dnated.extend(ifname_match(NFT_META_OIFNAME, &rules.external));
        dnated.extend(ct_bits(NFT_CT_STATUS, IPS_DST_NAT));
        dnated.push(Expr::Accept);
        forward.extend([
            RulePlan {
                comment: "egress replies".into(),
                exprs: replies,
            },
            RulePlan {
                comment: "egress dnat-ed".into(),
                exprs: dnated,
            },
        ]);

        // The router's own ports first: `accept` ends the NAT chain without a translation,
        // so neither family's map nor fallback sees them. Only where something DNATs (the
        // chain exists only then); the match is the DNAT rules' head without the family.
        if !prerouting.is_empty() {
            let local = rules.local_ports.iter().map(|l| {
                let mut exprs = to_the_router(&rules.internal);
                exprs.extend(l4proto_match(l.protocol.number()));
                exprs.extend([
                    Expr::Payload {
                        base: NFT_PAYLOAD_TRANSPORT_HEADER,
                        offset: 2,
                        len: 2,
                        dreg: NFT_REG_1,
                    },
                    Expr::Cmp {
                        op: NFT_CMP_EQ,
                        sreg: NFT_REG_1,
                        data: l.port.to_be_bytes().to_vec(),
                    },
                    Expr::Accept,
                ]);
                RulePlan {
                    comment: super::local_port_rule(l),
                    exprs,
                }
            });
            prerouting.splice(0..0, local.collect::<Vec<_>>());
        }

        let mut chains = Vec::new();
        if !prerouting.is_empty() {
            chains.push(ChainPlan {
                name: CHAIN_PREROUTING,
                kind: "nat",
                hook: NF_INET_PRE_ROUTING,
                priority: NF_IP_PRI_NAT_DST,
                policy: NF_ACCEPT,
                rules: prerouting,
            });
        }
        if !postrouting.is_empty() {
            chains.push(ChainPlan {
                name: CHAIN_POSTROUTING,
                kind: "nat",
                hook: NF_INET_POST_ROUTING,
                priority: NF_IP_PRI_NAT_SRC,
                policy: NF_ACCEPT,
                rules: postrouting,
            });
        }
        chains.push(ChainPlan {
            name: CHAIN_FORWARD,
            kind: "filter",
            hook: NF_INET_FORWARD,
            priority: NF_IP_PRI_FILTER,
            policy: NF_DROP,
            rules: forward,
        });
        chains.push(ChainPlan {
            name: CHAIN_INPUT,
            kind: "filter",
            hook: NF_INET_LOCAL_IN,
            priority: NF_IP_PRI_FILTER,
            policy: NF_DROP,
            rules: input_rules(&rules.external),
        });
        Layout {
            maps,
            port_sets,
            chains,
        }
    }

    /// The batch messages: chains, maps, rules, then the maps' elements. Chains named in
    /// `keep` already exist with the right hook and are not created again.
    ///
    /// nft sends the elements before the rules; but binding a map to a rule's lookup walks
    /// every element the map already holds, so the maps are filled after the rules (the
    /// kernel checks each element against the binding as it is added instead).
    pub(super) fn messages(
        &self,
        table: &str,
        keep: &BTreeSet<String>,
    ) -> Vec<(NetfilterMessage, u16)> {
        let mut out = Vec::new();
        for chain in self.chains.iter().filter(|c| !keep.contains(c.name)) {
            out.push((
                inet(NfTablesMessage::NewChain(ChainMessage {
                    attributes: vec![
                        ChainAttribute::Table(table.to_string()),
                        ChainAttribute::Name(chain.name.to_string()),
                        ChainAttribute::Type(chain.kind.to_string()),
                        ChainAttribute::Policy(chain.policy),
                        ChainAttribute::Hook(vec![
                            Hook::Number(HookNumber::Inet(InetHookNumber::from(chain.hook))),
                            Hook::Priority(chain.priority as u32),
                        ]),
                    ],
                })),
                NLM_F_CREATE | NLM_F_EXCL,
            ));
        }
        for map in &self.maps {
            let data_len = if map.v6 { 20 } else { 8 };
            // The map holds exactly the spec's redirects and is only ever replaced whole, so
            // its size is known: given it, the kernel sizes the hash table once, instead of
            // growing it element by element while the batch runs (10,000 elements: 26 -> 15 ms
            // in the kernel). `nft list` shows it as `size N`.
            let size = (!map.elements.is_empty()).then(|| {
                SetAttribute::Description(vec![SetDescription::Size(map.elements.len() as u32)])
            });
            out.push((
                inet(NfTablesMessage::NewSet(SetMessage {
                    attributes: [
                        SetAttribute::Table(table.to_string()),
                        SetAttribute::Name(map.name.to_string()),
                        SetAttribute::Flags(SetFlags::Map),
                        SetAttribute::KeyType(MAP_KEY_TYPE),
                        SetAttribute::KeyLen(MAP_KEY_LEN as u32),
                        SetAttribute::DataType(if map.v6 {
                            MAP_DATA_TYPE6
                        } else {
                            MAP_DATA_TYPE4
                        }),
                        SetAttribute::DataLen(data_len),
                        SetAttribute::Id(map.id),
                        SetAttribute::UserData(map_userdata()),
                        // Each element counts the connections redirected through it.
                        counter_template(),
                    ]
                    .into_iter()
                    .chain(size)
                    .collect(),
                })),
                NLM_F_CREATE | NLM_F_EXCL,
            ));
        }
        for set in &self.port_sets {
            out.push((
                inet(NfTablesMessage::NewSet(SetMessage {
                    attributes: vec![
                        SetAttribute::Table(table.to_string()),
                        SetAttribute::Name(set.name.clone()),
                        SetAttribute::Flags(SetFlags::empty()),
                        SetAttribute::KeyType(TYPE_INET_SERVICE),
                        SetAttribute::KeyLen(PORT_KEY_LEN),
                        SetAttribute::Id(set.id),
                        SetAttribute::Description(vec![SetDescription::Size(
                            set.ports.len() as u32
                        )]),
                        SetAttribute::UserData(port_set_userdata()),
                        counter_template(),
                    ],
                })),
                NLM_F_CREATE | NLM_F_EXCL,
            ));
        }
        for chain in &self.chains {
            for rule in &chain.rules {
                out.push((
                    inet(NfTablesMessage::NewRule(RuleMessage {
                        attributes: vec![
                            RuleAttribute::Table(table.to_string()),
                            RuleAttribute::Chain(chain.name.to_string()),
                            RuleAttribute::Expressions(
                                rule.exprs.iter().map(Expr::encode).collect(),
                            ),
                            RuleAttribute::UserData(udata_comment(&rule.comment)),
                        ],
                    })),
                    NLM_F_CREATE | NLM_F_APPEND,
                ));
            }
        }
        for map in &self.maps {
            for chunk in map.elements.chunks(ELEMENTS_PER_MESSAGE) {
                out.push((
                    inet(NfTablesMessage::NewSetElement(SetElementMessage {
                        attributes: vec![
                            SetElementList::Table(table.to_string()),
                            SetElementList::Set(map.name.to_string()),
                            SetElementList::SetId(map.id),
                            SetElementList::Other(element_list(chunk)),
                        ],
                    })),
                    NLM_F_CREATE | NLM_F_EXCL,
                ));
            }
        }
        for set in &self.port_sets {
            for chunk in set.ports.chunks(ELEMENTS_PER_MESSAGE) {
                out.push((
                    inet(NfTablesMessage::NewSetElement(SetElementMessage {
                        attributes: vec![
                            SetElementList::Table(table.to_string()),
                            SetElementList::Set(set.name.clone()),
                            SetElementList::SetId(set.id),
                            SetElementList::Other(port_list(chunk)),
                        ],
                    })),
                    NLM_F_CREATE | NLM_F_EXCL,
                ));
            }
        }
        out
    }

    pub(super) fn state(&self) -> NatState {
        let mut chains: Vec<ChainState> = self
            .chains
            .iter()
            .map(|c| ChainState {
                name: c.name.to_string(),
                kind: Some(c.kind.to_string()),
                hook: Some(hook_name(c.hook)),
                priority: Some(c.priority),
                policy: Some(policy_name(c.policy)),
                rules: c
                    .rules
                    .iter()
                    .map(|r| RuleState {
                        comment: Some(r.comment.clone()),
                        exprs: r.exprs.iter().map(Expr::render).collect(),
                    })
                    .collect(),
            })
            .collect();
        chains.sort_by(|a, b| a.name.cmp(&b.name));
        let mut maps: Vec<MapState> = self
            .maps
            .iter()
            .map(|m| MapState {
                name: m.name.to_string(),
                key_type: MAP_KEY_TYPE,
                data_type: if m.v6 { MAP_DATA_TYPE6 } else { MAP_DATA_TYPE4 },
                flags: NFT_SET_MAP,
                elements: m.elements.clone(),
                ports: Vec::new(),
                other_elements: Vec::new(),
            })
            .chain(self.port_sets.iter().map(|p| MapState {
                name: p.name.clone(),
                key_type: TYPE_INET_SERVICE,
                data_type: 0,
                flags: 0,
                elements: Vec::new(),
                ports: p.ports.clone(),
                other_elements: Vec::new(),
            }))
            .collect();
        maps.sort_by(|a, b| a.name.cmp(&b.name));
        NatState { chains, maps }
    }
}

/// The ICMP messages the router accepts from the external link beside replies, as
/// `(protocol, first type, last type)`: the errors (those of a tracked connection are `related`
/// anyway), echo requests (operators and gateways ping the egress IP; the reply says nothing
/// ARP does not), MLD (an MLD-snooping switch stops sending the solicited-node group of the
/// egress IP to a host that never answers its queries) and neighbour discovery. Ranges, one
/// rule each, so that the chain stays short (each rule costs an apply its install and its
/// read back): what they take in beside those is what the kernel ignores or answers harmlessly
/// (IPv4 router discovery, 9 and 10; ICMPv6 echo replies and MLD reports).
const INPUT_ICMP: [(u8, u8, u8); 4] = [
    (IPPROTO_ICMP, 3, 3),       // destination unreachable
    (IPPROTO_ICMP, 8, 12),      // echo request, router discovery, time exceeded, parameter problem
    (IPPROTO_ICMPV6, 1, 4),     // unreachable, packet too big, time exceeded, parameter problem
    (IPPROTO_ICMPV6, 128, 137), // echo, MLD, router and neighbour discovery, redirect
];

/// The input filter (policy drop): whatever arrives on another link than `external` (the
/// internal link, loopback) is accepted; from `external`, replies and [`INPUT_ICMP`] only, so
/// that a host on the external network reaches none of the router's own ports, whatever
/// address they are bound to. The ruleset `nft -f` writes for
///
/// ```text
/// iifname != "macvlan0" accept
/// ct state established,related accept
/// meta l4proto icmp icmp type 8-12 accept      (one rule per INPUT_ICMP entry)
/// ```
fn input_rules(external: &str) -> Vec<RulePlan> {
    let mut other = ifname_cmp(NFT_META_IIFNAME, NFT_CMP_NEQ, external);
    other.push(Expr::Accept);
    let mut replies = ct_bits(NFT_CT_STATE, CT_STATE_ESTABLISHED_RELATED).to_vec();
    replies.push(Expr::Accept);
    let mut rules = vec![
        RulePlan {
            comment: "egress input other links".into(),
            exprs: other,
        },
        RulePlan {
            comment: "egress input replies".into(),
            exprs: replies,
        },
    ];
    for (protocol, first, last) in INPUT_ICMP {
        let mut exprs = l4proto_match(protocol).to_vec();
        exprs.push(Expr::Payload {
            base: NFT_PAYLOAD_TRANSPORT_HEADER,
            offset: 0,
            len: 1,
            dreg: NFT_REG_1,
        });
        let cmp = |op, t: u8| Expr::Cmp {
            op,
            sreg: NFT_REG_1,
            data: vec![t],
        };
        if first == last {
            exprs.push(cmp(NFT_CMP_EQ, first));
        } else {
            exprs.extend([cmp(NFT_CMP_GTE, first), cmp(NFT_CMP_LTE, last)]);
        }
        exprs.push(Expr::Accept);
        let family = if protocol == IPPROTO_ICMP { 4 } else { 6 };
        let types = if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        };
        rules.push(RulePlan {
            comment: format!("egress input icmp{family} {types}"),
            exprs,
        });
    }
    rules
}

/// `ct KEY & BITS != 0`.
fn ct_bits(key: u32, bits: u32) -> [Expr; 3] {
    [
        Expr::Ct {
            key,
            dreg: NFT_REG_1,
            dir: None,
        },
        Expr::Bitwise {
            sreg: NFT_REG_1,
            dreg: NFT_REG_1,
            mask: bits.to_ne_bytes().to_vec(),
            xor: 0u32.to_ne_bytes().to_vec(),
        },
        Expr::Cmp {
            op: NFT_CMP_NEQ,
            sreg: NFT_REG_1,
            data: 0u32.to_ne_bytes().to_vec(),
        },
    ]
}

/// What arrives on the internal link addressed to the router itself (`iifname INTERNAL fib daddr
/// type local`): the head of every DNAT rule and of the local ports' rules.
fn to_the_router(internal: &str) -> Vec<Expr> {
    let mut e = ifname_match(NFT_META_IIFNAME, internal);
    e.extend([
        Expr::Fib {
            flags: NFTA_FIB_F_DADDR,
            result: NFT_FIB_RESULT_ADDRTYPE,
            dreg: NFT_REG_1,
        },
        Expr::Cmp {
            op: NFT_CMP_EQ,
            sreg: NFT_REG_1,
            data: RTN_LOCAL.to_ne_bytes().to_vec(),
        },
    ]);
    e
}

pub(super) fn ifname_match(key: u32, name: &str) -> Vec<Expr> {
    ifname_cmp(key, NFT_CMP_EQ, name)
}

/// `meta KEY OP NAME` for an interface name key (`iifname`, `oifname`).
fn ifname_cmp(key: u32, op: u32, name: &str) -> Vec<Expr> {
    // nft compares the whole 16-byte (IFNAMSIZ) register: the name, zero padded.
    let mut data = name.as_bytes().to_vec();
    data.resize(data.len().max(15) + 1, 0);
    vec![
        Expr::Meta {
            key,
            dreg: NFT_REG_1,
        },
        Expr::Cmp {
            op,
            sreg: NFT_REG_1,
            data,
        },
    ]
}

/// `meta l4proto PROTOCOL`.
fn l4proto_match(protocol: u8) -> [Expr; 2] {
    [
        Expr::Meta {
            key: NFT_META_L4PROTO,
            dreg: NFT_REG_1,
        },
        Expr::Cmp {
            op: NFT_CMP_EQ,
            sreg: NFT_REG_1,
            data: vec![protocol],
        },
    ]
}

fn nfproto_match(nfproto: u8) -> [Expr; 2] {
    [
        Expr::Meta {
            key: NFT_META_NFPROTO,
            dreg: NFT_REG_1,
        },
        Expr::Cmp {
            op: NFT_CMP_EQ,
            sreg: NFT_REG_1,
            data: vec![nfproto],
        },
    ]
}

pub(super) fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `protocol . port`: each field padded to 4 bytes, the port big endian.
pub(super) fn element_key(e: &MapElement) -> [u8; MAP_KEY_LEN] {
    let [hi, lo] = e.1.to_be_bytes();
    [e.0.number(), 0, 0, 0, hi, lo, 0, 0]
}

/// `address . port`: the port padded to 4 bytes, big endian.
pub(super) fn element_data(e: &MapElement) -> Vec<u8> {
    let mut data = ip_bytes(e.2);
    let [hi, lo] = e.3.to_be_bytes();
    data.extend_from_slice(&[hi, lo, 0, 0]);
    data
}

/// `NFTA_SET_ELEM_LIST_ELEMENTS` holding `elements`, encoded straight into one buffer: the
/// same bytes as `SetElementList::Elements`, whose nested `Vec`s per element (each level
/// summing its children's lengths again) took ~10 ms for 10,000 elements; this takes ~0.3.
pub(super) fn element_list(elements: &[MapElement]) -> DefaultNla {
    let mut buf = Vec::with_capacity(elements.len() * 48);
    for e in elements {
        put_nested(&mut buf, NFTA_LIST_ELEM, |buf| {
            put_nested(buf, NFTA_SET_ELEM_KEY, |buf| {
                put_attr(buf, NFTA_DATA_VALUE, &element_key(e));
            });
            put_nested(buf, NFTA_SET_ELEM_DATA, |buf| {
                put_attr(buf, NFTA_DATA_VALUE, &element_data(e));
            });
        });
    }
    DefaultNla::new(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, buf)
}

/// `NFTA_SET_ELEM_LIST_ELEMENTS` holding the ports of a traffic set.
pub(super) fn port_list(ports: &[u16]) -> DefaultNla {
    let mut buf = Vec::with_capacity(ports.len() * 16);
    for p in ports {
        put_nested(&mut buf, NFTA_LIST_ELEM, |buf| {
            put_nested(buf, NFTA_SET_ELEM_KEY, |buf| {
                put_attr(buf, NFTA_DATA_VALUE, &p.to_be_bytes());
            });
        });
    }
    DefaultNla::new(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, buf)
}

/// `NFTA_SET_EXPR` holding a `counter`: every element of the set gets one (the kernel copies
/// it into each element added without one). Written raw: the crate's `SetAttribute::Expression`
/// holds one attribute of an expression, not its name and data together.
fn counter_template() -> SetAttribute {
    let mut buf = Vec::new();
    put_attr(&mut buf, NFTA_EXPR_NAME, b"counter\0");
    put_nested(&mut buf, NFTA_EXPR_DATA, |_| {});
    SetAttribute::Other(DefaultNla::new(NFTA_SET_EXPR | NLA_F_NESTED, buf))
}

/// A traffic set's userdata, as nft writes it: the key (a port) is big endian.
fn port_set_userdata() -> Vec<u8> {
    let mut buf = Vec::new();
    udata_put(
        &mut buf,
        UDATA_SET_KEYBYTEORDER,
        &BYTEORDER_BIG_ENDIAN.to_ne_bytes(),
    );
    buf
}

/// Appends a netlink attribute: header, `value`, padding to 4 bytes.
fn put_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(align4(buf.len()), 0);
}

/// Appends a nested attribute whose value `fill` appends.
fn put_nested(buf: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    fill(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    buf[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
}

pub(super) fn decode_element(key: &[u8], data: &[u8]) -> Option<MapElement> {
    let protocol = match key {
        [6, 0, 0, 0, _, _, 0, 0] => Protocol::Tcp,
        [17, 0, 0, 0, _, _, 0, 0] => Protocol::Udp,
        [132, 0, 0, 0, _, _, 0, 0] => Protocol::Sctp,
        _ => return None,
    };
    let port = u16::from_be_bytes([key[4], key[5]]);
    let (to, rest) = match data.len() {
        8 => (
            IpAddr::from(<[u8; 4]>::try_from(&data[..4]).ok()?),
            &data[4..],
        ),
        20 => (
            IpAddr::from(<[u8; 16]>::try_from(&data[..16]).ok()?),
            &data[16..],
        ),
        _ => return None,
    };
    match rest {
        [hi, lo, 0, 0] => Some((protocol, port, to, u16::from_be_bytes([*hi, *lo]))),
        _ => None,
    }
}

pub(super) fn hook_name(hook: u32) -> String {
    match hook {
        0 => "prerouting".into(),
        1 => "input".into(),
        2 => "forward".into(),
        3 => "output".into(),
        4 => "postrouting".into(),
        5 => "ingress".into(),
        n => format!("hook {n}"),
    }
}

pub(super) fn policy_name(policy: u32) -> String {
    match policy {
        NF_DROP => "drop".into(),
        NF_ACCEPT => "accept".into(),
        n => format!("verdict {n}"),
    }
}

// libnftnl userdata: TLVs of type u8, length u8, value.

pub(super) fn udata_put(buf: &mut Vec<u8>, kind: u8, value: &[u8]) {
    buf.push(kind);
    buf.push(value.len() as u8);
    buf.extend_from_slice(value);
}

/// A comment as libnftnl stores it: one TLV of type 0 holding the text and a NUL.
pub(super) fn udata_comment(comment: &str) -> Vec<u8> {
    let mut value = comment.as_bytes().to_vec();
    value.push(0);
    let mut buf = Vec::with_capacity(value.len() + 2);
    udata_put(&mut buf, UDATA_COMMENT, &value);
    buf
}

/// The table's userdata for `comment`, or the errno that explains why it cannot be stored.
pub(super) fn table_userdata(comment: &str) -> std::result::Result<Vec<u8>, i32> {
    if comment.as_bytes().contains(&0) {
        return Err(libc::EINVAL);
    }
    // Type and length bytes, the text, its NUL: at most NFT_USERDATA_MAXLEN (and the length
    // byte itself caps the value at 255).
    if comment.len() + 3 > USERDATA_MAX {
        return Err(libc::E2BIG);
    }
    Ok(udata_comment(comment))
}

/// The comment in a table's or rule's userdata; `None` when there is none or the userdata is
/// not libnftnl TLVs.
pub(super) fn decode_comment(udata: &[u8]) -> Option<String> {
    let mut rest = udata;
    while let [kind, len, tail @ ..] = rest {
        let len = usize::from(*len);
        let value = tail.get(..len)?;
        if *kind == UDATA_COMMENT {
            let text = value.strip_suffix(&[0])?;
            return String::from_utf8(text.to_vec()).ok();
        }
        rest = &tail[len..];
    }
    None
}

/// What nft 1.0.6 stores with a `type inet_proto . inet_service : … . inet_service` map: key
/// and data byte order (none, for a concatenation), a typeof record for key and data that
/// names a concatenation without parts (so nft prints `type …` back), and "data is not an
/// interval".
pub(super) fn map_userdata() -> Vec<u8> {
    let mut typeof_concat = Vec::new();
    udata_put(&mut typeof_concat, 0, &UDATA_TYPEOF_CONCAT.to_ne_bytes());
    udata_put(&mut typeof_concat, 1, &[]);
    let mut buf = Vec::new();
    udata_put(&mut buf, UDATA_SET_KEYBYTEORDER, &0u32.to_ne_bytes());
    udata_put(&mut buf, UDATA_SET_DATABYTEORDER, &0u32.to_ne_bytes());
    udata_put(&mut buf, UDATA_SET_KEY_TYPEOF, &typeof_concat);
    udata_put(&mut buf, UDATA_SET_DATA_TYPEOF, &typeof_concat);
    udata_put(&mut buf, UDATA_SET_DATA_INTERVAL, &0u32.to_ne_bytes());
    buf
}

/// An nft datatype id as nft names it (concatenations split on `TYPE_BITS`).
pub(super) fn type_name(id: u32) -> String {
    let one = |id: u32| match id {
        TYPE_IPADDR => "ipv4_addr".to_string(),
        TYPE_IP6ADDR => "ipv6_addr".to_string(),
        TYPE_INET_PROTOCOL => "inet_proto".to_string(),
        TYPE_INET_SERVICE => "inet_service".to_string(),
        n => format!("type {n}"),
    };
    let mut parts = Vec::new();
    let mut rest = id;
    while rest != 0 {
        parts.push(one(rest & ((1 << TYPE_BITS) - 1)));
        rest >>= TYPE_BITS;
    }
    parts.reverse();
    if parts.is_empty() {
        "(none)".into()
    } else {
        parts.join(" . ")
    }
}
