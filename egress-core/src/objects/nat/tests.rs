//! Unit tests of the ruleset model, its encoding and decoding (no kernel needed; the
//! privileged tests are in tests/nat.rs).

use std::collections::BTreeSet;

use netlink_packet_core::{DefaultNla, Emitable, NlaBuffer, Parseable};
use netlink_packet_netfilter::{
    nftables::{
        DataAttribute, ExpressionAttribute, Expressions, ListAttribute, NfTablesMessage,
        SetElementList,
    },
    NetfilterMessageInner,
};

use super::{
    expr::{render_raw, Expr},
    layout::*,
    *,
};
use crate::{
    kernel::nft::{
        consts::*,
        reply::{rule_attribute, set_element_attribute, Reply},
    },
    spec::{LocalPort, Protocol, Redirect},
};

fn rules_v4(table: &str) -> NatRules {
    NatRules {
        table: table.into(),
        internal: "eth0".into(),
        external: "macvlan0".into(),
        snat4: Some("203.0.113.99".parse().unwrap()),
        snat6: None,
        redirects: vec![
            Redirect::of(Protocol::Tcp, 80, "198.51.100.25", 8080),
            Redirect::of(Protocol::Udp, 53, "198.51.100.26", 53),
        ],
        local_ports: vec![],
        fallback4: Some("198.51.100.9".parse().unwrap()),
        fallback6: None,
    }
}

pub(super) fn rules_dual(table: &str) -> NatRules {
    NatRules {
        table: table.into(),
        internal: "eth0".into(),
        external: "macvlan0".into(),
        snat4: Some("203.0.113.99".parse().unwrap()),
        snat6: Some("2001:db8:1::99".parse().unwrap()),
        redirects: vec![
            Redirect::of(Protocol::Tcp, 80, "198.51.100.25", 8080),
            Redirect::of(Protocol::Tcp, 443, "2001:db8:2::25", 8443),
            Redirect::of(Protocol::Sctp, 9000, "2001:db8:2::26", 9000),
        ],
        local_ports: vec![],
        fallback4: Some("198.51.100.9".parse().unwrap()),
        fallback6: Some("2001:db8:2::9".parse().unwrap()),
    }
}

fn rules_plain(table: &str) -> NatRules {
    NatRules {
        redirects: vec![],
        fallback4: None,
        ..rules_v4(table)
    }
}

#[test]
fn nat_udata_comment_roundtrip() {
    let u = udata_comment("egress dnat4 map");
    assert_eq!(&u[..2], &[0, 17]);
    assert_eq!(u.last(), Some(&0));
    assert_eq!(decode_comment(&u).as_deref(), Some("egress dnat4 map"));
    // What nft wrote for `comment "hello journal"` (from `nft --debug=mnl`).
    let nft = b"\x00\x0ehello journal\x00";
    assert_eq!(udata_comment("hello journal"), nft.to_vec());
    assert_eq!(decode_comment(nft).as_deref(), Some("hello journal"));
    // Not a comment TLV / garbage: None, never a panic.
    assert_eq!(decode_comment(b"\x05\x02ab"), None);
    assert_eq!(decode_comment(b"\x00\x09short"), None);
    assert_eq!(decode_comment(b"\x00\x03ab"), None); // no NUL
    assert_eq!(decode_comment(&[]), None);
    // A comment after another TLV is found.
    assert_eq!(
        decode_comment(b"\x07\x01x\x00\x03ok\x00").as_deref(),
        Some("ok")
    );
}

#[test]
fn nat_table_userdata_limits() {
    assert_eq!(table_userdata(&"x".repeat(253)).unwrap().len(), 256);
    assert_eq!(table_userdata(&"x".repeat(254)), Err(libc::E2BIG));
    assert_eq!(table_userdata("a\0b"), Err(libc::EINVAL));
    assert_eq!(table_userdata("").unwrap(), vec![0, 1, 0]);
}

