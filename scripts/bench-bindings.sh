#!/usr/bin/env bash
# Benchmark: apply and teardown of the same router through Rust (egress_core::blocking), Python
# (the `egress` wheel) and C (libegress), and what a Python author writes without egress:
# pyroute2 plus `nft -f` (benches/bindings/apply_loop_pyroute2.py), in one run.
#
#   sudo scripts/bench-bindings.sh     # EGRESS_BENCH_ROUNDS=10 EGRESS_BENCH_ITERS=10
#                                      # EGRESS_BENCH_CPU=<last CPU> (empty: no pinning)
#
# Builds the release artifacts into $CARGO_TARGET_DIR (default target/): examples/apply_loop.rs
# and the lab helper (examples/lab-topology.rs); libegress (make -C egress-ffi install, into
# bench-bindings/prefix) and benches/bindings/apply_loop.c compiled against it with -O2; the
# wheel as scripts/test-py.sh builds it (maturin --release --zig, manylinux2014), installed
# into test-py.sh's virtualenv (py-venv: reused when it has maturin, made otherwise).
# Then it starts the lab helper, writes one spec in its JSON form for the lab (a macvlan on
# ext0 of the node namespace, v4 + v6 sources and gateways, 3 redirects + fallback, the kept
# route 192.0.2.128/25 via 192.0.2.1) and hands the same file to the three loops
# (benches/bindings/apply_loop.py is the third, apply_loop_pyroute2.py the fourth: pyroute2
# is pip-installed into the same virtualenv), which time only the apply call and the
# teardown call, after one untimed warm-up. They run interleaved in ROUNDS rounds of ITERS
# iterations, the order rotating every round: on a loaded machine the wall-clock time of an
# apply moves in steps that last seconds, and many short rounds spread them over all three.
# Each loop is pinned to the same CPU (taskset): unpinned on a loaded 2-CPU machine, a Python
# process (the wheel, or even ctypes calling libegress) migrates its threads between CPUs
# about ten times as often as the Rust or C process, and each migration onto the busy CPU
# waits for a time slice: that alone can double its median apply, whatever the binding does.
# Finally it checks that the router and node namespaces are exactly as before, and prints, for
# wall-clock time and for the CPU time of the process (which waiting, on the kernel or for a
# CPU, does not inflate), the medians over all rounds, the ratios Python/Rust and C/Rust with
# their spread over the rounds, the load average and the machine.
# About 10 minutes from cold on 2 cores (three release builds), 1-2 minutes when warm.
# Not part of scripts/test.sh: a benchmark, not a test. Needs root (it builds namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=${EGRESS_BENCH_ROUNDS:-10}
iters=${EGRESS_BENCH_ITERS:-10}
cpu=${EGRESS_BENCH_CPU-$(($(nproc) - 1))}

if [[ $EUID -ne 0 ]]; then
  echo "bench-bindings: needs root (it builds network namespaces)" >&2
  exit 1
