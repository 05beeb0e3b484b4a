//! nftables over netlink: the router's NAT and forward filter, installed as one atomic batch.
//!
//! A small blocking client for `NETLINK_NETFILTER` (a call takes about a millisecond, 20 ms for
//! 10,000 redirects; the async core calls it directly). It writes exactly the messages `nft -f`
//! (1.0.6) writes for this ruleset (only the map elements come last, see `Layout::messages`), so
//! `nft list ruleset` prints it back as written:
//!
//! ```text
//! table inet egress_x {
//!     comment "…"                                  # create_table; install never touches it
//!     map redirect4 { type inet_proto . inet_service : ipv4_addr . inet_service; elements = … }
//!     map redirect6 { type inet_proto . inet_service : ipv6_addr . inet_service; elements = … }
//!     chain prerouting { type nat hook prerouting priority dstnat; policy accept;
//!         iifname "eth0" fib daddr type local meta nfproto ipv4 dnat ip to meta l4proto . th dport map @redirect4 comment "egress dnat4 map"
//!         iifname "eth0" fib daddr type local meta nfproto ipv4 dnat ip to 198.51.100.9 comment "egress dnat4 fallback"
//!         (the same for ipv6) }
//!     chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!         oifname "macvlan0" meta nfproto ipv4 snat ip to 203.0.113.99 comment "egress snat4"  (and ipv6) }
//!     chain forward { type filter hook forward priority filter; policy drop;
//!         ct state established,related accept comment "egress replies"
//!         iifname "eth0" oifname "macvlan0" ct status dnat accept comment "egress dnat-ed" }
//! }
//! ```
//!
//! Maps and chains exist only when they hold something (no `redirect6` without IPv6 redirects,
//! no `prerouting` without redirects or fallback, no `postrouting` without a SNAT source); the
//! forward filter always exists.
//!
//! Every change is one nfnetlink batch (`NFNL_MSG_BATCH_BEGIN` … `END`, one `sendmsg`): the
//! kernel applies all of it or, on the first error, none of it.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::raw::c_int,
    time::Duration,
};

use netlink_packet_core::{
    DefaultNla, NetlinkMessage, NLA_F_NESTED, NLA_TYPE_MASK, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_netfilter::{
    nftables::{
        Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute,
        Expressions, GenMessage, Hook, HookNumber, Immediate, InetHookNumber, ListAttribute,
        Lookup, Meta, MetaKey, NfTablesMessage, Operator, Payload, Register, RuleAttribute,
        RuleMessage, SetAttribute, SetDescription, SetElementList, SetElementMessage, SetFlags,
        SetMessage, TableAttribute, TableFlags, TableMessage, Verdict, VerdictAttribute,
    },
    none::ControlMessage,
    NetfilterHeader, NetfilterMessage, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::sys::{
    socket::{getsockopt, setsockopt, sockopt},
    time::TimeVal,
};

use crate::{
    error::{Error, Result},
    spec::{Protocol, Redirect},
};

// ---------------------------------------------------------------------------------------------
// Kernel and nft constants. Values from include/uapi/linux/netfilter/nf_tables.h, nfnetlink.h,
// nf_nat.h and libnftnl's udata.h; the ones written on the wire were checked against
// `nft --debug=netlink,mnl` on this kernel.
// ---------------------------------------------------------------------------------------------

/// `NFNL_SUBSYS_NFTABLES`: the `res_id` of a batch's begin/end messages.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN`.
const NFNL_MSG_BATCH_BEGIN: u8 = 16;
/// `NFNL_BATCH_GENID`: batch attribute; the kernel refuses the batch (ERESTART) if the ruleset
/// generation moved on since it was read.
const NFNL_BATCH_GENID: u16 = 1;
/// `NFNETLINK_V0`.
const NFNETLINK_V0: u8 = 0;
/// `NFPROTO_INET` in the nfgenmsg header.
const NFPROTO_INET: u8 = 1;

// Netlink message types (nfnetlink subsystem in the high byte).
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NFT_MSG_NEWTABLE: u8 = 0;
const NFT_MSG_NEWCHAIN: u8 = 3;
const NFT_MSG_NEWRULE: u8 = 6;
const NFT_MSG_NEWSET: u8 = 9;
const NFT_MSG_NEWSETELEM: u8 = 12;
const NFT_MSG_NEWGEN: u8 = 15;

// Attributes read back from dumps.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_GEN_ID: u16 = 1;

// Expression attributes.
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_BITWISE_OP: u16 = 6;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_DREG: u16 = 3;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_LOOKUP_FLAGS: u16 = 5;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_ADDR_MAX: u16 = 4;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NAT_REG_PROTO_MAX: u16 = 6;
const NFTA_NAT_FLAGS: u16 = 7;

// Expression values.
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;
const NFT_REG32_01: u32 = 9;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFTA_FIB_F_DADDR: u32 = 2;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
/// `RTN_LOCAL`, host byte order in the register.
const RTN_LOCAL: u32 = 2;
const NFT_CT_STATE: u32 = 0;
const NFT_CT_STATUS: u32 = 2;
/// `NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED)`.
const CT_STATE_ESTABLISHED_RELATED: u32 = 0x2 | 0x4;
/// `IPS_DST_NAT`.
const IPS_DST_NAT: u32 = 0x20;
const NFT_NAT_SNAT: u32 = 0;
const NFT_NAT_DNAT: u32 = 1;
/// `NF_NAT_RANGE_MAP_IPS` / `NF_NAT_RANGE_PROTO_SPECIFIED`: the kernel derives them from the
/// registers present and reports them back.
const NF_NAT_RANGE_MAP_IPS: u32 = 0x1;
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 0x2;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_FORWARD: u32 = 2;
const NF_INET_POST_ROUTING: u32 = 4;
const NF_IP_PRI_NAT_DST: i32 = -100;
const NF_IP_PRI_FILTER: i32 = 0;
const NF_IP_PRI_NAT_SRC: i32 = 100;
/// `NFT_SET_MAP`.
const NFT_SET_MAP: u32 = 0x8;
/// nft's datatype ids (`TYPE_*` in nft's datatype.h); a concatenation is
/// `(a << TYPE_BITS) | b` with `TYPE_BITS` = 6.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_BITS: u32 = 6;
/// `inet_proto . inet_service`.
const MAP_KEY_TYPE: u32 = (TYPE_INET_PROTOCOL << TYPE_BITS) | TYPE_INET_SERVICE;
/// `ipv4_addr . inet_service`.
const MAP_DATA_TYPE4: u32 = (TYPE_IPADDR << TYPE_BITS) | TYPE_INET_SERVICE;
/// `ipv6_addr . inet_service`.
const MAP_DATA_TYPE6: u32 = (TYPE_IP6ADDR << TYPE_BITS) | TYPE_INET_SERVICE;
/// Key: protocol (1 byte, padded to 4) . port (2 bytes big endian, padded to 4).
const MAP_KEY_LEN: usize = 8;

/// `NFT_USERDATA_MAXLEN`: the most userdata a table, chain or rule can carry.
const USERDATA_MAX: usize = 256;
/// `NFTNL_UDATA_TABLE_COMMENT` / `NFTNL_UDATA_RULE_COMMENT`.
const UDATA_COMMENT: u8 = 0;
/// libnftnl's set udata types (`NFTNL_UDATA_SET_*`).
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const UDATA_SET_DATABYTEORDER: u8 = 1;
const UDATA_SET_KEY_TYPEOF: u8 = 3;
const UDATA_SET_DATA_TYPEOF: u8 = 4;
const UDATA_SET_DATA_INTERVAL: u8 = 6;
/// nft's `EXPR_CONCAT` tag in a typeof record.
const UDATA_TYPEOF_CONCAT: u32 = 13;

/// Map elements per NEWSETELEM message: an element is at most 48 bytes (IPv6), and the
/// element list is one attribute with a 16-bit length.
const ELEMENTS_PER_MESSAGE: usize = 1000;
const _: () = assert!(ELEMENTS_PER_MESSAGE * 48 + 64 < u16::MAX as usize);
/// What the send buffer is raised to when the socket is opened (a batch of 10,000 IPv6 map
/// elements is about 0.5 MB; larger batches raise it again before sending).
const SEND_BUFFER: usize = 4 << 20;
/// Receive buffer for one datagram (dumps come in ≤ 32 KiB datagrams).
const RECV_BUFFER: usize = 256 << 10;
/// How long to wait for the kernel's answer (it answers synchronously; this only guards
/// against a lost reply).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts for reads and repairs that race with another writer.
const ATTEMPTS: usize = 5;

/// Chain and map names, and the rule comments that identify each rule.
const CHAIN_PREROUTING: &str = "prerouting";
const CHAIN_POSTROUTING: &str = "postrouting";
const CHAIN_FORWARD: &str = "forward";
const MAP4: &str = "redirect4";
const MAP6: &str = "redirect6";

// ---------------------------------------------------------------------------------------------
// Public (crate) API
// ---------------------------------------------------------------------------------------------

/// One nftables table of family `inet`, as listed by [`NftSocket::tables`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableInfo {
    /// Table name.
    pub name: String,
    /// The table's comment (`nft add table … { comment "…" }`), if it carries one.
    pub comment: Option<String>,
}

/// Everything the router's table holds besides its comment: what [`NftSocket::install`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NatRules {
    /// The table (family `inet`), created beforehand by [`NftSocket::create_table`].
    pub table: String,
    /// The internal (cluster) link: DNAT applies to what arrives here.
    pub internal: String,
    /// The external link: SNAT applies to what leaves here.
    pub external: String,
    /// IPv4 SNAT source.
    pub snat4: Option<Ipv4Addr>,
    /// IPv6 SNAT source.
    pub snat6: Option<Ipv6Addr>,
    /// Port redirects; the family of `to` picks the map.
    pub redirects: Vec<Redirect>,
    /// IPv4 DNAT destination for everything else.
    pub fallback4: Option<Ipv4Addr>,
    /// IPv6 DNAT destination for everything else.
    pub fallback6: Option<Ipv6Addr>,
}

/// One element of a redirect map: `protocol . port : to . to_port`.
pub(crate) type MapElement = (Protocol, u16, IpAddr, u16);

