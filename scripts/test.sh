#!/usr/bin/env bash
# Every test Herald has: formatting, lints, the SAM template's validation, unit tests, router and
# engine tests, the embedded end-to-end suites (lifecycle, API contract, bad input, lanes, crash
# safety, CLI, bench smoke, the console in headless chromium), the AWS suites (port contract on DynamoDB and SQS, the Lambda
# pipeline, bulk fan-out, sample events) against moto, schemathesis against a running
# `herald serve` (scripts/schemathesis.sh), and the request-by-request AWS cost scenarios on a
# moto of their own.
# Needs Rust (stable), a C compiler and Python 3 with venv; everything else it installs into
# ./.venv (scripts/python-tools.txt). Set HERALD_TEST_AWS_ENDPOINT to use an emulator you run
# yourself (LocalStack, say) instead of the moto servers this script starts.
#
# Order: the AWS cost scenarios (a 10,000-recipient job, request by request, on one
# single-threaded moto) are the longest suite by far, so everything is built first, they start
# at once, and the rest (the suites, lints, the template, schemathesis) runs beside them.
set -euo pipefail
cd "$(dirname "$0")/.."

# A timestamped line as each phase begins, to see where the run's time goes.
phase() { echo "== $(date -u +%H:%M:%S) $*"; }

# Waits for a background job; if it failed, shows its log and stops the run.
wait_or_stop() {
    local pid=$1 log=$2 what=$3
    if ! wait "$pid"; then
        cat "$log" >&2
        echo "$what failed (log above: $log)" >&2
        exit 1
    fi
}

cargo fmt --all -- --check

# Every background job (the Python install, moto servers, the cost scenarios) stops with the
# script.
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
mkdir -p target

# The Python tools, and the console browser test's chromium and axe-core, install while Rust
# builds.
./scripts/python-tools.sh > target/python-tools.log 2>&1 &
python_tools=$!
./scripts/browser-tools.sh > target/browser-tools.log 2>&1 &
browser_tools=$!

phase building
# Everything the suites run, so none of them compiles in the middle of another's timing:
# the test binaries, and the `herald` binary the CLI, crash and schemathesis runs start
# (--workspace: with the features the tests built `shared` with; tests/support/lib.rs).
# The cost scenarios' binary is run as it is: `cargo test -p herald-tests` would resolve
# `shared`'s features apart from --workspace's and build it all again (two minutes).
cargo test --workspace --all-targets --no-run --message-format=json-render-diagnostics \
    > target/test-binaries.json
cargo build --workspace --bin herald
aws_cost=$(grep -o '"executable":"[^"]*/aws_cost-[^"]*"' target/test-binaries.json | cut -d'"' -f4)
if [[ ! -x "$aws_cost" ]]; then
    echo "no aws_cost test binary in cargo's list (target/test-binaries.json)" >&2
    exit 1
fi

wait_or_stop "$python_tools" target/python-tools.log "installing the Python tools"
tools=$(tail -n1 target/python-tools.log)
wait_or_stop "$browser_tools" target/browser-tools.log \
    "installing chromium or axe-core for the console's browser test"

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

# The cost scenarios on motos of their own: the 10,000-recipient job on one, the others
# (the throttled backlog polls its lane for minutes) on another.
bulk_endpoint=${HERALD_TEST_AWS_ENDPOINT:-}
cost_endpoint=${HERALD_TEST_AWS_ENDPOINT:-}
if [[ -z "${HERALD_TEST_AWS_ENDPOINT:-}" ]]; then
    start_moto moto
    export HERALD_TEST_AWS_ENDPOINT=$moto_url
    start_moto moto-cost-bulk
    bulk_endpoint=$moto_url
    start_moto moto-cost
    cost_endpoint=$moto_url
fi

# --nocapture: their tables (requests, WRU, RRU per operation) are the point of them. In
# tests/, where `cargo test` would run them.
bulk_scenario=a_bulk_job_of_ten_thousand
(cd tests && HERALD_TEST_AWS_ENDPOINT=$bulk_endpoint "$aws_cost" --nocapture \
    --exact "$bulk_scenario"_stays_in_budget_per_recipient) > target/aws_cost_bulk.log 2>&1 &
cost_bulk=$!
(cd tests && HERALD_TEST_AWS_ENDPOINT=$cost_endpoint "$aws_cost" --nocapture \
    --skip "$bulk_scenario") > target/aws_cost.log 2>&1 &
cost=$!

phase "the suites (the cost scenarios run beside them)"
cargo test --workspace --all-targets -- --skip _stays_in_budget
# clippy beside the template's lint and schemathesis: one after the other they took 12.3 of
# the run's 46 minutes, side by side 9.8 (2026-12-07; the bulk cost scenario shares the cores).
phase "clippy (target/clippy.log), beside the SAM template and schemathesis"
cargo clippy --workspace --all-targets -- -D warnings > target/clippy.log 2>&1 &
clippy=$!
./scripts/validate-template.sh
phase schemathesis
# HERALD_BIN: the binary built above; `cargo build` would wait for clippy's lock.
HERALD_BIN=target/debug/herald SCHEMATHESIS="$tools/schemathesis" ./scripts/schemathesis.sh
wait_or_stop "$clippy" target/clippy.log clippy
tail -n1 target/clippy.log

phase "waiting for the cost scenarios"
for scenarios in "$cost:aws_cost" "$cost_bulk:aws_cost_bulk"; do
    wait_or_stop "${scenarios%%:*}" "target/${scenarios#*:}.log" "the AWS cost scenarios"
    grep -E "^per message|^bulk on moto|^throttled on moto|^test |^test result" "target/${scenarios#*:}.log"
done
phase done
