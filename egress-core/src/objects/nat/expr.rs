//! The nftables expressions of the router's rules: written with netlink-packet-netfilter's
//! types, read back through its parsers (`fib`, `ct` and `nat`, which it leaves as raw
//! attributes, are read from their values), and rendered in `nft --debug=netlink` notation so
//! that a rule read back compares equal to the rule written.

use std::fmt::Write as _;

use netlink_packet_core::{DefaultNla, Nla, NLA_TYPE_MASK};
use netlink_packet_netfilter::nftables::{
    Bitwise, Cmp, DataAttribute, ExpressionAttribute, Expressions, Immediate, ListAttribute,
    Lookup, Meta, MetaKey, Operator, Payload, Register, Verdict, VerdictAttribute,
};

pub(super) use crate::kernel::nft::be32;
use crate::kernel::nft::consts::*;

/// The expressions this module writes, and reads back in the same (normalized) form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expr {
    Meta {
        key: u32,
        dreg: u32,
    },
    Cmp {
        op: u32,
        sreg: u32,
        data: Vec<u8>,
    },
    Bitwise {
        sreg: u32,
        dreg: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    Payload {
        base: u32,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Lookup {
        set: String,
        /// Only written (the kernel resolves it and does not report it back).
        set_id: Option<u32>,
        sreg: u32,
        dreg: Option<u32>,
    },
    Immediate {
        dreg: u32,
        data: Vec<u8>,
    },
    /// `immediate reg 0 accept`.
    Accept,
    Fib {
        flags: u32,
        result: u32,
        dreg: u32,
    },
    Ct {
        key: u32,
        dreg: u32,
        /// The tuple the key is read from (`IP_CT_DIR_ORIGINAL`), for keys that have one.
        dir: Option<u8>,
    },
    /// `counter`: its values are the kernel's, not part of the rule.
    Counter,
    Nat {
        nat_type: u32,
        family: u32,
        addr: Option<u32>,
        proto: Option<u32>,
    },
}

impl Expr {
    pub(super) fn encode(&self) -> ListAttribute<ExpressionAttribute> {
        let reg = Register::from;
        let exprs = match self {
            Expr::Meta { key, dreg } => Expressions::Meta(vec![
                Meta::Key(MetaKey::from(*key)),
                Meta::DestinationRegister(reg(*dreg)),
            ]),
            Expr::Cmp { op, sreg, data } => Expressions::Cmp(vec![
                Cmp::SourceRegister(reg(*sreg)),
                Cmp::Op(Operator::from(*op)),
                Cmp::Data(DataAttribute::Value(data.clone())),
            ]),
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => Expressions::Bitwise(vec![
                Bitwise::SourceRegister(reg(*sreg)),
                Bitwise::DestinationRegister(reg(*dreg)),
                Bitwise::Length(mask.len() as u32),
                Bitwise::Mask(DataAttribute::Value(mask.clone())),
                Bitwise::Xor(DataAttribute::Value(xor.clone())),
            ]),
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => Expressions::Payload(vec![
                Payload::DestinationRegister(reg(*dreg)),
                Payload::Base(*base),
                Payload::Offset(*offset),
                Payload::Len(*len),
            ]),
            Expr::Lookup {
                set,
                set_id,
                sreg,
                dreg,
            } => {
                let mut attrs = vec![Lookup::SourceRegister(reg(*sreg))];
                attrs.extend(dreg.map(|d| Lookup::DestinationRegister(reg(d))));
                attrs.push(Lookup::Set(set.clone()));
                attrs.extend(set_id.map(Lookup::SetId));
                Expressions::Lookup(attrs)
            }
            Expr::Immediate { dreg, data } => Expressions::Immediate(vec![
                Immediate::DestinationRegister(reg(*dreg)),
                Immediate::Data(DataAttribute::Value(data.clone())),
            ]),
            Expr::Accept => Expressions::Immediate(vec![
                Immediate::DestinationRegister(Register::Verdict),
                Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(
                    Verdict::Other(NF_ACCEPT),
                )])),
            ]),
            Expr::Fib {
                flags,
                result,
                dreg,
            } => Expressions::Other {
                expression_type: "fib".into(),
                attributes: vec![
                    be32(NFTA_FIB_FLAGS, *flags),
                    be32(NFTA_FIB_RESULT, *result),
                    be32(NFTA_FIB_DREG, *dreg),
                ],
            },
            Expr::Ct { key, dreg, dir } => Expressions::Other {
                expression_type: "ct".into(),
                attributes: [be32(NFTA_CT_KEY, *key), be32(NFTA_CT_DREG, *dreg)]
                    .into_iter()
                    .chain(dir.map(|d| DefaultNla::new(NFTA_CT_DIRECTION, vec![d])))
                    .collect(),
            },
            // As nft writes it: no values (the kernel starts at zero).
            Expr::Counter => Expressions::Other {
                expression_type: "counter".into(),
                attributes: vec![],
            },
            Expr::Nat {
                nat_type,
                family,
                addr,
                proto,
            } => {
                // As nft writes it: the kernel derives the max registers and the range flags.
                let mut attributes = vec![
                    be32(NFTA_NAT_TYPE, *nat_type),
                    be32(NFTA_NAT_FAMILY, *family),
                ];
                attributes.extend(addr.map(|r| be32(NFTA_NAT_REG_ADDR_MIN, r)));
                attributes.extend(proto.map(|r| be32(NFTA_NAT_REG_PROTO_MIN, r)));
                Expressions::Other {
                    expression_type: "nat".into(),
                    attributes,
                }
            }
        };
        ListAttribute::from(exprs)
    }

    /// `nft --debug=netlink` notation (register numbers as the kernel stores them, data as hex
    /// bytes).
    pub(super) fn render(&self) -> String {
        match self {
            Expr::Meta { key, dreg } => {
                format!("meta load {} => reg {dreg}", meta_key_name(*key))
            }
            Expr::Cmp { op, sreg, data } => {
                format!("cmp {} reg {sreg} 0x{}", cmp_op_name(*op), hex(data))
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => format!(
                "bitwise reg {dreg} = ( reg {sreg} & 0x{} ) ^ 0x{}",
                hex(mask),
                hex(xor)
            ),
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                let base = match *base {
                    0 => "link".to_string(),
                    1 => "network".to_string(),
                    2 => "transport".to_string(),
                    n => format!("base {n}"),
                };
                format!("payload load {len}b @ {base} header + {offset} => reg {dreg}")
            }
            Expr::Lookup {
                set, sreg, dreg, ..
            } => match dreg {
                Some(d) => format!("lookup reg {sreg} set {set} dreg {d}"),
                None => format!("lookup reg {sreg} set {set}"),
            },
            Expr::Immediate { dreg, data } => format!("immediate reg {dreg} 0x{}", hex(data)),
            Expr::Accept => "immediate reg 0 accept".to_string(),
            Expr::Fib {
                flags,
                result,
                dreg,
            } => {
                let flags = match *flags {
                    1 => "saddr".to_string(),
                    2 => "daddr".to_string(),
                    n => format!("flags {n:#x}"),
                };
                let result = match *result {
                    1 => "oif".to_string(),
                    2 => "oifname".to_string(),
                    3 => "type".to_string(),
                    n => format!("result {n}"),
                };
                format!("fib {flags} {result} => reg {dreg}")
            }
            Expr::Ct { key, dreg, dir } => {
                let key = match *key {
                    NFT_CT_STATE => "state".to_string(),
                    NFT_CT_STATUS => "status".to_string(),
                    NFT_CT_PROTO_DST => "proto_dst".to_string(),
                    n => format!("key {n}"),
                };
                match dir {
                    None => format!("ct load {key} => reg {dreg}"),
                    Some(IP_CT_DIR_ORIGINAL) => {
                        format!("ct load {key} => reg {dreg} , dir original")
                    }
                    Some(d) => format!("ct load {key} => reg {dreg} , dir {d}"),
                }
            }
            Expr::Counter => "counter".to_string(),
            Expr::Nat {
                nat_type,
                family,
                addr,
                proto,
            } => {
                let mut s = format!(
                    "nat {} {}",
                    match *nat_type {
                        NFT_NAT_SNAT => "snat".to_string(),
                        NFT_NAT_DNAT => "dnat".to_string(),
                        n => format!("type {n}"),
                    },
                    match *family {
                        2 => "ip".to_string(),
                        10 => "ip6".to_string(),
                        n => format!("family {n}"),
                    }
                );
                if let Some(r) = addr {
                    let _ = write!(s, " addr_min reg {r}");
                }
                if let Some(r) = proto {
                    let _ = write!(s, " proto_min reg {r}");
                }
                s
            }
        }
    }
}