/// What a table holds (chains with their rules, maps with their elements), in a form that
/// compares equal to [`NatRules::expected`] exactly when the kernel holds what was installed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct NatState {
    /// Chains, sorted by name.
    pub chains: Vec<ChainState>,
    /// Maps and sets, sorted by name.
    pub maps: Vec<MapState>,
}

/// A chain and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainState {
    /// Chain name.
    pub name: String,
    /// `nat`, `filter`, … (base chains only).
    pub kind: Option<String>,
    /// `prerouting`, `forward`, … (base chains only).
    pub hook: Option<String>,
    /// Hook priority (base chains only).
    pub priority: Option<i32>,
    /// `accept` / `drop` (base chains only).
    pub policy: Option<String>,
    /// The rules, in evaluation order.
    pub rules: Vec<RuleState>,
}

/// A rule: its comment and its expressions, in `nft --debug=netlink` notation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleState {
    /// The rule's comment.
    pub comment: Option<String>,
    /// The expressions, e.g. `meta load iifname => reg 1`.
    pub exprs: Vec<String>,
}

/// A map (or set) and its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MapState {
    /// Map name.
    pub name: String,
    /// nft key type id (`inet_proto . inet_service`).
    pub key_type: u32,
    /// nft data type id (`ipv4_addr . inet_service`, …).
    pub data_type: u32,
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// Elements decoded as redirects, sorted.
    pub elements: Vec<MapElement>,
    /// Elements that do not decode as redirects, as `key-hex : data-hex`, sorted.
    pub other_elements: Vec<String>,
}

/// A blocking nftables netlink socket, bound to the namespace it was opened in.
#[derive(Debug)]
pub(crate) struct NftSocket {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl NftSocket {
    /// Opens the socket. Must be called on a thread inside the target namespace (the caller
    /// uses `NsHandle::run(NftSocket::open)`); the socket is then usable from any thread.
    ///
    /// The send buffer is raised (SO_SNDBUFFORCE, else SO_SNDBUF) so that a batch of 10,000
    /// map elements fits in one `sendmsg`.
    pub(crate) fn open() -> Result<Self> {
        const OP: &str = "open nftables netlink socket";
        let io = |e: std::io::Error| Error::kernel(OP, e.raw_os_error().unwrap_or(libc::EIO));
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(io)?;
        socket.bind_auto().map_err(io)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(io)?;
        // Errors echo only the header of the failed message, not a 50 kB element list.
        socket.set_cap_ack(true).map_err(io)?;
        let nix = |e: nix::errno::Errno| Error::kernel(OP, e as i32);
        let timeout = TimeVal::new(REPLY_TIMEOUT.as_secs() as _, 0);
        setsockopt(&socket, sockopt::ReceiveTimeout, &timeout).map_err(nix)?;
        // A larger receive buffer is a nicety (dumps are paced by the reader anyway).
        if setsockopt(&socket, sockopt::RcvBufForce, &(1 << 20)).is_err() {
            let _ = setsockopt(&socket, sockopt::RcvBuf, &(1 << 20));
        }
        let mut nft = NftSocket {
            socket,
            // Any start will do (replies are matched per socket); a non-zero one is easier to
            // tell apart from kernel notifications in a trace.
            seq: std::process::id().wrapping_mul(0x9e37_79b9) | 1,
            buf: Vec::with_capacity(RECV_BUFFER),
        };
        nft.raise_send_buffer(SEND_BUFFER);
        Ok(nft)
    }

    /// `nft add table inet TABLE { comment "COMMENT"; maps; chains; rules }` in one batch:
    /// the whole table appears at once, or nothing does. An existing table is refused
    /// (`NLM_F_EXCL`: [`Error::Kernel`] with errno EEXIST, which the caller maps).
    ///
    /// The comment is the table's userdata as libnftnl encodes it; a table's userdata is at
    /// most 256 bytes and cannot be changed later.
    pub(crate) fn create(&mut self, comment: &str, rules: &NatRules) -> Result<()> {
        let op = format!(
            "nft add table inet {} (one batch with its NAT and filter)",
            rules.table
        );
        let mut msgs = vec![new_table(&rules.table, comment)?];
        msgs.extend(Layout::of(rules).messages(&rules.table, &BTreeSet::new()));
        self.batch(&op, msgs, None)
    }

    /// Replaces whatever chains and maps the table holds with `rules`, in one batch, keeping
    /// the table (and its comment). Chains whose type, hook, priority and policy are right are
    /// flushed and refilled rather than recreated, so traffic never sees a gap. Used to repair
    /// drift; a missing table is ENOENT.
    pub(crate) fn reinstall(&mut self, rules: &NatRules) -> Result<()> {
        let op = format!("nft -f (NAT repair batch for inet {})", rules.table);
        match self.replace(&op, &rules.table, rules)? {
            true => Ok(()),
            false => Err(Error::kernel(op, libc::ENOENT)),
        }
    }

    /// `nft delete table inet TABLE`: the table and everything in it. A missing table is
    /// `Ok(false)`, a deleted one `Ok(true)`.
    pub(crate) fn delete_table(&mut self, table: &str) -> Result<bool> {
        let op = format!("nft delete table inet {table}");
        let msg = inet(NfTablesMessage::DeleteTable(TableMessage {
            attributes: vec![TableAttribute::Name(table.to_string())],
        }));
        match self.batch(&op, vec![(msg, 0)], None) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// All tables of family `inet`, with their decoded comments.
    pub(crate) fn tables(&mut self) -> Result<Vec<TableInfo>> {
        let op = "nft list tables inet";
        let replies = self.dump(op, || {
            inet(NfTablesMessage::GetTable(TableMessage {
                attributes: vec![],
            }))
        })?;
        Ok(replies
            .iter()
            .filter(|r| r.is_nft(NFT_MSG_NEWTABLE) && r.family() == NFPROTO_INET)
            .filter_map(|r| {
                let a = r.attrs();
                Some(TableInfo {
                    name: a.string(NFTA_TABLE_NAME)?,
                    comment: a.get(NFTA_TABLE_USERDATA).and_then(decode_comment),
                })
            })
            .collect())
    }

    /// What the table holds now (`None` if it does not exist), read consistently: the reads
    /// are retried if the ruleset changed while they ran.
    pub(crate) fn read(&mut self, table: &str) -> Result<Option<NatState>> {
        let op = format!("nft list table inet {table}");
        for _ in 0..ATTEMPTS {
            let before = self.generation(&op)?;
            let state = self.read_once(&op, table, true)?;
            if self.generation(&op)? == before {
                return Ok(state);
            }
        }
        Err(Error::kernel(op, libc::EAGAIN))
    }
}

impl NatRules {
    /// What [`NftSocket::read`] returns right after [`NftSocket::install`]: drift is
    /// `expected() != read()`.
    pub(crate) fn expected(&self) -> NatState {
        Layout::of(self).state()
    }

    /// One line for the dry-run plan, close to nft syntax.
    pub(crate) fn summary(&self) -> String {
        let mut parts = Vec::new();
        let fallbacks: Vec<String> = self
            .fallback4
            .map(|a| a.to_string())
            .into_iter()
            .chain(self.fallback6.map(|a| a.to_string()))
            .collect();
        let n = self.redirects.len();
        if n > 0 {
            let mut dnat = format!("dnat {n} redirect{} via map", if n == 1 { "" } else { "s" });
            if !fallbacks.is_empty() {
                let _ = write!(dnat, " + fallback {}", fallbacks.join(" and "));
            }
            parts.push(dnat);
        } else if !fallbacks.is_empty() {
            parts.push(format!("dnat to fallback {}", fallbacks.join(" and ")));
        }
        let sources: Vec<String> = self
            .snat4
            .map(|a| a.to_string())
            .into_iter()
            .chain(self.snat6.map(|a| a.to_string()))
            .collect();
        if !sources.is_empty() {
            parts.push(format!(
                "snat to {} on {}",
                sources.join(" and "),
                self.external
            ));
        }
        parts.push("forward filter (policy drop)".to_string());
        format!("nft add rules to inet {}: {}", self.table, parts.join(", "))
    }
}

/// What differs between the expected state and what the kernel holds (`None`: no table), for
/// a drift report.
pub(crate) fn describe_difference(want: &NatState, have: Option<&NatState>) -> String {
    match have {
        None => "the table is missing".to_string(),
        Some(have) => {
            let lines = want.diff(have);
            if lines.is_empty() {
                "no difference".to_string()
            } else {
                lines.join("; ")
            }
        }
    }
}

impl NatState {
    /// The state as text, one object per line (maps with their elements, chains with their
    /// rules), for inspection.
    pub(crate) fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.maps {
            out.push(format!(
                "map {} {{ type {} : {}; flags {:#x}; {} elements }}",
                m.name,
                type_name(m.key_type),
                type_name(m.data_type),
                m.flags,
                m.elements.len() + m.other_elements.len()
            ));
            for e in &m.elements {
                out.push(format!("  {} . {} : {} . {}", e.0, e.1, e.2, e.3));
            }
            for e in &m.other_elements {
                out.push(format!("  {e}"));
            }
        }
        for c in &self.chains {
            match (&c.kind, &c.hook, c.priority, &c.policy) {
                (Some(kind), Some(hook), Some(priority), Some(policy)) => out.push(format!(
                    "chain {} {{ type {kind} hook {hook} priority {priority}; policy {policy}; }}",
                    c.name
                )),
                _ => out.push(format!("chain {} {{ }}", c.name)),
            }
            for r in &c.rules {
                let mut line = format!("  {}", r.exprs.join(" "));
                if let Some(comment) = &r.comment {
                    let _ = write!(line, " comment {comment:?}");
                }
                out.push(line);
            }
        }
        out
    }

