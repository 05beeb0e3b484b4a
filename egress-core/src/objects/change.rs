//! [`Change`]: one kernel request of a transaction or a teardown, as the module of its kernel
//! object defines it — how it is sent, and what undoes it, side by side (rtnetlink keeps a
//! request beside its object; so does each module here). The transaction (`context::tx`) and
//! the undo log (`context::undo`) only send changes, log their undos and unwind them, whatever
//! object they belong to.
//!
//! A plan's [`Step`](super::Step) is what a user reads; [`Step::changes`](super::Step::changes)
//! turns it into the changes that make it, against what the transaction knows ([`At`]).

use std::{any::Any, fmt};

use futures::future::LocalBoxFuture;
use rtnetlink::Handle;

use super::{
    addr::Addr,
    link::{Link, LinkRef, Pending},
    nat::NatRules,
    record::Record,
    role::Claim,
    route::Route,
    Current,
};
use crate::{
    error::{Error, Result},
    kernel::netns::Conn,
};

/// What sending a change yields.
pub(crate) type Sent<'a> = LocalBoxFuture<'a, Result<Done>>;

/// One kernel request, and what undoes it.
///
/// A change is sent once. When the kernel took it, its [`undo`](Change::undo) (if it has one)
/// goes to the undo log; an undo is itself a change, run when the log is unwound (a failed
/// transaction, or a teardown, whose undos are the inverse of what the kernel holds).
pub(crate) trait Change: AsAny + fmt::Debug {
    /// What it does, close to its `ip`/`nft`/`sysctl` equivalent.
    fn describe(&self) -> String;

    /// What stays in the kernel when it fails as an undo.
    fn remains(&self) -> String;

    /// Whether it is a route netlink request that may go back to back with the others of its
    /// flight, acknowledged together (routes, addresses, a link's MAC): the order among them
    /// does not matter.
    fn pipelined(&self) -> bool {
        false
    }

    /// Sends it.
    fn send<'a>(&'a self, k: &'a Kernel<'a>) -> Sent<'a>;

    /// What undoes it, now that the kernel took it (`done`: what sending it yielded); `None`
    /// when nothing needs undoing.
    fn undo(&self, done: &Done) -> Option<Box<dyn Change>> {
        let _ = done;
        None
    }

    /// When it runs, as an undo, in an unwind.
    fn phase(&self) -> Phase {
        Phase::Rest
    }

    /// As an undo of [`Phase::Slow`]: the job that runs it on a thread of its own, beside the
    /// others (the table's deletion, which waits for the kernel as the link's does).
    fn beside(&self) -> Option<Beside> {
        None
    }

    /// The link it deletes, if it deletes one (what goes with it needs no request of its own).
    fn deletes_link(&self) -> Option<u32> {
        None
    }

    /// Whether the kernel does it by itself when link `index` is deleted (its addresses, the
    /// routes through it).
    fn goes_with_link(&self, index: u32) -> bool {
        let _ = index;
        false
    }

    /// As a failed undo that removes a route or an address: whether it is still in the kernel
    /// (`Some`), which `routes` and `addrs` (read after the unwind) tell; `None` for an undo
    /// of another kind (what it failed to do is kept as it is).
    fn still_in(&self, routes: &[Route], addrs: &[Addr]) -> Option<bool> {
        let _ = (routes, addrs);
        None
    }

    /// Takes `next` in, when the two are one undo (the notes of one crash record): `true`
    /// when it did.
    fn absorb(&mut self, next: &dyn Change) -> bool {
        let _ = next;
        false
    }
}

/// A change as [`Any`], so that one may look at another of its kind ([`Change::absorb`]).
pub(crate) trait AsAny {
    /// `self`, as [`Any`].
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// When an undo runs in an unwind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// First: the router stops forwarding before anything else goes.
    First,
    /// Side by side: the router's own link and its table, each waiting for the kernel (an RCU
    /// grace period); routes and addresses through the link go with it.
    Slow,
    /// In the reverse order of the changes.
    Rest,
    /// Last, and only when everything else was undone: the crash record (its notes, the
    /// copies of the saved routes), which a later teardown needs to finish.
    Record,
}

/// A job that runs an undo on a thread of its own (in the namespace), beside the others.
pub(crate) type Beside = Box<dyn FnOnce() -> Result<()> + Send>;

