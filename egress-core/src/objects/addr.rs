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

use super::{
    change::{boxed, gone_is_done, At, Change, Done, Kernel, Sent},
    link::LinkRef,
    route::{self, Route},
    Current, Inverse, KernelObject, Step,
};
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

    /// The address deleted, when the link holds it with the router's marker.
    fn remove(&self, now: &Current, inverse: &mut Inverse<'_>) {
        let Some(l) = now.link(&self.link.name) else {
            return;
        };
        for a in now
            .addrs
            .iter()
            .filter(|a| a.index == l.index && a.net == self.net && marked(now, a, inverse.name))
        {
            inverse.undo(boxed(DeleteAddress {
                index: a.index,
                link: l.name.clone(),
                net: a.net,
            }));
        }
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

/// `ip addr add NET dev LINK proto 158`: an egress address; undone by deleting it.
#[derive(Debug)]
pub(crate) struct AddAddress {
    pub index: u32,
    pub link: String,
    pub net: IpNetwork,
}

impl Change for AddAddress {
    fn describe(&self) -> String {
        add_command(&self.link, self.net)
    }

    fn remains(&self) -> String {
        format!("address {} not back on {}", self.net, self.link)
    }

    fn pipelined(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            add(&k.c.rt, self.index, &self.link, self.net).await?;
            Ok(Done::Nothing)
        })
    }

    fn undo(&self, _: &Done) -> Option<Box<dyn Change>> {
        Some(boxed(DeleteAddress {
            index: self.index,
            link: self.link.clone(),
            net: self.net,
        }))
    }
}

/// `ip addr del NET dev LINK`, keeping the routes of ours through the link: the kernel deletes
/// every IPv4 route through a link whose last IPv4 address goes (`fib_disable_ip`), so those
/// are added back (a rolled back promotion leaves the standby's gateway host route). The undo
/// of an added address, and what a teardown does with the router's addresses.
#[derive(Debug)]
pub(crate) struct DeleteAddress {
    pub index: u32,
    pub link: String,
    pub net: IpNetwork,
}

impl Change for DeleteAddress {
    fn describe(&self) -> String {
        format!("ip addr del {} dev {}", self.net, self.link)
    }

    fn remains(&self) -> String {
        format!("address {} on {}", self.net, self.link)
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            let rt = &k.c.rt;
            let last = self.net.is_ipv4()
                && !list(rt, Some(self.index))
                    .await?
                    .iter()
                    .any(|a| a.net.is_ipv4() && a.net != self.net);
            let kept: Vec<Route> = match last {
                true => route::list(rt, false)
                    .await?
                    .into_iter()
                    .filter(|r| {
                        r.oif == Some(self.index) && r.table == route::main_table() && r.is_ours()
                    })
                    .collect(),
                false => Vec::new(),
            };
            delete(rt, self.index, &self.link, self.net).await?;
            add_back(rt, &kept, "a route the deleted address took along").await?;
            Ok(Done::Nothing)
        })
    }

    fn goes_with_link(&self, index: u32) -> bool {
        self.index == index
    }

    fn still_in(&self, _: &[Route], addrs: &[Addr]) -> Option<bool> {
        Some(
            addrs
                .iter()
                .any(|a| a.index == self.index && a.net == self.net),
        )
    }
}

/// Routes added back; "already there" is success.
async fn add_back(rt: &Handle, routes: &[Route], what: &str) -> Result<()> {
    for r in routes {
        match route::add(rt, r, what).await {
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            r => r?,
        }
    }
    Ok(())
}

/// `ip addr del NET dev LINK` of an address that is not the router's, on the link it created;
/// undone by adding it back, unmarked.
#[derive(Debug)]
pub(crate) struct DeleteForeignAddress {
    pub index: u32,
    pub link: String,
    pub net: IpNetwork,
}

impl Change for DeleteForeignAddress {
    fn describe(&self) -> String {
        format!("ip addr del {} dev {}", self.net, self.link)
    }

    fn remains(&self) -> String {
        format!("address {} on {}", self.net, self.link)
    }

    fn pipelined(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            delete(&k.c.rt, self.index, &self.link, self.net).await?;
            Ok(Done::Nothing)
        })
    }

    fn undo(&self, _: &Done) -> Option<Box<dyn Change>> {
        Some(boxed(AddForeignAddress {
            index: self.index,
            link: self.link.clone(),
            net: self.net,
        }))
    }
}

/// `ip addr add NET dev LINK`, without our marker: an address that was not ours, put back.
#[derive(Debug)]
pub(crate) struct AddForeignAddress {
    pub index: u32,
    pub link: String,
    pub net: IpNetwork,
}

impl Change for AddForeignAddress {
    fn describe(&self) -> String {
        format!("ip addr add {} dev {}", self.net, self.link)
    }

    fn remains(&self) -> String {
        format!("address {} not back on {}", self.net, self.link)
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            gone_is_done(add_foreign(&k.c.rt, self.index, &self.link, self.net).await)?;
            Ok(Done::Nothing)
        })
    }

    fn goes_with_link(&self, index: u32) -> bool {
        self.index == index
    }
}

