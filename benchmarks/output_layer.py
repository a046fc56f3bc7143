"""Output-layer benchmark: forward + backward time and peak memory of one
training step's output layer and loss on CPU, for

  full     nn.Linear(d, V) + F.cross_entropy(reduction="sum")
  ours     fairseq_adasoft.modules.AdaptiveSoftmax, loss -target_log_prob(x, t).sum()
  fairseq  fairseq.modules.AdaptiveSoftmax driven as fairseq's adaptive_loss criterion does
  torch    nn.AdaptiveLogSoftmaxWithLoss, loss .loss * N

at WikiText-2 (V = 33,280, real unigram targets) and WikiText-103 (V = 267,744,
Zipf targets) vocabulary sizes. Every (method, V) runs in a fresh spawned
process; all methods see identical inputs and targets. Also checks once per V
that ours, fairseq's and torch's losses agree with copied weights.

    python -m benchmarks.output_layer            # writes benchmarks/results/output_layer.json
    python -m benchmarks.output_layer --quick    # smoke test: tiny N, few iterations, writes nothing
"""

import argparse
import multiprocessing as mp
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import DATA, write_result
from fairseq_adasoft.modules.cutoffs import seed_rule_cutoffs
from fairseq_adasoft.presets import ARCHITECTURES, MAIN_JOB

MODEL = ARCHITECTURES[MAIN_JOB["arch"]]
T, B = MAIN_JOB["tokens_per_sample"], MAIN_JOB["batch_size"]  # the main job's batch shape
N = T * B  # tokens per update
D = MODEL["embed_dim"]  # what the output layer reads (AWD-QRNN's emsize)
DIV = MODEL["adaptive_softmax_div_value"]  # fairseq's --adaptive-softmax-factor default too
N_SPECIAL, PAD = 4, 1  # fairseq Dictionary: <s>=0 <pad>=1 </s>=2 <unk>=3; adaptive_loss ignores PAD
WT2_DICT = os.path.join(DATA, "dict.txt")  # "word count", by decreasing count
SETTINGS = {
    # WikiText-2: 33,276 types + 4 specials; the seed's cutoffs [V/15, 3V/15]
    "wikitext2": dict(V=33_280, cutoffs=seed_rule_cutoffs(33_280), targets="unigram"),
    # WikiText-103: 267,735 types (Merity et al. 2016) + 4 specials, padded to a multiple of 8 by
    # fairseq-preprocess; cutoffs from fairseq/config/model/transformer_lm/transformer_lm_wiki103.yaml
    "wikitext103": dict(V=267_744, cutoffs=[20_000, 60_000], targets="zipf"),
    # The same vocabulary with a head sized for a CPU (Grave et al. 2017 choose cutoffs per device);
    # the full softmax does not depend on cutoffs, so its wikitext103 timing is reused.
    "wikitext103_cpu_cutoffs": dict(V=267_744, cutoffs=[4_000, 20_000, 60_000], targets="zipf",
                                    full_as="wikitext103"),
}
METHODS = ("full", "ours", "fairseq", "torch")
SEED = 0
REPEATS, SLOW_REPEATS, SLOW_S = 5, 3, 5.0  # timed repeats; SLOW_REPEATS when one iteration takes > SLOW_S
REPEAT_S = 1.0  # target seconds per repeat: iterations per repeat = REPEAT_S / (one warm-up's time)
MAX_ITERS = 20
WARMUP = 2  # warm-up iterations (1 when the first takes > SLOW_S)
# The brief's goals (median-time speed-ups); at V=267,744 it names no cutoffs, so both settings are judged.
GOAL_VS_FULL = {"wikitext2": 5.0, "wikitext103": 15.0, "wikitext103_cpu_cutoffs": 15.0}


def target_probs(setting: dict) -> torch.Tensor:
    """p(id) over the V ids; the N_SPECIAL special ids get zero."""
    V = setting["V"]
    p = torch.zeros(V, dtype=torch.float64)
    if setting["targets"] == "unigram":
        with open(WT2_DICT) as f:
            counts = [int(line.rsplit(" ", 1)[1]) for line in f]
        p[N_SPECIAL : N_SPECIAL + len(counts)] = torch.tensor(counts, dtype=torch.float64)
    else:  # Zipf: p(rank r) ∝ 1/r, rank 1 = id N_SPECIAL
        p[N_SPECIAL:] = 1.0 / torch.arange(1, V - N_SPECIAL + 1, dtype=torch.float64)
    return p / p.sum()


