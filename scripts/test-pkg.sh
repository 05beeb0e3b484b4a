#!/usr/bin/env bash
# The packaging side of the test suite (as root): builds every artefact with scripts/package.sh,
# then uses each one as a user would:
#   crates       `cargo publish --dry-run` (after package.sh's verified `cargo package`)
#   manifests    scripts/validate-manifests.py: every bundled Kubernetes schema, Multus's CRD
#   wheel        pip install into a fresh virtualenv, offline; its metadata; a plan
#   sdist        pip install into a fresh virtualenv with build isolation, offline (maturin from a
#                local wheelhouse, crates from ~/.cargo): it builds from the sdist alone
#   C library    the tarball unpacked as a prefix; pkg-config; the C agent built and run
#   collection   ansible-galaxy collection install, offline; ansible-doc; ansible-test sanity
#   render       `egress-router render` of OpenShift's EgressRouter examples, validated as above
#   and, in the lab (`cargo test --test packaging`): the image by podman as the init container and
#   as the legacy Deployment, the installer DaemonSet and the NetworkAttachmentDefinition's
#   configuration, the HA pair of egress-router-ha.yaml (the keepalived image) failing over, the
#   collection's module by its FQCN in a playbook (on the sdist's egress).
# "Offline" steps run in a network namespace of their own with nothing in it (unshare --net).
# Network: PyPI for the tools and ansible-test's sanity requirements and maturin's wheel (pip
# caches them), crates.io for `cargo publish --dry-run`'s index.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [[ $EUID -ne 0 ]]; then
  echo "test-pkg: needs root (podman, network namespaces)" >&2
  exit 1
