//! Keeping a router as its spec says while something else changes its namespace: [`watch`]
//! listens to the kernel's notifications for the router's namespace (links, addresses, routes,
//! forwarding, nftables) and, when something changed, compares the namespace with the router's
//! desired state and repairs exactly what drifted (the transaction [`crate::ensure`] runs). No
//! polling: the kernel says when to look.
//!
//! A watch ends when it is stopped, or when the router is gone (torn down by someone else). It
//! never fights a teardown: while one runs (its marker is in the journal table), it looks on —
//! while the marker is younger than a teardown takes ([`record::TEARDOWN_AT_MOST`], by the
//! time the marker carries), so that a marker left by a teardown that was killed does not stop
//! it for good. Nor a role change (a promotion or demotion by another process, keepalived's
//! notify command): a promotion half done looks like drift of a standby (an egress address
//! held, the role marker not yet replaced); while the role change's marker is there, the watch
//! looks on too — for at most [`ROLE_CHANGE_AT_MOST`] from when it saw it.
//!
//! Nothing else stops it for good either: a repair that fails ([`WatchEvent::Failed`]) or a
//! look that fails (reading the namespace, listening to the kernel: [`WatchEvent::LookFailed`])
//! is tried again after a pause that doubles from 50 ms to 5 s while the failures go on, and
//! that no notification cuts short (the watch's own repair and its rollback notify too: a
//! notification that cut the pause would make it a busy loop). The first look that finds
//! nothing to repair after a failure is [`WatchEvent::Resumed`]. The router's role is reported
//! at the first look and at each change ([`WatchEvent::Role`]), whoever made it.

use std::{
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use futures::{channel::oneshot, FutureExt};
use netlink_sys::{
    protocols::{NETLINK_NETFILTER, NETLINK_ROUTE},
    Socket, SocketAddr,
};
use tokio::io::{unix::AsyncFd, Interest};
use tracing::{info, info_span, warn};

use crate::{
    context::converge,
    drift::Drift,
    error::{Error, Result},
    kernel::netns::{require_net_admin, this_process, Conn, Length, NsHandle},
    model::desired::Desired,
    objects::{record, role::role_in, Current},
    operations::apply::open_parent,
    spec::RouterSpec,
    Role,
};

/// What a watch saw and did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// The namespace had drifted; what differed was changed back, in place, and verified.
    Repaired {
        /// What differed.
        drift: Vec<Drift>,
        /// From the first notification of the change to the verified repair.
        took: Duration,
    },
    /// A repair failed and was rolled back; the watch tries again after a pause (doubling
    /// from 50 ms to 5 s while repairs keep failing; a notification does not cut it short).
    Failed {
        /// What differed.
        drift: Vec<Drift>,
        /// Why the repair failed.
        error: String,
    },
    /// A teardown of the router started (or was interrupted): the watch leaves the router
    /// alone until the teardown ends.
    TeardownSeen,
    /// The watch could not look at the namespace (a read of it, or the kernel's
    /// notifications, failed): it tries again after `retry_in`, doubling from 50 ms to 5 s
    /// while looks and repairs keep failing.
    LookFailed {
        /// Why the look failed.
        error: String,
        /// When the watch looks again.
        retry_in: Duration,
    },
    /// After a [`WatchEvent::Failed`] or [`WatchEvent::LookFailed`], a look found the router as
    /// its spec says: nothing to repair, the watch runs again. (A repair that succeeds after a
    /// failure is [`WatchEvent::Repaired`].)
    Resumed,
    /// The router's role, as its record holds it: reported at the first look and each time it
    /// changes (a promotion or demotion by any process: keepalived's notify command).
    Role {
        /// The role now.
        role: Role,
        /// From the kernel's first notification of the change (its marker, or the change
        /// itself when the watch did not look while it ran) to the look that saw it done;
        /// `None` at the first look.
        took: Option<Duration>,
    },
    /// The router is gone (torn down by someone else): the watch ends with
    /// [`WatchEnd::TornDown`] right after this event.
    RouterGone,
}

/// How a watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// [`Watcher::stop`] (or dropping the [`Watcher`]) ended it.
    Stopped,
    /// The router is gone: torn down by someone else.
    TornDown,
}

