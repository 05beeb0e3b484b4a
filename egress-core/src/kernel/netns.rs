//! Network namespaces: open one by path, name or pid, run work inside it, and connect to it
//! ([`Conn`]: its route netlink and nftables sockets); the capability check every call makes
//! first ([`require_net_admin`]).
//!
//! A netlink socket belongs to the namespace of the thread that created it, and a write to
//! `/proc/sys/net/...` applies to the namespace of the writing thread. So every socket is opened,
//! and every sysctl read or written, on a dedicated OS thread that has `setns`-ed into the
//! namespace; sockets are then used from anywhere. No caller's thread and no thread of an async
//! runtime ever switches.
//!
//! The dedicated threads are a bounded pool (see [`pool`]): a job enters its namespace, runs,
//! and the thread goes back to its home namespace (so that no router namespace is kept alive by
//! an idle thread) and takes the next job; a thread idle for [`pool::IDLE`] ends. A whole
//! operation runs as one job ([`NsHandle::within`]) on the thread's own current-thread tokio
//! runtime — the only tokio runtimes the crate has: its netlink connections, sysctl writes and
//! packet sockets then need no thread hand-off at all, and a socket in another namespace (the
//! macvlan's parent) is opened by switching that thread there and back. The caller waits for
//! the job's result on a channel: the async API awaits it on any executor, the blocking API
//! parks its thread.
//!
//! Fork: a child process has only the thread that called `fork`, and a copy of everything else
//! — the pool's queues (with threads that do not exist in it, and a lock another thread may have
//! held), the crate's other process-wide state. Each such static is a [`PerProcess`]: made again,
//! empty, the first time a process with another pid uses it. A child's first call so works
//! whatever the parent was doing when it forked.

use std::{
    cell::{Cell, OnceCell, RefCell},
    fmt,
    fs::File,
    future::Future,
    marker::PhantomData,
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
    panic::{catch_unwind, resume_unwind, AssertUnwindSafe},
    path::PathBuf,
    ptr,
    sync::{
        atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering},
        mpsc, Arc,
    },
};

use nix::sched::{setns, CloneFlags};

use crate::{
    error::{Error, Result},
    kernel::nft::NftSocket,
    spec::Netns,
};

/// The most threads that run calls' jobs at once, each inside the namespace of its call; more
/// calls at the same time wait for one of them, in the order they came. A teardown spends most
/// of its time waiting in the kernel (for the grace periods that deleting a link needs), so
/// many run side by side usefully.
pub const MAX_CALL_THREADS: usize = 128;

/// The most threads that run, at once, the work calls start beside them (a router's table
/// deleted beside a teardown's other undos, a promotion's spaced announcements). A watch is a
/// thread of its own, outside both bounds, for as long as it runs.
pub const MAX_NESTED_THREADS: usize = 32;

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
    /// nftables (a blocking socket: borrowed for one call at a time, never across an await).
    nft: std::cell::RefCell<NftSocket>,
    /// Undos run through this connection, for fault injection.
    #[cfg(feature = "fault-injection")]
    pub undos_run: Cell<usize>,
}

impl Conn {
    /// Opens both sockets inside `ns`.
    pub(crate) fn open(ns: NsHandle) -> Result<Self> {
        let rt = ns.route_connection()?;
        let nft = ns.run(NftSocket::open)??;
        Ok(Conn {
            ns,
            rt,
            nft: std::cell::RefCell::new(nft),
            #[cfg(feature = "fault-injection")]
            undos_run: Cell::new(0),
        })
    }

