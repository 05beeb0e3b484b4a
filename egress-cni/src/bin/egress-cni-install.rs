//! `egress-cni-install`: puts the `egress-cni` plugin into a node's CNI plugin directory and
//! keeps running, the way the Multus and whereabouts DaemonSets install theirs
//! (`deploy/kubernetes/egress-cni-installer.yaml` runs it on every node).
//!
//! The plugin is copied to a temporary file in the directory, made executable, flushed to disk
//! and renamed over `DIR/egress-cni`: a runtime that runs the plugin at that moment runs the old
//! file or the new one, never a half-written one (and overwriting in place would fail with
//! ETXTBSY while the old plugin runs). The temporary file's name is new on every run (the pid,
//! which is 1 in a container, and a random part); it is created exclusively, never through a
//! link, and a name that is taken is passed over: the installer removes only a file it created.
//!
//! `--log-dir DIR` writes the node configuration beside the plugin
//! (`egress_cni::NODE_CONFIG_FILE`) the same way: the directory where a network
//! configuration's `log_file` may be written.

use std::{
    collections::hash_map::RandomState,
    env,
    ffi::OsString,
    fs::{self, File, OpenOptions},
    hash::{BuildHasher, Hasher},
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    process::ExitCode,
};

use egress_cni::{NodeConfig, NODE_CONFIG_FILE};
use nix::sys::signal::{SigSet, Signal};

const HELP: &str = "\
egress-cni-install - install the egress-cni plugin into a CNI plugin directory

USAGE
  egress-cni-install [--once] [--source FILE] [--log-dir LOGDIR] DIR
  egress-cni-install --help | --version

It copies FILE (default: egress-cni beside this binary) to DIR/egress-cni through a temporary
file in DIR that is renamed into place, so that a container runtime never runs a half-written
plugin. Then it waits for SIGTERM or SIGINT and exits 0 (a DaemonSet's container keeps running),
leaving the plugin installed: pods attached with it need it for their DEL.

  --once            exit after the copy
  --source FILE     the plugin to install
  --log-dir LOGDIR  the node's directory (as the node sees it: an absolute path) where a
                    network configuration's log_file may be written; written to
                    DIR/egress-cni-node.json the same way. Without it a network configuration
                    gets no log file, and a node configuration already there is replaced by {}

EXIT CODES
  0  installed (and, without --once, stopped by SIGTERM or SIGINT)
  1  the copy failed (the message says which step); the file it was for is unchanged
  2  usage error
";

/// The file name the plugin gets: the `type` of its network configurations.
const PLUGIN: &str = "egress-cni";

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Help,
    Version,
    Install {
        dir: PathBuf,
        source: Option<PathBuf>,
        node: NodeConfig,
        once: bool,
    },
}

