#!/usr/bin/env bash
# Installs what the lab, the tests and the benchmarks need on a fresh Debian machine (as root).
# Idempotent: a machine that has everything is left alone.
set -euo pipefail

need=()
need_bare=()
# setpriv: tests/reliability.rs drops CAP_NET_ADMIN in a child with it, and scripts/test.sh
# runs egress-core's unit tests as nobody. strace: benches/apply_teardown.rs records the
# netlink requests of an apply with it (the kernel has no nlmon). arping: what OpenShift's
# script runs, in benches/openshift_init.rs. keepalived: the failover test (tests/keepalived.rs)
# and bench (benches/failover.rs) elect with real VRRP. conntrackd: tests/keepalived.rs syncs
# the connections between the two routers with it (docs/ha.md); the tests start their own
# daemons in the lab's namespaces, with their own sockets and lock files (on a machine with
# systemd, Debian also enables its own conntrackd.service, which only collects statistics).
for pair in nft:nftables ip:iproute2 ping:iputils-ping conntrack:conntrack curl:curl \
            setpriv:util-linux strace:strace arping:iputils-arping keepalived:keepalived \
            conntrackd:conntrackd; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
# tests/openshift_compat.rs parses egress-router's /metrics with the Python prometheus_client
# parsers, in the system's Python (/usr/bin/python3; EGRESS_PYTHON overrides it).
/usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || need+=(python3-prometheus-client)
# prometheus (2.42, with promtool): tests/openshift_compat.rs lints /metrics with `promtool check
# metrics`; tests/monitoring.rs unit-tests deploy/monitoring's rules with `promtool test rules`
# and scrapes a router with a real Prometheus in the lab (its own config, storage and address;
# Debian's prometheus.service is not used). Without the recommends (node exporter).
command -v promtool >/dev/null 2>&1 || need_bare=(prometheus)
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Packaging (scripts/package.sh, scripts/test-pkg.sh): podman with runc builds and runs the
# container image; strip and pkg-config pack the C library and build against it; python3-venv makes
# the virtualenvs. Without the recommends (no crun, slirp4netns, fuse-overlayfs, buildah).
pkg=("${need_bare[@]}")
for pair in podman:podman runc:runc pkg-config:pkg-config strip:binutils; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || pkg+=("${pair#*:}")
done
"${PYTHON:-python3}" -c 'import ensurepip, venv' >/dev/null 2>&1 || pkg+=(python3-venv)
if ((${#pkg[@]})); then
  echo "setup: installing ${pkg[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkg[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component add clippy rustfmt >/dev/null 2>&1 || true
  # The container image's static binaries.
  if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
    echo "setup: adding the Rust target x86_64-unknown-linux-musl"
    rustup target add x86_64-unknown-linux-musl >/dev/null
  fi
fi