def make_inputs(setting: dict, n: int):
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(n, D, generator=g)  # N x d, the last hidden layer
    target = torch.multinomial(target_probs(setting), n, replacement=True, generator=g)  # N
    return x, target


def build(method: str, setting: dict):
    """The module and its summed loss, loss_fn(x N x d, target N) -> scalar."""
    V, cutoffs = setting["V"], setting["cutoffs"]
    if method == "full":
        m = nn.Linear(D, V)
        return m, lambda x, t: F.cross_entropy(m(x), t, reduction="sum")  # N x V logits
    if method == "ours":
        from fairseq_adasoft.modules import AdaptiveSoftmax
        m = AdaptiveSoftmax(D, V, cutoffs, div_value=DIV)
        return m, lambda x, t: -m.target_log_prob(x, t).sum()
    if method == "fairseq":
        from fairseq.modules import AdaptiveSoftmax as FairseqAdaptiveSoftmax
        m = FairseqAdaptiveSoftmax(V, D, list(cutoffs), dropout=0.0, factor=DIV)
        return m, lambda x, t, ignore=PAD: fairseq_loss(m, x, t, ignore)
    m = nn.AdaptiveLogSoftmaxWithLoss(D, V, cutoffs, div_value=DIV)
    return m, lambda x, t: m(x, t).loss * x.size(0)  # .loss is a mean


def fairseq_loss(m, x, target, ignore_index):
    """fairseq/criterions/adaptive_loss.py, reduce=True."""
    logits, targets = m(x, target)
    loss = x.new(1).zero_()
    for lg, tg in zip(logits, targets):
        if tg is not None:
            loss += F.cross_entropy(lg, tg, ignore_index=ignore_index, reduction="sum")
    return loss.squeeze(0)


