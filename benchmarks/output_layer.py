"""One training step's output layer and summed loss on CPU, forward + backward time and peak
memory, at the main job's tokens per update N and width d: full (nn.Linear + cross_entropy),
ours (fairseq_adasoft's AdaptiveSoftmax), fairseq's AdaptiveSoftmax driven as its adaptive_loss
does, and torch's AdaptiveLogSoftmaxWithLoss, on identical inputs, each case in a fresh spawned
process (its own peak RSS). WikiText-2's V with its unigram targets, WikiText-103's with Zipf
targets. --scaling: full against ours over vocabulary sizes, with the seed's cutoffs rule
[V/15, 3V/15] and ``--adaptive-softmax-cutoff auto`` (vocab_scaling.json).

    python -m benchmarks.output_layer [--scaling] [--quick]
"""

import multiprocessing as mp
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness import DATA, arguments, find, goal, main, median, need, time_ms
from benchmarks.zipf_corpus import N_SPECIAL, target_probs
from fairseq_adasoft.modules.cutoffs import DEFAULT_COST_MODEL, auto_cutoffs, seed_rule_cutoffs
from fairseq_adasoft.presets import ARCHITECTURES, MAIN_JOB

MODEL = ARCHITECTURES[MAIN_JOB["arch"]]
N = MAIN_JOB["tokens_per_sample"] * MAIN_JOB["batch_size"]  # tokens per update
D, DIV = MODEL["embed_dim"], MODEL["adaptive_softmax_div_value"]  # what the output layer reads; fairseq's factor too
PAD = 1  # fairseq's <pad>, which adaptive_loss ignores
METHODS = ("full", "ours", "fairseq", "torch")
SLOW_S = 5.0  # a step slower than this gets 3 timed repeats, not 5
cut = lambda ids: ",".join(map(str, ids))  # noqa: E731
# WikiText-2 with the seed's cutoffs; WikiText-103's 267,735 types + 4 specials, padded to a multiple of 8, with
# fairseq's transformer_lm_wiki103 cutoffs, and with a head sized for a CPU (Grave et al. 2017 choose per device).
SETTINGS = [(33_280, "unigram", cut(seed_rule_cutoffs(33_280)), 5.0), (267_744, "zipf", "20000,60000", 15.0),
            (267_744, "zipf", "4000,20000,60000", 15.0)]  # (V, targets, cutoffs, goal: ours at least this x full)
CASES = [dict(method=m, V=V, targets=t, cutoffs=c) for i, (V, t, c, _) in enumerate(SETTINGS) for m in METHODS
         if m != "full" or V not in [s[0] for s in SETTINGS[:i]]]  # full ignores cutoffs: once per V
VOCABULARIES = (10_000, 33_280, 100_000, 267_744)  # --scaling


def auto(V: int) -> str:
    return cut(auto_cutoffs((target_probs(V) * 1e9).tolist(), D, DIV, N, DEFAULT_COST_MODEL))


def scaling_cases() -> list:
    return [c for V in VOCABULARIES for c in (dict(method="full", V=V, targets="zipf", cutoffs="", rule=""),
            dict(method="ours", V=V, targets="zipf", cutoffs=cut(seed_rule_cutoffs(V)), rule="seed_rule"),
            dict(method="ours", V=V, targets="zipf", cutoffs=auto(V), rule="auto"))]


def inputs(V: int, targets: str, n: int):
    g = torch.Generator().manual_seed(0)
    if targets == "unigram":  # WikiText-2's counts, ids in dictionary order
        with open(os.path.join(need(DATA), "dict.txt")) as f:
            counts = [int(line.rsplit(" ", 1)[1]) for line in f]
        p = torch.zeros(V, dtype=torch.float64)
        p[N_SPECIAL:N_SPECIAL + len(counts)] = torch.tensor(counts, dtype=torch.float64)
    else:
        p = target_probs(V)
    return torch.randn(n, D, generator=g, requires_grad=True), torch.multinomial(p, n, replacement=True, generator=g)


def fairseq_loss(m, x, target):  # fairseq/criterions/adaptive_loss.py, reduce=True
    logits, targets = m(x, target)
    return sum(F.cross_entropy(lg, tg, ignore_index=PAD, reduction="sum") for lg, tg in zip(logits, targets)
               if tg is not None)


