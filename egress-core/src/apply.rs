//! Runs a plan as one transaction: preflight, then each step with its undo journaled only after
//! the kernel accepted it; on any failure the journal is unwound in reverse.

use std::{collections::BTreeMap, net::IpAddr};

use ipnetwork::IpNetwork;
use rtnetlink::Handle;

use crate::{
    error::{Error, Result, Rollback},
    journal::{names, Conn, Journal, Record, Undo},
    netns::NsHandle,
    ops::{announce, link, link::Link, route, route::Route, sysctl},
    plan::{nat_rules, Step},
    spec::{router_of_table, External, RouterSpec},
};

/// A live router: what [`apply`] built, with the journal to undo it.
///
/// Dropping it leaves the router in place (it is a kernel configuration, not a process); call
/// [`Router::teardown`], or [`teardown_by_name`](crate::teardown_by_name) from anywhere later.
#[derive(Debug)]
pub struct Router {
    spec: RouterSpec,
    ns: NsHandle,
    journal: Journal,
}

impl Router {
    /// The spec this router was applied from.
    pub fn spec(&self) -> &RouterSpec {
        &self.spec
    }

    /// Undoes everything the apply did, in reverse order: restores the previous default routes
    /// and sysctl values, deletes what it created. Runs every undo even when one fails;
    /// "already gone" is success. Returns what was undone. When something could not be
    /// restored, the crash journal (the table, the copies of the replaced routes) is kept and
    /// listed with the failures, so that [`teardown_by_name`](crate::teardown_by_name) can
    /// finish the job later.
    pub async fn teardown(self) -> Result<Vec<String>> {
        let undone: Vec<String> = self.journal.0.iter().rev().map(Undo::describe).collect();
        let journal = self.journal;
        let failures = self
            .ns
            .within(move |ns| async move { Ok(journal.unwind(&mut Conn::open(ns)?).await) })
            .await?;
        if failures.is_empty() {
            Ok(undone)
        } else {
            Err(Error::Teardown {
                failures: failures.into_iter().map(|(_, e)| e).collect(),
            })
        }
    }
}

/// Fails up front without CAP_NET_ADMIN, before any namespace is opened.
///
/// Asks `capget(2)` for the calling thread's effective set (reading
/// `/proc/thread-self/status` instead took 0.1 ms, a twentieth of an apply). When the kernel
/// does not answer, the call goes on and the kernel's own EPERM speaks later.
pub(crate) fn require_net_admin(operation: &str) -> Result<()> {
    const CAP_NET_ADMIN: u32 = 12;
    match effective_capabilities() {
        Some(caps) if caps & (1 << CAP_NET_ADMIN) == 0 => Err(Error::PermissionDenied {
            operation: operation.to_string(),
            capability: "CAP_NET_ADMIN",
        }),
        _ => Ok(()),
    }
}

/// The calling thread's effective capabilities (`capget(2)`, version 3: two 32-bit words).
fn effective_capabilities() -> Option<u64> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget(2) with a version-3 header writes two `Data` records, which `data` holds.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    (rc == 0).then(|| u64::from(data[1].effective) << 32 | u64::from(data[0].effective))
}

/// What preflight learned from the kernel, before the first change.
struct Pre {
    internal: Link,
    /// The adopted link (or, after the create step, the created one).
    external: Option<Link>,
    parent: Option<(Handle, Link, NsHandle)>,
    names: std::collections::HashMap<u32, String>,
    /// An ifindex no link of the router namespace has, for the macvlan.
    free_index: Option<u32>,
    routes: Vec<Route>,
    record: Record,
    /// Restore writes for each family whose forwarding the router turns on.
    forwarding4: Option<Vec<(String, String)>>,
    forwarding6: Option<Vec<(String, String)>>,
    /// Previous values of the adopted link's sysctls the router sets.
    link_sysctls: Vec<(String, Option<String>)>,
}

