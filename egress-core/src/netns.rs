//! Network namespaces: open one by path, name or pid, and run work inside it.
//!
//! A netlink socket belongs to the namespace of the thread that created it, and a write to
//! `/proc/sys/net/...` applies to the namespace of the writing thread. So every socket is opened,
//! and every sysctl read or written, on a dedicated OS thread that has `setns`-ed into the
//! namespace (one per open handle, started on first use, ended when the handle is dropped);
//! sockets are then used from anywhere. No thread of an async runtime ever switches.

use std::{
    fmt,
    fs::File,
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
    panic::{catch_unwind, resume_unwind, AssertUnwindSafe},
    path::PathBuf,
    sync::{mpsc, Mutex},
    thread,
};

use nix::sched::{setns, CloneFlags};

use crate::{
    error::{Error, Result},
    spec::Netns,
};

/// An open network namespace: holding the fd keeps it alive even if its name is removed.
#[derive(Debug)]
pub(crate) struct NsHandle {
    fd: OwnedFd,
    label: String,
    /// The worker thread inside the namespace, started on first use.
    worker: Mutex<Option<mpsc::Sender<Job>>>,
}

type Job = Box<dyn FnOnce() + Send>;

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
        Ok(NsHandle {
            fd: file.into(),
            label: ns.to_string(),
            worker: Mutex::new(None),
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
        let a = nix::sys::stat::fstat(self.fd.as_fd());
        let b = nix::sys::stat::fstat(other.fd.as_fd());
        matches!((a, b), (Ok(a), Ok(b)) if a.st_ino == b.st_ino && a.st_dev == b.st_dev)
    }

    /// Runs `f` on this namespace's worker thread (started on first use, inside the namespace)
    /// and returns its result; a panic in `f` is propagated to the caller.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        if self.is_current() {
            // Already there (the OpenShift drop-in runs inside the pod): no thread needed.
            return Ok(f());
        }
        let (reply, result) = mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = reply.send(catch_unwind(AssertUnwindSafe(f)));
        });
        self.worker()?
            .send(job)
            .map_err(|_| Error::kernel(format!("run in namespace {}", self.label), libc::ESRCH))?;
        match result.recv() {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(panic)) => resume_unwind(panic),
            Err(_) => Err(Error::kernel(
                format!("run in namespace {}", self.label),
                libc::ESRCH,
            )),
        }
    }

    /// Runs `f` on this namespace's worker thread without waiting: the result arrives on the
    /// returned channel (cancelled if `f` panics). Lets a slow kernel call run beside others.
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<futures::channel::oneshot::Receiver<T>> {
        let (reply, result) = futures::channel::oneshot::channel();
        let job: Job = Box::new(move || {
            if let Ok(v) = catch_unwind(AssertUnwindSafe(f)) {
                let _ = reply.send(v);
            }
        });
        self.worker()?
            .send(job)
            .map_err(|_| Error::kernel(format!("run in namespace {}", self.label), libc::ESRCH))?;
        Ok(result)
    }

    /// Whether the calling thread is in this namespace already.
    fn is_current(&self) -> bool {
        let mine = nix::sys::stat::stat("/proc/thread-self/ns/net");
        let this = nix::sys::stat::fstat(self.fd.as_fd());
        matches!((mine, this), (Ok(a), Ok(b)) if a.st_ino == b.st_ino && a.st_dev == b.st_dev)
    }

    fn worker(&self) -> Result<mpsc::Sender<Job>> {
        let mut slot = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = &*slot {
            return Ok(tx.clone());
        }
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| Error::kernel("dup namespace fd", e.raw_os_error().unwrap_or(0)))?;
        let label = self.label.clone();
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::sync_channel(1);
        thread::Builder::new()
            .name("egress-netns".into())
            .spawn(move || {
                let _guard = match NsGuard::enter(fd.as_fd(), &label) {
                    Ok(g) => {
                        let _ = ready_tx.send(Ok(()));
                        g
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                drop(fd);
                // Ends when the handle (every sender) is dropped.
                while let Ok(job) = rx.recv() {
                    job();
                }
            })
            .map_err(|e| Error::kernel("spawn namespace thread", e.raw_os_error().unwrap_or(0)))?;
        ready
            .recv()
            .unwrap_or_else(|_| Err(Error::kernel("spawn namespace thread", libc::ESRCH)))?;
        *slot = Some(tx.clone());
        Ok(tx)
    }

    /// Opens a route netlink connection inside this namespace, driven by the current tokio
    /// runtime.
    pub(crate) fn route_connection(&self) -> Result<rtnetlink::Handle> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| Error::Kernel {
            operation: "open netlink socket (no tokio runtime: use egress_core::blocking)".into(),
            errno: libc::EINVAL,
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

/// Switches the current thread into a namespace; `Drop` switches it back.
struct NsGuard {
    original: File,
}

impl NsGuard {
    fn enter(fd: std::os::fd::BorrowedFd<'_>, label: &str) -> Result<Self> {
        let original = File::open("/proc/thread-self/ns/net")
            .map_err(|e| Error::kernel("open own namespace", e.raw_os_error().unwrap_or(0)))?;
        setns(fd, CloneFlags::CLONE_NEWNET).map_err(|e| match e {
            nix::errno::Errno::EPERM => Error::PermissionDenied {
                operation: format!("enter network namespace {label}"),
                capability: "CAP_SYS_ADMIN",
            },
            e => Error::kernel(format!("setns into {label}"), e as i32),
        })?;
        Ok(NsGuard { original })
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        // Failing to switch back would leave this thread in the wrong namespace; the thread ends
        // right after, so this is belt and braces, but never let it pass silently.
        if let Err(e) = setns(self.original.as_fd(), CloneFlags::CLONE_NEWNET) {
            panic!("egress: cannot switch thread back to its namespace: {e}");
        }
    }
}
