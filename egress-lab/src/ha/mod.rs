//! Two egress router "nodes" elected by real keepalived (VRRPv3, unicast peers), for the
//! failover test (tests/keepalived.rs) and bench (benches/failover.rs).
//!
//! ```text
//!  node A (Lab::node)    ext0 ---+                     +--- gw0: ext (gateway, web server)
//!                                 [br0 in Lab::switch]
//!  node B (attached)     eth0 ---+
//!  router A (Lab::router): macvlan0 on node A's ext0, eth0 192.0.2.2 on cbr0
//!  router B (router_b):    macvlan0 on node B's eth0, eth0 192.0.2.4 on cbr0 (vrouterb)
//!  client: 192.0.2.3 on cbr0, connects to the internal virtual IP 192.0.2.10
//! ```
//! Each keepalived reports its state changes on a notify FIFO the lab reads
//! ([`HaLab::state_changes`], [`HaLab::wait_state`]); [`HaLab::log_role_changes`] has
//! egress-router log its steps with timestamps. [`crate::takeover`] measures what a
//! takeover costs the client.
//! keepalived runs inside each router namespace (`ip netns exec`), elects on the internal
//! segment, holds the internal virtual IP [`INTERNAL_VIP`] on the active router's eth0 and
//! drives the router through its VRRP notify FIFO, which `egress-router keepalived` follows
//! (docs/ha.md); with conntrackd, notify commands run conntrackd's commands around
//! `egress-router promote` / `demote`. Its files (configuration, the
//! notify binary, pid files, logs) are in a private root-owned 0755 folder under /run, as
//! `enable_script_security` wants; only the processes started here are ever killed, by pid.
//!
//! [`HaLab::with_conntrackd`] adds connection tracking sync: a veth [`SYNC_LINK`] between the
//! two router namespaces ([`SYNC_A`], [`SYNC_B`]), a conntrackd (FTFW over UDP on that link,
//! its configuration from [`conntrackd_conf`]) in each router namespace, and notify scripts
//! that run conntrackd's commands around `promote` / `demote` in the order docs/ha.md gives.

use std::{
    fs,
    io::{BufRead, BufReader},
    net::IpAddr,
    os::unix::{
        fs::{OpenOptionsExt, PermissionsExt},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime},
};

use egress_core::{MacvlanMode, Protocol, Role, RouterSpec};
use netlink_packet_route::{
    link::{LinkAttribute, LinkFlags, LinkMessage},
    RouteNetlinkMessage,
};

use crate::{
    ip, workspace_binary, Lab, Netns, EGRESS_SOURCE4, GATEWAY4, GATEWAY_LINK, MACVLAN_PARENT,
    NODE4, NODE_BRIDGE, SERVICE_PORT, SWITCH_BRIDGE, WEB4, WEB_PORT,
};

mod conntrackd;
mod probes;

use self::conntrackd::conntrackd_binary;
pub use self::{
    conntrackd::conntrackd_conf,
    probes::{gap, Attempt, Probes},
};

/// The internal virtual IP keepalived moves with the active router: the client's target.
pub const INTERNAL_VIP: &str = "192.0.2.10";
/// What the follower's notify script writes in [`HaLab::role_change_log`] (with
/// [`HaLab::log_role_changes`]) once `egress-router keepalived` has ended by itself, before
/// its exit status.
pub const FOLLOWER_EXITED: &str = "--- egress-router keepalived exited:";
/// Router B's eth0.
pub const ROUTER_B_ETH0_4: &str = "192.0.2.4";
/// The stable MAC both routers take on promotion (the VRRP virtual MAC of VRID 51).
pub const STABLE_MAC: &str = "00:00:5e:00:01:33";
/// The router's name in both namespaces.
pub const HA_ROUTER: &str = "ha";
/// The dedicated link between the two router namespaces conntrackd syncs over
/// ([`HaLab::with_conntrackd`]).
pub const SYNC_LINK: &str = "sync0";
/// Router A's address on [`SYNC_LINK`] (a /30 out of the cluster's documentation range, more
/// specific than eth0's /24).
pub const SYNC_A: &str = "192.0.2.249";
/// Router B's address on [`SYNC_LINK`].
pub const SYNC_B: &str = "192.0.2.250";

