//! The changes of the external link, each with what undoes it: the macvlan created (deleted),
//! set up (down), its properties and its MAC set (set back), and the announcements that
//! follow a claim of the egress identity.

use std::time::Duration;

use super::{announce, create_macvlan, get, set_mac, set_props, set_up, Link, RouterNs};
use crate::{
    error::{Error, Result},
    kernel::{
        netns::{this_process, Length},
        procfs::{self, ConfEntry, ConfName, Family, SysctlKey},
    },
    objects::{
        change::{boxed, gone_is_done, At, Change, Done, Kernel, Phase, Sent},
        Step,
    },
    spec::{format_mac, Macvlan, MacvlanMode},
};

/// `ip link add … type macvlan … up`: the macvlan created on its parent, directly inside the
/// router namespace, in one message sent on a socket of the parent's namespace; undone by
/// deleting it.
#[derive(Debug)]
pub(crate) struct CreateMacvlan {
    pub macvlan: Macvlan,
    /// The namespace, as the spec names it (for messages).
    pub netns: String,
    pub group: u32,
    /// An ifindex the router namespace does not use, asked for in the message.
    pub free_index: Option<u32>,
}

impl Change for CreateMacvlan {
    fn describe(&self) -> String {
        format!(
            "{} group {:#x}",
            super::create_macvlan_command(&self.macvlan, &self.netns),
            self.group
        )
    }

    fn remains(&self) -> String {
        format!("link {} not created", self.macvlan.name)
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            let (prt, parent) = k
                .parent
                .expect("the parent is looked up before the first change");
            let router = RouterNs {
                rt: &k.c.rt,
                fd: k.c.ns.raw_fd(),
                label: k.c.ns.label(),
            };
            let created = create_macvlan(
                prt,
                &router,
                &self.macvlan,
                parent,
                self.group,
                self.free_index,
            )
            .await?;
            Ok(Done::Link(created))
        })
    }

    fn undo(&self, done: &Done) -> Option<Box<dyn Change>> {
        match done {
            Done::Link(l) => Some(boxed(DeleteLink {
                index: l.index,
                name: l.name.clone(),
            })),
            _ => None,
        }
    }
}

/// `ip link del dev NAME`: the router's macvlan, with its addresses and the routes through it.
#[derive(Debug)]
pub(crate) struct DeleteLink {
    pub index: u32,
    pub name: String,
}

impl Change for DeleteLink {
    fn describe(&self) -> String {
        format!("ip link del dev {}", self.name)
    }

    fn remains(&self) -> String {
        format!("link {}", self.name)
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            let _deleting = procfs::RTNL_GATE.get().read().await;
            super::delete(&k.c.rt, self.index, &self.name).await?;
            Ok(Done::Nothing)
        })
    }

    fn phase(&self) -> Phase {
        Phase::Slow
    }

    fn deletes_link(&self) -> Option<u32> {
        Some(self.index)
    }
}

/// `ip link set dev NAME up`; undone by setting it down.
#[derive(Debug)]
pub(crate) struct SetLinkUp {
    pub index: u32,
    pub name: String,
}

impl Change for SetLinkUp {
    fn describe(&self) -> String {
        format!("ip link set dev {} up", self.name)
    }

    fn remains(&self) -> String {
        format!("link {} not up", self.name)
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            set_up(&k.c.rt, self.index, &self.name, true).await?;
            Ok(Done::Nothing)
        })
    }

    fn undo(&self, _: &Done) -> Option<Box<dyn Change>> {
        Some(boxed(SetLinkDown {
            index: self.index,
            name: self.name.clone(),
        }))
    }
}

/// `ip link set dev NAME down`, keeping the link's foreign IPv6 addresses: down, the kernel
/// deletes every IPv6 address of the link unless `keep_addr_on_down` is set, so it is set for
/// the moment of the change. (An adopted link that was down goes down again at teardown.)
#[derive(Debug)]
pub(crate) struct SetLinkDown {
    pub index: u32,
    pub name: String,
}

impl Change for SetLinkDown {
    fn describe(&self) -> String {
        format!("ip link set dev {} down", self.name)
    }

