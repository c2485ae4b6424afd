#!/usr/bin/env bash
# Measures each Lambda function's init time (process start to its first Runtime API request,
# with its SDK clients built) on this machine: a native release build of each function against
# a Runtime API stub on loopback (scripts/cold_start.py). The figures are in docs/cost.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin api --bin webhooks --bin enqueue --bin dispatch --bin suppression \
    --bin health-checker --bin stats
python3 scripts/cold_start.py target/release "${1:-10}"
