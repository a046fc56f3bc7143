"""Record a finished recipe's figures as a results file (fairseq_adasoft.provenance's
schema: cases of params and metrics, with the command, revision and machine), read
from what the runs left behind: fairseq's JSON training log, fairseq-eval-lm's logs,
the tuners' files and the checkpoints' saved configs, so that a results file cannot
drift from what ran. A recipe's file holds what ran and what it measured, no targets.

    python -m fairseq_adasoft.record run         --save-dir DIR --config TEXT [--classic | --protocols] [--phase-seconds train=60 ...]
    python -m fairseq_adasoft.record protocols   --save-dir DIR
    python -m fairseq_adasoft.record comparison  --adaptive DIR --full DIR --optimizer adam|seed
    python -m fairseq_adasoft.record tuning      --run LABEL=DIR [LABEL=DIR ...]
    python -m fairseq_adasoft.record train-tokens DATA

Every recording subcommand takes --name, --command, --note and --results-dir
(default: $BENCHMARK_RESULTS_DIR, else ./benchmarks/results when it exists).
A run's cases: {"phase": "train", **its settings} (the training log's figures),
{"phase": "job"} (the recipe's wall seconds per phase), {"phase": "eval",
"protocol", "split"} (fairseq-eval-lm's) and {"phase": "tune", "protocol",
"split"} (the tuned setting). train-tokens prints the tokens in one epoch of DATA's train split.
"""

import argparse
import json
import os
import re
import statistics
import sys

from fairseq_adasoft.logs import labelled_paths, read_eval, read_run, read_settings, read_train_log
from fairseq_adasoft.presets import ARCHITECTURES
from fairseq_adasoft.provenance import RESULTS_SUBDIR, write_results

COMPARED_ARCH = "qrnn_lm_wikitext2_seed"  # recipes/wikitext2/compare.sh trains it twice
OPTIMIZERS = {  # recipes/wikitext2/train.sh; Adam's peak lr (train.sh's LR) comes from the checkpoint
    "adam": "Adam lr {lr}, polynomial decay to 1e-4 after 100 warm-up updates, clip 0.25",
    "seed": "NAG lr 1 momentum 0.9, clip 0.25 (the seed's)",
}
# recipes/wikitext2/eval.sh's protocols and their log-name suffixes (docs/stateful-bptt.md says what each does).
PROTOCOLS = {"blocks": "", "classic": "_classic", "cache": "_cache", "dynamic": "_dynamic",
             "dynamic_cache": "_dynamic_cache"}
# A path from the filesystem's root in a recipe's command or note (SAVE_DIR=/...): a results
# file holds none, so it is written relative to the directory record runs in (the checkout).
ABSOLUTE_PATH = re.compile(r"(?<![\w./-])/[^\s\"']+")
# Protocols whose valid split may go unscored (one step per segment makes it slow):
# their tuning scored the start of valid.
TUNINGS_ONLY_VALID = ("dynamic", "dynamic_cache")
# Protocols that protocols.sh scores in another's pass: that run's log also reports the pass
# without the cache (its second result line).
SAME_PASS = {"classic": "cache", "dynamic": "dynamic_cache"}
# protocols.sh's phase times (NAME=SECONDS lines), beside the checkpoint.
PROTOCOL_PHASES = "protocols_phases.txt"
# The tuners' files and the protocol each one's setting serves.
TUNINGS = {"cache": "neural_cache.json", "dynamic": "dynamic_eval.json"}


def relative_paths(text: str) -> str:
    return ABSOLUTE_PATH.sub(lambda m: os.path.relpath(m.group(0)), text)


def model_text(settings: dict) -> str:
    return f"embedding {settings['embed_dim']}, {settings['num_layers']} x {settings['hidden_size']} QRNN"


def eval_metrics(result: dict) -> dict:
    """read_eval's figures as metrics; kept statistics are noted, not their (absolute) path."""
    metrics = {k: result[k] for k in ("loss_base2", "perplexity", "seconds", "same_pass_as") if k in result}
    stats = result.get("dynamic_eval_statistics") or {}
    if "gathered_s" in stats:
        metrics.update(statistics_gathered_s=stats["gathered_s"], statistics_tokens=stats["tokens"])
    elif "read_from" in stats:
        metrics["statistics_from_file"] = True
    return metrics


