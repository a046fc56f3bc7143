"""Write a results file with its provenance: the command, the git revision,
the machine and the library versions, so that every figure can be traced to
the run that produced it."""

import json
import os
import platform
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
        # Results are outputs, not code: a recipe that records two files in turn
        # must not mark the second as run from a changed tree.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){RESULTS_SUBDIR}"],
            cwd=root, capture_output=True, text=True,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_info() -> dict:
    import torch

    from fairseq_adasoft.modules import hardware

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


def write_result(name: str, payload: dict, command: Optional[str], results_dir: str) -> str:
    """Write <results_dir>/<name>.json: the provenance, then ``payload``; returns the path."""
    os.makedirs(results_dir, exist_ok=True)
    record = {
        "name": name,
        "command": command or " ".join([os.path.basename(sys.executable)] + sys.argv),
        "git_revision": git_revision(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        **payload,
    }
    path = os.path.join(results_dir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    return path
