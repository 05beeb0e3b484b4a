//! The shipped artefacts used the way users use them, as root, in the lab's throwaway
//! namespaces: the container image run by podman as the OpenShift init container (as a non-root
//! uid with two capabilities) and as the legacy-mode container of
//! `deploy/kubernetes/egress-router-legacy.yaml` (its env, its securityContext, its probes;
//! `podman stop` restores the namespace exactly); the DaemonSet of
//! `deploy/kubernetes/egress-cni-installer.yaml` installing the plugin, which then attaches a pod
//! with the configuration of `deploy/kubernetes/egress-cni-network.yaml`; and the Ansible
//! collection's module run by `ansible-playbook` under its FQCN `egress.router.egress_router`.
//!
//! Not run by a plain `cargo test` (`test = false`): `scripts/test-pkg.sh` builds the artefacts
//! with `scripts/package.sh` and runs `cargo test --test packaging` with
//! - `EGRESS_IMAGE`: the image (in the podman store that `CONTAINERS_CONF` and
//!   `CONTAINERS_STORAGE_CONF` name, see `scripts/podman-env.sh`);
//! - `EGRESS_PKG_TOOLS`: a virtualenv with ansible-core (`ansible-playbook`) and PyYAML (the
//!   manifests are read with it);
//! - `EGRESS_PKG_COLLECTIONS`: where `ansible-galaxy collection install` put the collection;
//! - `EGRESS_PKG_PYTHON`: a Python with the `egress` package (the managed host's interpreter);
//! - `EGRESS_HA_IMAGE`: the keepalived image (the same podman store);
//! - `EGRESS_CNI_BIN`: the shipped (static) `egress-cni`, which the HA pods' network runs.
//!
//! Without them every test fails and says so. `ha_pods` (tests/packaging/ha.rs) runs the HA
//! pair of `deploy/kubernetes/egress-router-ha.yaml`.

use std::{
    collections::HashMap,
    fs,
    net::IpAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use egress_lab::{
    ip, Lab, Netns, Snapshots, EGRESS_SOURCE4, FALLBACK4, GATEWAY4, MACVLAN_PARENT, ROUTER_ETH0_4,
    SERVICE_PORT, WEB4, WEB_PORT,
};
use serde_json::{json, Value};

#[path = "packaging/ha.rs"]
mod ha_pods;

const T: Duration = Duration::from_secs(2);
/// The port the manifests redirect to the web server's 443.
const TLS_PORT: u16 = 8443;
/// A port nothing redirects: only the fallback makes it reachable.
const OTHER_PORT: u16 = 9090;
/// The largest image we ship.
const IMAGE_LIMIT: u64 = 10 * 1000 * 1000;
/// The largest keepalived image: Debian's keepalived and conntrackd with their libraries are
/// 32 MB.
const HA_IMAGE_LIMIT: u64 = 40 * 1000 * 1000;

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: these tests exercise the artefacts of scripts/package.sh; run \
             scripts/test-pkg.sh, which builds them and sets EGRESS_IMAGE, EGRESS_PKG_TOOLS, \
             EGRESS_PKG_COLLECTIONS, EGRESS_PKG_PYTHON, EGRESS_HA_IMAGE and EGRESS_CNI_BIN"
        )
    })
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

fn source4() -> IpAddr {
    ip(EGRESS_SOURCE4)
}

/// The documents of `deploy/kubernetes/FILE`, as JSON (read with PyYAML).
fn manifest(file: &str) -> Vec<Value> {
    let path = repo().join("deploy/kubernetes").join(file);
    let out = run(
        Command::new(Path::new(&env("EGRESS_PKG_TOOLS")).join("bin/python"))
            .args([
                "-c",
                "import json, sys, yaml\n\
                 docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
                 print(json.dumps(docs))",
            ])
            .arg(&path),
    );
    assert_eq!(
        out.code,
        Some(0),
        "reading {}: {}",
        path.display(),
        out.stderr
    );
    serde_json::from_str(&out.stdout).unwrap()
}

/// The one document of `kind` in `docs`.
fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected");
    found[0]
}