/// Applies `spec`: preflight (every check that needs the kernel), then each step of
/// [`RouterSpec::plan`] in order. On failure everything done so far is undone and the error
/// names the failed step and the rollback outcome; when nothing had been changed yet, the
/// cause is returned as it is.
///
/// ```no_run
/// # async fn demo() -> egress_core::Result<()> {
/// use egress_core::{apply, MacvlanMode, RouterSpec};
/// let spec = RouterSpec::builder("egress-1")
///     .netns_name("pod")
///     .macvlan("eth1", MacvlanMode::Private)
///     .source("203.0.113.99/24")
///     .gateway("203.0.113.1")
///     .fallback("198.51.100.9")
///     .build()?;
/// let router = apply(&spec).await?;
/// router.teardown().await?;
/// # Ok(()) }
/// ```
pub async fn apply(spec: &RouterSpec) -> Result<Router> {
    require_net_admin("apply an egress router")?;
    let ns = NsHandle::open(&spec.netns, "netns")?;
    let parent_ns = open_parent(spec)?;
    let spec = spec.clone();
    ns.within(move |ns| transaction(spec, ns, parent_ns)).await
}

/// Opens the macvlan's parent namespace, if the spec creates one: on the caller's thread, where
/// [`Netns::Current`](crate::Netns::Current) means what the caller means.
pub(crate) fn open_parent(spec: &RouterSpec) -> Result<Option<NsHandle>> {
    match &spec.external {
        External::Macvlan(m) => Ok(Some(NsHandle::open(
            &m.parent_netns,
            "external.macvlan.parent_netns",
        )?)),
        External::Adopt(_) => Ok(None),
    }
}

/// The transaction itself, on a pool thread inside the router namespace.
pub(crate) async fn transaction(
    spec: RouterSpec,
    ns: NsHandle,
    parent_ns: Option<NsHandle>,
) -> Result<Router> {
    let spec = &spec;
    let mut c = Conn::open(ns)?;
    let mut pre = preflight(spec, &mut c, parent_ns).await?;

    let plan = spec.plan();
    let mut journal = Journal::default();
    // Route and address changes go out together (pipelined: sent one after the other without
    // waiting, acknowledged together) and the kernel applies them in order: they are held
    // until a step that depends on them (forwarding on, the announcement) or the end. The
    // steps in between (the table, the macvlan, its sysctls) do not depend on them.
    let mut batch: Vec<(usize, Change)> = Vec::new();
    for (i, step) in plan.steps().iter().enumerate() {
        #[cfg(feature = "fault-injection")]
        let injected = crate::fault::at_step(i + 1, || step.to_string());
        #[cfg(not(feature = "fault-injection"))]
        let injected: Result<()> = Ok(());
        let pipelined = match injected {
            Ok(()) => changes(step, &pre),
            Err(_) => None,
        };
        let depends = matches!(step, Step::EnableForwarding { .. } | Step::Announce { .. });
        if injected.is_err() || (pipelined.is_none() && depends) {
            if let Err((k, e)) = flush(&c, &mut batch, &mut journal).await {
                return Err(roll_back(&mut c, journal, &plan.steps()[k], k, e).await);
            }
        }
        let result = match (injected, pipelined) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(changes)) => {
                batch.extend(changes.into_iter().map(|ch| (i, ch)));
                Ok(())
            }
            (Ok(()), None) => exec(spec, step, &mut c, &mut pre, &mut journal).await,
        };
        if let Err(e) = result {
            return Err(roll_back(&mut c, journal, step, i, e).await);
        }
    }
    if let Err((k, e)) = flush(&c, &mut batch, &mut journal).await {
        return Err(roll_back(&mut c, journal, &plan.steps()[k], k, e).await);
    }
    Ok(Router {
        spec: spec.clone(),
        ns: c.ns,
        journal,
    })
}

