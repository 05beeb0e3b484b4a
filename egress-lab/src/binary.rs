//! The workspace's binaries, built on demand for the tests that run them.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// The path of binary `name` of this workspace (`egress-router`, `egress-cni`), as a test that
/// drives it like a user needs it: `$OVERRIDE_VAR` if set, else `target/<profile>/NAME` next to
/// the running test. Panics with the command to run if it is missing or older than any source
/// file of the workspace `crates` it is built from (its own and the ones it depends on, such as
/// `["egress-openshift", "egress-core"]`), so a test never runs a stale binary.
pub fn workspace_binary(name: &str, crates: &[&str], override_var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(override_var) {
        let bin = PathBuf::from(p);
        assert!(
            bin.is_file(),
            "{override_var}={}: no such file",
            bin.display()
        );
        return bin;
    }
    // A test runs from target/<profile>/deps/; cargo puts binaries in target/<profile>/.
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let release = if profile_dir.ends_with("release") {
        "--release "
    } else {
        ""
    };
    let bin = profile_dir.join(name);
    let built = fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}. Build it first: `cargo build {release}--bin {name}` (scripts/test.sh does)",
                bin.display()
            )
        });
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("egress-lab is a folder of the workspace");
    let (newest, when) = crates
        .iter()
        .flat_map(|krate| {
            let dir = workspace.join(krate);
            newest_file(&dir.join("src"))
                .into_iter()
                .chain(std::iter::once(modified(&dir.join("Cargo.toml"))))
        })
        .max_by_key(|(_, t)| *t)
        .expect("the crates have sources");
    assert!(
        built >= when,
        "{} is older than {}: rebuild it with `cargo build {release}--bin {name}`",
        bin.display(),
        newest.display()
    );
    bin
}

fn modified(p: &Path) -> (PathBuf, std::time::SystemTime) {
    let when = fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (p.to_path_buf(), when)
}

fn newest_file(dir: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(newest_file(&path));
        } else {
            out.push(modified(&path));
        }
    }
    out
}

/// `egress-router` of this workspace ([`workspace_binary`], `$EGRESS_ROUTER_BIN` to test
/// another).
pub fn router_binary() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        workspace_binary(
            "egress-router",
            &["egress-openshift", "egress-core"],
            "EGRESS_ROUTER_BIN",
        )
    })
}

/// `egress-cni` of this workspace ([`workspace_binary`], `$EGRESS_CNI_BIN` to test another).
pub fn cni_binary() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        workspace_binary(
            "egress-cni",
            &["egress-cni", "egress-openshift", "egress-core"],
            "EGRESS_CNI_BIN",
        )
    })
}