    fn remains(&self) -> String {
        format!("link {} left up", self.name)
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            let ns = &k.c.ns;
            let toggle = match ConfEntry::link(&self.name) {
                Some(entry) => {
                    let key = SysctlKey::conf(Family::V6, entry, ConfName::KeepAddrOnDown);
                    let old = procfs::read_many(ns, std::slice::from_ref(&key))?;
                    old.first().is_some_and(|v| *v == Some(0)).then_some(key)
                }
                None => None,
            };
            if let Some(key) = &toggle {
                if let (_, Some(e)) = procfs::write_many(ns, &[(key.clone(), 1)])? {
                    return Err(e);
                }
            }
            let down = gone_is_done(set_up(&k.c.rt, self.index, &self.name, false).await);
            if let Some(key) = toggle {
                match procfs::write_many(ns, &[(key, 0)])? {
                    (_, Some(e)) if !e.errno().is_some_and(crate::error::is_gone) => {
                        return down.and(Err(e))
                    }
                    _ => {}
                }
            }
            down.map(|()| Done::Nothing)
        })
    }
}

/// `ip link set dev NAME [mtu N] [address MAC] [type macvlan mode MODE]`: the created macvlan's
/// properties put back to the spec's; undone by setting back what it had.
#[derive(Debug)]
pub(crate) struct SetLinkProps {
    pub index: u32,
    pub name: String,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub mode: Option<MacvlanMode>,
    /// The link as it was.
    pub old: Option<Link>,
}

impl Change for SetLinkProps {
    fn describe(&self) -> String {
        super::set_command(&self.name, self.mtu, self.mac, self.mode)
    }

    fn remains(&self) -> String {
        format!("link {} with its properties as they were", self.name)
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            set_props(
                &k.c.rt, self.index, &self.name, self.mtu, self.mac, self.mode,
            )
            .await?;
            Ok(match self.mac {
                Some(mac) => Done::Mac {
                    link: self.name.clone(),
                    mac,
                },
                None => Done::Nothing,
            })
        })
    }

    fn undo(&self, _: &Done) -> Option<Box<dyn Change>> {
        let old = self.old.as_ref()?;
        Some(boxed(PutLinkBack {
            index: self.index,
            name: self.name.clone(),
            mtu: self.mtu.map(|_| old.mtu),
            mac: self.mac.and_then(|_| old.mac.as_slice().try_into().ok()),
            mode: self.mode.and(old.macvlan_mode),
        }))
    }
}

/// `ip link set dev NAME [mtu N] [address MAC] [type macvlan mode MODE]`: a link's properties
/// put back as they were (the undo of a repair, of a MAC set); a link that is gone is done.
#[derive(Debug)]
pub(crate) struct PutLinkBack {
    pub index: u32,
    pub name: String,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub mode: Option<MacvlanMode>,
}

impl Change for PutLinkBack {
    fn describe(&self) -> String {
        super::set_command(&self.name, self.mtu, self.mac, self.mode)
    }

    fn remains(&self) -> String {
        format!("link {} with its repaired properties", self.name)
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            gone_is_done(
                set_props(
                    &k.c.rt, self.index, &self.name, self.mtu, self.mac, self.mode,
                )
                .await,
            )?;
            Ok(Done::Nothing)
        })
    }

    fn goes_with_link(&self, index: u32) -> bool {
        self.index == index
    }
}

/// `ip link set dev NAME address MAC`: the stable MAC on promotion, the link's own on
/// demotion; undone by giving the link the MAC it had.
#[derive(Debug)]
pub(crate) struct SetMac {
    pub index: u32,
    pub name: String,
    pub mac: [u8; 6],
    /// The MAC address it had.
    pub old: Option<[u8; 6]>,
}

impl Change for SetMac {
    fn describe(&self) -> String {
        format!(
            "ip link set dev {} address {}",
            self.name,
            format_mac(&self.mac)
        )
    }

    fn remains(&self) -> String {
        format!(
            "link {} without MAC address {}",
            self.name,
            format_mac(&self.mac)
        )
    }

    fn pipelined(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            set_mac(&k.c.rt, self.index, &self.name, self.mac).await?;
            Ok(Done::Mac {
                link: self.name.clone(),
                mac: self.mac,
            })
        })
    }

    fn undo(&self, _: &Done) -> Option<Box<dyn Change>> {
        Some(boxed(PutLinkBack {
            index: self.index,
            name: self.name.clone(),
            mtu: None,
            mac: self.old,
            mode: None,
        }))
    }
}

/// The kernel announces the egress addresses (the link's MAC set to the one it has: a
/// gratuitous ARP / an unsolicited NA for each address), `count` times, `interval` apart: the
/// first at once, the others on a thread of their own, without holding up the transaction.
/// Nothing to undo.
#[derive(Debug)]
pub(crate) struct Announce {
    pub name: String,
    pub count: u8,
    pub interval: Duration,
}

impl Change for Announce {
    fn describe(&self) -> String {
        super::announce_command(&self.name)
    }

