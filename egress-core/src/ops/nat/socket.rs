//! A small blocking client for `NETLINK_NETFILTER`: atomic batches, dumps, single requests.
//! Messages are built with netlink-packet-netfilter's types and every reply is decoded by its
//! parsers.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    os::raw::c_int,
};

use netlink_packet_core::{
    NetlinkMessage, Nla, NlasIterator, ParseableParametrized, NLA_TYPE_MASK, NLM_F_ACK,
    NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_netfilter::{
    conntrack::{ConntrackAttribute, ConntrackMessage},
    nftables::{
        ChainAttribute, ChainMessage, DataAttribute, ExpressionAttribute, Expressions,
        GenAttribute, GenMessage, Hook, Immediate, ListAttribute, NfTablesMessage, RuleAttribute,
        RuleMessage, SetAttribute, SetElementAttribute, SetElementList, SetElementMessage,
        SetMessage, TableAttribute, TableFlags, TableMessage,
    },
    none::ControlMessage,
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::sys::{
    socket::{getsockopt, setsockopt, sockopt},
    time::TimeVal,
};

use super::{
    consts::*,
    expr::{be32, hex, render_raw, Expr},
    layout::{
        align4, decode_comment, decode_element, hook_name, policy_name, table_userdata, Layout,
    },
    reply::{rule_attribute, set_element_attribute, Reply},
    ChainState, MapState, NatRules, NatState, RuleState, TableInfo,
};
use crate::error::{Error, Result};

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
            buf: Vec::with_capacity(receive_buffer()),
        };
        nft.raise_send_buffer(SEND_BUFFER);
        Ok(nft)
    }

    /// `nft add table inet TABLE { comment "COMMENT"; maps; chains; rules }` in one batch:
    /// the whole table appears at once, or nothing does. An existing table is refused
    /// ([`Error::Kernel`] with errno EEXIST, which the caller maps) before any message names it:
    /// the kernel processes every message of a batch before it aborts one, so a batch whose
    /// NEWTABLE failed (`NLM_F_EXCL`) would still append its rules, uncommitted, to the other
    /// table's chains, shifting the dumps of another reader. The batch carries the generation at
    /// which the table was missing ([`guarded`](Self::guarded)).
    ///
    /// The comment is the table's userdata as libnftnl encodes it; a table's userdata is at
    /// most 256 bytes and cannot be changed later.
    pub(crate) fn create(&mut self, comment: &str, rules: &NatRules) -> Result<()> {
        let op = format!(
            "nft add table inet {} (one batch with its NAT and filter)",
            rules.table
        );
        self.guarded(&op, |nft| {
            if nft.exists(&op, &rules.table)? {
                return Err(Error::kernel(&op, libc::EEXIST));
            }
            let mut msgs = vec![new_table(&rules.table, comment)?];
            msgs.extend(Layout::of(rules).messages(&rules.table, &BTreeSet::new()));
            Ok(Some(msgs))
        })
        .map(drop)
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
            .filter_map(Reply::inet)
            .filter_map(|m| match m {
                NfTablesMessage::NewTable(t) => {
                    let mut info = TableInfo {
                        name: String::new(),
                        comment: None,
                    };
                    for a in t.attributes {
                        match a {
                            TableAttribute::Name(n) => info.name = n,
                            TableAttribute::UserData(u) => info.comment = decode_comment(&u),
                            _ => {}
                        }
                    }
                    (!info.name.is_empty()).then_some(info)
                }
                _ => None,
            })
            .collect())
    }

    /// What the table holds now (`None` if it does not exist) and the ruleset generation it
    /// was read at, read consistently: the reads are retried if the ruleset changed while they
    /// ran.
    pub(crate) fn read(&mut self, table: &str) -> Result<(u32, Option<NatState>)> {
        let op = format!("nft list table inet {table}");
        for _ in 0..ATTEMPTS {
            let before = self.generation()?;
            let state = match self.read_once(&op, table, true) {
                // The table went away between two of the dumps: read again.
                Err(e) if e.errno() == Some(libc::ENOENT) && self.generation()? != before => {
                    continue
                }
                r => r?,
            };
            if self.generation()? == before {
                return Ok((before, state));
            }
        }
        Err(Error::kernel(op, libc::EAGAIN))
    }

    /// Deletes table `TABLE` (if it exists) and creates it again with `comment` and `rules`, in
    /// one batch: the ruleset never misses it, and the comment (which the kernel never
    /// changes on an existing table) is the new one. Guarded by the generation at which the
    /// table was found or missing, as [`create`](Self::create).
    pub(crate) fn rewrite(&mut self, comment: &str, rules: &NatRules) -> Result<()> {
        let op = format!(
            "nft delete table inet {} + add it again with its comment (one batch)",
            rules.table
        );
        self.guarded(&op, |nft| {
            let mut msgs = Vec::new();
            if nft.exists(&op, &rules.table)? {
                msgs.push((
                    inet(NfTablesMessage::DeleteTable(TableMessage {
                        attributes: vec![TableAttribute::Name(rules.table.clone())],
                    })),
                    0,
                ));
            }
            msgs.push(new_table(&rules.table, comment)?);
            msgs.extend(Layout::of(rules).messages(&rules.table, &BTreeSet::new()));
            Ok(Some(msgs))
        })
        .map(drop)
    }

    /// The ruleset generation (`NFT_MSG_GETGEN`): it changes with every committed batch.
    pub(crate) fn generation(&mut self) -> Result<u32> {
        const OP: &str = "nft list ruleset (its generation)";
        let msg = NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, NFNETLINK_V0, 0),
            NfTablesMessage::GetGen(GenMessage { attributes: vec![] }),
        );
        let reply = self.request(OP, msg)?;
        match reply.nftables() {
            Some(NfTablesMessage::NewGen(g)) => g
                .attributes
                .into_iter()
                .find_map(|a| match a {
                    GenAttribute::Id(id) => Some(id),
                    _ => None,
                })
                .ok_or_else(|| Error::kernel(OP, libc::EBADMSG)),
            _ => Err(Error::kernel(OP, libc::EBADMSG)),
        }
    }

    /// Every connection the namespace tracks, both families (`conntrack -L`), as
    /// netlink-packet-netfilter parses each entry's attributes. Read by `diagnose`.
    pub(crate) fn conntrack(&mut self) -> Result<Vec<Vec<ConntrackAttribute>>> {
        let replies = self.dump("conntrack -L", || {
            NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, NFNETLINK_V0, 0),
                ConntrackMessage::Get(Vec::new()),
            )
        })?;
        Ok(replies
            .iter()
            .filter_map(
                |r| match NetfilterMessage::parse_with_param(&r.body[..], r.kind) {
                    Ok(NetfilterMessage {
                        inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)),
                        ..
                    }) => Some(attrs),
                    _ => None,
                },
            )
            .collect())
    }
}

