//! Addresses: add the egress sources, marked with our address protocol, and remove them; the
//! [`Address`] object (an egress source on the external link) and [`OnlyOurAddresses`] (the
//! macvlan the router created carries nothing else).

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags, AddressMessage, AddressProtocol},
    AddressFamily,
};
use rtnetlink::Handle;

use super::{link::LinkRef, Current, KernelObject, Step};
use crate::{
    drift::Drift,
    error::{is_gone, Error, Result},
    kernel::netlink::{dump, errno},
};

/// `IFA_PROTO` of every address this library adds (kernel ≥ 6.3): the ownership marker that
/// lets teardown remove our addresses from an adopted link and leave everything else.
pub const ADDRESS_PROTOCOL: u8 = 158;

/// An address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Addr {
    pub index: u32,
    pub net: IpNetwork,
    /// It carries our address protocol.
    pub ours: bool,
    /// It carries an address protocol at all (`IFA_PROTO`).
    pub has_protocol: bool,
}

/// Whether the kernel keeps an address's protocol (`IFA_PROTO`, Linux 6.3): it says so by
/// its release, or by an address that carries one. A kernel without it (RHEL 9's 5.14) takes
/// the attribute in a request and drops it.
pub(crate) fn kernel_keeps_protocol(addrs: &[Addr]) -> bool {
    #[cfg(feature = "fault-injection")]
    if crate::fault::ifa_proto_ignored() {
        return false;
    }
    addrs.iter().any(|a| a.has_protocol) || release_at_least(6, 3)
}

/// Whether the running kernel's release is `major.minor` or later (`uname -r`).
fn release_at_least(major: u32, minor: u32) -> bool {
    static RELEASE: std::sync::OnceLock<Option<(u32, u32)>> = std::sync::OnceLock::new();
    let release = RELEASE.get_or_init(|| {
        // SAFETY: uname(2) fills the `utsname` it is given, whose fields are NUL-terminated.
        let uts = unsafe {
            let mut uts: libc::utsname = std::mem::zeroed();
            (libc::uname(&mut uts) == 0).then_some(uts)?
        };
        // SAFETY: `release` is a NUL-terminated array inside `uts`.
        let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
        let mut parts = release.to_str().ok()?.split(|c: char| !c.is_ascii_digit());
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    });
    release.is_some_and(|r| r >= (major, minor))
}

/// Whether address `a` is router `router`'s: it carries our address protocol; or, on a kernel
/// that does not keep an address's protocol, it is one of the egress sources the router's
/// identity notes list (on such a kernel, an address that was on an adopted link before the
/// router and is also one of its sources cannot be told apart: it is taken for the router's).
pub(crate) fn marked(now: &Current, a: &Addr, router: &str) -> bool {
    a.ours
        || (!now.addr_protocol
            && super::role::Claim::in_kernel(now, router)
                .is_some_and(|(claim, _)| claim.sources.contains(&a.net)))
}

