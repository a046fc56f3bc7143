#!/usr/bin/env bash
# Set up the environment if needed, then run the whole test suite (unit and
# end-to-end). Its time on this machine: python -m benchmarks.test_suite
# records it in benchmarks/results/test_suite.json. Arguments go on to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
# One worker per core (pytest-xdist); a file's tests stay together, so its fixtures run once.
exec "$ROOT/.venv/bin/python" -m pytest tests -n auto --dist loadfile "$@"