/// The value of a raw attribute.
fn value(nla: &DefaultNla) -> Vec<u8> {
    let mut v = vec![0; nla.value_len()];
    nla.emit_value(&mut v);
    v
}

/// The raw attributes of an expression the crate does not parse, as `(type, u32 value)` —
/// `None` when one is not a 32-bit big-endian number.
fn numbers(attributes: &[DefaultNla]) -> Option<Vec<(u16, u32)>> {
    attributes
        .iter()
        .map(|a| {
            let v: [u8; 4] = value(a).try_into().ok()?;
            Some((a.kind() & NLA_TYPE_MASK, u32::from_be_bytes(v)))
        })
        .collect()
}

/// The one `(type, value)` of each of `kinds`, in order, when `attrs` holds exactly those
/// (`optional` ones may be absent).
fn exactly(attrs: &[(u16, u32)], kinds: &[u16], optional: &[u16]) -> Option<Vec<Option<u32>>> {
    let known = attrs
        .iter()
        .all(|(k, _)| kinds.contains(k) || optional.contains(k));
    let once = |k: u16| attrs.iter().filter(|(a, _)| *a == k).count() <= 1;
    if !known || !kinds.iter().chain(optional).all(|k| once(*k)) {
        return None;
    }
    let get = |k: u16| attrs.iter().find(|(a, _)| *a == k).map(|(_, v)| *v);
    if kinds.iter().any(|k| get(*k).is_none()) {
        return None;
    }
    Some(kinds.iter().chain(optional).map(|k| get(*k)).collect())
}