    /// Human-readable differences from `self` (expected) to `actual`, one line each; empty
    /// when they are equal.
    pub(crate) fn diff(&self, actual: &NatState) -> Vec<String> {
        let mut out = Vec::new();
        for want in &self.chains {
            match actual.chains.iter().find(|c| c.name == want.name) {
                None => out.push(format!("chain {} is missing", want.name)),
                Some(have) => diff_chain(want, have, &mut out),
            }
        }
        for have in &actual.chains {
            if !self.chains.iter().any(|c| c.name == have.name) {
                out.push(format!("chain {} is not ours", have.name));
            }
        }
        for want in &self.maps {
            match actual.maps.iter().find(|m| m.name == want.name) {
                None => out.push(format!("map {} is missing", want.name)),
                Some(have) => diff_map(want, have, &mut out),
            }
        }
        for have in &actual.maps {
            if !self.maps.iter().any(|m| m.name == have.name) {
                out.push(format!("map {} is not ours", have.name));
            }
        }
        out
    }
}

fn diff_chain(want: &ChainState, have: &ChainState, out: &mut Vec<String>) {
    let header = |c: &ChainState| {
        format!(
            "type {} hook {} priority {} policy {}",
            c.kind.as_deref().unwrap_or("-"),
            c.hook.as_deref().unwrap_or("-"),
            c.priority.map_or("-".to_string(), |p| p.to_string()),
            c.policy.as_deref().unwrap_or("-"),
        )
    };
    if header(want) != header(have) {
        out.push(format!(
            "chain {}: {} instead of {}",
            want.name,
            header(have),
            header(want)
        ));
    }
    if want.rules != have.rules {
        let show = |rules: &[RuleState]| {
            rules
                .iter()
                .map(|r| format!("{:?}", r.comment.as_deref().unwrap_or("(no comment)")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let changed: Vec<String> = want
            .rules
            .iter()
            .zip(&have.rules)
            .enumerate()
            .filter(|(_, (w, h))| w != h)
            .map(|(i, (w, h))| {
                format!(
                    "rule {} is [{}] instead of [{}]",
                    i + 1,
                    h.exprs.join(" "),
                    w.exprs.join(" ")
                )
            })
            .collect();
        out.push(format!(
            "chain {}: rules {} instead of {}{}",
            want.name,
            show(&have.rules),
            show(&want.rules),
            if changed.is_empty() {
                String::new()
            } else {
                format!("; {}", changed.join("; "))
            }
        ));
    }
}

fn diff_map(want: &MapState, have: &MapState, out: &mut Vec<String>) {
    if (want.key_type, want.data_type, want.flags) != (have.key_type, have.data_type, have.flags) {
        out.push(format!(
            "map {}: key type {:#x}, data type {:#x}, flags {:#x} instead of {:#x}, {:#x}, {:#x}",
            want.name,
            have.key_type,
            have.data_type,
            have.flags,
            want.key_type,
            want.data_type,
            want.flags
        ));
    }
    let show = |e: &MapElement| format!("{} . {} : {} . {}", e.0, e.1, e.2, e.3);
    let missing: Vec<String> = want
        .elements
        .iter()
        .filter(|e| have.elements.binary_search(e).is_err())
        .map(show)
        .collect();
    let extra: Vec<String> = have
        .elements
        .iter()
        .filter(|e| want.elements.binary_search(e).is_err())
        .map(show)
        .chain(have.other_elements.iter().cloned())
        .collect();
    let sample = |v: &[String]| {
        let mut s = v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > 5 {
            let _ = write!(s, ", … ({} in all)", v.len());
        }
        s
    };
    if !missing.is_empty() {
        out.push(format!("map {}: missing {}", want.name, sample(&missing)));
    }
    if !extra.is_empty() {
        out.push(format!("map {}: unexpected {}", want.name, sample(&extra)));
    }
}

// ---------------------------------------------------------------------------------------------
// The ruleset, as data
// ---------------------------------------------------------------------------------------------

/// What install writes, in a form both the encoder and [`NatRules::expected`] use.
struct Layout {
    maps: Vec<MapPlan>,
    chains: Vec<ChainPlan>,
}

struct MapPlan {
    name: &'static str,
    id: u32,
    v6: bool,
    elements: Vec<MapElement>,
}

struct ChainPlan {
    name: &'static str,
    kind: &'static str,
    hook: u32,
    priority: i32,
    policy: u32,
    rules: Vec<RulePlan>,
}

struct RulePlan {
    comment: &'static str,
    exprs: Vec<Expr>,
}

impl Layout {
    fn of(rules: &NatRules) -> Layout {
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
                (NFPROTO_IPV6, MAP6, 2)
            } else {
                (NFPROTO_IPV4, MAP4, 1)
            };
            let family = u32::from(nfproto);
            let head = || {
                let mut e = ifname_match(NFT_META_IIFNAME, &rules.internal);
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
                    },
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
                exprs.extend([
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
                    comment: if v6 {
                        "egress dnat6 fallback"
                    } else {
                        "egress dnat4 fallback"
                    },
                    exprs,
                });
            }
        }

        let mut postrouting = Vec::new();
        let sources = [
            (NFPROTO_IPV4, rules.snat4.map(IpAddr::V4), "egress snat4"),
            (NFPROTO_IPV6, rules.snat6.map(IpAddr::V6), "egress snat6"),
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

        let ct_bits = |key: u32, bits: u32| {
            [
                Expr::Ct {
                    key,
                    dreg: NFT_REG_1,
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
                Expr::Accept,
            ]
        };
        let mut dnated = ifname_match(NFT_META_IIFNAME, &rules.internal);
        dnated.extend(ifname_match(NFT_META_OIFNAME, &rules.external));
        dnated.extend(ct_bits(NFT_CT_STATUS, IPS_DST_NAT));
        let forward = vec![
            RulePlan {
                comment: "egress replies",
                exprs: ct_bits(NFT_CT_STATE, CT_STATE_ESTABLISHED_RELATED).to_vec(),
            },
            RulePlan {
                comment: "egress dnat-ed",
                exprs: dnated,
            },
        ];

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
        Layout { maps, chains }
    }

    /// The batch messages: chains, maps, rules, then the maps' elements. Chains named in
    /// `keep` already exist with the right hook and are not created again.
    ///
    /// nft sends the elements before the rules; but binding a map to a rule's lookup walks
    /// every element the map already holds, so the maps are filled after the rules (the
    /// kernel checks each element against the binding as it is added instead).
    fn messages(&self, table: &str, keep: &BTreeSet<String>) -> Vec<(NetfilterMessage, u16)> {
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
                    ]
                    .into_iter()
                    .chain(size)
                    .collect(),
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
                            RuleAttribute::UserData(udata_comment(rule.comment)),
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
        out
    }

    fn state(&self) -> NatState {
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
                        comment: Some(r.comment.to_string()),
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
                other_elements: Vec::new(),
            })
            .collect();
        maps.sort_by(|a, b| a.name.cmp(&b.name));
        NatState { chains, maps }
    }
}

