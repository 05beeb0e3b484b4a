//! Sysctl files opened beneath their directory: each directory (`/proc/sys/net/ipv4/conf`, …)
//! is opened once per job on the namespace thread, checked to be procfs, and every file is
//! opened relative to it with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`, never with `O_CREAT`: whatever a key holds, the
//! file opened is one that exists beneath that directory, and no file is ever created.
//!
//! A kernel without `openat2` (before 5.6), or a seccomp filter that refuses it (ENOSYS, or
//! EPERM for an older container runtime's profile), gets `openat` with `O_NOFOLLOW`: a key's
//! path is one or two names that [`SysctlKey`] checked (no `/`, not `..`), and procfs has no
//! links below these directories. (A real EPERM comes back from `openat` as well.)

use std::{
    fs::File,
    io::{Read, Write},
    os::fd::{AsFd, OwnedFd},
};

use nix::{
    errno::Errno,
    fcntl::{open, openat, openat2, OFlag, OpenHow, ResolveFlag},
    sys::{stat::Mode, statfs},
};

use super::key::{Dir, SysctlKey};

/// The directories opened so far by one job.
#[derive(Default)]
pub(crate) struct Dirs(Vec<(Dir, OwnedFd)>);

impl Dirs {
    /// Directory `dir`, opened (`O_PATH`) the first time it is asked for.
    fn get(&mut self, dir: Dir) -> Result<&OwnedFd, Errno> {
        let at = match self.0.iter().position(|(d, _)| *d == dir) {
            Some(i) => i,
            None => {
                let fd = open(
                    dir.path(),
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                if statfs::fstatfs(&fd)?.filesystem_type() != statfs::PROC_SUPER_MAGIC {
                    return Err(Errno::EXDEV);
                }
                self.0.push((dir, fd));
                self.0.len() - 1
            }
        };
        Ok(&self.0[at].1)
    }

    /// Opens `key`'s file with `flags` (`O_RDONLY` or `O_WRONLY`) beneath its directory.
    fn open(&mut self, key: &SysctlKey, flags: OFlag) -> Result<File, Errno> {
        let (dir, rel) = key.location();
        let dir = self.get(dir)?.as_fd();
        let flags = flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        let how = OpenHow::new().flags(flags).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
        #[cfg(feature = "fault-injection")]
        let opened = match crate::fault::openat2_missing() {
            true => Err(Errno::ENOSYS),
            false => openat2(dir, rel.as_str(), how),
        };
        #[cfg(not(feature = "fault-injection"))]
        let opened = openat2(dir, rel.as_str(), how);
        let fd = match opened {
            Err(Errno::ENOSYS | Errno::EPERM) => openat(dir, rel.as_str(), flags, Mode::empty())?,
            r => r?,
        };
        Ok(File::from(fd))
    }

    /// The value of `key`; `None` when the file does not exist (a link that is gone, a module
    /// not loaded) or holds no integer.
    pub(crate) fn read(&mut self, key: &SysctlKey) -> Result<Option<i64>, Errno> {
        let mut f = match self.open(key, OFlag::O_RDONLY) {
            Ok(f) => f,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut text = String::new();
        f.read_to_string(&mut text)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        Ok(text.trim().parse().ok())
    }

    /// Writes `value` to `key`'s file, which must exist.
    pub(crate) fn write(&mut self, key: &SysctlKey, value: i64) -> Result<(), Errno> {
        let mut f = self.open(key, OFlag::O_WRONLY)?;
        f.write_all(value.to_string().as_bytes())
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    }
}