/// The pod template's only container of a Deployment or DaemonSet.
fn container(workload: &Value) -> &Value {
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "{workload}");
    &containers[0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(c: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{c:?}: {e}"));
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// `podman ARGS`, in the store of `scripts/podman-env.sh`.
fn podman(args: &[&str]) -> Run {
    run(Command::new("podman").args(args))
}

#[track_caller]
fn podman_ok(args: &[&str]) -> String {
    let r = podman(args);
    assert_eq!(
        r.code,
        Some(0),
        "podman {}\nstdout:\n{}stderr:\n{}",
        args.join(" "),
        r.stdout,
        r.stderr
    );
    r.stdout
}

/// A detached container, removed (with its state) when dropped, also after a failed assertion.
struct Container(String);

impl Container {
    fn start(name: &str, args: &[&str]) -> Container {
        let name = format!("egt-{}-{name}", std::process::id());
        let mut full = vec!["run", "--detach", "--name", &name];
        full.extend_from_slice(args);
        podman_ok(&full);
        Container(name)
    }

    fn logs(&self) -> String {
        let r = podman(&["logs", &self.0]);
        r.stdout + &r.stderr
    }

    /// Waits until the container's output holds `needle` `times` times.
    #[track_caller]
    fn wait_for(&self, needle: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.logs().matches(needle).count() < times {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} (x{times}) in the output of {}:\n{}",
                self.0,
                self.logs()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `podman exec` of `command`: its exit code.
    fn exec(&self, command: &[String]) -> Option<i32> {
        let mut args = vec!["exec", self.0.as_str()];
        args.extend(command.iter().map(String::as_str));
        podman(&args).code
    }

    /// `podman stop` (SIGTERM, then SIGKILL after `grace` seconds): the exit code.
    fn stop(&self, grace: u32) -> i64 {
        podman_ok(&["stop", "--time", &grace.to_string(), &self.0]);
        let code = podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", &self.0]);
        code.trim().parse().unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "0", &self.0]);
    }
}

/// `--network ns:PATH`: the container runs in that lab namespace; podman makes no network.
fn network(ns: &Netns) -> String {
    format!("ns:{}", ns.path().display())
}

/// `-e NAME=VALUE` for each `env` entry of a container of a manifest.
fn env_args(container: &Value) -> Vec<String> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| {
            [
                "--env".to_string(),
                format!(
                    "{}={}",
                    e["name"].as_str().unwrap(),
                    e["value"].as_str().unwrap()
                ),
            ]
        })
        .collect()
}

/// Real TCP from the client through the redirects of the manifests' `EGRESS_DESTINATION` (and
/// the same `destinations` of the NetworkAttachmentDefinition): 80 to the web server's 8080,
/// 8443 to its 443, anything else to the fallback; each one DNAT-ed by the router and seen by
/// the server from the egress source only.
fn assert_manifest_routes(lab: &Lab) {
    for (port, to, to_port) in [
        (SERVICE_PORT, WEB4, WEB_PORT),
        (TLS_PORT, WEB4, 443),
        (OTHER_PORT, FALLBACK4, OTHER_PORT),
    ] {
        let body = lab
            .client
            .http_get(ip(ROUTER_ETH0_4), port, T)
            .unwrap_or_else(|e| panic!("port {port}: {e}"));
        assert_eq!(body.trim(), format!("peer={} port={to_port}", source4()));
        assert!(lab.router.dnat_seen(port, to), "port {port} -> {to}");
    }
}

/// The web server the manifests' destinations point at.
fn serve(lab: &Lab) -> egress_lab::WebServer {
    lab.ext.serve_http(&[WEB_PORT, 443, OTHER_PORT])
}

/// `image`'s tag and version label are the workspace's and it is smaller than `limit`: its
/// labels.
#[track_caller]
fn versioned_image(image: &str, limit: u64) -> Value {
    let version = env!("CARGO_PKG_VERSION");
    assert!(image.ends_with(&format!(":{version}")), "{image}");
    let size: u64 = podman_ok(&["image", "inspect", "--format", "{{.Size}}", image])
        .trim()
        .parse()
        .unwrap();
    assert!(size < limit, "{image} has {size} bytes");
    let labels: Value = serde_json::from_str(&podman_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Labels}}",
        image,
    ]))
    .unwrap();
    assert_eq!(labels["org.opencontainers.image.version"], version);
    labels
}

