"""Record short tuning runs of recipes/wikitext2/train.sh side by side.

Each run is given as LABEL=SAVE_DIR. The settings that tuning varies are read
from the run's own checkpoint (its saved fairseq config, so they cannot drift
from what ran); validation perplexity and speed from fairseq's JSON log."""

import argparse
import os

from benchmarks.common import write_result
from benchmarks.record_wikitext2_run import read_settings, read_train_log
from fairseq_adasoft.logs import labelled_paths


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
