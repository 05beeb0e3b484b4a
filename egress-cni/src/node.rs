//! What the node's admin decides, not a network configuration: the directory where
//! `log_file` may be written. A NetworkAttachmentDefinition is a namespaced object (a
//! namespace's admin writes it) while the plugin runs as the node's root, so the file it names
//! is opened only in that directory, relative to the directory's descriptor, never through a
//! link.

use std::{
    ffi::OsStr,
    fs::File,
    io::{self, Read},
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Component, Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::{open, openat, OFlag},
    sys::stat::Mode,
    unistd::geteuid,
};
use serde::{Deserialize, Serialize};

use crate::{code, CniError};

/// The node configuration's file name, in the directory of the `egress-cni` binary (the
/// node's CNI plugin directory, as `/proc/self/exe` names it): written by
/// `egress-cni-install --log-dir DIR`, or by hand.
pub const NODE_CONFIG_FILE: &str = "egress-cni-node.json";

/// The largest node configuration read.
const MAX_NODE_CONFIG_LEN: u64 = 64 * 1024;

/// The node's configuration of the plugin: `{"logDirectory": "/var/log/egress-cni"}`. Without
/// a log directory (the default, and when the file does not exist) no network configuration
/// gets a log file.
///
/// ```
/// use egress_cni::NodeConfig;
///
/// let node = NodeConfig::from_json(br#"{"logDirectory": "/var/log/egress-cni"}"#)?;
/// assert_eq!(node.log_directory(), Some(std::path::Path::new("/var/log/egress-cni")));
/// assert_eq!(NodeConfig::from_json(node.to_json().as_bytes())?, node);
/// assert!(NodeConfig::from_json(br#"{"logDirectory": "var/log"}"#).is_err());
/// assert!(NodeConfig::from_json(br#"{"logDirectory": "/var/log/../../etc"}"#).is_err());
/// assert_eq!(NodeConfig::from_json(b"{}")?, NodeConfig::default());
/// # Ok::<(), egress_cni::CniError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_directory: Option<PathBuf>,
}

impl NodeConfig {
    /// A node configuration with `log_directory`: an absolute path without `.` or `..`
    /// components (its links are the admin's and are followed; the file in it is never a
    /// link). An error (code 7) names `logDirectory` otherwise.
    pub fn new(log_directory: Option<PathBuf>) -> Result<NodeConfig, CniError> {
        if let Some(dir) = &log_directory {
            let bytes = dir.as_os_str().as_bytes();
            let plain = bytes.starts_with(b"/")
                && bytes.split(|b| *b == b'/').all(|c| c != b"." && c != b"..");
            if !plain {
                return Err(CniError::invalid(
                    code::INVALID_CONFIG,
                    "logDirectory",
                    &dir.to_string_lossy(),
                    "an absolute path without `.` or `..` components",
                ));
            }
        }
        Ok(NodeConfig { log_directory })
    }

    /// The directory `log_file` may name a file in.
    pub fn log_directory(&self) -> Option<&Path> {
        self.log_directory.as_deref()
    }

    /// Parses the node configuration's JSON (unknown keys are errors).
    pub fn from_json(bytes: &[u8]) -> Result<NodeConfig, CniError> {
        let raw: NodeConfig = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                format!("the node configuration is not valid: {e}"),
                r#"{"logDirectory": "/var/log/egress-cni"}, or {}"#,
            )
        })?;
        NodeConfig::new(raw.log_directory)
    }

    /// The node configuration's JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a path given as a string is one")
    }

    /// Reads [`NODE_CONFIG_FILE`] in `dir` (the plugin's directory). A missing file is the
    /// default configuration: no log directory.
    pub fn read_in(dir: &Path) -> Result<NodeConfig, CniError> {
        let path = dir.join(NODE_CONFIG_FILE);
        let what = || format!("reading the node configuration {}", path.display());
        let mut bytes = Vec::new();
        match File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(NodeConfig::default()),
            Err(e) => return Err(CniError::io(what(), &e)),
            Ok(f) => f
                .take(MAX_NODE_CONFIG_LEN)
                .read_to_end(&mut bytes)
                .map_err(|e| CniError::io(what(), &e))?,
        };
        NodeConfig::from_json(&bytes).map_err(|e| CniError {
            msg: format!("{}: {}", path.display(), e.msg),
            ..e
        })
    }
}