#[test]
fn image_is_small_labelled_and_tells_its_version() {
    let image = env("EGRESS_IMAGE");
    let version = env!("CARGO_PKG_VERSION");
    let labels = versioned_image(&image, IMAGE_LIMIT);
    assert_eq!(
        labels["org.opencontainers.image.licenses"],
        "MIT OR Apache-2.0"
    );
    assert_eq!(labels["org.opencontainers.image.title"], "egress-router");
    let entrypoint = podman_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}}",
        &image,
    ]);
    assert_eq!(entrypoint.trim(), r#"["/egress-router"]"#);
    // The entrypoint, and each binary of the image, by itself: static, nothing else needed.
    let out = podman_ok(&["run", "--rm", "--network", "none", &image, "--version"]);
    assert_eq!(out, format!("egress-router {version}\n"));
    for binary in ["egress-cni", "egress-cni-install"] {
        let out = podman_ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            &format!("/{binary}"),
            &image,
            "--version",
        ]);
        assert_eq!(out, format!("{binary} {version}\n"));
    }
    // Every manifest runs this image.
    for file in ["egress-cni-installer.yaml", "egress-router-legacy.yaml"] {
        for doc in manifest(file) {
            if let Some(c) = doc["spec"]["template"]["spec"]["containers"].as_array() {
                assert_eq!(c[0]["image"], image.as_str(), "{file}");
            }
        }
    }
}