def rss_mb(field: str) -> float:
    """/proc/self/status VmRSS (now) or VmHWM (peak since the last write of "5" to clear_refs), MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024  # kB


def run_one(method: str, setting: dict, n: int, quick: bool) -> dict:
    """Runs in a fresh spawned process: time forward + backward, peak RSS growth."""
    torch.manual_seed(SEED)
    module, loss_fn = build(method, setting)
    x, target = make_inputs(setting, n)
    x.requires_grad_()  # the gradient flows on into the network, as in training
    with open("/proc/self/clear_refs", "w") as f:  # Linux: reset VmHWM to the current RSS
        f.write("5")
    rss_before = rss_mb("VmRSS")

    def step() -> float:
        module.zero_grad(set_to_none=True)
        x.grad = None
        loss = loss_fn(x, target)
        loss.backward()
        return loss.item()

    for _ in range(WARMUP):  # the last warm-up's time sizes the timed loop
        t0 = time.perf_counter()
        loss = step()
        if (est := time.perf_counter() - t0) > SLOW_S:
            break
    iters = 1 if quick else max(1, min(MAX_ITERS, round(REPEAT_S / est)))
    repeats = 2 if quick else SLOW_REPEATS if est > SLOW_S else REPEATS
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            loss = step()
        ms.append((time.perf_counter() - t0) * 1e3 / iters)
    return {
        "ms_min": round(min(ms), 2), "ms_median": round(statistics.median(ms), 2), "ms_max": round(max(ms), 2),
        "ms_per_repeat": [round(v, 2) for v in ms], "repeats": repeats, "iters_per_repeat": iters,
        "peak_rss_increase_mb": round(rss_mb("VmHWM") - rss_before, 1), "loss_sum": loss,
        "torch_threads": torch.get_num_threads(),
    }


@torch.no_grad()
def check_agreement(name: str, n: int) -> dict:
    """ours, fairseq's and torch's summed losses with ours' weights copied in."""
    setting = SETTINGS[name]
    torch.manual_seed(SEED)
    (ours, ours_loss), (fs, _), (ref, ref_loss) = (build(m, setting) for m in ("ours", "fairseq", "torch"))
    for other in (fs, ref):  # torch's tail is Linear, Linear; ours and fairseq's Linear, Dropout, Linear
        other.head.weight.copy_(ours.head.weight)
        for mine, theirs in zip(ours.tail, other.tail):
            theirs[0].weight.copy_(mine[0].weight)
            theirs[-1].weight.copy_(mine[-1].weight)
    x, target = make_inputs(setting, n)
    losses = {
        "ours": ours_loss(x, target).item(),
        "torch": ref_loss(x, target).item(),
        "fairseq_no_ignore": fairseq_loss(fs, x, target, -100).item(),
        # the criterion's ignore_index=PAD also drops tail targets whose in-cluster id is PAD
        "fairseq_criterion": fairseq_loss(fs, x, target, PAD).item(),
    }
    in_cluster_pad = sum(int((target == c + PAD).sum()) for c in setting["cutoffs"])
    rel = {k: abs(losses[k] - losses["ours"]) / abs(losses["ours"]) for k in ("torch", "fairseq_no_ignore")}
    assert all(v < 1e-3 for v in rel.values()), (name, losses)
    return {"losses": losses, "rel_diff_vs_ours": rel, "tokens_dropped_by_fairseq_ignore_index": in_cluster_pad}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny N, 1 iteration x 2 repeats, no results file")
    args = parser.parse_args()
    n = 4 * 10 if args.quick else N
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    ctx = mp.get_context("spawn")
    results, speedups, checks = {}, {}, {}
    for name, setting in SETTINGS.items():
        checks[name] = check_agreement(name, n)
        results[name] = {}
        for method in METHODS:
            if method == "full" and "full_as" in setting:
                results[name][method] = results[setting["full_as"]][method]
                continue
            with ctx.Pool(1) as pool:  # a fresh process per (method, V): clean peak RSS
                r = pool.apply(run_one, (method, setting, n, args.quick))
            assert torch.isfinite(torch.tensor(r["loss_sum"])), (name, method, r)
            results[name][method] = r
            print(f"{name:12s} V={setting['V']:7d} {method:8s} median {r['ms_median']:10.2f} ms  "
                  f"peak RSS +{r['peak_rss_increase_mb']:.0f} MB  ({r['repeats']}x{r['iters_per_repeat']})", flush=True)
        ours = results[name]["ours"]["ms_median"]
        speedups[name] = {f"ours_vs_{m}": round(results[name][m]["ms_median"] / ours, 2) for m in METHODS if m != "ours"}
    load_after = os.getloadavg()
    goals = {f"ours >= {x}x faster than full at V={SETTINGS[k]['V']:,}, cutoffs {SETTINGS[k]['cutoffs']}":
             speedups[k]["ours_vs_full"] >= x
             for k, x in GOAL_VS_FULL.items()}
    goals["ours never slower than fairseq's or torch's (median)"] = all(
        s[k] >= 1.0 for s in speedups.values() for k in ("ours_vs_fairseq", "ours_vs_torch"))
    print("speed-ups:", speedups, "\ngoals:", goals, f"\nload {load_before} -> {load_after}")
    if args.quick:
        return
    payload = {
        "what": "CPU forward+backward of output layer + summed loss, ms per iteration (min/median/max over repeats)",
        "settings": {
            "N": N, "T": T, "B": B, "d": D, "div_value": DIV, "dtype": "float32", "seed": SEED,
            "vocabularies": {k: {**v, "target_distribution": {"unigram": "WikiText-2 counts from data-bin/wikitext-2/dict.txt",
                                                               "zipf": "p(rank r) ∝ 1/r over ids 4..V-1"}[v["targets"]]}
                             for k, v in SETTINGS.items()},
            "timing": f"{WARMUP} warm-up iterations (1 if > {SLOW_S}s), then {REPEATS} repeats ({SLOW_REPEATS} if one "
                      f"iteration > {SLOW_S}s) of round({REPEAT_S}s / iteration time) iterations (1..{MAX_ITERS}); "
                      "grads set to None before each iteration; input requires grad",
        },
        "memory_method": "each (method, V) runs in a fresh multiprocessing 'spawn' child; after building module and "
                         "inputs its peak RSS is reset (/proc/self/clear_refs = 5); peak_rss_increase_mb = VmHWM after "
                         "warm-up + timed loop minus VmRSS at the reset (includes parameter .grad buffers). ru_maxrss "
                         "was not used: a spawned child inherits the forking parent's RSS as its high-water mark",
        "results": results,
        "speedups_median": speedups,
        "agreement_check": checks,
        "goals": [{"goal": g, "met": bool(m)} for g, m in goals.items()],
        "load_average_before": load_before, "load_average_after": load_after,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    print("wrote", write_result("output_layer", payload, command="python -m benchmarks.output_layer"))


if __name__ == "__main__":
    main()