/// The two-node topology without routers or keepalived: [`Lab::with_switch`] (node A, router A
/// on the cluster bridge at 192.0.2.2, the client, the gateway), node B attached to the
/// external switch (its `eth0` the macvlan parent of router B) and router B's namespace on the
/// cluster bridge at [`ROUTER_B_ETH0_4`], default route via the node. For a test that brings its
/// own routers and election (the HA pods of `deploy/kubernetes/egress-router-ha.yaml`).
pub fn two_nodes() -> (Lab, Netns, Netns) {
    let lab = Lab::with_switch();
    let node_b = lab.attach_host("nodeb");
    let router_b = Netns::new("routerb");
    router_b.sysctl_set("net.ipv6.conf.default.accept_dad", "0");
    lab.node.ip(&[
        "link",
        "add",
        "vrouterb",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        router_b.name(),
    ]);
    lab.node
        .ip(&["link", "set", "vrouterb", "master", NODE_BRIDGE, "up"]);
    router_b.ip(&[
        "addr",
        "add",
        &format!("{ROUTER_B_ETH0_4}/24"),
        "dev",
        "eth0",
    ]);
    router_b.ip(&["link", "set", "eth0", "up"]);
    router_b.ip(&["route", "add", "default", "via", NODE4]);
    (lab, node_b, router_b)
}

/// Which node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// Node A: [`Lab::node`] and [`Lab::router`].
    A,
    /// Node B: attached to the switch, router namespace [`HaLab::router_b`].
    B,
}

impl Node {
    /// The other one.
    pub fn other(self) -> Node {
        match self {
            Node::A => Node::B,
            Node::B => Node::A,
        }
    }

    /// Its name in the lab's file names (`a`, `b`).
    fn tag(self) -> &'static str {
        match self {
            Node::A => "a",
            Node::B => "b",
        }
    }
}

/// The two-node topology with keepalived on each router.
pub struct HaLab {
    /// The single-router lab with a switch: node A, router A, the client, the gateway.
    pub lab: Lab,
    /// Node B: `eth0` on the switch (the macvlan parent of router B).
    pub node_b: Netns,
    /// Router B's namespace.
    pub router_b: Netns,
    dir: PathBuf,
    binary: PathBuf,
    advert: Duration,
    keepalived: Mutex<[Option<Child>; 2]>,
    /// keepalived's state changes as its notify FIFO reports them, both nodes, in order.
    states: Arc<Mutex<Vec<StateChange>>>,
    /// The threads reading each running keepalived's notify FIFO.
    fifo_readers: Mutex<[Option<JoinHandle<()>>; 2]>,
    /// Whether `egress-router promote` / `demote` log their steps with timestamps
    /// ([`HaLab::log_role_changes`]).
    role_log: AtomicBool,
    /// `Some` with conntrackd ([`HaLab::with_conntrackd`]): the daemons running, per node.
    conntrackd: Option<Mutex<[Option<Child>; 2]>>,
}

impl HaLab {
    /// Builds the topology and applies a standby router in each router namespace (with the
    /// stable MAC when `stable_mac`); keepalived is not started yet ([`HaLab::start`]).
    /// `advert` is VRRP's advertisement interval.
    pub fn new(stable_mac: bool, advert: Duration) -> HaLab {
        let (lab, node_b, router_b) = two_nodes();
        // The gateway ignores gratuitous ARP for addresses it has no entry for: only the
        // stable MAC (or an entry it learnt by asking) lets it reach the new active router.
        lab.ext.sysctl_set("net.ipv4.conf.all.arp_accept", "0");
        lab.ext
            .sysctl_set(&format!("net.ipv4.conf.{GATEWAY_LINK}.arp_accept"), "0");
        // Found (or its absence reported) before anything is made outside the namespaces.
        let built = workspace_binary(
            "egress-router",
            &["egress-openshift", "egress-core"],
            "EGRESS_ROUTER_BIN",
        );
        let dir = private_dir();
        let binary = dir.join("egress-router");
        if let Err(e) = fs::copy(&built, &binary) {
            let _ = fs::remove_dir_all(&dir);
            panic!("copying {} into {}: {e}", built.display(), dir.display());
        }
        let ha = HaLab {
            lab,
            node_b,
            router_b,
            dir,
            binary,
            advert,
            keepalived: Mutex::new([None, None]),
            states: Arc::new(Mutex::new(Vec::new())),
            fifo_readers: Mutex::new([None, None]),
            role_log: AtomicBool::new(false),
            conntrackd: None,
        };
        for node in [Node::A, Node::B] {
            egress_core::blocking::apply_as(&ha.spec(node, stable_mac), Role::Standby)
                .unwrap_or_else(|e| panic!("standby router on {node:?}: {e}"));
        }
        ha
    }

