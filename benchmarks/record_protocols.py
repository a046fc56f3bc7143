"""Record recipes/wikitext2/protocols.sh: one checkpoint's perplexity under
fairseq's block protocol, awd-lstm-lm's classic stateful protocol, and the
classic protocol with a continuous cache tuned on valid."""

import argparse
import json
import os

from benchmarks.common import write_result
from benchmarks.record_wikitext2_run import read_eval, read_train_log

# Issue #6's goal for the best CPU model: test perplexity <= 110 from <= 60 minutes of training.
GOAL_TEST_PPL = 110.0
GOAL_TRAIN_SECONDS = 3600.0

PROTOCOLS = {
    "blocks": ("", "fairseq-eval-lm, 512-token blocks scored independently, batch 8"),
    "classic": ("_classic", "fairseq-eval-lm --stateful-bptt: streams read 70 tokens at a time with the "
                            "state carried; 10 streams for valid, 1 for test (awd-lstm-lm)"),
    "cache": ("_cache", "classic, plus the continuous cache of Grave, Joulin & Usunier 2017 "
                        "(--neural-cache-size/theta/lambda) with the setting tuned on valid"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="results file name (without .json)")
    parser.add_argument("--command", required=True, help="the command that ran the evaluations")
    parser.add_argument("--save-dir", required=True, help="training save dir holding the eval logs")
    args = parser.parse_args()
    payload = {"checkpoint": os.path.join(os.path.relpath(args.save_dir), "checkpoint_best.pt")}
    for protocol, (suffix, how) in PROTOCOLS.items():
        payload[protocol] = {"how": how, **{
            split: read_eval(os.path.join(args.save_dir, f"eval_{split}{suffix}.log")) for split in ("valid", "test")
        }}
    with open(os.path.join(args.save_dir, "neural_cache.json")) as f:
        payload["cache"]["tuning"] = json.load(f)  # benchmarks/tune_neural_cache.py: the grid and its best
    train_s = read_train_log(os.path.join(args.save_dir, "train.log"))["train_wall_s"]
    payload["goals"] = [
        {"goal": f"test perplexity <= {GOAL_TEST_PPL:g} after <= {GOAL_TRAIN_SECONDS / 60:g} min of training",
         "protocol": protocol, "test_ppl": payload[protocol]["test"]["perplexity"], "train_wall_s": train_s,
         "met": payload[protocol]["test"]["perplexity"] <= GOAL_TEST_PPL and train_s <= GOAL_TRAIN_SECONDS}
        for protocol in PROTOCOLS
    ]
    print(write_result(args.name, payload, command=args.command))


if __name__ == "__main__":
    main()
