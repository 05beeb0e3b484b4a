//! [`diagnose`]: "why does my egress router not work?", answered with what to change.
//!
//! A diagnosis reads the router's namespace once (as `check` does), then probes, side by side
//! and each bounded by one timeout ([`DiagnoseOptions::timeout`], 300 ms by default):
//! - from the external link, an ARP request (IPv6: a neighbour solicitation) for each gateway,
//!   sent from the egress address when this instance holds it (else an ARP probe / a DAD
//!   solicitation from the unspecified address: a standby never teaches the gateway that the
//!   egress address is at its MAC), and an ARP probe (a DAD solicitation) for each egress
//!   address, which nobody else should answer;
//! - a TCP connection from the egress address to each TCP destination;
//! - only when a gateway did not answer: the same question from the macvlan's parent link, in
//!   the parent's namespace, with the parent's own MAC and the unspecified sender — the
//!   parent getting an answer the macvlan does not get means frames from the macvlan's MAC
//!   are dropped between the node and the gateway (the hypervisor or the switch).
//!
//! It then reads the ruleset's counters and the connections conntrack holds, and returns a
//! [`Diagnosis`]: one [`Check`] per question, each with a stable name, a [`Status`], a
//! one-line summary, the evidence it saw and, when something is wrong, a hint that says what
//! to change. It changes nothing in the router nor in its neighbours' tables: it sends probe
//! frames, and opens and closes probe sockets (the TCP connections are closed with a reset, so
//! nothing lingers).
//!
//! A healthy router's diagnosis takes one timeout and a little: the duplicate address probe
//! waits the whole timeout for the answer that must not come.

mod checks;
mod claim;
mod conntrack;
mod frame;
mod probe;
mod reads;
mod socket;
mod subject;
#[cfg(test)]
mod tests;

use std::{
    fmt,
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tracing::{debug, info_span, Instrument};

pub(crate) use self::claim::before_claim;
use self::{
    checks::Seen,
    reads::{find_parent, link_facts, ParentHint},
    subject::Subject,
};
use crate::{
    context::Identity,
    error::{Error, Result},
    kernel::netns::{require_net_admin, Conn, NsHandle},
    kernel::procfs::{self, ConfEntry, ConfName, Family, Knob, SysctlKey},
    model::desired::Desired,
    objects::{sysctl, Current},
    operations::apply::open_parent,
    role::Role,
    spec::{table_name, validate_name, External, Netns, RouterSpec},
    spec::{DEFAULT_PROBE_TIMEOUT, MAX_PROBE_TIMEOUT},
    Router,
};

/// How a check came out. Ordered from `Ok` to `Fail`: [`Diagnosis::status`] is the largest.
///
/// ```
/// use egress_core::Status;
/// assert!(Status::Fail > Status::Warn && Status::Warn > Status::Skipped);
/// assert_eq!(serde_json::to_string(&Status::Skipped).unwrap(), "\"skipped\"");
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// As it should be.
    #[default]
    Ok,
    /// Not run: what it needs is missing (the summary says what), or another check already
    /// says why.
    Skipped,
    /// Works, but something is off.
    Warn,
    /// Broken: the hint says what to change.
    Fail,
}

impl Status {
    /// `ok`, `skipped`, `warn`, `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Skipped => "skipped",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One question a diagnosis answered.
///
/// The names are stable: `state`, `link`, `sysctl`, `gateway` (one per gateway), `l2_filter`
/// (one per gateway), `duplicate_address` (one per egress address), `destination` (one per
/// destination), `traffic` (one per redirect and per fallback). `docs/diagnose.md` explains
/// each, its evidence and its hints.
///
/// ```no_run
/// # fn main() -> egress_core::Result<()> {
/// use egress_core::{blocking, DiagnoseOptions, Netns, Status};
/// let d = blocking::diagnose(&Netns::Name("pod".into()), "egress-1", &DiagnoseOptions::new())?;
/// for c in d.named("l2_filter") {
///     if c.status == Status::Fail {
///         println!("MAC {} is dropped: {}", c.evidence["mac"], c.hint.as_deref().unwrap_or(""));
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The check's stable name.
    pub name: String,
    /// How it came out.
    pub status: Status,
    /// One line that says what was found.
    pub summary: String,
    /// For `warn` and `fail`: what to change.
    pub hint: Option<String>,
    /// What it saw: addresses, MACs, timings in milliseconds (`*_ms`), counters; a JSON
    /// object.
    pub evidence: serde_json::Value,
}