/// What sending a change tells the changes after it (what the read before the transaction
/// does not hold).
#[derive(Debug, Default)]
pub(crate) enum Done {
    /// Nothing to tell.
    #[default]
    Nothing,
    /// A link was created.
    Link(Link),
    /// Link `link`'s MAC address is now `mac`.
    Mac {
        /// The link.
        link: String,
        /// Its MAC address.
        mac: [u8; 6],
    },
    /// Announcements are still being sent, after the call returns.
    Pending(Pending),
}

/// What a change is sent through.
pub(crate) struct Kernel<'a> {
    /// The router namespace's sockets.
    pub c: &'a Conn,
    /// The macvlan's parent link and a socket of its namespace, when a transaction creates the
    /// macvlan.
    pub parent: Option<&'a (Handle, Link)>,
    /// What the transaction knows when the change is sent (`None` in an unwind).
    pub at: Option<&'a At<'a>>,
}

/// What a transaction knows when it turns a step into changes: the namespace as it read it
/// when it began, the router, the crash record it writes, what it made so far, and the steps
/// of its plan before this one.
pub(crate) struct At<'a> {
    /// The namespace, when the transaction began.
    pub now: &'a Current,
    /// The router's name.
    pub name: &'a str,
    /// Its internal link.
    pub internal: &'a str,
    /// Its external link.
    pub external: &'a LinkRef,
    /// Its stable MAC, if it has one.
    pub stable_mac: Option<[u8; 6]>,
    /// Its ruleset (`None`: a router read back by name, whose table is as it is).
    pub rules: Option<&'a NatRules>,
    /// What it claims, written with its crash record (`None`: as the kernel holds it).
    pub claim: Option<&'a Claim>,
    /// The crash record the transaction writes (or keeps).
    pub record: &'a Record,
    /// What the transaction made so far.
    pub made: &'a Made,
    /// The plan's steps before this one.
    pub earlier: &'a [super::Step],
}

/// What a transaction made that the read it began with does not hold.
#[derive(Debug, Default)]
pub(crate) struct Made {
    /// The links it created.
    pub links: Vec<Link>,
    /// The MAC addresses it gave links (by link name), the latest last.
    pub macs: Vec<(String, [u8; 6])>,
}

impl Made {
    /// Takes in what sending a change yielded; what is not about links is given back.
    pub(crate) fn learn(&mut self, done: Done) -> Option<Pending> {
        match done {
            Done::Nothing => None,
            Done::Link(l) => {
                self.links.push(l);
                None
            }
            Done::Mac { link, mac } => {
                self.macs.push((link, mac));
                None
            }
            Done::Pending(p) => Some(p),
        }
    }
}

impl At<'_> {
    /// Link `name`: the one this transaction created, or the one the namespace had.
    pub(crate) fn link(&self, name: &str) -> Option<&Link> {
        self.made
            .links
            .iter()
            .find(|l| l.name == name)
            .or_else(|| self.now.link(name))
    }

    /// The index of link `name`; an error naming the spec's field when there is none.
    pub(crate) fn index_of(&self, name: &str) -> Result<u32> {
        self.link(name)
            .map(|l| l.index)
            .ok_or_else(|| Error::NotFound {
                field: if name == self.internal {
                    "internal"
                } else {
                    "external"
                }
                .into(),
                object: "link",
                value: name.to_string(),
                netns: self.now.netns.clone(),
            })
    }

    /// The MAC address link `name` has now: the last this transaction gave it, else its own.
    pub(crate) fn mac_of(&self, name: &str) -> Option<Vec<u8>> {
        match self.made.macs.iter().rev().find(|(l, _)| l == name) {
            Some((_, mac)) => Some(mac.to_vec()),
            None => self.link(name).map(|l| l.mac.clone()),
        }
    }

    /// Link names by index, for describing routes.
    pub(crate) fn names(&self) -> std::collections::HashMap<u32, String> {
        let mut names = self.now.names();
        for l in &self.made.links {
            names.insert(l.index, l.name.clone());
        }
        names
    }
}

/// `r`, as a boxed change.
pub(crate) fn boxed(c: impl Change + 'static) -> Box<dyn Change> {
    Box::new(c)
}

/// "Already gone" (ENOENT, ENODEV, ESRCH) is success.
pub(crate) fn gone_is_done(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.errno().is_some_and(crate::error::is_gone) => Ok(()),
        r => r,
    }
}