/// A running watch; dropping it stops the watch and waits for it.
///
/// The watch runs on a thread of the process that started it. In a child of `fork`, which
/// has a copy of the `Watcher` but not that thread, [`stop`](Watcher::stop), [`wait`] and
/// dropping it return at once ([`WatchEnd::Stopped`]: no watch runs in the child; the
/// parent's goes on).
///
/// [`wait`]: Watcher::wait
#[derive(Debug)]
pub struct Watcher {
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<Result<Result<WatchEnd>>>>,
    /// The process whose thread runs the watch.
    process: (u32, u64),
}

impl Watcher {
    /// Stops the watch (a repair under way finishes first) and says how it ended.
    pub fn stop(mut self) -> Result<WatchEnd> {
        if self.of_another_process() {
            return Ok(WatchEnd::Stopped);
        }
        if let Some(stop) = self.stop.take() {
            // The watch may have ended by itself: then no one listens.
            let _ = stop.send(());
        }
        self.join()
    }

    /// Waits until the watch ends by itself (the router torn down by someone else), or fails.
    pub fn wait(mut self) -> Result<WatchEnd> {
        self.join()
    }

    fn join(&mut self) -> Result<WatchEnd> {
        let Some(done) = self.done.take() else {
            return Ok(WatchEnd::Stopped);
        };
        if self.of_another_process() {
            return Ok(WatchEnd::Stopped);
        }
        match crate::kernel::wait::wait(done) {
            Ok(outcome) => outcome?,
            Err(oneshot::Canceled) => Err(Error::kernel("watch the router", libc::ECANCELED)),
        }
    }
}

