"""Whether short 2-process gloo runs of the torchrun launcher always exit 0.

A rare SIGABRT at interpreter exit ("terminate called without an active
exception") once turned finished trainings into failed exit codes;
``fairseq_adasoft.launch`` now leaves through ``os._exit(0)`` after training.
This repeats a short 2-process CPU run on a generated corpus and records every
exit code, any abort message and the wall time per run::

    python -m benchmarks.ddp_teardown [--runs 50]

Writes benchmarks/results/ddp_teardown.json. Not in CI: it takes minutes.
"""

import argparse
import collections
import os
import random
import subprocess
import tempfile
import time

from benchmarks.common import BIN, PLUGIN_DIR, ROOT, spread, write_result

ABORT_MARKERS = ("terminate called", "SIGABRT", "Signal 6")


def make_corpus(path: str, lines: int, seed: int) -> None:
    rng = random.Random(seed)
    words = [f"w{i:03d}" for i in range(100)]
    weights = [1.0 / (i + 1) for i in range(100)]
    with open(path, "w") as f:
        for _ in range(lines):
            f.write(" ".join(rng.choices(words, weights, k=rng.randint(5, 15))) + "\n")


def prepare(workdir: str) -> str:
    for split, lines in (("train", 200), ("valid", 20)):
        make_corpus(os.path.join(workdir, f"{split}.txt"), lines, seed=len(split))
    data = os.path.join(workdir, "data-bin")
    subprocess.run([os.path.join(BIN, "fairseq-preprocess"), "--only-source", "--workers", "1",
                    "--trainpref", os.path.join(workdir, "train.txt"),
                    "--validpref", os.path.join(workdir, "valid.txt"), "--destdir", data],
                   check=True, capture_output=True)
    return data


def one_run(data: str, save: str, port: int) -> dict:
    cmd = [os.path.join(BIN, "torchrun"), "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "fairseq_adasoft.launch", data, "--user-dir", PLUGIN_DIR,
           "--task", "language_modeling_freqsorted", "--arch", "qrnn_lm",
           "--embed-dim", "16", "--hidden-size", "16", "--num-layers", "1",
           "--criterion", "adaptive_softmax", "--adaptive-softmax-cutoff", "20,60",
           "--optimizer", "adam", "--lr", "0.01", "--batch-size", "4", "--tokens-per-sample", "16",
           "--cpu", "--distributed-backend", "gloo", "--max-update", "3", "--save-dir", save,
           "--num-workers", "0", "--no-epoch-checkpoints"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    out = proc.stdout + proc.stderr
    return {"returncode": proc.returncode, "wall_s": time.perf_counter() - start,
            "aborted": any(marker in out for marker in ABORT_MARKERS),
            "finished": "done training" in out, "tail": out[-2000:] if proc.returncode else ""}


def summary(runs: list) -> dict:
    return {
        "runs": len(runs),
        "failures": sum(r["returncode"] != 0 for r in runs),
        "exit_codes": dict(collections.Counter(str(r["returncode"]) for r in runs)),
        "abort_messages": sum(r["aborted"] for r in runs),
        "finished_trainings": sum(r["finished"] for r in runs),
        "wall_s": spread([r["wall_s"] for r in runs]),
        "failed_runs": [dict(run=i, **r) for i, r in enumerate(runs) if r["returncode"] != 0],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--port", type=int, default=29731, help="first rendezvous port (one per run)")
    args = parser.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory() as workdir:
        data = prepare(workdir)
        for i in range(args.runs):
            runs.append(one_run(data, os.path.join(workdir, f"save{i}"), args.port + i))
            r = runs[-1]
            print(f"run {i + 1}/{args.runs}: exit {r['returncode']}, {r['wall_s']:.1f} s"
                  + (", abort message seen" if r["aborted"] else ""), flush=True)
            # Rewritten after every run, so that a loop cut short still leaves its record.
            path = write_result("ddp_teardown", summary(runs), f"python -m benchmarks.ddp_teardown --runs {args.runs}")
    print(path)


if __name__ == "__main__":
    main()
