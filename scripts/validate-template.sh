#!/usr/bin/env bash
# Validates and lints the SAM template (infra/template.yaml) with the pinned SAM CLI and
# cfn-lint from ./.venv, and checks that samconfig.toml parses. Needs no AWS account: the
# credentials are dummies and `sam validate --lint` does not call AWS.
# Exits non-zero on any validation error and on any cfn-lint error or warning.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(./scripts/python-tools.sh | tail -n1)

export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
unset AWS_SESSION_TOKEN AWS_PROFILE
export SAM_CLI_TELEMETRY=0

"$bin/python" - <<'PY'
import sys, tomllib
with open("samconfig.toml", "rb") as f:
    cfg = tomllib.load(f)
for env in ("dev", "prod"):
    deploy = cfg.get(env, {}).get("deploy", {}).get("parameters", {})
    if deploy.get("stack_name") != f"herald-{env}":
        sys.exit(f"samconfig.toml: [{env}.deploy.parameters] stack_name is not herald-{env}")
print("samconfig.toml parses")
PY

# `sam validate --lint` fails (exit 1) when cfn-lint reports any error or warning, but prints
# the matches on one line without file positions; on failure cfn-lint runs again on its own
# to show each match with its line.
if ! "$bin/sam" validate --lint --template infra/template.yaml --region us-east-1; then
    echo "--- cfn-lint, per match:" >&2
    "$bin/cfn-lint" --regions us-east-1 -- infra/template.yaml >&2 || true
    exit 1
fi
