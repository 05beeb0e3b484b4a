//! Network namespaces: open one by path, name or pid, run work inside it, and connect to it
//! ([`Conn`]: its route netlink and nftables sockets); the capability check every call makes
//! first ([`require_net_admin`]).
//!
//! A netlink socket belongs to the namespace of the thread that created it, and a write to
//! `/proc/sys/net/...` applies to the namespace of the writing thread. So every socket is opened,
//! and every sysctl read or written, on a dedicated OS thread that has `setns`-ed into the
//! namespace; sockets are then used from anywhere. No thread of an async runtime ever switches.
//!
//! The dedicated threads are a small pool (see [`pool`]): a job enters its namespace, runs, and
//! the thread goes back to the process's namespace (so that no namespace is kept alive by an
//! idle thread) and waits for the next job; a thread idle for [`pool::IDLE`] ends. A whole
//! transaction runs as one job ([`NsHandle::within`]) on the thread's own current-thread tokio
//! runtime: its netlink connections, sysctl writes and packet sockets then need no thread
//! hand-off at all, and a socket in another namespace (the macvlan's parent) is opened by
//! switching that thread there and back.

use std::{
    cell::{Cell, OnceCell, RefCell},
    fmt,
    fs::File,
    future::Future,
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
    panic::{catch_unwind, resume_unwind, AssertUnwindSafe},
    path::PathBuf,
    sync::{mpsc, Arc},
};

use nix::sched::{setns, CloneFlags};

use crate::{
    error::{Error, Result},
    ops::nat::NftSocket,
    spec::Netns,
};

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

/// The sockets of one namespace: route netlink (async) and nftables (blocking: a call takes
/// about a millisecond).
pub(crate) struct Conn {
    /// The namespace.
    pub ns: NsHandle,
    /// Route netlink, driven by the current tokio runtime.
    pub rt: rtnetlink::Handle,
    /// nftables.
    pub nft: NftSocket,
    /// Undos run through this connection, for fault injection.
    #[cfg(feature = "fault-injection")]
    pub undos_run: usize,
}

impl Conn {
    /// Opens both sockets inside `ns`.
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

/// A namespace's identity: the device and inode of its nsfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NsId {
    dev: u64,
    ino: u64,
}

impl NsId {
    fn of(fd: std::os::fd::BorrowedFd<'_>) -> Option<NsId> {
        let st = nix::sys::stat::fstat(fd).ok()?;
        Some(NsId {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

/// An open network namespace: holding the fd keeps it alive even if its name is removed.
/// Clones share the fd.
#[derive(Debug, Clone)]
pub(crate) struct NsHandle {
    fd: Arc<OwnedFd>,
    id: Option<NsId>,
    label: Arc<str>,
}

impl NsHandle {
    /// Opens `ns`; [`Netns::Current`] is the namespace of the calling thread, captured now.
    pub(crate) fn open(ns: &Netns, field: &str) -> Result<Self> {
        let path = match ns {
            Netns::Current => PathBuf::from("/proc/thread-self/ns/net"),
            Netns::Path(p) => p.clone(),
            Netns::Name(n) => PathBuf::from("/run/netns").join(n),
            Netns::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        };
        let file = File::open(&path).map_err(|e| match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied {
                operation: format!("open network namespace {}", path.display()),
                capability: "CAP_SYS_ADMIN",
            },
            _ => Error::NotFound {
                field: field.to_string(),
                object: "network namespace",
                value: ns.to_string(),
                netns: path.display().to_string(),
            },
        })?;
        let fd = OwnedFd::from(file);
        Ok(NsHandle {
            id: NsId::of(fd.as_fd()),
            fd: Arc::new(fd),
            label: ns.to_string().into(),
        })
    }

    /// How the namespace was named, for messages.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether two handles name the same namespace (same inode).
    pub(crate) fn same_as(&self, other: &NsHandle) -> bool {
        self.id.is_some() && self.id == other.id
    }

    /// Runs `f` inside this namespace and returns its result; a panic in `f` is propagated.
    ///
    /// On a pool thread (inside [`NsHandle::within`]) the thread switches here and back in
    /// place; on a thread that is in this namespace already (the OpenShift drop-in runs inside
    /// the pod) `f` just runs; otherwise `f` runs on a pool thread and the caller waits.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        if worker::on_pool_thread() {
            return worker::visit(self, f);
        }
        if self.is_current() {
            return Ok(f());
        }
        let (reply, result) = mpsc::sync_channel(1);
        self.submit(f, move |r| {
            let _ = reply.send(r);
        })?;
        self.settle(result.recv().ok())
    }

    /// Runs `f` inside this namespace on a pool thread without waiting: the result arrives on
    /// the returned channel. Lets a slow kernel call run beside others.
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<futures::channel::oneshot::Receiver<Result<T>>> {
        let (reply, result) = futures::channel::oneshot::channel();
        let label = self.label.clone();
        self.submit(f, move |r| {
            let _ = reply.send(match r {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(_panic)) => Err(Error::kernel(
                    format!("run in namespace {label} (the job panicked)"),
                    libc::ECANCELED,
                )),
                Err(e) => Err(e),
            });
        })?;
        Ok(result)
    }

