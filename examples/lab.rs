//! The seed's lab on one machine: an egress router between a cluster and an external network,
//! built in throwaway namespaces, proven with real TCP, and torn down without a trace.
//!
//! Run as root: `cargo run --example lab`. Prints each check as it goes and exits non-zero on any
//! failure; its namespaces (`egt-<pid>-…`) are deleted on every exit path.

use std::{
    net::IpAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use egress_core::{blocking, MacvlanMode, Netns, Protocol, RouterSpec};
use egress_lab::{
    ip, Lab, Snapshot, EGRESS_SOURCE4, EGRESS_SOURCE6, FALLBACK4, FALLBACK6, GATEWAY4, GATEWAY6,
    MACVLAN_PARENT, ROUTER_ETH0_4, ROUTER_ETH0_6, ROUTER_INTERNAL, SERVICE_PORT, WEB4, WEB6,
    WEB_PORT,
};

fn usage() {
    eprintln!(
        "usage: cargo run --example lab\n\n\
         Builds the namespaces node, router, client and ext, applies an egress router in\n\
         `router` through egress-core, checks it with real TCP, and tears it down.\n\
         Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): it creates network namespaces."
    );
}

struct Checks {
    failed: usize,
}

impl Checks {
    fn check(&mut self, what: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            println!("  ok    {what}");
        } else {
            self.failed += 1;
            println!("  FAIL  {what}: {detail}");
        }
    }
}

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "-h" || a == "--help") {
        usage();
        return ExitCode::SUCCESS;
    }
    if !nix::unistd::geteuid().is_root() {
        usage();
        return ExitCode::from(2);
    }
    // Everything below owns its namespaces through `Lab`; returning drops it and deletes them.
    match run() {
        Ok(0) => {
            println!("\nall checks passed");
            ExitCode::SUCCESS
        }
        Ok(n) => {
            println!("\n{n} check(s) failed");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("\nerror: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<usize, egress_core::Error> {
    let t = Duration::from_secs(2);
    let mut c = Checks { failed: 0 };
    println!("building namespaces node / router / client / ext");
    let lab = Lab::new();
    let web = lab.ext.serve_http(&[WEB_PORT, SERVICE_PORT]);
    let router_before = Snapshot::take(&lab.router);
    let node_before = Snapshot::take(&lab.node);

    println!("\nbefore the router");
    let direct = lab.client.http_get(ip(WEB4), WEB_PORT, t);
    c.check(
        "client -> web server directly fails",
        direct.is_err(),
        format!("{direct:?}"),
    );

    let spec = RouterSpec::builder("egress-lab")
        .netns(Netns::Path(lab.router.path().into()))
        .macvlan(MACVLAN_PARENT, MacvlanMode::Private)
        .parent_netns(Netns::Path(lab.node.path().into()))
        .internal(ROUTER_INTERNAL)
        .source(EGRESS_SOURCE4)
        .source(EGRESS_SOURCE6)
        .gateway(GATEWAY4)
        .gateway(GATEWAY6)
        .redirect(Protocol::Tcp, SERVICE_PORT, WEB4, Some(WEB_PORT))
        .redirect(Protocol::Tcp, SERVICE_PORT, WEB6, Some(WEB_PORT))
        .fallback(FALLBACK4)
        .fallback(FALLBACK6)
        .build()?;
    println!("\nplan (dry run):\n{}", spec.plan());

    let started = Instant::now();
    let router = blocking::apply(&spec)?;
    let applied = started.elapsed();
    println!("applied in {:.2} ms", applied.as_secs_f64() * 1e3);

    println!("\nthrough the router");
    let source4: IpAddr = ip(EGRESS_SOURCE4.split('/').next().unwrap_or_default());
    let source6: IpAddr = ip(EGRESS_SOURCE6.split('/').next().unwrap_or_default());
    for (via, source, label) in [
        (ROUTER_ETH0_4, source4, "IPv4"),
        (ROUTER_ETH0_6, source6, "IPv6"),
    ] {
        let r = lab.client.http_get(ip(via), SERVICE_PORT, t);
        c.check(
            &format!("{label}: client -> router {via} port {SERVICE_PORT} reaches the web page"),
            r.as_ref()
                .is_ok_and(|b| b.contains(&format!("peer={source} port={WEB_PORT}"))),
            format!("{r:?}"),
        );
        let r = lab.client.http_get(ip(via), WEB_PORT, t);
        c.check(
            &format!("{label}: client -> router {via} port {WEB_PORT} goes to the fallback"),
            r.as_ref()
                .is_ok_and(|b| b.contains(&format!("peer={source} port={WEB_PORT}"))),
            format!("{r:?}"),
        );
    }
    let peers = web.peers();
    c.check(
        "the web server saw only the egress source IPs",
        !peers.is_empty() && peers.iter().all(|p| *p == source4 || *p == source6),
        format!("{peers:?}"),
    );
    let mac = lab.router.link_mac(spec.external().link_name());
    let learned = lab.ext.neighbour_mac(source4);
    c.check(
        &format!("the gateway maps {source4} to the macvlan's MAC {mac}"),
        learned.as_deref() == Some(mac.as_str()),
        format!("{learned:?}"),
    );
    let outside = lab.client.http_get(ip(FALLBACK4), WEB_PORT, t);
    c.check(
        "client -> web server directly still fails (only DNAT-ed traffic is forwarded)",
        outside.is_err(),
        format!("{outside:?}"),
    );

    println!("\nteardown");
    let started = Instant::now();
    blocking::teardown(router)?;
    let torn_down = started.elapsed();
    println!("torn down in {:.2} ms", torn_down.as_secs_f64() * 1e3);
    let state = blocking::inspect(spec.netns(), spec.name())?;
    c.check(
        "nothing owned by the router remains",
        state.is_none(),
        format!("{state:?}"),
    );
    let router_after = Snapshot::take(&lab.router);
    c.check(
        "the router namespace is exactly as before",
        router_before == router_after,
        router_before.diff(&router_after),
    );
    let node_after = Snapshot::take(&lab.node);
    c.check(
        "the node namespace is exactly as before",
        node_before == node_after,
        node_before.diff(&node_after),
    );
    let after = lab.client.http_get(ip(ROUTER_ETH0_4), SERVICE_PORT, t);
    c.check(
        "client -> router no longer reaches the web server",
        after.is_err(),
        format!("{after:?}"),
    );
    println!(
        "\napply {:.2} ms, teardown {:.2} ms",
        applied.as_secs_f64() * 1e3,
        torn_down.as_secs_f64() * 1e3
    );
    Ok(c.failed)
}