#[test]
fn nat_map_userdata_is_what_nft_writes() {
    // The NFTA_SET_USERDATA nft 1.0.6 sent for both maps (little-endian host).
    #[cfg(target_endian = "little")]
    assert_eq!(
        map_userdata(),
        vec![
            0x00, 0x04, 0, 0, 0, 0, 0x01, 0x04, 0, 0, 0, 0, 0x03, 0x08, 0x00, 0x04, 0x0d, 0, 0, 0,
            0x01, 0x00, 0x04, 0x08, 0x00, 0x04, 0x0d, 0, 0, 0, 0x01, 0x00, 0x06, 0x04, 0, 0, 0, 0
        ]
    );
    assert_eq!(MAP_KEY_TYPE, 0x30d);
    assert_eq!(MAP_DATA_TYPE4, 0x1cd);
    assert_eq!(MAP_DATA_TYPE6, 0x20d);
    assert_eq!(
        type_name(MAP_DATA_TYPE6),
        "ipv6_addr . inet_service".to_string()
    );
}

#[test]
fn nat_element_encoding() {
    let e: MapElement = (Protocol::Tcp, 80, "198.51.100.25".parse().unwrap(), 8080);
    // `element 00000006 00005000 : 196433c6 0000901f` in nft's (host u32) notation.
    assert_eq!(element_key(&e), [6, 0, 0, 0, 0, 80, 0, 0]);
    assert_eq!(element_data(&e), vec![198, 51, 100, 25, 0x1f, 0x90, 0, 0]);
    assert_eq!(decode_element(&element_key(&e), &element_data(&e)), Some(e));
    let e6: MapElement = (Protocol::Udp, 53, "2001:db8::25".parse().unwrap(), 5353);
    assert_eq!(element_data(&e6).len(), 20);
    assert_eq!(
        decode_element(&element_key(&e6), &element_data(&e6)),
        Some(e6)
    );
    assert_eq!(
        decode_element(&[1, 0, 0, 0, 0, 1, 0, 0], &element_data(&e)),
        None
    );
    assert_eq!(decode_element(&element_key(&e), &[1, 2, 3]), None);
}

/// The directly encoded element list is byte for byte what netlink-packet-netfilter's
/// nested types encode (and what `nat_privileged_same_as_nft` checks against nft).
#[test]
fn nat_element_list_encoding() {
    use netlink_packet_core::Emitable;
    use netlink_packet_netfilter::nftables::SetElementAttribute;

    let elements: [MapElement; 3] = [
        (Protocol::Tcp, 80, "198.51.100.25".parse().unwrap(), 8080),
        (Protocol::Udp, 53, "2001:db8::25".parse().unwrap(), 5353),
        (Protocol::Sctp, 9000, "198.51.100.26".parse().unwrap(), 9000),
    ];
    let nested = SetElementList::Elements(
        elements
            .iter()
            .map(|e| {
                ListAttribute::Element(vec![
                    SetElementAttribute::Key(DataAttribute::Value(element_key(e).to_vec())),
                    SetElementAttribute::Data(DataAttribute::Value(element_data(e))),
                ])
            })
            .collect(),
    );
    let bytes = |nla: &dyn Emitable| {
        let mut buf = vec![0; nla.buffer_len()];
        nla.emit(&mut buf);
        buf
    };
    assert_eq!(bytes(&element_list(&elements)), bytes(&nested));
}

