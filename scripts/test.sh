#!/usr/bin/env bash
# Every test Herald has: formatting, lints, the SAM template's validation, unit tests, router and
# engine tests, the embedded end-to-end suites (lifecycle, API contract, bad input, lanes, crash
# safety, CLI, bench smoke), the AWS suites (port contract on DynamoDB and SQS, the Lambda
# pipeline, bulk fan-out, sample events) against moto, and last schemathesis against a running
# `herald serve` (scripts/schemathesis.sh), beside the request-by-request AWS cost scenarios on
# a moto of their own.
# Needs Rust (stable), a C compiler and Python 3 with venv; everything else it installs into
# ./.venv (scripts/python-tools.txt). Set HERALD_TEST_AWS_ENDPOINT to use an emulator you run
# yourself (LocalStack, say) instead of the moto server this script starts.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

tools=$(./scripts/python-tools.sh | tail -n1)
./scripts/validate-template.sh

# Every background job (moto servers, the cost scenarios) stops with the script.
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

# Starts a moto server on a free port; its URL in `moto_url`.
start_moto() {
    local name=$1 port url
    port=$("$tools/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    url="http://127.0.0.1:$port"
    # One request at a time: DynamoDB's atomic conditional writes (scripts/moto_server.py).
    "$tools/python" scripts/moto_server.py -H 127.0.0.1 -p "$port" > "target/$name.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 100); do
        if "$tools/python" -c "import urllib.request; urllib.request.urlopen('$url/moto-api/')" 2>/dev/null; then
            echo "moto server on $url (log: target/$name.log)"
            moto_url=$url
            return
        fi
        kill -0 "$pid" 2>/dev/null || { cat "target/$name.log" >&2; echo "moto server did not start" >&2; exit 1; }
        sleep 0.2
    done
    echo "moto server did not answer on $url" >&2
    exit 1
}

mkdir -p target
cost_endpoint=${HERALD_TEST_AWS_ENDPOINT:-}
if [[ -z "${HERALD_TEST_AWS_ENDPOINT:-}" ]]; then
    start_moto moto
    export HERALD_TEST_AWS_ENDPOINT=$moto_url
    start_moto moto-cost
    cost_endpoint=$moto_url
fi

cargo test --workspace --all-targets -- --skip _stays_in_budget

# The AWS cost scenarios (tests/aws_cost.rs: a 10,000-recipient job, request by request) keep
# one moto busy for about ten minutes. They run on a moto of their own, beside schemathesis,
# after the timing-sensitive suites (lanes, crash, bench) have had the machine to themselves.
# --nocapture: their tables (requests, WRU, RRU per operation) are the point of them.
HERALD_TEST_AWS_ENDPOINT=$cost_endpoint cargo test -p herald-tests --test aws_cost \
    -- --nocapture > target/aws_cost.log 2>&1 &
cost=$!

SCHEMATHESIS="$tools/schemathesis" ./scripts/schemathesis.sh

if ! wait "$cost"; then
    cat target/aws_cost.log >&2
    echo "the AWS cost scenarios failed (log above: target/aws_cost.log)" >&2
    exit 1
fi
grep -E "^per message|^test |^test result" target/aws_cost.log
