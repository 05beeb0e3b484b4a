//! The OpenShift drop-in against what it replaces, process to process: one `egress-router`
//! process in init mode, side by side in one run with a shell doing what OpenShift's egress
//! router image does in its init container (`egress-router.sh`, `EGRESS_ROUTER_MODE=init`):
//! its `ip` calls on `macvlan0` (address, up, the gateway's host route, the default route
//! replaced), `arping -q -A -c 1` in the foreground, then one `nft -f` of its `ip nat` table
//! (a DNAT rule per destination line and the fallback, SNAT on `macvlan0`).
//!
//! Both run in the lab's pod namespace with the SDN's `macvlan0` (down, no address), entered
//! with `nsenter --net` (the same cost for both), with the same `EGRESS_*` values: two TCP
//! redirects and a fallback. Each is checked once with real TCP through the router before the
//! timing. Between two timed runs the router is removed untimed (`egress-router teardown`; for
//! the shell, its table deleted and the namespace's addresses and routes put back), and the pod
//! namespace is compared with its first snapshot at the end. Runs are interleaved, the order
//! rotating, and the bench prints medians and the ratio shell / egress-router. A third leg,
//! `nsenter --net … true`, is the cost of starting any process in the pod's namespace: what
//! egress-router adds to an init container's start is its time minus that one.
//!
//! egress-router does more than the shell (it validates every input before the first change,
//! runs one transaction with rollback, sets forwarding and the forward filter, records what it
//! changed so that teardown can restore it, verifies the result by reading it back); the shell
//! waits for arping, which sends its reply and then waits out its interval.
//!
//! Run as root: `cargo bench --bench openshift_init` (`EGRESS_BENCH_ITERS`, default 30). It
//! builds the release `egress-router` first.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use egress_lab::{
    ip, workspace_binary, Lab, Netns, Snapshot, EGRESS_SOURCE4, FALLBACK4, GATEWAY4,
    ROUTER_INTERNAL, SDN_MACVLAN, SERVICE_PORT, WEB4, WEB_PORT,
};

/// What OpenShift's init container does, with the values of [`vars`].
fn shell_script() -> String {
    let source = EGRESS_SOURCE4.split('/').next().unwrap();
    format!(
        "set -e
ip addr add {EGRESS_SOURCE4} dev {SDN_MACVLAN}
ip link set up dev {SDN_MACVLAN}
ip route add {GATEWAY4}/32 dev {SDN_MACVLAN}
ip route del default
ip route add default via {GATEWAY4} dev {SDN_MACVLAN}
arping -q -A -c 1 -I {SDN_MACVLAN} {source}
nft -f - <<'NFT'
table ip nat {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
  }}
}}
flush table ip nat
add rule ip nat prerouting iifname \"{ROUTER_INTERNAL}\" tcp dport {SERVICE_PORT} dnat to {WEB4}:{WEB_PORT}
add rule ip nat prerouting iifname \"{ROUTER_INTERNAL}\" tcp dport {WEB_PORT} dnat to {WEB4}
add rule ip nat prerouting iifname \"{ROUTER_INTERNAL}\" dnat to {FALLBACK4}
add rule ip nat postrouting oifname \"{SDN_MACVLAN}\" snat to {source}
NFT
"
    )
}

fn vars() -> Vec<(&'static str, String)> {
    vec![
        ("EGRESS_SOURCE", EGRESS_SOURCE4.to_string()),
        ("EGRESS_GATEWAY", GATEWAY4.to_string()),
        (
            "EGRESS_DESTINATION",
            format!("{SERVICE_PORT} tcp {WEB4} {WEB_PORT}\n{WEB_PORT} tcp {WEB4}\n{FALLBACK4}\n"),
        ),
        ("EGRESS_ROUTER_MODE", "init".to_string()),
    ]
}

/// Runs `cmd` inside `ns` (`nsenter --net`), waits for it, and returns how long that took.
fn timed(ns: &Netns, cmd: &[&str], vars: &[(&str, String)], stdin: Option<&str>) -> Duration {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.path().display()))
        .args(cmd)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = c.spawn().expect("nsenter");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().expect("wait");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

struct Legs {
    egress_router: PathBuf,
    /// The pod namespace's default route before any run, as `ip route replace` arguments.
    default_route: Vec<String>,
}

impl Legs {
    fn ours(&self, lab: &Lab) -> Duration {
        let bin = self.egress_router.to_str().unwrap();
        timed(&lab.router, &[bin], &vars(), None)
    }

