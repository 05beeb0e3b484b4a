#!/usr/bin/env bash
# Fuzzes the parsers every front end feeds, one target at a time, one process each (libFuzzer
# through cargo-fuzz; the machine has one stable toolchain, so RUSTC_BOOTSTRAP=1 unlocks the
# sanitizer flags). Not part of scripts/test.sh: the proptest properties in
# tests/reliability.rs are the short version.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    # default: 600 s, every target
#   scripts/fuzz.sh --python [SECONDS]                   # the Python binding's from_dict (atheris)
#
# Targets (fuzz/fuzz_targets/, `cargo fuzz list`): json_spec (RouterSpec::from_json),
# egress_destination (egress_openshift::parse_destination), egress_env
# (egress_openshift::from_env), cni_config (egress_cni::parse_config and the spec of an
# attachment), crash_record (what egress reads back from a namespace: the crash record, its
# notes, the identity notes; egress_core::fuzzing). The corpus grows in $FUZZ_CORPUS (default target/fuzz-corpus), seeded from
# fuzz/seeds; a crash leaves its input in fuzz/artifacts/TARGET/ and fails the script. Each
# target's last line is its execution count.
#
# --python fuzzes RouterSpec.from_dict through the Python conversion layer instead
# (egress-py/fuzz/fuzz_from_dict.py, atheris: libFuzzer driving Python), in the virtualenv
# scripts/test-py.sh --venv builds (root, like test-py.sh). Its corpus is
# $FUZZ_CORPUS/py_from_dict; a finding leaves its input in fuzz/artifacts/py_from_dict/.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
corpus=${FUZZ_CORPUS:-$target_dir/fuzz-corpus}
if [[ ${1:-} == --python ]]; then
  seconds=${2:-600}
  scripts/test-py.sh --venv
  mkdir -p "$corpus/py_from_dict" fuzz/artifacts/py_from_dict
  echo "== fuzz py_from_dict: ${seconds}s"
  "$target_dir/py-venv/bin/python" egress-py/fuzz/fuzz_from_dict.py "$corpus/py_from_dict" \
    -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix=fuzz/artifacts/py_from_dict/ 2>"$corpus/py_from_dict.log" || status=$?
  grep -E "^#[0-9]+.*(pulse|DONE)|stat::number_of_executed_units|Uncaught|Error" \
    "$corpus/py_from_dict.log" | tail -n 3
  if [[ ${status:-0} != 0 ]]; then
    echo "fuzz py_from_dict failed: see $corpus/py_from_dict.log and fuzz/artifacts/py_from_dict/" >&2
    exit 1
  fi
  exit 0
fi
seconds=${1:-600}
shift || true
targets=("$@")
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(cargo fuzz list)
fi
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
