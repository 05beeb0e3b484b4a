//! `/metrics` and `/healthz` for a long-running router (`egress-router` legacy mode, or an agent
//! that embeds the library): a minimal HTTP/1.1 responder on a [`TcpListener`], in its own thread.
//!
//! `/metrics` is the OpenMetrics 1.0 text format (what Prometheus asks for first, encoded by the
//! `prometheus-client` crate). Every scrape reads the kernel: the router's counters
//! ([`egress_core::stats`]) and whether the namespace matches the spec ([`egress_core::check`]);
//! only what the watch reports (repairs, their durations) is kept in the process.
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
//!
//! Packets and bytes count both directions of the connections. The traffic counters live in the
//! router's nftables ruleset: a repair that rebuilds the ruleset (someone flushed or edited it)
//! starts them again from 0. They are exported as the kernel has them, so a Prometheus counter
//! reset marks the repair (`rate()` and `increase()` take resets into account), and
//! `egress_router_repairs_total{kind="nat_changed"}` says why.
//!
//! `/healthz` answers 200 `ok` when the namespace matches the spec and 503 with the drift (one
//! line each) otherwise; a Kubernetes readiness and liveness probe. Any other path is 404. The
//! responder reads the kernel only: it never waits for the watch, and a repair never waits for
//! it.

use std::{
    collections::BTreeMap,
    fmt,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    thread::{self, JoinHandle},
    time::Duration,
};

use egress_core::{blocking, Drift, RouterSpec, Stats, WatchEvent};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tracing::{debug, warn};

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

/// What the process knows beyond the kernel: the watch's repairs and the durations.
#[derive(Debug, Default, Clone)]
struct Repairs {
    by_kind: BTreeMap<&'static str, u64>,
    failures: u64,
    last_apply: Option<Duration>,
    last_repair: Option<Duration>,
}

/// The metrics of one router: the spec it compares the kernel with, and what its watch
/// reported. Cheap to clone (the clones share the record).
#[derive(Debug, Clone)]
pub struct Metrics {
    spec: RouterSpec,
    repairs: Arc<Mutex<Repairs>>,
}

impl Metrics {
    /// The metrics of router `spec` (read in its namespace).
    pub fn new(spec: &RouterSpec) -> Metrics {
        Metrics {
            spec: spec.clone(),
            repairs: Arc::default(),
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
            }
            WatchEvent::Failed { .. } => r.failures += 1,
            _ => {}
        }
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Repairs> {
        // A panic while the record is held cannot leave it inconsistent: take it anyway.
        self.repairs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `/metrics`: the kernel's counters and state now, with the watch's record.
    pub fn scrape(&self) -> Result<String, egress_core::Error> {
        let up = blocking::check(&self.spec).is_ok_and(|d| d.is_empty());
        let stats = blocking::stats(self.spec.netns(), self.spec.name())?;
        let repairs = self.record().clone();
        Ok(encode_metrics(
            self.spec.name(),
            up,
            stats.as_ref(),
            &repairs,
        ))
    }

    /// `/healthz`: `Ok` when the kernel matches the spec, else what differs (or why it could
    /// not be read), one line each.
    pub fn health(&self) -> Result<(), String> {
        match blocking::check(&self.spec) {
            Ok(d) if d.is_empty() => Ok(()),
            Ok(d) => Err(d.iter().map(|d| format!("{d}\n")).collect()),
            Err(e) => Err(format!("{e}\n")),
        }
    }

    /// Answers HTTP on `listener` in a thread of its own, one request at a time, until the
    /// process ends. The thread inherits the calling thread's signal mask.
    pub fn serve(self, listener: TcpListener) -> std::io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let result = stream.and_then(|s| self.answer(s));
                    if let Err(e) = result {
                        debug!(error = %e, "metrics: a request failed");
                    }
                }
            })
    }

    fn answer(&self, mut stream: TcpStream) -> std::io::Result<()> {
        // A client that sends nothing (or reads nothing) cannot hold the responder long.
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let request = read_head(&mut stream)?;
        let response = match request.as_deref().map(route) {
            None => Response::text(400, "Bad Request", "bad request\n"),
            Some(Route::NotAllowed) => Response::text(405, "Method Not Allowed", "GET or HEAD\n"),
            Some(Route::NotFound) => {
                Response::text(404, "Not Found", "not found: /metrics or /healthz\n")
            }
            Some(Route::Metrics) => match self.scrape() {
                Ok(body) => Response {
                    status: 200,
                    reason: "OK",
                    content_type: OPENMETRICS,
                    body,
                },
                Err(e) => {
                    warn!(error = %e, "metrics: reading the router's counters failed");
                    Response::text(500, "Internal Server Error", &format!("{e}\n"))
                }
            },
            Some(Route::Healthz) => match self.health() {
                Ok(()) => Response::text(200, "OK", "ok\n"),
                Err(drift) => Response::text(
                    503,
                    "Service Unavailable",
                    &format!(
                        "router {} differs from its configuration:\n{drift}",
                        self.spec.name()
                    ),
                ),
            },
        };
        let head = request.is_some_and(|r| r.starts_with("HEAD "));
        stream.write_all(&response.bytes(head))?;
        stream.flush()
    }
}

