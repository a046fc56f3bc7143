"""The one harness every benchmark uses (after xformers' benchmark_main_helper). A benchmark declares CASES (each
measurement's params), ``measure(**params)`` -> {metric: value} for one case, optionally ``goals(cases)`` (adds derived
metrics, then judges with ``goal``) and SECTIONS (how benchmarks.report shows its files); ``main`` runs the cases in
rounds and writes one results file in fairseq_adasoft.provenance's schema."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from fairseq_adasoft import provenance
from fairseq_adasoft.logs import json_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# BENCHMARK_RESULTS_DIR: where tests point benchmarks and recipes, keeping the recorded results untouched.
RESULTS_DIR = os.environ.get("BENCHMARK_RESULTS_DIR") or os.path.join(ROOT, provenance.RESULTS_SUBDIR)
DATA = os.path.join(ROOT, "data-bin", "wikitext-2")  # recipes/wikitext2/prepare.sh's DATA_BIN
PLUGIN_DIR = os.path.dirname(provenance.__file__)  # fairseq's --user-dir: the package that runs
BIN = os.path.dirname(sys.executable)  # the venv's python and fairseq-* scripts
# glibc's malloc otherwise hands large activations back to the OS after every step (as train.sh).
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}
# Runs a command from a fresh small process: a child's ru_maxrss starts at the peak RSS of the
# process that execs it (Linux keeps the old memory map's high-water mark), here the benchmark's.
SHIM = ("import json, os, subprocess, sys, time\n"
        "t = time.perf_counter(); p = subprocess.Popen(sys.argv[2:])\n"
        "_, status, usage = os.wait4(p.pid, 0)\n"
        "json.dump({'returncode': os.waitstatus_to_exitcode(status), 'wall_s': time.perf_counter() - t,\n"
        "           'maxrss_kb': usage.ru_maxrss}, open(sys.argv[1], 'w'))\n")


def spread(samples) -> dict:  # of repeated measurements
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples)}


def median(value):  # a metric's central figure: a spread's median, or the value itself
    return value["median"] if isinstance(value, dict) else value


def time_ms(fn, repeats: int, warmup: int = 1, calls: int = 1, sync=None) -> dict:
    """min/median/max ms of one call of ``fn``, each repeat ``calls`` calls; ``sync`` waits for queued device work."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        samples.append(1000 * (time.perf_counter() - start) / calls)
    return spread(samples)


def shown(text: str) -> str:  # results files hold no absolute path
    return text.replace(ROOT + os.sep, "").replace(ROOT, ".")


def need(data: str) -> str:  # WikiText-2's data-bin
    if not os.path.isfile(os.path.join(data, "dict.txt")):
        raise ValueError(f"{shown(data)} is missing: run recipes/wikitext2/prepare.sh first")
    return data


def run_child(cmd: list, log_path: str, env: dict = None) -> dict:
    """Run ``cmd`` (output to ``log_path``): its exit status, wall seconds, peak RSS in MB and log text."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w") as log:
        subprocess.run([sys.executable, "-I", "-S", "-c", SHIM, log_path + ".rusage", *cmd],
                       stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, check=True)
    r, text = json.load(open(log_path + ".rusage")), open(log_path).read()
    return {"returncode": r["returncode"], "wall_s": round(r["wall_s"], 2),
            "peak_rss_mb": round(r["maxrss_kb"] / 1024, 1), "text": text}  # ru_maxrss is in KB on Linux


def interval_wps(log_text: str) -> list:
    """Words/s of each logged training interval but the first (start-up); epoch summaries say train_wps."""
    return [float(r["wps"]) for r in json_records(log_text.splitlines()) if "wps" in r][1:]


def fairseq_train(flags: list, log_path: str, env: dict = None, launch: list = None) -> dict:
    """A fairseq-train run (or ``launch``, e.g. torchrun) with the recipes' malloc settings; raises on failure."""
    cmd = [*(launch or [os.path.join(BIN, "fairseq-train")]), *flags]
    r = run_child(cmd, log_path, env=dict(os.environ, **MALLOC_ENV, **(env or {})))
    if r["returncode"] != 0:
        raise RuntimeError(f"{shown(' '.join(cmd))} failed:\n{r['text'][-3000:]}")
    return r


