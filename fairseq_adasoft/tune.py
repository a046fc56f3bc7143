"""Tune a trained ``qrnn_lm``'s evaluation-time adaptation on a validation
split, one subcommand per tuner; each keeps its grid and best setting beside
the checkpoint, with the command that chose them, for recipes/wikitext2/eval.sh
and ``python -m fairseq_adasoft.record protocols``.

    python -m fairseq_adasoft.tune cache --data data-bin/wikitext-2 --save-dir checkpoints/wikitext2_main
    python -m fairseq_adasoft.tune dynamic-eval --data data-bin/wikitext-2 --save-dir checkpoints/wikitext2_main

Both read the split as ``fairseq-eval-lm --stateful-bptt`` does (contiguous
streams, the state carried), through the code that scores with the tuned
setting, and refuse the test split.
"""

import argparse
import json
import math
import os
import sys
import time
from typing import List, Optional

import torch

import fairseq_adasoft
from fairseq_adasoft.presets import DYNAMIC_EVAL, EVAL_PROTOCOLS

PROG = "python -m fairseq_adasoft.tune"
PLUGIN_DIR = os.path.dirname(fairseq_adasoft.__file__)  # fairseq's --user-dir: the installed package
# The classic protocol's tokens per step (awd-lstm-lm's bptt).
TOKENS_PER_BATCH = EVAL_PROTOCOLS["classic_tokens"]

CACHE_DOC = """The continuous cache (Grave, Joulin & Usunier 2017), tuned as the paper
does: the model reads the split once, under the classic protocol (awd-lstm-lm's
validation batch of streams read side by side), and every (size, theta,
lambda) of a grid is scored from the stored features and the model's
log p(target), with the cache ``fairseq-eval-lm --neural-cache-size`` runs.
Writes <save-dir>/neural_cache.json (the grid and the best setting), which
recipes/wikitext2/eval.sh PROTOCOL=cache uses."""
# Grids: sizes around the paper's 2,000 for WikiText-2. The features qrnn_lm's
# output layer reads have norms near 1 (last QRNN layer, o * c), so h_t . h_i is
# O(1) and theta must be O(1-10).
SIZES = (500, 1000, 2000, 4000)
THETAS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
LAMBDAS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
CACHE_STREAMS = EVAL_PROTOCOLS["classic_valid_streams"]

DYNAMIC_EVAL_DOC = """Dynamic evaluation (Krause et al. 2018), tuned as the authors'
``dynamiceval.py --grid`` does: the gradient statistics are gathered once,
then each (learning rate, decay) of a small grid scores the split from the
trained weights, through the code ``fairseq-eval-lm --dynamic-eval`` runs.
--tokens scores only the split's first tokens per setting (their --gridfast
reads 30,000; one stream of 10,000 is 500 steps), and --stats-tokens gathers
the statistics from the training split's first tokens (Krause et al. read it
all; rows no batch reached take the rarest reached row's rms). The statistics are
kept in <save-dir>/dynamic_eval_stats.pt (--dynamic-eval-stats-file), so that
scoring test with the chosen setting reads them instead of gathering them
again. Writes <save-dir>/dynamic_eval.json (the grid, the best setting and the
statistics file), which recipes/wikitext2/eval.sh PROTOCOL=dynamic uses."""
# Grids around the authors' AWD-QRNN WikiText-2 setting (presets.DYNAMIC_EVAL): on the main
# job's checkpoint, one stream, statistics of the whole training split, 1x was best and 4x
# was worse than no adaptation (so it is no longer tried); small models go wrong sooner.
LRS = tuple(DYNAMIC_EVAL["lr"] * f for f in (0.5, 1.0, 2.0))
DECAYS = tuple(DYNAMIC_EVAL["decay"] * f for f in (0.25, 1.0))
TOKENS = DYNAMIC_EVAL["tuning_tokens"]
# One stream, as Krause et al. read every split and the classic protocol reads test: the
# size of a step depends on how many segments it averages, so tune with the test's.
DYNAMIC_EVAL_STREAMS = EVAL_PROTOCOLS["classic_test_streams"]
STATISTICS_FILE = "dynamic_eval_stats.pt"  # beside the checkpoint
LARGEST_EXP_ARG = math.log(sys.float_info.max)  # a mean loss beyond it has no float perplexity