/// `ip addr add NET dev LINK proto 158 [nodad]`.
///
/// IPv6 addresses skip duplicate address detection: the egress IP is assigned statically by the
/// network team, and a tentative address could neither be announced nor used for SNAT for the
/// first second.
pub(crate) async fn add(h: &Handle, index: u32, link: &str, net: IpNetwork) -> Result<()> {
    let mut req = h.address().add(index, net.ip(), net.prefix());
    let msg = req.message_mut();
    msg.attributes
        .push(AddressAttribute::Protocol(AddressProtocol::from(
            ADDRESS_PROTOCOL,
        )));
    if net.is_ipv6() {
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    req.execute().await.map_err(|e| match errno(&e) {
        libc::EEXIST => Error::AlreadyExists {
            object: "address",
            value: format!("{net} on {link}"),
            netns: "the router namespace".into(),
            hint: None,
        },
        n => Error::kernel(add_command(link, net), n),
    })
}

/// `ip addr add NET dev LINK`, without our marker: puts back an address that was not ours.
pub(crate) async fn add_foreign(h: &Handle, index: u32, link: &str, net: IpNetwork) -> Result<()> {
    h.address()
        .add(index, net.ip(), net.prefix())
        .execute()
        .await
        .map_err(|e| Error::kernel(format!("ip addr add {net} dev {link}"), errno(&e)))
}

/// The command of [`add`].
pub(crate) fn add_command(link: &str, net: IpNetwork) -> String {
    let nodad = if net.is_ipv6() { " nodad" } else { "" };
    format!("ip addr add {net} dev {link} proto {ADDRESS_PROTOCOL}{nodad}")
}

/// `ip addr del NET dev LINK`; Ok(false) when it was already gone.
pub(crate) async fn delete(h: &Handle, index: u32, link: &str, net: IpNetwork) -> Result<bool> {
    let mut msg = AddressMessage::default();
    msg.header.family = if net.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    msg.header.prefix_len = net.prefix();
    msg.header.index = index;
    msg.attributes.push(AddressAttribute::Local(net.ip()));
    if net.is_ipv6() {
        msg.attributes.push(AddressAttribute::Address(net.ip()));
    }
    match h.address().del(msg).execute().await {
        Ok(()) => Ok(true),
        Err(e) if is_gone(errno(&e)) => Ok(false),
        Err(e) => Err(Error::kernel(
            format!("ip addr del {net} dev {link}"),
            errno(&e),
        )),
    }
}

/// `ip addr show`: every address of the namespace (or of one link).
pub(crate) async fn list(h: &Handle, index: Option<u32>) -> Result<Vec<Addr>> {
    let msgs = dump("ip addr show", || {
        let mut req = h.address().get();
        if let Some(i) = index {
            req = req.set_link_index_filter(i);
        }
        req.execute()
    })
    .await?;
    // A test stands in for a kernel before 6.3, which keeps no address protocol.
    #[cfg(feature = "fault-injection")]
    let keeps_protocol = !crate::fault::ifa_proto_ignored();
    #[cfg(not(feature = "fault-injection"))]
    let keeps_protocol = true;
    Ok(msgs
        .iter()
        .filter_map(|m| {
            let mut ip: Option<IpAddr> = None;
            let mut protocol = None;
            for a in &m.attributes {
                match a {
                    AddressAttribute::Local(v) => ip = Some(*v),
                    AddressAttribute::Address(v) if ip.is_none() => ip = Some(*v),
                    AddressAttribute::Protocol(p) if keeps_protocol => {
                        protocol = Some(u8::from(*p))
                    }
                    _ => {}
                }
            }
            let net = IpNetwork::new(ip?, m.header.prefix_len).ok()?;
            Some(Addr {
                index: m.header.index,
                net,
                ours: protocol == Some(ADDRESS_PROTOCOL),
                has_protocol: protocol.is_some(),
            })
        })
        .collect())
}

/// An egress source address on the external link.
#[derive(Debug, Clone)]
pub(crate) struct Address {
    /// The external link.
    pub link: LinkRef,
    /// The address with its prefix.
    pub net: IpNetwork,
    /// Held (active) or withdrawn (standby).
    pub held: bool,
}

impl Address {
    fn present(&self, now: &Current) -> Option<bool> {
        let l = self.link.find(now)?;
        Some(
            now.addrs
                .iter()
                .any(|a| a.index == l.index && a.net == self.net),
        )
    }
}

impl KernelObject for Address {
    fn render(&self) -> String {
        match self.held {
            true => add_command(&self.link.name, self.net),
            false => format!("(not {} on {} while standby)", self.net, self.link.name),
        }
    }

    fn compare(&self, now: &Current, drift: &mut Vec<Drift>) {
        // A missing link is the link's drift.
        match (self.held, self.present(now)) {
            (true, Some(false)) => drift.push(Drift::AddressMissing {
                link: self.link.name.clone(),
                address: self.net,
            }),
            (false, Some(true)) => drift.push(Drift::IdentityHeld {
                what: format!("address {} on {}", self.net, self.link.name),
            }),
            _ => {}
        }
    }

    fn repair(&self, now: &Current, steps: &mut Vec<Step>) -> Result<()> {
        match (self.held, self.present(now)) {
            (true, Some(true)) | (false, Some(false) | None) => {}
            (true, _) => steps.push(Step::AddAddress {
                link: self.link.name.clone(),
                address: self.net,
            }),
            (false, Some(true)) => steps.push(Step::WithdrawAddress {
                link: self.link.name.clone(),
                address: self.net,
            }),
        }
        Ok(())
    }
}

/// The macvlan the router created holds no address but its egress sources (and the IPv6
/// link-local address the kernel gives every link).
#[derive(Debug, Clone)]
pub(crate) struct OnlyOurAddresses {
    /// The created macvlan.
    pub link: LinkRef,
    /// The addresses it should hold.
    pub ours: Vec<IpNetwork>,
}

impl OnlyOurAddresses {
    fn foreign<'a>(&self, now: &'a Current) -> Vec<&'a Addr> {
        let Some(l) = self.link.find(now) else {
            return Vec::new();
        };
        now.addrs
            .iter()
            .filter(|a| a.index == l.index && !self.ours.contains(&a.net))
            .filter(|a| !matches!(a.net.ip(), IpAddr::V6(v6) if v6.is_unicast_link_local()))
            .collect()
    }
}

impl KernelObject for OnlyOurAddresses {
    fn render(&self) -> String {
        format!(
            "(no other address on {}: ip addr flush dev {} except the egress sources)",
            self.link.name, self.link.name
        )
    }

    fn compare(&self, now: &Current, drift: &mut Vec<Drift>) {
        for a in self.foreign(now) {
            drift.push(Drift::ForeignAddress {
                link: self.link.name.clone(),
                address: a.net,
            });
        }
    }

    fn repair(&self, now: &Current, steps: &mut Vec<Step>) -> Result<()> {
        for a in self.foreign(now) {
            steps.push(Step::DeleteAddress {
                link: self.link.name.clone(),
                address: a.net,
            });
        }
        Ok(())
    }
}
