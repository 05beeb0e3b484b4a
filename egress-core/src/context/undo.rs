//! The undo journal: one exact inverse per kernel change, run on rollback (from the
//! transaction's journal) and on teardown (rebuilt from the kernel's markers and the crash
//! record).

use ipnetwork::IpNetwork;
use tracing::{debug, warn};

use crate::{
    error::{is_gone, Error, Result},
    kernel::netns::Conn,
    kernel::nft::NftSocket,
    kernel::procfs::{self, ConfEntry, ConfName, Family, SysctlKey},
    objects::{
        addr, link,
        nat::NatRules,
        record::{JOURNAL_TABLE, MIRROR_TABLE},
        route::{self, Route},
    },
    spec::MacvlanMode,
};

/// The inverse of one kernel change.
#[derive(Debug, Clone)]
pub(crate) enum Undo {
    DeleteTable {
        table: String,
    },
    /// Write the table again with an earlier comment (the undo of a record rewrite).
    RewriteTable {
        comment: String,
        rules: NatRules,
    },
    DeleteLink {
        index: u32,
        name: String,
    },
    SetLinkDown {
        index: u32,
        name: String,
    },
    /// Put the created macvlan's properties back (the undo of a repair).
    SetLink {
        index: u32,
        name: String,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
        mode: Option<MacvlanMode>,
    },
    DeleteAddress {
        index: u32,
        link: String,
        net: IpNetwork,
    },
    /// Add back an address the repair removed from the created link.
    AddAddress {
        index: u32,
        link: String,
        net: IpNetwork,
    },
    /// Claim an egress address again, with our marker (the undo of a withdrawal), then the
    /// routes the kernel deleted with it (the link's last IPv4 address takes its IPv4 routes).
    ClaimAddress {
        index: u32,
        link: String,
        net: IpNetwork,
        routes: Vec<Route>,
    },
    /// Put the role marker back as it was: `previous`, or none.
    MarkRole {
        current: Route,
        previous: Option<Route>,
    },
    DeleteRoute {
        route: Route,
        what: String,
    },
    /// Add a route back (a replaced default route); "already there" is success.
    RestoreRoute {
        route: Route,
        what: String,
    },
    /// Write sysctls back, in order.
    RestoreSysctls {
        writes: Vec<(SysctlKey, i64)>,
    },
    /// Delete the crash record's notes.
    DeleteNotes {
        routes: Vec<Route>,
    },
}

