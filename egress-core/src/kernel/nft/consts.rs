//! Kernel and nft constants. Values from include/uapi/linux/netfilter/nf_tables.h, nfnetlink.h,
//! nf_nat.h and libnftnl's udata.h; the ones written on the wire were checked against
//! `nft --debug=netlink,mnl` on this kernel.

use std::time::Duration;

/// `NFNL_SUBSYS_NFTABLES`: the `res_id` of a batch's begin/end messages.
pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNL_MSG_BATCH_BEGIN`.
pub(crate) const NFNL_MSG_BATCH_BEGIN: u8 = 16;
/// `NFNL_BATCH_GENID`: batch attribute; the kernel refuses the batch (ERESTART) if the ruleset
/// generation moved on since it was read.
pub(crate) const NFNL_BATCH_GENID: u16 = 1;
/// `NFNETLINK_V0`.
pub(crate) const NFNETLINK_V0: u8 = 0;
/// `NFPROTO_INET` in the nfgenmsg header.
pub(crate) const NFPROTO_INET: u8 = 1;

// Netlink message types (nfnetlink subsystem in the high byte).
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;

// Message types (`NFT_MSG_*`) of the replies read attribute by attribute.
pub(crate) const NFT_MSG_NEWRULE: u8 = 6;
pub(crate) const NFT_MSG_NEWSETELEM: u8 = 12;

// Attributes read back from dumps.
pub(crate) const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub(crate) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(crate) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(crate) const NFTA_SET_ELEM_DATA: u16 = 2;
pub(crate) const NFTA_LIST_ELEM: u16 = 1;
pub(crate) const NFTA_DATA_VALUE: u16 = 1;

// Expression attributes.
pub(crate) const NFTA_FIB_DREG: u16 = 1;
pub(crate) const NFTA_FIB_RESULT: u16 = 2;
pub(crate) const NFTA_FIB_FLAGS: u16 = 3;
pub(crate) const NFTA_CT_DREG: u16 = 1;
pub(crate) const NFTA_CT_KEY: u16 = 2;
pub(crate) const NFTA_NAT_TYPE: u16 = 1;
pub(crate) const NFTA_NAT_FAMILY: u16 = 2;
pub(crate) const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
pub(crate) const NFTA_NAT_REG_ADDR_MAX: u16 = 4;
pub(crate) const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
pub(crate) const NFTA_NAT_REG_PROTO_MAX: u16 = 6;
pub(crate) const NFTA_NAT_FLAGS: u16 = 7;

// Expression values.
pub(crate) const NFT_REG_VERDICT: u32 = 0;
pub(crate) const NFT_REG_1: u32 = 1;
pub(crate) const NFT_REG_2: u32 = 2;
pub(crate) const NFT_REG32_01: u32 = 9;
pub(crate) const NFT_META_IIFNAME: u32 = 6;
pub(crate) const NFT_META_OIFNAME: u32 = 7;
pub(crate) const NFT_META_NFPROTO: u32 = 15;
pub(crate) const NFT_META_L4PROTO: u32 = 16;
pub(crate) const NFT_CMP_EQ: u32 = 0;
pub(crate) const NFT_CMP_NEQ: u32 = 1;
pub(crate) const NFT_CMP_LTE: u32 = 3;
pub(crate) const NFT_CMP_GTE: u32 = 5;
pub(crate) const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
pub(crate) const NFTA_FIB_F_DADDR: u32 = 2;
pub(crate) const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
/// `RTN_LOCAL`, host byte order in the register.
pub(crate) const RTN_LOCAL: u32 = 2;
pub(crate) const NFT_CT_STATE: u32 = 0;
pub(crate) const NFT_CT_STATUS: u32 = 2;
/// `NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED)`.
pub(crate) const CT_STATE_ESTABLISHED_RELATED: u32 = 0x2 | 0x4;
/// `IPS_DST_NAT`.
pub(crate) const IPS_DST_NAT: u32 = 0x20;
pub(crate) const NFT_NAT_SNAT: u32 = 0;
pub(crate) const NFT_NAT_DNAT: u32 = 1;
/// `NF_NAT_RANGE_MAP_IPS` / `NF_NAT_RANGE_PROTO_SPECIFIED`: the kernel derives them from the
/// registers present and reports them back.
pub(crate) const NF_NAT_RANGE_MAP_IPS: u32 = 0x1;
pub(crate) const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 0x2;
pub(crate) const NFPROTO_IPV4: u8 = 2;
pub(crate) const NFPROTO_IPV6: u8 = 10;
pub(crate) const IPPROTO_ICMP: u8 = 1;
pub(crate) const IPPROTO_ICMPV6: u8 = 58;
pub(crate) const NF_DROP: u32 = 0;
pub(crate) const NF_ACCEPT: u32 = 1;
pub(crate) const NF_INET_PRE_ROUTING: u32 = 0;
pub(crate) const NF_INET_LOCAL_IN: u32 = 1;
pub(crate) const NF_INET_FORWARD: u32 = 2;
pub(crate) const NF_INET_POST_ROUTING: u32 = 4;
pub(crate) const NF_IP_PRI_NAT_DST: i32 = -100;
pub(crate) const NF_IP_PRI_FILTER: i32 = 0;
pub(crate) const NF_IP_PRI_NAT_SRC: i32 = 100;
/// `NFT_SET_MAP`.
pub(crate) const NFT_SET_MAP: u32 = 0x8;
/// nft's datatype ids (`TYPE_*` in nft's datatype.h); a concatenation is
/// `(a << TYPE_BITS) | b` with `TYPE_BITS` = 6.
pub(crate) const TYPE_IPADDR: u32 = 7;
pub(crate) const TYPE_IP6ADDR: u32 = 8;
pub(crate) const TYPE_INET_PROTOCOL: u32 = 12;
pub(crate) const TYPE_INET_SERVICE: u32 = 13;
pub(crate) const TYPE_BITS: u32 = 6;
/// `inet_proto . inet_service`.
pub(crate) const MAP_KEY_TYPE: u32 = (TYPE_INET_PROTOCOL << TYPE_BITS) | TYPE_INET_SERVICE;
/// `ipv4_addr . inet_service`.
pub(crate) const MAP_DATA_TYPE4: u32 = (TYPE_IPADDR << TYPE_BITS) | TYPE_INET_SERVICE;
/// `ipv6_addr . inet_service`.
pub(crate) const MAP_DATA_TYPE6: u32 = (TYPE_IP6ADDR << TYPE_BITS) | TYPE_INET_SERVICE;
/// Key: protocol (1 byte, padded to 4) . port (2 bytes big endian, padded to 4).
pub(crate) const MAP_KEY_LEN: usize = 8;

/// `NFT_USERDATA_MAXLEN`: the most userdata a table, chain or rule can carry.
pub(crate) const USERDATA_MAX: usize = 256;
/// `NFTNL_UDATA_TABLE_COMMENT` / `NFTNL_UDATA_RULE_COMMENT`.
pub(crate) const UDATA_COMMENT: u8 = 0;
/// libnftnl's set udata types (`NFTNL_UDATA_SET_*`).
pub(crate) const UDATA_SET_KEYBYTEORDER: u8 = 0;
pub(crate) const UDATA_SET_DATABYTEORDER: u8 = 1;
pub(crate) const UDATA_SET_KEY_TYPEOF: u8 = 3;
pub(crate) const UDATA_SET_DATA_TYPEOF: u8 = 4;
pub(crate) const UDATA_SET_DATA_INTERVAL: u8 = 6;
/// nft's `EXPR_CONCAT` tag in a typeof record.
pub(crate) const UDATA_TYPEOF_CONCAT: u32 = 13;

/// Map elements per NEWSETELEM message: an element is at most 48 bytes (IPv6), and the
/// element list is one attribute with a 16-bit length.
pub(crate) const ELEMENTS_PER_MESSAGE: usize = 1000;
const _: () = assert!(ELEMENTS_PER_MESSAGE * 48 + 64 < u16::MAX as usize);
/// What the send buffer is raised to when the socket is opened (a batch of 10,000 IPv6 map
/// elements is about 0.5 MB; larger batches raise it again before sending).
pub(crate) const SEND_BUFFER: usize = 4 << 20;
/// Receive buffer for one datagram (dumps come in ≤ 32 KiB datagrams).
pub(crate) const RECV_BUFFER: usize = 256 << 10;
/// The receive buffer under `fault::slow_dumps`: the kernel then cuts every dump into parts
/// of at most this size (a busy machine's, where it cannot allocate 32 KB).
#[cfg(feature = "fault-injection")]
pub(crate) const SMALL_RECV_BUFFER: usize = 4096;
/// The pause before each part of a dump under `fault::slow_dumps` (a preempted reader's).
#[cfg(feature = "fault-injection")]
pub(crate) const SLOW_DUMP_PAUSE: Duration = Duration::from_millis(1);
/// How long to wait for the kernel's answer (it answers synchronously; this only guards
/// against a lost reply).
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts for reads and repairs that race with another writer.
pub(crate) const ATTEMPTS: usize = 5;

/// Chain and map names, and the rule comments that identify each rule.
pub(crate) const CHAIN_PREROUTING: &str = "prerouting";
pub(crate) const CHAIN_POSTROUTING: &str = "postrouting";
pub(crate) const CHAIN_FORWARD: &str = "forward";
pub(crate) const CHAIN_INPUT: &str = "input";

// Traffic counters.
/// `NFTA_CT_DIRECTION` (a u8): which tuple of the connection a `ct` key reads.
pub(crate) const NFTA_CT_DIRECTION: u16 = 3;
/// `IP_CT_DIR_ORIGINAL`: the tuple of the connection's first packet (client → router).
pub(crate) const IP_CT_DIR_ORIGINAL: u8 = 0;
/// `NFT_CT_PROTO_DST`: the destination port of a connection's tuple.
pub(crate) const NFT_CT_PROTO_DST: u32 = 12;
/// `NFTA_SET_EXPR`: the stateful expression every element of a set gets (its counter).
pub(crate) const NFTA_SET_EXPR: u16 = 17;
/// `NFTA_SET_ELEM_EXPR`: an element's stateful expression, as the kernel dumps it.
pub(crate) const NFTA_SET_ELEM_EXPR: u16 = 7;
/// `NFTA_EXPR_NAME` / `NFTA_EXPR_DATA`: an expression's name and its attributes.
pub(crate) const NFTA_EXPR_NAME: u16 = 1;
pub(crate) const NFTA_EXPR_DATA: u16 = 2;
/// `NFTA_COUNTER_BYTES` / `NFTA_COUNTER_PACKETS` (u64, big endian).
pub(crate) const NFTA_COUNTER_BYTES: u16 = 1;
pub(crate) const NFTA_COUNTER_PACKETS: u16 = 2;
/// The nft datatype of a port set's key: `inet_service`, two bytes, big endian.
pub(crate) const PORT_KEY_LEN: u32 = 2;
/// libnftnl's `BYTEORDER_BIG_ENDIAN`, in a port set's userdata.
pub(crate) const BYTEORDER_BIG_ENDIAN: u32 = 2;