#[test]
fn nat_expected_v4() {
    let s = rules_v4("egress_x").expected();
    let names: Vec<&str> = s.chains.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["forward", "input", "postrouting", "prerouting"]);
    let pre = &s.chains[3];
    assert_eq!(pre.kind.as_deref(), Some("nat"));
    assert_eq!(pre.hook.as_deref(), Some("prerouting"));
    assert_eq!(pre.priority, Some(-100));
    assert_eq!(pre.policy.as_deref(), Some("accept"));
    let comments: Vec<_> = pre
        .rules
        .iter()
        .map(|r| r.comment.clone().unwrap())
        .collect();
    assert_eq!(comments, ["egress dnat4 map", "egress dnat4 fallback"]);
    assert_eq!(
        pre.rules[0].exprs,
        [
            "meta load iifname => reg 1",
            "cmp eq reg 1 0x65746830000000000000000000000000",
            "fib daddr type => reg 1",
            "cmp eq reg 1 0x02000000",
            "meta load nfproto => reg 1",
            "cmp eq reg 1 0x02",
            "meta load l4proto => reg 1",
            "payload load 2b @ transport header + 2 => reg 9",
            "lookup reg 1 set redirect4 dreg 1",
            "nat dnat ip addr_min reg 1 proto_min reg 9",
        ]
    );
    // The fallback counts its connections.
    assert_eq!(
        pre.rules[1].exprs[6..],
        [
            "counter",
            "immediate reg 1 0xc6336409",
            "nat dnat ip addr_min reg 1"
        ]
    );
    let fwd = &s.chains[0];
    assert_eq!(fwd.policy.as_deref(), Some("drop"));
    assert_eq!(fwd.priority, Some(0));
    // Counting first (no verdict), then the filter.
    let comments: Vec<_> = fwd
        .rules
        .iter()
        .map(|r| r.comment.clone().unwrap())
        .collect();
    assert_eq!(
        comments,
        [
            "egress traffic tcp4",
            "egress traffic udp4",
            "egress dnat4 traffic",
            "egress snat4 traffic",
            "egress replies",
            "egress dnat-ed"
        ]
    );
    assert_eq!(
        fwd.rules[0].exprs[7..],
        [
            "ct load proto_dst => reg 1 , dir original",
            "lookup reg 1 set traffic_tcp4"
        ]
    );
    assert_eq!(fwd.rules[2].exprs.last().unwrap(), "counter");
    assert_eq!(
        fwd.rules[4].exprs,
        [
            "ct load state => reg 1",
            "bitwise reg 1 = ( reg 1 & 0x06000000 ) ^ 0x00000000",
            "cmp neq reg 1 0x00000000",
            "immediate reg 0 accept",
        ]
        .map(|s| if cfg!(target_endian = "little") {
            s.to_string()
        } else {
            s.replace("0x06000000", "0x00000006")
        })
    );
    assert_eq!(s.chains[2].rules.len(), 1);
    let sets: Vec<(&str, &[u16])> = s
        .maps
        .iter()
        .map(|m| (m.name.as_str(), m.ports.as_slice()))
        .collect();
    assert_eq!(
        sets,
        [
            ("redirect4", &[][..]),
            ("traffic_tcp4", &[80][..]),
            ("traffic_udp4", &[53][..])
        ]
    );
    assert_eq!(s.maps[0].name, "redirect4");
    assert_eq!(s.maps[0].flags, NFT_SET_MAP);
    assert_eq!(
        s.maps[0].elements,
        vec![
            (Protocol::Tcp, 80, "198.51.100.25".parse().unwrap(), 8080),
            (Protocol::Udp, 53, "198.51.100.26".parse().unwrap(), 53),
        ]
    );
}

#[test]
fn nat_expected_dual_and_plain() {
    let s = rules_dual("egress_x").expected();
    let pre = s.chains.iter().find(|c| c.name == "prerouting").unwrap();
    let comments: Vec<_> = pre
        .rules
        .iter()
        .map(|r| r.comment.clone().unwrap())
        .collect();
    assert_eq!(
        comments,
        [
            "egress dnat4 map",
            "egress dnat4 fallback",
            "egress dnat6 map",
            "egress dnat6 fallback"
        ]
    );
    // IPv6: the port follows a 16-byte address, in register 2.
    assert_eq!(
        pre.rules[2].exprs.last().unwrap(),
        "nat dnat ip6 addr_min reg 1 proto_min reg 2"
    );
    let maps: Vec<_> = s
        .maps
        .iter()
        .map(|m| (m.name.as_str(), m.elements.len() + m.ports.len()))
        .collect();
    assert_eq!(
        maps,
        [
            ("redirect4", 1),
            ("redirect6", 2),
            ("traffic_sctp6", 1),
            ("traffic_tcp4", 1),
            ("traffic_tcp6", 1)
        ]
    );
    let post = s.chains.iter().find(|c| c.name == "postrouting").unwrap();
    assert_eq!(post.rules.len(), 2);

    let s = rules_plain("egress_x").expected();
    let names: Vec<&str> = s.chains.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["forward", "input", "postrouting"]);
    assert!(s.maps.is_empty());

    let only_filter = NatRules {
        snat4: None,
        ..rules_plain("egress_x")
    };
    let names: Vec<String> = only_filter
        .expected()
        .chains
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["forward", "input"]);
}