impl Undo {
    /// What remains in the kernel if this undo fails.
    pub(crate) fn remains(&self) -> String {
        match self {
            Undo::DeleteTable { table } => format!("nftables table inet {table}"),
            Undo::RewriteTable { rules, .. } => {
                format!(
                    "nftables table inet {} with a newer crash record",
                    rules.table
                )
            }
            Undo::DeleteLink { name, .. } => format!("link {name}"),
            Undo::SetLinkDown { name, .. } => format!("link {name} left up"),
            Undo::SetLink { name, .. } => format!("link {name} with its repaired properties"),
            Undo::DeleteAddress { link, net, .. } => format!("address {net} on {link}"),
            Undo::AddAddress { link, net, .. } | Undo::ClaimAddress { link, net, .. } => {
                format!("address {net} not back on {link}")
            }
            Undo::MarkRole { .. } => "the role marker of the new role".to_string(),
            Undo::DeleteRoute { what, .. } => format!("route {what}"),
            Undo::RestoreRoute { what, .. } => format!("route {what} not restored"),
            Undo::RestoreSysctls { writes } => format!(
                "sysctls not restored: {}",
                writes
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Undo::DeleteNotes { routes } => format!(
                "crash record: {} routes in table {JOURNAL_TABLE}",
                routes.len()
            ),
        }
    }

    /// Whether this undo removes (part of) the crash record: its notes, or a copy of a saved
    /// route. These run last, and only when everything was restored.
    fn removes_record(&self) -> bool {
        match self {
            Undo::DeleteNotes { .. } => true,
            Undo::DeleteRoute { route, .. } => {
                route.table == JOURNAL_TABLE || route.table == MIRROR_TABLE
            }
            _ => false,
        }
    }

    /// Whether the undo writes `forwarding`: it runs first, so that the router stops
    /// forwarding before anything else goes.
    fn closes_forwarding(&self) -> bool {
        matches!(self, Undo::RestoreSysctls { writes } if writes.iter().any(|(k, _)| k.takes_rtnl()))
    }

    /// What the undo does, close to its `ip`/`nft`/`sysctl` equivalent.
    pub(crate) fn describe(&self) -> String {
        match self {
            Undo::DeleteTable { table } => format!("nft delete table inet {table}"),
            Undo::RewriteTable { rules, .. } => format!(
                "nft delete table inet {0} + add it again with its earlier comment",
                rules.table
            ),
            Undo::DeleteLink { name, .. } => format!("ip link del dev {name}"),
            Undo::SetLinkDown { name, .. } => format!("ip link set dev {name} down"),
            Undo::SetLink {
                name,
                mtu,
                mac,
                mode,
                ..
            } => link::set_command(name, *mtu, *mac, *mode),
            Undo::DeleteAddress { link, net, .. } => format!("ip addr del {net} dev {link}"),
            Undo::AddAddress { link, net, .. } => format!("ip addr add {net} dev {link}"),
            Undo::ClaimAddress { link, net, .. } => addr::add_command(link, *net),
            Undo::MarkRole { previous, .. } => match previous {
                Some(_) => "ip -6 route replace …: the previous role marker".to_string(),
                None => "ip -6 route del …: the role marker".to_string(),
            },
            Undo::DeleteRoute { what, .. } => format!("ip route del {what}"),
            Undo::RestoreRoute { what, .. } => format!("ip route add {what}"),
            Undo::RestoreSysctls { writes } => format!(
                "sysctl -w {}",
                writes
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Undo::DeleteNotes { routes } => format!(
                "ip -6 route del blackhole … table {JOURNAL_TABLE} proto {} (the crash record, {} routes)",
                route::ROUTE_PROTOCOL,
                routes.len()
            ),
        }
    }

    /// Runs the undo, and says how it went (a `tracing` event with its duration).
    async fn run_logged(&self, c: &mut Conn) -> Result<()> {
        let started = std::time::Instant::now();
        let result = self.run(c).await;
        let us = started.elapsed().as_micros() as u64;
        match &result {
            Ok(()) => debug!(undo = %self.describe(), us, "undone"),
            Err(e) => warn!(undo = %self.describe(), us, error = %e, "undo failed"),
        }
        result
    }

    /// Runs the undo; "already gone" is success.
    pub(crate) async fn run(&self, c: &mut Conn) -> Result<()> {
        c.injected_fault(self)?;
        match self {
            Undo::DeleteTable { table } => c.nft.delete_table(table).map(drop),
            Undo::RewriteTable { comment, rules } => c.nft.rewrite(comment, rules),
            Undo::DeleteLink { index, name } => {
                let _deleting = procfs::RTNL_GATE.get().read().await;
                link::delete(&c.rt, *index, name).await.map(drop)
            }
            Undo::SetLinkDown { index, name } => set_link_down(c, *index, name).await,
            Undo::SetLink {
                index,
                name,
                mtu,
                mac,
                mode,
            } => gone_is_done(link::set_props(&c.rt, *index, name, *mtu, *mac, *mode).await),
            Undo::DeleteAddress { index, link, net } => {
                delete_address_keeping_routes(c, *index, link, *net).await
            }
            Undo::AddAddress { index, link, net } => {
                gone_is_done(addr::add_foreign(&c.rt, *index, link, *net).await)
            }
            Undo::ClaimAddress {
                index,
                link,
                net,
                routes,
            } => {
                match addr::add(&c.rt, *index, link, *net).await {
                    Err(Error::AlreadyExists { .. }) => {}
                    r => gone_is_done(r)?,
                }
                for r in routes {
                    match route::add(&c.rt, r, "a route the withdrawn address took along").await {
                        Err(e) if e.errno() == Some(libc::EEXIST) => {}
                        r => r?,
                    }
                }
                Ok(())
            }
            Undo::MarkRole { current, previous } => match previous {
                Some(p) => route::replace(&c.rt, p, "the previous role marker").await,
                None => route::delete(&c.rt, current, "the role marker")
                    .await
                    .map(drop),
            },
            Undo::DeleteRoute { route, what } => route::delete(&c.rt, route, what).await.map(drop),
            // "Already there" is success only if it is this route, not another one in its
            // place.
            Undo::RestoreRoute { route, what } => match route::add(&c.rt, route, what).await {
                Err(e) if e.errno() == Some(libc::EEXIST) => {
                    let routes = route::list(&c.rt, route.dst.is_ipv6()).await?;
                    match routes.iter().any(|r| r.same_as(route)) {
                        true => Ok(()),
                        false => Err(e),
                    }
                }
                r => r,
            },
            Undo::RestoreSysctls { writes } => {
                let mut pending = writes.as_slice();
                loop {
                    let (done, failed) = procfs::write_gated(&c.ns, pending).await?;
                    match failed {
                        None => return Ok(()),
                        // A link that is gone took its sysctls with it.
                        Some(e)
                            if e.errno() == Some(libc::ENOENT) && pending[done].0.is_link_key() =>
                        {
                            pending = &pending[done + 1..];
                        }
                        Some(e) => return Err(e),
                    }
                }
            }
            Undo::DeleteNotes { routes } => {
                for r in routes {
                    route::delete(&c.rt, r, "a note of the crash record").await?;
                }
                Ok(())
            }
        }
    }
}

/// `ip addr del NET dev LINK`, keeping the routes of ours through the link: the kernel deletes
/// every IPv4 route through a link whose last IPv4 address goes (`fib_disable_ip`), so those
/// are added back (a rolled back promotion leaves the standby's gateway host route).
async fn delete_address_keeping_routes(
    c: &mut Conn,
    index: u32,
    link: &str,
    net: IpNetwork,
) -> Result<()> {
    let last = net.is_ipv4()
        && !addr::list(&c.rt, Some(index))
            .await?
            .iter()
            .any(|a| a.net.is_ipv4() && a.net != net);
    let kept: Vec<Route> = match last {
        true => route::list(&c.rt, false)
            .await?
            .into_iter()
            .filter(|r| r.oif == Some(index) && r.table == route::main_table() && r.is_ours())
            .collect(),
        false => Vec::new(),
    };
    addr::delete(&c.rt, index, link, net).await?;
    for r in &kept {
        match route::add(&c.rt, r, "a route the deleted address took along").await {
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            r => r?,
        }
    }
    Ok(())
}

fn gone_is_done(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.errno().is_some_and(is_gone) => Ok(()),
        r => r,
    }
}

/// `ip link set dev NAME down`, keeping the link's foreign IPv6 addresses: down, the kernel
/// deletes every IPv6 address of the link unless `keep_addr_on_down` is set, so it is set for
/// the moment of the change.
async fn set_link_down(c: &mut Conn, index: u32, name: &str) -> Result<()> {
    let toggle = match ConfEntry::link(name) {
        Some(entry) => {
            let key = SysctlKey::conf(Family::V6, entry, ConfName::KeepAddrOnDown);
            let old = procfs::read_many(&c.ns, std::slice::from_ref(&key))?;
            old.first().is_some_and(|v| *v == Some(0)).then_some(key)
        }
        None => None,
    };
    if let Some(key) = &toggle {
        if let (_, Some(e)) = procfs::write_many(&c.ns, &[(key.clone(), 1)])? {
            return Err(e);
        }
    }
    let down = gone_is_done(link::set_up(&c.rt, index, name, false).await);
    if let Some(key) = toggle {
        match procfs::write_many(&c.ns, &[(key, 0)])? {
            (_, Some(e)) if !e.errno().is_some_and(is_gone) => return down.and(Err(e)),
            _ => {}
        }
    }
    down
}

impl Conn {
    /// Fails the undo if a test injected a fault for it (feature `fault-injection`).
    fn injected_fault(&mut self, u: &Undo) -> Result<()> {
        #[cfg(feature = "fault-injection")]
        {
            self.undos_run += 1;
            crate::fault::at_undo(self.undos_run, || u.remains())?;
        }
        #[cfg(not(feature = "fault-injection"))]
        let _ = u;
        Ok(())
    }
}

/// Undos in the order their changes were made.
#[derive(Debug, Default)]
pub(crate) struct Journal(pub Vec<Undo>);

impl Journal {
    /// Adds the undo of the latest change; the deletions of a crash record's notes are one
    /// undo.
    pub(crate) fn push(&mut self, u: Undo) {
        match (u, self.0.last_mut()) {
            (Undo::DeleteRoute { route, .. }, Some(Undo::DeleteNotes { routes }))
                if crate::objects::record::is_note(&route) =>
            {
                routes.push(route)
            }
            (Undo::DeleteRoute { route, .. }, _) if crate::objects::record::is_note(&route) => {
                self.0.push(Undo::DeleteNotes {
                    routes: vec![route],
                })
            }
            (u, _) => self.0.push(u),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What [`unwind`](Self::unwind) will do, in its order, described.
    pub(crate) fn described(&self) -> Vec<String> {
        let p = self.phases();
        [p.first, p.slow, p.rest, p.last]
            .iter()
            .flatten()
            .map(Undo::describe)
            .collect()
    }

    /// The undos in the order they run.
    fn phases(&self) -> Phases {
        let goes_with_link = self.goes_with_link();
        let mut p = Phases::default();
        for u in self.0.iter().rev().cloned() {
            if u.closes_forwarding() {
                p.first.push(u);
            } else if matches!(u, Undo::DeleteLink { .. } | Undo::DeleteTable { .. }) {
                p.slow.push(u);
            } else if u.removes_record() {
                p.last.push(u);
            } else if !goes_with_link(&u) {
                p.rest.push(u);
            }
        }
        p
    }

    /// Which undos the deletion of a created link does by itself: the kernel removes a link's
    /// addresses and the routes through it with it, so they need no request of their own
    /// (each one would wait for the RTNL lock, which link deletions elsewhere hold for
    /// milliseconds).
    fn goes_with_link(&self) -> impl Fn(&Undo) -> bool {
        let link = self.0.iter().find_map(|u| match u {
            Undo::DeleteLink { index, .. } => Some(*index),
            _ => None,
        });
        move |u| match (u, link) {
            (Undo::DeleteAddress { index, .. }, Some(link)) => *index == link,
            (Undo::DeleteRoute { route, .. }, Some(link)) => {
                route.oif == Some(link) && route.table == route::main_table()
            }
            (Undo::SetLink { index, .. } | Undo::AddAddress { index, .. }, Some(link)) => {
                *index == link
            }
            _ => false,
        }
    }

    /// Runs every undo, whatever fails, in this order: forwarding restored first (the router
    /// stops forwarding); the router's own link and its table deleted side by side (each waits
    /// for the kernel, an RCU grace period; routes through the link go with it, so that
    /// nothing of the router stands in the way of what is restored); everything else in
    /// reverse order; the crash record (its notes, the copies of the saved routes) last — and
    /// kept when something could not be restored, so that a later teardown can finish.
    /// Returns one error per failed undo, naming what remains.
    pub(crate) async fn unwind(self, c: &mut Conn) -> Vec<(String, Error)> {
        let Phases {
            first,
            slow,
            rest,
            last,
        } = self.phases();
        let with_link: Vec<Undo> = {
            let goes = self.goes_with_link();
            self.0.iter().rev().filter(|u| goes(u)).cloned().collect()
        };
        let mut failures: Vec<(Undo, Error)> = Vec::new();
        for u in first {
            if let Err(e) = u.run_logged(c).await {
                failures.push((u, e));
            }
        }
        let mut tables = Vec::new();
        for u in slow
            .iter()
            .filter(|u| matches!(u, Undo::DeleteTable { .. }))
        {
            let Undo::DeleteTable { table } = u else {
                continue;
            };
            let t = table.clone();
            let job = c.injected_fault(u).and_then(|()| {
                c.ns.spawn(move || NftSocket::open()?.delete_table(&t).map(drop))
            });
            tables.push((u, job));
        }
        for u in slow.iter().filter(|u| matches!(u, Undo::DeleteLink { .. })) {
            if let Err(e) = u.run_logged(c).await {
                failures.push((u.clone(), e));
                // The link stays: what would have gone with it is removed one by one.
                for u in &with_link {
                    if let Err(e) = u.run_logged(c).await {
                        failures.push((u.clone(), e));
                    }
                }
            }
        }
        for (u, job) in tables {
            // Whether the job ran (its reply), then whether the deletion worked.
            let result = match job {
                Ok(rx) => rx
                    .await
                    .unwrap_or_else(|_| Err(Error::kernel(u.remains(), libc::ECANCELED)))
                    .and_then(|deleted| deleted),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                failures.push((u.clone(), e));
            }
        }
        for u in rest {
            if let Err(e) = u.run_logged(c).await {
                failures.push((u, e));
            }
        }
        for u in last {
            if !failures.is_empty() {
                let e = Error::UndoSkipped {
                    undo: u.describe(),
                    reason: "kept: it is the crash record a later teardown needs to prove \
                             what is the router's and restore what it replaced"
                        .into(),
                };
                failures.push((u, e));
            } else if let Err(e) = u.run_logged(c).await {
                failures.push((u, e));
            }
        }
        still_there(failures, c).await
    }
}

/// The undos of a journal in the order they run: forwarding first; the slow deletions, the
/// link and the table, side by side; the rest in reverse order, without what goes with the
/// link; the crash record last.
#[derive(Default)]
struct Phases {
    first: Vec<Undo>,
    slow: Vec<Undo>,
    rest: Vec<Undo>,
    last: Vec<Undo>,
}

/// The failures whose object is still in the kernel, with what remains: a route or address
/// whose deletion failed may have gone with its link all the same (deleting a link, or setting
/// it down, takes its routes and IPv6 addresses with it). When the kernel cannot be read back,
/// every failure is kept.
async fn still_there(failures: Vec<(Undo, Error)>, c: &Conn) -> Vec<(String, Error)> {
    let deletion = |u: &Undo| matches!(u, Undo::DeleteRoute { .. } | Undo::DeleteAddress { .. });
    let now = match failures.iter().any(|(u, _)| deletion(u)) {
        false => None,
        true => {
            let read = async {
                let mut routes = route::list(&c.rt, false).await?;
                routes.extend(route::list(&c.rt, true).await?);
                Ok::<_, Error>((routes, addr::list(&c.rt, None).await?))
            };
            read.await.ok()
        }
    };
    failures
        .into_iter()
        .filter(|(u, _)| match (u, &now) {
            (Undo::DeleteRoute { route, .. }, Some((routes, _))) => {
                routes.iter().any(|r| r.same_as(route))
            }
            (Undo::DeleteAddress { index, net, .. }, Some((_, addrs))) => {
                addrs.iter().any(|a| a.index == *index && a.net == *net)
            }
            _ => true,
        })
        .map(|(u, e)| (u.remains(), e))
        .collect()
}
