//! The HA pair of `deploy/kubernetes/egress-router-ha.yaml` run under podman in the lab's two
//! nodes (`egress_lab::ha::two_nodes`), the way tests/packaging.rs runs the other manifests'
//! pods: the kubelet's part by hand, the containers by podman.
//!
//! Why not `podman kube play`: podman 4.3 has no Multus (the NetworkAttachmentDefinition is what
//! makes each pod a router) and would make a network of its own; each pod here joins a lab
//! namespace instead, as its sandbox, after egress-cni's ADD with the manifest's configuration
//! (from the node's namespace, as Multus runs it). Then the keepalived sidecar starts from the
//! keepalived image with the manifest's securityContext and its volumes made as the kubelet
//! makes them, mounted where the manifest mounts them: the ConfigMap's keepalived.conf, and the
//! empty directory in which keepalived creates its notify FIFO and starts `egress-router
//! keepalived` on it (the only thing in the pod that promotes or demotes). The Service is
//! played as kube-proxy plays it: a DNAT in the client's namespace from the Service's address
//! to the pod whose readiness probe (the manifest's, run with `podman exec` as the kubelet runs
//! it) passes.
//!
//! The test: one pod becomes active, and only it is ready; the client's requests to the
//! Service reach the web server from the egress address; the active pod is killed (keepalived
//! SIGKILLed, then its network removed: egress-cni's DEL, as the kubelet does for a deleted
//! pod); the other pod promotes, becomes the only ready one, and the client's requests go
//! through it again. Then the survivor is deleted (SIGTERM): its router is a standby, the
//! demotion complete, by the time its container has ended, before egress-cni's DEL.

use std::{
    fs,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use egress_core::{blocking, Netns as CoreNetns, Role};
use egress_lab::{
    ha::{two_nodes, ROUTER_B_ETH0_4},
    ip, Netns, Snapshot, EGRESS_SOURCE4, MACVLAN_PARENT, ROUTER_ETH0_4, WEB_PORT,
};
use serde_json::{json, Value};

use super::{env, network, of_kind, podman_ok, strings, Container};

/// The address the Service has in the lab (its ClusterIP): the client connects there.
const SERVICE_IP: &str = "192.0.2.100";
/// How long a takeover may take here, end to end (kill → the Service serves again): keepalived
/// notices after ~3 advertisements of 100 ms, the readiness probe is run every 50 ms.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(10);

/// One HA pod: its sandbox (a lab namespace), the node it runs on, and its keepalived.
struct Pod<'a> {
    tag: &'static str,
    sandbox: &'a Netns,
    node: &'a Netns,
    master: &'static str,
    eth0: &'static str,
    keepalived: Option<Container>,
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// egress-cni (the shipped, static one: `EGRESS_CNI_BIN`) with `command` for `pod`, from its
/// node's namespace, as Multus runs it.
fn cni(pod: &Pod, command: &str, config: &Value) -> String {
    let mut config = config.clone();
    config["interfaceArgs"]["master"] = json!(pod.master);
    let id = format!("ha-pod-{}", pod.tag);
    pod.node.run_cni_plugin(
        Path::new(&env("EGRESS_CNI_BIN")),
        &[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", &id),
            ("CNI_NETNS", pod.sandbox.path().to_str().unwrap()),
            ("CNI_IFNAME", "net1"),
            ("CNI_PATH", "/opt/cni/bin"),
        ],
        &config.to_string(),
    )
}

/// Whether `pod`'s router holds the egress address.
fn holds(pod: &Pod) -> bool {
    pod.sandbox
        .ip(&["-4", "addr", "show", "dev", "net1"])
        .contains(EGRESS_SOURCE4)
}

/// The role `pod`'s router `name` has, as its role marker says (a role change completes by
/// replacing it, last).
fn role(pod: &Pod, name: &str) -> Role {
    blocking::inspect(&CoreNetns::Path(pod.sandbox.path().into()), name)
        .unwrap()
        .unwrap_or_else(|| panic!("pod {}: no router {name}", pod.tag))
        .role
}

/// The container `c`'s volumes, made for pod `tag` as the kubelet makes them, as podman
/// `--volume` arguments: a ConfigMap's data as files in a folder (read-only where the mount
/// says so), an emptyDir as an empty folder, world-writable as the kubelet makes it. Each
/// folder goes when the returned [`Dir`]s (each with its mount path) are dropped.
fn volumes(
    docs: &[Value],
    pod_spec: &Value,
    c: &Value,
    tag: &str,
) -> (Vec<String>, Vec<(String, Dir)>) {
    let (mut args, mut dirs) = (Vec::new(), Vec::new());
    for mount in c["volumeMounts"].as_array().unwrap() {
        let name = mount["name"].as_str().unwrap();
        let volume = pod_spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"));
        let dir = Dir::new(&format!("{tag}-{name}"));
        if let Some(map) = volume["configMap"]["name"].as_str() {
            let data = docs
                .iter()
                .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == map)
                .unwrap_or_else(|| panic!("no ConfigMap {map}"));
            for (file, text) in data["data"].as_object().unwrap() {
                fs::write(dir.0.join(file), text.as_str().unwrap()).unwrap();
            }
        } else {
            assert!(volume["emptyDir"].is_object(), "volume {name}: {volume}");
            fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o777)).unwrap();
        }
        let mode = match mount["readOnly"].as_bool() {
            Some(true) => ":ro",
            _ => "",
        };
        let path = mount["mountPath"].as_str().unwrap();
        args.push("--volume".to_string());
        args.push(format!("{}:{path}{mode}", dir.0.display()));
        dirs.push((path.to_string(), dir));
    }
    (args, dirs)
}