/// The answer of [`diagnose`]: every check, in a fixed order (state, link, sysctl, gateway,
/// l2_filter, duplicate_address, destination, traffic).
///
/// Its JSON form (serde) is `{"router": NAME, "checks": [{"name", "status", "summary",
/// "hint", "evidence"}, …]}`; `Display` prints one line per check, with its hint.
///
/// ```no_run
/// # fn main() -> egress_core::Result<()> {
/// use egress_core::{blocking, DiagnoseOptions, Netns};
/// let d = blocking::diagnose(&Netns::Name("pod".into()), "egress-1", &DiagnoseOptions::new())?;
/// print!("{d}");
/// for c in d.checks.iter().filter(|c| c.status == egress_core::Status::Fail) {
///     eprintln!("{}: {}", c.name, c.hint.as_deref().unwrap_or(""));
/// }
/// std::process::exit(if d.failed() { 6 } else { 0 });
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The router's name.
    pub router: String,
    /// The checks.
    pub checks: Vec<Check>,
}

impl Diagnosis {
    /// Whether a check failed.
    pub fn failed(&self) -> bool {
        self.status() == Status::Fail
    }

    /// The worst status of all checks (`fail` > `warn` > `skipped` > `ok`).
    pub fn status(&self) -> Status {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or_default()
    }

    /// The checks called `name`, in order.
    pub fn named(&self, name: &str) -> Vec<&Check> {
        self.checks.iter().filter(|c| c.name == name).collect()
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count();
        writeln!(
            f,
            "router {}: {} checks, {}",
            self.router,
            self.checks.len(),
            match failed {
                0 => "none failed".to_string(),
                n => format!("{n} failed"),
            }
        )?;
        for c in &self.checks {
            write!(f, "  {:<7} {:<17} {}", c.status.as_str(), c.name, c.summary)?;
            match &c.hint {
                Some(h) => writeln!(f, " -- hint: {h}")?,
                None => writeln!(f)?,
            }
        }
        Ok(())
    }
}

/// How a diagnosis probes.
///
/// ```
/// use std::time::Duration;
/// use egress_core::DiagnoseOptions;
///
/// let o = DiagnoseOptions::new().timeout(Duration::from_millis(500)).fallback_port(443);
/// assert_eq!(o.probe_timeout(), Duration::from_millis(500));
/// assert_eq!(o.fallback_ports(), &[443]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagnoseOptions {
    timeout: Duration,
    fallback_ports: Vec<u16>,
}

impl Default for DiagnoseOptions {
    fn default() -> Self {
        DiagnoseOptions {
            timeout: DEFAULT_PROBE_TIMEOUT,
            fallback_ports: Vec::new(),
        }
    }
}

impl DiagnoseOptions {
    /// The defaults: [`DEFAULT_PROBE_TIMEOUT`], no fallback port.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long each probe waits for its answer: 1 ms to [`MAX_PROBE_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A TCP port to try on the fallback destinations (the fallback keeps the port a client
    /// asked for, so no port is known; without one, only their route is checked).
    pub fn fallback_port(mut self, port: u16) -> Self {
        self.fallback_ports.push(port);
        self
    }

    /// The probe timeout.
    pub fn probe_timeout(&self) -> Duration {
        self.timeout
    }

    /// The ports tried on the fallback destinations.
    pub fn fallback_ports(&self) -> &[u16] {
        &self.fallback_ports
    }

    fn validate(&self) -> Result<()> {
        if self.timeout < Duration::from_millis(1) || self.timeout > MAX_PROBE_TIMEOUT {
            return Err(Error::invalid_spec(
                "timeout_ms",
                self.timeout.as_millis(),
                format!("a timeout from 1 to {} ms", MAX_PROBE_TIMEOUT.as_millis()),
            ));
        }
        if let Some(i) = self.fallback_ports.iter().position(|p| *p == 0) {
            return Err(Error::invalid_spec(
                format!("fallback_ports[{i}]"),
                0,
                "a port from 1 to 65535",
            ));
        }
        Ok(())
    }
}

