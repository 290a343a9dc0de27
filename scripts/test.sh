#!/usr/bin/env bash
# Run the test suite against a real PostgreSQL + TimescaleDB and Redis (set up first if needed).
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL=${DATABASE_URL:-postgresql:///streamstats}
bash scripts/setup.sh
exec .venv/bin/pytest "$@"
