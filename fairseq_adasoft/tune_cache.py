"""Tune the continuous cache (Grave, Joulin & Usunier 2017) of a trained
``qrnn_lm`` on a validation split, as the paper does: the model reads the
split once, under the classic protocol (contiguous streams, the state
carried; presets.EVAL_PROTOCOLS), and every (size, theta, lambda) of a grid
is scored from the stored features and the model's log p(target), with the cache of
``fairseq_adasoft.modules.NeuralCache``, the code ``fairseq-eval-lm
--neural-cache-size`` runs.

Writes <save-dir>/neural_cache.json: the grid and the best setting, which
recipes/wikitext2/eval.sh PROTOCOL=cache uses and ``python -m
fairseq_adasoft.record protocols`` copies into the results file.

    python -m fairseq_adasoft.tune_cache --data data-bin/wikitext-2 --save-dir checkpoints/wikitext2_main
"""

import argparse
import json
import math
import os
import sys

import torch

import fairseq_adasoft
from fairseq_adasoft.presets import EVAL_PROTOCOLS

# Grids: sizes around the paper's 2,000 for WikiText-2. The features qrnn_lm's
# output layer reads have norms near 1 (last QRNN layer, o * c), so h_t . h_i is
# O(1) and theta must be O(1-10).
SIZES = (500, 1000, 2000, 4000)
THETAS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
LAMBDAS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
# The classic protocol's validation batch (awd-lstm-lm's): streams read side by side, tokens per step.
STREAMS, TOKENS_PER_BATCH = EVAL_PROTOCOLS["classic_valid_streams"], EVAL_PROTOCOLS["classic_tokens"]
PLUGIN_DIR = os.path.dirname(fairseq_adasoft.__file__)  # fairseq's --user-dir: the installed package


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
        raise ValueError(f"{checkpoint}: the neural cache needs a qrnn_lm model, not {type(model).__name__}")
    task.load_dataset(subset)
    return model, lambda: task.eval_lm_dataloader(task.dataset(subset), batch_size=streams, num_workers=0)


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
    """p_cache(target) and whether anything was remembered, at every real target (flattened)."""
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


def tune(split: list, pad: int, sizes=SIZES, thetas=THETAS, lambdas=LAMBDAS) -> dict:
    from fairseq_adasoft.modules import NeuralCache

    model_lp = torch.cat([lp[t.ne(pad)] for _, _, t, lp in split])
    grid = []
    for size in sizes:
        for theta in thetas:
            cache_p, remembered = cache_target_probs(NeuralCache(size, theta, lambdas[0], pad=pad), split)
            for lam in lambdas:
                ppl = perplexity(NeuralCache(size, theta, lam, pad=pad), model_lp, cache_p, remembered)
                grid.append({"size": size, "theta": theta, "lambda": lam, "perplexity": round(ppl, 3)})
    best = min(grid, key=lambda g: g["perplexity"])
    return {"tokens": len(model_lp), "without_cache": round(math.exp(-model_lp.double().mean().item()), 3),
            "best": best, "grid": grid}


def tuner_arguments(prog: str, doc: str, streams: int, add=None) -> tuple:
    """A tuner's command line (both tuners read the same flags): the arguments and the checkpoint."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="fairseq-preprocess --destdir the model was trained on")
    parser.add_argument("--save-dir", required=True, help="training save dir holding checkpoint_best.pt")
    parser.add_argument("--subset", default="valid", help="split to tune on (never the test split)")
    parser.add_argument("--streams", type=int, default=streams, help="contiguous streams read side by side")
    if add is not None:
        add(parser)
    args = parser.parse_args()
    if args.subset == "test":
        raise ValueError("--subset test: tune on a validation split and report the test split once")
    checkpoint = os.path.join(args.save_dir, "checkpoint_best.pt")
    if not os.path.isfile(checkpoint):
        raise ValueError(f"{checkpoint} not found: --save-dir must be a training save dir (recipes/wikitext2/train.sh)")
    return args, checkpoint


def write_tuning(prog: str, args, result: dict, name: str) -> str:
    """Keep a tuner's grid and best setting beside the checkpoint, with the command that chose them."""
    result = {"command": " ".join([prog] + sys.argv[1:]), "subset": args.subset, "streams": args.streams, **result}
    path = os.path.join(args.save_dir, name)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    return path


def main() -> None:
    prog = "python -m fairseq_adasoft.tune_cache"
    args, checkpoint = tuner_arguments(prog, __doc__, STREAMS)
    model, batches = load(args.data, checkpoint, args.subset, args.streams)
    pad = model.decoder.dictionary.pad()
    result = tune(read_split(model, batches(), pad), pad)
    path = write_tuning(prog, args, result, "neural_cache.json")
    print(f"{path}: {args.subset} perplexity without the cache {result['without_cache']}, best {result['best']}")


if __name__ == "__main__":
    main()
