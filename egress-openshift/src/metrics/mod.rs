//! `/metrics` and `/healthz` for a long-running router (`egress-router` legacy mode, or an agent
//! that embeds the library): an HTTP/1.1 server (hyper) on a [`std::net::TcpListener`], in a
//! thread of its own ([`Metrics::serve`]; its deadlines and bounds: [`HEAD_AT_MOST`],
//! [`EXCHANGE_AT_MOST`], [`OPEN_AT_MOST`], [`READS_AT_ONCE`]).
//!
//! `/metrics` is the Prometheus text format 0.0.4, or OpenMetrics 1.0 (encoded by the
//! `prometheus-client` crate) when the scraper's `Accept` asks for it ([`Format::negotiate`]).
//! Every scrape reads the kernel: the router's counters ([`egress_core::stats`]) and whether the
//! namespace matches the spec ([`egress_core::check`]); only what the watch reports (repairs,
//! the role, its failures, durations) is kept in the process ([`Metrics::on_event`]).
//!
//! | Metric | Type | Labels |
//! |---|---|---|
//! | `egress_router_up` | gauge: 1 when the kernel matches the spec | `router` |
//! | `egress_redirect_{connections,packets,bytes}_total` | counter | `router`, `protocol`, `port`, `destination` (`ip:port`, IPv6 bracketed) |
//! | `egress_fallback_{connections,packets,bytes}_total` | counter | `router`, `destination` (the IP) |
//! | `egress_snat_{packets,bytes}_total` | counter | `router`, `source` (the egress IP) |
//! | `egress_conntrack_entries` | gauge: connections tracked in the namespace now | `router` |
//! | `egress_router_repairs_total` | counter: repairs that fixed a drift of this kind | `router`, `kind` ([`egress_core::Drift::kind`]) |
//! | `egress_router_repair_failures_total` | counter: repairs that failed (and were rolled back) | `router` |
//! | `egress_router_last_apply_duration_seconds` | gauge: the apply (`ensure`) at start | `router` |
//! | `egress_router_last_repair_duration_seconds` | gauge: the last repair, from the change to the verified repair | `router` |
//! | `egress_router_role` | gauge: 1 active, 0 standby, as the watch read it | `router` |
//! | `egress_router_role_changes_total` | counter: role changes the watch saw | `router` |
//! | `egress_router_last_promote_seconds` | gauge: the last promotion the watch saw | `router` |
//! | `egress_router_watch_up` | gauge: 1 while the watch runs, 0 while it fails or after it ended | `router` |
//!
//! Packets and bytes count both directions of the connections. The traffic counters live in the
//! router's nftables ruleset: a repair that rebuilds the ruleset (someone flushed or edited it)
//! starts them again from 0. They are exported as the kernel has them, so a Prometheus counter
//! reset marks the repair (`rate()` and `increase()` take resets into account), and
//! `egress_router_repairs_total{kind="nat_changed"}` says why.
//!
//! `/healthz` answers 200 (`ok: active`, `ok: standby`) when the namespace matches the spec and
//! the watch runs, and 503 with why the watch does not run and the drift (one line each)
//! otherwise; a Kubernetes readiness and liveness probe. Any other path is 404. The server reads
//! the kernel only: it never waits for the watch, and a repair never waits for it.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use egress_core::{Drift, Role, RouterSpec, Stats, WatchEvent};

mod exposition;
mod server;

pub use exposition::Format;
use exposition::{Families, Kind, Labels};
pub use server::{EXCHANGE_AT_MOST, HEAD_AT_MOST, OPEN_AT_MOST, READS_AT_ONCE};

/// An address to listen on that is not `IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddrError {
    /// Where it came from: `EGRESS_ROUTER_METRICS` or `--metrics-listen`.
    pub field: String,
    /// The value given.
    pub value: String,
}

impl fmt::Display for ListenAddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} '{}' is invalid: expected IP:PORT, such as 0.0.0.0:9100, 203.0.113.5:9100 or \
             [::1]:9100 (an IP address, not a name; port 1 to 65535)",
            self.field, self.value
        )
    }
}

