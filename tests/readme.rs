//! The README's examples, run as they are printed.
//!
//! The Rust example is examples/readme.rs, whose marked lines must be the README's block; the
//! JSON form must be the same spec. The example names its namespace `pod` and the parent link
//! `eth1` of the namespace it runs in: it runs in a throwaway `egt-…` "node" namespace holding
//! `eth1`, and in a private mount namespace (`unshare --mount`) whose `/run/netns` is a tmpfs
//! holding only `pod`, a bind mount of a throwaway `egt-…` namespace holding `eth0` (the other
//! end of `eth1`). No other process sees that `pod`; both namespaces must be exactly as before
//! afterwards.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use egress_core::RouterSpec;
use egress_lab::{Netns, Snapshot};

fn readme() -> String {
    fs::read_to_string(workspace().join("README.md")).expect("README.md")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("egress-lab is in the workspace")
        .to_path_buf()
}

/// The first fenced block of `lang` under the README heading `section`.
fn block(section: &str, lang: &str) -> String {
    let text = readme();
    let start = text
        .find(&format!("\n## {section}\n"))
        .unwrap_or_else(|| panic!("README has no section {section:?}"));
    let body = &text[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |e| e + 3);
    let body = &body[..end];
    let open = body
        .find(&format!("\n```{lang}\n"))
        .unwrap_or_else(|| panic!("README section {section:?} has no {lang} block"));
    let code = &body[open + lang.len() + 5..];
    code[..code.find("\n```").expect("a closed block") + 1].to_string()
}

/// The lines of examples/readme.rs between `// README begin` and `// README end`, dedented.
fn example_lines() -> String {
    let source = fs::read_to_string(workspace().join("examples/readme.rs")).expect("example");
    let mut out = Vec::new();
    let mut inside = None;
    for line in source.lines() {
        let trimmed = line.trim_start();
        match (trimmed, inside) {
            ("// README begin", None) => inside = Some(line.len() - trimmed.len()),
            ("// README end", Some(_)) => {
                inside = None;
                out.push(String::new());
            }
            (_, Some(indent)) => out.push(line.get(indent..).unwrap_or("").to_string()),
            _ => {}
        }
    }
    assert!(inside.is_none(), "an unclosed README marker");
    out.pop();
    out.join("\n") + "\n"
}

#[test]
fn the_rust_example_is_the_readmes() {
    assert_eq!(example_lines(), block("Use it from Rust", "rust"));
}

#[test]
fn the_json_form_is_the_same_spec() {
    let from_json = RouterSpec::from_json(&block("Use it from Rust", "json")).expect("valid");
    let built = RouterSpec::builder("egress-1")
        .netns_name("pod")
        .macvlan("eth1", egress_core::MacvlanMode::Private)
        .source("203.0.113.99/24")
        .gateway("203.0.113.1")
        .redirect(egress_core::Protocol::Tcp, 80, "198.51.100.25", Some(8080))
        .fallback("198.51.100.9")
        .build()
        .expect("valid");
    assert_eq!(from_json, built);
}

/// Runs `program` with `args` in `node`, where `/run/netns/pod` is `pod` (see the module's docs).
fn run_as_pod(node: &Netns, pod: &Netns, program: &Path, args: &[&str]) -> Output {
    let dir = std::env::temp_dir().join(format!("{}-readme", pod.name()));
    fs::create_dir(&dir).expect("a temporary directory");
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            AS_POD,
            "sh",
        ])
        .arg(program)
        .args(args)
        .env("DIR", &dir)
        .env("NODE", node.path())
        .env("POD", pod.path())
        .output()
        .expect("unshare");
    fs::remove_dir_all(&dir).expect("removing the temporary directory");
    out
}

/// What [`run_as_pod`] runs in its mount namespace (egress-py/tests/test_readme.py has it too).
const AS_POD: &str = r#"set -e
touch "$DIR/node" "$DIR/pod"
mount --bind "$NODE" "$DIR/node"
mount --bind "$POD" "$DIR/pod"
mount -t tmpfs -o size=1m egress-readme /run/netns
touch /run/netns/pod
mount --bind "$DIR/pod" /run/netns/pod
exec nsenter --net="$DIR/node" "$@""#;

/// The namespaces of the README's examples: `node` with `eth1` (the macvlan's parent), `pod`
/// with `eth0`, the two ends of one veth pair, up.
fn node_and_pod() -> (Netns, Netns) {
    let (node, pod) = (Netns::new("node"), Netns::new("pod"));
    node.ip(&[
        "link", "add", "eth1", "type", "veth", "peer", "name", "eth0",
    ]);
    node.ip(&["link", "set", "eth0", "netns", pod.name()]);
    node.ip(&["link", "set", "eth1", "up"]);
    pod.ip(&["link", "set", "eth0", "up"]);
    // The veth's carrier comes up a moment later: a snapshot is taken after it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while [(&node, "eth1"), (&pod, "eth0")]
        .iter()
        .any(|(ns, link)| ns.ip(&["link", "show", link]).contains("NO-CARRIER"))
    {
        assert!(
            Instant::now() < deadline,
            "the veth pair has no carrier after 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (node, pod)
}

#[test]
fn the_rust_example_runs_as_printed() {
    let (node, pod) = node_and_pod();
    let before = [Snapshot::take(&node), Snapshot::take(&pod)];
    let host_has_pod = Path::new("/run/netns/pod").exists();
    // cargo test builds the examples next to the test binaries: target/<profile>/examples.
    let exe = std::env::current_exe().expect("own path");
    let example = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("examples/readme");
    assert!(
        example.is_file(),
        "{}: not built. `cargo test --workspace` builds it, or `cargo build --example readme`",
        example.display()
    );
    let out = run_as_pod(&node, &pod, &example, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {}\n{stdout}{}",
        example.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // It printed the plan: the macvlan made on eth1 and moved into pod, the fallback.
    assert!(
        stdout.contains("ip link add macvlan0 link eth1"),
        "{stdout}"
    );
    assert!(stdout.contains("fallback 198.51.100.9"), "{stdout}");
    for (before, ns) in before.iter().zip([&node, &pod]) {
        let diff = before.diff(&Snapshot::take(ns));
        assert!(diff.is_empty(), "the example left in {}: {diff}", ns.name());
    }
    // The mount namespace died with it: the machine's /run/netns is as it was.
    assert_eq!(Path::new("/run/netns/pod").exists(), host_has_pod);
}