fn main() -> ExitCode {
    let args: Vec<OsString> = env::args_os().skip(1).collect();
    let (dir, source, node, once) = match parse_args(&args) {
        Ok(Command::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("egress-cni-install {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Install {
            dir,
            source,
            node,
            once,
        }) => (dir, source, node, once),
        Err(usage) => {
            eprintln!("egress-cni-install: {usage}\nTry 'egress-cni-install --help'.");
            return ExitCode::from(2);
        }
    };
    // Blocked before the copy: a SIGTERM that arrives during it is taken after the rename.
    // (As a container's PID 1, a signal without a handler would be ignored, not fatal.)
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(e) = signals.thread_block() {
        eprintln!("egress-cni-install: cannot block SIGTERM/SIGINT: {e}");
        return ExitCode::FAILURE;
    }
    let source = match source {
        Some(s) => s,
        None => match env::current_exe() {
            Ok(exe) => exe.with_file_name(PLUGIN),
            Err(e) => {
                eprintln!("egress-cni-install: cannot find this binary's directory: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let mut names = temporary_names();
    let (target, bytes) = match install(&source, &dir, &mut names) {
        Ok(done) => done,
        Err(e) => {
            eprintln!("egress-cni-install: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "egress-cni-install: installed {} as {} ({bytes} bytes)",
        source.display(),
        target.display()
    );
    match configure(&node, &dir, &mut names) {
        Ok(None) => {}
        Ok(Some(path)) => println!(
            "egress-cni-install: wrote {} ({})",
            path.display(),
            node.to_json()
        ),
        Err(e) => {
            eprintln!("egress-cni-install: {e}");
            return ExitCode::FAILURE;
        }
    }
    if once {
        return ExitCode::SUCCESS;
    }
    println!("egress-cni-install: waiting for SIGTERM or SIGINT");
    match signals.wait() {
        Ok(signal) => {
            println!(
                "egress-cni-install: {signal}: exiting, {} stays installed",
                target.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("egress-cni-install: waiting for a signal failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: &[OsString]) -> Result<Command, String> {
    let mut once = false;
    let mut source = None;
    let mut log_dir = None;
    let mut dir = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(Command::Help),
            Some("-V" | "--version") => return Ok(Command::Version),
            Some("--once") => once = true,
            Some("--source") => match args.next() {
                Some(file) if !file.is_empty() => source = Some(PathBuf::from(file)),
                _ => return Err("--source needs a value".into()),
            },
            Some("--log-dir") => match args.next() {
                Some(d) if !d.is_empty() => log_dir = Some(PathBuf::from(d)),
                _ => return Err("--log-dir needs a value".into()),
            },
            Some(flag) if flag.starts_with('-') => {
                return Err(format!("unknown option '{flag}'"));
            }
            _ if dir.is_some() => return Err("give one directory".into()),
            _ => dir = Some(PathBuf::from(arg)),
        }
    }
    let dir = dir.ok_or("the CNI plugin directory is missing")?;
    let node = NodeConfig::new(log_dir).map_err(|e| format!("--log-dir: {}", e.msg))?;
    Ok(Command::Install {
        dir,
        source,
        node,
        once,
    })
}

/// How many taken temporary names are passed over before giving up.
const ATTEMPTS: usize = 16;

/// Temporary file names in the plugin directory, new on every run: `.egress-cni.PID.RANDOM.tmp`
/// (the pid alone is 1 in every container). The random part comes from the seed std draws
/// from the kernel for its hash maps.
fn temporary_names() -> impl Iterator<Item = String> {
    let seed = RandomState::new();
    (0u64..).map(move |n| {
        let mut h = seed.build_hasher();
        h.write_u64(n);
        format!(".{PLUGIN}.{}.{:016x}.tmp", std::process::id(), h.finish())
    })
}

/// Copies `source` to `dir/egress-cni` ([`replace`]); returns the target and the number of
/// bytes.
fn install(
    source: &Path,
    dir: &Path,
    names: &mut impl Iterator<Item = String>,
) -> Result<(PathBuf, u64), String> {
    let mut from = File::open(source).map_err(at("opening", source))?;
    let target = dir.join(PLUGIN);
    let bytes = replace(&target, 0o755, names, |to| io::copy(&mut from, to))?;
    Ok((target, bytes))
}

/// Writes the node configuration beside the plugin ([`replace`]) when it has a log
/// directory, or when one is there already (then without one, `{}`: the flag was dropped).
/// Returns the file written, if any.
fn configure(
    node: &NodeConfig,
    dir: &Path,
    names: &mut impl Iterator<Item = String>,
) -> Result<Option<PathBuf>, String> {
    let target = dir.join(NODE_CONFIG_FILE);
    if node.log_directory().is_none() && fs::symlink_metadata(&target).is_err() {
        return Ok(None);
    }
    let json = node.to_json();
    replace(&target, 0o644, names, |to| {
        to.write_all(json.as_bytes()).map(|()| json.len() as u64)
    })?;
    Ok(Some(target))
}

/// Replaces `target` by what `write` writes, through a temporary file in its directory that is
/// made `mode`, flushed, and renamed over it: a reader sees the old file or the new one. The
/// temporary file is created exclusively (`O_EXCL`, which never follows a link) under the first
/// of `names` not taken; on failure it is removed (it is this run's), and nothing else is.
fn replace(
    target: &Path,
    mode: u32,
    names: &mut impl Iterator<Item = String>,
    write: impl FnOnce(&mut File) -> io::Result<u64>,
) -> Result<u64, String> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let (temp, mut file) = create_temporary(dir, mode, names)?;
    let renamed: Result<u64, String> = (|| {
        let bytes = write(&mut file).map_err(at("writing", &temp))?;
        // The mode given to open() is reduced by the umask.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(at("setting the mode of", &temp))?;
        file.sync_all().map_err(at("flushing", &temp))?;
        fs::rename(&temp, target).map_err(at("renaming into place", target))?;
        Ok(bytes)
    })();
    if renamed.is_err() {
        // Not renamed: the temporary file is still there, and this run's.
        let _ = fs::remove_file(&temp);
    }
    let bytes = renamed?;
    // The rename itself is durable once the directory is flushed.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(at("flushing", dir))?;
    Ok(bytes)
}

/// A new file in `dir` under the first of `names` that is free.
fn create_temporary(
    dir: &Path,
    mode: u32,
    names: &mut impl Iterator<Item = String>,
) -> Result<(PathBuf, File), String> {
    for name in names.take(ATTEMPTS) {
        let temp = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(at("creating", &temp)(e)),
        }
    }
    Err(format!(
        "creating a temporary file in {}: {ATTEMPTS} names tried, each taken",
        dir.display()
    ))
}

/// An error of `what` on `path`.
fn at(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> String {
    let path = path.display().to_string();
    move |e| format!("{what} {path}: {e}")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn arguments() {
        assert_eq!(
            parse(&["/host/opt/cni/bin"]),
            Ok(Command::Install {
                dir: "/host/opt/cni/bin".into(),
                source: None,
                node: NodeConfig::default(),
                once: false
            })
        );
        assert_eq!(
            parse(&[
                "--once",
                "--source",
                "/egress-cni",
                "--log-dir",
                "/var/log/egress-cni",
                "/opt/cni/bin"
            ]),
            Ok(Command::Install {
                dir: "/opt/cni/bin".into(),
                source: Some("/egress-cni".into()),
                node: NodeConfig::new(Some("/var/log/egress-cni".into())).unwrap(),
                once: true
            })
        );
        assert_eq!(parse(&["x", "--help"]), Ok(Command::Help));
        assert_eq!(parse(&["--version"]), Ok(Command::Version));
        for (args, says) in [
            (&[][..], "the CNI plugin directory is missing"),
            (&["a", "b"], "give one directory"),
            (&["--source"], "--source needs a value"),
            (&["--log-dir"], "--log-dir needs a value"),
            (
                &["--log-dir", "log", "a"],
                "--log-dir: invalid logDirectory `log`: an absolute path without `.` or `..` \
                 components",
            ),
            (&["--force", "a"], "unknown option '--force'"),
        ] {
            assert_eq!(parse(args), Err(says.to_string()), "{args:?}");
        }
    }

    /// A fresh directory, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir =
                env::temp_dir().join(format!("egress-cni-install-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn files(&self) -> Vec<String> {
            let mut left: Vec<_> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            left.sort();
            left
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn installs_through_a_renamed_temporary_file() {
        let tmp = TempDir::new("rename");
        let dir = &tmp.0;
        let source = dir.join("plugin-v2");
        fs::write(&source, b"v2").unwrap();
        fs::write(dir.join(PLUGIN), b"v1").unwrap();
        let (target, bytes) = install(&source, dir, &mut temporary_names()).unwrap();
        assert_eq!((target.clone(), bytes), (dir.join(PLUGIN), 2));
        assert_eq!(fs::read(&target).unwrap(), b"v2");
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o755
        );
        // A missing source leaves the installed plugin as it was, and no temporary file.
        let e = install(&dir.join("missing"), dir, &mut temporary_names()).unwrap_err();
        assert!(e.starts_with("opening "), "{e}");
        assert_eq!(fs::read(&target).unwrap(), b"v2");
        assert_eq!(tmp.files(), ["egress-cni", "plugin-v2"]);
    }

    #[test]
    fn temporary_names_differ_between_runs() {
        let a: Vec<String> = temporary_names().take(3).collect();
        let b: Vec<String> = temporary_names().take(3).collect();
        let prefix = format!(".egress-cni.{}.", std::process::id());
        assert!(a
            .iter()
            .chain(&b)
            .all(|n| n.starts_with(&prefix) && n.ends_with(".tmp")));
        assert!(a.iter().all(|n| !b.contains(n)), "{a:?} {b:?}");
        assert_ne!(a[0], a[1]);
    }

    /// Files planted where a temporary file could go (a file, a link to a file outside, a
    /// dangling link): the installer passes over each, follows none, deletes none.
    #[test]
    fn a_file_or_link_at_a_temporary_name_is_passed_over_never_followed_or_deleted() {
        let tmp = TempDir::new("planted");
        let outside = TempDir::new("planted-outside");
        let dir = &tmp.0;
        let source = outside.0.join("plugin");
        fs::write(&source, b"v2").unwrap();
        let victim = outside.0.join("victim");
        fs::write(&victim, b"untouched").unwrap();
        // What the installer of 7508fe2 used: its pid (1 in a container), no random part.
        let old = format!(".{PLUGIN}.{}.tmp", std::process::id());
        symlink(&victim, dir.join(&old)).unwrap();
        symlink(outside.0.join("missing"), dir.join("dangling")).unwrap();
        fs::write(dir.join("plain"), b"theirs").unwrap();
        let mut names = [old.as_str(), "dangling", "plain", "ours"]
            .map(String::from)
            .into_iter();
        let (target, _) = install(&source, dir, &mut names).unwrap();
        assert_eq!(fs::read(target).unwrap(), b"v2");
        assert_eq!(
            tmp.files(),
            [old.as_str(), "dangling", "egress-cni", "plain"]
        );
        assert_eq!(fs::read(&victim).unwrap(), b"untouched");
        assert_eq!(fs::read(dir.join("plain")).unwrap(), b"theirs");
        assert!(!outside.0.join("missing").exists());
        // The default names pass over the old name too.
        install(&source, dir, &mut temporary_names()).unwrap();
        assert_eq!(fs::read_link(dir.join(&old)).unwrap(), victim);
        // Every name taken: an error, and still nothing deleted.
        let e = install(&source, dir, &mut std::iter::repeat("plain".to_string())).unwrap_err();
        assert!(e.contains("16 names tried, each taken"), "{e}");
        assert_eq!(
            tmp.files(),
            [old.as_str(), "dangling", "egress-cni", "plain"]
        );
        assert_eq!(fs::read(&victim).unwrap(), b"untouched");
    }

    #[test]
    fn the_node_configuration_is_written_with_a_log_directory_and_reset_without() {
        let tmp = TempDir::new("node");
        let dir = &tmp.0;
        let file = dir.join(NODE_CONFIG_FILE);
        // No flag, no file: none is created.
        assert_eq!(
            configure(&NodeConfig::default(), dir, &mut temporary_names()),
            Ok(None)
        );
        assert_eq!(tmp.files(), Vec::<String>::new());
        let node = NodeConfig::new(Some("/var/log/egress-cni".into())).unwrap();
        assert_eq!(
            configure(&node, dir, &mut temporary_names()),
            Ok(Some(file.clone()))
        );
        assert_eq!(NodeConfig::read_in(dir).unwrap(), node);
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o644
        );
        // The flag dropped: the file says so, rather than keeping the old directory.
        assert_eq!(
            configure(&NodeConfig::default(), dir, &mut temporary_names()),
            Ok(Some(file.clone()))
        );
        assert_eq!(fs::read_to_string(&file).unwrap(), "{}");
        assert_eq!(tmp.files(), [NODE_CONFIG_FILE]);
    }
}