    fn undo_ours(&self, lab: &Lab) {
        let bin = self.egress_router.to_str().unwrap();
        timed(&lab.router, &[bin, "teardown"], &[], None);
    }

    fn shell(&self, lab: &Lab) -> Duration {
        timed(&lab.router, &["bash", "-s"], &[], Some(&shell_script()))
    }

    fn undo_shell(&self, lab: &Lab) {
        lab.router.exec(&["nft", "delete", "table", "ip", "nat"]);
        lab.router.ip(&["addr", "flush", "dev", SDN_MACVLAN]);
        lab.router.ip(&["link", "set", "down", "dev", SDN_MACVLAN]);
        let mut replace = vec!["route", "replace"];
        replace.extend(self.default_route.iter().map(String::as_str));
        lab.router.ip(&replace);
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("openshift_init: needs root (it builds network namespaces)");
        std::process::exit(2);
    }
    let iters: usize = std::env::var("EGRESS_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let built = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "egress-openshift"])
        .args(["--bin", "egress-router"])
        .status()
        .expect("cargo build");
    assert!(built.success(), "cargo build --release --bin egress-router");
    let egress_router = workspace_binary(
        "egress-router",
        &["egress-core", "egress-openshift"],
        "EGRESS_ROUTER_BIN",
    );

    let lab = Lab::with_adopted_macvlan();
    // An OpenShift pod forwards (the script does not set it): the shell's router needs it.
    lab.router.sysctl_set("net.ipv4.ip_forward", "1");
    let web = lab.ext.serve_http(&[WEB_PORT, 9090]);
    let route = lab.router.ip_json(&["route", "show", "default"]);
    let route = &route[0];
    let default_route = vec![
        "default".to_string(),
        "via".to_string(),
        route["gateway"].as_str().expect("a gateway").to_string(),
        "dev".to_string(),
        route["dev"].as_str().expect("a device").to_string(),
    ];
    let legs = Legs {
        egress_router,
        default_route,
    };
    let before = Snapshot::take(&lab.router);

    // Both make a router that works: each redirect and the fallback, with real TCP.
    legs.ours(&lab);
    lab.assert_redirects_and_fallback4(&web, 9090);
    legs.undo_ours(&lab);
    legs.shell(&lab);
    let body = lab
        .client
        .http_get(
            ip(egress_lab::ROUTER_ETH0_4),
            SERVICE_PORT,
            Duration::from_secs(5),
        )
        .expect("the shell's router carries TCP");
    assert!(
        body.contains(EGRESS_SOURCE4.split('/').next().unwrap()),
        "{body}"
    );
    legs.undo_shell(&lab);
    let diff = before.diff(&Snapshot::take(&lab.router));
    assert!(diff.is_empty(), "the shell's undo left: {diff}");

    let (mut ours, mut shell, mut empty) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..iters {
        for leg in [0, 1, 2].map(|k| (k + i) % 3) {
            match leg {
                0 => {
                    ours.push(legs.ours(&lab));
                    legs.undo_ours(&lab);
                }
                1 => {
                    shell.push(legs.shell(&lab));
                    legs.undo_shell(&lab);
                }
                _ => empty.push(timed(&lab.router, &["true"], &[], None)),
            }
        }
    }
    let diff = before.diff(&Snapshot::take(&lab.router));
    assert!(
        diff.is_empty(),
        "the pod namespace differs after the runs: {diff}"
    );

    let (o, s, e) = (median(&mut ours), median(&mut shell), median(&mut empty));
    println!(
        "init container, process to process, median of {iters} (ms; min-max), load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "  egress-router (init mode)                     {:8.2}  ({:.2}-{:.2})",
        ms(o),
        ms(ours[0]),
        ms(ours[iters - 1])
    );
    println!(
        "  shell: ip, arping -A in the foreground, nft -f {:8.2}  ({:.2}-{:.2})",
        ms(s),
        ms(shell[0]),
        ms(shell[iters - 1])
    );
    println!(
        "  nsenter --net … true (any process)            {:8.2}  ({:.2}-{:.2})",
        ms(e),
        ms(empty[0]),
        ms(empty[iters - 1])
    );
    println!(
        "  ratio shell / egress-router: {:.1}x; egress-router over `true`: {:.2} ms, the shell over \
         `true`: {:.2} ms",
        ms(s) / ms(o),
        ms(o) - ms(e),
        ms(s) - ms(e)
    );
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