    /// The nftables socket, for one call.
    pub(crate) fn nft(&self) -> std::cell::RefMut<'_, NftSocket> {
        self.nft.borrow_mut()
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
    /// On a pool thread (inside a job) the thread switches here and back in place; on a thread
    /// that is in this namespace already (the OpenShift drop-in runs inside the pod) `f` just
    /// runs; otherwise `f` runs on a pool thread and the caller waits.
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
        self.submit(Length::Call, f, move |r| {
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
        self.spawn_for(Length::Call, f)
    }

    fn spawn_for<T: Send + 'static>(
        &self,
        length: Length,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<futures::channel::oneshot::Receiver<Result<T>>> {
        let (reply, result) = futures::channel::oneshot::channel();
        let label = self.label.clone();
        self.submit(length, f, move |r| {
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
    /// [`NsHandle::within`], without waiting for it: for work that outlives the call that
    /// starts it, and lasts as `length` says (a promotion's spaced announcements end by
    /// themselves; a watch lasts until it is told to stop, on a thread of its own). Its result
    /// arrives on the returned channel.
    pub(crate) fn spawn_within<T, F, Fut>(
        &self,
        length: Length,
        f: F,
    ) -> Result<futures::channel::oneshot::Receiver<Result<Result<T>>>>
    where
        T: Send + 'static,
        F: FnOnce(NsHandle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>>,
    {
        let ns = self.clone();
        let span = tracing::Span::current();
        self.spawn_for(length, move || {
            worker::block_on(tracing::Instrument::instrument(f(ns), span))
        })
    }

    /// Runs the future `f` makes, from start to end, on a pool thread inside this namespace,
    /// driven by that thread's current-thread runtime; the caller awaits the result, on any
    /// executor (or none: [`crate::blocking`] parks the thread).
    pub(crate) async fn within<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(NsHandle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>>,
    {
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
        self.submit(Length::Call, job, move |r| {
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

    /// Queues `f` for a pool thread, which enters this namespace, runs it, goes home and hands
    /// the outcome (or the failure to enter) to `reply`.
    fn submit<T: Send + 'static>(
        &self,
        length: Length,
        f: impl FnOnce() -> T + Send + 'static,
        reply: impl FnOnce(Result<std::thread::Result<T>>) + Send + 'static,
    ) -> Result<()> {
        let ns = self.clone();
        pool::submit(
            length,
            Box::new(move || {
                let outcome = worker::enter(&ns).map(|()| catch_unwind(AssertUnwindSafe(f)));
                worker::leave();
                reply(outcome);
            }),
        )
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

    /// Opens a route netlink connection inside this namespace, driven by the runtime of the
    /// job that asks (every caller runs inside a job of this module's pool).
    pub(crate) fn route_connection(&self) -> Result<rtnetlink::Handle> {
        let rt = tokio::runtime::Handle::try_current()
            .expect("egress: a route netlink connection is opened inside a namespace job");
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

/// Which process this is: its id, and how many times it (or an ancestor, since the crate was
/// first used) returned from `fork` as the child — which tells a child from an ancestor whose
/// pid it reused. The count is kept by a `pthread_atfork` handler, registered on first use
/// (without a lock: a lock held at fork would stay held in the child).
pub(crate) fn this_process() -> (u32, u64) {
    static FORKS: AtomicU64 = AtomicU64::new(0);
    static COUNTING: AtomicBool = AtomicBool::new(false);
    extern "C" fn forked() {
        FORKS.fetch_add(1, Ordering::Relaxed);
    }
    if !COUNTING.swap(true, Ordering::AcqRel) {
        // SAFETY: registers a handler that only increments an atomic, which a child may do.
        unsafe { libc::pthread_atfork(None, None, Some(forked)) };
    }
    (std::process::id(), FORKS.load(Ordering::Acquire))
}

/// A process-wide value that a forked child does not inherit: made (from `T::default()` or
/// the closure given) the first time a process uses it, and again the first time a child of
/// `fork` does — the child's copy of the parent's (its locks perhaps held by threads the child
/// does not have) is left untouched, and never dropped.
///
/// Lock-free: it is found by an atomic load and [`this_process`].
pub(crate) struct PerProcess<T> {
    current: AtomicPtr<Owned<T>>,
    /// It owns a `T` (for `Send` and `Sync`, which `AtomicPtr` alone would grant any `T`).
    _owns: PhantomData<Box<T>>,
}

struct Owned<T> {
    process: (u32, u64),
    value: T,
}

impl<T> PerProcess<T> {
    pub(crate) const fn new() -> Self {
        PerProcess {
            current: AtomicPtr::new(ptr::null_mut()),
            _owns: PhantomData,
        }
    }

    /// This process's value, made by `init` if this process has none yet.
    pub(crate) fn get_or(&self, init: impl FnOnce() -> T) -> &T {
        let process = this_process();
        let seen = self.current.load(Ordering::Acquire);
        // SAFETY: a non-null pointer was made by `Box::into_raw` below and is never freed while
        // it is installed (only `Drop`, with `&mut self`, frees it).
        if let Some(owned) = unsafe { seen.as_ref() } {
            if owned.process == process {
                return &owned.value;
            }
        }
        let mine = Box::into_raw(Box::new(Owned {
            process,
            value: init(),
        }));
        match self
            .current
            .compare_exchange(seen, mine, Ordering::AcqRel, Ordering::Acquire)
        {
            // What `seen` pointed to (nothing, or the parent's copy) is left as it is.
            // SAFETY: installed just now, from `Box::into_raw`.
            Ok(_) => unsafe { &(*mine).value },
            Err(other) => {
                // Another thread of this process installed its value first: use that one.
                // SAFETY: `mine` was never shared; `other` was installed by this process and
                // is never freed while installed.
                drop(unsafe { Box::from_raw(mine) });
                unsafe { &(*other).value }
            }
        }
    }

    /// This process's value, made with `T::default()` if it has none yet.
    pub(crate) fn get(&self) -> &T
    where
        T: Default,
    {
        self.get_or(T::default)
    }
}

impl<T> Drop for PerProcess<T> {
    fn drop(&mut self) {
        let p = *self.current.get_mut();
        // SAFETY: made by `Box::into_raw`; `&mut self` means no reference to it is left. One
        // made by another process (a parent of this one) is not ours to drop.
        if let Some(owned) = unsafe { p.as_ref() } {
            if owned.process == this_process() {
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

impl<T> fmt::Debug for PerProcess<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PerProcess")
    }
}

/// What a pool thread knows about itself: its depth, where it is, its home, its runtime.
mod worker {
    use super::*;

    thread_local! {
        /// The process the thread belongs to ([`this_process`]) and how deep it is: 1 for a
        /// job of a caller outside the pool, one more for each job a job waits for. A thread of
        /// a parent process (the one that called `fork`, in its child) is no pool thread.
        static DEPTH: Cell<((u32, u64), u8)> = const { Cell::new(((0, 0), 0)) };
        /// The namespace the thread is in for its current job; `None`: its home.
        static HERE: RefCell<Option<NsHandle>> = const { RefCell::new(None) };
        /// The namespace the thread waits in between jobs ([`pool::home`]).
        static HOME: RefCell<Option<NsHandle>> = const { RefCell::new(None) };
        /// Set when the thread could not go home: it ends after its job.
        static STRANDED: Cell<bool> = const { Cell::new(false) };
        static RUNTIME: OnceCell<tokio::runtime::Runtime> = const { OnceCell::new() };
    }

    /// The depth of the calling thread in this process's pool; 0 outside it.
    pub(super) fn depth() -> u8 {
        let (process, depth) = DEPTH.with(Cell::get);
        match depth > 0 && process == this_process() {
            true => depth,
            false => 0,
        }
    }

    pub(super) fn on_pool_thread() -> bool {
        depth() > 0
    }

    /// Called once by each pool thread when it starts.
    pub(super) fn init(depth: u8, home: Option<NsHandle>) {
        DEPTH.with(|d| d.set((this_process(), depth)));
        STRANDED.with(|s| s.set(home.is_none()));
        HOME.with(|h| *h.borrow_mut() = home);
    }

    /// Whether the thread must end rather than take another job: it is not home.
    pub(super) fn stranded() -> bool {
        STRANDED.with(Cell::get)
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

    /// Back home after a job, so that an idle thread keeps no router namespace alive. A thread
    /// that cannot (its home cannot be entered) is stranded: it ends after this job.
    pub(super) fn leave() {
        if HERE.with(|h| h.borrow_mut().take()).is_none() {
            return;
        }
        let back = HOME.with(|home| home.borrow().as_ref().map(switch));
        if !matches!(back, Some(Ok(()))) {
            tracing::warn!("a namespace thread cannot go back home: it ends");
            STRANDED.with(|s| s.set(true));
        }
    }

    /// Runs `f` inside `ns` on this pool thread: switches there and back.
    pub(super) fn visit<T>(ns: &NsHandle, f: impl FnOnce() -> T) -> Result<T> {
        let back = HERE.with(|h| h.borrow().clone());
        if back.as_ref().is_some_and(|b| b.same_as(ns)) {
            return Ok(f());
        }
        switch(ns)?;
        let result = catch_unwind(AssertUnwindSafe(f));
        let home = HOME.with(|h| h.borrow().clone());
        match back.as_ref().or(home.as_ref()).map(switch) {
            Some(Ok(())) => {}
            // Never run on in the visited namespace: what follows (the job's other sockets
            // and sysctl writes) would act there.
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
            let rt = runtime_in(cell)?;
            let out = rt.block_on(fut);
            rt.block_on(async {
                for _ in 0..2 {
                    tokio::task::yield_now().await;
                }
            });
            out
        })
    }

    /// The current-thread runtime kept in `cell` (this thread's own), made on first use.
    fn runtime_in(cell: &OnceCell<tokio::runtime::Runtime>) -> Result<&tokio::runtime::Runtime> {
        if let Some(rt) = cell.get() {
            return Ok(rt);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| {
                Error::kernel("start the netlink runtime", e.raw_os_error().unwrap_or(0))
            })?;
        Ok(cell.get_or_init(|| rt))
    }
}

/// How long a job lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Length {
    /// It ends by itself: a call, or work a call starts.
    Call,
    /// Until it is told to stop (a watch): a thread of its own, outside the pool's bounds, so
    /// that no number of watches keeps calls waiting.
    Lasting,
}

/// The pool of namespace threads, bounded: a burst of calls queues, it does not start a thread
/// per call.
///
/// Jobs come in lanes by depth, so that no job ever waits for a place that a job waiting for it
/// holds: a call's job (submitted from outside the pool) runs in the *call* lane, at most
/// [`MAX_CALL_THREADS`] at a time; a job that a call's job (or a watch) starts (a table deleted
/// beside a teardown's other undos, a promotion's spaced announcements) in the *nested* lane,
/// at most [`MAX_NESTED_THREADS`] at a time; a job
/// started by a nested job (only a program that calls the library again from inside one, such
/// as a logging handler that runs for one of its events) and a watch, which lasts, each on a
/// thread of its own. Within a lane, jobs start in the order they came.
pub(crate) mod pool {
    use std::{
        collections::VecDeque,
        sync::{Condvar, Mutex, MutexGuard},
        thread,
        time::Duration,
    };

    use super::*;

    /// How long a thread waits for a job before it ends.
    pub(crate) const IDLE: Duration = Duration::from_secs(2);

    pub(super) type Job = Box<dyn FnOnce() + Send>;

    struct Queue {
        jobs: VecDeque<Job>,
        /// Threads of the lane, busy or idle.
        threads: usize,
        /// Threads waiting for a job.
        idle: usize,
    }

    struct Lane {
        queue: Mutex<Queue>,
        ready: Condvar,
        max: usize,
        /// The depth of its threads.
        depth: u8,
    }

    impl Lane {
        fn new(max: usize, depth: u8) -> Lane {
            Lane {
                queue: Mutex::new(Queue {
                    jobs: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                }),
                ready: Condvar::new(),
                max,
                depth,
            }
        }

        fn lock(&self) -> MutexGuard<'_, Queue> {
            self.queue.lock().unwrap_or_else(|p| p.into_inner())
        }
    }

    struct Pool {
        calls: Lane,
        nested: Lane,
    }

    static POOL: PerProcess<Pool> = PerProcess::new();
    static HOME: PerProcess<Option<NsHandle>> = PerProcess::new();

    /// Where pool threads wait between jobs: the process's namespace (its main thread's), or,
    /// once the main thread has exited (`pthread_exit` in a C program's `main`: its
    /// `/proc/self/ns/net` is gone), the namespace of the thread that first needs a pool
    /// thread. Opened once per process; `None` when neither can be opened: pool threads then
    /// end after each job instead of going home.
    pub(super) fn home() -> Option<NsHandle> {
        HOME.get_or(|| {
            NsHandle::open(&Netns::Path("/proc/self/ns/net".into()), "home")
                .or_else(|_| NsHandle::open(&Netns::Current, "home"))
                .ok()
        })
        .clone()
    }

    fn pool() -> &'static Pool {
        POOL.get_or(|| Pool {
            calls: Lane::new(MAX_CALL_THREADS, 1),
            nested: Lane::new(MAX_NESTED_THREADS, 2),
        })
    }

    pub(super) fn submit(length: Length, job: Job) -> Result<()> {
        let depth = worker::depth();
        match (length, depth) {
            (Length::Lasting, _) => own_thread(job, depth.max(1)),
            (Length::Call, 0) => queue(&pool().calls, job),
            (Length::Call, 1) => queue(&pool().nested, job),
            (Length::Call, d) => own_thread(job, d.saturating_add(1)),
        }
    }

    /// Queues `job` in `lane`; starts a thread for it when none is idle and the lane has room.
    fn queue(lane: &'static Lane, job: Job) -> Result<()> {
        let mut q = lane.lock();
        q.jobs.push_back(job);
        if q.idle > 0 {
            lane.ready.notify_one();
        }
        if q.jobs.len() <= q.idle || q.threads >= lane.max {
            return Ok(());
        }
        match start(lane, &mut q) {
            Ok(()) => Ok(()),
            // A thread of the lane will take it.
            Err(_) if q.threads > 0 => Ok(()),
            Err(e) => {
                q.jobs.pop_back();
                Err(e)
            }
        }
    }

    /// Starts a thread of `lane` (whose queue `q` is, locked).
    fn start(lane: &'static Lane, q: &mut Queue) -> Result<()> {
        let home = home();
        thread::Builder::new()
            .name("egress-netns".into())
            .spawn(move || {
                worker::init(lane.depth, home);
                work(lane);
            })
            .map_err(spawn_error)?;
        q.threads += 1;
        Ok(())
    }

    /// A lane thread: takes jobs in order until none came for [`IDLE`], or it is stranded.
    fn work(lane: &'static Lane) {
        let mut q = lane.lock();
        loop {
            if let Some(job) = q.jobs.pop_front() {
                drop(q);
                job();
                q = lane.lock();
                if worker::stranded() {
                    break;
                }
                continue;
            }
            q.idle += 1;
            let (guard, wait) = lane
                .ready
                .wait_timeout(q, IDLE)
                .unwrap_or_else(|p| p.into_inner());
            q = guard;
            q.idle -= 1;
            if wait.timed_out() && q.jobs.is_empty() {
                break;
            }
        }
        q.threads -= 1;
        // A stranded thread leaves jobs behind that no idle thread will take: another thread
        // takes its place (with the same home; it may end after its job too).
        if !q.jobs.is_empty() && q.idle == 0 {
            let _ = start(lane, &mut q);
        }
    }

    /// A thread for `job` alone.
    fn own_thread(job: Job, depth: u8) -> Result<()> {
        let home = home();
        thread::Builder::new()
            .name("egress-netns".into())
            .spawn(move || {
                worker::init(depth, home);
                job();
            })
            .map(drop)
            .map_err(spawn_error)
    }

    fn spawn_error(e: std::io::Error) -> Error {
        Error::kernel(
            "start a namespace thread",
            e.raw_os_error().unwrap_or(libc::EAGAIN),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{mpsc, Mutex},
        thread,
        time::{Duration, Instant},
    };

    use super::*;

    /// Forks; the child runs `child` and exits with its code (or is killed by `SIGALRM` after
    /// 10 s: a hang fails the test). Returns the child's wait status.
    fn in_child(child: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child calls only what the values under test need, and leaves with
        // `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: alarm(2) and _exit(2) are async-signal-safe.
            unsafe { libc::alarm(10) };
            let code = catch_unwind(AssertUnwindSafe(child)).unwrap_or(101);
            unsafe { libc::_exit(code) }
        }
        let started = Instant::now();
        let mut status = 0;
        loop {
            // SAFETY: waitpid(2) on our own child, into a local.
            match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
                0 if started.elapsed() < Duration::from_secs(15) => {
                    thread::sleep(Duration::from_millis(5))
                }
                0 => panic!("the child hung"),
                _ => return status,
            }
        }
    }

    /// What another thread holds when the process forks (a lock of the pool, the RTNL gate)
    /// stays held in the child's copy forever: a child gets values of its own instead, and the
    /// parent keeps its own.
    #[test]
    fn a_child_of_fork_gets_values_of_its_own() {
        static COUNTER: PerProcess<Mutex<u32>> = PerProcess::new();
        *COUNTER.get().lock().unwrap() = 7;
        let (locked, release) = (mpsc::channel(), mpsc::channel::<()>());
        let holder = thread::spawn(move || {
            let _held = COUNTER.get().lock().unwrap();
            let _gate = crate::kernel::procfs::RTNL_GATE.get().try_write().unwrap();
            locked.0.send(()).unwrap();
            release.1.recv().unwrap();
        });
        locked.1.recv().unwrap();
        let status = in_child(|| {
            let fresh = matches!(COUNTER.get().try_lock().as_deref(), Ok(0));
            let gate = crate::kernel::procfs::RTNL_GATE.get().try_write().is_ok();
            match (fresh, gate) {
                (true, true) => 0,
                _ => 1,
            }
        });
        release.0.send(()).unwrap();
        holder.join().unwrap();
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
        assert_eq!(*COUNTER.get().lock().unwrap(), 7);
    }
}
