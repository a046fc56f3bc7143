"""The one harness every benchmark uses (after xformers' benchmark_main_helper).

A benchmark declares its cases (the parameters of each measurement) and a
function that measures one case; ``main`` runs them, interleaving the cases and
repeating where a ratio is judged, and writes one results file in the schema of
fairseq_adasoft.provenance:

    CASES = [dict(variant="a", vocab=33_280), dict(variant="b", vocab=33_280)]

    def measure(variant, vocab):          # one case, once: {metric: number, ...}
        return {"ms": ...}

    def goals(cases):                     # optional: judged on the measured cases
        return [goal("b at least 1.3x a", ratio(cases, "ms", {"variant": "a"}, {"variant": "b"}), 1.3)]

    if __name__ == "__main__":
        main("my_benchmark", CASES, measure, goals=goals, quick_cases=CASES[:1])
"""

import argparse
import os
import statistics
import sys
import time

from fairseq_adasoft import provenance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# BENCHMARK_RESULTS_DIR: where tests point benchmarks and recipes, to keep the recorded results untouched.
RESULTS_DIR = os.environ.get("BENCHMARK_RESULTS_DIR") or os.path.join(ROOT, provenance.RESULTS_SUBDIR)
DATA = os.path.join(ROOT, "data-bin", "wikitext-2")  # recipes/wikitext2/prepare.sh's DATA_BIN
PLUGIN_DIR = os.path.dirname(provenance.__file__)  # fairseq's --user-dir: the package that runs
BIN = os.path.dirname(sys.executable)  # the venv's python and fairseq-* scripts
# glibc's malloc otherwise hands large activations back to the OS after every step (as train.sh).
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}


def spread(samples) -> dict:
    """min/median/max of repeated measurements."""
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples)}


def median(value):
    """A metric's central figure: a spread's median, or the value itself."""
    return value["median"] if isinstance(value, dict) else value


def time_ms(fn, repeats: int, warmup: int = 1, sync=None) -> dict:
    """min/median/max milliseconds of one call of ``fn``; ``sync`` waits for
    queued device work (``torch.cuda.synchronize``) so a repeat times the work, not its launch."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        samples.append(1000 * (time.perf_counter() - start))
    return spread(samples)


def _merge(samples: list) -> dict:
    """One case's metrics over its repeats: a number measured more than once becomes its spread."""
    merged = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        merged[key] = spread(values) if numeric and len(values) > 1 else values[0]
    return merged


def run(cases: list, measure, repeats: int = 1, log=print) -> list:
    """Measure every case ``repeats`` times, in rounds: each round measures every
    case in turn, so a drift in the machine's speed reaches all of them alike."""
    samples = [[] for _ in cases]
    for r in range(repeats):
        for params, done in zip(cases, samples):
            start = time.perf_counter()
            done.append(measure(**params))
            log(f"[{r + 1}/{repeats}] {params}: {done[-1]} ({time.perf_counter() - start:.1f} s)")
    return [{"params": dict(params), "metrics": _merge(done)} for params, done in zip(cases, samples)]


def find(cases: list, **params) -> dict:
    """The metrics of the one measured case whose params include ``params``."""
    found = [c["metrics"] for c in cases if params.items() <= c["params"].items()]
    if len(found) != 1:
        raise KeyError(f"{len(found)} cases match {params}")
    return found[0]


def ratio(cases: list, metric: str, numerator: dict, denominator: dict) -> float:
    """The ratio of two cases' ``metric`` (medians where repeated)."""
    return median(find(cases, **numerator)[metric]) / median(find(cases, **denominator)[metric])


def goal(name: str, value, threshold: float, at_most: bool = False) -> dict:
    """A goal judged on ``value`` (None: not measured, so not met)."""
    met = value is not None and (value <= threshold if at_most else value >= threshold)
    return {"name": name, "threshold": threshold, "value": value, "met": bool(met)}


def arguments(description: str, repeats: int = 1) -> argparse.ArgumentParser:
    """The command line every benchmark shares; a benchmark may add its own flags."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=repeats, help="rounds over all cases (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="a few small cases, to check the benchmark runs")
    p.add_argument("--tag", default="", help="appended to the results file's name, e.g. avx2")
    return p


def main(name: str, cases: list, measure, goals=None, quick_cases=None, repeats: int = 1, args=None,
         description: str = None) -> list:
    """Parse the shared flags (unless ``args`` is given), run the cases and write
    RESULTS_DIR/<name>[_tag].json; returns the measured cases. --quick runs
    ``quick_cases`` once and writes nothing."""
    args = args or arguments(description or sys.modules["__main__"].__doc__, repeats).parse_args()
    if args.quick:
        return run(quick_cases if quick_cases is not None else cases[:1], measure, 1)
    measured = run(cases, measure, args.repeats)
    name = f"{name}_{args.tag}" if args.tag else name
    spec = getattr(sys.modules["__main__"], "__spec__", None)  # run as python -m benchmarks.X
    command = " ".join(["python -m " + spec.name, *sys.argv[1:]]) if spec else None
    path = provenance.write_results(name, measured, command, RESULTS_DIR, goals(measured) if goals else [])
    print(os.path.relpath(path, ROOT))
    return measured
