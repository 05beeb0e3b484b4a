//! A small blocking client for `NETLINK_NETFILTER`: atomic batches, dumps, single requests.
//! Messages are built with netlink-packet-netfilter's types and every reply is decoded by its
//! parsers. What the messages say (the router's table, its counters) is the ruleset's
//! business (`objects::nat`); this is the transport.

pub(crate) mod consts;
pub(crate) mod reply;

use std::{collections::BTreeSet, os::raw::c_int};

use netlink_packet_core::{
    DefaultNla, NetlinkMessage, ParseableParametrized, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
};
use netlink_packet_netfilter::{
    conntrack::{ConntrackAttribute, ConntrackMessage},
    nftables::{GenAttribute, GenMessage, NfTablesMessage},
    none::ControlMessage,
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::sys::{
    socket::{getsockopt, setsockopt, sockopt},
    time::TimeVal,
};

use self::{consts::*, reply::Reply};
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

pub(crate) fn inet(msg: NfTablesMessage) -> NetfilterMessage {
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

    pub(crate) fn send(&mut self, op: &str, buf: &[u8]) -> Result<()> {
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
    pub(crate) fn recv(&mut self, op: &str, nonblocking: bool) -> Result<Option<Vec<Reply>>> {
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
    pub(crate) fn drain(&mut self, op: &str) {
        while let Ok(Some(_)) = self.recv(op, true) {}
    }

    /// Sends `msgs` as one batch and waits for the kernel's verdict on each. The kernel
    /// applies all of the batch or none of it; the first error is reported.
    pub(crate) fn batch(
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
    pub(crate) fn dump(
        &mut self,
        op: &str,
        request: impl Fn() -> NetfilterMessage,
    ) -> Result<Vec<Reply>> {
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
    pub(crate) fn request(&mut self, op: &str, msg: NetfilterMessage) -> Result<Reply> {
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
}

/// A 32-bit attribute, big endian.
pub(crate) fn be32(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

/// `n` rounded up to netlink's 4-byte alignment.
pub(crate) fn align4(n: usize) -> usize {
    (n + 3) & !3
}
