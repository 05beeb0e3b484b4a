#!/usr/bin/env bash
# Records what an earlier version's binaries leave in a router namespace, for tests/upgrade.rs
# (as root: it runs them in throwaway namespaces). Builds that commit's egress-router and
# egress-cni from git in a temporary worktree (a cold build: minutes), runs each scenario of
# tests/upgrade.rs with them (`record_fixtures`), and writes
# tests/fixtures/upgrade/<commit>/<scenario>.json. Run it once per version whose on-kernel
# format the current one must keep reading; commit the result.
#
#   scripts/record-upgrade-fixtures.sh [COMMIT]     # default: 7508fe2
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rev=${1:-7508fe2}
if [[ $EUID -ne 0 ]]; then
  echo "record-upgrade-fixtures: needs root (the scenarios run in throwaway namespaces)" >&2
  exit 1
fi
scripts/setup.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/egt-upgrade-XXXXXX")
cleanup() {
  git worktree remove --force "$work/src" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
git worktree add --quiet --detach "$work/src" "$rev"
echo "== build $rev (egress-router, egress-cni)"
CARGO_TARGET_DIR=$work/target cargo build --quiet --manifest-path "$work/src/Cargo.toml" \
  --bin egress-router --bin egress-cni
echo "== record"
EGRESS_UPGRADE_RECORD_BIN=$work/target/debug \
  EGRESS_UPGRADE_FIXTURES=$root/tests/fixtures/upgrade/$rev \
  EGRESS_UPGRADE_REV=$(git rev-parse "$rev") \
  cargo test --quiet -p egress-lab --test upgrade -- --ignored --exact record_fixtures \
  --nocapture
ls -l "tests/fixtures/upgrade/$rev"
