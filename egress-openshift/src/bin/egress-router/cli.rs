//! The command line, parsed by clap (derive): the container entrypoint (no subcommand, with
//! `--metrics-listen` at most) and the operator subcommands. `--help` is generated from the
//! doc comments here; the `EGRESS_*` variables and the exit codes are its closing text. Usage
//! errors keep the wording (and exit code 2) the binary has always had: [`usage_message`].

use std::{ffi::OsString, path::PathBuf};

use clap::{
    builder::NonEmptyStringValueParser,
    error::{ContextKind, ContextValue, ErrorKind},
    Args, CommandFactory, Parser, Subcommand,
};
use egress_core::{Netns, Role};
use egress_openshift::render::RenderOptions;

/// The text after the options in `--help`: the container contract, the exit codes, examples.
const AFTER_LONG_HELP: &str = "\
CONTAINER ENTRYPOINT (no subcommand): the OpenShift variables, unchanged
  EGRESS_SOURCE        the egress IP: N.N.N.N or N.N.N.N/M (bare = /32), or IPv6 (bare = /128)
  EGRESS_GATEWAY       the external gateway, of the same family
  EGRESS_DESTINATION   one IP (everything goes there), or one rule per line:
                         LPORT PROTO IP         80 tcp 198.51.100.25
                         LPORT PROTO IP RPORT   8080 tcp 198.51.100.25 80
                         IP                     198.51.100.9  (fallback for the rest; last line)
                       PROTO is tcp, udp or sctp; blank lines and # comments are skipped
  EGRESS_ROUTER_MODE   legacy      configure, stay running and repair what others change (as
                                   the kernel notifies it); SIGTERM/SIGINT tears it down (default)
                       init        configure and exit 0 (an init container); running it again on
                                   a configured namespace succeeds and changes nothing
                       http-proxy, dns-proxy
                                   network only, no redirects (a proxy container forwards)
                       unit-test   print the plan (every kernel change, in order), change nothing
  EGRESS_ROUTER_DEBUG  non-empty: log every step on stderr
  The SDN has already moved macvlan0 into the pod (it is adopted, not created); eth0 is the
  cluster link. Optional extensions:
  EGRESS_ROUTER_NAME           router name, [a-z0-9-] (default egress-router)
  EGRESS_ROUTER_ROLE           active (default) or standby: legacy and init modes bring a new
                               router up as a standby, everything configured but the egress
                               IP, the default route and the announcements, for `egress-router
                               promote` (keepalived's notify_master) to claim
  EGRESS_MACVLAN_PARENT        no SDN: create macvlan0 on this link instead of adopting it
  EGRESS_MACVLAN_MODE          private (default), bridge, vepa or passthru
  EGRESS_MACVLAN_PARENT_NETNS  the parent's namespace: a path such as /proc/1/ns/net, or a name
                               under /run/netns (default: the pod's own namespace)
  EGRESS_ROUTER_METRICS        legacy mode: serve HTTP on this IP:PORT, in the pod's namespace
                               (0.0.0.0:9100, [::1]:9100; default: no listener;
                               --metrics-listen overrides it):
                                 /metrics  Prometheus metrics (text format 0.0.4, or OpenMetrics
                                           when the scraper asks for it): egress_router_up,
                                           egress_router_role, egress_redirect_*_total,
                                           egress_fallback_*, egress_snat_*, repairs, durations
                                 /healthz  200 with the role when the namespace matches the
                                           configuration and the watch runs, else 503 and what
                                           differs or the watch's last error
                               Its TCP port is the router's own: connections to it on eth0
                               are never redirected, not even by a fallback (a redirect of the
                               same port is an error, exit 1). `check` reads the variable too;
                               with the flag alone it reports that rule as drift.
                               A bad address (exit 1) or one it cannot listen on (exit 3) stops
                               it before any change.

EXIT CODES
  0  done: configured, torn down (also when there was nothing to remove), router found
     (inspect), namespace matches its configuration (check)
  1  invalid input (EGRESS_* variables, --spec, or render's object); the message is on
     stderr; nothing changed
  2  usage error (unknown subcommand or option)
  3  failed, and nothing is left changed: missing link, no permission (run as root), the
     kernel refused a change and everything was rolled back; legacy mode: the watch cannot
     recover (the router is gone), so the kubelet restarts the container
  4  failed, and something is left behind: rollback or teardown incomplete (the message lists
     what remains; `egress-router teardown` removes it)
  5  inspect: no such router (or, with --role, not in that role); check: the namespace
     differs from the configuration
  6  diagnose: a check failed (its line says what to change)

EXAMPLES
  # What would this pod's router do? (needs no privileges)
  EGRESS_ROUTER_MODE=unit-test EGRESS_SOURCE=203.0.113.99/24 EGRESS_GATEWAY=203.0.113.1 \\
    EGRESS_DESTINATION='80 tcp 198.51.100.25 8080' egress-router

  # In a legacy-mode router pod: is it still configured as its environment says?
  kubectl exec egress-1 -- egress-router check

  # The router does not work: why?
  kubectl exec egress-1 -- egress-router diagnose

  # An OpenShift EgressRouter, run with egress-cni: one replica, or the keepalived HA pair
  egress-router render egress-1.yaml | kubectl apply -f -
  kubectl get egressrouter egress-1 -o yaml | egress-router render --ha - | kubectl apply -f -

  # keepalived.conf, in the router's namespace (see docs/ha.md), global_defs:
  #   vrrp_notify_fifo /run/keepalived/egress.fifo
  #   vrrp_notify_fifo_script '/usr/bin/egress-router keepalived --name egress-1 --instance egress'
  # keepalived, promote and demote run at nice -20 where they may (CAP_SYS_NICE)

  # On the node, as root: look at a pod's router (PID: any process of the pod), diagnose it,
  # remove it
  egress-router inspect --netns /proc/$PID/ns/net --name egress-router
  egress-router diagnose --netns /proc/$PID/ns/net --name egress-router --json
  egress-router teardown --netns-name pod-ns --json
";

/// egress-router - the OpenShift egress router, as one binary (no shell, no iptables)
///
/// It turns the network namespace it runs in (the router pod's) into an egress router:
/// connections that reach the pod on eth0 are redirected to external destinations and leave
/// through macvlan0 with one known source IP. Every input is checked before the first change,
/// the change is one transaction (any failure undoes all of it), and teardown restores the
/// namespace exactly.
///
/// Without a subcommand it is the container entrypoint: it configures the router from the
/// EGRESS_* variables (below).
#[derive(Debug, Parser)]
#[command(
    name = "egress-router",
    version,
    verbatim_doc_comment,
    after_help = "The EGRESS_* variables, the exit codes and examples: egress-router --help",
    after_long_help = AFTER_LONG_HELP,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Legacy mode: serve /metrics and /healthz on this IP:PORT (wins over
    /// EGRESS_ROUTER_METRICS)
    #[arg(long, verbatim_doc_comment, value_name = "ADDR:PORT", value_parser = NonEmptyStringValueParser::new())]
    metrics_listen: Option<String>,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Show what a router owns in a namespace
    Inspect {
        #[command(flatten)]
        common: Common,
        /// Exit 5 unless the router holds this role: the readiness probe of an HA pair's pod
        /// (`--role active`), ready only on the active router
        #[arg(long, verbatim_doc_comment, value_name = "ROLE", value_parser = role)]
        role: Option<Role>,
    },
    /// Compare a namespace with its configuration (changes nothing)
    Check {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        spec: SpecArg,
    },
    /// Why does the router not work? Probes it, says what to change
    ///
    /// It reads the router and probes it, changing nothing: state (the router matches its
    /// spec, or by name its own records), link (up, carrier, the parent link), sysctl
    /// (forwarding, rp_filter), gateway (an ARP request / neighbour solicitation from
    /// macvlan0), l2_filter (when the gateway is silent: the same question from the parent
    /// link; an answer there means the hypervisor or the switch drops frames from the
    /// macvlan's MAC), duplicate_address (does another host answer for the egress IP; on a
    /// standby, which MAC does: the active instance), destination (a TCP connection from the
    /// egress IP to each destination: connected, refused, no answer), traffic (connections per
    /// redirect since apply, and whether the tracked ones got replies). One line per check,
    /// with what to change when it fails.
    ///
    /// In a pod whose environment holds the EGRESS_* variables the spec comes from them (as for
    /// check); otherwise (on the node) the router is read back by --name.
    #[command(verbatim_doc_comment)]
    Diagnose {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        spec: SpecArg,
        /// How long each probe waits for its answer, in ms (default 300, 1-10000)
        #[arg(long, value_name = "N", value_parser = timeout_ms)]
        timeout_ms: Option<u64>,
        /// Try this TCP port on the fallback destination (repeatable;
        /// without one only the fallback's route is checked)
        #[arg(long, verbatim_doc_comment, value_name = "N", value_parser = port)]
        fallback_port: Vec<u16>,
    },
    /// Remove a router and restore its namespace
    Teardown(Common),
    /// A standby router claims the egress identity (keepalived notify_master)
    ///
    /// Addresses, default route, stable MAC, then announces it; read from the kernel, no spec
    /// needed.
    Promote(Common),
    /// Give the egress identity back (keepalived notify_backup/notify_fault)
    ///
    /// The addresses first, so this instance stops answering ARP.
    Demote(Common),
    /// Follow keepalived's notify FIFO (keepalived's vrrp_notify_fifo_script)
    ///
    /// keepalived starts it once, with the FIFO's path last, and writes a line at every state
    /// change: MASTER promotes, BACKUP, FAULT and STOP demote, in keepalived's order (notify
    /// commands can finish out of order); the lines already waiting are read first, so only
    /// the latest state is applied. After keepalived's SIGTERM, STOP demotes and ends it; a
    /// FIFO closed after a SIGTERM is a reload (keepalived starts a new follower): it ends,
    /// the router left as it is; a FIFO closed without one (keepalived killed) demotes.
    #[command(verbatim_doc_comment)]
    Keepalived {
        #[command(flatten)]
        common: Common,
        /// The VRRP instance whose lines count (default: every instance's)
        #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
        instance: Option<String>,
        /// keepalived's notify FIFO (vrrp_notify_fifo; keepalived gives it last)
        #[arg(value_name = "FIFO", value_parser = NonEmptyStringValueParser::new())]
        fifo: String,
    },
    /// Print the Kubernetes manifests of an OpenShift 4 EgressRouter object, for egress-cni
    ///
    /// Reads one EgressRouter (network.operator.openshift.io/v1, YAML or JSON) and prints,
    /// named after it: its NetworkAttachmentDefinition (egress-cni's configuration of every
    /// address, rule and the fallback), its Deployment (one replica, or with --ha the HA
    /// pair of deploy/kubernetes/egress-router-ha.yaml and its keepalived ConfigMap) and its
    /// Service. The object owns them when its uid is known (metadata.uid, or --owner-uid).
    /// An invalid object: every invalid field by its path on stderr, nothing on stdout,
    /// exit 1. Changes nothing; needs no privileges.
    #[command(verbatim_doc_comment)]
    Render {
        /// The EgressRouter object (`-` or nothing: stdin)
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// The HA pair (two pods, keepalived) instead of one replica
        #[arg(long)]
        ha: bool,
        /// With --ha: the routers share the VRRP virtual MAC as their stable MAC
        #[arg(long)]
        stable_mac: bool,
        /// The EgressRouter's uid, for ownerReferences, when the object has no metadata.uid
        #[arg(long, value_name = "UID", value_parser = NonEmptyStringValueParser::new())]
        owner_uid: Option<String>,
    },
}

fn role(v: &str) -> Result<Role, String> {
    v.parse().map_err(|_| "active or standby".into())
}

/// The options every subcommand takes.
#[derive(Debug, Args)]
struct Common {
    /// The router's namespace file: /run/netns/NAME, /proc/PID/ns/net
    /// (default: the namespace egress-router runs in)
    #[arg(long, verbatim_doc_comment, value_name = "PATH", conflicts_with = "netns_name",
          value_parser = NonEmptyStringValueParser::new())]
    netns: Option<String>,
    /// The same, by name, as `ip netns list` shows it
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    netns_name: Option<String>,
    /// The router (default: $EGRESS_ROUTER_NAME, else egress-router)
    #[arg(long, value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
    name: Option<String>,
    /// Print the result as JSON on stdout
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SpecArg {
    /// Compare with this JSON spec (`-` = stdin) instead of the EGRESS_* variables
    #[arg(long, value_name = "FILE", value_parser = NonEmptyStringValueParser::new())]
    spec: Option<String>,
}

fn timeout_ms(v: &str) -> Result<u64, String> {
    v.parse()
        .ok()
        .filter(|ms| (1..=10_000).contains(ms))
        .ok_or_else(|| "a number of ms, 1 to 10000".into())
}

fn port(v: &str) -> Result<u16, String> {
    v.parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| "a port, 1 to 65535".into())
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// The container entrypoint; `--metrics-listen ADDR:PORT` if given.
    Contract(Option<String>),
    Inspect(Target),
    Check(Target),
    Diagnose(Target),
    Teardown(Target),
    Promote(Target),
    Demote(Target),
    /// keepalived's `vrrp_notify_fifo_script`: follow its state lines.
    Keepalived(Target),
    /// `render`: the object's file (`None` or `-`: stdin) and what to render.
    Render(Option<PathBuf>, RenderOptions),
}

/// Where a subcommand works, and how it answers.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct Target {
    pub netns: Option<Netns>,
    pub name: Option<String>,
    pub spec: Option<PathBuf>,
    pub json: bool,
    /// diagnose: the probe timeout.
    pub timeout_ms: Option<u64>,
    /// diagnose: TCP ports tried on the fallback.
    pub fallback_ports: Vec<u16>,
    /// keepalived: the notify FIFO.
    pub fifo: Option<PathBuf>,
    /// keepalived: the VRRP instance whose lines count (default: every instance's).
    pub instance: Option<String>,
    /// inspect: the role the router must hold.
    pub role: Option<Role>,
}

