//! `egress-cni`: the egress router as a CNI plugin (CNI specification 1.1; configurations in
//! versions 0.4.0, 1.0.0 and 1.1.0), configured like OpenShift's egress-router CNI plugin. A
//! thin front end: [`egress_cni`] reads the environment and the configuration into a
//! `RouterSpec`, `egress_core::blocking` does the work, and this file prints the reply.
//!
//! The runtime (Multus, or any CNI runtime) runs it in the node's namespace with
//! `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME` and the network configuration
//! on stdin. Success: exit 0, and the result on stdout for ADD and VERSION. Failure: the spec's
//! error object on stdout and exit 1, never a silent success. `egress-cni --version` prints the
//! version.

use std::{
    env,
    fmt::Display,
    fs::{File, OpenOptions},
    io::{Read, Write},
    panic::{self, AssertUnwindSafe},
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use egress_cni::{self as cni, CniError, CniVersion, Command, Invocation, LogLevel, NetConf};
use egress_core::{blocking, EnsureAction, ErrorKind, Netns};
use serde_json::Value;

fn main() -> ExitCode {
    // Not a CNI call (a runtime passes no arguments): what an operator asks an installed plugin.
    if matches!(
        env::args_os().nth(1).as_deref().and_then(|a| a.to_str()),
        Some("--version" | "-V")
    ) {
        println!("egress-cni {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let mut log = Log {
        level: LogLevel::default(),
        file: None,
        context: String::new(),
    };
    // A panic is a bug, but still an error object on stdout for the runtime.
    let (version, outcome) = panic::catch_unwind(AssertUnwindSafe(|| run(&mut log)))
        .unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            (CniVersion::LATEST, Err(CniError::internal(what)))
        });
    match outcome {
        Ok(reply) => {
            if let Some(reply) = reply {
                println!("{reply}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            log.at(LogLevel::Error, &e);
            println!("{}", e.to_json(version));
            ExitCode::FAILURE
        }
    }
}

/// The reply's version, and the reply (`None`: success without output).
fn run(log: &mut Log) -> (CniVersion, Result<Option<Value>, CniError>) {
    let vars = env::vars_os().map(|(k, v)| {
        (
            k.to_string_lossy().into_owned(),
            v.to_string_lossy().into_owned(),
        )
    });
    let inv = match Invocation::from_env(vars) {
        Ok(inv) => inv,
        Err(e) => return (CniVersion::LATEST, Err(e)),
    };
    log.context = match (&inv.container_id, &inv.ifname) {
        (Some(id), Some(ifname)) => format!("{} {id} {ifname}", inv.command),
        _ => inv.command.to_string(),
    };
    if inv.command == Command::Version {
        return (CniVersion::LATEST, Ok(Some(cni::version_result())));
    }
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        return (
            CniVersion::LATEST,
            Err(CniError::io(
                "reading the network configuration on stdin",
                &e,
            )),
        );
    }
    let version = cni::reply_version(&stdin);
    let conf = cni::parse_config(&stdin);
    if inv.command == Command::Del {
        return (version, del(&inv, conf, log));
    }
    let result = conf.and_then(|conf| {
        log.open(&conf)?;
        conf.require_version(inv.command)?;
        match inv.command {
            Command::Add => add(&inv, &conf, log),
            Command::Check => check(&inv, &conf, log).map(|()| None),
            Command::Status => status(&conf, log).map(|()| None),
            Command::Gc => gc(&conf, log).map(|()| None),
            Command::Del | Command::Version => unreachable!("answered above"),
        }
    });
    (version, result)
}

fn core(e: egress_core::Error) -> CniError {
    CniError::from_core(&e)
}

/// ADD: converge the pod to the configuration (a fresh pod: one transaction, rolled back
/// completely on any failure), then describe the macvlan.
fn add(inv: &Invocation, conf: &NetConf, log: &Log) -> Result<Option<Value>, CniError> {
    let master = conf.resolve_master().map_err(core)?;
    let spec = conf.router_spec(inv, &master)?;
    log.at(
        LogLevel::Debug,
        format_args!("spec {}", spec.to_json_value()),
    );
    for (i, step) in spec.plan().steps().iter().enumerate() {
        log.at(
            LogLevel::Debug,
            format_args!("plan step {:>2}: {step}", i + 1),
        );
    }
    let outcome = blocking::ensure(&spec).map_err(core)?;
    for d in &outcome.drift {
        log.at(LogLevel::Debug, format_args!("found: {d}"));
    }
    let what = match outcome.action {
        EnsureAction::Created => "configured",
        EnsureAction::Unchanged => "already configured, nothing changed",
        EnsureAction::Repaired => "repaired",
    };
    log.at(
        LogLevel::Verbose,
        format_args!("router {} {what} on master {master}", spec.name()),
    );
    let netns = inv.netns.as_deref().expect("ADD has CNI_NETNS");
    let result = blocking::inspect(spec.netns(), spec.name())
        .map_err(core)
        .and_then(|state| {
            let link = state.and_then(|s| s.link);
            cni::add_result(conf.cni_version(), &spec, netns, link.as_ref())
        });
    if result.is_err() {
        // Configured, but no result to report: an ADD that fails leaves nothing behind.
        if let Err(e) = blocking::teardown_by_name(spec.netns(), spec.name()) {
            log.at(LogLevel::Error, format_args!("undoing the ADD: {e}"));
        }
    }
    result.map(Some)
}

/// DEL: remove the router and restore the pod. Idempotent, and it needs neither the
/// configuration (which may have changed since the ADD) nor the pod's namespace (gone: so is
/// everything the router had, since nothing lives outside it).
fn del(
    inv: &Invocation,
    conf: Result<NetConf, CniError>,
    log: &mut Log,
) -> Result<Option<Value>, CniError> {
    match conf {
        Ok(conf) => {
            if let Err(e) = log.open(&conf) {
                log.at(LogLevel::Error, format_args!("{e}; logging on stderr only"));
            }
        }
        Err(e) => log.at(
            LogLevel::Error,
            format_args!("ignoring the configuration, which DEL does not need: {e}"),
        ),
    }
    let (Some(id), Some(ifname)) = (&inv.container_id, &inv.ifname) else {
        unreachable!("DEL has CNI_CONTAINERID and CNI_IFNAME")
    };
    let name = cni::router_name(id, ifname);
    let Some(netns) = &inv.netns else {
        log.at(
            LogLevel::Verbose,
            "no CNI_NETNS: nothing to remove (the router lives in the pod's namespace only)",
        );
        return Ok(None);
    };
    match blocking::teardown_by_name(&Netns::Path(netns.clone()), &name) {
        Ok(undone) if undone.is_empty() => log.at(
            LogLevel::Verbose,
            format_args!("no router {name} in {}: nothing to remove", netns.display()),
        ),
        Ok(undone) => log.at(
            LogLevel::Verbose,
            format_args!(
                "router {name} removed from {} ({} changes undone)",
                netns.display(),
                undone.len()
            ),
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            log.at(LogLevel::Verbose, format_args!("{e}: nothing to remove"))
        }
        Err(e) => return Err(core(e)),
    }
    Ok(None)
}

/// CHECK: every difference between the pod and the configuration (and the ADD's result) is
/// an error.
fn check(inv: &Invocation, conf: &NetConf, log: &Log) -> Result<(), CniError> {
    let prev = conf.required_prev_result()?;
    let master = conf.resolve_master().map_err(core)?;
    let spec = conf.router_spec(inv, &master)?;
    let mut drift: Vec<String> = blocking::check(&spec)
        .map_err(core)?
        .iter()
        .map(ToString::to_string)
        .collect();
    let link = blocking::inspect(spec.netns(), spec.name())
        .map_err(core)?
        .and_then(|s| s.link);
    let netns = inv.netns.as_deref().expect("CHECK has CNI_NETNS");
    drift.extend(cni::prev_result_drift(prev, &spec, netns, link.as_ref()));
    if drift.is_empty() {
        log.at(
            LogLevel::Verbose,
            format_args!("router {} matches its configuration", spec.name()),
        );
        Ok(())
    } else {
        Err(CniError::drift(&drift))
    }
}

/// STATUS: ready when an ADD can work: privileges, and the master link on the node.
fn status(conf: &NetConf, log: &Log) -> Result<(), CniError> {
    let master = conf
        .resolve_master()
        .map_err(|e| CniError::not_available(&e))?;
    cni::probe(&master).map_err(|e| CniError::not_available(&e))?;
    log.at(
        LogLevel::Verbose,
        format_args!("ready: master {master} is present"),
    );
    Ok(())
}

/// GC: there is nothing on the node to collect. Each router lives in its pod's namespace
/// (the macvlan is created directly inside it), and goes with it.
fn gc(conf: &NetConf, log: &Log) -> Result<(), CniError> {
    let valid = conf.valid_attachments().map_or(0, <[_]>::len);
    log.at(
        LogLevel::Verbose,
        format_args!(
            "nothing to collect on the node ({valid} valid attachments): every router lives in \
             its pod's namespace"
        ),
    );
    Ok(())
}

/// The plugin's log: stderr, and `log_file` when configured; lines at or below `level`.
struct Log {
    level: LogLevel,
    file: Option<File>,
    /// `ADD <container id> <ifname>`.
    context: String,
}

impl Log {
    /// Takes `log_level` and `log_file` from the configuration.
    fn open(&mut self, conf: &NetConf) -> Result<(), CniError> {
        self.level = conf.log_level();
        if let Some(path) = conf.log_file() {
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .map_err(|e| {
                    CniError::io(format_args!("opening log_file {}", path.display()), &e)
                })?;
            self.file = Some(file);
        }
        Ok(())
    }

    fn at(&self, level: LogLevel, msg: impl Display) {
        if level > self.level {
            return;
        }
        let line = format!(
            "{} [{}] egress-cni {}: {msg}\n",
            rfc3339(SystemTime::now()),
            level.as_str(),
            self.context
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
        if let Some(mut f) = self.file.as_ref() {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// `2024-05-01T12:00:00Z`.
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |s| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_714_564_800), "2024-05-01T12:00:00Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
