"""Record a WikiText-2 train + eval run (recipes/wikitext2/run.sh) as JSON.

Reads fairseq's JSON training log and fairseq-eval-lm's logs; the phase wall
times come from the recipe."""

import argparse
import re

from benchmarks.common import write_result
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
    """Per-epoch words/s and validation perplexity from fairseq's JSON log.

    fairseq 0.12 repeats epoch summaries in --log-file (once more each epoch),
    so summaries are keyed by their epoch number."""
    epochs, valids = {}, {}
    with open(path) as f:
        for stats in json_records(f):
            if "train_wps" in stats:
                epochs[int(stats["epoch"])] = stats
            elif "valid_ppl" in stats:
                valids[int(stats["epoch"])] = stats
    if not epochs:
        raise ValueError(f"{path} holds no fairseq epoch summary (was --log-format json used?)")
    epochs = [epochs[k] for k in sorted(epochs)]
    valids = [valids[k] for k in sorted(valids)]
    return {
        "epochs": len(epochs),
        "updates": int(epochs[-1]["train_num_updates"]),
        "train_wps_per_epoch": [float(e["train_wps"]) for e in epochs],
        "train_wall_s": float(epochs[-1]["train_wall"]),
        "valid_ppl_per_epoch": [float(v["valid_ppl"]) for v in valids],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="results file name (without .json)")
    parser.add_argument("--command", required=True, help="the command that ran the job")
    parser.add_argument("--config", required=True, help="what was trained, e.g. the arch and softmax")
    parser.add_argument("--train-log", required=True)
    parser.add_argument("--valid-log", required=True)
    parser.add_argument("--test-log", required=True)
    parser.add_argument("--phase-seconds", nargs="+", default=[], help="phase=seconds pairs")
    parser.add_argument("--note", default="", help="anything a reader of the figures should know")
    args = parser.parse_args()
    phases = {k: float(v) for k, v in (p.split("=", 1) for p in args.phase_seconds)}
    payload = {
        "config": args.config,
        "train": read_train_log(args.train_log),
        "valid": read_eval(args.valid_log),
        "test": read_eval(args.test_log),
        "wall_seconds": {**phases, "total": sum(phases.values())},
    }
    if args.note:
        payload["note"] = args.note
    print(write_result(args.name, payload, command=args.command))


if __name__ == "__main__":
    main()