impl std::error::Error for ListenAddrError {}

/// Parses the address to listen on (`IP:PORT`, IPv6 in brackets), given as `field`.
///
/// ```
/// use egress_openshift::metrics::parse_listen;
/// assert_eq!(parse_listen("--metrics-listen", "[::1]:9100").unwrap().to_string(), "[::1]:9100");
/// assert!(parse_listen("EGRESS_ROUTER_METRICS", "localhost:9100").is_err());
/// ```
pub fn parse_listen(field: &str, value: &str) -> Result<SocketAddr, ListenAddrError> {
    value
        .parse::<SocketAddr>()
        .ok()
        .filter(|a| a.port() != 0)
        .ok_or_else(|| ListenAddrError {
            field: field.to_string(),
            value: value.to_string(),
        })
}

/// `spec` with the listener's port among its local ports ([`egress_core::LocalPort`]), so that
/// connections to it that come in on the internal link (the kubelet's probe, Prometheus's
/// scrape of `podIP:PORT`) reach the listener instead of a redirect or the fallback. The port is
/// kept for TCP, on every address of the router. A loopback listener needs nothing: `spec`
/// comes back as it is. A redirect of the same TCP port is an error that names it (the
/// listener could never be reached).
///
/// ```
/// use egress_openshift::metrics::keep_local;
/// let spec = egress_openshift::from_env([
///     ("EGRESS_SOURCE", "203.0.113.99/24"),
///     ("EGRESS_GATEWAY", "203.0.113.1"),
///     ("EGRESS_DESTINATION", "80 tcp 198.51.100.25 8080\n198.51.100.9"),
/// ])?.spec;
/// let kept = keep_local(spec.clone(), "0.0.0.0:9100".parse().unwrap())?;
/// assert_eq!(kept.local_ports()[0].to_string(), "tcp/9100");
/// assert_eq!(keep_local(spec.clone(), "127.0.0.1:9100".parse().unwrap())?, spec);
/// let e = keep_local(spec, "0.0.0.0:80".parse().unwrap()).unwrap_err();
/// assert_eq!(e.invalid_fields()[0].field, "local_ports[0].port");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn keep_local(spec: RouterSpec, addr: SocketAddr) -> egress_core::Result<RouterSpec> {
    if addr.ip().is_loopback() {
        return Ok(spec);
    }
    let mut json = spec.to_json_value();
    let port = serde_json::json!({"protocol": "tcp", "port": addr.port()});
    match json
        .get_mut("local_ports")
        .and_then(serde_json::Value::as_array_mut)
    {
        Some(ports) => ports.push(port),
        None => json["local_ports"] = serde_json::json!([port]),
    }
    RouterSpec::from_json_value(json)
}

/// What the process knows beyond the kernel: the watch's repairs, the role it reported, its
/// failures, and the durations.
#[derive(Debug, Default, Clone)]
struct Record {
    by_kind: BTreeMap<&'static str, u64>,
    failures: u64,
    last_apply: Option<Duration>,
    last_repair: Option<Duration>,
    /// The role the watch last reported (none yet: no watch feeds this record).
    role: Option<Role>,
    role_changes: u64,
    last_promote: Option<Duration>,
    /// While the watch is not running: why (its last error, or its end).
    watch_down: Option<String>,
}

/// The metrics of one router: the spec it compares the kernel with, and what its watch
/// reported. Cheap to clone (the clones share the record).
#[derive(Debug, Clone)]
pub struct Metrics {
    spec: RouterSpec,
    record: Arc<Mutex<Record>>,
}

/// What `/healthz` answers: the body of a 200 or of a 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The namespace matches the spec and the watch runs: `ok`, and the role when a watch
    /// reported it (`ok: active`, `ok: standby`: a standby is healthy).
    Ok(String),
    /// What differs, or why the watch is not running, one line each.
    Failing(String),
}