/// Opens the log file `name` in `dir` for appending, as root may safely do where a less
/// trusted party chooses the name: `name` is one plain component, opened relative to the
/// directory's descriptor without following a link (`O_NOFOLLOW`), never blocking (a FIFO
/// without a reader fails), created with mode 0600 when missing; and the file opened must be
/// a regular file of the plugin's user with one link (a hard link to another file is
/// refused). An error is code 5 and says why.
pub fn open_log_file(dir: &Path, name: &OsStr) -> Result<File, CniError> {
    let shown = || {
        format!(
            "{} in {}",
            crate::escape_control(&name.to_string_lossy()),
            dir.display()
        )
    };
    let refuse = |why: String| {
        CniError::new(
            code::IO_FAILURE,
            format!("opening log_file {}: {why}", shown()),
            "",
        )
    };
    let one_component = Path::new(name).components().eq([Component::Normal(name)]);
    if !one_component {
        return Err(refuse("not a file name".into()));
    }
    let errno = |what: &str, e: Errno| {
        CniError::io(format_args!("{what} {}", shown()), &io::Error::from(e))
    };
    let dir_fd = open(
        dir,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| errno("opening the directory of log_file", e))?;
    let fd = openat(
        &dir_fd,
        name,
        OFlag::O_WRONLY
            | OFlag::O_APPEND
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| match e {
        Errno::ELOOP => refuse("a symbolic link: refused".into()),
        e => errno("opening log_file", e),
    })?;
    let file = File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| CniError::io(format_args!("reading log_file {}", shown()), &e))?;
    if !meta.file_type().is_file() {
        return Err(refuse("not a regular file: refused".into()));
    }
    if meta.nlink() != 1 {
        return Err(refuse(format!(
            "{} links to the file (a hard link): refused",
            meta.nlink()
        )));
    }
    if meta.uid() != geteuid().as_raw() {
        return Err(refuse(format!(
            "owned by uid {}, not by the plugin's {}: refused",
            meta.uid(),
            geteuid()
        )));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        io::Write,
        os::unix::fs::{symlink, PermissionsExt},
    };

    use nix::unistd::{chown, mkfifo};

    use super::*;

    /// A fresh directory, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("egress-cni-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn open(dir: &Path, name: &str) -> Result<File, CniError> {
        open_log_file(dir, OsStr::new(name))
    }

    #[test]
    fn a_log_file_is_created_0600_and_appended_to() {
        let tmp = TempDir::new("log-create");
        writeln!(open(&tmp.0, "egress.log").unwrap(), "one").unwrap();
        writeln!(open(&tmp.0, "egress.log").unwrap(), "two").unwrap();
        let path = tmp.0.join("egress.log");
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn links_fifos_directories_and_foreign_files_are_refused_and_nothing_is_created() {
        let tmp = TempDir::new("log-refuse");
        let outside = TempDir::new("log-outside");
        let target = outside.0.join("victim");
        // A link to a missing file: root would create it, anywhere.
        symlink(&target, tmp.0.join("dangling.log")).unwrap();
        let e = open(&tmp.0, "dangling.log").unwrap_err();
        assert_eq!(e.code, code::IO_FAILURE);
        assert!(e.msg.contains("a symbolic link: refused"), "{e}");
        assert!(!target.exists());
        // A link to an existing file: not appended to.
        fs::write(&target, "untouched").unwrap();
        symlink(&target, tmp.0.join("link.log")).unwrap();
        assert!(open(&tmp.0, "link.log").is_err());
        // A hard link to it.
        fs::hard_link(&target, tmp.0.join("hard.log")).unwrap();
        let e = open(&tmp.0, "hard.log").unwrap_err();
        assert!(
            e.msg.contains("2 links to the file (a hard link): refused"),
            "{e}"
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "untouched");
        // A FIFO without a reader does not block, a directory is not a file.
        mkfifo(&tmp.0.join("fifo.log"), Mode::from_bits_truncate(0o600)).unwrap();
        assert!(open(&tmp.0, "fifo.log").is_err());
        fs::create_dir(tmp.0.join("dir.log")).unwrap();
        assert!(open(&tmp.0, "dir.log").is_err());
        // A file someone else owns.
        fs::write(tmp.0.join("theirs.log"), "").unwrap();
        chown(&tmp.0.join("theirs.log"), Some(65534.into()), None).unwrap();
        let e = open(&tmp.0, "theirs.log").unwrap_err();
        assert!(e.msg.contains("owned by uid 65534"), "{e}");
        // Only one component, never a way out of the directory.
        for name in ["../victim", "a/b.log", ".", "..", ""] {
            let e = open(&tmp.0, name).unwrap_err();
            assert!(e.msg.contains("not a file name"), "{name}: {e}");
        }
        let mut left: Vec<_> = fs::read_dir(&tmp.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "dangling.log",
                "dir.log",
                "fifo.log",
                "hard.log",
                "link.log",
                "theirs.log"
            ]
        );
        assert_eq!(fs::read_dir(&outside.0).unwrap().count(), 1);
        // A directory that does not exist is an error too.
        assert!(open(&tmp.0.join("missing"), "egress.log").is_err());
    }

    #[test]
    fn the_node_configuration_is_read_beside_the_binary() {
        let tmp = TempDir::new("node-config");
        assert_eq!(NodeConfig::read_in(&tmp.0).unwrap(), NodeConfig::default());
        let node = NodeConfig::new(Some("/var/log/egress-cni".into())).unwrap();
        fs::write(tmp.0.join(NODE_CONFIG_FILE), node.to_json()).unwrap();
        assert_eq!(NodeConfig::read_in(&tmp.0).unwrap(), node);
        assert_eq!(node.to_json(), r#"{"logDirectory":"/var/log/egress-cni"}"#);
        assert_eq!(NodeConfig::default().to_json(), "{}");
        fs::write(tmp.0.join(NODE_CONFIG_FILE), r#"{"logDir": "/tmp"}"#).unwrap();
        let e = NodeConfig::read_in(&tmp.0).unwrap_err();
        assert!(e.msg.contains("unknown field `logDir`"), "{e}");
        for bad in ["relative", "/var/log/./x", "/var/../x"] {
            let e = NodeConfig::new(Some(bad.into())).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("logDirectory"), "{bad}");
        }
    }
}