def load(data: str, checkpoint: str, subset: str, streams: int, flags=()):
    """The model and a function giving the split's batches (a fresh pass per call), built as
    fairseq-eval-lm --stateful-bptt [flags] builds them."""
    from fairseq import checkpoint_utils, options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_eval_lm_parser()
    args = options.parse_args_and_arch(parser, [
        data, "--user-dir", PLUGIN_DIR, "--task", "language_modeling_freqsorted",
        "--path", checkpoint, "--gen-subset", subset, "--stateful-bptt", "--cpu",
        "--tokens-per-sample", str(TOKENS_PER_BATCH), "--batch-size", str(streams),
        *flags,
    ])
    cfg = convert_namespace_to_omegaconf(args)
    utils.import_user_module(cfg.common)
    task = tasks.setup_task(cfg.task)
    models, _ = checkpoint_utils.load_model_ensemble([checkpoint], task=task)
    model = models[0].eval()
    if not hasattr(model, "use_neural_cache"):
        raise ValueError(f"{checkpoint}: tuning needs a qrnn_lm model, not {type(model).__name__}")
    task.load_dataset(subset)
    return model, lambda: task.eval_lm_dataloader(task.dataset(subset), batch_size=streams, num_workers=0)


# The continuous cache.

@torch.no_grad()
def read_split(model, batches, pad: int) -> list:
    """Per batch: features B x T x C, words read B x T, targets B x T, log p_model(target) B x T."""
    out = []
    for sample in batches:
        features, extra = model(**sample["net_input"], features_only=True)
        target = sample["target"]
        lprobs = model.get_normalized_probs((features, extra), log_probs=True, sample=sample)  # B x T x V
        model_lp = lprobs.gather(2, target.unsqueeze(2)).squeeze(2)  # B x T
        out.append((features.float(), sample["net_input"]["src_tokens"], target, model_lp.float()))
    return out


def cache_target_probs(cache, split: list) -> tuple:
    """p_cache(target) and whether anything was remembered, at every real target (flattened):
    one setting through ``attend``, the path the grid (modules/cache_grid.py) is tested against."""
    memory, probs, remembered = None, [], []
    for features, tokens, target, _ in split:
        weights, values, memory = cache.attend(features, tokens, memory)
        real = target.ne(cache.pad)
        probs.append(cache.target_probs(weights, values, target)[real])
        remembered.append((weights.sum(-1) > 0)[real])
    return torch.cat(probs), torch.cat(remembered)


def perplexity(cache, model_lp, cache_p, remembered) -> float:
    mixed = cache.mix(model_lp, cache_p, remembered)
    return math.exp(-mixed.double().mean().item())


def tune_cache(split: list, pad: int, sizes=SIZES, thetas=THETAS, lambdas=LAMBDAS) -> dict:
    from fairseq_adasoft.modules import NeuralCache
    from fairseq_adasoft.modules.cache_grid import grid_target_probs

    for size in sizes:  # the flags' checks, before the grid's work
        for theta in thetas:
            for lam in lambdas:
                NeuralCache(size, theta, lam, pad=pad)
    model_lp = torch.cat([lp[t.ne(pad)] for _, _, t, lp in split])
    # h_t . h_i once per batch for every (size, theta), not once per setting: 9x faster on valid.
    cache_ps, remembered_by_size = grid_target_probs(((f, x, t) for f, x, t, _ in split), sizes, thetas, pad)
    grid = []
    for size, cache_p_by_theta, remembered in zip(sizes, cache_ps, remembered_by_size):
        for theta, cache_p in zip(thetas, cache_p_by_theta):
            for lam in lambdas:
                ppl = perplexity(NeuralCache(size, theta, lam, pad=pad), model_lp, cache_p, remembered)
                grid.append({"size": size, "theta": theta, "lambda": lam, "perplexity": round(ppl, 3)})
    best = min(grid, key=lambda g: g["perplexity"])
    return {"tokens": len(model_lp), "without_cache": round(math.exp(-model_lp.double().mean().item()), 3),
            "best": best, "grid": grid}


def run_cache(args, checkpoint: str) -> dict:
    model, batches = load(args.data, checkpoint, args.subset, args.streams)
    pad = model.decoder.dictionary.pad()
    start = time.perf_counter()
    split = read_split(model, batches(), pad)
    read = time.perf_counter()
    result = tune_cache(split, pad)
    # The recipe's note breaks the tuner's time into these two phases.
    print(f"cache tuner: read {args.subset} in {read - start:.1f} s, scored {len(result['grid'])} settings "
          f"in {time.perf_counter() - read:.1f} s", flush=True)
    return result


# Dynamic evaluation.

def score(model, batches, tokens: int, subset: str = "the split") -> dict:
    """Perplexity of the first ``tokens`` real targets, each scored before the step it feeds."""
    decoder, nll, count, start = model.decoder, 0.0, 0, time.perf_counter()
    for sample in batches:
        with torch.no_grad():  # as fairseq's SequenceScorer: the decoder turns autograd on itself
            net_output = model(**sample["net_input"])
            log_p = decoder.get_normalized_probs(net_output, log_probs=True, sample=sample)
            log_p = log_p.gather(2, sample["target"].unsqueeze(2)).squeeze(2)
        real = sample["target"].ne(decoder.dictionary.pad())
        nll -= log_p[real].double().sum().item()
        count += int(real.sum())
        if count >= tokens or not math.isfinite(nll):  # a diverged setting need not finish
            break
    if count == 0:
        raise ValueError(f"--subset {subset}: the split gave no tokens to score; tune on a split that "
                         f"fairseq-preprocess binarized from a non-empty file (--validpref)")
    diverged = not math.isfinite(nll) or nll / count > LARGEST_EXP_ARG  # a learning rate that diverged
    ppl = math.inf if diverged else math.exp(nll / count)
    return {"perplexity": round(ppl, 3), "tokens": count, "seconds": round(time.perf_counter() - start, 1)}