def eval_cases(evals: dict) -> list:
    """{protocol: {split: read_eval result}} as cases; a protocol beside classic also
    gets its perplexity relative to classic's on the same split (``vs_classic``)."""
    cases = []
    for protocol, splits in evals.items():
        for split, result in splits.items():
            metrics = eval_metrics(result)
            classic = evals.get("classic", {}).get(split)
            if classic and protocol != "classic":
                metrics["vs_classic"] = round(result["perplexity"] / classic["perplexity"] - 1, 4)
            cases.append({"params": {"phase": "eval", "protocol": protocol, "split": split}, "metrics": metrics})
    return cases


def tuning_case(protocol: str, tuning: dict) -> dict:
    """A tuner's file (fairseq_adasoft.tune's) as one case: its best setting and what it beat."""
    without = tuning.get("without_cache", tuning.get("without_dynamic_eval"))
    metrics = {"tokens": tuning["tokens"], "streams": tuning["streams"], "settings_tried": len(tuning["grid"]),
               "without": without, **tuning["best"]}
    return {"params": {"phase": "tune", "protocol": protocol, "split": tuning["subset"]}, "metrics": metrics}


def run_cases(settings: dict, train: dict, evals: dict, tunings: dict = None, wall_seconds: dict = None) -> list:
    """One run's cases: training, the recipe's phases, every evaluation, every tuning."""
    cases = [{"params": {"phase": "train", **settings}, "metrics": train}]
    if wall_seconds:
        cases.append({"params": {"phase": "job"}, "metrics": wall_seconds})
    cases += eval_cases(evals)
    return cases + [tuning_case(protocol, t) for protocol, t in (tunings or {}).items()]


def read_protocols(save_dir: str, protocols) -> tuple:
    """The eval logs of ``protocols`` in ``save_dir`` and the tuners' files: (evals, tunings)."""
    evals = {}
    for protocol in protocols:
        evals[protocol] = {}
        for split in ("valid", "test"):
            log = lambda p: os.path.join(save_dir, f"eval_{split}{PROTOCOLS[p]}.log")  # noqa: E731
            path, shared = log(protocol), log(SAME_PASS.get(protocol, protocol))
            if shared != path and has_eval(shared, without_cache=True):  # scored in the shared pass
                result = read_eval(shared, without_cache=True)
                evals[protocol][split] = {k: v for k, v in result.items() if k not in ("seconds", "dynamic_eval_statistics")}
                evals[protocol][split]["same_pass_as"] = SAME_PASS[protocol]
            elif not (split == "valid" and protocol in TUNINGS_ONLY_VALID and not has_eval(path)):
                evals[protocol][split] = read_eval(path)  # else the tuning's valid figure stands for it
    tunings = {}
    for protocol, name in TUNINGS.items():
        if protocol in protocols:
            with open(os.path.join(save_dir, name)) as f:
                tunings[protocol] = json.load(f)
    return evals, tunings


def record_run(save_dir: str, config: str, protocols=("blocks",), wall_seconds: dict = None) -> tuple:
    """A train.sh save dir evaluated by eval.sh under ``protocols`` (by
    protocols.sh: every one, with the tunings). Returns (cases, note): ``config``
    says what was trained beyond the model's sizes, which come from the checkpoint."""
    settings = read_settings(save_dir)
    evals, tunings = read_protocols(save_dir, protocols)
    train = read_train_log(os.path.join(save_dir, "train.log"))
    return run_cases(settings, train, evals, tunings, wall_seconds), f"{model_text(settings)}; {config}"


def has_eval(path: str, without_cache: bool = False) -> bool:
    try:
        read_eval(path, without_cache)
    except (OSError, ValueError):
        return False
    return True


def record_comparison(adaptive: str, full: str, optimizer: str) -> tuple:
    """recipes/wikitext2/compare.sh: adaptive against full softmax, same seed
    model and epochs. Speed is the median of the per-epoch training words/s (the
    first epoch included: both runs pay the same start-up). Returns (cases, note)."""
    runs = {"adaptive": read_run(adaptive), "full": read_run(full)}
    if runs["adaptive"]["train"]["epochs"] != runs["full"]["train"]["epochs"]:
        raise ValueError(f"the runs trained for different numbers of epochs: {runs['adaptive']['train']['epochs']} "
                         f"and {runs['full']['train']['epochs']}; delete the shorter run's save dir and re-run")
    settings = read_settings(adaptive)
    note = (f"{COMPARED_ARCH} ({settings['num_layers']} x {settings['hidden_size']} QRNN), "
            f"{OPTIMIZERS[optimizer].format(lr=settings['lr'])}, {settings['streams']} x "
            f"{settings['tokens_per_sample']}-token batches; adaptive: cutoffs "
            f"{ARCHITECTURES[COMPARED_ARCH]['adaptive_softmax_cutoff']} of V, div {settings['adaptive_softmax_div_value']:g}")
    return comparison_cases(runs, optimizer), note