/// Diagnoses router `name` in `netns`, as the kernel holds it (no spec needed: its crash
/// record names its link, its marked addresses and routes its sources and gateways, its
/// ruleset its redirects and fallback).
///
/// It changes nothing in the router. It probes, side by side and each bounded by the timeout:
/// from the external link, an ARP request (IPv6: a neighbour solicitation) for each gateway,
/// sent from the egress address when this instance holds it (active, the address on its link;
/// else an ARP probe / a DAD solicitation from the unspecified address, so that a standby never
/// moves the gateway's neighbour entry for the egress IP), and an ARP probe (a DAD
/// solicitation) for each egress address, which nobody else should answer; a TCP connection from the egress address to each
/// TCP destination, closed with a reset. Only when a gateway does not answer, it asks again
/// from the macvlan's parent link, in the parent's namespace, with the parent's own MAC and
/// the unspecified sender: the parent getting an answer the macvlan does not get means frames
/// from the macvlan's MAC are dropped between the node and the gateway. A healthy router's
/// diagnosis takes one timeout and a few milliseconds (the duplicate address probe waits the
/// whole timeout), at worst two timeouts. `docs/diagnose.md` describes every check.
///
/// A router that is not there is not an error: its `state` check fails and says so.
///
/// ```no_run
/// # async fn demo() -> egress_core::Result<()> {
/// use egress_core::{diagnose, DiagnoseOptions, Netns};
/// let d = diagnose(&Netns::Name("pod".into()), "egress-1", &DiagnoseOptions::new()).await?;
/// println!("{}", serde_json::to_string_pretty(&d).unwrap());
/// # Ok(()) }
/// ```
pub async fn diagnose(netns: &Netns, name: &str, options: &DiagnoseOptions) -> Result<Diagnosis> {
    validate_name(name).map_err(|f| Error::invalid_spec(f.field, f.value, f.expected))?;
    options.validate()?;
    require_net_admin("diagnose an egress router")?;
    let span = info_span!("diagnose", router = %name);
    let caller = NsHandle::open(&Netns::Current, "netns")?;
    let what = What {
        name: name.to_string(),
        spec: None,
        parent: ParentHint::Search { caller },
        identity: None,
    };
    let options = options.clone();
    NsHandle::open(netns, "netns")?
        .within(move |ns| run(ns, what, options))
        .instrument(span)
        .await
}

/// Diagnoses the router `spec` describes: like [`diagnose`], and its `state` check is
/// [`check`](crate::check) against the spec; a created macvlan's parent is the spec's.
///
/// ```no_run
/// # async fn demo(spec: egress_core::RouterSpec) -> egress_core::Result<()> {
/// use egress_core::{diagnose_spec, DiagnoseOptions};
/// let d = diagnose_spec(&spec, &DiagnoseOptions::new()).await?;
/// if d.failed() {
///     print!("{d}");
/// }
/// # Ok(()) }
/// ```
pub async fn diagnose_spec(spec: &RouterSpec, options: &DiagnoseOptions) -> Result<Diagnosis> {
    options.validate()?;
    require_net_admin("diagnose an egress router")?;
    let parent = open_parent(spec)?;
    let ns = NsHandle::open(spec.netns(), "netns")?;
    diagnose_in(ns, parent, spec, None, options).await
}

/// Diagnoses `spec`'s router in `ns`, its macvlan's parent in `parent`; with `identity`, only
/// the router a handle applied.
async fn diagnose_in(
    ns: NsHandle,
    parent: Option<NsHandle>,
    spec: &RouterSpec,
    identity: Option<Identity>,
    options: &DiagnoseOptions,
) -> Result<Diagnosis> {
    let span = info_span!("diagnose", router = %spec.name());
    let parent = match (spec.external(), parent) {
        (External::Macvlan(m), Some(ns)) => ParentHint::Spec {
            ns,
            name: m.parent().to_string(),
        },
        _ => ParentHint::Search {
            caller: NsHandle::open(&Netns::Current, "netns")?,
        },
    };
    let what = What {
        name: spec.name().to_string(),
        spec: Some(spec.clone()),
        parent,
        identity,
    };
    let options = options.clone();
    ns.within(move |ns| run(ns, what, options))
        .instrument(span)
        .await
}

impl Router {
    /// Diagnoses this router ([`diagnose_spec`] with its spec), in the namespaces the handle
    /// holds. A router torn down and applied again by someone else since is
    /// [`Error::StaleHandle`]; one that is gone is a diagnosis whose `state` check fails.
    ///
    /// ```no_run
    /// # async fn demo(spec: egress_core::RouterSpec) -> egress_core::Result<()> {
    /// let router = egress_core::apply(&spec).await?;
    /// let d = router.diagnose(&egress_core::DiagnoseOptions::new()).await?;
    /// assert!(!d.failed(), "{d}");
    /// # Ok(()) }
    /// ```
    pub async fn diagnose(&self, options: &DiagnoseOptions) -> Result<Diagnosis> {
        options.validate()?;
        require_net_admin("diagnose an egress router")?;
        diagnose_in(
            self.ns().clone(),
            self.parent().cloned(),
            self.spec(),
            Some(self.identity()),
            options,
        )
        .await
    }
}

/// What to diagnose.
struct What {
    name: String,
    spec: Option<RouterSpec>,
    parent: ParentHint,
    /// The apply id of the router a handle applied: another router of the name is refused.
    identity: Option<Identity>,
}