    /// Runs the future `f` makes on a pool thread inside this namespace, like
    /// [`NsHandle::within`], without waiting for it: for work that lasts (a watch). Its result
    /// arrives on the returned channel.
    pub(crate) fn spawn_within<T, F, Fut>(
        &self,
        f: F,
    ) -> Result<futures::channel::oneshot::Receiver<Result<Result<T>>>>
    where
        T: Send + 'static,
        F: FnOnce(NsHandle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>>,
    {
        let ns = self.clone();
        let span = tracing::Span::current();
        self.spawn(move || worker::block_on(tracing::Instrument::instrument(f(ns), span)))
    }

    /// Runs the future `f` makes, from start to end, on a pool thread inside this namespace,
    /// driven by that thread's current-thread runtime; the caller awaits the result. Already
    /// on a pool thread in this namespace, it simply runs here.
    pub(crate) async fn within<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(NsHandle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>>,
    {
        if worker::is_in(self) {
            return f(self.clone()).await;
        }
        let (reply, result) = futures::channel::oneshot::channel();
        let ns = self.clone();
        // The caller's span (apply, ensure, …) goes with the call: the job's events belong to
        // it.
        let span = tracing::Span::current();
        // Faults armed by a test on the calling thread go with the call, and come back.
        #[cfg(feature = "fault-injection")]
        let armed = crate::fault::take();
        let job = move || {
            #[cfg(feature = "fault-injection")]
            crate::fault::arm(armed);
            let out = worker::block_on(tracing::Instrument::instrument(f(ns), span));
            #[cfg(feature = "fault-injection")]
            let out = (out, crate::fault::take());
            out
        };
        self.submit(job, move |r| {
            let _ = reply.send(r);
        })?;
        let out = self.settle(result.await.ok())?;
        #[cfg(feature = "fault-injection")]
        let out = {
            crate::fault::arm(out.1);
            out.0
        };
        out
    }

    /// Queues `f` for a pool thread, which enters this namespace, runs it and hands the
    /// outcome (or the failure to enter) to `reply`.
    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
        reply: impl FnOnce(Result<std::thread::Result<T>>) + Send + 'static,
    ) -> Result<()> {
        let ns = self.clone();
        pool::submit(Box::new(move || {
            let outcome = worker::enter(&ns).map(|()| catch_unwind(AssertUnwindSafe(f)));
            worker::leave();
            reply(outcome);
        }))
    }

    /// The value of a job that ran on a pool thread; its panic is resumed here.
    fn settle<T>(&self, outcome: Option<Result<std::thread::Result<T>>>) -> Result<T> {
        match outcome {
            Some(Ok(Ok(v))) => Ok(v),
            Some(Ok(Err(panic))) => resume_unwind(panic),
            Some(Err(e)) => Err(e),
            None => Err(Error::kernel(
                format!("run in namespace {}", self.label),
                libc::ESRCH,
            )),
        }
    }

    /// Whether the calling thread is in this namespace already.
    fn is_current(&self) -> bool {
        let mine = nix::sys::stat::stat("/proc/thread-self/ns/net");
        matches!((mine, self.id), (Ok(a), Some(b)) if a.st_ino == b.ino && a.st_dev == b.dev)
    }

    /// Opens a route netlink connection inside this namespace, driven by the current tokio
    /// runtime.
    pub(crate) fn route_connection(&self) -> Result<rtnetlink::Handle> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime {
            operation: format!("open a route netlink socket in {}", self.label),
        })?;
        let label = self.label.clone();
        self.run(move || {
            let _enter = rt.enter();
            let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| {
                Error::kernel(
                    format!("open route netlink socket in {label}"),
                    e.raw_os_error().unwrap_or(0),
                )
            })?;
            rt.spawn(conn);
            Ok(handle)
        })?
    }
}

impl fmt::Display for NsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

/// What a pool thread knows about itself: where it is, where it came from, its runtime.
mod worker {
    use super::*;

    thread_local! {
        static POOL_THREAD: Cell<bool> = const { Cell::new(false) };
        /// The namespace the thread is in for its current job; `None`: its home.
        static HERE: RefCell<Option<NsHandle>> = const { RefCell::new(None) };
        /// The process's namespace (the main thread's), where the thread waits between jobs.
        static HOME: OnceCell<Option<NsHandle>> = const { OnceCell::new() };
        static RUNTIME: OnceCell<tokio::runtime::Runtime> = const { OnceCell::new() };
    }

    pub(super) fn on_pool_thread() -> bool {
        POOL_THREAD.with(Cell::get)
    }

    /// Called once by each pool thread when it starts.
    pub(super) fn init() {
        POOL_THREAD.with(|p| p.set(true));
        HOME.with(|h| {
            h.get_or_init(|| NsHandle::open(&Netns::Path("/proc/self/ns/net".into()), "home").ok());
        });
    }