def comparison_cases(runs: dict, optimizer: str) -> list:
    """{"adaptive"|"full": read_run result} as one case each; the adaptive one also holds its ratios to full."""
    metrics = {kind: {**run["train"], "train_wps_median": statistics.median(run["train"]["train_wps_per_epoch"]),
                      "valid_perplexity": run["valid"]["perplexity"], "test_perplexity": run["test"]["perplexity"]}
               for kind, run in runs.items()}
    a, f = metrics["adaptive"], metrics["full"]
    a.update(train_wps_vs_full=a["train_wps_median"] / f["train_wps_median"],
             train_wall_vs_full=f["train_wall_s"] / a["train_wall_s"],
             test_ppl_vs_full=a["test_perplexity"] / f["test_perplexity"] - 1)
    return [{"params": {"softmax": kind, "arch": COMPARED_ARCH, "optimizer": optimizer}, "metrics": m}
            for kind, m in metrics.items()]


def record_tuning(runs: dict) -> list:
    """``runs``: label -> save dir of a short train.sh run. One case each (the label
    and settings; the log summary), the lowest final validation perplexity marked ``lowest_valid``."""
    cases = []
    for label, save_dir in runs.items():
        train = read_train_log(os.path.join(save_dir, "train.log"))
        if not train["valid_ppl_per_epoch"]:
            raise ValueError(f"{save_dir}/train.log holds no validation result; did the run finish an epoch?")
        cases.append({"params": {"label": label, **read_settings(save_dir)}, "metrics": train})
    best = min(cases, key=lambda c: c["metrics"]["valid_ppl_per_epoch"][-1])
    for case in cases:
        case["metrics"]["lowest_valid"] = case is best
    return cases


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
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--classic", action="store_true", help="also record eval.sh PROTOCOL=classic's valid and test")
    scope.add_argument("--protocols", action="store_true",
                       help="also record every protocol of protocols.sh and its tunings: the run in one file")
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


def protocol_phases(save_dir: str) -> dict:
    """protocols.sh's phases' wall seconds, as ``protocols.NAME`` (inside run.sh's eval_classic)."""
    path = os.path.join(save_dir, PROTOCOL_PHASES)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {f"protocols.{k}": float(v) for k, v in (line.strip().split("=", 1) for line in f if "=" in line)}


def cases_and_note(args) -> tuple:
    if args.subcommand == "run":
        phases = {k: float(v) for k, v in (p.split("=", 1) for p in args.phase_seconds)}
        phases["total"] = sum(phases.values())
        # Everything after training: the evaluations and the tunings.
        phases["after_training"] = phases["total"] - sum(phases.get(k, 0.0) for k in ("setup", "prepare", "train"))
        phases.update(protocol_phases(args.save_dir) if args.protocols else {})  # parts of run.sh's last phase
        protocols = list(PROTOCOLS) if args.protocols else ["blocks"] + (["classic"] if args.classic else [])
        return record_run(args.save_dir, args.config, protocols, phases)
    if args.subcommand == "protocols":
        evals, tunings = read_protocols(args.save_dir, PROTOCOLS)
        return eval_cases(evals) + [tuning_case(p, t) for p, t in tunings.items()], ""
    if args.subcommand == "comparison":
        return record_comparison(args.adaptive, args.full, args.optimizer)
    return record_tuning(labelled_paths(args.run, "--run", "lr_0.004=checkpoints/tune-lr-0.004")), ""


def main() -> None:
    args = parser().parse_args()
    try:
        if args.subcommand == "train-tokens":
            print(train_tokens(args.data))
            return
        cases, note = cases_and_note(args)
    except ValueError as e:  # what is missing or malformed, without a traceback
        sys.exit(str(e))
    note = relative_paths(". ".join(n for n in (note, args.note) if n))
    print(write_results(args.name, cases, relative_paths(args.command), args.results_dir, note=note or None))
    if args.subcommand == "comparison":
        a, f = (c["metrics"] for c in cases)
        print(f"speed-up {a['train_wps_vs_full']:.2f}x, test perplexity {a['test_perplexity']} (adaptive) vs "
              f"{f['test_perplexity']} (full), gap {100 * a['test_ppl_vs_full']:+.1f}%")


if __name__ == "__main__":
    main()
