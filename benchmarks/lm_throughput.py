"""End-to-end training throughput (words/s, from fairseq's own log) on WikiText-2.

Four setups at the same sizes and data, each a real `fairseq-train` run:
qrnn_lm + adaptive softmax, qrnn_lm + full softmax, fairseq's lstm_lm +
adaptive_loss (which needs --ddp-backend legacy_ddp) and lstm_lm + cross_entropy.

    python -m benchmarks.lm_throughput [--updates 60] [--tag NAME]

``--tag`` is appended to the results file's name, e.g. to keep another
machine's figures (``--tag avx2``) beside the recorded ones.

Needs recipes/wikitext2/prepare.sh to have run (data-bin/wikitext-2).
"""

import argparse
import os
import subprocess

from benchmarks.common import BIN, DATA, MALLOC_ENV, PLUGIN_DIR, ROOT, spread, tagged, write_result
from fairseq_adasoft.logs import json_records
from fairseq_adasoft.modules import parse_cutoffs
from fairseq_adasoft.presets import ARCHITECTURES, MAIN_JOB

# The seed experiment's sizes (its preset's width and depth, the main job's batch
# shape) and its cutoffs as word ids of WikiText-2's dictionary, the form fairseq's
# lstm_lm takes, with div_value 4 (fairseq's factor 4).
SEED = ARCHITECTURES["qrnn_lm_wikitext2_seed"]
WIKITEXT2_VOCAB = 33_280  # 33,276 words and fairseq's 4 special symbols
SIZE, LAYERS = SEED["hidden_size"], SEED["num_layers"]
CUTOFFS = ",".join(map(str, parse_cutoffs(SEED["adaptive_softmax_cutoff"], WIKITEXT2_VOCAB)))
STREAMS, TOKENS_PER_SAMPLE = MAIN_JOB["batch_size"], MAIN_JOB["tokens_per_sample"]
COMMON = ["--task", "language_modeling_freqsorted", "--user-dir", PLUGIN_DIR,
          "--tokens-per-sample", str(TOKENS_PER_SAMPLE), "--batch-size", str(STREAMS), "--optimizer", "adam", "--lr", "0.002",
          "--clip-norm", "0.25", "--cpu", "--disable-validation", "--no-save", "--seed", "1",
          "--log-format", "json", "--log-interval", "10"]
QRNN = ["--arch", "qrnn_lm", "--embed-dim", str(SIZE), "--hidden-size", str(SIZE), "--num-layers", str(LAYERS),
        "--dropout", "0.1", "--dropout-input", "0.1", "--dropout-hidden", "0.1", "--dropout-embed", "0",
        "--weight-drop", "0"]
LSTM = ["--arch", "lstm_lm", "--decoder-embed-dim", str(SIZE), "--decoder-hidden-size", str(SIZE),
        "--decoder-out-embed-dim", str(SIZE), "--decoder-layers", str(LAYERS), "--dropout", "0.1"]
SETUPS = {
    "qrnn_lm+adaptive_softmax": QRNN + ["--criterion", "adaptive_softmax", "--adaptive-softmax-cutoff", CUTOFFS],
    "qrnn_lm+full_softmax": QRNN + ["--criterion", "adaptive_softmax"],
    "lstm_lm+adaptive_loss": LSTM + ["--criterion", "adaptive_loss", "--adaptive-softmax-cutoff", CUTOFFS,
                                     "--ddp-backend", "legacy_ddp"],
    "lstm_lm+cross_entropy": LSTM + ["--criterion", "cross_entropy"],
}
SKIP_INTERVALS = 1  # the first log interval includes start-up and warm-up


def run(name, args, updates):
    env = dict(os.environ, **MALLOC_ENV)
    cmd = [os.path.join(BIN, "fairseq-train"), DATA, *COMMON, *args, "--max-update", str(updates)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    # Interval records carry a bare "wps"; epoch summaries say "train_wps".
    wps = [float(rec["wps"]) for rec in json_records((out.stdout + out.stderr).splitlines()) if "wps" in rec]
    wps = wps[SKIP_INTERVALS:]
    return {"command": " ".join(cmd[1:]), "wps_per_interval": wps,
            "wps": spread(wps)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=60, help="updates per setup (log every 10)")
    parser.add_argument("--tag", default="", help="suffix of the results file's name, e.g. avx2")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(DATA, "dict.txt")):
        raise ValueError(f"{DATA} is missing: run recipes/wikitext2/prepare.sh first")
    results = {}
    for name, setup in SETUPS.items():
        results[name] = run(name, setup, args.updates)
        print(f"{name:28s} median {results[name]['wps']['median']:8.0f} words/s", flush=True)
    med = {k: v["wps"]["median"] for k, v in results.items()}
    ratios = {
        "qrnn_adaptive_vs_lstm_adaptive": med["qrnn_lm+adaptive_softmax"] / med["lstm_lm+adaptive_loss"],
        "qrnn_adaptive_vs_qrnn_full": med["qrnn_lm+adaptive_softmax"] / med["qrnn_lm+full_softmax"],
        "lstm_adaptive_vs_lstm_full": med["lstm_lm+adaptive_loss"] / med["lstm_lm+cross_entropy"],
    }
    goals = {"qrnn_lm+adaptive >= 1.5x lstm_lm+adaptive_loss words/s": ratios["qrnn_adaptive_vs_lstm_adaptive"] >= 1.5}
    print(ratios, goals)
    name, command = tagged("lm_throughput", f"python -m benchmarks.lm_throughput --updates {args.updates}", args.tag)
    print(write_result(name, {
        "settings": {"size": SIZE, "layers": LAYERS, "cutoffs": CUTOFFS, "tokens_per_update": STREAMS * TOKENS_PER_SAMPLE,
                     "updates": args.updates, "skipped_intervals": SKIP_INTERVALS},
        "results": results, "ratios": ratios, "goals": goals,
    }, command=command))


if __name__ == "__main__":
    main()
