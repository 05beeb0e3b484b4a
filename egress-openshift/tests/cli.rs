//! The `egress-router` binary as a process, without privileges: the OpenShift contract's
//! messages and exit codes for bad input, `unit-test` mode, usage errors and `--help`.
//! (Runs in the router's namespace with real packets: `tests/openshift_compat.rs` at the root.)

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_egress-router");

fn run(args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .expect("egress-router runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const GOOD: [(&str, &str); 3] = [
    ("EGRESS_SOURCE", "203.0.113.99/24"),
    ("EGRESS_GATEWAY", "203.0.113.1"),
    (
        "EGRESS_DESTINATION",
        "80 tcp 198.51.100.25 8080\n8080 tcp 198.51.100.25\n198.51.100.9",
    ),
];

#[test]
fn unit_test_mode_prints_the_plan_and_changes_nothing() {
    let mut vars = GOOD.to_vec();
    vars.push(("EGRESS_ROUTER_MODE", "unit-test"));
    let out = run(&[], &vars);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(" 1. ip -6 route add blackhole 6567:")
            && stdout.contains("\n 2. nft add table inet egress_egress_router"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ip link set dev macvlan0 up"),
        "adopts: {stdout}"
    );
    assert!(
        stdout.contains("ip addr add 203.0.113.99/24 dev macvlan0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("route replace default via 203.0.113.1 dev macvlan0"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with(
            "redirects of router egress-router:\n    tcp/80 -> 198.51.100.25:8080\n    \
             tcp/8080 -> 198.51.100.25:8080\n    everything else -> 198.51.100.9\n"
        ),
        "{stdout}"
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn bad_input_prints_the_openshift_message_and_exits_1() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "EGRESS_SOURCE unspecified or invalid"),
        (
            &[("EGRESS_SOURCE", "1.2.3.4")],
            "EGRESS_GATEWAY unspecified or invalid",
        ),
        (
            &[("EGRESS_SOURCE", "1.2.3.4"), ("EGRESS_GATEWAY", "1.1.1.1")],
            "EGRESS_DESTINATION unspecified",
        ),
        (
            &[
                ("EGRESS_SOURCE", "1.2.3.4"),
                ("EGRESS_GATEWAY", "1.1.1.1"),
                ("EGRESS_DESTINATION", "80 sctp-ish 10.4.5.6"),
            ],
            "EGRESS_DESTINATION value '80 sctp-ish 10.4.5.6' is invalid",
        ),
        (
            &[
                ("EGRESS_SOURCE", "1.2.3.4"),
                ("EGRESS_GATEWAY", "1.1.1.1"),
                ("EGRESS_DESTINATION", "10.1.2.3\n10.4.5.6"),
            ],
            "EGRESS_DESTINATION fallback IP must be the last line",
        ),
        (
            &[
                ("EGRESS_SOURCE", "1.2.3.4"),
                ("EGRESS_GATEWAY", "1.1.1.1"),
                ("EGRESS_DESTINATION", "800000 tcp 10.4.5.6"),
            ],
            "Invalid port: 800000, must be in the range 1 to 65535",
        ),
        (
            &[
                ("EGRESS_SOURCE", "1.2.3.4"),
                ("EGRESS_GATEWAY", "1.1.1.1"),
                ("EGRESS_DESTINATION", "80 tcp 10.4.5.6\n80 tcp 10.7.8.9 900"),
            ],
            "EGRESS_DESTINATION localport 80 is already used, must be unique for each destination",
        ),
        (
            &[
                ("EGRESS_SOURCE", "1.2.3.4"),
                ("EGRESS_GATEWAY", "1.1.1.1"),
                ("EGRESS_DESTINATION", "10.1.2.3"),
                ("EGRESS_ROUTER_MODE", "proxy"),
            ],
            "Unrecognized EGRESS_ROUTER_MODE 'proxy'",
        ),
        (
            &[("EGRESS_SOURCE", "999.1.1.1")],
            "EGRESS_SOURCE '999.1.1.1' is invalid: octet 999 is over 255",
        ),
    ];
    for (vars, message) in cases {
        // unit-test mode only: this test runs in the host's namespace, where a regression that
        // accepted the input must not configure anything. The modes that change the kernel
        // are run with bad input inside a throwaway namespace by tests/openshift_compat.rs.
        let mut vars = vars.to_vec();
        if !vars.iter().any(|(k, _)| *k == "EGRESS_ROUTER_MODE") {
            vars.push(("EGRESS_ROUTER_MODE", "unit-test"));
        }
        let out = run(&[], &vars);
        assert_eq!(out.status.code(), Some(1), "{vars:?}");
        assert_eq!(text(&out.stderr), format!("{message}\n"), "{vars:?}");
        assert_eq!(text(&out.stdout), "", "{vars:?}");
    }
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let out = run(&["inspect", "--bogus"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "egress-router: unknown option '--bogus' for inspect\nTry 'egress-router --help'.\n"
    );
    let out = run(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(help.contains("EXIT CODES"), "{help}");
    assert!(help.contains("EGRESS_DESTINATION"), "{help}");
    let out = run(&["--version"], &[]);
    assert_eq!(
        text(&out.stdout),
        format!("egress-router {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_with_an_invalid_spec_file_exits_1_and_names_the_field() {
    let dir = std::env::temp_dir().join(format!("egress-router-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("spec.json");
    std::fs::write(
        &spec,
        r#"{"name": "r", "external": {"adopt": "macvlan0"}, "sources": ["203.0.113.300"],
            "gateways": ["203.0.113.1"]}"#,
    )
    .unwrap();
    let out = run(&["check", "--spec", spec.to_str().unwrap()], &[]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("sources[0]") && stderr.contains("203.0.113.300"),
        "{stderr}"
    );
}

/// `render` with `stdin` piped in.
fn render(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("render")
        .args(args)
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("egress-router runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

const OBJECT: &str = "
apiVersion: network.operator.openshift.io/v1
kind: EgressRouter
metadata: {name: egress-1, namespace: egress, uid: 3f0b7c9e-1d2a-4e5f-8a6b-7c8d9e0f1a2b}
spec:
  addresses: [{ip: 203.0.113.99/24, gateway: 203.0.113.1}]
  mode: Redirect
  redirect:
    redirectRules: [{destinationIP: 198.51.100.25, port: 80, protocol: TCP, targetPort: 8080}]
    fallbackIP: 198.51.100.9
";

#[test]
fn render_prints_manifests_and_an_invalid_object_every_field_and_nothing_on_stdout() {
    let out = render(&["-"], OBJECT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("\n---\n").count(), 2, "{stdout}");
    for kind in ["NetworkAttachmentDefinition", "Deployment", "Service"] {
        assert!(stdout.contains(&format!("kind: {kind}\n")), "{stdout}");
    }
    assert!(
        stdout.contains("uid: 3f0b7c9e-1d2a-4e5f-8a6b-7c8d9e0f1a2b"),
        "{stdout}"
    );
    assert_eq!(text(&out.stderr), "");
    // --ha: the keepalived ConfigMap too; no uid: a note on stderr, the manifests all the same.
    let out = render(
        &["--ha"],
        &OBJECT.replace(", uid: 3f0b7c9e-1d2a-4e5f-8a6b-7c8d9e0f1a2b", ""),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("kind: ConfigMap\n"));
    assert!(
        text(&out.stderr).contains("no ownerReferences"),
        "{}",
        text(&out.stderr)
    );

    let bad = OBJECT
        .replace("port: 80", "port: 0")
        .replace("protocol: TCP", "protocol: tcp");
    let out = render(&[], &bad);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "", "nothing on stdout");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("2 invalid fields"), "{stderr}");
    for path in [
        "spec.redirect.redirectRules[0].protocol: `tcp`",
        "spec.redirect.redirectRules[0].port: `0`",
    ] {
        assert!(stderr.contains(path), "{path} in {stderr}");
    }
    let out = render(&["/nonexistent/egress-1.yaml"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("reading /nonexistent/egress-1.yaml"));
}

#[test]
fn inspect_takes_a_role_to_require() {
    let out = run(&["inspect", "--role", "backup"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--role backup: active or standby"),
        "{}",
        text(&out.stderr)
    );
}
