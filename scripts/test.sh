#!/usr/bin/env bash
# Every test Herald has: formatting, lints, unit tests, router and engine tests, and the
# end-to-end suites (lifecycle, API contract, bad input, lanes, crash safety, bench smoke).
# Needs only Rust (stable) and a C compiler; SQLite is bundled.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets
