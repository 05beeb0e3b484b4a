//! The lab topology (see the `egress_lab` crate docs) for test suites in other languages: the
//! Python binding's pytest suite and its Ansible test drive it instead of rebuilding the
//! topology themselves.
//!
//! Run as root: `cargo run --example lab-topology`. It builds the four namespaces and prints one
//! JSON line: `{"namespaces": {"node": {"name": …, "path": …}, "router": …, "client": …,
//! "ext": …}, "constants": {"EGRESS_SOURCE4": …, …}}`. Then it answers commands, one per line
//! on stdin, each with one JSON line on stdout:
//!
//! | command          | answer |
//! |------------------|--------|
//! | `snapshot`       | `{"router": [lines], "node": [lines]}`: [`Snapshot`] of both namespaces |
//! | `serve`          | starts the web server in `ext` on `WEB_PORT` and `SERVICE_PORT`: `{"ports": [..]}` |
//! | `get ADDR PORT`  | an HTTP GET from `client`: `{"ok": true, "body": …}` or `{"ok": false, "error": …}` |
//! | `peers`          | `{"peers": [..]}`: every client address the web server saw |
//!
//! A bad command is answered with `{"error": …}`. When stdin closes (the test finished, or the
//! process driving it died) everything is deleted and it exits 0. Its lifetime is its stdin's:
//! SIGINT, SIGTERM and SIGHUP are ignored, so that a Ctrl-C in the terminal reaches the test
//! runner, which then closes stdin, instead of killing this process before it cleans up.

use std::{
    io::{self, BufRead, Write},
    process::ExitCode,
    time::Duration,
};

use egress_lab::{
    Lab, Netns, Snapshot, WebServer, CLIENT4, CLIENT6, EGRESS_SOURCE4, EGRESS_SOURCE6, FALLBACK4,
    FALLBACK6, GATEWAY4, GATEWAY6, GATEWAY_LINK, MACVLAN_PARENT, NODE4, NODE6, ROUTER_ETH0_4,
    ROUTER_ETH0_6, ROUTER_INTERNAL, SERVICE_PORT, WEB4, WEB6, WEB_PORT,
};
use serde_json::{json, Value};

/// How long `get` waits for each of connect, write and read.
const GET_TIMEOUT: Duration = Duration::from_secs(2);

fn usage() {
    eprintln!(
        "usage: cargo run --example lab-topology\n\n\
         Builds the lab's namespaces (node, router, client, ext), prints them as JSON, answers\n\
         commands on stdin (snapshot, serve, get ADDR PORT, peers) and deletes everything when\n\
         stdin closes. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): it creates namespaces."
    );
}

fn main() -> ExitCode {
    if std::env::args().len() > 1 {
        usage();
        return ExitCode::from(2);
    }
    if !nix::unistd::geteuid().is_root() {
        usage();
        return ExitCode::from(2);
    }
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler code; nothing else in this process handles signals.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    let lab = Lab::new();
    let mut web = None;
    let result = serve(&lab, &mut web);
    // Stop the web server before the namespaces go away (Lab's fields drop after `web`).
    drop(web);
    drop(lab);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab-topology: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(lab: &Lab, web: &mut Option<WebServer>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{}", describe(lab))?;
    out.flush()?;
    for line in io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["snapshot"] => json!({
                "router": Snapshot::take(&lab.router).lines(),
                "node": Snapshot::take(&lab.node).lines(),
            }),
            ["serve"] => {
                let server =
                    web.get_or_insert_with(|| lab.ext.serve_http(&[WEB_PORT, SERVICE_PORT]));
                json!({ "ports": server.ports() })
            }
            ["get", addr, port] => get(lab, addr, port),
            ["peers"] => {
                let peers = web.as_ref().map(WebServer::peers).unwrap_or_default();
                json!({ "peers": peers.iter().map(ToString::to_string).collect::<Vec<_>>() })
            }
            _ => json!({ "error": format!("unknown command {line:?}") }),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}

fn get(lab: &Lab, addr: &str, port: &str) -> Value {
    let (Ok(addr), Ok(port)) = (addr.parse(), port.parse()) else {
        return json!({ "error": format!("get {addr} {port}: expected an IP address and a port") });
    };
    match lab.client.http_get(addr, port, GET_TIMEOUT) {
        Ok(body) => json!({ "ok": true, "body": body }),
        Err(error) => json!({ "ok": false, "error": error }),
    }
}

fn describe(lab: &Lab) -> Value {
    let ns = |n: &Netns| json!({ "name": n.name(), "path": n.path() });
    json!({
        "namespaces": {
            "node": ns(&lab.node),
            "router": ns(&lab.router),
            "client": ns(&lab.client),
            "ext": ns(&lab.ext),
        },
        "constants": {
            "NODE4": NODE4, "NODE6": NODE6,
            "ROUTER_ETH0_4": ROUTER_ETH0_4, "ROUTER_ETH0_6": ROUTER_ETH0_6,
            "CLIENT4": CLIENT4, "CLIENT6": CLIENT6,
            "EGRESS_SOURCE4": EGRESS_SOURCE4, "EGRESS_SOURCE6": EGRESS_SOURCE6,
            "GATEWAY4": GATEWAY4, "GATEWAY6": GATEWAY6, "GATEWAY_LINK": GATEWAY_LINK,
            "WEB4": WEB4, "WEB6": WEB6,
            "FALLBACK4": FALLBACK4, "FALLBACK6": FALLBACK6,
            "WEB_PORT": WEB_PORT, "SERVICE_PORT": SERVICE_PORT,
            "MACVLAN_PARENT": MACVLAN_PARENT, "ROUTER_INTERNAL": ROUTER_INTERNAL,
        },
    })
}
