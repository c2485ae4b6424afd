#!/usr/bin/env bash
# Holds a running Herald to its own OpenAPI document: starts `herald serve` (debug build) on a
# free loopback port with a fresh data directory, runs schemathesis with every check over every
# phase (examples, coverage, fuzzing, stateful) as the `dev` tenant, stops the server, and fails
# on any schemathesis failure or error, or when fewer than $HERALD_ST_MIN_REQUESTS requests were
# made. Schemathesis's settings (seed, examples per operation, the exceptions it is told about)
# are in scripts/schemathesis.toml.
#
# Needs schemathesis: ./scripts/python-tools.sh installs the pinned version into ./.venv, or set
# SCHEMATHESIS to another one. Set HERALD_BIN to test a binary you built yourself.
set -euo pipefail
cd "$(dirname "$0")/.."

min_requests=${HERALD_ST_MIN_REQUESTS:-2000}
st=${SCHEMATHESIS:-.venv/bin/schemathesis}
if [[ ! -x "$st" ]]; then
    echo "schemathesis not found at $st." >&2
    echo "Install the pinned version with ./scripts/python-tools.sh (it goes into ./.venv)," >&2
    echo "or point SCHEMATHESIS at one (pip install \"\$(grep '^schemathesis' scripts/python-tools.txt)\")." >&2
    exit 1
fi

bin=${HERALD_BIN:-}
if [[ -z "$bin" ]]; then
    # --workspace: the features the tests built `shared` with (tests/support/lib.rs).
    cargo build --quiet --workspace --bin herald
    bin=target/debug/herald
fi

out=target/schemathesis
rm -rf "$out"
mkdir -p "$out"
data=$(mktemp -d)
server=
stop() {
    if [[ -n "$server" ]]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$data"
}
trap stop EXIT
trap 'exit 130' INT TERM

# Port 0: the server picks a free port and prints it, so no other process can take it first.
# The log exists before the server starts writing it, so that the first look finds a file.
: > "$out/server.log"
env -u HERALD_CONFIG -u HERALD_BIND -u HERALD_DATA_DIR \
    "$bin" serve --bind 127.0.0.1:0 --data-dir "$data" > "$out/server.log" 2>&1 &
server=$!
base=
for _ in $(seq 1 200); do
    base=$(sed -n 's/^herald listening on \(http:\/\/[^ ]*\).*/\1/p' "$out/server.log")
    [[ -n "$base" ]] && break
    if ! kill -0 "$server" 2>/dev/null; then
        cat "$out/server.log" >&2
        echo "herald serve did not start" >&2
        exit 1
    fi
    sleep 0.1
done
[[ -n "$base" ]] || { cat "$out/server.log" >&2; echo "herald serve printed no address" >&2; exit 1; }
key=$(grep -A1 'Its API key is shown once' "$out/server.log" | tail -n1)
[[ -n "$key" ]] || { echo "no dev key in $out/server.log" >&2; exit 1; }
echo "schemathesis against $base (server log: $out/server.log)"

start=$SECONDS
status=0
"$st" --config-file scripts/schemathesis.toml run "$base/openapi.json" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful \
    -H "Authorization: Bearer $key" \
    --report har --report-har-path "$out/requests.har" \
    --no-color > "$out/run.log" 2>&1 || status=$?
elapsed=$((SECONDS - start))
if [[ $status -eq 0 ]]; then
    tail -n 20 "$out/run.log"
else
    cat "$out/run.log"
fi

# Every request schemathesis sent (one per test case) is an entry of the HAR log.
py="$(dirname "$st")/python"
[[ -x "$py" ]] || py=python3
requests=$("$py" -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["log"]["entries"]))' \
    "$out/requests.har" 2>/dev/null || echo 0)
echo "schemathesis sent $requests requests in ${elapsed}s (exit status $status; output: $out/run.log)"
if [[ $status -ne 0 ]]; then
    echo "schemathesis found failures or errors: see $out/run.log" >&2
    exit 1
fi
if [[ $requests -lt $min_requests ]]; then
    echo "schemathesis sent $requests requests; at least $min_requests are required" >&2
    exit 1
fi
echo "schemathesis: $requests passed, 0 failed"