def build(method: str, V: int, cutoffs: list):  # the module, and its summed loss of (x N x d, target N)
    torch.manual_seed(0)
    if method == "full":
        m = nn.Linear(D, V)
        return m, lambda x, t: F.cross_entropy(m(x), t, reduction="sum")  # N x V logits
    if method == "ours":
        from fairseq_adasoft.modules import AdaptiveSoftmax
        m = AdaptiveSoftmax(D, V, cutoffs, div_value=DIV)
        return m, lambda x, t: -m.target_log_prob(x, t).sum()
    if method == "fairseq":
        from fairseq.modules import AdaptiveSoftmax as FairseqAdaptiveSoftmax
        m = FairseqAdaptiveSoftmax(V, D, cutoffs, dropout=0.0, factor=DIV)
        return m, lambda x, t: fairseq_loss(m, x, t)
    m = nn.AdaptiveLogSoftmaxWithLoss(D, V, cutoffs, div_value=DIV)
    return m, lambda x, t: m(x, t).loss * x.size(0)  # .loss is a mean


def rss_mb(field: str) -> float:  # VmRSS (now) or VmHWM (peak since "5" was written to clear_refs), MB
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024  # kB


def measure_here(method: str, V: int, targets: str, cutoffs: str, n: int) -> dict:
    module, loss_fn = build(method, V, [int(c) for c in cutoffs.split(",") if c])
    x, target = inputs(V, targets, n)
    with open("/proc/self/clear_refs", "w") as f:  # Linux: peak RSS from here (parameter .grad buffers count)
        f.write("5")
    rss_before = rss_mb("VmRSS")

    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        loss_fn(x, target).backward()  # the gradient flows on into the network, as in training

    start = time.perf_counter()
    step()  # warm-up; its time sizes the timed repeats to about a second each
    est = time.perf_counter() - start
    ms = time_ms(step, repeats=3 if est > SLOW_S else 5, warmup=0, calls=max(1, min(20, round(1.0 / est))))
    return {"ms": ms, "peak_rss_mb": round(rss_mb("VmHWM") - rss_before, 1)}


def measure(method: str, V: int, targets: str, cutoffs: str, rule: str = "", n: int = N) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:  # a fresh process per case: its own peak RSS
        return pool.apply(measure_here, (method, V, targets, cutoffs, n))


def speedups(cases):
    """Adds each adaptive case's full_over_this: the full softmax's median ms at its V over its own."""
    for c in cases:
        if c["params"]["method"] != "full":
            full = find(cases, method="full", V=c["params"]["V"])["ms"]
            c["metrics"]["full_over_this"] = round(median(full) / median(c["metrics"]["ms"]), 2)
    return []


def goals(cases):
    speedups(cases)
    m = {(c["params"]["method"], c["params"]["cutoffs"]): c["metrics"] for c in cases}
    vs = [median(m[o, c]["ms"]) / median(m["ours", c]["ms"]) for o, c in m if o in ("fairseq", "torch")]
    return [goal(f"ours >= {x}x faster than full at V={V:,}, cutoffs {c}", m.get(("ours", c), {}).get("full_over_this"), x)
            for V, _, c, x in SETTINGS] + [goal("ours never slower than fairseq's or torch's (median)", min(vs), 1.0)]


COLUMNS = {"V": "V:,", "method": "method", "cutoffs": "cutoffs", "ms": "ms:,.0f", "peak RSS, MB": "peak_rss_mb:,.0f",
           "full / this": "full_over_this:.2f"}
SECTIONS = [dict(title="Output layer + loss, forward+backward, ms", command="python -m benchmarks.output_layer",
                 files=["output_layer"], columns=COLUMNS | {"targets": "targets"},
                 text=f"N = {N:,}, d = {D}; ours against the full softmax, fairseq's AdaptiveSoftmax and torch's."),
            dict(title="Cost against vocabulary size, Zipf targets, ms", command="python -m benchmarks.output_layer --scaling",
                 files=["vocab_scaling"], columns=COLUMNS | {"cutoffs rule": "rule"},
                 text="The seed's cutoffs rule [V/15, 3V/15] against `--adaptive-softmax-cutoff auto`.")]

if __name__ == "__main__":
    p = arguments()
    p.add_argument("--scaling", action="store_true", help="full against ours over vocabulary sizes: vocab_scaling.json")
    args = p.parse_args()
    cases = scaling_cases() if args.scaling else CASES
    main("vocab_scaling" if args.scaling else "output_layer", cases, measure, speedups if args.scaling else goals,
         args=args, quick_cases=[dict(c, n=40, targets="zipf") for c in cases[:3 if args.scaling else 4]])  # no dataset needed
