#!/usr/bin/env bash
# The whole test suite, as CI runs it (needs root: the tests build throwaway namespaces).
#
# About 14 minutes on 2 cores from cold (the same checks in sequence took 17.5): CPU-bound, both
# CPUs ~99 % busy from start to end, ~1,500 CPU-seconds, most of them the builds (a debug build,
# clippy's check build, and release builds for three toolchains: the wheel's manylinux one,
# the C library's and the sdist's host one, the images' static musl one). The order keeps
# both CPUs busy: the release builds that the Python and packaging checks need (the wheel, the
# images' static binaries, the C library) and the cbindgen the C checks pin start at once, and
# clippy and the docs once the debug build is done, beside everything else, in the idle
# scheduling class (`chrt --idle`): they get only the CPU time the foreground leaves — the gaps
# of the debug build, then the Rust and C tests, which mostly wait on the kernel and the
# network — so the foreground's pace and the tests' timing are unchanged. The packaging
# scripts then find those builds done.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
[[ $target == /* ]] || target=$root/$target
scripts/setup.sh

# Beside everything (idle class): the release builds — the wheel and its virtualenv
# (scripts/test-py.sh --venv) first, then the static binaries of the images and the C
# library's release build, exactly as scripts/package.sh builds them (so that it finds them
# done) — and the pinned cbindgen of scripts/test-c.sh.
mkdir -p "$target"
prebuild_log=$target/prebuild.log
wheel_done=$target/prebuild.wheel-done
rm -f "$wheel_done"
# Its own session (setsid), so that a failure here stops the whole group.
(
  exec setsid chrt --idle 0 nice -n 19 bash -c '
    set -euo pipefail
    scripts/test-py.sh --venv
    touch "$1"
    cargo build --quiet --profile dist --target x86_64-unknown-linux-musl \
      --bin egress-router --bin egress-cni --bin egress-cni-install
    cargo --quiet build -p egress-ffi --lib --release
  ' prebuild "$wheel_done"
) >"$prebuild_log" 2>&1 &
prebuild=$!
(exec setsid chrt --idle 0 nice -n 19 scripts/test-c.sh --tools) >"$target/cbindgen.log" 2>&1 &
cbindgen=$!
trap 'kill -- -"$prebuild" -"$cbindgen" 2>/dev/null || true' EXIT
prebuild_failed() {
  cat "$prebuild_log" >&2
  echo "test: the release builds failed" >&2
  exit 1
}

echo "== format";  cargo fmt --all -- --check
echo "== layers";  python3 scripts/check-layers.py   # no cycle among egress-core's modules

echo "== build"
# One debug build of the workspace with its tests, binaries and examples (one feature set:
# tests/openshift_compat.rs, diagnose.rs and cni.rs run egress-router and egress-cni from it,
# egress-py's tests the lab-topology example). The path of egress-core's unit test binary is
# kept for the unprivileged run below.
core=$(cargo test --workspace --no-run --quiet --message-format=json |
  grep '"name":"egress_core","src_path":"[^"]*/egress-core/src/lib.rs"' |
  grep '"test":true' | grep -o '"executable":"[^"]*"' | cut -d'"' -f4)
[[ -x $core ]] || { echo "test: no unit test binary of egress-core" >&2; exit 1; }
# As scripts/test-c.sh selects it, and tests/packaging.rs (which scripts/test-pkg.sh runs) with
# the same selection, so that it finds it built.
cargo build --workspace --lib --bins --examples --test packaging --quiet

# clippy and the docs beside the tests (idle class, in a target dir of their own: their check
# build of the dependencies shares nothing with the debug build anyway); read at the end.
lint_log=$target/lint.log
(
  exec setsid chrt --idle 0 nice -n 19 bash -c '
    set -euo pipefail
    export CARGO_TARGET_DIR=$1
    # tests/packaging.rs too (`--all-targets` leaves out a test target with `test = false`),
    # as scripts/test-pkg.sh checks it: it finds it done.
    echo "== clippy"; cargo clippy --workspace --all-targets --test packaging --quiet -- -D warnings
    echo "== docs";   RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
    # The private items too (broken intra-doc links included).
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet --document-private-items
  ' lint "$target/lint"
) >"$lint_log" 2>&1 &
lint=$!
trap 'kill -- -"$prebuild" -"$cbindgen" -"$lint" 2>/dev/null || true' EXIT

wait "$cbindgen" || { cat "$target/cbindgen.log" >&2; exit 1; }
scripts/test-c.sh                   # C header, ASan C tests; builds the agent tests/c_agent.rs runs
echo "== tests";   cargo test --workspace
# egress-core's own tests are pure (the privileged ones are egress-lab's): its unit test binary
# passes as nobody, without a capability. A copy in a temporary folder, which nobody can reach
# wherever the clone is.
unpriv=$(mktemp -d); cp "$core" "$unpriv/egress-core-tests"; chmod 755 "$unpriv"
(cd "$unpriv" && setpriv --reuid=65534 --regid=65534 --clear-groups ./egress-core-tests --quiet)
rm -r "$unpriv"
# The lab before the packages: scripts/package.sh's `cargo package` cleans the debug build of
# the crates it packages.
# The example as the build above made it (`cargo run --example lab` would select egress-lab
# alone: another feature set, another build of the stack).
echo "== lab";     "$target/debug/examples/lab"

echo "== the wheel (built beside the tests: $prebuild_log)"
while [[ ! -e $wheel_done ]]; do
  kill -0 "$prebuild" 2>/dev/null || { wait "$prebuild" || prebuild_failed; }
  sleep 1
done
# The Python tests while the rest of the release builds goes on.
scripts/test-py.sh --tests          # stubtest, pytest, ansible-playbook, the fuzzer
echo "== the release builds (beside the tests: $prebuild_log)"
wait "$prebuild" || prebuild_failed
trap 'kill -- -"$lint" 2>/dev/null || true' EXIT
scripts/test-pkg.sh                 # every artefact of scripts/package.sh, used as users use them
echo "== clippy and docs (beside the tests: $lint_log)"
wait "$lint" || { cat "$lint_log" >&2; echo "test: clippy or the docs failed" >&2; exit 1; }
trap - EXIT

left=$(ip netns list | awk '{print $1}' | grep '^egt-' || true)
if [[ -n "$left" ]]; then
  echo "test namespaces left behind:"; echo "$left"; exit 1
fi
