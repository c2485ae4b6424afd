#!/usr/bin/env bash
# Installs what the console's browser test needs beside the Python tools: Debian's chromium
# (headless; Playwright for Python, from scripts/python-tools.txt, drives it) and axe-core from
# the npm registry (the accessibility check the test runs in every page). Re-running is cheap.
# Prints the axe-core script's path on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium > /dev/null; then
    echo "installing Debian's chromium for the console's browser test..." >&2
    if [[ $(id -u) -ne 0 ]]; then sudo=sudo; else sudo=; fi
    $sudo apt-get install -y --no-install-recommends chromium >&2 \
        || { $sudo apt-get update >&2 && $sudo apt-get install -y --no-install-recommends chromium >&2; }
fi

axe_version=4.10.3
axe_dir=target/browser-tools
axe=$axe_dir/node_modules/axe-core/axe.min.js
if [[ ! -f "$axe" ]] || ! grep -q "$axe_version" "$axe_dir/node_modules/axe-core/package.json"; then
    echo "installing axe-core $axe_version from npm..." >&2
    mkdir -p "$axe_dir"
    npm install --silent --no-audit --no-fund --prefix "$axe_dir" "axe-core@$axe_version" >&2
fi
echo "$PWD/$axe"
