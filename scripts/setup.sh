#!/usr/bin/env bash
# Set up a machine for stream-stats: database (scripts/provision-db.sh), a virtual environment
# in .venv with the project and its test tools, the JavaScript test client, and the schema.
# Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL=${DATABASE_URL:-postgresql:///streamstats}
PYTHON=${PYTHON:-python3}

say() { printf 'setup: %s\n' "$*" >&2; }

bash scripts/provision-db.sh

# System packages the tests use: headless Chromium renders the reports and runs the browser tests,
# Node.js runs the official JavaScript client and Playwright, ffmpeg makes test videos, promtool
# (prometheus) checks the alert rules, python3-venv makes the virtual environment.
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v promtool >/dev/null || missing+=(prometheus)
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
[ -x .venv/bin/python ] || "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
    else
        say "warning: missing ${missing[*]}: install them (as root: apt-get install -y ${missing[*]})"
    fi
fi

stamp=.venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
    say "installing stream-stats and its test tools into .venv"
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING' || true
    .venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v '^WARNING' || true
    .venv/bin/python -c 'import streamstats, ingest, jobs, analytics' \
        || { say "error: the install into .venv failed"; exit 1; }
    rm -f .venv/.installed-*; touch "$stamp"
fi

# npm packages: the official JavaScript client and playwright-core for the tests (tests/js), the
# browser libraries bundled into the package (web, see scripts/build-assets.sh).
for dir in tests/js web; do
    [ -f "$dir/package-lock.json" ] || continue
    if ! command -v npm >/dev/null; then
        say "warning: npm not found: $dir is not installed (install Node.js 18+)"
    elif [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
        say "installing the npm packages of $dir"
        (cd "$dir" && npm ci --silent --no-audit --no-fund) && touch "$dir/node_modules"
    fi
done

if [ ! -f .env ] || ! grep -q '^STREAMSTATS_JWT_SECRET=' .env; then
    say "writing a new JWT signing secret to .env (clients' tokens are signed with it)"
    printf 'STREAMSTATS_JWT_SECRET=%s\n' "$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(32))')" >> .env
    chmod 600 .env
fi

.venv/bin/streamstats migrate
