//! The undo journal: one exact inverse per kernel change, run in reverse on rollback and
//! teardown, and the crash record kept in the kernel (the nftables table's comment).

use std::collections::HashMap;

use ipnetwork::IpNetwork;
use rtnetlink::Handle;

use crate::{
    error::{Error, Result},
    netns::NsHandle,
    ops::{addr, link, nat::NftSocket, route, sysctl},
};

/// Sockets of one namespace: route netlink (async) and nftables (blocking: a call takes about
/// a millisecond).
pub(crate) struct Conn {
    pub ns: NsHandle,
    pub rt: Handle,
    pub nft: NftSocket,
    /// Undos run through this connection, for fault injection.
    #[cfg(feature = "fault-injection")]
    pub undos_run: usize,
}

impl Conn {
    pub(crate) fn open(ns: NsHandle) -> Result<Self> {
        let rt = ns.route_connection()?;
        let nft = ns.run(NftSocket::open)??;
        Ok(Conn {
            ns,
            rt,
            nft,
            #[cfg(feature = "fault-injection")]
            undos_run: 0,
        })
    }
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

/// The inverse of one kernel change.
#[derive(Debug, Clone)]
pub(crate) enum Undo {
    DeleteTable {
        table: String,
    },
    DeleteLink {
        index: u32,
        name: String,
    },
    SetLinkDown {
        index: u32,
        name: String,
    },
    DeleteAddress {
        index: u32,
        link: String,
        net: IpNetwork,
    },
    DeleteRoute {
        route: route::Route,
        what: String,
    },
    /// Add a route back (a replaced default route); "already there" is success.
    RestoreRoute {
        route: route::Route,
        what: String,
    },
    /// Write sysctls back, in order.
    RestoreSysctls {
        writes: Vec<(String, String)>,
    },
}

impl Undo {
    /// What remains in the kernel if this undo fails.
    pub(crate) fn remains(&self) -> String {
        match self {
            Undo::DeleteTable { table } => format!("nftables table inet {table}"),
            Undo::DeleteLink { name, .. } => format!("link {name}"),
            Undo::SetLinkDown { name, .. } => format!("link {name} left up"),
            Undo::DeleteAddress { link, net, .. } => format!("address {net} on {link}"),
            Undo::DeleteRoute { what, .. } => format!("route {what}"),
            Undo::RestoreRoute { what, .. } => format!("route {what} not restored"),
            Undo::RestoreSysctls { writes } => format!(
                "sysctls not restored: {}",
                writes
                    .iter()
                    .map(|(k, v)| format!("{}={v}", sysctl::dotted(k)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Whether this undo puts back something the router replaced, which `teardown_by_name`
    /// can only do from the crash journal.
    fn restores(&self) -> bool {
        matches!(
            self,
            Undo::RestoreSysctls { .. } | Undo::RestoreRoute { .. } | Undo::SetLinkDown { .. }
        )
    }

    /// Whether this undo deletes a journal copy of a replaced default route.
    fn is_journal_copy(&self) -> bool {
        matches!(self, Undo::DeleteRoute { route, .. } if route.table == route::JOURNAL_TABLE)
    }

    /// What the undo does, close to its `ip`/`nft`/`sysctl` equivalent.
    pub(crate) fn describe(&self) -> String {
        match self {
            Undo::DeleteTable { table } => format!("nft delete table inet {table}"),
            Undo::DeleteLink { name, .. } => format!("ip link del dev {name}"),
            Undo::SetLinkDown { name, .. } => format!("ip link set dev {name} down"),
            Undo::DeleteAddress { link, net, .. } => format!("ip addr del {net} dev {link}"),
            Undo::DeleteRoute { what, .. } => format!("ip route del {what}"),
            Undo::RestoreRoute { what, .. } => format!("ip route add {what}"),
            Undo::RestoreSysctls { writes } => format!(
                "sysctl -w {}",
                writes
                    .iter()
                    .map(|(k, v)| format!("{}={v}", sysctl::dotted(k)))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        }
    }

    /// Runs the undo; "already gone" is success.
    pub(crate) async fn run(&self, c: &mut Conn) -> Result<()> {
        c.injected_fault(self)?;
        match self {
            Undo::DeleteTable { table } => c.nft.delete_table(table).map(drop),
            Undo::DeleteLink { index, name } => {
                let _deleting = sysctl::RTNL_GATE.read().await;
                link::delete(&c.rt, *index, name).await.map(drop)
            }
            Undo::SetLinkDown { index, name } => {
                // Down, the kernel deletes every IPv6 address of the link, foreign ones too,
                // unless keep_addr_on_down is set: set it for the moment of the change.
                let key = format!("net/ipv6/conf/{name}/keep_addr_on_down");
                let old = sysctl::read_many(&c.ns, std::slice::from_ref(&key))?;
                let toggle = old.first().is_some_and(|v| v.as_deref() == Some("0"));
                if toggle {
                    if let (_, Some(e)) = sysctl::write_many(&c.ns, &[(key.clone(), "1".into())])? {
                        return Err(e);
                    }
                }
                let down = match link::set_up(&c.rt, *index, name, false).await {
                    Err(e) if e.errno().is_some_and(crate::error::is_gone) => Ok(()),
                    r => r,
                };
                if toggle {
                    match sysctl::write_many(&c.ns, &[(key, "0".into())])? {
                        (_, Some(e)) if !e.errno().is_some_and(crate::error::is_gone) => {
                            return down.and(Err(e))
                        }
                        _ => {}
                    }
                }
                down
            }
            Undo::DeleteAddress { index, link, net } => {
                addr::delete(&c.rt, *index, link, *net).await.map(drop)
            }
            Undo::DeleteRoute { route, what } => route::delete(&c.rt, route, what).await.map(drop),
            // "Already there" is success only if it is this route, not another one in its
            // place (the router's own default route, when deleting it failed).
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
            Undo::RestoreSysctls { writes } => match sysctl::write_gated(&c.ns, writes).await? {
                (_, Some(e)) => Err(e),
                (_, None) => Ok(()),
            },
        }
    }
}

/// Undos in the order their changes were made.
#[derive(Debug, Default)]
pub(crate) struct Journal(pub Vec<Undo>);

impl Journal {
    pub(crate) fn push(&mut self, u: Undo) {
        self.0.push(u);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Which undos the deletion of a created link does by itself: the kernel removes a link's
    /// addresses and the routes through it with it, so they need no request of their own
    /// (each one would wait for the RTNL lock, which link deletions elsewhere hold for
    /// milliseconds). Not a default route when a replaced one of its family comes back: that
    /// needs the place free first.
    fn goes_with_link(&self) -> impl Fn(&Undo) -> bool {
        let link = self.0.iter().find_map(|u| match u {
            Undo::DeleteLink { index, .. } => Some(*index),
            _ => None,
        });
        let restored: Vec<bool> = self
            .0
            .iter()
            .filter_map(|u| match u {
                Undo::RestoreRoute { route, .. } => Some(route.dst.is_ipv6()),
                _ => None,
            })
            .collect();
        move |u| match (u, link) {
            (Undo::DeleteAddress { index, .. }, Some(link)) => *index == link,
            (Undo::DeleteRoute { route, .. }, Some(link)) => {
                route.oif == Some(link)
                    && route.table != route::JOURNAL_TABLE
                    && !(route.is_default() && restored.contains(&route.dst.is_ipv6()))
            }
            _ => false,
        }
    }

    /// Runs every undo in reverse, whatever fails; returns one error per failed undo, naming
    /// what remains.
    ///
    /// The two slow deletions — the macvlan and the nftables table, each of which waits for the
    /// kernel (an RCU grace period) — depend on nothing that comes after them, so they run last
    /// and side by side: the table on another pool thread, the link here.
    ///
    /// When an undo that restores something fails (sysctls, a replaced route, an adopted link's
    /// state), the crash journal — the table's record and the copies of the replaced routes —
    /// is kept and listed as remaining, so that `teardown_by_name` can finish the job later.
    pub(crate) async fn unwind(self, c: &mut Conn) -> Vec<(String, Error)> {
        let mut failures: Vec<(Undo, Error)> = Vec::new();
        let mut keep_journal = false;
        let mut slow = Vec::new();
        let goes_with_link = self.goes_with_link();
        let mut with_link = Vec::new();
        for u in self.0.into_iter().rev() {
            if matches!(u, Undo::DeleteLink { .. } | Undo::DeleteTable { .. }) {
                slow.push(u);
            } else if goes_with_link(&u) {
                with_link.push(u);
            } else if keep_journal && u.is_journal_copy() {
                let e = kept(&u);
                failures.push((u, e));
            } else if let Err(e) = u.run(c).await {
                keep_journal |= u.restores();
                failures.push((u, e));
            }
        }
        let mut tables = Vec::new();
        for u in &slow {
            if let Undo::DeleteTable { table } = u {
                if keep_journal {
                    failures.push((u.clone(), kept(u)));
                    continue;
                }
                let t = table.clone();
                let job = c.injected_fault(u).and_then(|()| {
                    c.ns.spawn(move || NftSocket::open()?.delete_table(&t).map(drop))
                });
                tables.push((u, job));
            }
        }
        for u in slow.iter().filter(|u| matches!(u, Undo::DeleteLink { .. })) {
            if let Err(e) = u.run(c).await {
                failures.push((u.clone(), e));
                // The link stays: what would have gone with it is removed one by one.
                for u in std::mem::take(&mut with_link) {
                    if let Err(e) = u.run(c).await {
                        failures.push((u, e));
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
        still_there(failures, c).await
    }
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

/// The "failure" of a journal object kept on purpose (see [`Journal::unwind`]).
fn kept(u: &Undo) -> Error {
    let command = match u {
        Undo::DeleteTable { table } => format!("nft delete table inet {table}"),
        Undo::DeleteRoute { what, .. } => format!("ip route del {what}"),
        _ => u.remains(),
    };
    Error::kernel(
        format!("{command} (skipped: kept as the journal teardown_by_name needs to restore what failed)"),
        libc::ECANCELED,
    )
}

/// What a router replaced, kept in the kernel as the comment of its nftables table, written by
/// the first change of every apply: `egress/1 link=macvlan0 created=1 up=1 4all.f=0 …`.
///
/// Restore entries are `<4|6><conf entry>.<key>=<value>`, written back in order; keys are
/// abbreviated (`f` forwarding, `ar` accept_redirects, `an` arp_notify, `nn` ndisc_notify) to fit
/// the kernel's 256-byte limit on table userdata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Record {
    pub link: String,
    pub created: bool,
    /// Whether an adopted link was up before.
    pub was_up: bool,
    /// Sysctl writes that restore what the router changed, in order (path form).
    pub restore: Vec<(String, String)>,
}

const MAGIC: &str = "egress/1";
const KEYS: [(&str, &str); 4] = [
    ("f", "forwarding"),
    ("ar", "accept_redirects"),
    ("an", "arp_notify"),
    ("nn", "ndisc_notify"),
];

impl Record {
    pub(crate) fn encode(&self) -> Result<String> {
        let mut s = format!(
            "{MAGIC} link={} created={} up={}",
            self.link, self.created as u8, self.was_up as u8
        );
        for (path, value) in &self.restore {
            let (fam, entry, key) = split_conf_path(path).ok_or_else(|| Error::Conflict {
                field: "sysctl".into(),
                value: path.clone(),
                reason: "not a net/ipv4|ipv6/conf key the journal can record".into(),
            })?;
            let short = KEYS.iter().find(|(_, k)| *k == key).map(|(s, _)| *s);
            let short = short.ok_or_else(|| Error::Conflict {
                field: "sysctl".into(),
                value: path.clone(),
                reason: "a key the journal cannot record".into(),
            })?;
            s += &format!(" {fam}{entry}.{short}={value}");
        }
        // The kernel keeps at most 256 bytes of table userdata: a 2-byte TLV header, the
        // comment and its NUL.
        if s.len() > 253 {
            return Err(Error::Conflict {
                field: "netns".into(),
                value: format!("{} sysctl values to restore", self.restore.len()),
                reason: format!(
                    "the crash journal would take {} bytes, more than the 253 a table comment holds (too many links with a forwarding value of their own)",
                    s.len()
                ),
            });
        }
        Ok(s)
    }

    pub(crate) fn decode(s: &str) -> Option<Record> {
        let mut it = s.split(' ');
        if it.next()? != MAGIC {
            return None;
        }
        let mut r = Record::default();
        for tok in it {
            if let Some(v) = tok.strip_prefix("link=") {
                r.link = v.to_string();
            } else if let Some(v) = tok.strip_prefix("created=") {
                r.created = v == "1";
            } else if let Some(v) = tok.strip_prefix("up=") {
                r.was_up = v == "1";
            } else {
                let fam = match tok.as_bytes().first()? {
                    b'4' => "ipv4",
                    b'6' => "ipv6",
                    _ => return None,
                };
                let (lhs, value) = tok[1..].rsplit_once('=')?;
                let (entry, short) = lhs.rsplit_once('.')?;
                let key = KEYS.iter().find(|(s, _)| *s == short)?.1;
                r.restore
                    .push((format!("net/{fam}/conf/{entry}/{key}"), value.to_string()));
            }
        }
        Some(r)
    }
}

fn split_conf_path(path: &str) -> Option<(char, &str, &str)> {
    let rest = path.strip_prefix("net/")?;
    let (fam, rest) = rest.split_once("/conf/")?;
    let fam = match fam {
        "ipv4" => '4',
        "ipv6" => '6',
        _ => return None,
    };
    let (entry, key) = rest.rsplit_once('/')?;
    Some((fam, entry, key))
}

/// Link names by index, for describing routes.
pub(crate) fn names(links: &[link::Link]) -> HashMap<u32, String> {
    links.iter().map(|l| (l.index, l.name.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let r = Record {
            link: "macvlan0".into(),
            created: false,
            was_up: true,
            restore: vec![
                ("net/ipv4/conf/all/forwarding".into(), "0".into()),
                ("net/ipv4/conf/eth0.100/forwarding".into(), "1".into()),
                ("net/ipv6/conf/macvlan0/ndisc_notify".into(), "0".into()),
            ],
        };
        let s = r.encode().unwrap();
        assert_eq!(
            s,
            "egress/1 link=macvlan0 created=0 up=1 4all.f=0 4eth0.100.f=1 6macvlan0.nn=0"
        );
        assert_eq!(Record::decode(&s), Some(r));
    }

    #[test]
    fn foreign_comments_are_not_records() {
        assert_eq!(Record::decode("managed by someone else"), None);
        assert_eq!(Record::decode("egress/1 link=x 9bad.f=1"), None);
    }

    #[test]
    fn oversized_record_is_refused() {
        let r = Record {
            link: "macvlan0".into(),
            restore: (0..20)
                .map(|i| (format!("net/ipv4/conf/veth{i:08}/forwarding"), "1".into()))
                .collect(),
            ..Record::default()
        };
        let e = r.encode().unwrap_err();
        assert!(e.to_string().contains("253"), "{e}");
    }
}
