#!/usr/bin/env bash
# The whole test suite, as CI runs it (needs root: the tests build throwaway namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== format";  cargo fmt --all -- --check
echo "== clippy";  cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== docs";    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "== tests";   cargo test --workspace
echo "== lab";     cargo run --quiet --example lab

left=$(ip netns list | awk '{print $1}' | grep '^egt-' || true)
if [[ -n "$left" ]]; then
  echo "test namespaces left behind:"; echo "$left"; exit 1
fi