impl From<Common> for Target {
    fn from(c: Common) -> Target {
        Target {
            netns: c
                .netns
                .map(|p| Netns::Path(p.into()))
                .or(c.netns_name.map(Netns::Name)),
            name: c.name,
            json: c.json,
            ..Target::default()
        }
    }
}

/// What went wrong with the command line, or what it asked to print instead of running
/// (`--help`, `--version`).
#[derive(Debug)]
pub enum NotRun {
    /// `--help`, `help`, `--version`: print it on stdout, exit 0.
    Print(clap::Error),
    /// A usage error: the message for stderr (exit 2).
    Usage(String),
}

/// Parses the arguments (without the program's name).
pub fn parse(args: &[OsString]) -> Result<Command, NotRun> {
    let cli = Cli::try_parse_from(
        std::iter::once(OsString::from("egress-router")).chain(args.iter().cloned()),
    )
    .map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => NotRun::Print(e),
        _ => NotRun::Usage(usage_message(&e, args)),
    })?;
    let target = |c: Common| Target::from(c);
    let with_spec = |c: Common, s: SpecArg| Target {
        spec: s.spec.map(PathBuf::from),
        ..target(c)
    };
    Ok(match cli.command {
        None => Command::Contract(cli.metrics_listen),
        Some(Sub::Inspect { common, role }) => Command::Inspect(Target {
            role,
            ..target(common)
        }),
        Some(Sub::Check { common, spec }) => Command::Check(with_spec(common, spec)),
        Some(Sub::Diagnose {
            common,
            spec,
            timeout_ms,
            fallback_port,
        }) => Command::Diagnose(Target {
            timeout_ms,
            fallback_ports: fallback_port,
            ..with_spec(common, spec)
        }),
        Some(Sub::Teardown(c)) => Command::Teardown(target(c)),
        Some(Sub::Promote(c)) => Command::Promote(target(c)),
        Some(Sub::Demote(c)) => Command::Demote(target(c)),
        Some(Sub::Keepalived {
            common,
            instance,
            fifo,
        }) => Command::Keepalived(Target {
            instance,
            fifo: Some(fifo.into()),
            ..target(common)
        }),
        Some(Sub::Render {
            file,
            ha,
            stable_mac,
            owner_uid,
        }) => Command::Render(
            file,
            RenderOptions {
                ha,
                owner_uid,
                stable_mac,
            },
        ),
    })
}

