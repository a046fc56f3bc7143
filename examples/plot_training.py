"""Draw the seed experiment's two figures for any fairseq runs: training loss
against wall-clock time, and against epoch (with validation loss at each
epoch's end), one labelled line per run, side by side in one PNG.

    python examples/plot_training.py --out curves.png \
        adaptive=checkpoints/wikitext2-qrnn_lm_wikitext2-adaptive/train.log \
        full=checkpoints/wikitext2-qrnn_lm_wikitext2-full/train.log

Each run is LABEL=LOG, where LOG is fairseq's JSON log: the --log-file of a
run with --log-format json (recipes/wikitext2/train.sh writes
$SAVE_DIR/train.log), or the captured console output of such a run.
Losses are fairseq's, in bits per token (base 2).
"""

import argparse
import os
from typing import Dict, List, Tuple

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from fairseq_adasoft.logs import json_records, labelled_paths  # noqa: E402


def read_log(path: str) -> Dict[str, List[Tuple[float, ...]]]:
    """train: (wall seconds, fractional epoch, loss) per logged interval;
    valid: (epoch, loss) per epoch. Repeated records (fairseq's --log-file
    repeats epoch summaries) count once."""
    if not os.path.isfile(path):
        raise ValueError(f"log {path!r} not found: pass fairseq's --log-file of a --log-format json run")
    train, valid = {}, {}
    with open(path) as f:
        for rec in json_records(f):
            if {"loss", "wall", "update", "num_updates"} <= rec.keys():
                train[int(rec["num_updates"])] = (float(rec["wall"]), float(rec["update"]), float(rec["loss"]))
            elif "valid_loss" in rec and "epoch" in rec:
                valid[int(rec["epoch"])] = (float(rec["epoch"]), float(rec["valid_loss"]))
    if not train:
        raise ValueError(f"{path} holds no fairseq training records: train with --log-format json")
    return {"train": [train[k] for k in sorted(train)], "valid": [valid[k] for k in sorted(valid)]}


def plot_runs(runs: Dict[str, Dict[str, list]], out: str):
    """Write the two panels to ``out`` (PNG); returns the figure."""
    fig, (by_time, by_epoch) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, log in runs.items():
        wall, epoch, loss = zip(*log["train"])
        line, = by_time.plot([w / 60 for w in wall], loss, label=label)
        by_epoch.plot(epoch, loss, label=f"{label} (train)", color=line.get_color())
        if log["valid"]:
            v_epoch, v_loss = zip(*log["valid"])
            by_epoch.plot(v_epoch, v_loss, "o--", label=f"{label} (valid)", color=line.get_color())
    by_time.set(xlabel="wall-clock time (minutes)", ylabel="loss (bits per token)", title="Loss against time")
    by_epoch.set(xlabel="epoch", ylabel="loss (bits per token)", title="Loss against epoch")
    for ax in (by_time, by_epoch):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="LABEL=LOG", help="a run's label and fairseq JSON log")
    parser.add_argument("--out", required=True, help="the PNG to write")
    args = parser.parse_args()
    logs = labelled_paths(args.runs, "each run", "adaptive=checkpoints/a/train.log")
    plot_runs({label: read_log(path) for label, path in logs.items()}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
