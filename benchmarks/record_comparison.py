"""Record recipes/wikitext2/compare.sh: adaptive against full softmax, same
seed model and epochs, as JSON with the issue's goals checked.

Speed is the median of the per-epoch training words/s in fairseq's log (the
first epoch included: both runs pay the same start-up)."""

import argparse
import statistics

from benchmarks.common import write_result
from benchmarks.record_wikitext2_run import read_run, read_settings

GOAL_SPEEDUP = 3.0  # the seed's 3.1x on a GPU
GOAL_PPL_GAP = 0.04  # the seed's gap was 3.9% (132 vs 127)
OPTIMIZERS = {  # recipes/wikitext2/train.sh; Adam's peak lr (train.sh's LR) comes from the checkpoint
    "adam": "Adam lr {lr}, polynomial decay to 1e-4 after 100 warm-up updates, clip 0.25",
    "seed": "NAG lr 1 momentum 0.9, clip 0.25 (the seed's)",
}
PUBLISHED_SEED = {
    "adaptive": {"test_ppl": 132, "train_minutes": 7.8},
    "full": {"test_ppl": 127, "train_minutes": 24.6},
    "hardware": "GPU (the seed experiment; published figures, not measured here)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="results file name (without .json)")
    parser.add_argument("--command", required=True, help="the command that ran the comparison")
    parser.add_argument("--adaptive", required=True, help="save dir of the adaptive-softmax run")
    parser.add_argument("--full", required=True, help="save dir of the full-softmax run")
    parser.add_argument("--optimizer", required=True, choices=sorted(OPTIMIZERS), help="train.sh's OPTIMIZER")
    args = parser.parse_args()
    runs = {"adaptive": read_run(args.adaptive), "full": read_run(args.full)}
    if runs["adaptive"]["train"]["epochs"] != runs["full"]["train"]["epochs"]:
        raise ValueError(f"the runs trained for different numbers of epochs: {runs['adaptive']['train']['epochs']} "
                         f"and {runs['full']['train']['epochs']}; delete the shorter run's save dir and re-run")
    optimizer = OPTIMIZERS[args.optimizer].format(lr=read_settings(args.adaptive)["lr"])
    wps = {k: statistics.median(r["train"]["train_wps_per_epoch"]) for k, r in runs.items()}
    speedup = wps["adaptive"] / wps["full"]
    gap = runs["adaptive"]["test"]["perplexity"] / runs["full"]["test"]["perplexity"] - 1
    payload = {
        "config": f"qrnn_lm_wikitext2_seed (4 x 300 QRNN), {optimizer}, "
                  "48 x 70-token batches; adaptive: cutoffs 0.0667,0.2 of V, div 4",
        "runs": runs,
        "train_wps_median": wps,
        "speedup_train_wps": speedup,
        "speedup_train_wall": runs["full"]["train"]["train_wall_s"] / runs["adaptive"]["train"]["train_wall_s"],
        "test_ppl_gap": gap,
        "goals": {f"speedup_at_least_{GOAL_SPEEDUP}x": speedup >= GOAL_SPEEDUP,
                  f"test_ppl_within_{GOAL_PPL_GAP:.0%}": gap <= GOAL_PPL_GAP},
        "published_seed": PUBLISHED_SEED,
    }
    print(write_result(args.name, payload, command=args.command))
    print(f"speed-up {speedup:.2f}x, test perplexity {runs['adaptive']['test']['perplexity']} (adaptive) vs "
          f"{runs['full']['test']['perplexity']} (full), gap {100 * gap:+.1f}%")


if __name__ == "__main__":
    main()