fn ifname_match(key: u32, name: &str) -> Vec<Expr> {
    // nft compares the whole 16-byte (IFNAMSIZ) register: the name, zero padded.
    let mut data = name.as_bytes().to_vec();
    data.resize(data.len().max(15) + 1, 0);
    vec![
        Expr::Meta {
            key,
            dreg: NFT_REG_1,
        },
        Expr::Cmp {
            op: NFT_CMP_EQ,
            sreg: NFT_REG_1,
            data,
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

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// `protocol . port`: each field padded to 4 bytes, the port big endian.
fn element_key(e: &MapElement) -> [u8; MAP_KEY_LEN] {
    let [hi, lo] = e.1.to_be_bytes();
    [e.0.number(), 0, 0, 0, hi, lo, 0, 0]
}

/// `address . port`: the port padded to 4 bytes, big endian.
fn element_data(e: &MapElement) -> Vec<u8> {
    let mut data = ip_bytes(e.2);
    let [hi, lo] = e.3.to_be_bytes();
    data.extend_from_slice(&[hi, lo, 0, 0]);
    data
}

/// `NFTA_SET_ELEM_LIST_ELEMENTS` holding `elements`, encoded straight into one buffer: the
/// same bytes as `SetElementList::Elements`, whose nested `Vec`s per element (each level
/// summing its children's lengths again) took ~10 ms for 10,000 elements; this takes ~0.3.
fn element_list(elements: &[MapElement]) -> DefaultNla {
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

fn decode_element(key: &[u8], data: &[u8]) -> Option<MapElement> {
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

fn hook_name(hook: u32) -> String {
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

fn policy_name(policy: u32) -> String {
    match policy {
        NF_DROP => "drop".into(),
        NF_ACCEPT => "accept".into(),
        n => format!("verdict {n}"),
    }
}

// ---------------------------------------------------------------------------------------------
// libnftnl userdata (TLVs: type u8, length u8, value)
// ---------------------------------------------------------------------------------------------

fn udata_put(buf: &mut Vec<u8>, kind: u8, value: &[u8]) {
    buf.push(kind);
    buf.push(value.len() as u8);
    buf.extend_from_slice(value);
}

/// A comment as libnftnl stores it: one TLV of type 0 holding the text and a NUL.
fn udata_comment(comment: &str) -> Vec<u8> {
    let mut value = comment.as_bytes().to_vec();
    value.push(0);
    let mut buf = Vec::with_capacity(value.len() + 2);
    udata_put(&mut buf, UDATA_COMMENT, &value);
    buf
}

/// The table's userdata for `comment`, or the errno that explains why it cannot be stored.
fn table_userdata(comment: &str) -> std::result::Result<Vec<u8>, i32> {
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
fn decode_comment(udata: &[u8]) -> Option<String> {
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
fn map_userdata() -> Vec<u8> {
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

// ---------------------------------------------------------------------------------------------
// Expressions
// ---------------------------------------------------------------------------------------------

/// The expressions this module writes, and reads back in the same (normalized) form.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
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
    },
    Nat {
        nat_type: u32,
        family: u32,
        addr: Option<u32>,
        proto: Option<u32>,
    },
}

fn be32(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

impl Expr {
    fn encode(&self) -> ListAttribute<ExpressionAttribute> {
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
            Expr::Ct { key, dreg } => Expressions::Other {
                expression_type: "ct".into(),
                attributes: vec![be32(NFTA_CT_KEY, *key), be32(NFTA_CT_DREG, *dreg)],
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
    fn render(&self) -> String {
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
            Expr::Ct { key, dreg } => {
                let key = match *key {
                    NFT_CT_STATE => "state".to_string(),
                    NFT_CT_STATUS => "status".to_string(),
                    n => format!("key {n}"),
                };
                format!("ct load {key} => reg {dreg}")
            }
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

    /// Reads one expression as the kernel dumps it, normalizing what the kernel adds (NAT
    /// max registers and range flags, lookup flags 0, bitwise op "mask and xor"). `None` for
    /// anything else: the caller renders it raw, so it never compares equal to ours.
    fn decode(name: &str, data: &[u8]) -> Option<Expr> {
        let a = Attrs::parse(data);
        let req = |kind| a.u32(kind);
        match name {
            "meta" if a.only(&[NFTA_META_KEY, NFTA_META_DREG]) => Some(Expr::Meta {
                key: req(NFTA_META_KEY)?,
                dreg: req(NFTA_META_DREG)?,
            }),
            "cmp" if a.only(&[NFTA_CMP_SREG, NFTA_CMP_OP, NFTA_CMP_DATA]) => Some(Expr::Cmp {
                op: req(NFTA_CMP_OP)?,
                sreg: req(NFTA_CMP_SREG)?,
                data: a.data_value(NFTA_CMP_DATA)?,
            }),
            "bitwise"
                if a.only(&[
                    NFTA_BITWISE_SREG,
                    NFTA_BITWISE_DREG,
                    NFTA_BITWISE_LEN,
                    NFTA_BITWISE_MASK,
                    NFTA_BITWISE_XOR,
                    NFTA_BITWISE_OP,
                ]) && a.u32(NFTA_BITWISE_OP).unwrap_or(0) == 0 =>
            {
                let mask = a.data_value(NFTA_BITWISE_MASK)?;
                let xor = a.data_value(NFTA_BITWISE_XOR)?;
                let len = req(NFTA_BITWISE_LEN)? as usize;
                (len == mask.len() && len == xor.len()).then_some(Expr::Bitwise {
                    sreg: req(NFTA_BITWISE_SREG)?,
                    dreg: req(NFTA_BITWISE_DREG)?,
                    mask,
                    xor,
                })
            }
            "payload"
                if a.only(&[
                    NFTA_PAYLOAD_DREG,
                    NFTA_PAYLOAD_BASE,
                    NFTA_PAYLOAD_OFFSET,
                    NFTA_PAYLOAD_LEN,
                ]) =>
            {
                Some(Expr::Payload {
                    base: req(NFTA_PAYLOAD_BASE)?,
                    offset: req(NFTA_PAYLOAD_OFFSET)?,
                    len: req(NFTA_PAYLOAD_LEN)?,
                    dreg: req(NFTA_PAYLOAD_DREG)?,
                })
            }
            "lookup"
                if a.only(&[
                    NFTA_LOOKUP_SET,
                    NFTA_LOOKUP_SREG,
                    NFTA_LOOKUP_DREG,
                    NFTA_LOOKUP_SET_ID,
                    NFTA_LOOKUP_FLAGS,
                ]) && a.u32(NFTA_LOOKUP_FLAGS).unwrap_or(0) == 0 =>
            {
                Some(Expr::Lookup {
                    set: a.string(NFTA_LOOKUP_SET)?,
                    set_id: None,
                    sreg: req(NFTA_LOOKUP_SREG)?,
                    dreg: a.u32(NFTA_LOOKUP_DREG),
                })
            }
            "immediate" if a.only(&[NFTA_IMMEDIATE_DREG, NFTA_IMMEDIATE_DATA]) => {
                let dreg = req(NFTA_IMMEDIATE_DREG)?;
                let data = Attrs::parse(a.get(NFTA_IMMEDIATE_DATA)?);
                if let Some(value) = data.get(NFTA_DATA_VALUE) {
                    return (dreg != NFT_REG_VERDICT && data.only(&[NFTA_DATA_VALUE])).then(|| {
                        Expr::Immediate {
                            dreg,
                            data: value.to_vec(),
                        }
                    });
                }
                let verdict = Attrs::parse(data.get(NFTA_DATA_VERDICT)?);
                (dreg == NFT_REG_VERDICT
                    && data.only(&[NFTA_DATA_VERDICT])
                    && verdict.only(&[NFTA_VERDICT_CODE])
                    && verdict.u32(NFTA_VERDICT_CODE)? == NF_ACCEPT)
                    .then_some(Expr::Accept)
            }
            "fib" if a.only(&[NFTA_FIB_DREG, NFTA_FIB_RESULT, NFTA_FIB_FLAGS]) => Some(Expr::Fib {
                flags: req(NFTA_FIB_FLAGS)?,
                result: req(NFTA_FIB_RESULT)?,
                dreg: req(NFTA_FIB_DREG)?,
            }),
            "ct" if a.only(&[NFTA_CT_DREG, NFTA_CT_KEY]) => Some(Expr::Ct {
                key: req(NFTA_CT_KEY)?,
                dreg: req(NFTA_CT_DREG)?,
            }),
            "nat"
                if a.only(&[
                    NFTA_NAT_TYPE,
                    NFTA_NAT_FAMILY,
                    NFTA_NAT_REG_ADDR_MIN,
                    NFTA_NAT_REG_ADDR_MAX,
                    NFTA_NAT_REG_PROTO_MIN,
                    NFTA_NAT_REG_PROTO_MAX,
                    NFTA_NAT_FLAGS,
                ]) =>
            {
                let addr = a.u32(NFTA_NAT_REG_ADDR_MIN);
                let proto = a.u32(NFTA_NAT_REG_PROTO_MIN);
                let derived = addr.map_or(0, |_| NF_NAT_RANGE_MAP_IPS)
                    | proto.map_or(0, |_| NF_NAT_RANGE_PROTO_SPECIFIED);
                let normal = a.u32(NFTA_NAT_REG_ADDR_MAX).is_none_or(|m| Some(m) == addr)
                    && a.u32(NFTA_NAT_REG_PROTO_MAX)
                        .is_none_or(|m| Some(m) == proto)
                    && a.u32(NFTA_NAT_FLAGS).is_none_or(|f| f == derived);
                normal.then_some(Expr::Nat {
                    nat_type: req(NFTA_NAT_TYPE)?,
                    family: req(NFTA_NAT_FAMILY)?,
                    addr,
                    proto,
                })
            }
            _ => None,
        }
    }
}

/// An expression this module does not write, shown raw: `name kind=hex …`.
fn render_raw(name: &str, data: &[u8]) -> String {
    let mut s = format!("{name} (foreign)");
    for (kind, value) in Attrs::parse(data).0 {
        let _ = write!(s, " {kind}=0x{}", hex(value));
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
        n => format!("op {n}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

// ---------------------------------------------------------------------------------------------
// Reading attributes
// ---------------------------------------------------------------------------------------------

/// The attributes of one nesting level, in order (type without the NESTED/BYTEORDER flags).
/// Lenient: a malformed tail ends the list.
struct Attrs<'a>(Vec<(u16, &'a [u8])>);

impl<'a> Attrs<'a> {
    fn parse(mut buf: &'a [u8]) -> Self {
        let mut out = Vec::new();
        while buf.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
            let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
            if len < 4 || len > buf.len() {
                break;
            }
            out.push((kind, &buf[4..len]));
            buf = &buf[align4(len).min(buf.len())..];
        }
        Attrs(out)
    }

    fn get(&self, kind: u16) -> Option<&'a [u8]> {
        self.0.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
    }

    fn all(&self, kind: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.0
            .iter()
            .filter(move |(k, _)| *k == kind)
            .map(|(_, v)| *v)
    }

    fn u32(&self, kind: u16) -> Option<u32> {
        Some(u32::from_be_bytes(self.get(kind)?.try_into().ok()?))
    }

    fn string(&self, kind: u16) -> Option<String> {
        let v = self.get(kind)?;
        let v = v.split(|b| *b == 0).next().unwrap_or(v);
        String::from_utf8(v.to_vec()).ok()
    }

    /// The bytes of a nested `NFTA_DATA_VALUE`.
    fn data_value(&self, kind: u16) -> Option<Vec<u8>> {
        let inner = Attrs::parse(self.get(kind)?);
        inner
            .only(&[NFTA_DATA_VALUE])
            .then(|| inner.get(NFTA_DATA_VALUE).map(<[u8]>::to_vec))?
    }

    /// Whether every attribute is one of `allowed`.
    fn only(&self, allowed: &[u16]) -> bool {
        self.0.iter().all(|(k, _)| allowed.contains(k))
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

// ---------------------------------------------------------------------------------------------
// The socket: batches, dumps, replies
// ---------------------------------------------------------------------------------------------

/// One netlink message from the kernel.
#[derive(Debug)]
struct Reply {
    kind: u16,
    flags: u16,
    seq: u32,
    body: Vec<u8>,
}

impl Reply {
    /// For NLMSG_ERROR: the positive errno, 0 for an ack.
    fn errno(&self) -> i32 {
        self.body.get(..4).map_or(libc::EBADMSG, |b| {
            -i32::from_ne_bytes([b[0], b[1], b[2], b[3]])
        })
    }

    fn is_nft(&self, msg: u8) -> bool {
        self.kind == ((NFNL_SUBSYS_NFTABLES << 8) | u16::from(msg))
    }

    fn family(&self) -> u8 {
        self.body.first().copied().unwrap_or(0)
    }

    /// The attributes after the nfgenmsg header.
    fn attrs(&self) -> Attrs<'_> {
        Attrs::parse(self.body.get(4..).unwrap_or_default())
    }
}

fn inet(msg: NfTablesMessage) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Inet, NFNETLINK_V0, 0),
        msg,
    )
}

fn emit(buf: &mut Vec<u8>, msg: NetfilterMessage, flags: u16, seq: u32) {
    let mut msg = NetlinkMessage::from(msg);
    msg.header.flags = flags;
    msg.header.sequence_number = seq;
    msg.finalize();
    let start = buf.len();
    buf.resize(start + msg.buffer_len(), 0);
    msg.serialize(&mut buf[start..]);
}

impl NftSocket {
    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn raise_send_buffer(&mut self, bytes: usize) {
        if setsockopt(&self.socket, sockopt::SndBufForce, &bytes).is_err() {
            // Without CAP_NET_ADMIN the kernel caps this at net.core.wmem_max; a batch that
            // still does not fit fails with EMSGSIZE, named in the error.
            let _ = setsockopt(&self.socket, sockopt::SndBuf, &bytes);
        }
    }

    fn send(&mut self, op: &str, buf: &[u8]) -> Result<()> {
        // The kernel reports the effective (doubled) size; keep room for its bookkeeping.
        let have = getsockopt(&self.socket, sockopt::SndBuf).unwrap_or(0);
        if buf.len() + 4096 > have {
            self.raise_send_buffer(buf.len() + 4096);
        }
        loop {
            match self.socket.send(buf, 0) {
                Ok(n) if n == buf.len() => return Ok(()),
                Ok(_) => return Err(Error::kernel(op, libc::EMSGSIZE)),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::kernel(op, e.raw_os_error().unwrap_or(libc::EIO))),
            }
        }
    }

    /// Receives one datagram; `None` when `nonblocking` and nothing is queued. A blocking
    /// receive that times out is ETIMEDOUT.
    fn recv(&mut self, op: &str, nonblocking: bool) -> Result<Option<Vec<Reply>>> {
        let flags: c_int = libc::MSG_TRUNC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
        let n = loop {
            self.buf.clear();
            match self.socket.recv(&mut self.buf, flags) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return match nonblocking {
                        true => Ok(None),
                        false => Err(Error::kernel(
                            format!("{op} (no answer from the kernel)"),
                            libc::ETIMEDOUT,
                        )),
                    };
                }
                Err(e) => return Err(Error::kernel(op, e.raw_os_error().unwrap_or(libc::EIO))),
            }
        };
        if n > self.buf.len() {
            return Err(Error::kernel(
                format!("{op} (reply of {n} bytes truncated)"),
                libc::EMSGSIZE,
            ));
        }
        let mut out = Vec::new();
        let mut rest = &self.buf[..n];
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if len < 16 || len > rest.len() {
                break;
            }
            out.push(Reply {
                kind: u16::from_ne_bytes([rest[4], rest[5]]),
                flags: u16::from_ne_bytes([rest[6], rest[7]]),
                seq: u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]),
                body: rest[16..len].to_vec(),
            });
            rest = &rest[align4(len).min(rest.len())..];
        }
        Ok(Some(out))
    }

    /// Discards whatever is queued (replies to an earlier request that ended on an error).
    fn drain(&mut self, op: &str) {
        while let Ok(Some(_)) = self.recv(op, true) {}
    }

    /// Sends `msgs` as one batch and waits for the kernel's verdict on each. The kernel
    /// applies all of the batch or none of it; the first error is reported.
    fn batch(
        &mut self,
        op: &str,
        msgs: Vec<(NetfilterMessage, u16)>,
        genid: Option<u32>,
    ) -> Result<()> {
        self.drain(op);
        let control = |msg| {
            NetfilterMessage::new(
                NetfilterHeader::new(
                    NetfilterProtoFamily::Unspec,
                    NFNETLINK_V0,
                    NFNL_SUBSYS_NFTABLES,
                ),
                msg,
            )
        };
        let mut buf = Vec::new();
        let begin = self.next_seq();
        let begin_msg = match genid {
            None => ControlMessage::BatchBegin,
            Some(id) => ControlMessage::Other {
                message_type: NFNL_MSG_BATCH_BEGIN,
                attributes: vec![be32(NFNL_BATCH_GENID, id)],
            },
        };
        emit(&mut buf, control(begin_msg), NLM_F_REQUEST, begin);
        let mut pending = BTreeSet::new();
        for (msg, flags) in msgs {
            let seq = self.next_seq();
            emit(&mut buf, msg, NLM_F_REQUEST | NLM_F_ACK | flags, seq);
            pending.insert(seq);
        }
        let end = self.next_seq();
        emit(
            &mut buf,
            control(ControlMessage::BatchEnd),
            NLM_F_REQUEST,
            end,
        );
        self.send(op, &buf)?;

        // The kernel processes the batch inside sendmsg and queues one ack or error per
        // message (errors on the begin message concern the whole batch and end it).
        let mut failure = None;
        while !pending.is_empty() && failure.is_none() {
            let Some(replies) = self.recv(op, false)? else {
                continue;
            };
            for r in replies {
                let in_batch = r.seq.wrapping_sub(begin) <= end.wrapping_sub(begin);
                if r.kind != NLMSG_ERROR || !in_batch {
                    continue;
                }
                pending.remove(&r.seq);
                let errno = r.errno();
                if errno != 0 {
                    failure.get_or_insert(errno);
                }
            }
        }
        match failure {
            None => Ok(()),
            Some(errno) => {
                self.drain(op);
                Err(Error::kernel(op, errno))
            }
        }
    }

    /// A dump (`NLM_F_DUMP`), retried when the kernel flags it as interrupted by a change.
    fn dump(&mut self, op: &str, request: impl Fn() -> NetfilterMessage) -> Result<Vec<Reply>> {
        for _ in 0..ATTEMPTS {
            self.drain(op);
            let seq = self.next_seq();
            let mut buf = Vec::new();
            emit(&mut buf, request(), NLM_F_REQUEST | NLM_F_DUMP, seq);
            self.send(op, &buf)?;
            let mut out = Vec::new();
            let mut interrupted = false;
            'dump: loop {
                let Some(replies) = self.recv(op, false)? else {
                    continue;
                };
                for r in replies {
                    if r.seq != seq {
                        continue;
                    }
                    interrupted |= r.flags & NLM_F_DUMP_INTR != 0;
                    match r.kind {
                        NLMSG_DONE => break 'dump,
                        NLMSG_ERROR if r.errno() != 0 => {
                            let errno = r.errno();
                            self.drain(op);
                            return Err(Error::kernel(op, errno));
                        }
                        NLMSG_ERROR => {}
                        _ => out.push(r),
                    }
                }
            }
            if !interrupted {
                return Ok(out);
            }
        }
        Err(Error::kernel(op, libc::EINTR))
    }

    /// A single request (no dump): the kernel's reply message, or its error.
    fn request(&mut self, op: &str, msg: NetfilterMessage) -> Result<Reply> {
        self.drain(op);
        let seq = self.next_seq();
        let mut buf = Vec::new();
        emit(&mut buf, msg, NLM_F_REQUEST, seq);
        self.send(op, &buf)?;
        loop {
            let Some(replies) = self.recv(op, false)? else {
                continue;
            };
            for r in replies {
                if r.seq != seq {
                    continue;
                }
                match r.kind {
                    NLMSG_ERROR if r.errno() != 0 => return Err(Error::kernel(op, r.errno())),
                    NLMSG_ERROR | NLMSG_DONE => {}
                    _ => return Ok(r),
                }
            }
        }
    }

    /// The ruleset generation (`NFT_MSG_GETGEN`): it changes with every committed batch.
    fn generation(&mut self, op: &str) -> Result<u32> {
        let msg = NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, NFNETLINK_V0, 0),
            NfTablesMessage::GetGen(GenMessage { attributes: vec![] }),
        );
        let reply = self.request(op, msg)?;
        if !reply.is_nft(NFT_MSG_NEWGEN) {
            return Err(Error::kernel(op, libc::EBADMSG));
        }
        reply
            .attrs()
            .u32(NFTA_GEN_ID)
            .ok_or_else(|| Error::kernel(op, libc::EBADMSG))
    }

    /// One pass of [`read`](Self::read), without the consistency check.
    fn read_once(
        &mut self,
        op: &str,
        table: &str,
        with_elements: bool,
    ) -> Result<Option<NatState>> {
        let get = inet(NfTablesMessage::GetTable(TableMessage {
            attributes: vec![TableAttribute::Name(table.to_string())],
        }));
        match self.request(op, get) {
            Ok(_) => {}
            Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        }
        let ours = |r: &Reply, msg: u8, table_attr: u16| {
            r.is_nft(msg)
                && r.family() == NFPROTO_INET
                && r.attrs().string(table_attr).as_deref() == Some(table)
        };

        let replies = self.dump(op, || {
            inet(NfTablesMessage::GetChain(ChainMessage {
                attributes: vec![ChainAttribute::Table(table.to_string())],
            }))
        })?;
        let mut chains: Vec<ChainState> = replies
            .iter()
            .filter(|r| ours(r, NFT_MSG_NEWCHAIN, NFTA_CHAIN_TABLE))
            .filter_map(|r| {
                let a = r.attrs();
                let hook = a.get(NFTA_CHAIN_HOOK).map(Attrs::parse);
                Some(ChainState {
                    name: a.string(NFTA_CHAIN_NAME)?,
                    kind: a.string(NFTA_CHAIN_TYPE),
                    hook: hook
                        .as_ref()
                        .and_then(|h| h.u32(NFTA_HOOK_HOOKNUM))
                        .map(hook_name),
                    priority: hook
                        .as_ref()
                        .and_then(|h| h.u32(NFTA_HOOK_PRIORITY))
                        .map(|p| p as i32),
                    policy: a.u32(NFTA_CHAIN_POLICY).map(policy_name),
                    rules: Vec::new(),
                })
            })
            .collect();

        let replies = self.dump(op, || {
            inet(NfTablesMessage::GetRule(RuleMessage {
                attributes: vec![RuleAttribute::Table(table.to_string())],
            }))
        })?;
        for r in replies
            .iter()
            .filter(|r| ours(r, NFT_MSG_NEWRULE, NFTA_RULE_TABLE))
        {
            let a = r.attrs();
            let Some(chain_name) = a.string(NFTA_RULE_CHAIN) else {
                continue;
            };
            let exprs = a
                .get(NFTA_RULE_EXPRESSIONS)
                .map(Attrs::parse)
                .map(|list| {
                    list.all(NFTA_LIST_ELEM)
                        .map(|elem| {
                            let e = Attrs::parse(elem);
                            let name = e.string(NFTA_EXPR_NAME).unwrap_or_default();
                            let data = e.get(NFTA_EXPR_DATA).unwrap_or_default();
                            Expr::decode(&name, data)
                                .map_or_else(|| render_raw(&name, data), |x| x.render())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let rule = RuleState {
                comment: a.get(NFTA_RULE_USERDATA).and_then(decode_comment),
                exprs,
            };
            if let Some(chain) = chains.iter_mut().find(|c| c.name == chain_name) {
                chain.rules.push(rule);
            }
        }
        chains.sort_by(|a, b| a.name.cmp(&b.name));

        let replies = self.dump(op, || {
            inet(NfTablesMessage::GetSet(SetMessage {
                attributes: vec![SetAttribute::Table(table.to_string())],
            }))
        })?;
        let mut maps: Vec<MapState> = replies
            .iter()
            .filter(|r| ours(r, NFT_MSG_NEWSET, NFTA_SET_TABLE))
            .filter_map(|r| {
                let a = r.attrs();
                Some(MapState {
                    name: a.string(NFTA_SET_NAME)?,
                    key_type: a.u32(NFTA_SET_KEY_TYPE).unwrap_or(0),
                    data_type: a.u32(NFTA_SET_DATA_TYPE).unwrap_or(0),
                    flags: a.u32(NFTA_SET_FLAGS).unwrap_or(0),
                    elements: Vec::new(),
                    other_elements: Vec::new(),
                })
            })
            .collect();
        maps.sort_by(|a, b| a.name.cmp(&b.name));

        if with_elements {
            for map in &mut maps {
                let replies = self.dump(op, || {
                    inet(NfTablesMessage::GetSetElement(SetElementMessage {
                        attributes: vec![
                            SetElementList::Table(table.to_string()),
                            SetElementList::Set(map.name.clone()),
                        ],
                    }))
                })?;
                for r in replies.iter().filter(|r| {
                    ours(r, NFT_MSG_NEWSETELEM, NFTA_SET_ELEM_LIST_TABLE)
                        && r.attrs().string(NFTA_SET_ELEM_LIST_SET).as_deref()
                            == Some(map.name.as_str())
                }) {
                    let a = r.attrs();
                    let Some(list) = a.get(NFTA_SET_ELEM_LIST_ELEMENTS) else {
                        continue;
                    };
                    for elem in Attrs::parse(list).all(NFTA_LIST_ELEM) {
                        let e = Attrs::parse(elem);
                        let key = e.data_value(NFTA_SET_ELEM_KEY).unwrap_or_default();
                        let data = e.data_value(NFTA_SET_ELEM_DATA).unwrap_or_default();
                        match decode_element(&key, &data) {
                            Some(el) => map.elements.push(el),
                            None => map.other_elements.push(format!(
                                "0x{} : 0x{}",
                                hex(&key),
                                hex(&data)
                            )),
                        }
                    }
                }
                map.elements.sort();
                map.other_elements.sort();
            }
        }
        Ok(Some(NatState { chains, maps }))
    }

    /// Deletes the table's chains and maps and installs `rules` anew — one batch, guarded by the
    /// ruleset generation it was computed from (retried if another writer got in between).
    /// `Ok(false)` when the table does not exist.
    fn replace(&mut self, op: &str, table: &str, rules: &NatRules) -> Result<bool> {
        let layout = Layout::of(rules);
        for _ in 0..ATTEMPTS {
            let generation = self.generation(op)?;
            let Some(current) = self.read_once(op, table, false)? else {
                return Ok(false);
            };
            let wanted = layout.state();
            let mut msgs = Vec::new();
            let mut keep = BTreeSet::new();
            let header =
                |c: &ChainState| (c.kind.clone(), c.hook.clone(), c.priority, c.policy.clone());
            for chain in &current.chains {
                // Flush: a DELRULE naming only the chain.
                msgs.push((
                    inet(NfTablesMessage::DeleteRule(RuleMessage {
                        attributes: vec![
                            RuleAttribute::Table(table.to_string()),
                            RuleAttribute::Chain(chain.name.clone()),
                        ],
                    })),
                    0,
                ));
                let same = wanted
                    .chains
                    .iter()
                    .any(|w| w.name == chain.name && header(w) == header(chain));
                if same {
                    keep.insert(chain.name.clone());
                }
            }
            for chain in current.chains.iter().filter(|c| !keep.contains(&c.name)) {
                msgs.push((
                    inet(NfTablesMessage::DeleteChain(ChainMessage {
                        attributes: vec![
                            ChainAttribute::Table(table.to_string()),
                            ChainAttribute::Name(chain.name.clone()),
                        ],
                    })),
                    0,
                ));
            }
            for map in &current.maps {
                msgs.push((
                    inet(NfTablesMessage::DeleteSet(SetMessage {
                        attributes: vec![
                            SetAttribute::Table(table.to_string()),
                            SetAttribute::Name(map.name.clone()),
                        ],
                    })),
                    0,
                ));
            }
            msgs.extend(layout.messages(table, &keep));
            match self.batch(op, msgs, Some(generation)) {
                Ok(()) => return Ok(true),
                Err(e) if e.errno() == Some(libc::ERESTART) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::kernel(op, libc::EAGAIN))
    }
}

/// The NEWTABLE message of `nft add table inet TABLE { comment "COMMENT" }`, with `NLM_F_EXCL`.
fn new_table(table: &str, comment: &str) -> Result<(NetfilterMessage, u16)> {
    let userdata = table_userdata(comment).map_err(|errno| {
        let why = match errno {
            libc::E2BIG => format!(
                "a comment of {} bytes: a table comment holds at most {} bytes",
                comment.len(),
                USERDATA_MAX - 3
            ),
            _ => "a comment containing a NUL byte".to_string(),
        };
        Error::kernel(
            format!("nft add table inet {table} {{ comment \"…\" }} ({why})"),
            errno,
        )
    })?;
    let msg = inet(NfTablesMessage::NewTable(TableMessage {
        attributes: vec![
            TableAttribute::Name(table.to_string()),
            TableAttribute::Flags(TableFlags::empty()),
            TableAttribute::UserData(userdata),
        ],
    }));
    Ok((msg, NLM_F_CREATE | NLM_F_EXCL))
}

/// An nft datatype id as nft names it (concatenations split on `TYPE_BITS`).
fn type_name(id: u32) -> String {
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

#[cfg(test)]
mod tests {
    use std::{
        process::Command,
        sync::atomic::{AtomicUsize, Ordering},
        time::Instant,
    };

    use serde_json::Value;

    use super::*;

    /// The table alone, as a batch of its own.
    fn create_table(nft: &mut NftSocket, table: &str, comment: &str) -> Result<()> {
        let msg = new_table(table, comment)?;
        nft.batch(&format!("nft add table inet {table}"), vec![msg], None)
    }

    /// The NAT and filter objects alone, into an existing table.
    fn install(nft: &mut NftSocket, rules: &NatRules) -> Result<()> {
        let op = format!("nft -f (NAT batch for inet {})", rules.table);
        let msgs = Layout::of(rules).messages(&rules.table, &BTreeSet::new());
        nft.batch(&op, msgs, None)
    }
    use crate::{netns::NsHandle, spec::Netns};

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
            fallback4: Some("198.51.100.9".parse().unwrap()),
            fallback6: None,
        }
    }

    fn rules_dual(table: &str) -> NatRules {
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

    // ---- pure -------------------------------------------------------------------------------

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
                0x00, 0x04, 0, 0, 0, 0, 0x01, 0x04, 0, 0, 0, 0, 0x03, 0x08, 0x00, 0x04, 0x0d, 0, 0,
                0, 0x01, 0x00, 0x04, 0x08, 0x00, 0x04, 0x0d, 0, 0, 0, 0x01, 0x00, 0x06, 0x04, 0, 0,
                0, 0
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
        assert_eq!(names, ["forward", "postrouting", "prerouting"]);
        let pre = &s.chains[2];
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
        assert_eq!(
            pre.rules[1].exprs[6..],
            ["immediate reg 1 0xc6336409", "nat dnat ip addr_min reg 1"]
        );
        let fwd = &s.chains[0];
        assert_eq!(fwd.policy.as_deref(), Some("drop"));
        assert_eq!(fwd.priority, Some(0));
        assert_eq!(
            fwd.rules[0].exprs,
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
        assert_eq!(fwd.rules[1].comment.as_deref(), Some("egress dnat-ed"));
        assert_eq!(s.chains[1].rules.len(), 1);
        assert_eq!(s.maps.len(), 1);
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
            .map(|m| (m.name.as_str(), m.elements.len()))
            .collect();
        assert_eq!(maps, [("redirect4", 1), ("redirect6", 2)]);
        let post = s.chains.iter().find(|c| c.name == "postrouting").unwrap();
        assert_eq!(post.rules.len(), 2);

        let s = rules_plain("egress_x").expected();
        let names: Vec<&str> = s.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["forward", "postrouting"]);
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
        assert_eq!(names, ["forward"]);
    }

    #[test]
    fn nat_summary() {
        let mut r = rules_v4("egress_x");
        r.redirects
            .push(Redirect::of(Protocol::Tcp, 443, "198.51.100.25", 443));
        assert_eq!(
            r.summary(),
            "nft add rules to inet egress_x: dnat 3 redirects via map + fallback 198.51.100.9, \
             snat to 203.0.113.99 on macvlan0, forward filter (policy drop)"
        );
        assert_eq!(
            rules_dual("egress_y").summary(),
            "nft add rules to inet egress_y: dnat 3 redirects via map + fallback 198.51.100.9 \
             and 2001:db8:2::9, snat to 203.0.113.99 and 2001:db8:1::99 on macvlan0, forward \
             filter (policy drop)"
        );
        assert_eq!(
            rules_plain("egress_z").summary(),
            "nft add rules to inet egress_z: snat to 203.0.113.99 on macvlan0, forward filter \
             (policy drop)"
        );
        let fallback_only = NatRules {
            redirects: vec![],
            ..rules_v4("egress_z")
        };
        assert!(fallback_only
            .summary()
            .contains(": dnat to fallback 198.51.100.9, snat"));
    }

    /// What the kernel reports back for our expressions decodes to what we wrote.
    #[test]
    fn nat_decode_normalizes_kernel_form() {
        let nla = |kind: u16, v: u32| {
            let mut b = 8u16.to_ne_bytes().to_vec();
            b.extend(kind.to_ne_bytes());
            b.extend(v.to_be_bytes());
            b
        };
        // [ nat dnat ip addr_min reg 1 addr_max reg 1 proto_min reg 9 proto_max reg 9 flags 0x3 ]
        let kernel: Vec<u8> = [
            nla(NFTA_NAT_TYPE, NFT_NAT_DNAT),
            nla(NFTA_NAT_FAMILY, 2),
            nla(NFTA_NAT_REG_ADDR_MIN, 1),
            nla(NFTA_NAT_REG_ADDR_MAX, 1),
            nla(NFTA_NAT_REG_PROTO_MIN, 9),
            nla(NFTA_NAT_REG_PROTO_MAX, 9),
            nla(NFTA_NAT_FLAGS, 3),
        ]
        .concat();
        let ours = Expr::Nat {
            nat_type: NFT_NAT_DNAT,
            family: 2,
            addr: Some(1),
            proto: Some(9),
        };
        assert_eq!(Expr::decode("nat", &kernel), Some(ours));
        // A range (max != min) or extra flags is not ours.
        let range: Vec<u8> = [
            nla(NFTA_NAT_TYPE, NFT_NAT_DNAT),
            nla(NFTA_NAT_FAMILY, 2),
            nla(NFTA_NAT_REG_ADDR_MIN, 1),
            nla(NFTA_NAT_REG_ADDR_MAX, 2),
        ]
        .concat();
        assert_eq!(Expr::decode("nat", &range), None);
        assert!(render_raw("nat", &range).starts_with("nat (foreign) 1=0x00000001"));
        // Every expression we write decodes back to itself (minus the set id).
        for rules in [rules_v4("t"), rules_dual("t")] {
            for chain in Layout::of(&rules).chains {
                for rule in chain.rules {
                    for expr in rule.exprs {
                        let ListAttribute::Element(attrs) = expr.encode() else {
                            panic!("not an element")
                        };
                        let [ExpressionAttribute::Name(name), data @ ExpressionAttribute::Data(_)] =
                            &attrs[..]
                        else {
                            panic!("unexpected layout {attrs:?}")
                        };
                        let mut buf = vec![0; netlink_packet_core::Emitable::buffer_len(data)];
                        netlink_packet_core::Emitable::emit(data, &mut buf);
                        let inner = Attrs::parse(&buf);
                        let decoded = Expr::decode(name, inner.get(NFTA_EXPR_DATA).unwrap())
                            .unwrap_or_else(|| panic!("{expr:?} does not decode"));
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

    // ---- privileged: a namespace of our own per test ----------------------------------------

    /// A throwaway network namespace `egt-<pid>-nat-<n>`, deleted on drop.
    struct TestNs {
        name: String,
    }

    impl TestNs {
        fn new() -> TestNs {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "egt-{}-nat-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let out = Command::new("ip")
                .args(["netns", "add", &name])
                .output()
                .expect("run `ip netns add` (this test needs root and iproute2)");
            assert!(
                out.status.success(),
                "ip netns add {name}: {} (this test needs root)",
                String::from_utf8_lossy(&out.stderr)
            );
            TestNs { name }
        }

        fn socket(&self) -> NftSocket {
            let ns = NsHandle::open(&Netns::Name(self.name.clone()), "test").unwrap();
            ns.run(NftSocket::open).unwrap().unwrap()
        }

        fn nft(&self, args: &[&str]) -> String {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.name, "nft"])
                .args(args)
                .output()
                .expect("run nft");
            assert!(
                out.status.success(),
                "nft {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }

        /// `nft -f` of `ruleset`, fed through stdin.
        fn nft_file(&self, ruleset: &str) {
            use std::io::Write as _;
            let mut child = Command::new("ip")
                .args(["netns", "exec", &self.name, "nft", "-f", "/dev/stdin"])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run nft");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(ruleset.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "nft -f: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        fn ruleset_json(&self) -> Vec<Value> {
            let v: Value = serde_json::from_str(&self.nft(&["-j", "list", "ruleset"])).unwrap();
            v["nftables"].as_array().unwrap().clone()
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }

    /// The parts of `nft -j list ruleset` the tests check.
    #[derive(Debug, Default)]
    struct Listed {
        /// name → (type, hook, prio, policy)
        chains: Vec<(String, String, String, i64, String)>,
        /// (chain, comment)
        rules: Vec<(String, String)>,
        /// name → (key type, data type, elements as "proto . port : addr . port")
        maps: Vec<(String, String, String, Vec<String>)>,
    }

    fn listed(json: &[Value], table: &str) -> Listed {
        let mut l = Listed::default();
        let s = |v: &Value| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        };
        for item in json {
            if let Some(c) = item.get("chain").filter(|c| c["table"] == table) {
                l.chains.push((
                    s(&c["name"]),
                    s(&c["type"]),
                    s(&c["hook"]),
                    c["prio"].as_i64().unwrap(),
                    s(&c["policy"]),
                ));
            }
            if let Some(r) = item.get("rule").filter(|r| r["table"] == table) {
                l.rules.push((s(&r["chain"]), s(&r["comment"])));
            }
            if let Some(m) = item.get("map").filter(|m| m["table"] == table) {
                let key = m["type"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join(" . "))
                    .unwrap_or_else(|| s(&m["type"]));
                let elems = m["elem"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|e| {
                                let part = |v: &Value| {
                                    v["concat"]
                                        .as_array()
                                        .unwrap()
                                        .iter()
                                        .map(s)
                                        .collect::<Vec<_>>()
                                        .join(" . ")
                                };
                                format!("{} : {}", part(&e[0]), part(&e[1]))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                l.maps.push((s(&m["name"]), key, s(&m["map"]), elems));
            }
        }
        l
    }

    fn install_and_check(rules: &NatRules) -> (TestNs, NftSocket) {
        let ns = TestNs::new();
        let mut nft = ns.socket();
        create_table(&mut nft, &rules.table, "journal v1 {\"routes\":[]}").unwrap();
        install(&mut nft, rules).unwrap();
        let state = nft.read(&rules.table).unwrap().expect("table exists");
        assert_eq!(
            state,
            rules.expected(),
            "read() differs from expected(): {:?}",
            rules.expected().diff(&state)
        );
        (ns, nft)
    }

    #[test]
    fn nat_privileged_v4_redirects_and_fallback() {
        let rules = rules_v4("egress_v4");
        let (ns, _nft) = install_and_check(&rules);
        let l = listed(&ns.ruleset_json(), "egress_v4");
        assert_eq!(
            l.chains,
            [
                (
                    "prerouting".into(),
                    "nat".into(),
                    "prerouting".into(),
                    -100,
                    "accept".into()
                ),
                (
                    "postrouting".into(),
                    "nat".into(),
                    "postrouting".into(),
                    100,
                    "accept".into()
                ),
                (
                    "forward".into(),
                    "filter".into(),
                    "forward".into(),
                    0,
                    "drop".into()
                ),
            ]
        );
        let rules_listed: Vec<(&str, &str)> = l
            .rules
            .iter()
            .map(|(c, m)| (c.as_str(), m.as_str()))
            .collect();
        assert_eq!(
            rules_listed,
            [
                ("prerouting", "egress dnat4 map"),
                ("prerouting", "egress dnat4 fallback"),
                ("postrouting", "egress snat4"),
                ("forward", "egress replies"),
                ("forward", "egress dnat-ed"),
            ]
        );
        assert_eq!(l.maps.len(), 1);
        let (name, key, data, elems) = &l.maps[0];
        assert_eq!(name, "redirect4");
        assert_eq!(key, "inet_proto . inet_service");
        assert_eq!(data, "ipv4_addr . inet_service");
        let mut elems = elems.clone();
        elems.sort();
        assert_eq!(
            elems,
            [
                "tcp . 80 : 198.51.100.25 . 8080",
                "udp . 53 : 198.51.100.26 . 53"
            ]
        );
        // The text form is exactly what `nft -f` of the documented ruleset prints.
        let text = ns.nft(&["list", "table", "inet", "egress_v4"]);
        for line in [
            // nft prints the comment as stored, without escaping its quotes.
            "comment \"journal v1 {\"routes\":[]}\"",
            "type inet_proto . inet_service : ipv4_addr . inet_service",
            "type nat hook prerouting priority dstnat; policy accept;",
            "iifname \"eth0\" fib daddr type local meta nfproto ipv4 dnat ip to meta l4proto . th dport map @redirect4 comment \"egress dnat4 map\"",
            "iifname \"eth0\" fib daddr type local meta nfproto ipv4 dnat ip to 198.51.100.9 comment \"egress dnat4 fallback\"",
            "type nat hook postrouting priority srcnat; policy accept;",
            "oifname \"macvlan0\" meta nfproto ipv4 snat ip to 203.0.113.99 comment \"egress snat4\"",
            "type filter hook forward priority filter; policy drop;",
            "ct state established,related accept comment \"egress replies\"",
            "iifname \"eth0\" oifname \"macvlan0\" ct status dnat accept comment \"egress dnat-ed\"",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn nat_privileged_dual_stack() {
        let rules = rules_dual("egress_dual");
        let (ns, _nft) = install_and_check(&rules);
        let l = listed(&ns.ruleset_json(), "egress_dual");
        assert_eq!(l.chains.len(), 3);
        let count = |chain: &str| l.rules.iter().filter(|(c, _)| c == chain).count();
        assert_eq!(
            (count("prerouting"), count("postrouting"), count("forward")),
            (4, 2, 2)
        );
        let maps: Vec<_> = l
            .maps
            .iter()
            .map(|(n, _, d, e)| (n.as_str(), d.as_str(), e.len()))
            .collect();
        assert_eq!(
            maps,
            [
                ("redirect4", "ipv4_addr . inet_service", 1),
                ("redirect6", "ipv6_addr . inet_service", 2)
            ]
        );
        let mut elems6 = l.maps[1].3.clone();
        elems6.sort();
        assert_eq!(
            elems6,
            [
                "sctp . 9000 : 2001:db8:2::26 . 9000",
                "tcp . 443 : 2001:db8:2::25 . 8443"
            ]
        );
        let text = ns.nft(&["list", "ruleset"]);
        for line in [
            "type inet_proto . inet_service : ipv6_addr . inet_service",
            "iifname \"eth0\" fib daddr type local meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @redirect6 comment \"egress dnat6 map\"",
            "iifname \"eth0\" fib daddr type local meta nfproto ipv6 dnat ip6 to 2001:db8:2::9 comment \"egress dnat6 fallback\"",
            "oifname \"macvlan0\" meta nfproto ipv6 snat ip6 to 2001:db8:1::99 comment \"egress snat6\"",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    /// The kernel holds exactly what `nft -f` makes of the documented ruleset: both read back
    /// identically at the netlink level (every expression, register, map element, udata).
    #[test]
    fn nat_privileged_same_as_nft() {
        let rules = rules_dual("egress_x");
        let ours = TestNs::new();
        let mut nft = ours.socket();
        // (nft's grammar has no way to write a comment that contains a double quote.)
        create_table(&mut nft, "egress_x", "journal v1 {routes:[]}").unwrap();
        install(&mut nft, &rules).unwrap();
        let theirs = TestNs::new();
        let ruleset = r#"
table inet egress_x {
  comment "journal v1 {routes:[]}"
  map redirect4 { type inet_proto . inet_service : ipv4_addr . inet_service; size 1; elements = { tcp . 80 : 198.51.100.25 . 8080 } }
  map redirect6 { type inet_proto . inet_service : ipv6_addr . inet_service; size 2; elements = { tcp . 443 : 2001:db8:2::25 . 8443, sctp . 9000 : 2001:db8:2::26 . 9000 } }
  chain prerouting { type nat hook prerouting priority dstnat; policy accept;
    iifname "eth0" fib daddr type local meta nfproto ipv4 dnat ip to meta l4proto . th dport map @redirect4 comment "egress dnat4 map"
    iifname "eth0" fib daddr type local meta nfproto ipv4 dnat ip to 198.51.100.9 comment "egress dnat4 fallback"
    iifname "eth0" fib daddr type local meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @redirect6 comment "egress dnat6 map"
    iifname "eth0" fib daddr type local meta nfproto ipv6 dnat ip6 to 2001:db8:2::9 comment "egress dnat6 fallback"
  }
  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
    oifname "macvlan0" meta nfproto ipv4 snat ip to 203.0.113.99 comment "egress snat4"
    oifname "macvlan0" meta nfproto ipv6 snat ip6 to 2001:db8:1::99 comment "egress snat6"
  }
  chain forward { type filter hook forward priority filter; policy drop;
    ct state established,related accept comment "egress replies"
    iifname "eth0" oifname "macvlan0" ct status dnat accept comment "egress dnat-ed"
  }
}
"#;
        theirs.nft_file(ruleset);
        let netlink = |ns: &TestNs| {
            let mut lines: Vec<String> = ns
                .nft(&["--debug=netlink", "list", "ruleset"])
                .lines()
                .map(str::to_string)
                .collect();
            // Element dumps come in hash order.
            lines.sort();
            lines
        };
        assert_eq!(netlink(&ours), netlink(&theirs));
        assert_eq!(
            ours.nft(&["list", "ruleset"]),
            theirs.nft(&["list", "ruleset"])
        );
        let mut nft = theirs.socket();
        assert_eq!(nft.read("egress_x").unwrap(), Some(rules.expected()));
    }

    #[test]
    fn nat_privileged_no_redirects() {
        let rules = rules_plain("egress_plain");
        let (ns, _nft) = install_and_check(&rules);
        let l = listed(&ns.ruleset_json(), "egress_plain");
        let chains: Vec<&str> = l.chains.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(chains, ["postrouting", "forward"]);
        assert_eq!(l.rules.len(), 3);
        assert!(l.maps.is_empty());
    }

    #[test]
    fn nat_privileged_ten_thousand_redirects() {
        let ns = TestNs::new();
        let mut nft = ns.socket();
        let mut rules = rules_v4("egress_big");
        rules.redirects = (1..=10_000u16)
            .map(|p| {
                let to = format!("198.51.100.{}", p % 250 + 1);
                Redirect::of(Protocol::Tcp, p, &to, p.wrapping_add(20_000))
            })
            .collect();
        create_table(&mut nft, &rules.table, "big").unwrap();
        let start = Instant::now();
        install(&mut nft, &rules).unwrap();
        let took = start.elapsed();
        eprintln!("nat: install of 10,000 redirects took {took:?}");
        let start = Instant::now();
        let state = nft.read(&rules.table).unwrap().unwrap();
        eprintln!(
            "nat: read back of 10,000 redirects took {:?}",
            start.elapsed()
        );
        assert_eq!(state.maps[0].elements.len(), 10_000);
        assert_eq!(
            state,
            rules.expected(),
            "{:?}",
            rules.expected().diff(&state)
        );
        let l = listed(&ns.ruleset_json(), "egress_big");
        assert_eq!(l.maps[0].3.len(), 10_000);
        assert!(l.maps[0]
            .3
            .contains(&"tcp . 10000 : 198.51.100.1 . 30000".to_string()));
    }

    #[test]
    fn nat_privileged_table_lifecycle() {
        let ns = TestNs::new();
        let mut nft = ns.socket();
        create_table(&mut nft, "egress_a", "first journal").unwrap();
        create_table(&mut nft, "egress_b", "").unwrap();
        let e = create_table(&mut nft, "egress_a", "again").unwrap_err();
        assert_eq!(e.errno(), Some(libc::EEXIST), "{e}");
        assert!(e.to_string().contains("nft add table inet egress_a"), "{e}");

        let e = create_table(&mut nft, "egress_c", &"x".repeat(254)).unwrap_err();
        assert_eq!(e.errno(), Some(libc::E2BIG), "{e}");
        assert!(e.to_string().contains("holds at most 253 bytes"), "{e}");
        let e = create_table(&mut nft, "egress_c", "a\0b").unwrap_err();
        assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
        create_table(&mut nft, "egress_c", &"x".repeat(253)).unwrap();

        let mut tables = nft.tables().unwrap();
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            tables,
            [
                TableInfo {
                    name: "egress_a".into(),
                    comment: Some("first journal".into())
                },
                TableInfo {
                    name: "egress_b".into(),
                    comment: Some(String::new())
                },
                TableInfo {
                    name: "egress_c".into(),
                    comment: Some("x".repeat(253))
                },
            ]
        );
        // A table nft made without a comment, and one in another family, next to ours.
        ns.nft(&["add", "table", "inet", "plain"]);
        ns.nft(&["add", "table", "ip", "egress_ip"]);
        let tables = nft.tables().unwrap();
        assert!(tables.contains(&TableInfo {
            name: "plain".into(),
            comment: None
        }));
        assert!(!tables.iter().any(|t| t.name == "egress_ip"));
        assert!(ns
            .nft(&["list", "table", "inet", "egress_a"])
            .contains("comment \"first journal\""));

        assert_eq!(nft.read("egress_a").unwrap(), Some(NatState::default()));
        assert_eq!(nft.read("egress_missing").unwrap(), None);
        assert!(nft.delete_table("egress_a").unwrap());
        assert!(!nft.delete_table("egress_a").unwrap());
        assert!(!nft.tables().unwrap().iter().any(|t| t.name == "egress_a"));
    }

    #[test]
    fn nat_privileged_failed_batch_applies_nothing() {
        let rules = rules_v4("egress_atomic");
        let (ns, mut nft) = install_and_check(&rules);
        let before = ns.nft(&["list", "ruleset"]);
        // Installing again: the first chain already exists; nothing of the batch may land.
        let mut again = rules_dual("egress_atomic");
        again
            .redirects
            .push(Redirect::of(Protocol::Udp, 5353, "198.51.100.53", 53));
        let e = install(&mut nft, &again).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EEXIST), "{e}");
        assert!(
            e.to_string()
                .contains("nft -f (NAT batch for inet egress_atomic)"),
            "{e}"
        );
        assert_eq!(ns.nft(&["list", "ruleset"]), before);
        // Into a missing table.
        let e = install(&mut nft, &rules_v4("egress_nowhere")).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
        // The socket is still in sync after errors.
        assert_eq!(nft.read("egress_atomic").unwrap(), Some(rules.expected()));
    }

    #[test]
    fn nat_privileged_reinstall_repairs_drift() {
        let rules = rules_dual("egress_fix");
        let (ns, mut nft) = install_and_check(&rules);
        // Someone edits our table.
        ns.nft(&[
            "delete",
            "element",
            "inet",
            "egress_fix",
            "redirect4",
            "{ tcp . 80 }",
        ]);
        // The maps are sized to the spec's redirects: a foreign element takes a deleted one's
        // place.
        ns.nft(&[
            "delete",
            "element",
            "inet",
            "egress_fix",
            "redirect6",
            "{ sctp . 9000 }",
        ]);
        ns.nft(&[
            "add",
            "element",
            "inet",
            "egress_fix",
            "redirect6",
            "{ udp . 7 : 2001:db8::7 . 7 }",
        ]);
        ns.nft(&["add", "rule", "inet", "egress_fix", "forward", "accept"]);
        ns.nft(&["add", "chain", "inet", "egress_fix", "extra"]);
        let drifted = nft.read("egress_fix").unwrap().unwrap();
        assert_ne!(drifted, rules.expected());
        let d = describe_difference(&rules.expected(), Some(&drifted));
        assert!(
            d.contains("map redirect4: missing tcp . 80 : 198.51.100.25 . 8080"),
            "{d}"
        );
        assert!(
            d.contains("map redirect6: unexpected udp . 7 : 2001:db8::7 . 7"),
            "{d}"
        );
        assert!(d.contains("chain extra is not ours"), "{d}");
        assert!(d.contains("chain forward: rules"), "{d}");

        nft.reinstall(&rules).unwrap();
        assert_eq!(nft.read("egress_fix").unwrap(), Some(rules.expected()));
        // The journal comment survives.
        assert!(ns
            .nft(&["list", "table", "inet", "egress_fix"])
            .contains("comment \"journal v1"));

        // A different ruleset replaces the old one (chains with another policy are recreated).
        ns.nft(&[
            "add",
            "chain",
            "inet",
            "egress_fix",
            "forward",
            "{ policy accept; }",
        ]);
        let plain = rules_plain("egress_fix");
        nft.reinstall(&plain).unwrap();
        assert_eq!(nft.read("egress_fix").unwrap(), Some(plain.expected()));

        assert!(nft
            .tables()
            .unwrap()
            .iter()
            .any(|t| t.name == "egress_fix" && t.comment.is_some()));
        let e = nft.reinstall(&rules_v4("egress_gone")).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
    }
}
