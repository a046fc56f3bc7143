"""Tune dynamic evaluation (Krause et al. 2018) of a trained ``qrnn_lm`` on a
validation split, as the authors' ``dynamiceval.py --grid`` does: the
gradient statistics are gathered once, then each (learning rate, decay) of a
small grid scores the split from the trained weights, through the code
``fairseq-eval-lm --dynamic-eval`` runs. ``--tokens`` scores only the
split's first tokens per setting (their ``--gridfast`` reads 30,000; one
stream of 20,000 is a thousand steps).

The statistics are kept in <save-dir>/dynamic_eval_stats.pt
(``--dynamic-eval-stats-file``), so that scoring test with the chosen setting
reads them instead of gathering them again.

Writes <save-dir>/dynamic_eval.json: the grid, the best setting and the statistics file, which
recipes/wikitext2/eval.sh PROTOCOL=dynamic uses and ``python -m
fairseq_adasoft.record protocols`` copies into the results file.

    python -m fairseq_adasoft.tune_dynamic_eval --data data-bin/wikitext-2 --save-dir checkpoints/wikitext2_main
"""

import math
import os
import sys
import time

import torch

from fairseq_adasoft.presets import DYNAMIC_EVAL, EVAL_PROTOCOLS
from fairseq_adasoft.tune_cache import load, tuner_arguments, write_tuning

# Grids around the authors' AWD-QRNN WikiText-2 setting (presets.DYNAMIC_EVAL): on the main
# job's checkpoint, one stream, statistics of the whole training split, 1x was best and 4x
# was worse than no adaptation; small models go wrong sooner.
LRS = tuple(DYNAMIC_EVAL["lr"] * f for f in (0.5, 1.0, 2.0, 4.0))
DECAYS = tuple(DYNAMIC_EVAL["decay"] * f for f in (0.25, 1.0))
TOKENS = 20_000
# One stream, as Krause et al. read every split and the classic protocol reads test: the
# size of a step depends on how many segments it averages, so tune with the test's.
STREAMS = EVAL_PROTOCOLS["classic_test_streams"]
STATISTICS_FILE = "dynamic_eval_stats.pt"  # beside the checkpoint
LARGEST_EXP_ARG = math.log(sys.float_info.max)  # a mean loss beyond it has no float perplexity


def score(model, batches, tokens: int) -> dict:
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
    diverged = not math.isfinite(nll) or nll / count > LARGEST_EXP_ARG  # a learning rate that diverged
    ppl = math.inf if diverged else math.exp(nll / count)
    return {"perplexity": round(ppl, 3), "tokens": count, "seconds": round(time.perf_counter() - start, 1)}


def tune(model, batches_fn, tokens: int, lrs=LRS, decays=DECAYS) -> dict:
    grid = []
    for lr in lrs:
        for decay in decays:
            if model.decoder.dynamic is not None:
                model.decoder.dynamic.restart(lr, decay)
            else:  # the first setting gathers the statistics
                setup = model.decoder.dynamic_setup
                model.decoder.use_dynamic_eval(setup._replace(lr=lr, decay=decay))
            grid.append({"lr": lr, "decay": decay, **score(model, batches_fn(), tokens)})
            print(f"lr {lr:g} decay {decay:g}: perplexity {grid[-1]['perplexity']}", flush=True)
    model.decoder.dynamic.restart(0.0, 0.0)
    static = score(model, batches_fn(), tokens)  # lr 0: the static model, through the same code
    best = min(grid, key=lambda g: g["perplexity"] if math.isfinite(g["perplexity"]) else math.inf)
    return {"tokens": static["tokens"], "without_dynamic_eval": static["perplexity"], "best": best, "grid": grid}


def main() -> None:
    prog = "python -m fairseq_adasoft.tune_dynamic_eval"
    args, checkpoint = tuner_arguments(prog, __doc__, STREAMS, add=lambda parser: parser.add_argument(
        "--tokens", type=int, default=TOKENS, help="score each setting on the split's first N tokens"))
    if args.tokens < 1:
        raise ValueError(f"--tokens must be >= 1, got {args.tokens}")
    statistics = os.path.abspath(os.path.join(args.save_dir, STATISTICS_FILE))
    model, batches_fn = load(args.data, checkpoint, args.subset, args.streams,
                             flags=["--dynamic-eval", "--dynamic-eval-stats-file", statistics])
    result = tune(model, batches_fn, args.tokens)
    result = {"segment": DYNAMIC_EVAL["segment"], "statistics_tokens": DYNAMIC_EVAL["statistics_tokens"],
              "statistics_file": statistics, **result}
    path = write_tuning(prog, args, result, "dynamic_eval.json")
    print(f"{path}: {args.subset} perplexity without dynamic evaluation {result['without_dynamic_eval']}, "
          f"best {result['best']}")


if __name__ == "__main__":
    main()
