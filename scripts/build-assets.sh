#!/usr/bin/env bash
# Rebuild streamstats/static/vendor/ from web/package-lock.json: the browser libraries the
# dashboard and the report pages load (no CDN at run time). The copies are committed, so a
# wheel needs no Node.js; tests/unit/test_assets.py checks they match the locked packages.
# Usage: scripts/build-assets.sh [--check]   (--check: fail if the committed copies differ)
set -euo pipefail
cd "$(dirname "$0")/.."
(cd web && npm ci --silent --no-audit --no-fund)
out=streamstats/static/vendor
files=(
    "uplot/dist/uPlot.iife.min.js:uPlot.iife.min.js"
    "uplot/dist/uPlot.min.css:uPlot.min.css"
    "uplot/LICENSE:uPlot.LICENSE"
    "socket.io-client/dist/socket.io.min.js:socket.io.min.js"
    "socket.io-client/LICENSE:socket.io.LICENSE"
)
status=0
mkdir -p "$out"
for pair in "${files[@]}"; do
    src="web/node_modules/${pair%%:*}" dst="$out/${pair##*:}"
    if [[ "${1:-}" == "--check" ]]; then
        cmp -s "$src" "$dst" || { echo "build-assets: $dst differs from $src" >&2; status=1; }
    else
        cp "$src" "$dst"
    fi
done
exit $status
