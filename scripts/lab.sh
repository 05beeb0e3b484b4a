#!/usr/bin/env bash
# The main job: install what is needed, then run the seed's lab (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --quiet --example lab
