"""What the speed benchmarks share: where their results go, the timing loop,
and the results-file writer (fairseq_adasoft.provenance) pointed there."""

import os
import sys
import time

from fairseq_adasoft import provenance
from fairseq_adasoft.provenance import spread  # noqa: F401  (the benchmarks' min/median/max)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# BENCHMARK_RESULTS_DIR: where tests point benchmarks and recipes, to keep the recorded results untouched.
RESULTS_DIR = os.environ.get("BENCHMARK_RESULTS_DIR") or os.path.join(ROOT, provenance.RESULTS_SUBDIR)
DATA = os.path.join(ROOT, "data-bin", "wikitext-2")  # recipes/wikitext2/prepare.sh's DATA_BIN
PLUGIN_DIR = os.path.dirname(provenance.__file__)  # fairseq's --user-dir: the package that runs
BIN = os.path.dirname(sys.executable)  # the venv's python and fairseq-* scripts
# glibc's malloc otherwise hands large activations back to the OS after every step (as train.sh).
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}


def time_ms(fn, repeats: int, warmup: int = 1, calls_per_repeat: int = 1, sync=None) -> dict:
    """min/median/max milliseconds of one call of ``fn``.

    ``sync`` waits for queued device work (``torch.cuda.synchronize``), so a
    repeat times the computation and not just its launch.
    """
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls_per_repeat):
            fn()
        sync()
        samples.append(1000 * (time.perf_counter() - start) / calls_per_repeat)
    return spread(samples)


def tagged(name: str, command: str, tag: str):
    """A results file's name and command with a benchmark's ``--tag`` appended."""
    return (f"{name}_{tag}", f"{command} --tag {tag}") if tag else (name, command)


def write_result(name: str, payload: dict, command: str = None) -> str:
    """Write RESULTS_DIR/<name>.json with provenance; returns the path."""
    return provenance.write_result(name, payload, command, RESULTS_DIR)
