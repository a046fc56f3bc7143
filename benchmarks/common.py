"""What every results file records: the command, the git revision, the machine
and the library versions, so each README figure can be traced to its run."""

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_SUBDIR = os.path.join("benchmarks", "results")
# BENCHMARK_RESULTS_DIR: where tests point recipes, to keep the recorded results untouched.
RESULTS_DIR = os.environ.get("BENCHMARK_RESULTS_DIR") or os.path.join(ROOT, RESULTS_SUBDIR)


def _git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        # Results are outputs, not code: a recipe that records two files in turn
        # must not mark the second as run from a changed tree.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){RESULTS_SUBDIR}"],
            cwd=ROOT, capture_output=True, text=True,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _first_cpu(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The first processor's "key: value" lines of /proc/cpuinfo, or {} off Linux."""
    fields = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip() and fields:
                    break  # the first processor's block has ended
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        return {}
    return fields


def _cpu_model(cpu: dict) -> str:
    return cpu.get("model name") or platform.processor() or "unknown"


def _cpu_family_model(cpu: dict) -> dict:
    """The vendor, family and model numbers, or {} where /proc/cpuinfo has none."""
    keys = {"vendor_id": "vendor", "cpu family": "family", "model": "model"}
    return {name: int(cpu[key]) if cpu[key].isdigit() else cpu[key] for key, name in keys.items() if key in cpu}


def machine_info() -> dict:
    import torch

    from fairseq_adasoft.modules.precision import cpu_has_native_bf16

    cpu = _first_cpu()
    info = {
        "cpu": _cpu_model(cpu),
        "cpu_cores": os.cpu_count(),
        # "AMD EPYC" names machines with and without AVX-512 and bf16 alike.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        # Nor does it tell generations apart: two "AMD EPYC" machines with AVX-512 BF16
        # trained the same model at words/s that differ about twofold (README, "Best CPU model").
        "cpu_family_model": _cpu_family_model(cpu),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        # glibc malloc tuning changes CPU timings by 10-60% (DEVELOPERS.md).
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
    }
    try:
        import fairseq

        info["fairseq"] = fairseq.__version__
    except ImportError:
        info["fairseq"] = None
    return info


def spread(samples) -> dict:
    """min/median/max of repeated measurements, the form every results file uses."""
    return {"min": min(samples), "median": statistics.median(samples), "max": max(samples)}


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
    """Write benchmarks/results/<name>.json with provenance; returns the path."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    record = {
        "name": name,
        "command": command or " ".join([os.path.basename(sys.executable)] + sys.argv),
        "git_revision": _git_revision(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        **payload,
    }
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    return path
