//! `egress-cni-install`: puts the `egress-cni` plugin into a node's CNI plugin directory and
//! keeps running, the way the Multus and whereabouts DaemonSets install theirs
//! (`deploy/kubernetes/egress-cni-installer.yaml` runs it on every node).
//!
//! The plugin is copied to a temporary file in the directory, made executable, flushed to disk
//! and renamed over `DIR/egress-cni`: a runtime that runs the plugin at that moment runs the old
//! file or the new one, never a half-written one (and overwriting in place would fail with
//! ETXTBSY while the old plugin runs).

use std::{
    env,
    ffi::OsString,
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    process::ExitCode,
};

use nix::sys::signal::{SigSet, Signal};

const HELP: &str = "\
egress-cni-install - install the egress-cni plugin into a CNI plugin directory

USAGE
  egress-cni-install [--once] [--source FILE] DIR
  egress-cni-install --help | --version

It copies FILE (default: egress-cni beside this binary) to DIR/egress-cni through a temporary
file in DIR that is renamed into place, so that a container runtime never runs a half-written
plugin. Then it waits for SIGTERM or SIGINT and exits 0 (a DaemonSet's container keeps running),
leaving the plugin installed: pods attached with it need it for their DEL.

  --once          exit after the copy
  --source FILE   the plugin to install

EXIT CODES
  0  installed (and, without --once, stopped by SIGTERM or SIGINT)
  1  the copy failed (the message says which step); DIR/egress-cni is unchanged
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
        once: bool,
    },
}

fn main() -> ExitCode {
    let args: Vec<OsString> = env::args_os().skip(1).collect();
    let (dir, source, once) = match parse_args(&args) {
        Ok(Command::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("egress-cni-install {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Install { dir, source, once }) => (dir, source, once),
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
    let (target, bytes) = match install(&source, &dir) {
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
            Some(flag) if flag.starts_with('-') => {
                return Err(format!("unknown option '{flag}'"));
            }
            _ if dir.is_some() => return Err("give one directory".into()),
            _ => dir = Some(PathBuf::from(arg)),
        }
    }
    let dir = dir.ok_or("the CNI plugin directory is missing")?;
    Ok(Command::Install { dir, source, once })
}

/// Copies `source` to `dir/egress-cni` through a temporary file renamed into place; returns the
/// target and the number of bytes. On failure the temporary file is removed and the message says
/// which step failed.
fn install(source: &Path, dir: &Path) -> Result<(PathBuf, u64), String> {
    let target = dir.join(PLUGIN);
    let temp = dir.join(format!(".{PLUGIN}.{}.tmp", std::process::id()));
    fn at(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> String {
        let path = path.display().to_string();
        move |e| format!("{what} {path}: {e}")
    }
    let copy = || -> Result<u64, String> {
        let mut from = File::open(source).map_err(at("opening", source))?;
        let mut to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&temp)
            .map_err(at("creating", &temp))?;
        let bytes = io::copy(&mut from, &mut to).map_err(at("writing", &temp))?;
        // The mode given to open() is reduced by the umask.
        to.set_permissions(fs::Permissions::from_mode(0o755))
            .map_err(at("making executable", &temp))?;
        to.sync_all().map_err(at("flushing", &temp))?;
        fs::rename(&temp, &target).map_err(at("renaming into place", &target))?;
        // The rename itself is durable once the directory is flushed.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(at("flushing", dir))?;
        Ok(bytes)
    };
    let result = copy();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map(|bytes| (target, bytes))
}

#[cfg(test)]
mod tests {
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
                once: false
            })
        );
        assert_eq!(
            parse(&["--once", "--source", "/egress-cni", "/opt/cni/bin"]),
            Ok(Command::Install {
                dir: "/opt/cni/bin".into(),
                source: Some("/egress-cni".into()),
                once: true
            })
        );
        assert_eq!(parse(&["x", "--help"]), Ok(Command::Help));
        assert_eq!(parse(&["--version"]), Ok(Command::Version));
        for (args, says) in [
            (&[][..], "the CNI plugin directory is missing"),
            (&["a", "b"], "give one directory"),
            (&["--source"], "--source needs a value"),
            (&["--force", "a"], "unknown option '--force'"),
        ] {
            assert_eq!(parse(args), Err(says.to_string()), "{args:?}");
        }
    }

    #[test]
    fn installs_through_a_renamed_temporary_file() {
        let dir = env::temp_dir().join(format!("egress-cni-install-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let source = dir.join("plugin-v2");
        fs::write(&source, b"v2").unwrap();
        fs::write(dir.join(PLUGIN), b"v1").unwrap();
        let (target, bytes) = install(&source, &dir).unwrap();
        assert_eq!((target.clone(), bytes), (dir.join(PLUGIN), 2));
        assert_eq!(fs::read(&target).unwrap(), b"v2");
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o755
        );
        // A missing source leaves the installed plugin as it was, and no temporary file.
        let e = install(&dir.join("missing"), &dir).unwrap_err();
        assert!(e.starts_with("opening "), "{e}");
        assert_eq!(fs::read(&target).unwrap(), b"v2");
        let mut left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["egress-cni", "plugin-v2"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