    /// Whether the calling thread is a pool thread inside `ns` for its current job.
    pub(super) fn is_in(ns: &NsHandle) -> bool {
        on_pool_thread() && HERE.with(|h| h.borrow().as_ref().is_some_and(|h| h.same_as(ns)))
    }

    fn switch(to: &NsHandle) -> Result<()> {
        setns(to.fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| match e {
            nix::errno::Errno::EPERM => Error::PermissionDenied {
                operation: format!("enter network namespace {}", to.label),
                capability: "CAP_SYS_ADMIN",
            },
            e => Error::kernel(format!("setns into {}", to.label), e as i32),
        })
    }

    /// Enters `ns` for a job.
    pub(super) fn enter(ns: &NsHandle) -> Result<()> {
        switch(ns)?;
        HERE.with(|h| *h.borrow_mut() = Some(ns.clone()));
        Ok(())
    }

    /// Back home after a job, so that an idle thread keeps no namespace alive.
    pub(super) fn leave() {
        if HERE.with(|h| h.borrow_mut().take()).is_none() {
            return;
        }
        HOME.with(|home| match home.get().and_then(Option::as_ref) {
            Some(home) => {
                // Unreachable in practice (the process's own namespace); never silent.
                if let Err(e) = switch(home) {
                    panic!("egress: cannot switch a pool thread back home: {e}");
                }
            }
            None => panic!("egress: a pool thread has no home namespace to go back to"),
        });
    }

    /// Runs `f` inside `ns` on this pool thread: switches there and back.
    pub(super) fn visit<T>(ns: &NsHandle, f: impl FnOnce() -> T) -> Result<T> {
        let back = HERE.with(|h| h.borrow().clone());
        if back.as_ref().is_some_and(|b| b.same_as(ns)) {
            return Ok(f());
        }
        switch(ns)?;
        let result = catch_unwind(AssertUnwindSafe(f));
        let home = HOME.with(|h| h.get().cloned().flatten());
        match back.as_ref().or(home.as_ref()).map(switch) {
            Some(Ok(())) => {}
            Some(Err(e)) => panic!("egress: cannot switch a pool thread back: {e}"),
            None => panic!("egress: a pool thread has no namespace to go back to"),
        }
        match result {
            Ok(v) => Ok(v),
            Err(panic) => resume_unwind(panic),
        }
    }

    /// Drives `fut` to completion on this thread's runtime, then lets the tasks it leaves
    /// behind (netlink connections whose handles were dropped) finish, closing their sockets.
    pub(super) fn block_on<T>(fut: impl Future<Output = Result<T>>) -> Result<T> {
        RUNTIME.with(|cell| {
            let rt = crate::blocking::runtime_in(cell)?;
            let out = rt.block_on(fut);
            rt.block_on(async {
                for _ in 0..2 {
                    tokio::task::yield_now().await;
                }
            });
            out
        })
    }
}

/// The pool of namespace threads: a job goes to an idle thread, or to a new one.
pub(crate) mod pool {
    use std::{
        sync::{
            atomic::{AtomicU64, Ordering},
            Mutex,
        },
        thread,
        time::Duration,
    };

    use super::*;

    /// How long a thread waits for a job before it ends.
    pub(crate) const IDLE: Duration = Duration::from_secs(2);

    pub(super) type Job = Box<dyn FnOnce() + Send>;

    struct Idle {
        id: u64,
        jobs: mpsc::Sender<Job>,
    }

    static IDLE_THREADS: Mutex<Vec<Idle>> = Mutex::new(Vec::new());
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);

    fn idle() -> std::sync::MutexGuard<'static, Vec<Idle>> {
        IDLE_THREADS.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn submit(mut job: Job) -> Result<()> {
        loop {
            let Some(thread) = idle().pop() else {
                return start(job);
            };
            match thread.jobs.send(job) {
                Ok(()) => return Ok(()),
                // It ended meanwhile; try the next one.
                Err(mpsc::SendError(j)) => job = j,
            }
        }
    }

    fn start(first: Job) -> Result<()> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (jobs, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("egress-netns".into())
            .spawn(move || {
                worker::init();
                let mut job = Some(first);
                loop {
                    if let Some(j) = job.take() {
                        j();
                        idle().push(Idle {
                            id,
                            jobs: jobs.clone(),
                        });
                    }
                    match rx.recv_timeout(IDLE) {
                        Ok(j) => job = Some(j),
                        Err(_) => {
                            let mut idle = idle();
                            match idle.iter().position(|t| t.id == id) {
                                Some(i) => {
                                    idle.swap_remove(i);
                                    return;
                                }
                                // Taken by a submitter: its job is on the way.
                                None => continue,
                            }
                        }
                    }
                }
            })
            .map(drop)
            .map_err(|e| Error::kernel("spawn namespace thread", e.raw_os_error().unwrap_or(0)))
    }
}
