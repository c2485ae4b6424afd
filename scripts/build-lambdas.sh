#!/usr/bin/env bash
# Builds the Lambda functions (api, enqueue, dispatch, suppression, health-checker, webhooks, stats, notify, inbound)
# for provided.al2023 on arm64 with cargo-lambda (zig as the cross linker; both from PyPI into
# ./.venv), and reports each artifact's size. Output: target/lambda/<function>/bootstrap(.zip).
# `sam build --config-env dev` does the same through the template's rust-cargolambda metadata.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=$(./scripts/python-tools.sh | tail -n1)
# The venv's python carries ziglang, which cargo-lambda's zig linker falls back to.
export PATH="$tools:$PATH"

functions=(api enqueue dispatch suppression health-checker webhooks stats notify inbound)
args=()
for f in "${functions[@]}"; do args+=(--bin "$f"); done

cargo lambda build --release --arm64 --output-format zip "${args[@]}"

printf '%-14s %12s %12s\n' function binary zip
for f in "${functions[@]}"; do
    zip="target/lambda/$f/bootstrap.zip"
    [[ -f "$zip" ]] || { echo "missing $zip" >&2; exit 1; }
    # The zip holds the one executable; report it unpacked too.
    binary=$("$tools/python" -c "import sys, zipfile; print(sum(i.file_size for i in zipfile.ZipFile(sys.argv[1]).infolist()))" "$zip")
    printf '%-14s %9.1f MB %9.1f MB\n' "$f" "$(echo "$binary / 1048576" | bc -l)" "$(echo "$(stat -c %s "$zip") / 1048576" | bc -l)"
done