def train_wps(flags: list, updates: int) -> dict:
    """Words/s of a fairseq-train run of ``updates`` on WikiText-2 at the main job's batch, ``flags`` after the shared ones."""
    from fairseq_adasoft.presets import MAIN_JOB

    common = ["--user-dir", PLUGIN_DIR, *f"--task language_modeling_freqsorted --optimizer adam --lr 0.002 --clip-norm 0.25 "
              f"--tokens-per-sample {MAIN_JOB['tokens_per_sample']} --batch-size {MAIN_JOB['batch_size']} --cpu --seed 1 "
              "--disable-validation --no-save --log-format json --log-interval 10".split()]
    with tempfile.TemporaryDirectory() as tmp:
        r = fairseq_train([need(DATA), *common, *flags, "--max-update", str(updates)], os.path.join(tmp, "train.log"))
    return {"words_per_s": spread(interval_wps(r["text"]))}


def _merge(samples: list) -> dict:
    """One case's metrics over its repeats: a number (or a spread's median) measured more than once becomes a spread."""
    def numeric(vs):
        return len(vs) > 1 and all(isinstance(v, (int, float, dict)) and not isinstance(v, bool) for v in vs)
    return {k: spread([median(s[k]) for s in samples]) if numeric([s[k] for s in samples]) else samples[0][k]
            for k in samples[0]}


def run(cases: list, measure, repeats: int = 1, log=print) -> list:
    """Measure every case ``repeats`` times, in rounds: each round measures every
    case in turn, so a drift in the machine's speed reaches all of them alike."""
    samples = [[] for _ in cases]
    for r in range(repeats):
        for params, done in zip(cases, samples):
            start = time.perf_counter()
            done.append(measure(**params))
            log(f"[{r + 1}/{repeats}] {params}: {done[-1]} ({time.perf_counter() - start:.1f} s)", flush=True)
    return [{"params": dict(params), "metrics": _merge(done)} for params, done in zip(cases, samples)]


def find(cases: list, **params) -> dict:
    """The metrics of the one measured case whose params include ``params``."""
    found = [c["metrics"] for c in cases if params.items() <= c["params"].items()]
    if len(found) != 1:
        raise KeyError(f"{len(found)} cases match {params}")
    return found[0]


def ratio(cases: list, metric: str, numerator: dict, denominator: dict):
    """The ratio of two cases' ``metric`` (medians where repeated); None when either was not measured."""
    try:
        return median(find(cases, **numerator)[metric]) / median(find(cases, **denominator)[metric])
    except KeyError:  # a case not measured
        return None


def goal(name: str, value, threshold: float, at_most: bool = False) -> dict:  # None: not measured, not met
    met = value is not None and (value <= threshold if at_most else value >= threshold)
    return {"name": name, "threshold": threshold, "value": value, "met": bool(met)}


def arguments(repeats: int = 1) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=repeats, help="rounds over all cases (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="a few small cases, to check the benchmark runs; writes nothing")
    p.add_argument("--tag", default="", help="appended to the results file's name, e.g. avx2")
    return p


def main(name: str, cases: list, measure, goals=None, quick_cases=None, repeats: int = 1, argv=None, args=None):
    """Parse the shared flags (unless ``args`` is given), run the cases and write
    RESULTS_DIR/<name>[_tag].json. --quick runs ``quick_cases`` once and checks that they
    make a valid results file, writing none. Returns (cases, goals) as measured and judged."""
    args = args or arguments(repeats=repeats).parse_args(argv)
    measured = run(quick_cases if args.quick and quick_cases is not None else cases, measure,
                   1 if args.quick else args.repeats)
    judged = goals(measured) if goals else []
    module = sys.modules["__main__"].__spec__.name if measure.__module__ == "__main__" else measure.__module__
    command = " ".join(["python -m " + module, *(sys.argv[1:] if argv is None else argv)])
    name = f"{name}_{args.tag}" if args.tag else name
    with tempfile.TemporaryDirectory() as scratch:  # --quick: validated (write_results raises), then dropped
        path = provenance.write_results(name, measured, command, scratch if args.quick else RESULTS_DIR, judged)
        print("\n".join(f"{'met' if g['met'] else 'NOT met'}: {g['name']} ({g['value']})" for g in judged))
        print("valid results file (not kept)" if args.quick else shown(path))
    return measured, judged
