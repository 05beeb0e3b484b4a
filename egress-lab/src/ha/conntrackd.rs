//! conntrackd beside keepalived ([`HaLab::with_conntrackd`]): its configuration, the daemon in
//! each router namespace, and its client commands.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::{HaLab, Node, INTERNAL_VIP, ROUTER_B_ETH0_4, SYNC_A, SYNC_B, SYNC_LINK};
use crate::EGRESS_SOURCE4;

impl HaLab {
    pub(super) fn conntrackd_conf_path(&self, node: Node) -> PathBuf {
        self.dir.join(format!("conntrackd-{}.conf", node.tag()))
    }

    /// Starts conntrackd in `node`'s router namespace (in the foreground, as a child of this
    /// process) and waits until it answers on its socket.
    pub(super) fn start_conntrackd(&self, node: Node) {
        let slots = self.conntrackd.as_ref().expect("a lab with conntrackd");
        assert!(
            slots.lock().unwrap()[node as usize].is_none(),
            "conntrackd runs on {node:?}"
        );
        let tag = node.tag();
        let file = |what: &str| self.dir.join(format!("conntrackd-{tag}.{what}"));
        let (local, peer) = match node {
            Node::A => (SYNC_A, SYNC_B),
            Node::B => (SYNC_B, SYNC_A),
        };
        let conf = self.conntrackd_conf_path(node);
        fs::write(
            &conf,
            conntrackd_conf(local, peer, &file("ctl"), &file("lock"), &file("log")),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", conf.display()));
        let stderr = fs::File::create(file("out")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", self.router(node).name()])
            .arg(conntrackd_binary())
            .arg("-C")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().unwrap())
            .stderr(stderr)
            .spawn()
            .expect("conntrackd (apt-get install conntrackd; scripts/setup.sh)");
        slots.lock().unwrap()[node as usize] = Some(child);
        let start = Instant::now();
        while self.conntrackd(node, &["-s"]).is_err() {
            if start.elapsed() > Duration::from_secs(5) {
                panic!(
                    "conntrackd on {node:?} does not answer after 5 s: {}\n{}",
                    fs::read_to_string(file("out")).unwrap_or_default(),
                    self.logs()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the conntrackd client command `args` against `node`'s daemon (`conntrackd -C CONF
    /// args…` in its router namespace) and returns its output, or the command line, status
    /// and stderr as `Err` when it fails.
    ///
    /// Panics on a lab without conntrackd ([`HaLab::with_conntrackd`]).
    pub fn conntrackd(&self, node: Node, args: &[&str]) -> Result<String, String> {
        assert!(self.conntrackd.is_some(), "a lab without conntrackd");
        let conf = self.conntrackd_conf_path(node);
        let bin = conntrackd_binary();
        let mut cmd = vec![bin.to_str().unwrap(), "-C", conf.to_str().unwrap()];
        cmd.extend_from_slice(args);
        self.router(node).try_exec(&cmd)
    }

    pub(super) fn kill_conntrackd(&self, node: Node) {
        let Some(slots) = &self.conntrackd else {
            return;
        };
        if let Some(mut child) = slots.lock().unwrap()[node as usize].take() {
            let _ = child.kill();
            let _ = child.wait();
            // What a SIGKILLed conntrackd leaves behind and would refuse to start over.
            let tag = node.tag();
            for what in ["lock", "ctl"] {
                let _ = fs::remove_file(self.dir.join(format!("conntrackd-{tag}.{what}")));
            }
        }
    }
}

/// conntrackd's configuration as [`HaLab::with_conntrackd`] runs it (the one docs/ha.md shows):
/// FTFW over UDP from `local` to `peer` on [`SYNC_LINK`]; TCP only; the router's own addresses
/// ignored (connections to or from the routers themselves, keepalived's, the sync link's), so
/// that only the forwarded connections are synced; the control socket, the lock file and the
/// log at the paths given (two instances on one machine must not share them).
pub fn conntrackd_conf(local: &str, peer: &str, socket: &Path, lock: &Path, log: &Path) -> String {
    let own = [
        "127.0.0.1",
        crate::ROUTER_ETH0_4,
        ROUTER_B_ETH0_4,
        INTERNAL_VIP,
        EGRESS_SOURCE4.split('/').next().unwrap(),
        SYNC_A,
        SYNC_B,
    ]
    .map(|a| format!("            IPv4_address {a}\n"))
    .concat();
    format!(
        "Sync {{
    Mode FTFW {{
    }}
    UDP {{
        IPv4_address {local}
        IPv4_Destination_Address {peer}
        Port 3780
        Interface {SYNC_LINK}
        Checksum on
    }}
}}
General {{
    Systemd off
    HashSize 8192
    HashLimit 65536
    LogFile {log}
    Syslog off
    LockFile {lock}
    UNIX {{
        Path {socket}
    }}
    NetlinkBufferSize 2097152
    NetlinkBufferSizeMaxGrowth 8388608
    Filter From Userspace {{
        Protocol Accept {{
            TCP
        }}
        Address Ignore {{
{own}        }}
    }}
}}
",
        log = log.display(),
        lock = lock.display(),
        socket = socket.display(),
    )
}

/// conntrackd, from `PATH` (/usr/sbin on Debian).
pub(super) fn conntrackd_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("conntrackd"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("conntrackd not found (apt-get install conntrackd; scripts/setup.sh)")
        })
}
