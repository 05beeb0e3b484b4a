//! Announcements: gratuitous ARP and unsolicited neighbour advertisements for the egress
//! addresses, so the gateway and the switches learn the macvlan's MAC at once.
//!
//! The kernel's `arp_notify` fires only for addresses present at link-up, and an adopted link is
//! already up, so the frames are sent explicitly on a packet socket of the router namespace
//! (`arping -U -I macvlan0 ADDR`, `ndisc6`-style unsolicited NA to ff02::1).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::OwnedFd,
    sync::{mpsc, Mutex, OnceLock},
};

use crate::{
    error::{Error, Result},
    netns::NsHandle,
};

/// Sends `count` announcements of each address on link `index` (MAC `mac`) of `ns`.
pub(crate) fn send(
    ns: &NsHandle,
    index: u32,
    link: &str,
    mac: [u8; 6],
    addrs: &[IpAddr],
    count: u8,
) -> Result<()> {
    if count == 0 || addrs.is_empty() {
        return Ok(());
    }
    let (link, addrs) = (link.to_string(), addrs.to_vec());
    ns.run(move || {
        let sock = PacketSocket::open()
            .map_err(|errno| Error::kernel(format!("open packet socket on {link}"), errno))?;
        for _ in 0..count {
            for a in &addrs {
                let (frame, proto) = match a {
                    IpAddr::V4(ip) => (garp(mac, *ip), 0x0806),
                    IpAddr::V6(ip) => (unsolicited_na(mac, *ip), 0x86dd),
                };
                sock.send(index, proto, &frame[..6], &frame)
                    .map_err(|errno| {
                        Error::kernel(
                            format!("announce {a} on {link} ({})", command(&link, *a)),
                            errno,
                        )
                    })?;
            }
        }
        close_later(sock.0);
        Ok(())
    })?
}

/// The equivalent command, for the plan.
pub(crate) fn command(link: &str, a: IpAddr) -> String {
    match a {
        IpAddr::V4(_) => format!("arping -U -I {link} {a}"),
        IpAddr::V6(_) => format!("ndisc6 unsolicited NA for {a} on {link}"),
    }
}

/// Closing a packet socket waits for an RCU grace period (`synchronize_net`, ~10 ms): sockets
/// are closed by one background thread, off the caller's path (inline if it cannot start).
fn close_later(fd: OwnedFd) {
    static CLOSER: OnceLock<Option<Mutex<mpsc::Sender<OwnedFd>>>> = OnceLock::new();
    let closer = CLOSER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<OwnedFd>();
        std::thread::Builder::new()
            .name("egress-close".into())
            .spawn(move || rx.into_iter().for_each(drop))
            .ok()
            .map(|_| Mutex::new(tx))
    });
    if let Some(tx) = closer {
        let tx = tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(mpsc::SendError(fd)) = tx.send(fd) {
            drop(fd);
        }
    }
}

struct PacketSocket(OwnedFd);

impl PacketSocket {
    fn open() -> std::result::Result<Self, i32> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2) call; the fd is owned by the returned value.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO));
        }
        // SAFETY: fd was just returned by socket(2) and is not owned elsewhere.
        Ok(PacketSocket(unsafe {
            std::os::fd::OwnedFd::from_raw_fd(fd)
        }))
    }

    fn send(
        &self,
        index: u32,
        proto: u16,
        dst: &[u8],
        frame: &[u8],
    ) -> std::result::Result<(), i32> {
        use std::os::fd::AsRawFd;
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = proto.to_be();
        sa.sll_ifindex = index as i32;
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(dst);
        // SAFETY: frame and sa are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO));
        }
        Ok(())
    }
}

/// A gratuitous ARP request: sender and target are both the announced address.
fn garp(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06]); // ethertype ARP
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f
}

/// An unsolicited neighbour advertisement to all nodes (RFC 4861 §7.2.6), override flag set.
fn unsolicited_na(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let all_nodes: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut icmp = vec![136, 0, 0, 0, 0x20, 0, 0, 0]; // NA, override
    icmp.extend_from_slice(&ip.octets());
    icmp.extend_from_slice(&[2, 1]); // target link-layer address option, 8 bytes
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(ip, all_nodes, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]); // next header ICMPv6, hop limit 255
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&all_nodes.octets());
    f.extend_from_slice(&icmp);
    f
}

fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for c in bytes.chunks(2) {
            let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
            sum += u32::from(w);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(payload.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(payload);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_is_a_request_with_sender_equal_target() {
        let f = garp([2, 0, 0, 0, 0, 0x99], Ipv4Addr::new(203, 0, 113, 99));
        assert_eq!(f.len(), 42);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[28..32], &f[38..42]);
    }

    #[test]
    fn na_checksum_verifies() {
        let ip: Ipv6Addr = "2001:db8:2::99".parse().unwrap();
        let f = unsolicited_na([2, 0, 0, 0, 0, 0x99], ip);
        let icmp = &f[54..];
        // Summing a packet that carries its checksum yields 0 (one's complement).
        assert_eq!(
            icmpv6_checksum(ip, "ff02::1".parse().unwrap(), icmp),
            0,
            "checksum must verify"
        );
        assert_eq!(icmp[0], 136);
    }
}
