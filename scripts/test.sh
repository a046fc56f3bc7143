#!/usr/bin/env bash
# Set up the environment if needed, then run the whole test suite
# (unit and end-to-end; 7-9 minutes on 2 CPU cores, plus set-up).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest tests "$@"
