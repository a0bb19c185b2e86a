#!/usr/bin/env bash
# Set up the environment if needed, then segment the bundled brain MR and score it.
# Extra arguments go to `medsam-segment demo` (e.g. --output-dir DIR, --device cuda).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup_env.sh"
exec "${MEDSAM_VENV:-$ROOT/.venv}/bin/medsam-segment" demo "$@"
