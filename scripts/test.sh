#!/usr/bin/env bash
# Set up the environment if needed, then run the whole test suite; non-zero exit on any failure.
# Extra arguments go to pytest (e.g. -m "not slow", -k cli, -x).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup_env.sh"
cd "$ROOT"
# -ra lists every skip and failure with its reason; --durations shows where the time goes.
exec "${MEDSAM_VENV:-$ROOT/.venv}/bin/python" -m pytest -q -ra --durations=10 "$@"
