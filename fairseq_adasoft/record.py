"""Record a finished recipe's figures as a results file (JSON with
provenance, fairseq_adasoft.provenance), read from what the runs left behind:
fairseq's JSON training log, fairseq-eval-lm's logs and the checkpoints' saved
configs, so that a results file cannot drift from what ran.

    python -m fairseq_adasoft.record run         --save-dir DIR --config TEXT [--classic] [--phase-seconds train=60 ...]
    python -m fairseq_adasoft.record protocols   --save-dir DIR
    python -m fairseq_adasoft.record comparison  --adaptive DIR --full DIR --optimizer adam|seed
    python -m fairseq_adasoft.record tuning      --run LABEL=DIR [LABEL=DIR ...]
    python -m fairseq_adasoft.record train-tokens DATA

Every recording subcommand takes --name, --command, --note and --results-dir
(default: $BENCHMARK_RESULTS_DIR, else ./benchmarks/results when it exists).
train-tokens prints the tokens in one epoch of DATA's train split.
"""

import argparse
import json
import math
import os
import statistics
import sys

from fairseq_adasoft.logs import labelled_paths, read_eval, read_run, read_settings, read_train_log
from fairseq_adasoft.presets import ARCHITECTURES, DYNAMIC_EVAL, EVAL_PROTOCOLS
from fairseq_adasoft.provenance import RESULTS_SUBDIR, write_result

# The goal for the main job: test perplexity <= 110 from <= 60 minutes of training.
GOAL_TEST_PPL = 110.0
GOAL_TRAIN_SECONDS = 3600.0
# The seed experiment's goals, set from its published figures (PUBLISHED_SEED below): at least 3x the speed, within 4%.
GOAL_SPEEDUP = 3.0
GOAL_PPL_GAP = 0.04
COMPARED_ARCH = "qrnn_lm_wikitext2_seed"  # recipes/wikitext2/compare.sh trains it twice
OPTIMIZERS = {  # recipes/wikitext2/train.sh; Adam's peak lr (train.sh's LR) comes from the checkpoint
    "adam": "Adam lr {lr}, polynomial decay to 1e-4 after 100 warm-up updates, clip 0.25",
    "seed": "NAG lr 1 momentum 0.9, clip 0.25 (the seed's)",
}
PUBLISHED_SEED = {
    "adaptive": {"test_ppl": 132, "train_minutes": 7.8},
    "full": {"test_ppl": 127, "train_minutes": 24.6},
    "hardware": "GPU (the seed experiment; published figures, not measured here)",
}
# recipes/wikitext2/eval.sh's protocols: the log-name suffix and what each does.
PROTOCOLS = {
    "blocks": ("", "fairseq-eval-lm, {block_tokens}-token blocks scored independently, batch {block_batch_size}"),
    "classic": ("_classic", "fairseq-eval-lm --stateful-bptt: streams read {classic_tokens} tokens at a time with "
                            "the state carried; {classic_valid_streams} streams for valid, {classic_test_streams} "
                            "for test (awd-lstm-lm)"),
    "cache": ("_cache", "classic, plus the continuous cache of Grave, Joulin & Usunier 2017 "
                        "(--neural-cache-size/theta/lambda) with the setting tuned on valid"),
    "dynamic": ("_dynamic", "classic with the dynamic evaluation of Krause et al. 2018 (--dynamic-eval, "
                            "{segment}-token segments) at the learning rate and decay tuned on valid"),
    "dynamic_cache": ("_dynamic_cache", "dynamic evaluation and the continuous cache, each with its tuned setting"),
}
# Protocols whose valid split may go unscored (one step per segment makes it slow):
# their tuning scored the start of valid.
TUNINGS_ONLY_VALID = ("dynamic", "dynamic_cache")
# The tuners' files and the protocol each one's setting serves.
TUNINGS = {"cache": "neural_cache.json", "dynamic": "dynamic_eval.json"}
# Dynamic evaluation's goals (its issue): test perplexity at least 25% below the static
# classic protocol's, dynamic + cache below both alone, test scored in <= 15 minutes.
GOAL_DYNAMIC_GAIN = 0.25
GOAL_DYNAMIC_SECONDS = 900.0


def model_text(settings: dict) -> str:
    return f"embedding {settings['embed_dim']}, {settings['num_layers']} x {settings['hidden_size']} QRNN"


def record_run(save_dir: str, config: str, classic: bool = False) -> dict:
    """A train.sh save dir evaluated by eval.sh on valid and test (and with
    ``classic``, under the classic protocol too); ``config`` says what was
    trained beyond the model's sizes, which come from the checkpoint."""
    settings = read_settings(save_dir)
    payload = {"config": f"{model_text(settings)}; {config}", "settings": settings, **read_run(save_dir)}
    if classic:
        suffix, how = PROTOCOLS["classic"]
        payload["classic"] = {"how": how.format(**EVAL_PROTOCOLS), **{
            split: read_eval(os.path.join(save_dir, f"eval_{split}{suffix}.log")) for split in ("valid", "test")}}
    return payload


