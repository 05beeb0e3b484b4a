#!/usr/bin/env bash
# The whole test suite, as CI runs it (needs root: the tests build throwaway namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== format";  cargo fmt --all -- --check
echo "== clippy";  cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== docs";    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
# The private items' docs too (broken intra-doc links included).
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet --document-private-items
echo "== binary";  cargo build --quiet --bin egress-router   # run by tests/openshift_compat.rs, diagnose.rs
cargo build --quiet --bin egress-cni                         # run by tests/cni.rs
scripts/test-c.sh                   # C header, ASan C tests; builds the agent tests/c_agent.rs runs
echo "== tests";   cargo test --workspace
# egress-core's own tests are pure (the privileged ones are egress-lab's): its unit test binary
# passes as nobody, without a capability. A copy in a temporary folder, which nobody can reach
# wherever the clone is.
core=$(cargo test --quiet -p egress-core --lib --no-run --message-format=json \
  | grep -o '"executable":"[^"]*"' | cut -d'"' -f4)
unpriv=$(mktemp -d); cp "$core" "$unpriv/egress-core-tests"; chmod 755 "$unpriv"
(cd "$unpriv" && setpriv --reuid=65534 --regid=65534 --clear-groups ./egress-core-tests --quiet)
rm -r "$unpriv"
scripts/test-py.sh                  # the wheel (manylinux2014), stubtest, pytest, ansible-playbook
scripts/test-pkg.sh                 # every artefact of scripts/package.sh, used as users use them
echo "== lab";     cargo run --quiet --example lab

left=$(ip netns list | awk '{print $1}' | grep '^egt-' || true)
if [[ -n "$left" ]]; then
  echo "test namespaces left behind:"; echo "$left"; exit 1
fi