#[test]
fn keepalived_image_holds_keepalived_conntrackd_and_egress_router() {
    let image = env("EGRESS_HA_IMAGE");
    let version = env!("CARGO_PKG_VERSION");
    let labels = versioned_image(&image, HA_IMAGE_LIMIT);
    assert_eq!(
        labels["org.opencontainers.image.title"],
        "egress-router-keepalived"
    );
    // Each binary runs from the image alone (its libraries are in it), with no network.
    let run = |entrypoint: &str, arg: &str| {
        let r = podman(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            entrypoint,
            &image,
            arg,
        ]);
        assert_eq!(
            r.code,
            Some(0),
            "{entrypoint} {arg}: {}{}",
            r.stdout,
            r.stderr
        );
        r.stdout + &r.stderr
    };
    assert!(run("/usr/sbin/keepalived", "--version").contains("Keepalived v2."));
    assert!(run("/usr/sbin/conntrackd", "-v").contains("Connection tracking userspace daemon v1."));
    assert_eq!(
        run("/usr/bin/egress-router", "--version"),
        format!("egress-router {version}\n")
    );
    // keepalived checks the HA manifest's configuration (its script security: the notify
    // binary root-owned in root-owned folders), in a namespace with the eth0 it names.
    let ns = Netns::new("kacheck");
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    let conf = std::env::temp_dir().join(format!("egt-{}-keepalived.conf", std::process::id()));
    let docs = manifest("egress-router-ha.yaml");
    fs::write(
        &conf,
        of_kind(&docs, "ConfigMap")["data"]["keepalived.conf"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let volume = format!("{}:/etc/keepalived/keepalived.conf:ro", conf.display());
    let r = podman(&[
        "run",
        "--rm",
        "--network",
        &network(&ns),
        "--volume",
        &volume,
        &image,
        "--config-test",
    ]);
    fs::remove_file(&conf).unwrap();
    assert_eq!(
        r.code,
        Some(0),
        "keepalived --config-test: {}{}",
        r.stdout,
        r.stderr
    );
}

#[test]
fn image_as_an_init_container_with_two_capabilities_and_no_root() {
    let image = env("EGRESS_IMAGE");
    let lab = Lab::with_adopted_macvlan();
    let web = serve(&lab);
    let snaps = Snapshots::take(&lab);
    let legacy = manifest("egress-router-legacy.yaml");
    let mut args: Vec<String> = [
        "run",
        "--rm",
        "--network",
        &network(&lab.router),
        "--read-only",
        // Not root, and only what the router needs: no other capability, no privileges.
        "--user",
        "65532:65532",
        "--cap-drop",
        "all",
        "--cap-add",
        "NET_ADMIN,SYS_ADMIN",
        "--security-opt",
        "no-new-privileges",
        "--security-opt",
        "unmask=/proc/sys",
        "--env",
        "EGRESS_ROUTER_MODE=init",
    ]
    .map(String::from)
    .into();
    args.extend(env_args(container(of_kind(&legacy, "Deployment"))));
    args.push(image.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let out = podman_ok(&args);
    assert!(
        out.contains("init: router egress-router configured: macvlan0 203.0.113.99/24"),
        "{out}"
    );
    assert_manifest_routes(&lab);
    // A restarted init container finds the router in place and changes nothing.
    let out = podman_ok(&args);
    assert!(out.contains("already configured, nothing changed"), "{out}");
    assert!(web.peers().iter().all(|p| *p == source4()));

    // The operator's teardown, through the same image.
    let out = podman_ok(&[
        "run",
        "--rm",
        "--network",
        &network(&lab.router),
        "--read-only",
        "--user",
        "65532:65532",
        "--cap-drop",
        "all",
        "--cap-add",
        "NET_ADMIN,SYS_ADMIN",
        "--security-opt",
        "unmask=/proc/sys",
        &image,
        "teardown",
    ]);
    assert!(out.starts_with("router egress-router removed"), "{out}");
    snaps.assert_restored("after the image's teardown");
}

#[test]
fn image_as_the_legacy_deployment_probes_repairs_and_restores_on_podman_stop() {
    let lab = Lab::with_adopted_macvlan();
    let _web = serve(&lab);
    let snaps = Snapshots::take(&lab);
    let legacy = manifest("egress-router-legacy.yaml");
    let deployment = of_kind(&legacy, "Deployment");
    let c = container(deployment);
    assert_eq!(c["securityContext"], json!({"privileged": true}));
    assert!(c.get("command").is_none() && c.get("args").is_none(), "{c}");
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let probes: Vec<Vec<String>> = ["readinessProbe", "livenessProbe"]
        .iter()
        .map(|p| strings(&c[p]["exec"]["command"]))
        .collect();

    let network = network(&lab.router);
    let mut args = vec!["--network", &network, "--privileged"];
    let env = env_args(c);
    args.extend(env.iter().map(String::as_str));
    let image = c["image"].as_str().unwrap();
    args.push(image);
    let router = Container::start("legacy", &args);
    router.wait_for("waiting for SIGTERM or SIGINT", 1);
    assert_manifest_routes(&lab);
    for probe in &probes {
        assert_eq!(router.exec(probe), Some(0), "{probe:?}");
    }

    // Drift (the forward filter flushed): the container's watch repairs it as the kernel
    // notifies it (its log names the kind), and both probes pass again.
    lab.router.exec(&[
        "nft",
        "flush",
        "chain",
        "inet",
        "egress_egress_router",
        "forward",
    ]);
    router.wait_for("kind=nat_changed", 1);
    for probe in &probes {
        assert_eq!(router.exec(probe), Some(0), "{probe:?} after the repair");
    }
    // The liveness probe's restart (SIGTERM: teardown, then a fresh start).
    podman_ok(&["restart", "--time", &grace.to_string(), &router.0]);
    router.wait_for("waiting for SIGTERM or SIGINT", 2);
    assert!(router
        .logs()
        .contains("SIGTERM: tearing router egress-router down"));
    for probe in &probes {
        assert_eq!(router.exec(probe), Some(0), "{probe:?} after the restart");
    }
    assert_manifest_routes(&lab);

    // The pod deleted: SIGTERM, teardown, exit 0 within the grace period (after it, SIGKILL:
    // 137), and the namespace exactly as before.
    assert_eq!(
        router.stop(u32::try_from(grace).unwrap()),
        0,
        "{}",
        router.logs()
    );
    assert!(
        router.logs().contains("the namespace is as it was"),
        "{}",
        router.logs()
    );
    snaps.assert_restored("after podman stop");
}

#[test]
fn daemonset_installs_egress_cni_which_attaches_a_pod_with_the_network_of_the_manifest() {
    let lab = Lab::new();
    let _web = serve(&lab);
    let snaps = Snapshots::take(&lab);
    let installer = manifest("egress-cni-installer.yaml");
    let daemonset = of_kind(&installer, "DaemonSet");
    let c = container(daemonset);
    let command = strings(&c["command"]);
    assert!(c.get("args").is_none(), "{c}");
    let security = &c["securityContext"];
    assert_eq!(
        security,
        &json!({"runAsUser": 0, "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}})
    );
    // The node's plugin directory (the hostPath), with an older plugin in it.
    let volumes = daemonset["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0]["hostPath"]["path"], "/opt/cni/bin");
    let mount = &c["volumeMounts"][0];
    assert_eq!(mount["name"], volumes[0]["name"]);
    let host_dir = std::env::temp_dir().join(format!("egt-{}-opt-cni-bin", std::process::id()));
    let _ = fs::remove_dir_all(&host_dir);
    fs::create_dir_all(&host_dir).unwrap();
    let installed = host_dir.join("egress-cni");
    fs::write(&installed, "#!/bin/sh\necho an older egress-cni\n").unwrap();

    let volume = format!(
        "{}:{}",
        host_dir.display(),
        mount["mountPath"].as_str().unwrap()
    );
    let mut args = vec![
        "--network",
        "none",
        "--volume",
        &volume,
        "--user",
        "0",
        "--read-only",
        "--cap-drop",
        "all",
        "--security-opt",
        "no-new-privileges",
        "--entrypoint",
        &command[0],
        c["image"].as_str().unwrap(),
    ];
    args.extend(command[1..].iter().map(String::as_str));
    let pod = Container::start("cni-installer", &args);
    pod.wait_for("waiting for SIGTERM or SIGINT", 1);
    assert!(
        pod.logs()
            .contains("egress-cni-install: installed /egress-cni as /host/opt/cni/bin/egress-cni"),
        "{}",
        pod.logs()
    );
    // The DaemonSet's pod stays running; deleted, it exits 0 at once and leaves the plugin.
    assert_eq!(pod.stop(10), 0, "{}", pod.logs());
    let mut left: Vec<String> = fs::read_dir(&host_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["egress-cni"], "no temporary file left");
    assert_eq!(
        fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let version = run(Command::new(&installed).arg("--version"));
    assert_eq!(
        version.stdout,
        format!("egress-cni {}\n", env!("CARGO_PKG_VERSION"))
    );

    // The installed plugin, run as the runtime runs it (from the node's namespace), with the
    // NetworkAttachmentDefinition's configuration and the lab's link as its master.
    let network_docs = manifest("egress-cni-network.yaml");
    let nad = of_kind(&network_docs, "NetworkAttachmentDefinition");
    let mut config: Value = serde_json::from_str(nad["spec"]["config"].as_str().unwrap()).unwrap();
    assert_eq!(config["ip"]["addresses"][0], EGRESS_SOURCE4);
    assert_eq!(config["ip"]["gateway"], GATEWAY4);
    config["interfaceArgs"]["master"] = json!(MACVLAN_PARENT);
    let sandbox = lab.router.path().to_str().unwrap();
    let cni = |command: &str, config: &Value| {
        lab.node.run_cni_plugin(
            &installed,
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", "pkg-test-pod"),
                ("CNI_NETNS", sandbox),
                ("CNI_IFNAME", "net1"),
                ("CNI_PATH", host_dir.to_str().unwrap()),
            ],
            &config.to_string(),
        )
    };
    let result: Value = serde_json::from_str(&cni("ADD", &config)).unwrap();
    assert_eq!(result["cniVersion"], "1.0.0", "{result}");
    assert_eq!(result["interfaces"][0]["name"], "net1", "{result}");
    assert_manifest_routes(&lab);
    // CHECK and DEL get the ADD's result, as a runtime passes it.
    config["prevResult"] = result;
    assert_eq!(cni("CHECK", &config), "");
    assert_eq!(cni("DEL", &config), "");
    snaps.assert_restored("after DEL");
    fs::remove_dir_all(&host_dir).unwrap();
}

/// Runs `playbook` with the installed collection; the result of its first task (the `tree`
/// callback's record of the last task for localhost: the playbook has one).
fn ansible_playbook(tmp: &Path, playbook: &str, vars: &Value, extra: &[&str]) -> Value {
    let tools = PathBuf::from(env("EGRESS_PKG_TOOLS"));
    let book = tmp.join("playbook.yml");
    fs::write(&book, playbook).unwrap();
    let vars_file = tmp.join("vars.json");
    fs::write(&vars_file, vars.to_string()).unwrap();
    let tree = tmp.join("tree");
    let _ = fs::remove_dir_all(&tree);
    let inventory = format!(
        "localhost ansible_connection=local ansible_python_interpreter={}\n",
        env("EGRESS_PKG_PYTHON")
    );
    fs::write(tmp.join("inventory.ini"), inventory).unwrap();
    let vars_arg = format!("@{}", vars_file.display());
    let mut args = vec!["-i", "inventory.ini", "playbook.yml", "-e", &vars_arg];
    args.extend_from_slice(extra);
    let envs: HashMap<&str, String> = HashMap::from([
        ("ANSIBLE_COLLECTIONS_PATH", env("EGRESS_PKG_COLLECTIONS")),
        ("ANSIBLE_CALLBACKS_ENABLED", "tree".into()),
        ("ANSIBLE_CALLBACK_TREE_DIR", tree.display().to_string()),
        ("ANSIBLE_HOME", tmp.join("home").display().to_string()),
        ("ANSIBLE_LOCALHOST_WARNING", "false".into()),
        ("ANSIBLE_NOCOLOR", "1".into()),
    ]);
    let out = run(Command::new(tools.join("bin/ansible-playbook"))
        .args(&args)
        .current_dir(tmp)
        .envs(envs));
    assert_eq!(
        out.code,
        Some(0),
        "ansible-playbook {extra:?}:\n{}{}",
        out.stdout,
        out.stderr
    );
    let record = fs::read_to_string(tree.join("localhost")).unwrap();
    serde_json::from_str(&record).unwrap()
}

#[test]
fn collection_module_by_its_fqcn_configures_and_removes_a_router() {
    let lab = Lab::new();
    let web = serve(&lab);
    let snaps = Snapshots::take(&lab);
    let tmp = std::env::temp_dir().join(format!("egt-{}-ansible", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).unwrap();
    let playbook = "\
- name: An egress router with the collection egress.router
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Egress router pkg-ansible is {{ state }}
      egress.router.egress_router:
        name: pkg-ansible
        state: \"{{ state }}\"
        netns: \"{{ netns }}\"
        macvlan: {parent: \"{{ parent }}\", parent_netns: \"{{ node }}\", mode: private}
        sources: [\"{{ source }}\"]
        gateways: [\"{{ gateway }}\"]
        redirects:
          - {port: 80, protocol: tcp, to: \"{{ web }}\", to_port: 8080}
          - {port: 8443, protocol: tcp, to: \"{{ web }}\", to_port: 443}
        fallback: [\"{{ fallback }}\"]
";
    let mut vars = json!({
        "state": "present", "netns": lab.router.path(), "node": lab.node.path(),
        "parent": MACVLAN_PARENT, "source": EGRESS_SOURCE4, "gateway": GATEWAY4,
        "web": WEB4, "fallback": FALLBACK4,
    });

    let r = ansible_playbook(&tmp, playbook, &vars, &["--check"]);
    assert_eq!(
        (&r["changed"], &r["action"]),
        (&json!(true), &json!("created")),
        "{r}"
    );
    snaps.assert_restored("after --check");

    let r = ansible_playbook(&tmp, playbook, &vars, &[]);
    assert_eq!(
        (&r["changed"], &r["action"]),
        (&json!(true), &json!("created")),
        "{r}"
    );
    assert_eq!(r["router"]["name"], "pkg-ansible", "{r}");
    assert_manifest_routes(&lab);
    let r = ansible_playbook(&tmp, playbook, &vars, &[]);
    assert_eq!(
        (&r["changed"], &r["action"]),
        (&json!(false), &json!("unchanged")),
        "{r}"
    );

    vars["state"] = json!("absent");
    let r = ansible_playbook(&tmp, playbook, &vars, &[]);
    assert_eq!(
        (&r["changed"], &r["action"]),
        (&json!(true), &json!("removed")),
        "{r}"
    );
    snaps.assert_restored("after state=absent");
    assert!(web.peers().iter().all(|p| *p == source4()));
    fs::remove_dir_all(&tmp).unwrap();
}
