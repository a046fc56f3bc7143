"""How the output layer's cost grows with the vocabulary: full softmax
against the adaptive softmax, forward + backward + summed loss on this CPU,
at the main job's tokens per update N and width d (``benchmarks.output_layer``),
Zipf-distributed targets (p(rank r) ∝ 1/r).

The adaptive softmax runs with two cutoff choices per V: the seed's rule
[V/15, 3V/15], and ``--adaptive-softmax-cutoff auto`` (the cutoffs that the
task would choose from these Zipf counts with the default CPU cost model).
Timing and memory method as ``benchmarks.output_layer`` (fresh process each).

    python -m benchmarks.vocab_scaling           # writes benchmarks/results/vocab_scaling.json
    python -m benchmarks.vocab_scaling --quick   # smoke test, writes nothing
"""

import argparse
import multiprocessing as mp
import time

import torch

from benchmarks.common import write_result
from benchmarks.output_layer import D, DIV, N, N_SPECIAL, run_one, target_probs
from fairseq_adasoft.modules.cutoff_search import DEFAULT_COST_MODEL, auto_cutoffs, seed_rule_cutoffs

# The sizes: 10k, WikiText-2 (33,280 with specials), 100k, WikiText-103 (267,744).
VOCABULARIES = (10_000, 33_280, 100_000, 267_744)


def cutoff_choices(V: int) -> dict:
    seed_rule = seed_rule_cutoffs(V)
    counts = (target_probs({"V": V, "targets": "zipf"}) * 1e9).tolist()  # expected counts, ids in frequency order
    return {"seed_rule": seed_rule, "auto": auto_cutoffs(counts, D, DIV, N, DEFAULT_COST_MODEL)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny N, 1 iteration x 2 repeats, no results file")
    args = parser.parse_args()
    n = 4 * 10 if args.quick else N
    ctx = mp.get_context("spawn")
    start = time.perf_counter()
    rows = []
    for V in VOCABULARIES:
        row = {"V": V, "cutoffs": cutoff_choices(V)}
        runs = [("full", None)] + [("ours", name) for name in row["cutoffs"]]
        for method, cutoff_name in runs:
            setting = {"V": V, "targets": "zipf", "cutoffs": row["cutoffs"].get(cutoff_name, [])}
            with ctx.Pool(1) as pool:  # a fresh process per run: clean peak RSS
                r = pool.apply(run_one, (method, setting, n, args.quick))
            assert torch.isfinite(torch.tensor(r["loss_sum"])), (V, method, r)
            row["full" if method == "full" else f"adaptive_{cutoff_name}"] = r
            print(f"V={V:7d} {method:5s} {cutoff_name or '':9s} median {r['ms_median']:9.2f} ms  "
                  f"peak RSS +{r['peak_rss_increase_mb']:.0f} MB", flush=True)
        row["speedup_vs_full"] = {k: round(row["full"]["ms_median"] / row[f"adaptive_{k}"]["ms_median"], 2)
                                  for k in row["cutoffs"]}
        rows.append(row)
    if args.quick:
        return
    payload = {
        "what": "CPU forward+backward of output layer + summed loss, ms per iteration (min/median/max over "
                "repeats) and peak RSS growth, per vocabulary size",
        "settings": {"N": N, "d": D, "div_value": DIV, "dtype": "float32", "special_ids": N_SPECIAL,
                     "targets": "Zipf over ids 4..V-1", "auto_cost_model": str(DEFAULT_COST_MODEL)},
        "rows": rows,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print("wrote", write_result("vocab_scaling", payload, command="python -m benchmarks.vocab_scaling"))


if __name__ == "__main__":
    main()
