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
    io::Read,
    panic::{self, AssertUnwindSafe},
    path::Path,
    process::ExitCode,
};

use egress_cni::{
    self as cni, CniError, CniVersion, Command, Invocation, LogLevel, NetConf, NodeConfig,
};
use egress_core::{blocking, EnsureAction, ErrorKind, Netns};
use egress_openshift::logging;
use serde_json::Value;
use tracing::{debug, error, info, info_span, warn};
use tracing_subscriber::filter::LevelFilter;

fn main() -> ExitCode {
    // Not a CNI call (a runtime passes no arguments): what an operator asks an installed plugin.
    if matches!(
        env::args_os().nth(1).as_deref().and_then(|a| a.to_str()),
        Some("--version" | "-V")
    ) {
        println!("egress-cni {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    // Failures on stderr until the configuration says more (log_level, log_file).
    let log = Log(logging::install("egress-cni", LevelFilter::ERROR, true));
    // A panic is a bug, but still an error object on stdout for the runtime.
    let (version, outcome) =
        panic::catch_unwind(AssertUnwindSafe(|| run(&log))).unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            let e = CniError::internal(what);
            error!("{e}");
            (CniVersion::LATEST, Err(e))
        });
    match outcome {
        Ok(reply) => {
            if let Some(reply) = reply {
                println!("{reply}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", e.to_json(version));
            ExitCode::FAILURE
        }
    }
}

/// The reply's version, and the reply (`None`: success without output); a failure is logged.
fn run(log: &Log) -> (CniVersion, Result<Option<Value>, CniError>) {
    let vars = env::vars_os().map(|(k, v)| {
        (
            k.to_string_lossy().into_owned(),
            v.to_string_lossy().into_owned(),
        )
    });
    let inv = match Invocation::from_env(vars) {
        Ok(inv) => inv,
        Err(e) => {
            error!("{e}");
            return (CniVersion::LATEST, Err(e));
        }
    };
    // Every line of this invocation names it: `ADD <container id> <ifname>`.
    let context = match (&inv.container_id, &inv.ifname) {
        (Some(id), Some(ifname)) => format!("{} {id} {ifname}", inv.command),
        _ => inv.command.to_string(),
    };
    let span = info_span!("cni", invocation = %context);
    let _entered = span.enter();
    let (version, result) = command(&inv, log);
    if let Err(e) = &result {
        error!("{e}");
    }
    (version, result)
}

/// The command of the invocation.
fn command(inv: &Invocation, log: &Log) -> (CniVersion, Result<Option<Value>, CniError>) {
    if inv.command == Command::Version {
        return (CniVersion::LATEST, Ok(Some(cni::version_result())));
    }
    // One byte more than a configuration may have: enough to tell it is too long.
    let mut stdin = Vec::new();
    let limit = cni::MAX_CONFIG_LEN as u64 + 1;
    if let Err(e) = std::io::stdin().take(limit).read_to_end(&mut stdin) {
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
        return (version, del(inv, conf, log));
    }
    let result = conf.and_then(|conf| {
        log.open(&conf)?;
        conf.require_version(inv.command)?;
        match inv.command {
            Command::Add => add(inv, &conf),
            Command::Check => check(inv, &conf).map(|()| None),
            Command::Status => status(&conf).map(|()| None),
            Command::Gc => gc(&conf).map(|()| None),
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
fn add(inv: &Invocation, conf: &NetConf) -> Result<Option<Value>, CniError> {
    let master = conf.resolve_master().map_err(core)?;
    let spec = conf.router_spec(inv, &master)?;
    debug!("spec {}", spec.to_json_value(),);
    for (i, step) in spec.plan().steps().iter().enumerate() {
        debug!("{}", format_args!("plan step {:>2}: {step}", i + 1),);
    }
    let outcome = blocking::ensure(&spec).map_err(core)?;
    for d in &outcome.drift {
        debug!("found: {}", cni::escape_control(&d.to_string()));
    }
    let what = match outcome.action {
        EnsureAction::Created => "configured",
        EnsureAction::Unchanged => "already configured, nothing changed",
        EnsureAction::Repaired => "repaired",
    };
    info!("router {} {what} on master {master}", spec.name(),);
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
            error!("undoing the ADD: {}", cni::escape_control(&e.to_string()));
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
    log: &Log,
) -> Result<Option<Value>, CniError> {
    match conf {
        Ok(conf) => {
            if let Err(e) = log.open(&conf) {
                error!("{e}; logging on stderr only");
            }
        }
        Err(e) => error!(
            "{}",
            format_args!("ignoring the configuration, which DEL does not need: {e}"),
        ),
    }
    let (Some(id), Some(ifname)) = (&inv.container_id, &inv.ifname) else {
        unreachable!("DEL has CNI_CONTAINERID and CNI_IFNAME")
    };
    let name = cni::router_name(id, ifname);
    let Some(netns) = &inv.netns else {
        info!("no CNI_NETNS: nothing to remove (the router lives in the pod's namespace only)",);
        return Ok(None);
    };
    match blocking::teardown_by_name(&Netns::Path(netns.clone()), &name) {
        Ok(undone) if undone.is_empty() => {
            info!("no router {name} in {}: nothing to remove", netns.display(),)
        }
        Ok(undone) => info!(
            "{}",
            format_args!(
                "router {name} removed from {} ({} changes undone)",
                netns.display(),
                undone.len()
            ),
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            info!("{}: nothing to remove", cni::escape_control(&e.to_string()))
        }
        Err(e) => return Err(core(e)),
    }
    Ok(None)
}

/// CHECK: every difference between the pod and the configuration (and the ADD's result) is
/// an error.
fn check(inv: &Invocation, conf: &NetConf) -> Result<(), CniError> {
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
        info!("router {} matches its configuration", spec.name(),);
        Ok(())
    } else {
        Err(CniError::drift(&drift))
    }
}

/// STATUS: ready when an ADD can work: privileges, and the master link on the node.
fn status(conf: &NetConf) -> Result<(), CniError> {
    let master = conf
        .resolve_master()
        .map_err(|e| CniError::not_available(&e))?;
    cni::probe(&master).map_err(|e| CniError::not_available(&e))?;
    info!("{}", format_args!("ready: master {master} is present"),);
    Ok(())
}

/// GC: there is nothing on the node to collect. Each router lives in its pod's namespace
/// (the macvlan is created directly inside it), and goes with it.
fn gc(conf: &NetConf) -> Result<(), CniError> {
    let valid = conf.valid_attachments().map_or(0, <[_]>::len);
    info!(
        "{}",
        format_args!(
            "nothing to collect on the node ({valid} valid attachments): every router lives in \
             its pod's namespace"
        ),
    );
    Ok(())
}

/// The plugin's log: stderr, and `log_file` when the configuration names one in the node's
/// log directory, at its `log_level`.
struct Log(logging::Output);

impl Log {
    /// Takes `log_level` and `log_file` from the configuration. A `log_file` the node does not
    /// allow is a warning; one it allows that cannot be opened safely is an error (code 5).
    fn open(&self, conf: &NetConf) -> Result<(), CniError> {
        self.0.set_level(match conf.log_level() {
            LogLevel::Panic => LevelFilter::OFF,
            LogLevel::Error => LevelFilter::WARN,
            LogLevel::Verbose => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
        });
        let Some(path) = conf.log_file() else {
            return Ok(());
        };
        let shown = cni::escape_control(&path.to_string_lossy()).into_owned();
        let dir = match node_config() {
            Ok(node) => node.log_directory().map(Path::to_path_buf),
            Err(e) => {
                warn!("log_file `{shown}` not honoured, logging on stderr only: {e}");
                return Ok(());
            }
        };
        let Some(dir) = dir else {
            warn!(
                "log_file `{shown}` not honoured, logging on stderr only: this node has no log \
                 directory for network configurations (egress-cni-install --log-dir)"
            );
            return Ok(());
        };
        let Some(name) = conf.log_file_in(&dir) else {
            warn!(
                "log_file `{shown}` not honoured, logging on stderr only: not in the node's log \
                 directory {}",
                dir.display()
            );
            return Ok(());
        };
        self.0.also_to(cni::open_log_file(&dir, name)?);
        Ok(())
    }
}

/// The node configuration beside this binary ([`cni::NODE_CONFIG_FILE`]).
fn node_config() -> Result<NodeConfig, CniError> {
    let exe = env::current_exe()
        .map_err(|e| CniError::io("finding the plugin's directory (/proc/self/exe)", &e))?;
    NodeConfig::read_in(exe.parent().unwrap_or(Path::new("/")))
}
