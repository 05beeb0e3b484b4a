#!/usr/bin/env bash
# The C side of the test suite (as root): checks that egress-ffi/include/egress.h is exactly what
# the pinned cbindgen generates, installs libegress with `make install` into the target dir,
# runs the C tests under AddressSanitizer + UBSan + LeakSanitizer (most apply a real router in
# throwaway namespaces: through the API, every output after every failure (a test generated from
# the header), fork and daemon(), a main thread that exits, one handle shared by threads; one
# diagnoses it, its JSON read by Python's json), and builds the C agent that tests/c_agent.rs
# drives during `cargo test`. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
CBINDGEN_VERSION=0.29.4

if [[ $EUID -ne 0 ]]; then
  echo "test-c: needs root (a C test applies a router in a throwaway namespace)" >&2
  exit 1
fi
scripts/setup.sh
need=()
for pair in cc:gcc make:make pkg-config:pkg-config readelf:binutils; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ((${#need[@]})); then
  echo "test-c: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

target=${CARGO_TARGET_DIR:-$root/target}
[[ $target == /* ]] || target=$root/$target
c=$target/c
rm -rf "$c"
mkdir -p "$c/bin"

echo "== C header (cbindgen $CBINDGEN_VERSION)"
# Kept outside the clone (and off PATH) so that later runs on this machine reuse it.
tools=${CARGO_HOME:-$HOME/.cargo}/egress-tools/cbindgen-$CBINDGEN_VERSION
cbindgen=$tools/bin/cbindgen
if [[ ! -x $cbindgen || "$("$cbindgen" --version)" != "cbindgen $CBINDGEN_VERSION" ]]; then
  echo "test-c: installing cbindgen $CBINDGEN_VERSION into $tools"
  cargo install cbindgen --version "=$CBINDGEN_VERSION" --locked --quiet --force --root "$tools"
fi
(cd egress-ffi && "$cbindgen" --quiet --config cbindgen.toml --crate egress-ffi \
  --output "$c/egress.h")
if ! diff -u egress-ffi/include/egress.h "$c/egress.h"; then
  echo "test-c: egress-ffi/include/egress.h is stale; regenerate it with" \
    "make -C egress-ffi header CBINDGEN=$cbindgen" >&2
  exit 1
fi

echo "== C install (make install)"
# The workspace's debug build, as scripts/test.sh makes it (one feature set for every crate:
# egress-core's fault hooks are compiled in, inert, since tests/reliability.rs needs them).
make -C egress-ffi --no-print-directory install PREFIX="$c/prefix" PROFILE=debug \
  CARGO_SELECT="--workspace --lib --bins --examples" >/dev/null
export PKG_CONFIG_PATH=$c/prefix/lib/pkgconfig
lib=$c/prefix/lib
if ! readelf -d "$lib/libegress.so.0" | grep -q 'Library soname: \[libegress.so.0\]'; then
  echo "test-c: libegress.so.0 lacks the SONAME libegress.so.0" >&2
  exit 1
fi
# The library exports exactly the functions the header declares.
if ! diff -u \
  <(grep -oE '\begress_[a-z_]+\(' "$c/prefix/include/egress.h" | tr -d '(' | sort -u) \
  <(nm -D --defined-only "$lib/libegress.so.0" | awk '$3 ~ /^egress_/ {print $3}' | sort -u); then
  echo "test-c: the header's functions and the library's exports differ" >&2
  exit 1
fi

echo "== C tests (AddressSanitizer, UBSan, LeakSanitizer)"
sanitize=(-std=c11 -g -Wall -Wextra -Werror -pthread -fsanitize=address,undefined
  -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
static_libs=$(pkg-config --static --libs-only-l egress)
static_libs=${static_libs//-legress/}
# Every function of the header that has an output, on each of its failure paths: generated from
# the header, so that a function added later is tested as soon as it is there.
python3 egress-ffi/tests/c/gen_outputs_test.py "$c/prefix/include/egress.h" >"$c/outputs_test.c"
for t in api_test router_test diagnose_test leak_canary fork_test main_exit_test threads_test \
  "$c/outputs_test"; do
  src=egress-ffi/tests/c/$t.c
  [[ $t != /* ]] || src=$t.c
  flags=("${sanitize[@]}")
  # GCC 12's AddressSanitizer allocator is not fork-safe with threads (a lock another thread
  # holds at fork stays locked in the child): fork_test runs under UBSan alone.
  [[ $t != fork_test ]] || flags=("${flags[@]/-fsanitize=address,undefined/-fsanitize=undefined}")
  # shellcheck disable=SC2046,SC2086 # word splitting of compiler flags is intended
  cc "${flags[@]}" -I egress-ffi/tests/c $(pkg-config --cflags egress) "$src" \
    "$lib/libegress.a" $static_libs -o "$c/bin/$(basename "$t")"
done
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
# Leak checking must be live here: the canary's deliberate leak has to be reported.
if "$c/bin/leak_canary" 2>"$c/leak_canary.log" ||
  ! grep -q 'LeakSanitizer: detected memory leaks' "$c/leak_canary.log"; then
  cat "$c/leak_canary.log" >&2
  echo "test-c: LeakSanitizer did not report the canary's leak" >&2
  exit 1
fi
"$c/bin/api_test" "$(pkg-config --modversion egress)"

# router_test's namespace: int0 (the internal link, with an address and the default route) and
# ext0 (down, for the router to adopt), each a veth with its peer in the same namespace.
ns=egt-$$-capi
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$ns"
in_ns() { ip -n "$ns" "$@"; }
# IPv4 only, so that no IPv6 link-local address or route appears when ext0 comes up; ext0 up
# and down once, so that its qdisc is the one it will have after the router used it.
ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
in_ns link set lo up
in_ns link add int0 type veth peer name int1
in_ns link add ext0 type veth peer name ext1
in_ns addr add 192.0.2.2/24 dev int0
for l in int0 int1 ext1 ext0; do in_ns link set "$l" up; done
in_ns link set ext0 down
in_ns route add default via 192.0.2.1 dev int0
state() {
  in_ns -d link show
  in_ns addr show
  in_ns -4 route show table all
  in_ns -6 route show table all
  ip netns exec "$ns" nft list ruleset
  ip netns exec "$ns" sysctl -a 2>/dev/null | grep -E 'forwarding|arp_notify|ndisc_notify' | sort
}
before=$(state)
unchanged() {
  if ! diff -u <(echo "$before") <(state); then
    echo "test-c: $1 left the namespace changed" >&2
    exit 1
  fi
}
"$c/bin/router_test" "$ns"
unchanged router_test
"$c/bin/outputs_test" "$ns"
unchanged outputs_test
"$c/bin/threads_test" "$ns"
unchanged threads_test
"$c/bin/main_exit_test" "$ns"
unchanged main_exit_test
# fork_test ends in daemon(): its first half exits with what it found before; the daemon writes
# its pid and report to a file, and its sanitizers to the log.
result=$c/fork_test.result
rm -f "$result"
"$c/bin/fork_test" "$ns" "$result" 2>"$c/fork_test.log" || {
  cat "$c/fork_test.log" >&2
  exit 1
}
for _ in $(seq 300); do
  [[ -f $result && $(wc -l <"$result") -ge 2 ]] && break
  sleep 0.1
done
daemon_pid=$(head -1 "$result" 2>/dev/null || true)
for _ in $(seq 100); do
  [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null || break
  sleep 0.1
done
if ! grep -q '^fork_test daemon: [1-9][0-9]* passed, 0 failed$' "$result" 2>/dev/null ||
  grep -q 'ERROR: \|runtime error' "$c/fork_test.log"; then
  cat "$result" "$c/fork_test.log" >&2 2>/dev/null || true
  echo "test-c: the daemon of fork_test failed, hung or did not report" >&2
  exit 1
fi
tail -1 "$result"
unchanged fork_test
cleanup

# diagnose_test's namespaces: the router's as router_test's, except that ext0's peer ext1 is in
# the gateway's namespace, on 203.0.113.1/24, where a listener accepts TCP port 8080 (the
# kernel completes the handshakes; nothing reads them).
gw=egt-$$-cgw
listener=
cleanup() {
  [[ -z $listener ]] || kill "$listener" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  ip netns del "$gw" 2>/dev/null || true
}
ip netns add "$ns"
ip netns add "$gw"
for n in "$ns" "$gw"; do
  ip netns exec "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$n" link set lo up
done
in_ns link add int0 type veth peer name int1
in_ns link add ext0 type veth peer name ext1 netns "$gw"
in_ns addr add 192.0.2.2/24 dev int0
for l in int0 int1 ext0; do in_ns link set "$l" up; done
in_ns link set ext0 down
in_ns route add default via 192.0.2.1 dev int0
ip -n "$gw" addr add 203.0.113.1/24 dev ext1
ip -n "$gw" link set ext1 up
ip netns exec "$gw" python3 -c 'import socket, time
s = socket.socket()
s.bind(("0.0.0.0", 8080))
s.listen(64)
time.sleep(3600)' &
listener=$!
for _ in $(seq 100); do
  [[ -n $(ip netns exec "$gw" ss -Hltn 'sport = :8080') ]] && break
  sleep 0.05
done
before=$(state)
"$c/bin/diagnose_test" "$ns" "$gw" egress-ffi/tests/c/check_diagnosis.py
if ! diff -u <(echo "$before") <(state); then
  echo "test-c: diagnose_test left the namespace changed" >&2
  exit 1
fi
cleanup
trap - EXIT

# The README's C example, as the body of a program: it compiles against the installed header.
{
  printf '#include <stdio.h>\n#include <egress.h>\nint main(void) {\n'
  sed -n '/^## Use it from C/,/^## /p' README.md | sed -n '/^```c$/,/^```$/p' | sed '1d;$d'
  printf 'return r != EGRESS_RESULT_OK;\n}\n'
} >"$c/readme_example.c"
# shellcheck disable=SC2046 # word splitting of pkg-config's flags is intended
cc -Wall -Wextra -Werror -o "$c/bin/readme_example" "$c/readme_example.c" \
  $(pkg-config --cflags --libs egress)

echo "== C agent (cc agent.c \$(pkg-config --cflags --libs egress))"
# shellcheck disable=SC2046 # word splitting of pkg-config's flags is intended
cc -Wall -Wextra -Werror -o "$c/bin/egress-c-agent" examples/c-agent/agent.c \
  $(pkg-config --cflags --libs egress) -Wl,-rpath,"$lib"
readelf -d "$c/bin/egress-c-agent" | grep -q 'Shared library: \[libegress.so.0\]'
echo "test-c: built $c/bin/egress-c-agent for tests/c_agent.rs"
