#!/usr/bin/env bash
# Every test Herald has: formatting, lints, the SAM template's validation, unit tests, router and
# engine tests, the embedded end-to-end suites (lifecycle, API contract, bad input, lanes, crash
# safety, CLI, bench smoke), the AWS suites (port contract on DynamoDB and SQS, the Lambda
# pipeline, bulk fan-out, sample events) against moto, and last schemathesis against a running
# `herald serve` (scripts/schemathesis.sh).
# Needs Rust (stable), a C compiler and Python 3 with venv; everything else it installs into
# ./.venv (scripts/python-tools.txt). Set HERALD_TEST_AWS_ENDPOINT to use an emulator you run
# yourself (LocalStack, say) instead of the moto server this script starts.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

tools=$(./scripts/python-tools.sh | tail -n1)
./scripts/validate-template.sh

if [[ -z "${HERALD_TEST_AWS_ENDPOINT:-}" ]]; then
    port=$("$tools/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p target
    "$tools/moto_server" -H 127.0.0.1 -p "$port" > target/moto.log 2>&1 &
    moto=$!
    trap 'kill "$moto" 2>/dev/null || true' EXIT
    export HERALD_TEST_AWS_ENDPOINT="http://127.0.0.1:$port"
    for _ in $(seq 1 100); do
        if "$tools/python" -c "import urllib.request; urllib.request.urlopen('$HERALD_TEST_AWS_ENDPOINT/moto-api/')" 2>/dev/null; then
            break
        fi
        kill -0 "$moto" 2>/dev/null || { cat target/moto.log >&2; echo "moto server did not start" >&2; exit 1; }
        sleep 0.2
    done
    echo "moto server on $HERALD_TEST_AWS_ENDPOINT (log: target/moto.log)"
fi

cargo test --workspace --all-targets

SCHEMATHESIS="$tools/schemathesis" ./scripts/schemathesis.sh
