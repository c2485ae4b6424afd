#!/usr/bin/env bash
# Installs the Python-packaged tools (scripts/python-tools.txt) into ./.venv: moto (the AWS
# emulator the AWS tests run against), aws-sam-cli with cfn-lint (`sam validate --lint`),
# cargo-lambda with ziglang (the Lambda build), and schemathesis (scripts/schemathesis.sh).
# Re-running is cheap: it reinstalls only when the pinned list changed. Prints the venv's bin
# directory on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
stamp="$venv/.python-tools.sha256"
want=$(sha256sum scripts/python-tools.txt | cut -d' ' -f1)

if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv" >&2
fi
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "installing Python tools into $venv (moto, aws-sam-cli, cargo-lambda, ziglang, schemathesis, standardwebhooks, playwright)..." >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/python-tools.txt >&2
    echo "$want" > "$stamp"
fi
echo "$PWD/$venv/bin"