const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The request line and headers may take this much; the body (none expected) is not read.
const HEAD_AT_MOST: usize = 8 << 10;
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reads up to the end of the request's headers; its first line, or `None` if it is not HTTP.
fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        if buf.len() > HEAD_AT_MOST {
            return Ok(None);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(std::str::from_utf8(&buf)
        .ok()
        .and_then(|s| s.lines().next())
        .filter(|l| l.ends_with("HTTP/1.1") || l.ends_with("HTTP/1.0"))
        .map(str::to_string))
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Healthz,
    NotFound,
    NotAllowed,
}

/// Where a request line (`GET /metrics HTTP/1.1`) goes.
fn route(line: &str) -> Route {
    let mut words = line.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let route = match path {
        "/metrics" => Route::Metrics,
        "/healthz" => Route::Healthz,
        _ => return Route::NotFound,
    };
    match method {
        "GET" | "HEAD" => route,
        _ => Route::NotAllowed,
    }
}

struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: &str) -> Response {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
        }
    }

    fn bytes(&self, head_only: bool) -> Vec<u8> {
        let allow = if self.status == 405 {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

type Labels = Vec<(&'static str, String)>;

/// The exposition of one scrape (pure: what was read goes in, the text comes out).
fn encode_metrics(router: &str, up: bool, stats: Option<&Stats>, repairs: &Repairs) -> String {
    let mut registry = Registry::default();
    let base = || -> Labels { vec![("router", router.to_string())] };
    let counter = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<Labels, Counter>::default();
        registry.register(name, help, family.clone());
        family
    };
    let gauge = |registry: &mut Registry, name: &str, help: &str| {
        let family = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(name, help, family.clone());
        family
    };
    let up_gauge = gauge(
        &mut registry,
        "egress_router_up",
        "1 when the kernel matches the router's spec, else 0",
    );
    up_gauge.get_or_create(&base()).set(f64::from(u8::from(up)));

    if let Some(s) = stats {
        let [connections, packets, bytes] = [
            ("connections", "Connections redirected (their first packet)"),
            (
                "packets",
                "Packets of the redirected connections, both directions",
            ),
            (
                "bytes",
                "Bytes of the redirected connections, both directions",
            ),
        ]
        .map(|(what, help)| counter(&mut registry, &format!("egress_redirect_{what}"), help));
        for r in &s.redirects {
            let mut labels = base();
            labels.push(("protocol", r.protocol.to_string()));
            labels.push(("port", r.port.to_string()));
            labels.push(("destination", SocketAddr::new(r.to, r.to_port).to_string()));
            connections.get_or_create(&labels).inc_by(r.connections);
            packets.get_or_create(&labels).inc_by(r.packets);
            bytes.get_or_create(&labels).inc_by(r.bytes);
        }
        let [connections, packets, bytes] = [
            (
                "connections",
                "Connections sent to the fallback (their first packet)",
            ),
            (
                "packets",
                "Packets of the fallback's connections, both directions",
            ),
            (
                "bytes",
                "Bytes of the fallback's connections, both directions",
            ),
        ]
        .map(|(what, help)| counter(&mut registry, &format!("egress_fallback_{what}"), help));
        for f in &s.fallback {
            let mut labels = base();
            labels.push(("destination", f.to.to_string()));
            connections.get_or_create(&labels).inc_by(f.connections);
            packets.get_or_create(&labels).inc_by(f.packets);
            bytes.get_or_create(&labels).inc_by(f.bytes);
        }
        let [packets, bytes] = [
            (
                "packets",
                "Packets sent out of the external link from the egress source",
            ),
            (
                "bytes",
                "Bytes sent out of the external link from the egress source",
            ),
        ]
        .map(|(what, help)| counter(&mut registry, &format!("egress_snat_{what}"), help));
        for n in &s.snat {
            let mut labels = base();
            labels.push(("source", n.source.to_string()));
            packets.get_or_create(&labels).inc_by(n.packets);
            bytes.get_or_create(&labels).inc_by(n.bytes);
        }
        gauge(
            &mut registry,
            "egress_conntrack_entries",
            "Connections tracked in the router's namespace now",
        )
        .get_or_create(&base())
        .set(s.conntrack_entries as f64);
    }

    let by_kind = counter(
        &mut registry,
        "egress_router_repairs",
        "Repairs by the watch that fixed a drift of this kind",
    );
    for (kind, n) in &repairs.by_kind {
        let mut labels = base();
        labels.push(("kind", kind.to_string()));
        by_kind.get_or_create(&labels).inc_by(*n);
    }
    counter(
        &mut registry,
        "egress_router_repair_failures",
        "Repairs by the watch that failed (rolled back, tried again)",
    )
    .get_or_create(&base())
    .inc_by(repairs.failures);
    for (name, help, took) in [
        (
            "egress_router_last_apply_duration_seconds",
            "How long the apply (ensure) at start took",
            repairs.last_apply,
        ),
        (
            "egress_router_last_repair_duration_seconds",
            "How long the last repair took, from the change to the verified repair",
            repairs.last_repair,
        ),
    ] {
        let family = gauge(&mut registry, name, help);
        if let Some(took) = took {
            family.get_or_create(&base()).set(took.as_secs_f64());
        }
    }
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
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
    fn requests_are_routed_by_method_and_path() {
        for (line, to) in [
            ("GET /metrics HTTP/1.1", Route::Metrics),
            ("HEAD /metrics?x=1 HTTP/1.0", Route::Metrics),
            ("GET /healthz HTTP/1.1", Route::Healthz),
            ("POST /healthz HTTP/1.1", Route::NotAllowed),
            ("GET / HTTP/1.1", Route::NotFound),
            ("GET /metrics/ HTTP/1.1", Route::NotFound),
            ("GET /healthzz HTTP/1.1", Route::NotFound),
        ] {
            assert_eq!(route(line), to, "{line}");
        }
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
        let mut repairs = Repairs::default();
        let metrics = Metrics {
            spec: egress_core::RouterSpec::builder("r1")
                .adopt("macvlan0")
                .internal("eth0")
                .source("203.0.113.99/24")
                .gateway("203.0.113.1")
                .build()
                .unwrap(),
            repairs: Arc::default(),
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
        repairs.clone_from(&metrics.record());
        let text = encode_metrics("r1", true, Some(&stats), &repairs);
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
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        // No apply recorded: the gauge has no sample.
        assert!(!text.contains("egress_router_last_apply_duration_seconds{"));
    }
}