def tune_dynamic_eval(model, batches_fn, tokens: int, lrs=LRS, decays=DECAYS, subset: str = "the split") -> dict:
    dynamic_eval, grid = model.decoder.dynamic_eval, []
    for lr in lrs:
        for decay in decays:
            dynamic_eval.restart(lr, decay)  # the first setting gathers the statistics when it starts
            grid.append({"lr": lr, "decay": decay, **score(model, batches_fn(), tokens, subset)})
            print(f"lr {lr:g} decay {decay:g}: perplexity {grid[-1]['perplexity']}", flush=True)
    dynamic_eval.restart(0.0, 0.0)
    static = score(model, batches_fn(), tokens, subset)  # lr 0: the static model, through the same code
    best = min(grid, key=lambda g: g["perplexity"] if math.isfinite(g["perplexity"]) else math.inf)
    return {"tokens": static["tokens"], "without_dynamic_eval": static["perplexity"], "best": best, "grid": grid}


def run_dynamic_eval(args, checkpoint: str) -> dict:
    if args.tokens < 1:
        raise ValueError(f"--tokens must be >= 1, got {args.tokens}")
    if args.stats_tokens is not None and args.stats_tokens < 1:
        raise ValueError(f"--stats-tokens must be >= 1 (or omitted for the whole training split), got {args.stats_tokens}")
    statistics = os.path.abspath(os.path.join(args.save_dir, STATISTICS_FILE))
    flags = ["--dynamic-eval", "--dynamic-eval-stats-file", statistics]
    if args.stats_tokens is not None:
        flags += ["--dynamic-eval-stats-tokens", str(args.stats_tokens)]
    model, batches_fn = load(args.data, checkpoint, args.subset, args.streams, flags=flags)
    result = tune_dynamic_eval(model, batches_fn, args.tokens, subset=args.subset)
    return {"segment": DYNAMIC_EVAL["segment"], "statistics_tokens": args.stats_tokens,
            "statistics_file": statistics, **result}


# name: (description, default streams, output file, run, the figure it beat and what that is without)
TUNERS = {
    "cache": (CACHE_DOC, CACHE_STREAMS, "neural_cache.json", run_cache, "without_cache", "the cache"),
    "dynamic-eval": (DYNAMIC_EVAL_DOC, DYNAMIC_EVAL_STREAMS, "dynamic_eval.json", run_dynamic_eval,
                     "without_dynamic_eval", "dynamic evaluation"),
}


def arguments(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    tuners = parser.add_subparsers(dest="tuner", required=True, metavar="{" + ",".join(TUNERS) + "}")
    for name, (doc, streams, output, *_, what) in TUNERS.items():
        sub = tuners.add_parser(name, description=doc, help=f"tune {what}, writing <save-dir>/{output}",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--data", required=True, help="fairseq-preprocess --destdir the model was trained on")
        sub.add_argument("--save-dir", required=True, help="training save dir holding checkpoint_best.pt")
        sub.add_argument("--subset", default="valid", help="split to tune on (never the test split)")
        sub.add_argument("--streams", type=int, default=streams, help="contiguous streams read side by side")
        if name == "dynamic-eval":
            sub.add_argument("--tokens", type=int, default=TOKENS,
                             help="score each setting on the split's first N tokens")
            sub.add_argument("--stats-tokens", type=int, default=DYNAMIC_EVAL["tuning_statistics_tokens"],
                             help="gather the gradient statistics from the training split's first N tokens "
                                  "(fairseq-eval-lm's --dynamic-eval-stats-tokens; the scoring runs read them)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = arguments(argv)
    if args.subset == "test":
        raise ValueError("--subset test: tune on a validation split and report the test split once")
    checkpoint = os.path.join(args.save_dir, "checkpoint_best.pt")
    if not os.path.isfile(checkpoint):
        raise ValueError(f"{checkpoint} not found: --save-dir must be a training save dir (recipes/wikitext2/train.sh)")
    _, _, name, run, baseline, without = TUNERS[args.tuner]
    result = {"command": " ".join([PROG, *argv]), "subset": args.subset, "streams": args.streams,
              **run(args, checkpoint)}
    path = os.path.join(args.save_dir, name)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{path}: {args.subset} perplexity without {without} {result[baseline]}, best {result['best']}")


if __name__ == "__main__":
    main()
