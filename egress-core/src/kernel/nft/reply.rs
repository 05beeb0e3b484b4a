//! The kernel's nftables replies, decoded: every attribute by netlink-packet-netfilter's
//! parsers, the list attributes (a rule's expressions, a set's elements) walked here (see
//! [`Reply::inet_attributes`]).

use netlink_packet_core::{
    DecodeError, NlaBuffer, NlasIterator, Parseable, ParseableParametrized, NLA_TYPE_MASK,
};
use netlink_packet_netfilter::{
    nftables::{
        ExpressionAttribute, Expressions, ListAttribute, NfTablesMessage, RuleAttribute,
        SetElementList,
    },
    NetfilterMessage, NetfilterMessageInner,
};

use super::consts::*;

/// One netlink message from the kernel.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) kind: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// For NLMSG_ERROR: the positive errno, 0 for an ack.
    pub(crate) fn errno(&self) -> i32 {
        self.body.get(..4).map_or(libc::EBADMSG, |b| {
            -i32::from_ne_bytes([b[0], b[1], b[2], b[3]])
        })
    }

    /// The nftables message in the reply, as netlink-packet-netfilter parses it.
    pub(crate) fn nftables(&self) -> Option<NfTablesMessage> {
        match NetfilterMessage::parse_with_param(&self.body[..], self.kind) {
            Ok(NetfilterMessage {
                inner: NetfilterMessageInner::NfTables(m),
                ..
            }) => Some(m),
            _ => None,
        }
    }

    /// The nftables message in the reply, when it is about family `inet`.
    pub(crate) fn inet(&self) -> Option<NfTablesMessage> {
        (self.body.first() == Some(&NFPROTO_INET))
            .then(|| self.nftables())
            .flatten()
    }

    /// The attributes of an `inet` nftables reply of type `msg` (`NFT_MSG_*`), each parsed by
    /// `parse`; `None` if the reply is another message or an attribute does not parse (as
    /// [`nftables`](Self::nftables) would fail).
    ///
    /// The rule and set-element replies are read this way: netlink-packet-netfilter 0.4 parses
    /// a list attribute (a rule's expressions, a set's elements) with an error context that
    /// formats the whole list as `Debug` text for each entry, eagerly — quadratic work for a
    /// message that is never shown, which was a third of an apply's CPU (its verify reads the
    /// rules back). The list is walked here; every entry is still parsed by the crate.
    pub(crate) fn inet_attributes<A>(
        &self,
        msg: u8,
        parse: fn(&NlaBuffer<&[u8]>) -> std::result::Result<A, DecodeError>,
    ) -> Option<Vec<A>> {
        if self.kind != (NFNL_SUBSYS_NFTABLES << 8 | u16::from(msg))
            || self.body.first() != Some(&NFPROTO_INET)
        {
            return None;
        }
        NlasIterator::new(self.body.get(4..)?)
            .map(|nla| parse(&nla.ok()?).ok())
            .collect()
    }
}

/// One attribute of a rule (`NFT_MSG_NEWRULE`), its expression list read by [`expressions`].
pub(crate) fn rule_attribute(
    nla: &NlaBuffer<&[u8]>,
) -> std::result::Result<RuleAttribute, DecodeError> {
    match nla.kind() & NLA_TYPE_MASK {
        NFTA_RULE_EXPRESSIONS => expressions(nla.value()).map(RuleAttribute::Expressions),
        _ => RuleAttribute::parse(nla),
    }
}

/// One attribute of a set's elements (`NFT_MSG_NEWSETELEM`), the element list walked entry by
/// entry (see [`Reply::inet_attributes`]).
pub(crate) fn set_element_attribute(
    nla: &NlaBuffer<&[u8]>,
) -> std::result::Result<SetElementList, DecodeError> {
    match nla.kind() & NLA_TYPE_MASK {
        NFTA_SET_ELEM_LIST_ELEMENTS => list_entries(nla.value()).map(SetElementList::Elements),
        _ => SetElementList::parse(nla),
    }
}

/// The entries (`NFTA_LIST_ELEM`) of a list attribute's value, each parsed by the crate.
fn list_entries<T>(value: &[u8]) -> std::result::Result<Vec<ListAttribute<T>>, DecodeError>
where
    for<'a> ListAttribute<T>: Parseable<NlaBuffer<&'a [u8]>>,
{
    each(value)
}

/// Every attribute of `value`, each parsed as a `T` by the crate.
fn each<T>(value: &[u8]) -> std::result::Result<Vec<T>, DecodeError>
where
    for<'a> T: Parseable<NlaBuffer<&'a [u8]>>,
{
    NlasIterator::new(value)
        .map(|nla| T::parse(&nla?))
        .collect()
}

/// The entries of a rule's expression list: each expression's name, and its data parsed
/// attribute by attribute by the crate's parser for that expression type. The crate's own
/// `Expressions` parser does the same dispatch but formats the whole data as `Debug` text
/// for every attribute (see [`Reply::inet_attributes`]).
fn expressions(
    value: &[u8],
) -> std::result::Result<Vec<ListAttribute<ExpressionAttribute>>, DecodeError> {
    NlasIterator::new(value)
        .map(|entry| {
            let entry = entry?;
            if entry.kind() != NFTA_LIST_ELEM {
                return ListAttribute::parse(&entry);
            }
            let mut name = None;
            let mut attrs = Vec::new();
            for a in NlasIterator::new(entry.value()) {
                let a = a?;
                attrs.push(match a.kind() {
                    NFTA_EXPR_DATA => {
                        ExpressionAttribute::Data(expression_data(name.as_deref(), a.value())?)
                    }
                    _ => {
                        let a = ExpressionAttribute::parse_with_param(&a, None)?;
                        if let ExpressionAttribute::Name(n) = &a {
                            name = Some(n.clone());
                        }
                        a
                    }
                });
            }
            Ok(ListAttribute::Element(attrs))
        })
        .collect()
}

/// An expression's data (`NFTA_EXPR_DATA`), as the expression type `name` defines it.
fn expression_data(
    name: Option<&str>,
    value: &[u8],
) -> std::result::Result<Expressions, DecodeError> {
    Ok(match name {
        Some("bitwise") => Expressions::Bitwise(each(value)?),
        Some("cmp") => Expressions::Cmp(each(value)?),
        Some("immediate") => Expressions::Immediate(each(value)?),
        Some("lookup") => Expressions::Lookup(each(value)?),
        Some("meta") => Expressions::Meta(each(value)?),
        Some("payload") => Expressions::Payload(each(value)?),
        Some(other) => Expressions::Other {
            expression_type: other.to_string(),
            attributes: each(value)?,
        },
        None => Expressions::Unknown(each(value)?),
    })
}