/// Step `index` (from 0) failed with `e`: undoes everything done so far and says so. When
/// nothing had been changed yet, the cause is returned as it is.
async fn roll_back(c: &mut Conn, journal: Journal, step: &Step, index: usize, e: Error) -> Error {
    if journal.is_empty() {
        return e;
    }
    let failures = journal.unwind(c).await;
    let rollback = if failures.is_empty() {
        Rollback::Complete
    } else {
        Rollback::Incomplete(
            failures
                .into_iter()
                .map(|(what, e)| format!("{what} ({e})"))
                .collect(),
        )
    };
    Error::Apply {
        step: step.to_string(),
        step_index: index + 1,
        source: Box::new(e),
        rollback,
    }
}

/// One route netlink request of a step; its undo is journaled once the kernel accepted it.
enum Change {
    AddRoute {
        route: Route,
        what: String,
    },
    /// A default route the router replaces.
    DeleteRoute {
        route: Route,
        what: String,
    },
    AddAddress {
        index: u32,
        link: String,
        net: IpNetwork,
    },
}

impl Change {
    async fn send(&self, h: &Handle) -> Result<()> {
        match self {
            Change::AddRoute { route, what } => route::add(h, route, what).await,
            Change::DeleteRoute { route, what } => route::delete(h, route, what).await.map(drop),
            Change::AddAddress { index, link, net } => {
                crate::ops::addr::add(h, *index, link, *net).await
            }
        }
    }

    fn undo(self) -> Undo {
        match self {
            Change::AddRoute { route, what } => Undo::DeleteRoute { route, what },
            Change::DeleteRoute { route, what } => Undo::RestoreRoute {
                route: route::in_table(&route, route::main_table()),
                what,
            },
            Change::AddAddress { index, link, net } => Undo::DeleteAddress { index, link, net },
        }
    }
}

/// The route netlink changes of `step`, or `None` for a step that is not made of them.
fn changes(step: &Step, pre: &Pre) -> Option<Vec<Change>> {
    let add = |route: Route| {
        let what = route.describe(&pre.names);
        Change::AddRoute { route, what }
    };
    let defaults = |ipv6: bool| {
        route::foreign_defaults(&pre.routes)
            .into_iter()
            .filter(move |r| r.dst.is_ipv6() == ipv6)
    };
    Some(match step {
        Step::SaveDefaultRoutes { ipv6 } => defaults(*ipv6)
            .map(|r| add(route::in_table(&r, route::JOURNAL_TABLE)))
            .collect(),
        Step::AddAddress {
            link: name,
            address,
        } => vec![Change::AddAddress {
            index: external(pre).index,
            link: name.clone(),
            net: *address,
        }],
        Step::AddRoute {
            dst,
            via,
            link: name,
        } => {
            let oif = if *name == pre.internal.name {
                pre.internal.index
            } else {
                external(pre).index
            };
            vec![add(route::ours(*dst, *via, oif))]
        }
        Step::ReplaceDefaultRoute { via, .. } => {
            let mut changes: Vec<Change> = defaults(via.is_ipv6())
                .map(|route| {
                    let what = route.describe(&pre.names);
                    Change::DeleteRoute { route, what }
                })
                .collect();
            let zero: IpAddr = if via.is_ipv6() {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            };
            let dst = IpNetwork::new(zero, 0).expect("prefix 0 is valid");
            changes.push(add(route::ours(dst, Some(*via), external(pre).index)));
            changes
        }
        Step::CreateTable { .. }
        | Step::CreateMacvlan { .. }
        | Step::SetLinkUp { .. }
        | Step::SetSysctl { .. }
        | Step::EnableForwarding { .. }
        | Step::Announce { .. } => return None,
    })
}

