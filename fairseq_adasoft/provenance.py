"""Write a results file with its provenance: the command, the git revision,
the machine and the library versions, so that every figure can be traced to
the run that produced it.

Every results file has one schema (``validate`` checks it)::

    {"name": str, "command": str, "git_revision": str, "date": str, "machine": {...},
     "cases": [{"params": {str: scalar}, "metrics": {str: value}}],
     "goals": [{"name": str, "threshold": number, "value": number | null, "met": bool}],
     "note": str}                                   # "note" is optional

A metric's value is a scalar, a list of scalars, or a spread ({"min", "median",
"max"} of repeats). No string in the file may hold an absolute path.
"""

import json
import os
import platform
import re
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from typing import Optional

# Where a checkout keeps its results files, relative to its root.
RESULTS_SUBDIR = os.path.join("benchmarks", "results")
# The checkout (or install folder) this package runs from: its git revision is the code's.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_revision(root: str = PACKAGE_PARENT) -> str:
    """HEAD of the git tree at ``root``, with "+dirty" when tracked code there
    differs from it; "unknown" outside a git tree."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        # Results are outputs, not code: a results file written before this one
        # must not mark the next one as run from a changed tree.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){RESULTS_SUBDIR}"],
            cwd=root, capture_output=True, text=True,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_info() -> dict:
    import torch

    from fairseq_adasoft import hardware

    cpu = hardware.first_cpu()
    info = {
        "cpu": hardware.cpu_model_name(cpu),
        "cpu_cores": os.cpu_count(),
        # A model name such as "AMD EPYC" covers machines with and without AVX-512 and bf16.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        # Nor does it tell generations apart, whose speeds differ at the same capability.
        "cpu_family_model": hardware.cpu_family_model(cpu),
        "cpu_native_bf16": hardware.cpu_has_native_bf16(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        # glibc's malloc tuning changes how often large buffers go back to the OS, hence CPU timings.
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


SCALAR = (str, int, float, bool, type(None))
KEYS = ("name", "command", "git_revision", "date", "machine", "cases", "goals")
JUDGEMENT_KEYS = ("name", "threshold", "value", "met")
# A path from the filesystem's root: "/" then a name, at the start or after a quote, space, = or colon.
ABSOLUTE_PATH = re.compile(r'(^|[" =:])/[A-Za-z_.-]+/')


def _is_metric(value) -> bool:
    if isinstance(value, list):
        return all(isinstance(v, SCALAR) for v in value)
    if isinstance(value, dict):
        return set(value) == {"min", "median", "max"} and all(isinstance(v, (int, float)) for v in value.values())
    return isinstance(value, SCALAR)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def validate(record: dict) -> list:
    """What keeps ``record`` from the results schema, one line each (empty when it conforms)."""
    problems = [f"missing key {k!r}" for k in KEYS if k not in record]
    problems += [f"unknown key {k!r}" for k in record if k not in KEYS + ("note",)]
    for i, case in enumerate(record.get("cases") or []):
        if not isinstance(case, dict) or set(case) != {"params", "metrics"}:
            problems.append(f"cases[{i}] is not {{params, metrics}}")
            continue
        problems += [f"cases[{i}].params.{k} is not a scalar" for k, v in case["params"].items()
                     if not isinstance(v, SCALAR)]
        problems += [f"cases[{i}].metrics.{k} is not a scalar, list of scalars or spread"
                     for k, v in case["metrics"].items() if not _is_metric(v)]
    if not record.get("cases"):
        problems.append("no cases")
    for i, goal in enumerate(record.get("goals", [])):
        if not isinstance(goal, dict) or tuple(goal) != JUDGEMENT_KEYS or not isinstance(goal["met"], bool):
            problems.append(f"goals[{i}] is not {{name, threshold, value, met (bool)}}")
    problems += [f"absolute path in {s[:80]!r}" for s in _strings(record) if ABSOLUTE_PATH.search(s)]
    return problems


def write_results(name: str, cases: list, command: Optional[str], results_dir: str, goals: list = (),
                  note: Optional[str] = None) -> str:
    """Write <results_dir>/<name>.json in the results schema; returns the path.
    Raises ValueError (before writing) when the record does not conform."""
    record = {
        "name": name,
        "command": command or " ".join([os.path.basename(sys.executable)] + sys.argv),
        "git_revision": git_revision(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "cases": list(cases),
        "goals": list(goals),
        **({"note": note} if note else {}),
    }
    problems = validate(record)
    if problems:
        raise ValueError(f"{name}.json would not be a valid results file: " + "; ".join(problems))
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    return path