    /// [`HaLab::new`] with connection tracking sync: the link [`SYNC_LINK`] between the router
    /// namespaces, and [`HaLab::start`] starts conntrackd in the router namespace before
    /// keepalived, whose notify commands are then scripts that run conntrackd's commands:
    /// on `notify_master` commit (`-c`), flush (`-f`), resync (`-R`), bulk send (`-B`), then
    /// `egress-router promote`; on `notify_backup` `egress-router demote`, then shorten the
    /// kernel's timers (`-t`) and ask the peer for a resync (`-n`); on `notify_fault` demote
    /// and `-t`.
    pub fn with_conntrackd(stable_mac: bool, advert: Duration) -> HaLab {
        let mut ha = HaLab::new(stable_mac, advert);
        let (a, b) = (&ha.lab.router, &ha.router_b);
        a.ip(&[
            "link",
            "add",
            SYNC_LINK,
            "type",
            "veth",
            "peer",
            "name",
            SYNC_LINK,
            "netns",
            b.name(),
        ]);
        for (ns, addr) in [(a, SYNC_A), (b, SYNC_B)] {
            ns.ip(&["addr", "add", &format!("{addr}/30"), "dev", SYNC_LINK]);
            ns.ip(&["link", "set", SYNC_LINK, "up"]);
        }
        ha.conntrackd = Some(Mutex::new([None, None]));
        ha
    }

    /// The `egress-router` binary keepalived runs (its FIFO follower, or the notify commands
    /// with conntrackd), in the private folder.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The router namespace of `node`.
    pub fn router(&self, node: Node) -> &Netns {
        match node {
            Node::A => &self.lab.router,
            Node::B => &self.router_b,
        }
    }

    /// The spec of `node`'s router: TCP and UDP [`SERVICE_PORT`] redirected to the web
    /// server's [`WEB_PORT`], three announcements 20 ms apart.
    pub fn spec(&self, node: Node, stable_mac: bool) -> RouterSpec {
        let (parent_ns, parent) = match node {
            Node::A => (&self.lab.node, MACVLAN_PARENT),
            Node::B => (&self.node_b, "eth0"),
        };
        let b = RouterSpec::builder(HA_ROUTER)
            .netns(egress_core::Netns::Path(self.router(node).path().into()))
            .macvlan(parent, MacvlanMode::Private)
            .parent_netns(egress_core::Netns::Path(parent_ns.path().into()))
            .internal("eth0")
            .source(EGRESS_SOURCE4)
            .gateway(GATEWAY4)
            .redirect(Protocol::Tcp, SERVICE_PORT, WEB4, Some(WEB_PORT))
            .redirect(Protocol::Udp, SERVICE_PORT, WEB4, Some(WEB_PORT))
            .announce_spaced(3, Duration::from_millis(20));
        match stable_mac {
            true => b.stable_mac(STABLE_MAC),
            false => b,
        }
        .build()
        .expect("a valid spec")
    }