#[test]
fn nat_summary() {
    let mut r = rules_v4("egress_x");
    r.redirects
        .push(Redirect::of(Protocol::Tcp, 443, "198.51.100.25", 443));
    assert_eq!(
        r.summary(),
        "nft add rules to inet egress_x: dnat 3 redirects via map + fallback 198.51.100.9, \
         snat to 203.0.113.99 on macvlan0, forward filter (policy drop), input filter on \
         macvlan0 (replies, ICMP errors, ping, neighbour discovery)"
    );
    assert_eq!(
        rules_dual("egress_y").summary(),
        "nft add rules to inet egress_y: dnat 3 redirects via map + fallback 198.51.100.9 \
         and 2001:db8:2::9, snat to 203.0.113.99 and 2001:db8:1::99 on macvlan0, forward \
         filter (policy drop), input filter on macvlan0 (replies, ICMP errors, ping, neighbour \
         discovery)"
    );
    assert_eq!(
        rules_plain("egress_z").summary(),
        "nft add rules to inet egress_z: snat to 203.0.113.99 on macvlan0, forward filter \
         (policy drop), input filter on macvlan0 (replies, ICMP errors, ping, neighbour \
         discovery)"
    );
    let fallback_only = NatRules {
        redirects: vec![],
        ..rules_v4("egress_z")
    };
    assert!(fallback_only
        .summary()
        .contains(": dnat to fallback 198.51.100.9, snat"));
}

/// The comments of a chain's rules, in order.
fn comments(chain: &ChainState) -> Vec<&str> {
    chain
        .rules
        .iter()
        .map(|r| r.comment.as_deref().unwrap())
        .collect()
}

/// The input filter: whatever arrives on another link is accepted first; from the external
/// link only replies and the ICMP the protocols need, in the form `nft -f` writes (`icmpv6 type
/// 128-137` is a `gte` and an `lte`); every other packet meets the policy, drop. Every ruleset
/// has it, a plain one too.
#[test]
fn nat_input_filter_keeps_the_external_link_to_replies_and_icmp() {
    for rules in [
        rules_v4("egress_x"),
        rules_dual("egress_x"),
        rules_plain("egress_x"),
    ] {
        let s = rules.expected();
        let input = s.chains.iter().find(|c| c.name == "input").unwrap();
        assert_eq!(
            (
                input.kind.as_deref(),
                input.hook.as_deref(),
                input.priority,
                input.policy.as_deref()
            ),
            (Some("filter"), Some("input"), Some(0), Some("drop"))
        );
        assert_eq!(
            comments(input),
            [
                "egress input other links",
                "egress input replies",
                "egress input icmp4 3",
                "egress input icmp4 8-12",
                "egress input icmp6 1-4",
                "egress input icmp6 128-137",
            ]
        );
        // `iifname != "macvlan0" accept`: the external link by name, as the forward filter.
        assert_eq!(
            input.rules[0].exprs,
            [
                "meta load iifname => reg 1",
                "cmp neq reg 1 0x6d6163766c616e300000000000000000",
                "immediate reg 0 accept",
            ]
        );
        let fwd = s.chains.iter().find(|c| c.name == "forward").unwrap();
        let replies = fwd
            .rules
            .iter()
            .find(|r| r.comment.as_deref() == Some("egress replies"));
        assert_eq!(input.rules[1].exprs, replies.unwrap().exprs);
        assert_eq!(
            input.rules[2].exprs,
            [
                "meta load l4proto => reg 1",
                "cmp eq reg 1 0x01",
                "payload load 1b @ transport header + 0 => reg 1",
                "cmp eq reg 1 0x03",
                "immediate reg 0 accept",
            ]
        );
        assert_eq!(
            input.rules[5].exprs,
            [
                "meta load l4proto => reg 1",
                "cmp eq reg 1 0x3a",
                "payload load 1b @ transport header + 0 => reg 1",
                "cmp gte reg 1 0x80",
                "cmp lte reg 1 0x89",
                "immediate reg 0 accept",
            ]
        );
    }
}