impl Watcher {
    /// Whether the watch runs in another process (this is a child of `fork`): then its
    /// channels are let go without a word, since telling the other end would wake a task of a
    /// runtime that only the parent runs (its locks perhaps held at fork).
    fn of_another_process(&mut self) -> bool {
        if self.process == this_process() {
            return false;
        }
        std::mem::forget(self.stop.take());
        std::mem::forget(self.done.take());
        true
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.of_another_process() {
            return;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.join();
    }
}

/// A notification is looked at right away. When more come while the namespace is read (a
/// flurry: a script, a teardown), the watch waits until none came for this long, and reads
/// again: one repair for the whole flurry.
const QUIET: Duration = Duration::from_millis(2);
/// …waiting at most this long each time.
const SETTLE_AT_MOST: Duration = Duration::from_millis(50);
/// The pause after a failed repair, doubling up to [`RETRY_AT_MOST`].
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_AT_MOST: Duration = Duration::from_secs(5);
/// How long a role change marker keeps the watch looking on, from when the watch first saw
/// it: a role change takes milliseconds; one still marked after this was cut short.
const ROLE_CHANGE_AT_MOST: Duration = Duration::from_secs(2);
/// How many times a read that something changed under is read again before it is used as it
/// is (a repair from a mixed read fails its verify and is rolled back, and tried again).
const REREADS: usize = 20;

/// Watches router `spec` in its namespace and repairs what drifts, reporting each event to
/// `on_event` (called on the watch's thread) and as `tracing` events. The router is looked at
/// (and repaired) once right away; from then on at each change the kernel notifies. Returns
/// once the watch listens: a change made after `watch` returns is seen. A router that is not
/// in its namespace is [`Error::NotFound`].
///
/// ```no_run
/// # fn main() -> egress_core::Result<()> {
/// # let spec: egress_core::RouterSpec = unimplemented!();
/// let watcher = egress_core::watch(&spec, |event| eprintln!("{event:?}"))?;
/// // … until the process is told to stop:
/// watcher.stop()?;
/// # Ok(()) }
/// ```
pub fn watch(
    spec: &RouterSpec,
    on_event: impl FnMut(&WatchEvent) + Send + 'static,
) -> Result<Watcher> {
    require_net_admin("watch an egress router")?;
    let ns = NsHandle::open(&spec.netns, "netns")?;
    let parent = open_parent(spec)?;
    watch_from(ns, parent, spec, on_event)
}

/// Starts the watch of `spec`'s router in `ns` (its macvlan's parent in `parent`).
fn watch_from(
    ns: NsHandle,
    parent: Option<NsHandle>,
    spec: &RouterSpec,
    on_event: impl FnMut(&WatchEvent) + Send + 'static,
) -> Result<Watcher> {
    let (stop, stopped) = oneshot::channel();
    let (ready, listening) = oneshot::channel();
    let spec = spec.clone();
    let span = info_span!("watch", router = %spec.name, netns = %spec.netns);
    let done = span.in_scope(|| {
        ns.spawn_within(Length::Lasting, move |ns| {
            watch_in(ns, spec, parent, on_event, stopped, ready)
        })
    })?;
    let mut watcher = Watcher {
        stop: Some(stop),
        done: Some(done),
        process: this_process(),
    };
    match crate::kernel::wait::wait(listening) {
        Ok(()) => Ok(watcher),
        // It ended before listening: its outcome says why.
        Err(oneshot::Canceled) => match watcher.join() {
            Ok(_) => Err(Error::kernel("start the watch", libc::ECANCELED)),
            Err(e) => Err(e),
        },
    }
}

async fn watch_in(
    ns: NsHandle,
    spec: RouterSpec,
    parent: Option<NsHandle>,
    mut on_event: impl FnMut(&WatchEvent),
    mut stopped: oneshot::Receiver<()>,
    ready: oneshot::Sender<()>,
) -> Result<WatchEnd> {
    let mut notifications = Some(Notifications::open()?);
    let mut ready = Some(ready);
    let mut changed_at = Instant::now();
    let mut retry = RETRY_FIRST;
    // Whether the last look or repair failed (until one succeeds).
    let mut failing = false;
    let (mut tearing_down, mut teardown_stale) = (false, false);
    // Since when a marker whose age it does not carry has been there (reset when it goes).
    let (mut role_change_since, mut teardown_since) = (None, None);
    // The role last reported, and when the change to another began (the first notification
    // of the look that saw its marker).
    let mut role_seen: Option<Role> = None;
    let mut role_change_began: Option<Instant> = None;
    // The connection is kept from one look to the next (a failed repair drops it).
    let mut conn: Option<Conn> = None;
    loop {
        // Sockets that failed are opened again (in this thread's namespace, the router's).
        let listening = match notifications.take() {
            Some(n) => Ok(n),
            None => Notifications::open(),
        };
        let read = match listening {
            Ok(n) => read_quiet(notifications.insert(n), conn.take(), &ns, &spec.name).await,
            Err(e) => Err(e),
        };
        let (c, now) = match read {
            Ok(read) => read,
            // The first look is `watch`'s to report: the watch has not started.
            Err(e) if ready.is_some() => return Err(e),
            Err(e) => {
                warn!(error = %e, retry_ms = retry.as_millis() as u64, "the watch could not look");
                on_event(&WatchEvent::LookFailed {
                    error: e.to_string(),
                    retry_in: retry,
                });
                (failing, notifications) = (true, None);
                if !back_off(&mut retry, &mut stopped).await {
                    return Ok(WatchEnd::Stopped);
                }
                changed_at = Instant::now();
                continue;
            }
        };
        // A teardown marker keeps the watch looking on while a teardown may still run: its
        // age is in the marker (one of 7508fe2 has none: counted from when the watch saw it).
        let teardown = record::tearing_down(&now, &spec.name);
        let teardown = looked_on(
            &mut teardown_since,
            teardown.map(|t| t.age),
            record::TEARDOWN_AT_MOST,
        );
        // In the role the router's record holds, read with the rest: a standby is repaired
        // as a standby (a promotion or demotion by another process is not drift).
        let role = role_in(&now, &spec.name);
        let desired = Desired::with_role(&spec, role);
        if !matches!(teardown, Look::On(_)) && !desired.exists_in(&now) {
            if ready.is_some() {
                return Err(Error::NotFound {
                    field: "name".into(),
                    object: "router",
                    value: spec.name.clone(),
                    netns: spec.netns.to_string(),
                });
            }
            info!("the router is gone: the watch ends");
            on_event(&WatchEvent::RouterGone);
            return Ok(WatchEnd::TornDown);
        }
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        match teardown {
            Look::On(_) if !tearing_down => {
                info!("a teardown is running: the watch looks on");
                on_event(&WatchEvent::TeardownSeen);
            }
            Look::Past if !teardown_stale => warn!(
                bound_s = record::TEARDOWN_AT_MOST.as_secs(),
                "a teardown marker older than a teardown takes: left by one that was killed, \
                 looked past"
            ),
            _ => {}
        }
        tearing_down = matches!(teardown, Look::On(_));
        teardown_stale = teardown == Look::Past;
        let role_changing = record::role_change_in(&now, &spec.name).is_some();
        if role_changing {
            role_change_began.get_or_insert(changed_at);
        }
        let role_change = looked_on(
            &mut role_change_since,
            role_changing.then_some(None),
            ROLE_CHANGE_AT_MOST,
        );
        if role_change == Look::Past {
            warn!("a role change marker older than the watch allows: left by a crash, looked past");
        }
        let wait = [teardown, role_change]
            .into_iter()
            .filter_map(|l| match l {
                Look::On(left) => Some(left),
                _ => None,
            })
            .min();
        if wait.is_none() {
            let began = role_change_began.take().unwrap_or(changed_at);
            if role_seen != Some(role) {
                let took = role_seen.is_some().then(|| began.elapsed());
                info!(%role, "the router's role");
                on_event(&WatchEvent::Role { role, took });
                role_seen = Some(role);
            }
        }
        let drift = match wait {
            Some(_) => Vec::new(),
            None => desired.compare(&now),
        };
        if !drift.is_empty() {
            // A plan that cannot be made (an adopted link is gone: the watch does not create
            // it) is a failed repair too: the watch goes on, and tries again.
            match converge(&desired, c, now, parent.clone()).await {
                Ok(c) => {
                    conn = Some(c);
                    let took = changed_at.elapsed();
                    for d in &drift {
                        info!(drift = %d, kind = %d.kind(), us = took.as_micros() as u64, "repaired");
                    }
                    on_event(&WatchEvent::Repaired { drift, took });
                    retry = RETRY_FIRST;
                    failing = false;
                    // Look again right away: nothing that came meanwhile is missed.
                    changed_at = Instant::now();
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, retry_ms = retry.as_millis() as u64, "repair failed");
                    on_event(&WatchEvent::Failed {
                        drift,
                        error: e.to_string(),
                    });
                    failing = true;
                    // The repair's own changes and their rollback notify too: the pause runs
                    // its full length, and the next look reads whatever came meanwhile.
                    if !back_off(&mut retry, &mut stopped).await {
                        return Ok(WatchEnd::Stopped);
                    }
                    changed_at = Instant::now();
                    continue;
                }
            }
        }
        if failing && wait.is_none() {
            info!("nothing to repair: the watch runs again");
            on_event(&WatchEvent::Resumed);
            failing = false;
        }
        retry = RETRY_FIRST;
        // Idle until the kernel says something changed (or the watch is stopped), or a marker
        // looked on for would no longer be.
        let listen = notifications.as_ref().expect("opened by this look");
        let changed = tokio::select! {
            biased;
            _ = &mut stopped => return Ok(WatchEnd::Stopped),
            changed = listen.changed() => changed,
            () = tokio::time::sleep(wait.unwrap_or(RETRY_AT_MOST)), if wait.is_some() => Ok(()),
        };
        if let Err(e) = changed {
            // Looked at again right away, on new sockets; a failure then backs off.
            warn!(error = %e, "listening to the kernel failed: the watch looks again");
            notifications = None;
        }
        changed_at = Instant::now();
        conn = Some(c);
    }
}

