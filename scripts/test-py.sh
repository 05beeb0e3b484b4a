#!/usr/bin/env bash
# The Python side of the test suite (as root): builds the `egress` wheel the way it is shipped
# (maturin + zig, manylinux2014 / manylinux_2_17, abi3 for CPython >= 3.9), installs it into a
# fresh virtualenv with pytest, mypy, ansible-core and atheris, checks the .pyi stubs against the
# module with mypy.stubtest, and runs egress-py/tests: the builder and its errors, bad input,
# routers in throwaway namespaces with real TCP, threads, a second process, logging, diagnoses,
# and real ansible-playbook runs of examples/ansible (both modules); then a short run of the
# atheris fuzzer of RouterSpec.from_dict (egress-py/fuzz; scripts/fuzz.sh --python runs it
# longer). Installs what it needs first. About 5 minutes on 2 cores from cold (pip downloads ~1-2 min, the
# release build of the wheel ~2 min, the tests ~1 min), ~3 when the pip cache and the build
# are warm.
#
#   scripts/test-py.sh           # everything
#   scripts/test-py.sh --venv    # only the virtualenv with the wheel: target/py-venv
#   scripts/test-py.sh --tests   # only the checks and tests, on the virtualenv an earlier
#                                # --venv made (scripts/test.sh builds it while the Rust tests run)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [[ $EUID -ne 0 ]]; then
  echo "test-py: needs root (the tests create network namespaces)" >&2
  exit 1
fi
scripts/setup.sh
python=${PYTHON:-python3}
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  echo "test-py: installing python3-venv"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3-venv >/dev/null
fi

target=${CARGO_TARGET_DIR:-$root/target}
[[ $target == /* ]] || target=$root/$target
venv=$target/py-venv
wheels=$target/py-wheels

py=$venv/bin/python
if [[ ${1:-} == --tests ]]; then
  if ! "$py" -c 'import egress' 2>/dev/null; then
    echo "test-py: --tests needs the virtualenv of \`scripts/test-py.sh --venv\` ($venv)" >&2
    exit 1
  fi
  export VIRTUAL_ENV=$venv PATH=$venv/bin:$PATH
else
  echo "== python venv ($venv)"
  rm -rf "$venv" "$wheels"
  "$python" -m venv "$venv"
  py=$venv/bin/python
  # maturin finds zig (pip's ziglang) and the interpreter through the active virtualenv.
  export VIRTUAL_ENV=$venv PATH=$venv/bin:$PATH
  "$py" -m pip install --quiet --disable-pip-version-check \
    "maturin>=1.9.4,<2" ziglang pytest mypy ansible-core atheris

  echo "== python wheel (maturin --zig, manylinux2014)"
  maturin build --quiet --release --zig --compatibility manylinux2014 \
    --manifest-path egress-py/Cargo.toml --out "$wheels"
  wheel=$(ls "$wheels"/egress-*.whl)
  case $(basename "$wheel") in
    *-cp39-abi3-*manylinux_2_17_x86_64*.whl) echo "test-py: built $(basename "$wheel")" ;;
    *) echo "test-py: unexpected wheel tag: $wheel" >&2; exit 1 ;;
  esac
  "$py" -m pip install --quiet --disable-pip-version-check "$wheel"
  if [[ ${1:-} == --venv ]]; then
    exit 0
  fi
fi

echo "== python stubs (mypy.stubtest)"
# From outside the source tree, so that the installed wheel is what gets imported and checked.
(cd "$venv" && "$py" -m mypy.stubtest egress)
"$py" -m mypy --strict --no-incremental --cache-dir=/dev/null \
  egress-py/tests egress-py/fuzz examples/ansible/library/egress_router.py \
  examples/ansible/library/egress_router_info.py

echo "== python tests (pytest, ansible-playbook)"
# The lab helper from the workspace's debug build as scripts/test.sh selects it (the same feature
# set, so that build serves; `--example lab-topology` alone would build the stack again).
helper=$(cargo build --quiet --workspace --lib --bins --examples --message-format=json |
  "$py" -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "lab-topology":
        print(m["executable"])')
(cd egress-py && EGRESS_LAB_TOPOLOGY=$helper "$py" -m pytest)

echo "== python fuzz (atheris, RouterSpec.from_dict: 6000 inputs)"
# A fixed seed and count: the same inputs every run, ~15 s. A finding fails the script and
# leaves its input in target/py-fuzz/.
mkdir -p "$target/py-fuzz"
"$py" egress-py/fuzz/fuzz_from_dict.py -runs=6000 -seed=1 -print_final_stats=1 \
  -artifact_prefix="$target/py-fuzz/" 2>"$target/py-fuzz/log" ||
  { tail -n 40 "$target/py-fuzz/log" >&2; exit 1; }
grep -E "^Done|stat::average_exec_per_sec" "$target/py-fuzz/log"
