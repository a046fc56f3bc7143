"""Record short tuning runs of recipes/wikitext2/train.sh side by side.

Each run is given as LABEL=SAVE_DIR. The settings that tuning varies are read
from the run's own checkpoint (its saved fairseq config, so they cannot drift
from what ran); validation perplexity and speed from fairseq's JSON log."""

import argparse
import os

import torch

from benchmarks.common import write_result
from benchmarks.record_wikitext2_run import read_train_log
from fairseq_adasoft.logs import labelled_paths

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
        raise ValueError(f"{path} not found: each --run must name a train.sh SAVE_DIR that finished")
    cfg = torch.load(path, map_location="cpu", weights_only=False)["cfg"]
    settings = {name: cfg[group].get(key) for name, (group, key) in SETTINGS.items()}
    lr = settings["lr"]
    settings["lr"] = lr[0] if isinstance(lr, (list, tuple)) else lr  # fairseq keeps a per-phase list
    return settings


def record(runs: dict) -> dict:
    """``runs``: label -> save dir. Returns each run's settings and log summary,
    and the label of the lowest final validation perplexity."""
    table = {}
    for label, save_dir in runs.items():
        train = read_train_log(os.path.join(save_dir, "train.log"))
        if not train["valid_ppl_per_epoch"]:
            raise ValueError(f"{save_dir}/train.log holds no validation result; did the run finish an epoch?")
        table[label] = {"settings": read_settings(save_dir), "train": train}
    best = min(table, key=lambda label: table[label]["train"]["valid_ppl_per_epoch"][-1])
    return {"runs": table, "best_valid": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="results file name (without .json)")
    parser.add_argument("--command", required=True, help="the commands that ran the runs")
    parser.add_argument("--run", nargs="+", required=True, metavar="LABEL=SAVE_DIR")
    parser.add_argument("--note", default="", help="anything a reader of the figures should know")
    args = parser.parse_args()
    payload = record(labelled_paths(args.run, "--run", "lr_0.004=checkpoints/tune-lr-0.004"))
    if args.note:
        payload["note"] = args.note
    print(write_result(args.name, payload, command=args.command))


if __name__ == "__main__":
    main()