/// An egress address withdrawn (demotion: the instance stops answering ARP / ND for it), with
/// the routes the kernel deletes with it (the link's last IPv4 address takes the IPv4 routes
/// through the link along); undone by claiming it again, and those routes.
#[derive(Debug)]
pub(crate) struct WithdrawAddress {
    pub index: u32,
    pub link: String,
    pub net: IpNetwork,
    pub lost: Vec<Route>,
}

impl Change for WithdrawAddress {
    fn describe(&self) -> String {
        format!("ip addr del {} dev {}", self.net, self.link)
    }

    fn remains(&self) -> String {
        format!("address {} on {}", self.net, self.link)
    }

    fn pipelined(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            delete(&k.c.rt, self.index, &self.link, self.net).await?;
            Ok(Done::Nothing)
        })
    }

    fn undo(&self, _: &Done) -> Option<Box<dyn Change>> {
        Some(boxed(ClaimAddress {
            index: self.index,
            link: self.link.clone(),
            net: self.net,
            routes: self.lost.clone(),
        }))
    }
}

/// An egress address claimed again, with our marker (the undo of a withdrawal), then the routes
/// the kernel deleted with it.
#[derive(Debug)]
pub(crate) struct ClaimAddress {
    pub index: u32,
    pub link: String,
    pub net: IpNetwork,
    pub routes: Vec<Route>,
}

impl Change for ClaimAddress {
    fn describe(&self) -> String {
        add_command(&self.link, self.net)
    }

    fn remains(&self) -> String {
        format!("address {} not back on {}", self.net, self.link)
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            match add(&k.c.rt, self.index, &self.link, self.net).await {
                Err(Error::AlreadyExists { .. }) => {}
                r => gone_is_done(r)?,
            }
            add_back(
                &k.c.rt,
                &self.routes,
                "a route the withdrawn address took along",
            )
            .await?;
            Ok(Done::Nothing)
        })
    }
}

impl Step {
    /// `ip addr add NET dev LINK proto 158`.
    pub(crate) fn add_address_changes(
        at: &At<'_>,
        link: &str,
        net: IpNetwork,
    ) -> Result<Vec<Box<dyn Change>>> {
        Ok(vec![boxed(AddAddress {
            index: at.index_of(link)?,
            link: link.to_string(),
            net,
        })])
    }

    /// `ip addr del NET dev LINK` of a foreign address.
    pub(crate) fn delete_address_changes(
        at: &At<'_>,
        link: &str,
        net: IpNetwork,
    ) -> Result<Vec<Box<dyn Change>>> {
        Ok(vec![boxed(DeleteForeignAddress {
            index: at.index_of(link)?,
            link: link.to_string(),
            net,
        })])
    }

    /// An egress address withdrawn, with the routes it takes along.
    pub(crate) fn withdraw_address_changes(
        at: &At<'_>,
        link: &str,
        net: IpNetwork,
    ) -> Result<Vec<Box<dyn Change>>> {
        let index = at.index_of(link)?;
        let withdrawn = withdrawn_before(at, index);
        let last = net.is_ipv4()
            && !at.now.addrs.iter().any(|a| {
                a.index == index && a.net.is_ipv4() && a.net != net && !withdrawn.contains(&a.net)
            });
        Ok(vec![boxed(WithdrawAddress {
            index,
            link: link.to_string(),
            net,
            lost: match last {
                true => ipv4_routes_through(at.now, index),
                false => Vec::new(),
            },
        })])
    }
}

/// The addresses of link `index` that the plan's earlier steps withdraw.
fn withdrawn_before(at: &At<'_>, index: u32) -> Vec<IpNetwork> {
    at.earlier
        .iter()
        .filter_map(|s| match s {
            Step::WithdrawAddress { link, address }
                if at.link(link).map(|l| l.index) == Some(index) =>
            {
                Some(*address)
            }
            _ => None,
        })
        .collect()
}

/// The routes of ours in the main table through link `index` that the kernel deletes with its
/// last IPv4 address.
fn ipv4_routes_through(now: &Current, index: u32) -> Vec<Route> {
    now.routes
        .iter()
        .filter(|r| r.oif == Some(index) && r.dst.is_ipv4())
        .filter(|r| r.table == route::main_table() && r.is_ours())
        .cloned()
        .collect()
}

/// The routes that the plan's earlier withdrawals of a link's last IPv4 addresses take along.
pub(crate) fn lost_with_withdrawals(at: &At<'_>) -> Vec<Route> {
    let mut links: Vec<u32> = Vec::new();
    for s in at.earlier {
        if let Step::WithdrawAddress { link, .. } = s {
            if let Some(l) = at.link(link).filter(|l| !links.contains(&l.index)) {
                links.push(l.index);
            }
        }
    }
    links
        .into_iter()
        .filter(|index| {
            let withdrawn = withdrawn_before(at, *index);
            !at.now
                .addrs
                .iter()
                .any(|a| a.index == *index && a.net.is_ipv4() && !withdrawn.contains(&a.net))
        })
        .flat_map(|index| ipv4_routes_through(at.now, index))
        .collect()
}