impl Expr {
    /// Reads one expression (a list element of a rule, as the crate parsed it), normalizing
    /// what the kernel adds (NAT max registers and range flags, lookup flags 0, bitwise op
    /// "mask and xor"). `None` for anything else: the caller renders it raw, so it never
    /// compares equal to ours.
    pub(super) fn decode(attrs: &[ExpressionAttribute]) -> Option<Expr> {
        let data = attrs.iter().find_map(|a| match a {
            ExpressionAttribute::Data(d) => Some(d),
            _ => None,
        })?;
        let reg = |r: &Register| u32::from(*r);
        let bytes = |d: &DataAttribute| match d {
            DataAttribute::Value(v) => Some(v.clone()),
            _ => None,
        };
        match data {
            Expressions::Meta(m) => {
                let (mut key, mut dreg) = (None, None);
                for a in m {
                    match a {
                        Meta::Key(k) => key = Some(u32::from(*k)),
                        Meta::DestinationRegister(r) => dreg = Some(reg(r)),
                        _ => return None,
                    }
                }
                Some(Expr::Meta {
                    key: key?,
                    dreg: dreg?,
                })
            }
            Expressions::Cmp(c) => {
                let (mut op, mut sreg, mut data) = (None, None, None);
                for a in c {
                    match a {
                        Cmp::Op(o) => op = Some(u32::from(*o)),
                        Cmp::SourceRegister(r) => sreg = Some(reg(r)),
                        Cmp::Data(d) => data = Some(bytes(d)?),
                        _ => return None,
                    }
                }
                Some(Expr::Cmp {
                    op: op?,
                    sreg: sreg?,
                    data: data?,
                })
            }
            Expressions::Bitwise(b) => {
                let (mut sreg, mut dreg, mut len, mut mask, mut xor) =
                    (None, None, None, None, None);
                for a in b {
                    match a {
                        Bitwise::SourceRegister(r) => sreg = Some(reg(r)),
                        Bitwise::DestinationRegister(r) => dreg = Some(reg(r)),
                        Bitwise::Length(l) => len = Some(*l as usize),
                        Bitwise::Mask(d) => mask = Some(bytes(d)?),
                        Bitwise::Xor(d) => xor = Some(bytes(d)?),
                        Bitwise::Op(0) => {}
                        _ => return None,
                    }
                }
                let (mask, xor) = (mask?, xor?);
                (Some(mask.len()) == len && Some(xor.len()) == len).then_some(Expr::Bitwise {
                    sreg: sreg?,
                    dreg: dreg?,
                    mask,
                    xor,
                })
            }
            Expressions::Payload(p) => {
                let (mut base, mut offset, mut len, mut dreg) = (None, None, None, None);
                for a in p {
                    match a {
                        Payload::Base(v) => base = Some(*v),
                        Payload::Offset(v) => offset = Some(*v),
                        Payload::Len(v) => len = Some(*v),
                        Payload::DestinationRegister(r) => dreg = Some(reg(r)),
                        _ => return None,
                    }
                }
                Some(Expr::Payload {
                    base: base?,
                    offset: offset?,
                    len: len?,
                    dreg: dreg?,
                })
            }
            Expressions::Lookup(l) => {
                let (mut set, mut sreg, mut dreg) = (None, None, None);
                for a in l {
                    match a {
                        Lookup::Set(s) => set = Some(s.clone()),
                        Lookup::SourceRegister(r) => sreg = Some(reg(r)),
                        Lookup::DestinationRegister(r) => dreg = Some(reg(r)),
                        Lookup::SetId(_) | Lookup::Flags(0) => {}
                        _ => return None,
                    }
                }
                Some(Expr::Lookup {
                    set: set?,
                    set_id: None,
                    sreg: sreg?,
                    dreg,
                })
            }
            Expressions::Immediate(i) => {
                let (mut dreg, mut data) = (None, None);
                for a in i {
                    match a {
                        Immediate::DestinationRegister(r) => dreg = Some(reg(r)),
                        Immediate::Data(d) => data = Some(d),
                        _ => return None,
                    }
                }
                match (dreg?, data?) {
                    (NFT_REG_VERDICT, DataAttribute::Verdict(v)) => {
                        let accept = matches!(
                            v.as_slice(),
                            [VerdictAttribute::Code(Verdict::Other(NF_ACCEPT))]
                        );
                        accept.then_some(Expr::Accept)
                    }
                    (NFT_REG_VERDICT, _) => None,
                    (dreg, d) => Some(Expr::Immediate {
                        dreg,
                        data: bytes(d)?,
                    }),
                }
            }
            // A counter's values are the kernel's: any counter is this one.
            Expressions::Other {
                expression_type, ..
            } if expression_type == "counter" => Some(Expr::Counter),
            Expressions::Other {
                expression_type,
                attributes,
            } => {
                // `ct`'s direction is the one attribute that is a byte.
                let (dirs, attributes): (Vec<_>, Vec<_>) =
                    attributes.iter().cloned().partition(|a| {
                        expression_type == "ct" && a.kind() & NLA_TYPE_MASK == NFTA_CT_DIRECTION
                    });
                let dir = match dirs.as_slice() {
                    [] => None,
                    [d] => Some(*value(d).first()?).filter(|_| value(d).len() == 1),
                    _ => return None,
                };
                if dir.is_none() && !dirs.is_empty() {
                    return None;
                }
                let attrs = numbers(&attributes)?;
                match expression_type.as_str() {
                    "fib" => {
                        let v = exactly(
                            &attrs,
                            &[NFTA_FIB_FLAGS, NFTA_FIB_RESULT, NFTA_FIB_DREG],
                            &[],
                        )?;
                        Some(Expr::Fib {
                            flags: v[0]?,
                            result: v[1]?,
                            dreg: v[2]?,
                        })
                    }
                    "ct" => {
                        let v = exactly(&attrs, &[NFTA_CT_KEY, NFTA_CT_DREG], &[])?;
                        Some(Expr::Ct {
                            key: v[0]?,
                            dreg: v[1]?,
                            dir,
                        })
                    }
                    "nat" => {
                        let v = exactly(
                            &attrs,
                            &[NFTA_NAT_TYPE, NFTA_NAT_FAMILY],
                            &[
                                NFTA_NAT_REG_ADDR_MIN,
                                NFTA_NAT_REG_ADDR_MAX,
                                NFTA_NAT_REG_PROTO_MIN,
                                NFTA_NAT_REG_PROTO_MAX,
                                NFTA_NAT_FLAGS,
                            ],
                        )?;
                        let (addr, addr_max, proto, proto_max, flags) =
                            (v[2], v[3], v[4], v[5], v[6]);
                        let derived = addr.map_or(0, |_| NF_NAT_RANGE_MAP_IPS)
                            | proto.map_or(0, |_| NF_NAT_RANGE_PROTO_SPECIFIED);
                        let normal = addr_max.is_none_or(|m| Some(m) == addr)
                            && proto_max.is_none_or(|m| Some(m) == proto)
                            && flags.is_none_or(|f| f == derived);
                        normal.then_some(Expr::Nat {
                            nat_type: v[0]?,
                            family: v[1]?,
                            addr,
                            proto,
                        })
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// An expression this module does not write, shown raw.
pub(super) fn render_raw(attrs: &[ExpressionAttribute]) -> String {
    let name = attrs
        .iter()
        .find_map(|a| match a {
            ExpressionAttribute::Name(n) => Some(n.as_str()),
            _ => None,
        })
        .unwrap_or("?");
    let mut s = format!("{name} (foreign)");
    for a in attrs {
        if let ExpressionAttribute::Data(d) = a {
            let _ = write!(s, " {d:?}");
        }
    }
    s
}

fn meta_key_name(key: u32) -> String {
    match key {
        NFT_META_IIFNAME => "iifname".into(),
        NFT_META_OIFNAME => "oifname".into(),
        NFT_META_NFPROTO => "nfproto".into(),
        NFT_META_L4PROTO => "l4proto".into(),
        n => format!("key {n}"),
    }
}

fn cmp_op_name(op: u32) -> String {
    match op {
        NFT_CMP_EQ => "eq".into(),
        NFT_CMP_NEQ => "neq".into(),
        NFT_CMP_LTE => "lte".into(),
        NFT_CMP_GTE => "gte".into(),
        n => format!("op {n}"),
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