fi
target=${CARGO_TARGET_DIR:-$root/target}
[[ $target == /* ]] || target=$root/$target
# tests/packaging.rs, checked and built before scripts/package.sh: its `cargo package` cleans the
# debug build of the crates it packages, which the test binary is built from. It runs last.
# Both with scripts/test.sh's selections (its clippy's target dir, its debug build's features),
# so that under it they are done already.
CARGO_TARGET_DIR=$target/lint cargo clippy --workspace --all-targets --test packaging --quiet \
  -- -D warnings
packaging_test=$(cargo build --workspace --lib --bins --examples --test packaging --quiet \
  --message-format=json | grep '"name":"packaging"' | grep -o '"executable":"[^"]*"' |
  cut -d'"' -f4)
[[ -x $packaging_test ]] || { echo "test-pkg: tests/packaging.rs did not build" >&2; exit 1; }
scripts/package.sh
dist=$target/packages
work=$target/pkg
tools=$target/py-venv # made by package.sh (and test-py.sh)
python=${PYTHON:-python3}
version=$(cargo pkgid -p egress-core | sed 's/.*[#@]//')
offline() { unshare --net -- "$@"; }
fail() {
  echo "test-pkg: $*" >&2
  exit 1
}

echo "== crates (cargo publish --dry-run)"
# --no-verify: package.sh has just built each crate from its packaged sources.
cargo publish --dry-run --no-verify --quiet --allow-dirty -p egress-core -p egress-openshift -p egress-cni

echo "== kubernetes manifests (kubernetes-validate, Multus's CRD)"
"$tools/bin/python" scripts/validate-manifests.py

echo "== egress-router render of OpenShift's EgressRouter examples (kubernetes-validate)"
# The shipped binary renders each example of egress-openshift/src/render/examples (the
# documentation's objects), one replica and the HA pair; the manifests are validated as above.
rendered=$work/rendered
rm -rf "$rendered"
mkdir -p "$rendered"
router_bin=$target/x86_64-unknown-linux-musl/dist/egress-router
for example in egress-openshift/src/render/examples/*.yaml; do
  name=$(basename "$example" .yaml)
  "$router_bin" render "$example" >"$rendered/$name.yaml" 2>/dev/null
  "$router_bin" render --ha --stable-mac - <"$example" >"$rendered/$name-ha.yaml" 2>/dev/null
done
"$tools/bin/python" scripts/validate-manifests.py "$rendered"

echo "== python wheel (pip install, fresh virtualenv, offline)"
wheel=$(ls "$dist"/egress-"$version"-cp39-abi3-*manylinux_2_17_x86_64*.whl)
check_egress() { # PYTHON: the installed package's metadata, and a dry run through the library
  "$1" - "$version" <<'EOF'
import importlib.metadata as md
import sys
import egress

m = md.metadata("egress")
assert m["Name"] == "egress" and m["Version"] == sys.argv[1], (m["Name"], m["Version"])
assert m["Summary"].startswith("Turn a Linux network namespace into an egress router"), m["Summary"]
assert m["License-Expression"] == "MIT OR Apache-2.0", m["License-Expression"]
assert {"LICENSE-MIT", "LICENSE-APACHE"} <= set(m.get_all("License-File") or []), m.get_all("License-File")
assert m["Requires-Python"] == ">=3.9", m["Requires-Python"]
classifiers = m.get_all("Classifier")
for c in ("Operating System :: POSIX :: Linux", "Programming Language :: Rust", "Typing :: Typed"):
    assert c in classifiers, (c, classifiers)
urls = dict(u.split(", ", 1) for u in m.get_all("Project-URL"))
assert {"Homepage", "Documentation", "Repository", "Changelog", "Issues"} <= set(urls), urls
spec = (egress.RouterSpec(name="egress-1", netns="/run/netns/pod").macvlan(parent="eth1", mode="private")
        .source("203.0.113.99/24").gateway("203.0.113.1").redirect(80, "tcp", "198.51.100.25", 8080))
plan = [str(step) for step in spec.plan()]
assert any("nft add table inet egress_egress_1" in s for s in plan), plan
print(f"egress {m['Version']} from {egress.__file__}: {len(plan)} plan steps")
EOF
}
venv=$work/venv-wheel
rm -rf "$venv"
"$python" -m venv "$venv"
offline "$venv/bin/pip" install --quiet --disable-pip-version-check --no-index "$wheel"
check_egress "$venv/bin/python"

echo "== ansible collection (ansible-galaxy install offline, ansible-doc, ansible-test sanity)"
collections=$work/collections
rm -rf "$collections"
out=$(ANSIBLE_HOME=$work/ansible-home offline "$tools/bin/ansible-galaxy" collection install \
  --offline -p "$collections" "$dist/egress-router-$version.tar.gz" 2>&1) ||
  fail "ansible-galaxy collection install failed: $out"
for module in egress_router egress_router_info; do
  doc=$(ANSIBLE_COLLECTIONS_PATH=$collections ANSIBLE_HOME=$work/ansible-home \
    "$tools/bin/ansible-doc" "egress.router.$module")
  grep -q "egress.router.$module" <<<"$doc" || fail "ansible-doc does not know $module"
done
installed=$collections/ansible_collections/egress/router
manifest_version=$("$tools/bin/python" -c 'import json, sys
print(json.load(open(sys.argv[1]))["collection_info"]["version"])' "$installed/MANIFEST.json")
[[ $manifest_version == "$version" ]] || fail "the collection has version $manifest_version"
for module in egress_router egress_router_info; do
  cmp "$installed/plugins/modules/$module.py" "examples/ansible/library/$module.py" ||
    fail "the collection's $module is not examples/ansible/library/$module.py"
done
# ansible-test sanity on the installed collection, i.e. on what users get, copied out of this
# git work tree (inside one, ansible-test takes only the files git tracks: none of these). It
# keeps a virtualenv per sanity test in $HOME/.ansible/test: under target/, for the next run.
home=$work/ansible-test-home
mkdir -p "$home/.ansible/test/cache"
cp scripts/ansible-test-get-pip.py "$home/.ansible/test/cache/get_pip_24_2.py"
sanity=$(mktemp -d /tmp/egress-sanity.XXXXXX)
trap '{ [[ -z ${sanity_job:-} ]] || kill "$sanity_job" 2>/dev/null || true; }; rm -rf "$sanity"' EXIT
mkdir -p "$sanity/ansible_collections/egress"
cp -R "$installed" "$sanity/ansible_collections/egress/router"
log=$work/ansible-test-sanity.log
# pip keeps using the machine's download cache, not one under the new HOME.
# In the background, while the sdist builds (it mostly waits on pip and Python); its result
# is read before the lab.
(cd "$sanity/ansible_collections/egress/router" &&
  PIP_CACHE_DIR=${PIP_CACHE_DIR:-$HOME/.cache/pip} HOME=$home "$tools/bin/ansible-test" sanity \
  --local --requirements --python 3.11 >"$log" 2>&1) &
sanity_job=$!

echo "== python sdist (pip install with build isolation, fresh virtualenv, offline)"
# What the sdist's build needs besides itself: its build backend (pyproject.toml's
# build-system.requires) in a local wheelhouse, and the crates, already in ~/.cargo.
wheelhouse=$work/wheelhouse
"$tools/bin/pip" download --quiet --disable-pip-version-check --only-binary :all: \
  -d "$wheelhouse" "maturin>=1.9.4,<2"
cargo fetch --locked --quiet
venv=$work/venv-sdist
rm -rf "$venv"
"$python" -m venv "$venv"
# The build shares the target dir, and with it the crates.io dependencies package.sh compiled
# for the C library; egress's own crates are compiled from the unpacked sdist. Their earlier
# builds from an sdist go first: cargo names a unit by its path within the workspace (the same
# in every unpacked sdist) and the sdist's files carry its fixed timestamps, so an older build
# would look up to date.
cargo clean --quiet --release -p egress-core -p egress-openshift -p egress-py
CARGO_TARGET_DIR=$target CARGO_NET_OFFLINE=true offline \
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-index \
  --find-links "$wheelhouse" "$dist/egress-$version.tar.gz"
check_egress "$venv/bin/python"

echo "== C library (the tarball as a prefix, pkg-config, the C agent)"
prefix=$work/c-user
rm -rf "$prefix"
mkdir -p "$prefix"
tar -xzf "$dist/libegress-$version-x86_64-linux-gnu.tar.gz" -C "$prefix"
# The tarball is made to be unpacked at /: a sysroot puts its paths under $prefix instead.
export PKG_CONFIG_PATH=$prefix/usr/local/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$prefix
pc() { pkg-config "$@" egress; }
so=libegress.so.${version%%.*}
[[ $(pc --modversion) == "$version" ]] || fail "egress.pc says version $(pc --modversion)"
readelf -d "$prefix/usr/local/lib/$so" | grep -q "Library soname: \[$so\]" ||
  fail "$so lacks the SONAME $so"
# shellcheck disable=SC2046 # word splitting of pkg-config's flags is intended
cc -Wall -Wextra -Werror -o "$prefix/agent" examples/c-agent/agent.c $(pc --cflags --libs) \
  -Wl,-rpath,"$prefix/usr/local/lib"
# shellcheck disable=SC2046
cc -Wall -Wextra -Werror -o "$prefix/agent-static" examples/c-agent/agent.c $(pc --cflags) \
  "$prefix/usr/local/lib/libegress.a" $(pc --static --libs-only-l | sed 's/-legress//')
missing=egt-$$-missing
printf '{"name": "pkg-c", "netns": {"name": "%s"}, "external": {"adopt": "macvlan0"},
  "sources": ["203.0.113.99/24"], "gateways": ["203.0.113.1"], "fallback": ["198.51.100.9"]}' \
  "$missing" >"$prefix/router.json"
for agent in agent agent-static; do
  # The library parses the config, prints the plan, and its apply finds no such namespace.
  status=0
  "$prefix/$agent" "$prefix/router.json" >"$prefix/$agent.out" 2>"$prefix/$agent.err" || status=$?
  if [[ $status != 1 ]] || ! grep -q 'nft add table inet egress_pkg_c' "$prefix/$agent.out" ||
    ! grep -q "$missing" "$prefix/$agent.err"; then
    cat "$prefix/$agent.out" "$prefix/$agent.err" >&2
    fail "$agent (exit $status) did not print the plan and the missing namespace"
  fi
done
readelf -d "$prefix/agent" | grep -q "Shared library: \[$so\]" || fail "agent does not need $so"
if readelf -d "$prefix/agent-static" | grep -q libegress; then
  fail "agent-static needs a shared libegress"
fi
echo "test-pkg: the C agent built against the tarball, shared and static"

echo "== ansible-test sanity (run beside the sdist's build)"
wait "$sanity_job" || {
  grep -vE '^(Collecting|Downloading|Installing|Successfully|  |Requirement|Using cached)' "$log" >&2
  fail "ansible-test sanity failed (log: $log)"
}
ran=$(grep -c '^Running sanity test' "$log" || true)
((ran >= 20)) || fail "ansible-test sanity ran $ran tests (log: $log)"
echo "test-pkg: ansible-test sanity: $ran tests passed"

echo "== in the lab: the image by podman, the manifests' workloads, the collection (tests/packaging.rs)"
# shellcheck source=scripts/podman-env.sh
source scripts/podman-env.sh
# From egress-lab/, as `cargo test` runs it.
(cd egress-lab && EGRESS_IMAGE=registry.example/egress-router:$version EGRESS_PKG_TOOLS=$tools \
  EGRESS_HA_IMAGE=registry.example/egress-router-keepalived:$version \
  EGRESS_CNI_BIN=$target/x86_64-unknown-linux-musl/dist/egress-cni \
  EGRESS_PKG_COLLECTIONS=$collections EGRESS_PKG_PYTHON=$work/venv-sdist/bin/python \
  "$packaging_test" --quiet)