/// The long help: the top level's and every subcommand's (what `--help` and `SUB --help`
/// print).
#[cfg(test)]
pub fn every_help() -> String {
    let mut cmd = Cli::command();
    let mut out = cmd.render_long_help().to_string();
    for sub in cmd.get_subcommands_mut() {
        out += &sub.render_long_help().to_string();
    }
    out
}

/// A usage error in the words the binary has always used (scripts and tests read them):
/// `unknown option '--bogus' for inspect`, `--netns needs a value`, ….
fn usage_message(e: &clap::Error, args: &[OsString]) -> String {
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(ContextValue::Strings(s)) => s.first().cloned().unwrap_or_default(),
        _ => String::new(),
    };
    // `--timeout-ms <N>` names the flag `--timeout-ms`.
    let flag = || {
        context(ContextKind::InvalidArg)
            .split([' ', '='])
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let first = args.first().and_then(|a| a.to_str());
    let sub = first.filter(|s| Cli::command().find_subcommand(s).is_some());
    let unknown = |what: &str| match sub {
        Some(sub) => format!("unknown option '{what}' for {sub}"),
        None if first == Some(what) => format!("unknown subcommand or option '{what}'"),
        None => format!("unknown option '{what}'"),
    };
    match e.kind() {
        ErrorKind::InvalidSubcommand => unknown(&context(ContextKind::InvalidSubcommand)),
        ErrorKind::UnknownArgument => unknown(&context(ContextKind::InvalidArg)),
        // `--json=yes`: a flag given a value.
        ErrorKind::TooManyValues => unknown(&format!(
            "{}={}",
            flag(),
            context(ContextKind::InvalidValue)
        )),
        ErrorKind::InvalidValue => format!("{} needs a value", flag()),
        ErrorKind::ValueValidation => {
            let why = std::error::Error::source(e).map(ToString::to_string);
            format!(
                "{} {}: {}",
                flag(),
                context(ContextKind::InvalidValue),
                why.unwrap_or_default()
            )
        }
        // A subcommand after `--metrics-listen`.
        ErrorKind::ArgumentConflict if e.get(ContextKind::InvalidSubcommand).is_some() => {
            unknown(&context(ContextKind::InvalidSubcommand))
        }
        ErrorKind::ArgumentConflict => {
            let (a, b) = (flag(), context(ContextKind::PriorArg));
            let b = b.split(' ').next().unwrap_or_default();
            if a == b {
                format!("give {a} once")
            } else {
                let mut both = [a.as_str(), b];
                both.sort_unstable();
                format!("give one of {} and {}", both[0], both[1])
            }
        }
        ErrorKind::InvalidUtf8 => "an argument is not UTF-8".into(),
        // Anything else clap finds: its own words, without its "error: " prefix and usage.
        _ => e
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Command, String> {
        parse(&args.iter().map(OsString::from).collect::<Vec<_>>()).map_err(|e| match e {
            NotRun::Print(e) => format!("print {:?}", e.kind()),
            NotRun::Usage(m) => m,
        })
    }

    #[test]
    fn the_parser_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn keepalived_takes_the_fifo_last_and_an_instance() {
        assert_eq!(
            parse_str(&[
                "keepalived",
                "--name",
                "egress-1",
                "--instance",
                "egress",
                "/run/keepalived/egress.fifo"
            ]),
            Ok(Command::Keepalived(Target {
                name: Some("egress-1".into()),
                instance: Some("egress".into()),
                fifo: Some("/run/keepalived/egress.fifo".into()),
                ..Target::default()
            }))
        );
        for args in [
            &["keepalived", "--name", "egress-1"][..],
            &["keepalived", "/a", "/b"],
            &["promote", "/a"],
            &["promote", "--instance", "egress"],
        ] {
            assert!(parse_str(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn no_arguments_is_the_container_entrypoint() {
        assert_eq!(parse_str(&[]), Ok(Command::Contract(None)));
        for args in [
            &["--metrics-listen", "[::1]:9100"][..],
            &["--metrics-listen=[::1]:9100"],
        ] {
            assert_eq!(
                parse_str(args),
                Ok(Command::Contract(Some("[::1]:9100".into()))),
                "{args:?}"
            );
        }
    }

    #[test]
    fn promote_and_demote_take_a_namespace_and_a_name_only() {
        let t = Target {
            netns: Some(Netns::Name("pod".into())),
            name: Some("egress-1".into()),
            ..Target::default()
        };
        assert_eq!(
            parse_str(&["promote", "--netns-name", "pod", "--name", "egress-1"]),
            Ok(Command::Promote(t))
        );
        assert_eq!(
            parse_str(&["demote", "--netns=/run/netns/pod"]),
            Ok(Command::Demote(Target {
                netns: Some(Netns::Path("/run/netns/pod".into())),
                ..Target::default()
            }))
        );
        assert_eq!(
            parse_str(&["promote", "--spec", "x.json"]),
            Err("unknown option '--spec' for promote".to_string())
        );
    }

    #[test]
    fn help_and_version() {
        for args in [&["--help"][..], &["-h"], &["help"], &["teardown", "--help"]] {
            assert_eq!(parse_str(args), Err("print DisplayHelp".into()), "{args:?}");
        }
        for args in [&["--version"][..], &["-V"]] {
            assert_eq!(parse_str(args), Err("print DisplayVersion".into()));
        }
    }

    #[test]
    fn render_takes_a_file_ha_and_an_owner_and_inspect_a_role() {
        assert_eq!(
            parse_str(&[
                "render",
                "egress-1.yaml",
                "--ha",
                "--stable-mac",
                "--owner-uid",
                "u-1"
            ]),
            Ok(Command::Render(
                Some("egress-1.yaml".into()),
                RenderOptions {
                    ha: true,
                    owner_uid: Some("u-1".into()),
                    stable_mac: true,
                }
            ))
        );
        assert_eq!(
            parse_str(&["render"]),
            Ok(Command::Render(None, RenderOptions::default()))
        );
        assert_eq!(
            parse_str(&["inspect", "--name", "egress-router", "--role", "active"]),
            Ok(Command::Inspect(Target {
                name: Some("egress-router".into()),
                role: Some(Role::Active),
                ..Target::default()
            }))
        );
    }

    #[test]
    fn subcommands_take_a_namespace_a_name_and_json() {
        assert_eq!(
            parse_str(&[
                "inspect",
                "--netns",
                "/run/netns/pod",
                "--name",
                "r1",
                "--json"
            ]),
            Ok(Command::Inspect(Target {
                netns: Some(Netns::Path("/run/netns/pod".into())),
                name: Some("r1".into()),
                json: true,
                ..Target::default()
            }))
        );
        assert_eq!(
            parse_str(&["teardown", "--netns-name=pod"]),
            Ok(Command::Teardown(Target {
                netns: Some(Netns::Name("pod".into())),
                ..Target::default()
            }))
        );
        assert_eq!(
            parse_str(&["check", "--spec", "-"]),
            Ok(Command::Check(Target {
                spec: Some("-".into()),
                ..Target::default()
            }))
        );
        assert_eq!(
            parse_str(&[
                "diagnose",
                "--netns-name",
                "pod",
                "--timeout-ms=500",
                "--fallback-port",
                "443",
                "--fallback-port=80",
                "--json",
            ]),
            Ok(Command::Diagnose(Target {
                netns: Some(Netns::Name("pod".into())),
                json: true,
                timeout_ms: Some(500),
                fallback_ports: vec![443, 80],
                ..Target::default()
            }))
        );
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        for (args, says) in [
            (
                &["frobnicate"][..],
                "unknown subcommand or option 'frobnicate'",
            ),
            (&["--bogus"], "unknown subcommand or option '--bogus'"),
            (
                &["inspect", "--bogus"],
                "unknown option '--bogus' for inspect",
            ),
            (&["inspect", "--netns"], "--netns needs a value"),
            (&["inspect", "--name="], "--name needs a value"),
            (
                &["inspect", "--spec", "x.json"],
                "unknown option '--spec' for inspect",
            ),
            (
                &["check", "--json=yes"],
                "unknown option '--json=yes' for check",
            ),
            (
                &["teardown", "--netns", "/run/netns/a", "--netns-name", "b"],
                "give one of --netns and --netns-name",
            ),
            (
                &["diagnose", "--timeout-ms", "0"],
                "--timeout-ms 0: a number of ms, 1 to 10000",
            ),
            (
                &["diagnose", "--fallback-port", "x"],
                "--fallback-port x: a port, 1 to 65535",
            ),
            (
                &["check", "--timeout-ms", "5"],
                "unknown option '--timeout-ms' for check",
            ),
            (&["--metrics-listen"], "--metrics-listen needs a value"),
            (&["--metrics-listen="], "--metrics-listen needs a value"),
            (
                &[
                    "--metrics-listen",
                    "0.0.0.0:1",
                    "--metrics-listen",
                    "0.0.0.0:2",
                ],
                "give --metrics-listen once",
            ),
            (
                &["--metrics-listen", "0.0.0.0:1", "inspect"],
                "unknown option 'inspect'",
            ),
        ] {
            assert_eq!(parse_str(args), Err(says.to_string()), "{args:?}");
        }
    }
}