/// Reads the namespace once nothing has changed in it while it was read: the notifications
/// queued before (the repair's own changes, too) are older than the read.
async fn read_quiet(
    notifications: &Notifications,
    conn: Option<Conn>,
    ns: &NsHandle,
    name: &str,
) -> Result<(Conn, Current)> {
    notifications.drain().map(drop)?;
    let mut c = match conn {
        Some(c) => c,
        None => Conn::open(ns.clone())?,
    };
    let mut now = Current::read(&mut c, name).await?;
    // A read is several dumps, not one snapshot: when something changed while it ran (a
    // teardown, say), it may mix before and after. Read again once the namespace is quiet.
    for _ in 0..REREADS {
        if !notifications.drain()? {
            break;
        }
        notifications.settle().await?;
        now = Current::read(&mut c, name).await?;
    }
    Ok((c, now))
}

/// Waits out the pause after a failure, and doubles it for the next one (up to
/// [`RETRY_AT_MOST`]): no notification cuts it short, only a stop (then `false`).
async fn back_off(retry: &mut Duration, stopped: &mut oneshot::Receiver<()>) -> bool {
    let paused = tokio::select! {
        biased;
        _ = stopped => false,
        () = tokio::time::sleep(*retry) => true,
    };
    *retry = (*retry * 2).min(RETRY_AT_MOST);
    paused
}

/// The notification sockets of one namespace: route netlink (links, addresses, routes,
/// forwarding) and nftables. Nothing is parsed: any message means "look again".
struct Notifications {
    route: AsyncFd<Socket>,
    nft: AsyncFd<Socket>,
}