/// The router's own ports are accepted at the head of prerouting, before both families'
/// DNAT, one rule each; without DNAT there is no prerouting chain and nothing to keep them
/// from.
#[test]
fn nat_local_ports_head_prerouting() {
    let local = vec![
        LocalPort {
            protocol: Protocol::Tcp,
            port: 9100,
        },
        LocalPort {
            protocol: Protocol::Udp,
            port: 5353,
        },
    ];
    let r = NatRules {
        local_ports: local.clone(),
        ..rules_dual("egress_x")
    };
    let s = r.expected();
    let pre = s.chains.iter().find(|c| c.name == "prerouting").unwrap();
    assert_eq!(
        comments(pre),
        [
            "egress local tcp/9100",
            "egress local udp/5353",
            "egress dnat4 map",
            "egress dnat4 fallback",
            "egress dnat6 map",
            "egress dnat6 fallback"
        ]
    );
    assert_eq!(
        pre.rules[0].exprs,
        [
            "meta load iifname => reg 1",
            "cmp eq reg 1 0x65746830000000000000000000000000",
            "fib daddr type => reg 1",
            "cmp eq reg 1 0x02000000",
            "meta load l4proto => reg 1",
            "cmp eq reg 1 0x06",
            "payload load 2b @ transport header + 2 => reg 1",
            "cmp eq reg 1 0x238c",
            "immediate reg 0 accept",
        ]
    );
    assert!(r.summary().contains(
        "dnat 3 redirects via map + fallback 198.51.100.9 and 2001:db8:2::9, local ports \
         tcp/9100, udp/5353 accepted, snat"
    ));

    let plain = NatRules {
        local_ports: local,
        ..rules_plain("egress_x")
    };
    assert_eq!(plain.expected(), rules_plain("egress_x").expected());
    assert!(!plain.summary().contains("local ports"));
}

/// What the kernel reports back for our expressions decodes to what we wrote.
#[test]
fn nat_decode_normalizes_kernel_form() {
    let nla = |kind: u16, v: u32| DefaultNla::new(kind, v.to_be_bytes().to_vec());
    let nat = |attributes: Vec<DefaultNla>| {
        vec![
            ExpressionAttribute::Name("nat".into()),
            ExpressionAttribute::Data(Expressions::Other {
                expression_type: "nat".into(),
                attributes,
            }),
        ]
    };
    // [ nat dnat ip addr_min reg 1 addr_max reg 1 proto_min reg 9 proto_max reg 9 flags 0x3 ]
    let kernel = nat(vec![
        nla(NFTA_NAT_TYPE, NFT_NAT_DNAT),
        nla(NFTA_NAT_FAMILY, 2),
        nla(NFTA_NAT_REG_ADDR_MIN, 1),
        nla(NFTA_NAT_REG_ADDR_MAX, 1),
        nla(NFTA_NAT_REG_PROTO_MIN, 9),
        nla(NFTA_NAT_REG_PROTO_MAX, 9),
        nla(NFTA_NAT_FLAGS, 3),
    ]);
    let ours = Expr::Nat {
        nat_type: NFT_NAT_DNAT,
        family: 2,
        addr: Some(1),
        proto: Some(9),
    };
    assert_eq!(Expr::decode(&kernel), Some(ours));
    // A range (max != min) or extra flags is not ours.
    let range = nat(vec![
        nla(NFTA_NAT_TYPE, NFT_NAT_DNAT),
        nla(NFTA_NAT_FAMILY, 2),
        nla(NFTA_NAT_REG_ADDR_MIN, 1),
        nla(NFTA_NAT_REG_ADDR_MAX, 2),
    ]);
    assert_eq!(Expr::decode(&range), None);
    assert!(
        render_raw(&range).starts_with("nat (foreign)"),
        "{}",
        render_raw(&range)
    );
    // Every expression we write, emitted and parsed back by netlink-packet-netfilter, decodes
    // to itself (minus the set id).
    for rules in [rules_v4("t"), rules_dual("t")] {
        for chain in Layout::of(&rules).chains {
            for rule in chain.rules {
                for expr in rule.exprs {
                    let encoded = expr.encode();
                    let mut buf = vec![0; encoded.buffer_len()];
                    encoded.emit(&mut buf);
                    let parsed =
                        ListAttribute::<ExpressionAttribute>::parse(&NlaBuffer::new(&buf[..]))
                            .unwrap();
                    let ListAttribute::Element(attrs) = parsed else {
                        panic!("not an element: {parsed:?}")
                    };
                    let decoded = Expr::decode(&attrs)
                        .unwrap_or_else(|| panic!("{expr:?} does not decode from {attrs:?}"));
                    assert_eq!(decoded.render(), expr.render());
                }
            }
        }
    }
}