impl Metrics {
    /// The metrics of router `spec` (read in its namespace).
    pub fn new(spec: &RouterSpec) -> Metrics {
        Metrics {
            spec: spec.clone(),
            record: Arc::default(),
        }
    }

    /// Records how long the apply (`ensure`) took.
    pub fn applied(&self, took: Duration) {
        self.record().last_apply = Some(took);
    }

    /// Records what a watch reports: pass it to [`egress_core::watch`], or call it from the
    /// callback given there.
    pub fn on_event(&self, event: &WatchEvent) {
        let mut r = self.record();
        match event {
            WatchEvent::Repaired { drift, took } => {
                let mut kinds: Vec<&'static str> = drift.iter().map(Drift::kind).collect();
                kinds.sort_unstable();
                kinds.dedup();
                for kind in kinds {
                    *r.by_kind.entry(kind).or_default() += 1;
                }
                r.last_repair = Some(*took);
                r.watch_down = None;
            }
            WatchEvent::Failed { error, .. } => {
                r.failures += 1;
                r.watch_down = Some(format!("its last repair failed: {error}"));
            }
            WatchEvent::LookFailed { error, retry_in } => {
                r.watch_down = Some(format!(
                    "it could not read the namespace: {error} (next try in {} ms)",
                    retry_in.as_millis()
                ));
            }
            WatchEvent::Resumed => r.watch_down = None,
            WatchEvent::Role { role, took } => {
                if r.role.is_some_and(|was| was != *role) {
                    r.role_changes += 1;
                }
                if let (Role::Active, Some(took)) = (role, took) {
                    r.last_promote = Some(*took);
                }
                r.role = Some(*role);
            }
            WatchEvent::RouterGone => {
                r.watch_down = Some("the router is gone (torn down by someone else)".into());
            }
            _ => {}
        }
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        // A panic while the record is held cannot leave it inconsistent: take it anyway.
        self.record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `/metrics` in `format`: the kernel's counters and state now, with the watch's record.
    pub async fn scrape(&self, format: Format) -> Result<String, egress_core::Error> {
        let (drift, stats) = tokio::join!(
            egress_core::check(&self.spec),
            egress_core::stats(self.spec.netns(), self.spec.name())
        );
        let up = drift.is_ok_and(|d| d.is_empty());
        let families = families(
            self.spec.name(),
            up,
            stats?.as_ref(),
            &self.record().clone(),
        );
        Ok(families.encode(format))
    }

    /// `/healthz`: [`Health::Ok`] when the kernel matches the spec and the watch runs, else
    /// what differs and why the watch does not run.
    pub async fn health(&self) -> Health {
        let (role, down) = {
            let r = self.record();
            (r.role, r.watch_down.clone())
        };
        let name = self.spec.name();
        let mut failing = match down {
            Some(why) => format!("router {name}: the watch is not running: {why}\n"),
            None => String::new(),
        };
        match egress_core::check(&self.spec).await {
            Ok(d) if d.is_empty() => {}
            Ok(d) => {
                failing += &format!("router {name} differs from its configuration:\n");
                failing.extend(d.iter().map(|d| format!("{d}\n")));
            }
            Err(e) => failing += &format!("router {name} cannot be read: {e}\n"),
        }
        match (failing.is_empty(), role) {
            (false, _) => Health::Failing(failing),
            (true, Some(role)) => Health::Ok(format!("ok: {role}\n")),
            (true, None) => Health::Ok("ok\n".into()),
        }
    }
}

/// Counter families that share their rows: family `i` gets each row's `i`-th value.
fn counters<const N: usize>(
    f: &mut Families,
    families: [(&'static str, &'static str); N],
    rows: impl Iterator<Item = (Labels, [u64; N])>,
) {
    let rows: Vec<(Labels, [u64; N])> = rows.collect();
    for (i, (name, help)) in families.into_iter().enumerate() {
        f.family(Kind::Counter, name, help);
        for (labels, values) in &rows {
            f.sample(labels.clone(), values[i] as f64);
        }
    }
}

/// The families of one scrape (pure: what was read goes in, the families come out).
fn families(router: &str, up: bool, stats: Option<&Stats>, record: &Record) -> Families {
    let base = || -> Labels { vec![("router", router.to_string())] };
    let with = |extra: &[(&'static str, String)]| -> Labels {
        let mut labels = base();
        labels.extend(extra.iter().cloned());
        labels
    };
    let mut f = Families::default();
    f.family(
        Kind::Gauge,
        "egress_router_up",
        "1 when the kernel matches the router's spec, else 0",
    );
    f.sample(base(), f64::from(u8::from(up)));
    if let Some(role) = record.role {
        f.family(
            Kind::Gauge,
            "egress_router_role",
            "1 when the router holds the egress identity (active), 0 when it is a standby",
        );
        f.sample(base(), f64::from(u8::from(role == Role::Active)));
        f.family(
            Kind::Counter,
            "egress_router_role_changes",
            "Role changes (promotions and demotions, by any process) the watch saw",
        );
        f.sample(base(), record.role_changes as f64);
        f.family(
            Kind::Gauge,
            "egress_router_watch_up",
            "1 while the watch runs, 0 while its looks or repairs fail or after it ended",
        );
        f.sample(base(), f64::from(u8::from(record.watch_down.is_none())));
    }

    if let Some(s) = stats {
        counters(
            &mut f,
            [
                (
                    "egress_redirect_connections",
                    "Connections redirected (their first packet)",
                ),
                (
                    "egress_redirect_packets",
                    "Packets of the redirected connections, both directions",
                ),
                (
                    "egress_redirect_bytes",
                    "Bytes of the redirected connections, both directions",
                ),
            ],
            s.redirects.iter().map(|r| {
                let labels = with(&[
                    ("protocol", r.protocol.to_string()),
                    ("port", r.port.to_string()),
                    ("destination", SocketAddr::new(r.to, r.to_port).to_string()),
                ]);
                (labels, [r.connections, r.packets, r.bytes])
            }),
        );
        counters(
            &mut f,
            [
                (
                    "egress_fallback_connections",
                    "Connections sent to the fallback (their first packet)",
                ),
                (
                    "egress_fallback_packets",
                    "Packets of the fallback's connections, both directions",
                ),
                (
                    "egress_fallback_bytes",
                    "Bytes of the fallback's connections, both directions",
                ),
            ],
            s.fallback.iter().map(|fb| {
                let labels = with(&[("destination", fb.to.to_string())]);
                (labels, [fb.connections, fb.packets, fb.bytes])
            }),
        );
        counters(
            &mut f,
            [
                (
                    "egress_snat_packets",
                    "Packets sent out of the external link from the egress source",
                ),
                (
                    "egress_snat_bytes",
                    "Bytes sent out of the external link from the egress source",
                ),
            ],
            s.snat.iter().map(|n| {
                (
                    with(&[("source", n.source.to_string())]),
                    [n.packets, n.bytes],
                )
            }),
        );
        f.family(
            Kind::Gauge,
            "egress_conntrack_entries",
            "Connections tracked in the router's namespace now",
        );
        f.sample(base(), s.conntrack_entries as f64);
    }

    f.family(
        Kind::Counter,
        "egress_router_repairs",
        "Repairs by the watch that fixed a drift of this kind",
    );
    for (kind, n) in &record.by_kind {
        f.sample(with(&[("kind", kind.to_string())]), *n as f64);
    }
    f.family(
        Kind::Counter,
        "egress_router_repair_failures",
        "Repairs by the watch that failed (rolled back, tried again)",
    );
    f.sample(base(), record.failures as f64);
    for (name, help, took) in [
        (
            "egress_router_last_apply_duration_seconds",
            "How long the apply (ensure) at start took",
            record.last_apply,
        ),
        (
            "egress_router_last_repair_duration_seconds",
            "How long the last repair took, from the change to the verified repair",
            record.last_repair,
        ),
        (
            "egress_router_last_promote_seconds",
            "How long the last promotion the watch saw took, from its start to the router active",
            record.last_promote,
        ),
    ] {
        f.family(Kind::Gauge, name, help);
        if let Some(took) = took {
            f.sample(base(), took.as_secs_f64());
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use egress_core::{FallbackStats, Protocol, RedirectStats, SnatStats};

    use super::*;

    #[test]
    fn listen_addresses_are_ip_and_port() {
        for ok in ["0.0.0.0:9100", "203.0.113.5:9100", "[::1]:9100", "[::]:1"] {
            assert_eq!(parse_listen("X", ok).unwrap().to_string(), ok);
        }
        for bad in [
            "",
            "9100",
            ":9100",
            "localhost:9100",
            "::1:9100",
            "0.0.0.0:0",
            "0.0.0.0:65536",
            "1.2.3.4",
        ] {
            let e = parse_listen("--metrics-listen", bad).unwrap_err();
            assert!(
                e.to_string().starts_with(&format!(
                    "--metrics-listen '{bad}' is invalid: expected IP:PORT"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn the_listeners_port_is_kept_from_the_dnat_unless_a_redirect_takes_it() {
        let spec = |destination: &str| {
            crate::from_env([
                ("EGRESS_SOURCE", "2001:db8:2::99/64"),
                ("EGRESS_GATEWAY", "2001:db8:2::1"),
                ("EGRESS_DESTINATION", destination),
            ])
            .unwrap()
            .spec
        };
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        let fallback = spec("80 tcp 2001:db8:3::25\n2001:db8:3::9");
        for addr in ["[::]:9100", "[2001:db8:1::2]:9100", "0.0.0.0:9100"] {
            let kept = keep_local(fallback.clone(), at(addr)).unwrap();
            assert_eq!(
                kept.local_ports(),
                [egress_core::LocalPort {
                    protocol: egress_core::Protocol::Tcp,
                    port: 9100
                }],
                "{addr}"
            );
            assert_eq!(kept.redirects(), fallback.redirects());
            assert_eq!(kept.fallback6(), fallback.fallback6());
        }
        assert_eq!(
            keep_local(fallback.clone(), at("[::1]:9100")).unwrap(),
            fallback
        );
        let redirected = spec("9100 tcp 2001:db8:3::25 80");
        let e = keep_local(redirected, at("[::]:9100")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid local_ports[0].port `tcp/9100`: a port no redirect takes (redirects[0] \
             sends tcp/9100 to 2001:db8:3::25)"
        );
    }

    #[test]
    fn the_exposition_names_each_series_with_its_labels() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let stats = Stats {
            name: "r1".into(),
            redirects: vec![RedirectStats {
                protocol: Protocol::Tcp,
                port: 80,
                to: ip("2001:db8:3::25"),
                to_port: 8080,
                connections: 3,
                packets: 30,
                bytes: 3000,
            }],
            fallback: vec![FallbackStats {
                to: ip("198.51.100.9"),
                connections: 2,
                packets: 20,
                bytes: 2000,
            }],
            snat: vec![SnatStats {
                source: ip("203.0.113.99"),
                packets: 50,
                bytes: 5000,
            }],
            conntrack_entries: 4,
        };
        let metrics = Metrics {
            spec: egress_core::RouterSpec::builder("r1")
                .adopt("macvlan0")
                .internal("eth0")
                .source("203.0.113.99/24")
                .gateway("203.0.113.1")
                .build()
                .unwrap(),
            record: Arc::default(),
        };
        metrics.on_event(&WatchEvent::Repaired {
            drift: vec![
                Drift::RouteMissing { route: "a".into() },
                Drift::RouteMissing { route: "b".into() },
                Drift::LinkDown {
                    link: "macvlan0".into(),
                },
            ],
            took: Duration::from_millis(3),
        });
        // Standby at the first look, then promoted (seen under way for 40 ms).
        metrics.on_event(&WatchEvent::Role {
            role: Role::Standby,
            took: None,
        });
        metrics.on_event(&WatchEvent::Role {
            role: Role::Active,
            took: Some(Duration::from_millis(40)),
        });
        let record = metrics.record().clone();
        let text = families("r1", true, Some(&stats), &record)
            .encode(Format::OpenMetrics { version: "1.0.0" });
        for line in [
            "# TYPE egress_router_up gauge",
            "egress_router_up{router=\"r1\"} 1.0",
            "# TYPE egress_redirect_connections counter",
            "egress_redirect_connections_total{router=\"r1\",protocol=\"tcp\",port=\"80\",destination=\"[2001:db8:3::25]:8080\"} 3",
            "egress_redirect_packets_total{router=\"r1\",protocol=\"tcp\",port=\"80\",destination=\"[2001:db8:3::25]:8080\"} 30",
            "egress_redirect_bytes_total{router=\"r1\",protocol=\"tcp\",port=\"80\",destination=\"[2001:db8:3::25]:8080\"} 3000",
            "egress_fallback_connections_total{router=\"r1\",destination=\"198.51.100.9\"} 2",
            "egress_snat_bytes_total{router=\"r1\",source=\"203.0.113.99\"} 5000",
            "egress_conntrack_entries{router=\"r1\"} 4.0",
            "egress_router_repairs_total{router=\"r1\",kind=\"link_down\"} 1",
            "egress_router_repairs_total{router=\"r1\",kind=\"route_missing\"} 1",
            "egress_router_repair_failures_total{router=\"r1\"} 0",
            "egress_router_last_repair_duration_seconds{router=\"r1\"} 0.003",
            "egress_router_role{router=\"r1\"} 1.0",
            "egress_router_role_changes_total{router=\"r1\"} 1",
            "egress_router_watch_up{router=\"r1\"} 1.0",
            "egress_router_last_promote_seconds{router=\"r1\"} 0.04",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        // No apply recorded: the gauge has no sample.
        assert!(!text.contains("egress_router_last_apply_duration_seconds{"));
        // The same families in the text format 0.0.4.
        let text = families("r1", true, Some(&stats), &record).encode(Format::Text);
        for line in [
            "# HELP egress_redirect_connections_total Connections redirected (their first packet).",
            "# TYPE egress_redirect_connections_total counter",
            "egress_redirect_connections_total{router=\"r1\",protocol=\"tcp\",port=\"80\",destination=\"[2001:db8:3::25]:8080\"} 3",
            "egress_router_up{router=\"r1\"} 1",
            "egress_router_role{router=\"r1\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn health_names_why_the_watch_is_not_running_until_it_runs_again() {
        let metrics = Metrics::new(
            &egress_core::RouterSpec::builder("r1")
                .adopt("macvlan0")
                .internal("eth0")
                .source("203.0.113.99/24")
                .gateway("203.0.113.1")
                .build()
                .unwrap(),
        );
        let down = |m: &Metrics| m.record().watch_down.clone();
        metrics.on_event(&WatchEvent::Failed {
            drift: vec![],
            error: "link macvlan0 not found".into(),
        });
        assert_eq!(
            down(&metrics).as_deref(),
            Some("its last repair failed: link macvlan0 not found")
        );
        metrics.on_event(&WatchEvent::Resumed);
        assert_eq!(down(&metrics), None);
        metrics.on_event(&WatchEvent::LookFailed {
            error: "EIO".into(),
            retry_in: Duration::from_millis(400),
        });
        assert_eq!(
            down(&metrics).as_deref(),
            Some("it could not read the namespace: EIO (next try in 400 ms)")
        );
        metrics.on_event(&WatchEvent::Repaired {
            drift: vec![],
            took: Duration::from_millis(1),
        });
        assert_eq!(down(&metrics), None);
        metrics.on_event(&WatchEvent::RouterGone);
        assert!(down(&metrics).unwrap().contains("gone"));
    }
}