/// What a marker (a teardown's, a role change's) makes the watch do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// No marker: the watch repairs.
    Away,
    /// A marker younger than its bound: the watch looks on, for at most this long.
    On(Duration),
    /// A marker older than its bound: left by a crash, looked past.
    Past,
}

/// What a marker of age `age` (`None`: no marker; `Some(None)`: its age unknown, counted from
/// `since`, when the watch first saw it) makes the watch do, given its `bound`.
fn looked_on(since: &mut Option<Instant>, age: Option<Option<Duration>>, bound: Duration) -> Look {
    let Some(age) = age else {
        *since = None;
        return Look::Away;
    };
    let age = age.unwrap_or_else(|| since.get_or_insert_with(Instant::now).elapsed());
    match bound.checked_sub(age).filter(|left| !left.is_zero()) {
        Some(left) => Look::On(left),
        None => Look::Past,
    }
}

/// Route netlink groups (`RTNLGRP_*`): links, IPv4 addresses, IPv4 routes, IPv6 addresses,
/// IPv6 routes, IPv4 and IPv6 netconf (forwarding).
const ROUTE_GROUPS: [u32; 7] = [1, 5, 7, 9, 11, 24, 25];
/// `NFNLGRP_NFTABLES`: every committed ruleset change.
const NFT_GROUP: u32 = 7;

impl Notifications {
    /// Opens the sockets in the calling thread's namespace.
    fn open() -> Result<Notifications> {
        let socket = |protocol, groups: &[u32]| -> Result<AsyncFd<Socket>> {
            let mut s = Socket::new(protocol).map_err(listen_error)?;
            s.bind(&SocketAddr::new(0, 0)).map_err(listen_error)?;
            for g in groups {
                s.add_membership(*g).map_err(listen_error)?;
            }
            s.set_non_blocking(true).map_err(listen_error)?;
            // SAFETY: the socket owns its descriptor and the `AsyncFd` owns the socket: the
            // descriptor stays open, the same, for the `AsyncFd`'s whole life.
            unsafe { AsyncFd::register_with_interest(s, Interest::READABLE) }
                .map_err(|e| listen_error(e.into_parts().1))
        };
        Ok(Notifications {
            route: socket(NETLINK_ROUTE, &ROUTE_GROUPS)?,
            nft: socket(NETLINK_NETFILTER, &[NFT_GROUP])?,
        })
    }

    /// Waits until either socket has a notification, and takes what is queued.
    async fn changed(&self) -> Result<()> {
        tokio::select! {
            r = self.route.readable() => drop(r.map_err(listen_error)?),
            r = self.nft.readable() => drop(r.map_err(listen_error)?),
        }
        self.drain().map(drop)
    }

    /// Waits until no notification came for [`QUIET`] (at most [`SETTLE_AT_MOST`]).
    async fn settle(&self) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < SETTLE_AT_MOST {
            match tokio::time::timeout(QUIET, self.changed()).await {
                Ok(r) => r?,
                Err(_quiet) => break,
            }
        }
        Ok(())
    }

    /// Takes every queued notification (a full queue, `ENOBUFS`, counts as one too); whether
    /// there was any.
    fn drain(&self) -> Result<bool> {
        let mut buf = vec![0u8; 64 << 10];
        let mut any = false;
        for fd in [&self.route, &self.nft] {
            loop {
                // SAFETY: recv(2) into `buf`, which is valid for `buf.len()` bytes.
                let n = unsafe {
                    libc::recv(
                        fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n >= 0 {
                    any = true;
                    continue;
                }
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ENOBUFS) => {
                        any = true;
                        continue;
                    }
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => break,
                    _ => return Err(listen_error(e)),
                }
            }
            // The readiness the runtime holds is stale now: `readable` waits for the next.
            if let Some(Ok(mut guard)) = fd.readable().now_or_never() {
                guard.clear_ready();
            }
        }
        Ok(any)
    }
}

fn listen_error(e: std::io::Error) -> Error {
    Error::kernel(
        "listen to the kernel's notifications",
        e.raw_os_error().unwrap_or(libc::EIO),
    )
}

impl crate::Router {
    /// [`watch`] this router, in the namespaces the handle holds: repairs what drifts until the
    /// watch is stopped or the router is torn down.
    pub fn watch(&self, on_event: impl FnMut(&WatchEvent) + Send + 'static) -> Result<Watcher> {
        require_net_admin("watch an egress router")?;
        watch_from(
            self.ns().clone(),
            self.parent().cloned(),
            self.spec(),
            on_event,
        )
    }
}