#[test]
fn nat_describe_difference() {
    let want = rules_v4("t").expected();
    assert_eq!(describe_difference(&want, None), "the table is missing");
    assert_eq!(describe_difference(&want, Some(&want)), "no difference");
    let mut have = want.clone();
    have.maps[0].elements.pop();
    have.chains[0].policy = Some("accept".into());
    have.chains.retain(|c| c.name != "postrouting");
    let d = describe_difference(&want, Some(&have));
    assert!(d.contains("chain postrouting is missing"), "{d}");
    assert!(
        d.contains("chain forward: type filter hook forward priority 0 policy accept"),
        "{d}"
    );
    assert!(
        d.contains("map redirect4: missing udp . 53 : 198.51.100.26 . 53"),
        "{d}"
    );
    assert!(want.lines().iter().any(|l| l.contains("egress dnat4 map")));
}

#[test]
fn nat_chain_dump_unbroken() {
    use netlink_packet_netfilter::nftables::RuleAttribute::{Handle, Position, UserData};
    // A rule as a chain's dump gives it: its handle, and the handle of the one before it
    // (none for the first).
    let rule = |handle: u64, position: Option<u64>| {
        let mut attributes = vec![Handle(handle)];
        attributes.extend(position.map(Position));
        attributes
    };
    let chain = [rule(4, None), rule(5, Some(4)), rule(9, Some(5))];
    assert!(super::table::unbroken(&chain));
    assert!(super::table::unbroken(&[]));
    // The last rule twice (a dump that resumed one rule early).
    let repeated = [
        rule(4, None),
        rule(5, Some(4)),
        rule(9, Some(5)),
        rule(9, Some(5)),
    ];
    assert!(!super::table::unbroken(&repeated));
    // A rule missed (one that resumed a rule late), and a first rule that is not the first.
    assert!(!super::table::unbroken(&[rule(4, None), rule(9, Some(5))]));
    assert!(!super::table::unbroken(&[
        rule(5, Some(4)),
        rule(9, Some(5))
    ]));
    // A rule without a handle.
    assert!(!super::table::unbroken(&[vec![UserData(vec![])]]));
}

/// Our walk of the rule and set-element lists gives exactly what netlink-packet-netfilter's
/// own parser gives, for every rule and element message an apply writes.
#[test]
fn lists_read_entry_by_entry_parse_as_the_crate_parses_them() {
    let rules = rules_dual("t");
    let (mut rules_seen, mut elements_seen) = (0, 0);
    for (msg, _) in Layout::of(&rules).messages("t", &BTreeSet::new()) {
        let mut body = vec![0; msg.buffer_len()];
        msg.emit(&mut body);
        let NetfilterMessageInner::NfTables(m) = msg.inner else {
            continue;
        };
        let reply = |msg: u8| Reply {
            kind: NFNL_SUBSYS_NFTABLES << 8 | u16::from(msg),
            flags: 0,
            seq: 0,
            body: body.clone(),
        };
        match m {
            NfTablesMessage::NewRule(r) => {
                let ours = reply(NFT_MSG_NEWRULE).inet_attributes(NFT_MSG_NEWRULE, rule_attribute);
                assert_eq!(ours, Some(r.attributes));
                rules_seen += 1;
            }
            NfTablesMessage::NewSetElement(e) => {
                let ours = reply(NFT_MSG_NEWSETELEM)
                    .inet_attributes(NFT_MSG_NEWSETELEM, set_element_attribute);
                // What the crate parses back from the same bytes (our element lists are
                // written as raw attributes, `SetElementList::Other`).
                let crate_parsed = match reply(NFT_MSG_NEWSETELEM).nftables() {
                    Some(NfTablesMessage::NewSetElement(p)) => p.attributes,
                    other => panic!("not a set element message: {other:?} ({e:?})"),
                };
                assert_eq!(ours, Some(crate_parsed));
                elements_seen += 1;
            }
            _ => {}
        }
        // Another message type is not read as this one.
        assert_eq!(
            reply(NFT_MSG_NEWRULE).inet_attributes(NFT_MSG_NEWSETELEM, set_element_attribute),
            None
        );
    }
    assert!(
        rules_seen > 5 && elements_seen >= 2,
        "{rules_seen} rules, {elements_seen} element messages"
    );
}
