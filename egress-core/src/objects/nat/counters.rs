//! The counters of the router's table: each rule's (by its comment) and each element's of the
//! counting sets and maps, for `stats` and `diagnose`.

use std::{collections::BTreeMap, net::IpAddr};

use netlink_packet_core::{Nla, NlasIterator, NLA_TYPE_MASK};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ExpressionAttribute, Expressions, Immediate, ListAttribute, NfTablesMessage,
    RuleAttribute, SetElementList, SetElementMessage,
};

use super::layout::decode_comment;
use crate::{
    error::Result,
    kernel::nft::{consts::*, inet, NftSocket},
};

/// What the counters of a router's table hold: each rule's (by its comment), with the address
/// the rule writes (a fallback's, a SNAT source), and each element's of the counting sets and
/// maps (by set and key).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// `comment → (its counter, the address it writes)`.
    pub rules: BTreeMap<String, (Option<Count>, Option<IpAddr>)>,
    /// `(set, key bytes) → count`.
    pub elements: BTreeMap<(String, Vec<u8>), Count>,
}

/// A counter's values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Count {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

impl NftSocket {
    /// The counters of `table` (`None` when it does not exist): its rules
    /// ([`rules`](Self::rules)), and one dump of each set's elements.
    pub(crate) fn counters(&mut self, table: &str) -> Result<Option<Counters>> {
        let op = format!("nft list table inet {table} (its counters)");
        if !self.exists(&op, table)? {
            return Ok(None);
        }
        let mut out = Counters::default();
        for attributes in self.chains(&op, table)?.into_iter().flat_map(|(_, r)| r) {
            let (mut comment, mut count, mut address) = (None, None, None);
            for a in attributes {
                match a {
                    RuleAttribute::UserData(u) => comment = decode_comment(&u),
                    RuleAttribute::Expressions(list) => {
                        for e in list.iter().filter_map(|e| match e {
                            ListAttribute::Element(attrs) => Some(attrs),
                            _ => None,
                        }) {
                            count = count.or_else(|| rule_counter(e));
                            address = address.or_else(|| immediate_address(e));
                        }
                    }
                    _ => {}
                }
            }
            if let Some(comment) = comment {
                out.rules.insert(comment, (count, address));
            }
        }
        for set in self.maps(&op, table, false)? {
            let replies = self.dump(&op, || {
                inet(NfTablesMessage::GetSetElement(SetElementMessage {
                    attributes: vec![
                        SetElementList::Table(table.to_string()),
                        SetElementList::Set(set.name.clone()),
                    ],
                }))
            })?;
            for r in &replies {
                element_counters(&r.body, &set.name, &mut out.elements);
            }
        }
        Ok(Some(out))
    }
}

/// The values of a rule's `counter` expression (as the crate parses it: raw attributes).
fn rule_counter(attrs: &[ExpressionAttribute]) -> Option<Count> {
    attrs.iter().find_map(|a| match a {
        ExpressionAttribute::Data(Expressions::Other {
            expression_type,
            attributes,
        }) if expression_type == "counter" => {
            let u64_of = |kind: u16| {
                attributes
                    .iter()
                    .find(|n| n.kind() & NLA_TYPE_MASK == kind)
                    .and_then(|n| {
                        let mut v = vec![0; n.value_len()];
                        n.emit_value(&mut v);
                        Some(u64::from_be_bytes(v.try_into().ok()?))
                    })
            };
            Some(Count {
                packets: u64_of(NFTA_COUNTER_PACKETS)?,
                bytes: u64_of(NFTA_COUNTER_BYTES)?,
            })
        }
        _ => None,
    })
}

/// The address an `immediate` expression loads (a fallback's, a SNAT source), if it loads one.
fn immediate_address(attrs: &[ExpressionAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|a| match a {
        ExpressionAttribute::Data(Expressions::Immediate(i)) => i.iter().find_map(|x| match x {
            Immediate::Data(DataAttribute::Value(v)) => match v.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(&v[..]).ok()?)),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(&v[..]).ok()?)),
                _ => None,
            },
            _ => None,
        }),
        _ => None,
    })
}

/// Adds the counters of the elements in one dump message of set `set`'s elements. Read with
/// netlink-packet-core's attribute iterator: netlink-packet-netfilter 0.4 parses an element's
/// `NFTA_SET_ELEM_EXPR` as a single attribute and loses the counter's values.
fn element_counters(body: &[u8], set: &str, out: &mut BTreeMap<(String, Vec<u8>), Count>) {
    let nested = |v: &[u8]| -> Vec<(u16, Vec<u8>)> {
        NlasIterator::new(v)
            .filter_map(|n| n.ok())
            .map(|n| (n.kind() & NLA_TYPE_MASK, n.value().to_vec()))
            .collect()
    };
    let find = |attrs: &[(u16, Vec<u8>)], kind: u16| {
        attrs
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.clone())
    };
    let Some(top) = body.get(4..).map(nested) else {
        return;
    };
    let named = find(&top, 2).and_then(|n| {
        String::from_utf8(n.split(|b| *b == 0).next().unwrap_or_default().to_vec()).ok()
    });
    if named.as_deref() != Some(set) {
        return;
    }
    let Some(list) = find(&top, NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return;
    };
    for elem in nested(&list)
        .into_iter()
        .filter(|(k, _)| *k == NFTA_LIST_ELEM)
    {
        let attrs = nested(&elem.1);
        let key = find(&attrs, NFTA_SET_ELEM_KEY).and_then(|k| find(&nested(&k), NFTA_DATA_VALUE));
        let count = find(&attrs, NFTA_SET_ELEM_EXPR).and_then(|e| {
            let e = nested(&e);
            (find(&e, NFTA_EXPR_NAME)?.starts_with(b"counter\0")).then_some(())?;
            let data = nested(&find(&e, NFTA_EXPR_DATA)?);
            let u64_of = |kind| Some(u64::from_be_bytes(find(&data, kind)?.try_into().ok()?));
            Some(Count {
                packets: u64_of(NFTA_COUNTER_PACKETS)?,
                bytes: u64_of(NFTA_COUNTER_BYTES)?,
            })
        });
        if let (Some(key), Some(count)) = (key, count) {
            out.insert((set.to_string(), key), count);
        }
    }
}
