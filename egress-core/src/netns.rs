//! Network namespaces: open one by path, name or pid, and run work inside it.
//!
//! A netlink socket belongs to the namespace of the thread that created it, and a write to
//! `/proc/sys/net/...` applies to the namespace of the writing thread. So every socket is opened,
//! and every sysctl read or written, on a short-lived OS thread that has `setns`-ed into the
//! namespace; sockets are then used from anywhere. No thread of an async runtime ever switches.

use std::{
    fmt,
    fs::File,
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
    path::PathBuf,
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
        Ok(NsHandle {
            fd: file.into(),
            label: ns.to_string(),
        })
    }

    /// Duplicates the handle (a second fd on the same namespace).
    pub(crate) fn try_clone(&self) -> Result<Self> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| Error::kernel("dup namespace fd", e.raw_os_error().unwrap_or(0)))?;
        Ok(NsHandle {
            fd,
            label: self.label.clone(),
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

    /// Runs `f` on a fresh OS thread that has entered this namespace, and returns its result.
    ///
    /// The thread restores its original namespace through a guard before it ends (even if `f`
    /// panics), and a panic in `f` is propagated to the caller.
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                let _guard = NsGuard::enter(self)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Opens a route netlink connection inside this namespace, driven by the current tokio
    /// runtime.
    pub(crate) fn route_connection(&self) -> Result<rtnetlink::Handle> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| Error::Kernel {
            operation: "open netlink socket (no tokio runtime: use egress_core::blocking)".into(),
            errno: libc::EINVAL,
        })?;
        self.run(|| {
            let _enter = rt.enter();
            let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| {
                Error::kernel(
                    format!("open route netlink socket in {}", self.label),
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
    fn enter(ns: &NsHandle) -> Result<Self> {
        let original = File::open("/proc/thread-self/ns/net")
            .map_err(|e| Error::kernel("open own namespace", e.raw_os_error().unwrap_or(0)))?;
        setns(ns.fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| match e {
            nix::errno::Errno::EPERM => Error::PermissionDenied {
                operation: format!("enter network namespace {}", ns.label),
                capability: "CAP_SYS_ADMIN",
            },
            e => Error::kernel(format!("setns into {}", ns.label), e as i32),
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
