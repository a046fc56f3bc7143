"""How long the README's test command takes on this machine: runs
``bash scripts/test.sh -q`` (set-up included, a no-op once installed) and records
its wall time and pytest's tally in benchmarks/results/test_suite.json.

    python -m benchmarks.test_suite
"""

import os
import re
import subprocess
import sys
import time

from benchmarks.harness import RESULTS_DIR, ROOT
from fairseq_adasoft.provenance import write_results

COMMAND = ["bash", "scripts/test.sh", "-q"]
# pytest's last line, e.g. "=== 169 passed, 7 skipped in 321.05s (0:05:21) ==="
TALLY_RE = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected)")
SECTIONS = [{"title": "The test suite", "command": "python -m benchmarks.test_suite", "files": ["test_suite"],
             "columns": {"command": "command", "wall time": "wall_seconds:min", "passed": "passed",
                         "failed": "failed", "skipped": "skipped"}}]


def tally(output: str) -> dict:
    """Counts from pytest's summary line; every kind present there, zero otherwise."""
    lines = [line for line in output.splitlines() if " in " in line and TALLY_RE.search(line)]
    if not lines:
        raise ValueError("scripts/test.sh printed no pytest summary line: run it by hand to see why")
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for number, kind in TALLY_RE.findall(lines[-1]):
        counts["errors" if kind.startswith("error") else kind] = int(number)
    return counts


def main() -> None:
    start = time.perf_counter()
    proc = subprocess.run(COMMAND, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    sys.stdout.write(proc.stdout[-3000:] + proc.stderr[-3000:])
    if proc.returncode != 0:
        sys.exit(f"scripts/test.sh failed ({proc.returncode}): not recorded")
    case = {"params": {"command": " ".join(COMMAND)}, "metrics": {"wall_seconds": round(wall, 1), **tally(proc.stdout)}}
    path = write_results("test_suite", [case], "python -m benchmarks.test_suite", RESULTS_DIR)
    print(os.path.relpath(path, ROOT))


if __name__ == "__main__":
    main()