/// The size of the buffer replies are received in. The kernel cuts a dump into parts of the
/// largest buffer a socket has received with (at most 32 KB; 4 KB when it cannot allocate
/// more).
fn receive_buffer() -> usize {
    #[cfg(feature = "fault-injection")]
    if crate::fault::dumps_slow() {
        return SMALL_RECV_BUFFER;
    }
    RECV_BUFFER
}

pub(super) fn inet(msg: NfTablesMessage) -> NetfilterMessage {
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
                #[cfg(feature = "fault-injection")]
                if crate::fault::dumps_slow() {
                    std::thread::sleep(SLOW_DUMP_PAUSE);
                }
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

    /// Whether table `table` exists (`nft list table inet TABLE`, without its content).
    fn exists(&mut self, op: &str, table: &str) -> Result<bool> {
        let get = inet(NfTablesMessage::GetTable(TableMessage {
            attributes: vec![TableAttribute::Name(table.to_string())],
        }));
        match self.request(op, get) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sends the batch that `build` makes from what it reads, guarded by the ruleset generation
    /// read before (`NFNL_BATCH_GENID`): if another batch was committed since, the kernel
    /// refuses the whole batch before processing any of its messages, and it is built again.
    /// `build` returns `None` when there is nothing to send: `Ok(false)`.
    fn guarded(
        &mut self,
        op: &str,
        mut build: impl FnMut(&mut Self) -> Result<Option<Vec<(NetfilterMessage, u16)>>>,
    ) -> Result<bool> {
        for _ in 0..ATTEMPTS {
            let generation = self.generation()?;
            let Some(msgs) = build(self)? else {
                return Ok(false);
            };
            match self.batch(op, msgs, Some(generation)) {
                Ok(()) => return Ok(true),
                Err(e) if e.errno() == Some(libc::ERESTART) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::kernel(op, libc::EAGAIN))
    }

    /// The rules of the table's chains `chains` (each with its use count, as its dump gives
    /// it), each chain's in order, each rule as its attributes.
    ///
    /// The kernel makes a dump in walks, one per part and a last one that finds nothing left,
    /// each resuming by counting the rules before the point the last stopped at, uncommitted
    /// ones included; and a batch of another writer that it aborts changes no generation.
    /// Rules that such a batch adds and takes back between two walks (it appends them to any
    /// chain it names, the router's too) shift that point: a rule of a later chain comes twice,
    /// or not at all. So one dump of the table's rules is taken if each chain's list in it is
    /// unbroken ([`unbroken`]: a rule twice shows) and as long as the chain's use count (each
    /// of its rules adds one, uncommitted ones included: a rule missed shows); else one dump
    /// per chain ([`chain_rules`](Self::chain_rules)).
    fn rules(
        &mut self,
        op: &str,
        table: &str,
        chains: &[(ChainState, Option<u32>)],
    ) -> Result<Vec<Vec<Vec<RuleAttribute>>>> {
        let replies = self.dump(op, || {
            inet(NfTablesMessage::GetRule(RuleMessage {
                attributes: vec![RuleAttribute::Table(table.to_string())],
            }))
        })?;
        let mut rules: Vec<Vec<_>> = chains.iter().map(|_| Vec::new()).collect();
        for attributes in replies
            .iter()
            .filter_map(|r| r.inet_attributes(NFT_MSG_NEWRULE, rule_attribute))
        {
            let (t, c) = place(&attributes);
            if let Some(i) = chains.iter().position(|(chain, _)| c == Some(&chain.name)) {
                if t == Some(table) {
                    rules[i].push(attributes);
                }
            }
        }
        let whole = rules
            .iter()
            .zip(chains)
            .all(|(rules, (_, used))| unbroken(rules) && *used == u32::try_from(rules.len()).ok());
        if whole {
            return Ok(rules);
        }
        chains
            .iter()
            .map(|(chain, _)| self.chain_rules(op, table, &chain.name))
            .collect()
    }

    /// The rules of chain `chain`, as [`rules`](Self::rules) gives them: one dump of that chain
    /// alone, read again until its list is unbroken. Rules that another writer's batch appends
    /// go behind the chain's last, where they cannot shift the dump of that chain alone; the
    /// check catches the rest, but a missed last rule (see [`unbroken`]).
    fn chain_rules(
        &mut self,
        op: &str,
        table: &str,
        chain: &str,
    ) -> Result<Vec<Vec<RuleAttribute>>> {
        for _ in 0..ATTEMPTS {
            let replies = self.dump(op, || {
                inet(NfTablesMessage::GetRule(RuleMessage {
                    attributes: vec![
                        RuleAttribute::Table(table.to_string()),
                        RuleAttribute::Chain(chain.to_string()),
                    ],
                }))
            })?;
            let rules: Vec<Vec<RuleAttribute>> = replies
                .iter()
                .filter_map(|r| r.inet_attributes(NFT_MSG_NEWRULE, rule_attribute))
                .filter(|attributes| place(attributes) == (Some(table), Some(chain)))
                .collect();
            if unbroken(&rules) {
                return Ok(rules);
            }
        }
        Err(Error::kernel(
            format!("{op} (chain {chain}: each dump repeated or skipped a rule)"),
            libc::EINTR,
        ))
    }

    /// One pass of [`read`](Self::read), without the consistency check.
    fn read_once(
        &mut self,
        op: &str,
        table: &str,
        with_elements: bool,
    ) -> Result<Option<NatState>> {
        if !self.exists(op, table)? {
            return Ok(None);
        }
        let mut chains = Vec::new();
        for (mut chain, rules) in self.chains(op, table)? {
            for attributes in rules {
                let mut rule = RuleState {
                    comment: None,
                    exprs: Vec::new(),
                };
                for a in attributes {
                    match a {
                        RuleAttribute::UserData(u) => rule.comment = decode_comment(&u),
                        RuleAttribute::Expressions(list) => {
                            rule.exprs = list
                                .iter()
                                .map(|e| match e {
                                    ListAttribute::Element(attrs) => Expr::decode(attrs)
                                        .map_or_else(|| render_raw(attrs), |x| x.render()),
                                    other => format!("(foreign list entry {other:?})"),
                                })
                                .collect();
                        }
                        _ => {}
                    }
                }
                chain.rules.push(rule);
            }
            chains.push(chain);
        }
        chains.sort_by(|a, b| a.name.cmp(&b.name));
        let maps = self.maps(op, table, with_elements)?;
        Ok(Some(NatState { chains, maps }))
    }

    /// The chains of table `table` (their rules left empty), each with its rules as
    /// [`rules`](Self::rules) reads them.
    fn chains(
        &mut self,
        op: &str,
        table: &str,
    ) -> Result<Vec<(ChainState, Vec<Vec<RuleAttribute>>)>> {
        let replies = self.dump(op, || {
            inet(NfTablesMessage::GetChain(ChainMessage {
                attributes: vec![ChainAttribute::Table(table.to_string())],
            }))
        })?;
        let mut chains = Vec::new();
        for m in replies.iter().filter_map(Reply::inet) {
            let NfTablesMessage::NewChain(c) = m else {
                continue;
            };
            let mut chain = ChainState {
                name: String::new(),
                kind: None,
                hook: None,
                priority: None,
                policy: None,
                rules: Vec::new(),
            };
            let (mut in_table, mut used) = (false, None);
            for a in c.attributes {
                match a {
                    ChainAttribute::Table(t) => in_table = t == table,
                    ChainAttribute::Use(n) => used = Some(n),
                    ChainAttribute::Name(n) => chain.name = n,
                    ChainAttribute::Type(t) => chain.kind = Some(t),
                    ChainAttribute::Policy(p) => chain.policy = Some(policy_name(p)),
                    ChainAttribute::Hook(hooks) => {
                        for h in hooks {
                            match h {
                                Hook::Number(n) => chain.hook = Some(hook_name(u32::from(n))),
                                Hook::Priority(p) => chain.priority = Some(p as i32),
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            if in_table && !chain.name.is_empty() {
                chains.push((chain, used));
            }
        }

        let rules = self.rules(op, table, &chains)?;
        Ok(chains.into_iter().map(|(c, _)| c).zip(rules).collect())
    }

    /// The sets and maps of table `table`, with their elements if `with_elements`.
    fn maps(&mut self, op: &str, table: &str, with_elements: bool) -> Result<Vec<MapState>> {
        let replies = self.dump(op, || {
            inet(NfTablesMessage::GetSet(SetMessage {
                attributes: vec![SetAttribute::Table(table.to_string())],
            }))
        })?;
        let mut maps: Vec<MapState> = Vec::new();
        for m in replies.iter().filter_map(Reply::inet) {
            let NfTablesMessage::NewSet(s) = m else {
                continue;
            };
            let mut map = MapState {
                name: String::new(),
                key_type: 0,
                data_type: 0,
                flags: 0,
                elements: Vec::new(),
                ports: Vec::new(),
                other_elements: Vec::new(),
            };
            let mut in_table = false;
            for a in s.attributes {
                match a {
                    SetAttribute::Table(t) => in_table = t == table,
                    SetAttribute::Name(n) => map.name = n,
                    SetAttribute::KeyType(t) => map.key_type = t,
                    SetAttribute::DataType(t) => map.data_type = t,
                    SetAttribute::Flags(f) => map.flags = f.bits(),
                    _ => {}
                }
            }
            if in_table && !map.name.is_empty() {
                maps.push(map);
            }
        }
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
                for attributes in replies
                    .iter()
                    .filter_map(|r| r.inet_attributes(NFT_MSG_NEWSETELEM, set_element_attribute))
                {
                    read_elements(attributes, table, map);
                }
                map.elements.sort();
                map.ports.sort_unstable();
                map.other_elements.sort();
            }
        }
        Ok(maps)
    }

    /// Deletes the table's chains and maps and installs `rules` anew — one batch, guarded by the
    /// ruleset generation it was computed from (retried if another writer got in between).
    /// `Ok(false)` when the table does not exist.
    fn replace(&mut self, op: &str, table: &str, rules: &NatRules) -> Result<bool> {
        let layout = Layout::of(rules);
        self.guarded(op, |nft| {
            let Some(current) = nft.read_once(op, table, false)? else {
                return Ok(None);
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
            Ok(Some(msgs))
        })
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

/// The table and chain a rule of a dump names.
fn place(attributes: &[RuleAttribute]) -> (Option<&str>, Option<&str>) {
    let (mut table, mut chain) = (None, None);
    for a in attributes {
        match a {
            RuleAttribute::Table(t) => table = Some(t.as_str()),
            RuleAttribute::Chain(c) => chain = Some(c.as_str()),
            _ => {}
        }
    }
    (table, chain)
}

/// Whether the rules of one chain's dump form one unbroken list: the kernel gives each rule
/// the handle of the one before it in the chain (`NFTA_RULE_POSITION`, none for the first), so
/// a rule dumped twice, or one missed before another, shows. A missed last rule does not: a
/// dump of one chain misses one only if a rule before it was taken back between two parts.
pub(super) fn unbroken(rules: &[Vec<RuleAttribute>]) -> bool {
    let mut previous = 0;
    rules.iter().all(|attributes| {
        let (mut handle, mut position) = (0, 0);
        for a in attributes {
            match a {
                RuleAttribute::Handle(h) => handle = *h,
                RuleAttribute::Position(p) => position = *p,
                _ => {}
            }
        }
        let linked = handle != 0 && position == previous;
        previous = handle;
        linked
    })
}

/// Adds the elements of map `map` in one dump message to `map`.
fn read_elements(attributes: Vec<SetElementList>, table: &str, map: &mut MapState) {
    let mut in_table = false;
    let mut in_set = false;
    let mut lists = Vec::new();
    for a in attributes {
        match a {
            SetElementList::Table(t) => in_table = t == table,
            SetElementList::Set(s) => in_set = s == map.name,
            SetElementList::Elements(l) => lists = l,
            _ => {}
        }
    }
    if !(in_table && in_set) {
        return;
    }
    for elem in lists {
        let ListAttribute::Element(attrs) = elem else {
            continue;
        };
        let (mut key, mut data) = (Vec::new(), Vec::new());
        for a in attrs {
            match a {
                SetElementAttribute::Key(DataAttribute::Value(v)) => key = v,
                SetElementAttribute::Data(DataAttribute::Value(v)) => data = v,
                _ => {}
            }
        }
        match (decode_element(&key, &data), key.as_slice(), data.is_empty()) {
            (Some(el), _, _) => map.elements.push(el),
            // A traffic set's port.
            (None, [hi, lo], true) => map.ports.push(u16::from_be_bytes([*hi, *lo])),
            _ => map
                .other_elements
                .push(format!("0x{} : 0x{}", hex(&key), hex(&data))),
        }
    }
}

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