/// The manifest's readiness probe in `pod`'s keepalived container (`podman exec`, as the
/// kubelet execs it): passed or not.
fn ready(pod: &Pod, probe: &[String]) -> bool {
    let Some(c) = &pod.keepalived else {
        return false;
    };
    c.exec(probe) == Some(0)
}

/// kube-proxy's part: the Service's address in the client's namespace goes to `eth0`.
fn route_service(client: &Netns, ports: &[u64], eth0: &str) {
    let ports: Vec<String> = ports.iter().map(u64::to_string).collect();
    client.nft(&format!(
        "table ip egt_service {{}}
         flush table ip egt_service
         table ip egt_service {{
             chain output {{
                 type nat hook output priority -100; policy accept;
                 ip daddr {SERVICE_IP} tcp dport {{ {} }} dnat to {eth0}
             }}
         }}",
        ports.join(", ")
    ));
}

#[test]
fn the_ha_manifests_pair_fails_over_under_podman_and_the_service_follows() {
    let image = env("EGRESS_HA_IMAGE");
    let started = Instant::now();
    let docs = documents(
        &fs::read_to_string(super::repo().join("deploy/kubernetes/egress-router-ha.yaml")).unwrap(),
    );
    let nad = of_kind(&docs, "NetworkAttachmentDefinition");
    let config: Value = serde_json::from_str(nad["spec"]["config"].as_str().unwrap()).unwrap();
    let keepalived_conf = of_kind(&docs, "ConfigMap")["data"]["keepalived.conf"]
        .as_str()
        .unwrap()
        .to_string();
    let deployment = of_kind(&docs, "Deployment");
    let pod_spec = &deployment["spec"]["template"]["spec"];
    let c = super::container(deployment);
    assert_eq!(c["image"], image.as_str());
    let probe = strings(&c["readinessProbe"]["exec"]["command"]);
    let caps = strings(&c["securityContext"]["capabilities"]["add"]);
    assert_eq!(
        strings(&c["securityContext"]["capabilities"]["drop"]),
        ["ALL"]
    );
    let router = config["routerName"].as_str().unwrap().to_string();
    // egress-router follows keepalived through its notify FIFO, in a folder the pod mounts
    // empty; no notify command (each its own process: they can finish out of order).
    let fifo = keepalived_conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("vrrp_notify_fifo "))
        .expect("a vrrp_notify_fifo");
    assert!(
        !keepalived_conf.contains("notify_master"),
        "{keepalived_conf}"
    );
    let (fifo_mount, fifo_file) = fifo.rsplit_once('/').unwrap();
    let service_ports: Vec<u64> = of_kind(&docs, "Service")["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    // The manifest's rules, which the lab's web server answers: 80 -> WEB4:8080.
    assert!(service_ports.contains(&80), "{service_ports:?}");

    let (lab, node_b, router_b) = two_nodes();
    let _web = lab.ext.serve_http(&[WEB_PORT, 443]);

    let mut pods = [
        Pod {
            tag: "a",
            sandbox: &lab.router,
            node: &lab.node,
            master: MACVLAN_PARENT,
            eth0: ROUTER_ETH0_4,
            keepalived: None,
        },
        Pod {
            tag: "b",
            sandbox: &router_b,
            node: &node_b,
            master: "eth0",
            eth0: ROUTER_B_ETH0_4,
            keepalived: None,
        },
    ];
    let before: Vec<Snapshot> = pods.iter().map(|p| Snapshot::take(p.sandbox)).collect();
    // The kubelet's part for each pod: its network (a standby router), its volumes, then its
    // container.
    let cap_add = caps.join(",");
    // The pods' volumes, kept to the end of the test.
    let mut volume_dirs = Vec::new();
    // One pod after the other, as a rollout starts them: the first is elected (no master to
    // hear) and promotes; the second, started once the first is active, stays a standby.
    for pod in &mut pods {
        cni(pod, "ADD", &config);
        assert!(
            !holds(pod),
            "pod {}: a standby holds no egress address",
            pod.tag
        );
        let net = network(pod.sandbox);
        let (volume_args, pod_dirs) = volumes(&docs, pod_spec, c, pod.tag);
        let user = c["securityContext"]["runAsUser"].to_string();
        let mut args = vec![
            "--network",
            &net,
            "--user",
            &user,
            "--cap-drop",
            "all",
            "--cap-add",
            &cap_add,
        ];
        args.extend(volume_args.iter().map(String::as_str));
        args.push(&image);
        let container = Container::start(&format!("ha-{}", pod.tag), &args);
        container.wait_for("Entering BACKUP STATE", 1);
        // keepalived made its FIFO in the empty folder (before it started the follower).
        let (_, fifo_dir) = pod_dirs
            .iter()
            .find(|(path, _)| path == fifo_mount)
            .unwrap_or_else(|| panic!("nothing mounted at {fifo_mount}"));
        let made = fs::metadata(fifo_dir.0.join(fifo_file)).map(|m| m.file_type().is_fifo());
        assert!(
            matches!(made, Ok(true)),
            "pod {}: no FIFO {fifo} ({made:?}):\n{}",
            pod.tag,
            container.logs()
        );
        volume_dirs.push(pod_dirs);
        pod.keepalived = Some(container);
        if pod.tag == "a" {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !holds(pod) {
                assert!(
                    Instant::now() < deadline,
                    "pod a was not elected in 10 s:\n{}",
                    pod.keepalived.as_ref().unwrap().logs()
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    // Over a few advertisements, the second stays a standby.
    thread::sleep(Duration::from_millis(500));
    let active = 0;
    assert!(holds(&pods[0]) && !holds(&pods[1]), "{}", logs(&pods));
    let standby = 1 - active;
    assert!(ready(&pods[active], &probe), "{}", logs(&pods));
    assert!(!ready(&pods[standby], &probe), "a standby is not ready");
    route_service(&lab.client, &service_ports, pods[active].eth0);
    let get = || {
        lab.client
            .http_get(ip(SERVICE_IP), 80, Duration::from_millis(500))
    };
    let body = get().unwrap_or_else(|e| panic!("{e}\n{}", logs(&pods)));
    assert_eq!(
        body.trim(),
        format!("peer={} port={WEB_PORT}", ip(EGRESS_SOURCE4))
    );

    // The active pod is killed: keepalived SIGKILLed (no goodbye advertisement), then its
    // network removed as the kubelet removes a deleted pod's.
    let killed_at = Instant::now();
    let dead = pods[active].keepalived.take().unwrap();
    podman_ok(&["kill", "--signal", "KILL", &dead.0]);
    cni(&pods[active], "DEL", &config);
    drop(dead);
    // The other is elected, promotes and becomes ready; kube-proxy follows; the client's
    // requests go through it.
    let takeover = loop {
        if ready(&pods[standby], &probe) {
            route_service(&lab.client, &service_ports, pods[standby].eth0);
            if let Ok(body) = get() {
                assert_eq!(
                    body.trim(),
                    format!("peer={} port={WEB_PORT}", ip(EGRESS_SOURCE4))
                );
                break killed_at.elapsed();
            }
        }
        assert!(
            killed_at.elapsed() < TAKEOVER_LIMIT,
            "pod {} did not take over in {TAKEOVER_LIMIT:?}:\n{}",
            pods[standby].tag,
            logs(&pods)
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert!(holds(&pods[standby]));
    // The killed pod's sandbox is exactly as before its ADD, but for keepalived's virtual IP,
    // which a SIGKILLed keepalived cannot take back (a deleted pod's namespace goes with it).
    let vip = keepalived_conf
        .lines()
        .find_map(|l| l.trim().strip_suffix(" dev lo"))
        .expect("the virtual IP on lo");
    pods[active].sandbox.ip(&["addr", "del", vip, "dev", "lo"]);
    let after = Snapshot::take(pods[active].sandbox);
    assert!(before[active] == after, "{}", before[active].diff(&after));
    eprintln!(
        "HA pair under podman: takeover (kill -> the Service serves again) {} ms; the test {} ms",
        takeover.as_millis(),
        started.elapsed().as_millis()
    );

    // The survivor's pod is deleted too: SIGTERM. keepalived gives up mastership, sends its
    // scripts SIGTERM and writes STOP, on which the follower demotes the router; keepalived
    // waits for its scripts (up to a second) before it exits, and the container's processes
    // end with it (its PID namespace): what the router is once the container has stopped,
    // the follower made it before, and before the pod's network goes.
    assert_eq!(role(&pods[standby], &router), Role::Active);
    let survivor = pods[standby].keepalived.take().unwrap();
    let stopping = Instant::now();
    assert_eq!(survivor.stop(10), 0, "{}", survivor.logs());
    let stopped = stopping.elapsed();
    assert!(!holds(&pods[standby]), "SIGTERM did not demote");
    // The role marker is replaced last: a demotion cut short leaves the router active.
    assert_eq!(
        role(&pods[standby], &router),
        Role::Standby,
        "the demotion did not complete"
    );
    eprintln!(
        "HA pair under podman: the survivor's SIGTERM -> container stopped, router a standby: \
         {} ms",
        stopped.as_millis()
    );
    cni(&pods[standby], "DEL", &config);
    let after = Snapshot::take(pods[standby].sandbox);
    assert!(before[standby] == after, "{}", before[standby].diff(&after));
}

/// A private folder, removed when dropped (also after a failed assertion).
struct Dir(PathBuf);

impl Dir {
    fn new(what: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("egt-{}-{what}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Both keepalived containers' output, for a failure message.
fn logs(pods: &[Pod]) -> String {
    pods.iter()
        .map(|p| match &p.keepalived {
            Some(c) => format!("--- pod {}:\n{}", p.tag, c.logs()),
            None => format!("--- pod {}: no container", p.tag),
        })
        .collect()
}
