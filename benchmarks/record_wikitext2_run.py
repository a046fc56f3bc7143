"""Record a WikiText-2 train + eval run (recipes/wikitext2/run.sh) as JSON.

Reads a train.sh save dir: fairseq's JSON training log, fairseq-eval-lm's logs
and the model's sizes from the checkpoint's saved config (so they cannot drift
from what ran, whatever flags the run added); the phase wall times come from
the recipe."""

import argparse
import os
import re

import torch

from benchmarks.common import spread, write_result
from fairseq_adasoft.logs import json_records

EVAL_RE = re.compile(r"Loss \(base 2\): ([0-9.]+), Perplexity: ([0-9.]+)")


def read_eval(path: str) -> dict:
    with open(path) as f:
        found = EVAL_RE.findall(f.read())
    if not found:
        raise ValueError(f"{path} holds no fairseq-eval-lm result line")
    loss, ppl = found[-1]
    return {"loss_base2": float(loss), "perplexity": float(ppl)}


def read_train_log(path: str) -> dict:
    """Per-epoch words/s, training perplexity (with dropout) and validation
    perplexity from fairseq's JSON log, and the spread of words/s over its
    --log-interval records.

    fairseq 0.12 repeats records in --log-file (once more each epoch), so
    summaries are keyed by their epoch number and intervals by their update."""
    epochs, valids, intervals = {}, {}, {}
    with open(path) as f:
        for stats in json_records(f):
            if "train_wps" in stats:
                epochs[int(stats["epoch"])] = stats
            elif "valid_ppl" in stats:
                valids[int(stats["epoch"])] = stats
            elif "wps" in stats and "num_updates" in stats:
                intervals[int(stats["num_updates"])] = float(stats["wps"])
    if not epochs:
        raise ValueError(f"{path} holds no fairseq epoch summary (was --log-format json used?)")
    epochs = [epochs[k] for k in sorted(epochs)]
    valids = [valids[k] for k in sorted(valids)]
    train = {
        "epochs": len(epochs),
        "updates": int(epochs[-1]["train_num_updates"]),
        "train_wps_per_epoch": [float(e["train_wps"]) for e in epochs],
        # Beside valid, it shows over-fitting (README "Best CPU model", step 13).
        "train_ppl_per_epoch": [float(e["train_ppl"]) for e in epochs],
        "train_wall_s": float(epochs[-1]["train_wall"]),
        "valid_ppl_per_epoch": [float(v["valid_ppl"]) for v in valids],
    }
    if intervals:
        # Intervals that span an epoch's end also hold its validation and checkpoint, so
        # the median sits above whole-epoch words/s and near a short benchmark's.
        train["train_wps_per_log_interval"] = spread(list(intervals.values()))
    return train


# Setting name -> (config group, key) in the checkpoint's fairseq config.
SETTINGS = {
    "lr": ("optimization", "lr"),
    "streams": ("dataset", "batch_size"),
    "tokens_per_sample": ("task", "tokens_per_sample"),
    "max_update": ("optimization", "max_update"),
    "embed_dim": ("model", "embed_dim"),
    "hidden_size": ("model", "hidden_size"),
    "num_layers": ("model", "num_layers"),
    "dropout": ("model", "dropout"),
    "dropout_input": ("model", "dropout_input"),
    "dropout_hidden": ("model", "dropout_hidden"),
    "dropout_embed": ("model", "dropout_embed"),
    "weight_drop": ("model", "weight_drop"),
    "lr_scheduler": ("lr_scheduler", "_name"),
    "cpu_autocast_bf16": ("model", "cpu_autocast_bf16"),
    "tie_adaptive_weights": ("model", "tie_adaptive_weights"),
    "adaptive_softmax_div_value": ("model", "adaptive_softmax_div_value"),
    "stateful_bptt": ("task", "stateful_bptt"),
}


def read_settings(save_dir: str) -> dict:
    path = os.path.join(save_dir, "checkpoint_last.pt")
    if not os.path.exists(path):
        raise ValueError(f"{path} not found: name a train.sh save dir whose training finished")
    cfg = torch.load(path, map_location="cpu", weights_only=False)["cfg"]
    settings = {name: cfg[group].get(key) for name, (group, key) in SETTINGS.items()}
    lr = settings["lr"]
    settings["lr"] = lr[0] if isinstance(lr, (list, tuple)) else lr  # fairseq keeps a per-phase list
    return settings


def model_text(settings: dict) -> str:
    return f"embedding {settings['embed_dim']}, {settings['num_layers']} x {settings['hidden_size']} QRNN"


def read_run(save_dir: str) -> dict:
    """A finished run's training log and its eval-lm results on valid and test."""
    path = lambda name: os.path.join(save_dir, name)  # noqa: E731
    return {
        "train": read_train_log(path("train.log")),
        "valid": read_eval(path("eval_valid.log")),
        "test": read_eval(path("eval_test.log")),
    }


def record(save_dir: str, config: str) -> dict:
    settings = read_settings(save_dir)
    return {"config": f"{model_text(settings)}; {config}", "settings": settings, **read_run(save_dir)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="results file name (without .json)")
    parser.add_argument("--command", required=True, help="the command that ran the job")
    parser.add_argument("--config", required=True, help="what was trained beyond the model's sizes, e.g. the softmax")
    parser.add_argument("--save-dir", required=True, help="train.sh's SAVE_DIR, evaluated by eval.sh on valid and test")
    parser.add_argument("--phase-seconds", nargs="+", default=[], help="phase=seconds pairs")
    parser.add_argument("--note", default="", help="anything a reader of the figures should know")
    args = parser.parse_args()
    phases = {k: float(v) for k, v in (p.split("=", 1) for p in args.phase_seconds)}
    payload = {**record(args.save_dir, args.config), "wall_seconds": {**phases, "total": sum(phases.values())}}
    if args.note:
        payload["note"] = args.note
    print(write_result(args.name, payload, command=args.command))


if __name__ == "__main__":
    main()
