#!/usr/bin/env bash
# Fuzzes the parsers every front end feeds, one target at a time, one process each (libFuzzer
# through cargo-fuzz; the machine has one stable toolchain, so RUSTC_BOOTSTRAP=1 unlocks the
# sanitizer flags). Not part of scripts/test.sh: the proptest properties in
# tests/reliability.rs are the short version.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    # default: 600 s, every target
#
# Targets (fuzz/fuzz_targets/, `cargo fuzz list`): json_spec (RouterSpec::from_json),
# egress_destination (egress_openshift::parse_destination), egress_env
# (egress_openshift::from_env), cni_config (egress_cni::parse_config and the spec of an
# attachment). The corpus grows in $FUZZ_CORPUS (default target/fuzz-corpus), seeded from
# fuzz/seeds; a crash leaves its input in fuzz/artifacts/TARGET/ and fails the script. Each
# target's last line is its execution count.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("$@")
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(cargo fuzz list)
fi
target_dir=${CARGO_TARGET_DIR:-target}
corpus=${FUZZ_CORPUS:-$target_dir/fuzz-corpus}
cargo fuzz build --target-dir "$target_dir/fuzz"
for t in "${targets[@]}"; do
  mkdir -p "$corpus/$t"
  seeds=()
  [[ -d fuzz/seeds/$t ]] && seeds=("fuzz/seeds/$t")
  # -jobs=1: one worker process, its output in fuzz-0.log.
  opts=(-jobs=1 -workers=1 -max_total_time="$seconds" -print_final_stats=1)
  [[ -f fuzz/dict/$t.dict ]] && opts+=(-dict="fuzz/dict/$t.dict")
  echo "== fuzz $t: ${seconds}s"
  cargo fuzz run --target-dir "$target_dir/fuzz" "$t" "$corpus/$t" "${seeds[@]}" -- \
    "${opts[@]}" >/dev/null 2>&1 || status=$?
  mv fuzz-0.log "$corpus/$t.log"
  grep -E "^#[0-9]+.*(pulse|DONE)|stat::number_of_executed_units|ERROR|panicked" "$corpus/$t.log" | tail -n 2
  if [[ ${status:-0} != 0 ]]; then
    echo "fuzz $t failed: see $corpus/$t.log and fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