def record_protocols(save_dir: str) -> dict:
    """One checkpoint under recipes/wikitext2/protocols.sh's protocols, and the goals."""
    payload = {"checkpoint": os.path.join(os.path.relpath(save_dir), "checkpoint_best.pt")}
    for protocol, (suffix, how) in PROTOCOLS.items():
        payload[protocol] = {"how": how.format(**EVAL_PROTOCOLS, **DYNAMIC_EVAL)}
        for split in ("valid", "test"):
            path = os.path.join(save_dir, f"eval_{split}{suffix}.log")
            if split == "valid" and protocol in TUNINGS_ONLY_VALID and not has_eval(path):
                payload[protocol]["not_measured"] = (f"valid: {os.path.basename(path)} holds no result; the tuning's "
                                                     "valid figure is in 'tuning'")
                continue
            payload[protocol][split] = read_eval(path)
    for protocol, name in TUNINGS.items():  # the tuners' grids and their best settings
        with open(os.path.join(save_dir, name)) as f:
            payload[protocol]["tuning"] = json.load(f)
    train_s = read_train_log(os.path.join(save_dir, "train.log"))["train_wall_s"]
    payload["goals"] = [
        {"goal": f"test perplexity <= {GOAL_TEST_PPL:g} after <= {GOAL_TRAIN_SECONDS / 60:g} min of training",
         "protocol": protocol, "test_ppl": payload[protocol]["test"]["perplexity"], "train_wall_s": train_s,
         "met": payload[protocol]["test"]["perplexity"] <= GOAL_TEST_PPL and train_s <= GOAL_TRAIN_SECONDS}
        for protocol in PROTOCOLS
    ] + dynamic_goals(payload)
    return payload


def dynamic_goals(payload: dict) -> list:
    test = {protocol: payload[protocol]["test"] for protocol in ("classic", "cache", "dynamic", "dynamic_cache")}
    gain = 1 - test["dynamic"]["perplexity"] / test["classic"]["perplexity"]
    return [
        {"goal": f"dynamic evaluation's test perplexity >= {GOAL_DYNAMIC_GAIN:.0%} below the static classic one",
         "gain": round(gain, 4), "met": gain >= GOAL_DYNAMIC_GAIN},
        {"goal": "dynamic evaluation with the cache below both alone",
         "test_ppl": test["dynamic_cache"]["perplexity"],
         "met": test["dynamic_cache"]["perplexity"] < min(test["dynamic"]["perplexity"], test["cache"]["perplexity"])},
        {"goal": f"test scored with dynamic evaluation in <= {GOAL_DYNAMIC_SECONDS / 60:g} min",
         "seconds": test["dynamic"].get("seconds"), "statistics": test["dynamic"].get("dynamic_eval_statistics"),
         "met": test["dynamic"].get("seconds", math.inf) <= GOAL_DYNAMIC_SECONDS},
    ]


def has_eval(path: str) -> bool:
    try:
        read_eval(path)
    except (OSError, ValueError):
        return False
    return True


def record_comparison(adaptive: str, full: str, optimizer: str) -> dict:
    """recipes/wikitext2/compare.sh: adaptive against full softmax, same seed
    model and epochs, with the seed's goals checked. Speed is the median of the
    per-epoch training words/s (the first epoch included: both runs pay the
    same start-up)."""
    runs = {"adaptive": read_run(adaptive), "full": read_run(full)}
    if runs["adaptive"]["train"]["epochs"] != runs["full"]["train"]["epochs"]:
        raise ValueError(f"the runs trained for different numbers of epochs: {runs['adaptive']['train']['epochs']} "
                         f"and {runs['full']['train']['epochs']}; delete the shorter run's save dir and re-run")
    settings = read_settings(adaptive)
    optimizer_text = OPTIMIZERS[optimizer].format(lr=settings["lr"])
    wps = {k: statistics.median(r["train"]["train_wps_per_epoch"]) for k, r in runs.items()}
    speedup = wps["adaptive"] / wps["full"]
    gap = runs["adaptive"]["test"]["perplexity"] / runs["full"]["test"]["perplexity"] - 1
    return {
        "config": f"{COMPARED_ARCH} ({settings['num_layers']} x {settings['hidden_size']} QRNN), {optimizer_text}, "
                  f"{settings['streams']} x {settings['tokens_per_sample']}-token batches; adaptive: cutoffs "
                  f"{ARCHITECTURES[COMPARED_ARCH]['adaptive_softmax_cutoff']} of V, "
                  f"div {settings['adaptive_softmax_div_value']:g}",
        "runs": runs,
        "train_wps_median": wps,
        "speedup_train_wps": speedup,
        "speedup_train_wall": runs["full"]["train"]["train_wall_s"] / runs["adaptive"]["train"]["train_wall_s"],
        "test_ppl_gap": gap,
        "goals": {f"speedup_at_least_{GOAL_SPEEDUP}x": speedup >= GOAL_SPEEDUP,
                  f"test_ppl_within_{GOAL_PPL_GAP:.0%}": gap <= GOAL_PPL_GAP},
        "published_seed": PUBLISHED_SEED,
    }