    fn remains(&self) -> String {
        format!("the egress addresses on {} not announced", self.name)
    }

    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a> {
        Box::pin(async move {
            let at = k.at.expect("an announcement is sent by a transaction");
            let l = at.link(&self.name).ok_or_else(|| Error::NotFound {
                field: "external".into(),
                object: "link",
                value: self.name.clone(),
                netns: at.now.netns.clone(),
            })?;
            // The MAC the link has now: this transaction may have set it.
            let (index, mac) = (l.index, at.mac_of(&self.name).unwrap_or_default());
            announce(&k.c.rt, index, &self.name, &mac).await?;
            if self.count <= 1 {
                return Ok(Done::Nothing);
            }
            // The others, spaced, on a thread of their own: the claim is done.
            let (more, interval, name) = (self.count - 1, self.interval, self.name.clone());
            let rx = k.c.ns.spawn_within(Length::Call, move |ns| async move {
                let h = ns.route_connection()?;
                for _ in 0..more {
                    tokio::time::sleep(interval).await;
                    // A demotion meanwhile gave the MAC (or the link) up: announcing would
                    // take it back.
                    match get(&h, &name).await? {
                        Some(l) if l.index == index && l.mac == mac => {}
                        _ => break,
                    }
                    announce(&h, index, &name, &mac).await?;
                }
                Ok(())
            })?;
            Ok(Done::Pending(Pending::new(rx)))
        })
    }
}

/// The announcements of a promotion still being sent (spaced) after it returned, by a thread
/// of the process that promoted.
#[derive(Debug)]
pub(crate) struct Pending {
    sent: Option<futures::channel::oneshot::Receiver<Result<Result<()>>>>,
    process: (u32, u64),
}

impl Pending {
    fn new(sent: futures::channel::oneshot::Receiver<Result<Result<()>>>) -> Pending {
        Pending {
            sent: Some(sent),
            process: this_process(),
        }
    }

    /// Waits until the last of them is sent. In a child of `fork`, at once: the parent's
    /// thread sends them (the child has none to wait for).
    pub(crate) async fn finish(mut self) -> Result<()> {
        // In a child, `drop` lets the channel go.
        if self.process != this_process() {
            return Ok(());
        }
        let Some(sent) = self.sent.take() else {
            return Ok(());
        };
        match sent.await {
            Ok(r) => r?,
            // The pool thread is gone: nothing more will be sent.
            Err(_) => Ok(()),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // In a child of `fork`, the channel is let go without a word: its other end is a
        // parent's thread.
        if self.process != this_process() {
            std::mem::forget(self.sent.take());
        }
    }
}

impl Step {
    /// The macvlan created, with an ifindex its namespace does not use.
    pub(crate) fn create_macvlan_changes(
        at: &At<'_>,
        macvlan: &Macvlan,
        netns: &str,
        group: u32,
    ) -> Vec<Box<dyn Change>> {
        let free_index = at
            .now
            .links
            .iter()
            .map(|l| l.index)
            .max()
            .and_then(|i| i.checked_add(1))
            .filter(|i| *i <= i32::MAX as u32);
        #[cfg(feature = "fault-injection")]
        let free_index = match crate::fault::index_taken() {
            true => at.now.link(at.internal).map(|l| l.index),
            false => free_index,
        };
        vec![boxed(CreateMacvlan {
            macvlan: macvlan.clone(),
            netns: netns.to_string(),
            group,
            free_index,
        })]
    }

    /// `ip link set dev NAME up`.
    pub(crate) fn set_link_up_changes(at: &At<'_>, link: &str) -> Result<Vec<Box<dyn Change>>> {
        Ok(vec![boxed(SetLinkUp {
            index: at.index_of(link)?,
            name: link.to_string(),
        })])
    }

    /// The created macvlan's properties put back to the spec's.
    pub(crate) fn set_link_changes(
        at: &At<'_>,
        link: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
        mode: Option<MacvlanMode>,
    ) -> Result<Vec<Box<dyn Change>>> {
        Ok(vec![boxed(SetLinkProps {
            index: at.index_of(link)?,
            name: link.to_string(),
            mtu,
            mac,
            mode,
            old: at.now.link(link).cloned(),
        })])
    }

    /// The external link's MAC address set.
    pub(crate) fn set_mac_changes(
        at: &At<'_>,
        link: &str,
        mac: [u8; 6],
    ) -> Result<Vec<Box<dyn Change>>> {
        Ok(vec![boxed(SetMac {
            index: at.index_of(link)?,
            name: link.to_string(),
            mac,
            old: at
                .link(link)
                .and_then(|l| <[u8; 6]>::try_from(l.mac.as_slice()).ok()),
        })])
    }
}