    fn eth0(node: Node) -> &'static str {
        match node {
            Node::A => crate::ROUTER_ETH0_4,
            Node::B => ROUTER_B_ETH0_4,
        }
    }

    /// Starts keepalived in `node`'s router namespace (state BACKUP, nopreempt: the first to
    /// see no master is elected, and a node that comes back does not take over again).
    pub fn start(&self, node: Node) {
        let i = node as usize;
        assert!(
            self.keepalived.lock().unwrap()[i].is_none(),
            "keepalived runs on {node:?}"
        );
        let tag = node.tag();
        let conf = self.dir.join(format!("keepalived-{tag}.conf"));
        let bin = self.binary.display();
        let logged = self.role_log.load(Ordering::Relaxed);
        // The lab's own view of keepalived's states: the general notify FIFO (keepalived writes
        // every state line to it as well as to the VRRP one).
        let states = self.dir.join(format!("fifo-{tag}"));
        self.read_fifo(node, &states);
        // (lines for global_defs, lines for the vrrp_instance)
        let (global, instance) = match &self.conntrackd {
            // docs/ha.md: egress-router follows keepalived's VRRP notify FIFO, in order.
            None => {
                let follow = format!("{bin} keepalived --name {HA_ROUTER} --instance egress");
                let script = match logged {
                    false => follow,
                    // Every step in JSON, with its timestamp, in notify-<node>.log, and how
                    // the follower ended: the shell outlives keepalived's SIGTERM to the
                    // group (its trap runs once the follower is done) and reports the
                    // follower's exit status, unless keepalived killed them (SIGKILL).
                    true => self.notify_script(
                        node,
                        "follow",
                        &[
                            "export EGRESS_ROUTER_DEBUG=1 EGRESS_LOG_FORMAT=json".into(),
                            "trap : TERM".into(),
                            format!("{follow} \"$@\""),
                            format!("echo \"{FOLLOWER_EXITED} $?\""),
                        ],
                    ),
                };
                let fifo = self.dir.join(format!("vrrp-fifo-{tag}"));
                (
                    format!(
                        "    vrrp_notify_fifo {}\n    vrrp_notify_fifo_script \"{script}\"\n",
                        fifo.display()
                    ),
                    String::new(),
                )
            }
            Some(_) => {
                self.start_conntrackd(node);
                let env = match logged {
                    true => "EGRESS_ROUTER_DEBUG=1 EGRESS_LOG_FORMAT=json ",
                    false => "",
                };
                let promote = format!("{env}{bin} promote --name {HA_ROUTER}");
                let demote = format!("{env}{bin} demote --name {HA_ROUTER}");
                let ctd = |flag: &str| {
                    format!(
                        "{} -C {} {flag} || echo \"conntrackd {flag} failed\"",
                        conntrackd_binary().display(),
                        self.conntrackd_conf_path(node).display()
                    )
                };
                // primary-backup.sh's order: commit the peer's connections before promote
                // claims the egress IP; demote before the kernel's timers are shortened.
                let [master, backup, fault] = [
                    self.notify_script(
                        node,
                        "master",
                        &[ctd("-c"), ctd("-f"), ctd("-R"), ctd("-B"), promote],
                    ),
                    self.notify_script(node, "backup", &[demote.clone(), ctd("-t"), ctd("-n")]),
                    self.notify_script(node, "fault", &[demote, ctd("-t")]),
                ];
                (
                    String::new(),
                    format!(
                        "    notify_master \"{master}\"\n    notify_backup \"{backup}\"\n    \
                         notify_fault \"{fault}\"\n"
                    ),
                )
            }
        };
        fs::write(
            &conf,
            format!(
                "global_defs {{
    router_id egress_{tag}
    vrrp_version 3
    script_user root
    enable_script_security
    vrrp_garp_master_delay 0
    vrrp_priority -20
    fifo_write_vrrp_states_on_reload
    notify_fifo {states}
{global}}}
vrrp_instance egress {{
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int {advert}
    unicast_src_ip {src}
    unicast_peer {{
        {peer}
    }}
    virtual_ipaddress {{
        {INTERNAL_VIP}/24 dev eth0
    }}
{instance}}}
",
                advert = self.advert.as_secs_f64(),
                states = states.display(),
                src = HaLab::eth0(node),
                peer = HaLab::eth0(node.other()),
            ),
        )
        .expect("writing keepalived.conf");
        let pid = |what: &str| self.dir.join(format!("{what}-{tag}.pid"));
        let log = fs::File::create(self.dir.join(format!("keepalived-{tag}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", self.router(node).name(), "keepalived"])
            .process_group(0)
            .args(["-n", "-l", "-D", "-P", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(pid("keepalived"))
            .arg("-r")
            .arg(pid("vrrp"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("keepalived (apt-get install keepalived; scripts/setup.sh)");
        self.keepalived.lock().unwrap()[i] = Some(child);
    }

    /// SIGKILLs `node`'s keepalived (the process started here, its VRRP child and the notify
    /// commands they run: the process group it leads, by its pid; and the VRRP child again by
    /// the pid of its own pid file) and its conntrackd, if any.
    ///
    /// The whole group at once: killed alone, the parent's death would make the VRRP child
    /// (`PR_SET_PDEATHSIG`) shut down gracefully, sending the priority 0 advertisement that
    /// hands over at once, which a node that dies does not send.
    pub fn kill(&self, node: Node) {
        self.kill_and(node, || {});
    }

    /// Reloads `node`'s keepalived (SIGHUP, as `systemctl reload keepalived` does): it
    /// rereads its configuration, keeps its instances' states, and restarts its FIFO script
    /// (SIGTERM to the old one, its FIFO closed without a line, a new one on a new FIFO).
    /// Returns once keepalived logged `Reload complete`; panics after 10 s.
    pub fn reload(&self, node: Node) {
        let log = self.dir.join(format!("keepalived-{}.log", node.tag()));
        let done = || {
            fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("Reload complete")
                .count()
        };
        let before = done();
        self.signal_keepalived(node, libc::SIGHUP);
        let start = Instant::now();
        while done() == before {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{node:?}'s keepalived did not reload in 10 s:\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops `node`'s keepalived as a service manager or the kubelet does (SIGTERM to its
    /// first process: a priority 0 advertisement, SIGTERM to its FIFO script, `STOP` on the
    /// FIFO, a second for its scripts, then it kills what is left and exits), and waits up to
    /// 10 s for it to exit. Its conntrackd, if any, is killed.
    pub fn stop(&self, node: Node) {
        self.signal_keepalived(node, libc::SIGTERM);
        let start = Instant::now();
        loop {
            let exited = match &mut self.keepalived.lock().unwrap()[node as usize] {
                Some(child) => child.try_wait().expect("waiting for keepalived").is_some(),
                None => true,
            };
            if exited {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{node:?}'s keepalived still runs 10 s after its SIGTERM:\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(10));
        }
        // Reaped: nothing of it left to kill. What is: the FIFO's reader, conntrackd.
        self.keepalived.lock().unwrap()[node as usize] = None;
        self.kill(node);
    }

    /// Sends `signal` to `node`'s keepalived, its first process (the one started here).
    fn signal_keepalived(&self, node: Node, signal: libc::c_int) {
        let keepalived = self.keepalived.lock().unwrap();
        let child = keepalived[node as usize]
            .as_ref()
            .unwrap_or_else(|| panic!("keepalived does not run on {node:?}"));
        let pid = i32::try_from(child.id()).expect("a pid fits an i32");
        // SAFETY: kill(2) on the keepalived this lab started (`ip netns exec` execs it), not
        // yet waited for while the lock is held, so the pid is still its own.
        unsafe { libc::kill(pid, signal) };
    }

    /// [`HaLab::kill`], running `meanwhile` once the processes are signalled and before they
    /// are reaped (the wait, and the end of the FIFO's reader, take tens of milliseconds on a
    /// loaded machine).
    fn kill_and(&self, node: Node, meanwhile: impl FnOnce()) {
        self.kill_conntrackd(node);
        let tag = node.tag();
        let child = self.keepalived.lock().unwrap()[node as usize].take();
        if let Some(child) = &child {
            let group = i32::try_from(child.id()).expect("a pid fits an i32");
            // SAFETY: kill(2) on the process group of the keepalived this lab started (it
            // leads it: `process_group(0)`), not yet waited for, so the id is still its own.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        meanwhile();
        if let Some(mut child) = child {
            let vrrp = fs::read_to_string(self.dir.join(format!("vrrp-{tag}.pid")))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok());
            let _ = child.wait();
            if let Some(pid) = vrrp {
                // SAFETY: kill(2) on a pid this lab's keepalived wrote in its private pid
                // file; at worst ESRCH.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = fs::remove_file(self.dir.join(format!("vrrp-{tag}.pid")));
            let _ = fs::remove_file(self.dir.join(format!("keepalived-{tag}.pid")));
        }
        self.stop_fifo_reader(node);
    }

    /// Reads the notify FIFO `fifo` of `node`'s keepalived (made here; keepalived writes a line
    /// per state change, `INSTANCE "egress" MASTER 100`) on a thread that stamps each line as it
    /// arrives, until keepalived is gone.
    fn read_fifo(&self, node: Node, fifo: &Path) {
        let _ = fs::remove_file(fifo);
        nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .unwrap_or_else(|e| panic!("mkfifo {}: {e}", fifo.display()));
        let (path, states) = (fifo.to_path_buf(), self.states.clone());
        let reader = thread::spawn(move || {
            // Blocks until keepalived opens it (or stop_fifo_reader does).
            let Ok(file) = fs::File::open(&path) else {
                return;
            };
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                let (at, wall) = (Instant::now(), SystemTime::now());
                if let Some(state) = line.split_whitespace().nth(2) {
                    states.lock().unwrap().push(StateChange {
                        node,
                        at,
                        wall,
                        state: state.to_string(),
                    });
                }
            }
        });
        self.fifo_readers.lock().unwrap()[node as usize] = Some(reader);
    }

    /// Ends the thread reading `node`'s notify FIFO: once keepalived is gone, the reader sees
    /// the end of the FIFO, or, if keepalived never opened it, the open of a writer that
    /// closes at once.
    fn stop_fifo_reader(&self, node: Node) {
        let Some(reader) = self.fifo_readers.lock().unwrap()[node as usize].take() else {
            return;
        };
        let fifo = self.dir.join(format!("fifo-{}", node.tag()));
        // ENXIO when no reader waits in open: then the reader is reading, or done.
        let _ = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
        let _ = reader.join();
    }

    /// keepalived's state changes so far (both nodes, in the order they arrived), as its
    /// notify FIFO reports them.
    pub fn state_changes(&self) -> Vec<StateChange> {
        self.states.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for `node`'s keepalived to report `state` (`BACKUP`, `MASTER`)
    /// after `since`, and returns when it did; panics with the lab's state otherwise.
    pub fn wait_state(
        &self,
        node: Node,
        state: &str,
        since: Instant,
        timeout: Duration,
    ) -> Instant {
        let start = Instant::now();
        loop {
            let seen = self
                .states
                .lock()
                .unwrap()
                .iter()
                .find(|c| c.node == node && c.state == state && c.at >= since)
                .map(|c| c.at);
            if let Some(at) = seen {
                return at;
            }
            if start.elapsed() > timeout {
                panic!(
                    "{node:?}'s keepalived did not report {state} in {timeout:?}:\n{}",
                    self.state()
                );
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// From now on, the `egress-router` keepalived starts (the FIFO follower, or `promote` and
    /// `demote` in the notify commands) logs every step in JSON with a timestamp
    /// (`EGRESS_ROUTER_DEBUG=1 EGRESS_LOG_FORMAT=json`), into [`HaLab::role_change_log`]; for
    /// keepalived started after this call. It then runs through a notify script (`/bin/sh`,
    /// one more exec).
    pub fn log_role_changes(&self) {
        self.role_log.store(true, Ordering::Relaxed);
    }

    /// What the notify commands of `node` wrote (with [`HaLab::log_role_changes`], or with
    /// conntrackd): a `--- master` / `--- backup` / `--- fault` line per run, then its output.
    pub fn role_change_log(&self, node: Node) -> String {
        fs::read_to_string(self.dir.join(format!("notify-{}.log", node.tag()))).unwrap_or_default()
    }

    /// `node` dies: its keepalived (and conntrackd) is killed and its links are cut (the
    /// internal veth on the node bridge, the external NIC under its macvlan, the sync link).
    /// Its router still holds what it held, unreachable.
    pub fn fail(&self, node: Node) {
        self.kill_and(node, || self.set_links(node, false));
    }

    /// `node` comes back as a standby: its router demoted, the internal virtual IP gone from
    /// its eth0, its links up, its neighbour table empty, its address made known to the active
    /// node, keepalived started again; returns once that keepalived reports `BACKUP` (a node
    /// whose keepalived is still starting is no standby yet: a failure then waits for it).
    pub fn recover(&self, node: Node) {
        let router = self.router(node);
        router.exec(&[self.binary.to_str().unwrap(), "demote", "--name", HA_ROUTER]);
        let _ = router.try_exec(&[
            "ip",
            "addr",
            "del",
            &format!("{INTERNAL_VIP}/24"),
            "dev",
            "eth0",
        ]);
        self.set_links(node, true);
        // keepalived starts only once its link carries: one that starts in BACKUP before its
        // veth's carrier is up hears no advertisement, becomes master beside the active node
        // and, the higher address winning between equal priorities, may take over from it
        // (seen: a recovered node took the virtual IP back, and the client's neighbour entry
        // was left on the other node; no service until it went stale).
        let start = Instant::now();
        while !carries(router, "eth0") {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{node:?}'s eth0 has no carrier 5 s after its links came up"
            );
            thread::sleep(Duration::from_millis(2));
        }
        // A node that comes back (rebooted, its pod restarted) starts with an empty neighbour
        // table. Without this, what its kernel wanted to send while its links were cut (a
        // server's answer forwarded towards the client in the instant between the two cuts)
        // left an unresolved entry, which asks again only after retrans_time (1 s): the
        // router's first answers after its promotion waited in that queue (seen: 520 ms).
        router.ip(&["neigh", "flush", "all"]);
        // And it makes itself known to the active node, whose entry for this address is
        // unresolved (its advertisements went nowhere while this node was gone) and would wait
        // up to 1 s before asking again; meanwhile this keepalived would hear nothing and
        // become master beside it (seen, and then the higher address took over).
        let peer = ip(HaLab::eth0(node.other()));
        assert!(
            crate::ping(router, peer),
            "{node:?} cannot reach {peer} after its links came up"
        );
        let since = Instant::now();
        self.start(node);
        self.wait_state(node, "BACKUP", since, Duration::from_secs(10));
    }

    /// Sets `node`'s links up or down, each with one netlink request from this process (an
    /// `ip` command per link took 30 ms median, up to 370 ms, on a loaded machine: a node
    /// "dying" over that long still forwards meanwhile).
    fn set_links(&self, node: Node, up: bool) {
        let (internal, ext_ns, ext) = match node {
            Node::A => ("vrouter", &self.lab.node, MACVLAN_PARENT),
            Node::B => ("vrouterb", &self.node_b, "eth0"),
        };
        let mut links = vec![(&self.lab.node, internal), (ext_ns, ext)];
        if self.conntrackd.is_some() {
            links.push((self.router(node), SYNC_LINK));
        }
        for (ns, link) in links {
            let mut m = LinkMessage::default();
            m.header.change_mask = LinkFlags::Up;
            if up {
                m.header.flags = LinkFlags::Up;
            }
            m.attributes.push(LinkAttribute::IfName(link.to_string()));
            ns.rtnetlink(RouteNetlinkMessage::SetLink(m), 0)
                .unwrap_or_else(|e| panic!("setting {link} in {} up={up}: {e}", ns.name()));
        }
    }

    /// The node whose router holds the egress address, if exactly one does.
    pub fn active(&self) -> Option<Node> {
        let holds = |n: Node| {
            self.router(n)
                .ip(&["-4", "addr", "show", "dev", "macvlan0"])
                .contains(EGRESS_SOURCE4)
        };
        match (holds(Node::A), holds(Node::B)) {
            (true, false) => Some(Node::A),
            (false, true) => Some(Node::B),
            _ => None,
        }
    }

    /// Waits up to `timeout` for one router to be active and the other standby; panics
    /// with keepalived's logs otherwise.
    pub fn wait_active(&self, timeout: Duration) -> Node {
        let start = Instant::now();
        loop {
            if let Some(n) = self.active() {
                return n;
            }
            if start.elapsed() > timeout {
                panic!(
                    "no single active router after {timeout:?}:\n{}",
                    self.logs()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits up to `timeout` for the router of the other node than `old` to be the one
    /// active; panics with keepalived's logs otherwise.
    pub fn wait_active_other(&self, old: Node, timeout: Duration) -> Node {
        let start = Instant::now();
        loop {
            let holds = self
                .router(old.other())
                .ip(&["-4", "addr", "show", "dev", "macvlan0"])
                .contains(EGRESS_SOURCE4);
            if holds {
                return old.other();
            }
            if start.elapsed() > timeout {
                panic!(
                    "{:?} did not take over in {timeout:?}:\n{}",
                    old.other(),
                    self.logs()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// What each router holds (its links and addresses, its role as `egress-router inspect`
    /// reads it), the switch's forwarding table and the gateway's and client's neighbours, then
    /// [`HaLab::logs`]: for the failure message of a takeover that did not serve.
    pub fn state(&self) -> String {
        let mut out = Vec::new();
        for node in [Node::A, Node::B] {
            let r = self.router(node);
            out.push(format!(
                "--- router {node:?}\n{}{}",
                r.try_exec(&["ip", "-br", "addr"]).unwrap_or_else(|e| e),
                r.try_exec(&[
                    self.binary.to_str().unwrap(),
                    "inspect",
                    "--name",
                    HA_ROUTER
                ])
                .unwrap_or_else(|e| e),
            ));
        }
        if let Some(switch) = &self.lab.switch {
            out.push(format!(
                "--- switch fdb\n{}",
                switch
                    .try_exec(&["bridge", "fdb", "show", "br", SWITCH_BRIDGE])
                    .unwrap_or_else(|e| e)
            ));
        }
        for (what, ns) in [("gateway", &self.lab.ext), ("client", &self.lab.client)] {
            out.push(format!(
                "--- {what} neighbours\n{}",
                ns.try_exec(&["ip", "neigh"]).unwrap_or_else(|e| e)
            ));
        }
        out.push(self.logs());
        out.join("\n")
    }

    /// keepalived's logs (and the notify scripts', with conntrackd or
    /// [`HaLab::log_role_changes`]; conntrackd's, with conntrackd), for failure messages.
    pub fn logs(&self) -> String {
        let mut files = vec!["keepalived-a.log", "keepalived-b.log"];
        if self.conntrackd.is_some() || self.role_log.load(Ordering::Relaxed) {
            files.extend(["notify-a.log", "notify-b.log"]);
        }
        if self.conntrackd.is_some() {
            files.extend(["conntrackd-a.log", "conntrackd-b.log"]);
        }
        files
            .iter()
            .map(|f| {
                let log = fs::read_to_string(self.dir.join(f)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                format!(
                    "--- {f} (last lines)\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Writes the notify script `what` of `node` (root-owned, 0755, in the private folder):
    /// `lines` in order, with their output appended to `notify-<node>.log`. Returns its path.
    fn notify_script(&self, node: Node, what: &str, lines: &[String]) -> String {
        let tag = node.tag();
        let script = self.dir.join(format!("notify-{what}-{tag}.sh"));
        let log = self.dir.join(format!("notify-{tag}.log"));
        let mut body = format!(
            "#!/bin/sh\nexec >>{} 2>&1\necho \"--- {what}\"\n",
            log.display()
        );
        for line in lines {
            body.push_str(line);
            body.push('\n');
        }
        fs::write(&script, body).unwrap_or_else(|e| panic!("writing {}: {e}", script.display()));
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        script.display().to_string()
    }
}

/// A state change of a keepalived, as its notify FIFO reported it.
#[derive(Debug, Clone)]
pub struct StateChange {
    /// Whose keepalived.
    pub node: Node,
    /// When the line arrived.
    pub at: Instant,
    /// The same moment on the wall clock (to set beside timestamps other tools print).
    pub wall: SystemTime,
    /// The state entered: `BACKUP`, `MASTER`, `FAULT`, `STOP`.
    pub state: String,
}

impl Drop for HaLab {
    fn drop(&mut self) {
        for node in [Node::A, Node::B] {
            self.kill(node);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A fresh folder under /run, root-owned, 0755 (keepalived's `enable_script_security` refuses
/// scripts in folders others can write).
fn private_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new("/run").join(format!(
        "egt-{}-ka-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The egress address as an `IpAddr`.
pub fn egress_ip() -> IpAddr {
    ip(EGRESS_SOURCE4.split('/').next().unwrap())
}

/// Whether `link` in `ns` is up with a carrier (`ip link`: no `NO-CARRIER`, operstate `UP`).
fn carries(ns: &Netns, link: &str) -> bool {
    let links = ns.ip_json(&["link", "show", "dev", link]);
    links[0]["operstate"] == "UP"
        && !links[0]["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "NO-CARRIER"))
}