fi
scripts/setup.sh
python=${PYTHON:-python3}
need=()
"$python" -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
for pair in cc:gcc make:make pkg-config:pkg-config; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ((${#need[@]})); then
  echo "bench-bindings: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

target=${CARGO_TARGET_DIR:-$root/target}
[[ $target == /* ]] || target=$root/$target
export CARGO_TARGET_DIR=$target
out=$target/bench-bindings
venv=$target/py-venv
rm -rf "$out"
mkdir -p "$out"

echo "== build (release): Rust loop and lab helper"
cargo build --quiet --release --example apply_loop --example lab-topology
rust_loop=$target/release/examples/apply_loop
lab_helper=$target/release/examples/lab-topology

echo "== build (release): libegress and the C loop (cc -O2)"
make -C egress-ffi --no-print-directory install PREFIX="$out/prefix" >/dev/null
# shellcheck disable=SC2046 # word splitting of pkg-config's flags is intended
cc -std=c11 -O2 -Wall -Wextra -Werror -o "$out/apply_loop_c" benches/bindings/apply_loop.c \
  $(PKG_CONFIG_PATH=$out/prefix/lib/pkgconfig pkg-config --cflags --libs egress) \
  -Wl,-rpath,"$out/prefix/lib"

echo "== build (release): the wheel, into $venv"
if [[ ! -x $venv/bin/maturin ]]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "maturin>=1.9.4,<2" ziglang
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "pyroute2>=0.9,<0.10"
py=$venv/bin/python
(
  # maturin finds zig (pip's ziglang) and the interpreter through the active virtualenv.
  export VIRTUAL_ENV=$venv PATH=$venv/bin:$PATH
  maturin build --quiet --release --zig --compatibility manylinux2014 \
    --manifest-path egress-py/Cargo.toml --out "$out/wheels"
)
"$py" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
  "$out"/wheels/egress-*.whl

echo "== lab (examples/lab-topology.rs)"
coproc LAB { exec "$lab_helper"; }
lab_pid=$LAB_PID
lab_in=${LAB[1]}
lab_out=${LAB[0]}
stop_lab() {
  # The helper deletes its namespaces and exits when its stdin closes.
  exec {lab_in}>&-
  wait "$lab_pid" || true
}
trap stop_lab EXIT
ask() {
  echo "$1" >&"$lab_in"
  IFS= read -r answer <&"$lab_out"
  printf '%s\n' "$answer"
}
IFS= read -r lab <&"$lab_out"
"$python" - "$lab" >"$out/spec.json" <<'EOF'
import json, sys
lab = json.loads(sys.argv[1])
ns, c = lab["namespaces"], lab["constants"]
def redirect(port, to_port=None):
    r = {"protocol": "tcp", "port": port, "to": c["WEB4"]}
    return {**r, "to_port": to_port} if to_port else r
json.dump({
    "name": "bench-bindings",
    "netns": {"path": ns["router"]["path"]},
    "external": {"macvlan": {"parent": c["MACVLAN_PARENT"], "mode": "private",
                             "parent_netns": {"path": ns["node"]["path"]}}},
    "internal": c["ROUTER_INTERNAL"],
    "sources": [c["EGRESS_SOURCE4"], c["EGRESS_SOURCE6"]],
    "gateways": [c["GATEWAY4"], c["GATEWAY6"]],
    "redirects": [redirect(c["SERVICE_PORT"], c["WEB_PORT"]), redirect(c["WEB_PORT"]),
                  redirect(443)],
    "fallback": [c["FALLBACK4"]],
    "kept_routes": [{"to": "192.0.2.128/25", "via": c["NODE4"]}],
}, sys.stdout, indent=1)
EOF
before=$(ask snapshot)

pin=()
[[ -z $cpu ]] || pin=(taskset -c "$cpu")
echo "== run: $rounds rounds x $iters iterations of apply + teardown, interleaved" \
  "(${pin[*]:-not pinned})"
loads=("$(cut -d' ' -f1-3 /proc/loadavg)")
legs=(rust python c pyroute2)
for ((r = 0; r < rounds; r++)); do
  for ((k = 0; k < ${#legs[@]}; k++)); do
    leg=${legs[(r + k) % ${#legs[@]}]}
    case $leg in
      rust) cmd=("$rust_loop") ;;
      python) cmd=("$py" benches/bindings/apply_loop.py) ;;
      c) cmd=("$out/apply_loop_c") ;;
      pyroute2) cmd=("$py" benches/bindings/apply_loop_pyroute2.py) ;;
    esac
    "${pin[@]}" "${cmd[@]}" "$out/spec.json" "$iters" >"$out/$r-$leg.json"
  done
  loads+=("$(cut -d' ' -f1-3 /proc/loadavg)")
done

after=$(ask snapshot)
if [[ $before != "$after" ]]; then
  echo "bench-bindings: the router or node namespace differs from before the run:" >&2
  diff <(echo "$before" | "$python" -m json.tool) <(echo "$after" | "$python" -m json.tool) >&2
  exit 1
fi

"$python" - "$out" "$rounds" "$iters" "${loads[@]}" <<'EOF'
import json, os, platform, statistics, sys
out, rounds, iters, loads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
legs = {"rust": "Rust (egress_core::blocking)", "python": "Python (egress wheel)",
        "c": "C (libegress, cc -O2)", "pyroute2": "Python (pyroute2 + nft -f)"}
runs = {(r, leg): json.load(open(f"{out}/{r}-{leg}.json")) for r in range(rounds) for leg in legs}
med = statistics.median
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
            if line.startswith("model name")), platform.machine())
print(f"\nmachine: {cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}")
print(f"load average (1/5/15 min), before the first and after each round: {' | '.join(loads)}")
print(f"{rounds} rounds x {iters} iterations each; medians of all {rounds * iters} samples in "
      "microseconds; ratio = median / Rust's median (min-max over the per-round medians)")
for title, suffix in (("wall-clock time", ""), ("CPU time of the process", "_cpu")):
    print(f"\n{title:30} {'apply':>9} {'ratio':>6} {'':13}   {'teardown':>9} {'ratio':>6}")
    for leg, name in legs.items():
        cells = []
        for call in ("apply" + suffix, "teardown" + suffix):
            m, base = (med([x for r in range(rounds) for x in runs[r, l][call]])
                       for l in (leg, "rust"))
            per_round = [med(runs[r, leg][call]) / med(runs[r, "rust"][call])
                         for r in range(rounds)]
            spread = f"({min(per_round):.2f}-{max(per_round):.2f})"
            cells.append(f"{m:9.0f} {m / base:6.3f} {spread:13}")
        print(f"{name:30} {cells[0]}   {cells[1]}")

def ratio(call, leg, base):
    m = med([x for r in range(rounds) for x in runs[r, leg][call]])
    b = med([x for r in range(rounds) for x in runs[r, base][call]])
    per_round = [med(runs[r, leg][call]) / med(runs[r, base][call]) for r in range(rounds)]
    return f"{m / b:.2f}x ({min(per_round):.2f}-{max(per_round):.2f})"
opened = med([x for r in range(rounds) for x in runs[r, "pyroute2"]["open"]])
print(f"\npyroute2 + nft -f / egress wheel, wall-clock: apply {ratio('apply', 'pyroute2', 'python')}, "
      f"teardown {ratio('teardown', 'pyroute2', 'python')}; of pyroute2's apply, opening its two "
      f"namespaced sockets took {opened:.0f} us")
EOF
echo "bench-bindings: the router and node namespaces are exactly as before the run"