/// The diagnosis, inside the router's namespace: what the probes need is read first, the
/// rest while they wait for their answers.
async fn run(ns: NsHandle, what: What, options: DiagnoseOptions) -> Result<Diagnosis> {
    let started = Instant::now();
    let mut c = Conn::open(ns.clone())?;
    let now = Current::read(&mut c, &what.name).await?;
    if let (Some(identity), Some(spec)) = (what.identity, &what.spec) {
        identity.check(&now, &what.name, &Desired::with_role(spec, Role::Active))?;
    }
    let table = table_name(&what.name);
    let counters = match now.table {
        Some(_) => c.nft().counters(&table)?,
        None => None,
    };
    // Before the probes: their own connections are tracked too.
    let sysctls = read_sysctls(&c, &now)?;
    let conntrack_entries = sysctls
        .get(&SysctlKey::CONNTRACK_COUNT.path())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stats = match (&counters, &now.table) {
        (Some(counters), Some(state)) => Some(crate::operations::stats::from_counters(
            what.name.clone(),
            state,
            counters,
            conntrack_entries,
        )),
        _ => None,
    };
    let subject = match &what.spec {
        Some(spec) => Subject::of_spec(spec, &now),
        None => Subject::by_name(&what.name, &now, stats.as_ref()),
    };
    let link = match &subject.link {
        Some(l) => link_facts(&c.rt, Some(l), None).await,
        None => None,
    };
    let neighbours = match &link {
        Some(l) => reads::neighbours(&c.rt, l.index).await,
        None => Default::default(),
    };
    let tcp: Vec<SocketAddr> = match subject.exists {
        true => checks::tcp_destinations(&subject, options.fallback_ports()),
        false => Vec::new(),
    };
    let read = started.elapsed();

    let round = match subject.exists {
        true => Some(
            probe::start(&subject, link.as_ref(), &tcp, options.probe_timeout()).wait_beside()?,
        ),
        false => None,
    };
    // While the probes wait.
    let drift = subject.drift(&now);
    let flows = c
        .nft()
        .conntrack()
        .map(|entries| conntrack::dnat_flows(&entries))
        .map_err(|e| e.to_string());
    let parent = match &link {
        Some(l) => find_parent(&ns, &c.rt, l, what.parent).await,
        None => Err("the external link is missing".to_string()),
    };
    let mut routes = Vec::new();
    let clients = flows
        .as_ref()
        .map(|f| checks::clients(f))
        .unwrap_or_default();
    for to in checks::destinations(&subject).into_iter().chain(clients) {
        let from = subject.source_for(to);
        routes.push((to, reads::route_to(&c.rt, to, from).await));
    }
    let beside = started.elapsed();
    let probes = match round {
        Some(waiting) => waiting
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .finish(&subject, parent.as_ref().map_err(String::as_str)),
        None => probe::Probes::default(),
    };
    debug!(
        read_us = read.as_micros() as u64,
        beside_us = (beside - read).as_micros() as u64,
        total_us = started.elapsed().as_micros() as u64,
        "diagnosis read and probed"
    );
    let seen = Seen {
        subject: &subject,
        now: &now,
        drift,
        link,
        parent,
        sysctls,
        neighbours,
        routes,
        stats,
        flows,
        probes,
        timeout: options.probe_timeout(),
        fallback_ports: options.fallback_ports(),
    };
    Ok(Diagnosis {
        router: what.name,
        checks: checks::all(&seen),
    })
}

/// The sysctls the `sysctl` check reads, by path (`net/ipv4/ip_forward`): forwarding, and
/// `rp_filter` of `all` and of every link but `lo` (the router's: its external link and its
/// internal one); and the conntrack count.
fn read_sysctls(c: &Conn, now: &Current) -> Result<std::collections::BTreeMap<String, String>> {
    let mut keys = vec![
        sysctl::forwarding_key(false),
        sysctl::forwarding_key(true),
        SysctlKey::conf(Family::V4, ConfEntry::All, ConfName::RpFilter),
        SysctlKey::CONNTRACK_COUNT,
    ];
    for entry in now
        .links
        .iter()
        .filter(|l| l.name != "lo")
        .filter_map(|l| ConfEntry::link(&l.name))
    {
        keys.push(SysctlKey::conf(
            Family::V4,
            entry.clone(),
            ConfName::RpFilter,
        ));
        keys.push(SysctlKey::knob(Family::V4, entry, Knob::Forwarding));
    }
    let values = procfs::read_many(&c.ns, &keys)?;
    Ok(keys
        .into_iter()
        .zip(values)
        .filter_map(|(k, v)| Some((k.path(), v?.to_string())))
        .collect())
}