def record_tuning(runs: dict) -> dict:
    """``runs``: label -> save dir of a short train.sh run. Returns each run's
    settings and log summary, and the label of the lowest final validation perplexity."""
    table = {}
    for label, save_dir in runs.items():
        train = read_train_log(os.path.join(save_dir, "train.log"))
        if not train["valid_ppl_per_epoch"]:
            raise ValueError(f"{save_dir}/train.log holds no validation result; did the run finish an epoch?")
        table[label] = {"settings": read_settings(save_dir), "train": train}
    best = min(table, key=lambda label: table[label]["train"]["valid_ppl_per_epoch"][-1])
    return {"runs": table, "best_valid": best}


def train_tokens(data: str) -> int:
    """Tokens in one epoch of ``data``'s train split (with fairseq-preprocess's end-of-line tokens)."""
    from fairseq.data import Dictionary

    from fairseq_adasoft.tasks.vocabulary import train_split

    dataset = train_split(data, Dictionary.load(os.path.join(data, "dict.txt")))
    return int(dataset.sizes.sum())  # sizes views the dataset's mmap: keep it alive while it is read


def default_results_dir():
    return os.environ.get("BENCHMARK_RESULTS_DIR") or (RESULTS_SUBDIR if os.path.isdir(RESULTS_SUBDIR) else None)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m fairseq_adasoft.record", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    results = argparse.ArgumentParser(add_help=False)
    results.add_argument("--name", required=True, help="results file name (without .json)")
    results.add_argument("--command", required=True, help="the command that ran the recipe")
    results.add_argument("--note", default="", help="anything a reader of the figures should know")
    default = default_results_dir()
    results.add_argument("--results-dir", default=default, required=default is None,
                         help=f"where <name>.json goes (default: $BENCHMARK_RESULTS_DIR, else ./{RESULTS_SUBDIR})")
    sub = top.add_subparsers(dest="subcommand", required=True)
    run = sub.add_parser("run", parents=[results], help="a train.sh + eval.sh run (recipes/wikitext2/run.sh)")
    run.add_argument("--config", required=True, help="what was trained beyond the model's sizes, e.g. the softmax")
    run.add_argument("--save-dir", required=True, help="train.sh's SAVE_DIR, evaluated by eval.sh on valid and test")
    run.add_argument("--phase-seconds", nargs="+", default=[], metavar="PHASE=SECONDS", help="the recipe's wall times")
    run.add_argument("--classic", action="store_true", help="also record eval.sh PROTOCOL=classic's valid and test")
    protocols = sub.add_parser("protocols", parents=[results], help="recipes/wikitext2/protocols.sh's evaluations")
    protocols.add_argument("--save-dir", required=True, help="training save dir holding the eval logs")
    comparison = sub.add_parser("comparison", parents=[results], help="recipes/wikitext2/compare.sh's two runs")
    comparison.add_argument("--adaptive", required=True, help="save dir of the adaptive-softmax run")
    comparison.add_argument("--full", required=True, help="save dir of the full-softmax run")
    comparison.add_argument("--optimizer", required=True, choices=sorted(OPTIMIZERS), help="train.sh's OPTIMIZER")
    tuning = sub.add_parser("tuning", parents=[results], help="short train.sh runs side by side")
    tuning.add_argument("--run", nargs="+", required=True, metavar="LABEL=SAVE_DIR")
    tokens = sub.add_parser("train-tokens", help="print the tokens in one epoch of DATA's train split")
    tokens.add_argument("data", metavar="DATA", help="a fairseq-preprocess --destdir")
    return top


def payload(args) -> dict:
    if args.subcommand == "run":
        phases = {k: float(v) for k, v in (p.split("=", 1) for p in args.phase_seconds)}
        return {**record_run(args.save_dir, args.config, args.classic),
                "wall_seconds": {**phases, "total": sum(phases.values())}}
    if args.subcommand == "protocols":
        return record_protocols(args.save_dir)
    if args.subcommand == "comparison":
        return record_comparison(args.adaptive, args.full, args.optimizer)
    return record_tuning(labelled_paths(args.run, "--run", "lr_0.004=checkpoints/tune-lr-0.004"))


def main() -> None:
    args = parser().parse_args()
    try:
        if args.subcommand == "train-tokens":
            print(train_tokens(args.data))
            return
        result = payload(args)
    except ValueError as e:  # what is missing or malformed, without a traceback
        sys.exit(str(e))
    if args.note:
        result["note"] = args.note
    print(write_result(args.name, result, args.command, args.results_dir))
    if args.subcommand == "comparison":
        runs = result["runs"]
        print(f"speed-up {result['speedup_train_wps']:.2f}x, test perplexity {runs['adaptive']['test']['perplexity']} "
              f"(adaptive) vs {runs['full']['test']['perplexity']} (full), gap {100 * result['test_ppl_gap']:+.1f}%")


if __name__ == "__main__":
    main()
