"""What a before/after benchmark needs: a command's peak memory measured in a
child process of its own, and the plugin of another revision, checked out in a
temporary git worktree and checked to be the code that runs."""

import contextlib
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

from benchmarks.common import BIN, ROOT
# Runs the measured command from a fresh small process: a child's ru_maxrss starts at the peak RSS
# of the process that execs it (Linux keeps the old memory map's high-water mark), here the benchmark's.
SHIM = ("import json, os, subprocess, sys, time\n"
        "t = time.perf_counter(); p = subprocess.Popen(sys.argv[2:])\n"
        "_, status, usage = os.wait4(p.pid, 0)\n"
        "json.dump({'returncode': os.waitstatus_to_exitcode(status), 'wall_s': time.perf_counter() - t,\n"
        "           'maxrss_kb': usage.ru_maxrss}, open(sys.argv[1], 'w'))\n")
# Imports --user-dir as fairseq-eval-lm does and names the files of the plugin modules it loaded.
PLUGIN_CHECK = ("import argparse, json, os, sys\n"
                "sys.path[0] = os.path.dirname(sys.executable)  # a console script's sys.path\n"
                "from fairseq import utils\n"
                "utils.import_user_module(argparse.Namespace(user_dir=sys.argv[1]))\n"
                "print(json.dumps({m: getattr(sys.modules[m], '__file__', None) for m in sorted(sys.modules)\n"
                "                  if m.split('.')[0] == 'fairseq_adasoft'}))\n")


def run_child(cmd, log_path: str, env=None) -> dict:
    """Run ``cmd`` (output to ``log_path``): its exit status, wall seconds and peak RSS in MB."""
    result_path = log_path + ".rusage.json"
    with open(log_path, "w") as log:
        subprocess.run([sys.executable, "-I", "-S", "-c", SHIM, result_path, *cmd],
                       stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, check=True)
    with open(result_path) as f:
        r = json.load(f)
    return {"returncode": r["returncode"], "wall_s": round(r["wall_s"], 2),
            "peak_rss_mb": round(r["maxrss_kb"] / 1024, 1)}  # ru_maxrss is in KB on Linux


def git(*args, cwd=ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@contextlib.contextmanager
def baseline_worktree(rev: str):
    """(plugin dir, full sha) of ``rev`` checked out in a temporary git worktree, removed afterwards."""
    try:
        sha = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise ValueError(f"--baseline-rev {rev!r} names no commit of {ROOT}: give a sha or branch it holds") from None
    tree = os.path.join(tempfile.mkdtemp(prefix="eval_lm_baseline_"), "tree")
    git("worktree", "add", "--detach", tree, sha)
    try:
        yield os.path.join(tree, "fairseq_adasoft"), sha
    finally:
        git("worktree", "remove", "--force", tree)
        shutil.rmtree(os.path.dirname(tree), ignore_errors=True)


def plugin_files(plugin_dir: str) -> dict:
    """Module -> file of every fairseq_adasoft module that --user-dir ``plugin_dir`` loads."""
    out = subprocess.run([os.path.join(BIN, "python"), "-c", PLUGIN_CHECK, plugin_dir],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_plugin(plugin_dir: str) -> int:
    """Assert that --user-dir ``plugin_dir`` runs that folder's code (not the pip-installed
    checkout's); returns how many of its modules were loaded."""
    inside = os.path.realpath(plugin_dir) + os.sep
    files = plugin_files(plugin_dir)
    outside = {m: f for m, f in files.items() if f and not os.path.realpath(f).startswith(inside)}
    if not files or outside:
        raise RuntimeError(f"--user-dir {plugin_dir} loads code from elsewhere: {outside or 'no modules'}")
    return len(files)


def code_digest(plugin_dir: str) -> str:
    """sha256 over the plugin's .py files, to tell whether two variants run the same code."""
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(plugin_dir, "**", "*.py"), recursive=True)):
        with open(path, "rb") as f:
            h.update(os.path.relpath(path, plugin_dir).encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()[:16]