/// Sends the pending changes together and journals each one the kernel accepted; on failure,
/// the step (index) of the first change that failed, and why.
async fn flush(
    c: &Conn,
    batch: &mut Vec<(usize, Change)>,
    journal: &mut Journal,
) -> std::result::Result<(), (usize, Error)> {
    let sent = std::mem::take(batch);
    let results = futures::future::join_all(sent.iter().map(|(_, ch)| ch.send(&c.rt))).await;
    let mut failed = None;
    for ((i, ch), result) in sent.into_iter().zip(results) {
        match result {
            Ok(()) => journal.push(ch.undo()),
            Err(e) => {
                failed.get_or_insert((i, e));
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

async fn preflight(spec: &RouterSpec, c: &mut Conn, parent_ns: Option<NsHandle>) -> Result<Pre> {
    let netns = c.ns.label().to_string();
    // One router per namespace: it owns the default route.
    for t in c.nft.tables()? {
        if let Some(other) = router_of_table(&t.name) {
            let hint = if other == spec.name {
                "use ensure to converge it, or tear it down first".to_string()
            } else {
                format!("one router per namespace: router `{other}` is configured here")
            };
            return Err(Error::AlreadyExists {
                object: "router",
                value: other,
                netns,
                hint: Some(hint),
            });
        }
    }
    let links = link::list(&c.rt).await?;
    let find = |name: &str| links.iter().find(|l| l.name == name).cloned();
    let internal = find(&spec.internal).ok_or_else(|| Error::NotFound {
        field: "internal".into(),
        object: "link",
        value: spec.internal.clone(),
        netns: netns.clone(),
    })?;
    let link_name = spec.external.link_name();
    let mut external = None;
    let mut parent = None;
    match &spec.external {
        External::Adopt(name) => {
            external = Some(find(name).ok_or_else(|| Error::NotFound {
                field: "external.adopt".into(),
                object: "link",
                value: name.clone(),
                netns: netns.clone(),
            })?);
        }
        External::Macvlan(m) => {
            if find(&m.name).is_some() {
                return Err(Error::AlreadyExists {
                    object: "link",
                    value: m.name.clone(),
                    netns,
                    hint: Some("choose another external.macvlan.name, or adopt it".into()),
                });
            }
            let pns = parent_ns.expect("a macvlan spec opens its parent namespace");
            let prt = if pns.same_as(&c.ns) {
                c.rt.clone()
            } else {
                pns.route_connection()?
            };
            let p = link::get(&prt, &m.parent)
                .await?
                .ok_or_else(|| Error::NotFound {
                    field: "external.macvlan.parent".into(),
                    object: "link",
                    value: m.parent.clone(),
                    netns: pns.label().to_string(),
                })?;
            if let Some(mtu) = m.mtu {
                if mtu > p.mtu {
                    return Err(Error::Conflict {
                        field: "external.macvlan.mtu".into(),
                        value: mtu.to_string(),
                        reason: format!(
                            "larger than the MTU {} of parent {}; at most {} is valid",
                            p.mtu, m.parent, p.mtu
                        ),
                    });
                }
            }
            parent = Some((prt, p, pns));
        }
    }

    let has4 = spec.gateway4.is_some();
    let has6 = spec.gateway6.is_some();
    let (routes4, routes6) = futures::try_join!(
        async {
            match has4 {
                true => route::list(&c.rt, false).await,
                false => Ok(Vec::new()),
            }
        },
        async {
            match has6 {
                true => route::list(&c.rt, true).await,
                false => Ok(Vec::new()),
            }
        },
    )?;
    let routes = routes4.into_iter().chain(routes6).collect();

    let families: Vec<&'static str> = [(has4, "ipv4"), (has6, "ipv6")]
        .into_iter()
        .filter_map(|(on, f)| on.then_some(f))
        .collect();
    let mut link_keys = Vec::new();
    if let Some(ext) = &external {
        if has4 {
            link_keys.push(format!("net/ipv4/conf/{}/arp_notify", ext.name));
        }
        if has6 {
            link_keys.push(format!("net/ipv6/conf/{}/ndisc_notify", ext.name));
        }
    }
    let mut values = sysctl::read_forwarding(&c.ns, &families)?;
    values.extend(links.iter().flat_map(|l| l.conf.sysctls(&l.name)));
    let forwarding4 = has4.then(|| forwarding_restore(&values, "ipv4")).flatten();
    let forwarding6 = has6.then(|| forwarding_restore(&values, "ipv6")).flatten();
    let link_sysctls: Vec<(String, Option<String>)> = link_keys
        .into_iter()
        .map(|k| {
            let v = values.get(&k).cloned();
            (k, v)
        })
        .collect();

    let mut restore: Vec<(String, String)> = Vec::new();
    restore.extend(forwarding4.iter().flatten().cloned());
    restore.extend(forwarding6.iter().flatten().cloned());
    restore.extend(
        link_sysctls
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .filter(|(_, v)| v != "1"),
    );
    let record = Record {
        link: link_name.to_string(),
        created: matches!(spec.external, External::Macvlan(_)),
        was_up: external.as_ref().is_some_and(|l| l.up),
        restore,
    };
    record.encode()?;

    let free_index = links
        .iter()
        .map(|l| l.index)
        .max()
        .and_then(|i| i.checked_add(1))
        .filter(|i| *i <= i32::MAX as u32);
    #[cfg(feature = "fault-injection")]
    let free_index = match crate::fault::index_taken() {
        true => Some(internal.index),
        false => free_index,
    };
    Ok(Pre {
        internal,
        external,
        parent,
        names: names(&links),
        free_index,
        routes,
        record,
        forwarding4,
        forwarding6,
        link_sysctls,
    })
}

/// The writes that restore a family's forwarding after the router turned it on, or `None` when
/// it is on already (nothing to change), from the values [`sysctl::read_forwarding`] read.
///
/// Writing `all.forwarding` (or `ip_forward`) resets `default` and every link's `forwarding`
/// (and, for IPv4, sets `all.accept_redirects` to the opposite): restoring means writing `all`
/// back first, then every entry whose value differed.
fn forwarding_restore(
    values: &BTreeMap<String, String>,
    family: &str,
) -> Option<Vec<(String, String)>> {
    let prefix = format!("net/{family}/conf/");
    let all = format!("{prefix}all/forwarding");
    let old_all = values.get(&all).cloned().unwrap_or_else(|| "0".into());
    if old_all == "1" {
        return None;
    }
    let mut writes = vec![(all.clone(), old_all.clone())];
    for (k, v) in values.range(prefix.clone()..) {
        if !k.starts_with(&prefix) {
            break;
        }
        if k.ends_with("/forwarding") && *k != all && *v != old_all {
            writes.push((k.clone(), v.clone()));
        }
    }
    if family == "ipv4" {
        let redirects = format!("{prefix}all/accept_redirects");
        let after = if old_all == "0" { "1" } else { "0" };
        if let Some(v) = values.get(&redirects).filter(|v| *v != after) {
            writes.push((redirects, v.clone()));
        }
    }
    Some(writes)
}

async fn exec(
    spec: &RouterSpec,
    step: &Step,
    c: &mut Conn,
    pre: &mut Pre,
    journal: &mut Journal,
) -> Result<()> {
    match step {
        Step::CreateTable { table, .. } => {
            let comment = pre.record.encode()?;
            c.nft.create(&comment, &nat_rules(spec)).map_err(|e| {
                if e.errno() == Some(libc::EEXIST) {
                    Error::AlreadyExists {
                        object: "router",
                        value: spec.name.clone(),
                        netns: c.ns.label().to_string(),
                        hint: Some("another apply of the same router won the race".into()),
                    }
                } else {
                    e
                }
            })?;
            journal.push(Undo::DeleteTable {
                table: table.clone(),
            });
        }
        Step::CreateMacvlan { macvlan, group, .. } => {
            let (prt, parent, _) = pre.parent.as_ref().expect("preflight found the parent");
            let created = link::create_macvlan(
                prt,
                &c.rt,
                macvlan,
                parent,
                c.ns.raw_fd(),
                *group,
                pre.free_index,
            )
            .await?;
            journal.push(Undo::DeleteLink {
                index: created.index,
                name: created.name.clone(),
            });
            pre.names.insert(created.index, created.name.clone());
            pre.external = Some(created);
        }
        Step::SetLinkUp { link: name } => {
            let ext = external(pre);
            if !ext.up {
                link::set_up(&c.rt, ext.index, name, true).await?;
                journal.push(Undo::SetLinkDown {
                    index: ext.index,
                    name: name.clone(),
                });
            }
        }
        Step::SetSysctl { key, value } => {
            let old = pre
                .link_sysctls
                .iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.clone());
            if old.as_deref() != Some(value.as_str()) {
                let writes = [(key.clone(), value.clone())];
                if let (_, Some(e)) = sysctl::write_many(&c.ns, &writes)? {
                    return Err(e);
                }
                // A created link's sysctls vanish with it; an adopted link's are restored.
                if let Some(old) = old {
                    journal.push(Undo::RestoreSysctls {
                        writes: vec![(key.clone(), old)],
                    });
                }
            }
        }
        Step::EnableForwarding { ipv6 } => {
            let restore = if *ipv6 {
                &pre.forwarding6
            } else {
                &pre.forwarding4
            };
            if let Some(restore) = restore {
                let key = if *ipv6 {
                    "net/ipv6/conf/all/forwarding"
                } else {
                    "net/ipv4/ip_forward"
                };
                let writes = [(key.into(), "1".into())];
                if let (_, Some(e)) = sysctl::write_gated(&c.ns, &writes).await? {
                    return Err(e);
                }
                journal.push(Undo::RestoreSysctls {
                    writes: restore.clone(),
                });
            }
        }
        Step::Announce {
            link: name,
            addresses,
            count,
        } => {
            let ext = external(pre);
            let mac: [u8; 6] = ext.mac.as_slice().try_into().map_err(|_| Error::Conflict {
                field: "external".into(),
                value: name.clone(),
                reason: "the link has no Ethernet address to announce".into(),
            })?;
            announce::send(&c.ns, ext.index, name, mac, addresses, *count)?;
        }
        Step::SaveDefaultRoutes { .. }
        | Step::AddAddress { .. }
        | Step::AddRoute { .. }
        | Step::ReplaceDefaultRoute { .. } => {
            unreachable!("route and address steps are sent by flush")
        }
    }
    Ok(())
}

fn external(pre: &Pre) -> &Link {
    pre.external
        .as_ref()
        .expect("the external link exists once it was created or adopted")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn forwarding_already_on_needs_no_restore() {
        let v = values(&[("net/ipv4/conf/all/forwarding", "1")]);
        assert_eq!(forwarding_restore(&v, "ipv4"), None);
    }

    #[test]
    fn forwarding_restore_writes_all_first_then_what_differed() {
        let v = values(&[
            ("net/ipv4/conf/all/forwarding", "0"),
            ("net/ipv4/conf/all/accept_redirects", "0"),
            ("net/ipv4/conf/default/forwarding", "0"),
            ("net/ipv4/conf/eth0/forwarding", "1"),
            ("net/ipv4/conf/lo/forwarding", "0"),
            ("net/ipv6/conf/all/forwarding", "0"),
        ]);
        assert_eq!(
            forwarding_restore(&v, "ipv4").unwrap(),
            vec![
                ("net/ipv4/conf/all/forwarding".into(), "0".into()),
                ("net/ipv4/conf/eth0/forwarding".into(), "1".into()),
                // Writing forwarding=0 sets accept_redirects=1; it was 0.
                ("net/ipv4/conf/all/accept_redirects".into(), "0".into()),
            ]
        );
        assert_eq!(
            forwarding_restore(&v, "ipv6").unwrap(),
            vec![("net/ipv6/conf/all/forwarding".into(), "0".into())]
        );
    }
}
