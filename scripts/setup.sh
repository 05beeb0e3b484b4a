#!/usr/bin/env bash
# Installs what the lab, the tests and the benchmarks need on a fresh Debian machine (as root).
# Idempotent: a machine that has everything is left alone.
set -euo pipefail

need=()
# setpriv: tests/reliability.rs drops CAP_NET_ADMIN in a child with it.
for pair in nft:nftables ip:iproute2 ping:iputils-ping conntrack:conntrack curl:curl \
            setpriv:util-linux; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component add clippy rustfmt >/dev/null 2>&1 || true
fi
