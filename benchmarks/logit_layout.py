"""What the adaptive softmax's logit layout and memory (fairseq_adasoft/modules/logits.py) buy
on this CPU: one training step's output layer, forward + backward, under four layouts (the
cases in rounds, so a drift in the machine's speed reaches all alike): plain (logits as wide
as their classes), aligned (rows padded to LOGIT_ALIGN), unbuffered (aligned, and tails of at
most NARROW_FEATURES features multiplied features-major) and default (unbuffered, and the logits
in memory kept from step to step). "shortlist" targets leave the tails no rows (the head alone);
untied is large_vocab's (b), tied its (a). It runs with the malloc settings of its shell.

    python -m benchmarks.logit_layout [--repeats 5] [--quick]
"""

import functools
import os

import torch
from torch import nn

from benchmarks.harness import MALLOC_ENV, find, main, median, time_ms
from benchmarks.zipf_corpus import target_probs
from fairseq_adasoft.modules import AdaptiveSoftmax, logits, parse_cutoffs
from fairseq_adasoft.presets import ARCHITECTURES, MAIN_JOB

N = MAIN_JOB["tokens_per_sample"] * MAIN_JOB["batch_size"]
D, DIV = ARCHITECTURES[MAIN_JOB["arch"]]["embed_dim"], ARCHITECTURES[MAIN_JOB["arch"]]["adaptive_softmax_div_value"]
A, F = logits.LOGIT_ALIGN, logits.NARROW_FEATURES  # the defaults
LAYOUTS = {"plain": (1, 0, False), "aligned": (A, 0, False), "unbuffered": (A, F, False), "default": (A, F, True)}
MALLOC = "recipes" if all(os.environ.get(k) == v for k, v in MALLOC_ENV.items()) else "glibc"
CALLS = 3  # forward + backward passes per timed sample
CUTOFFS = {v: ",".join(map(str, parse_cutoffs(ARCHITECTURES[arch]["adaptive_softmax_cutoff"], v)))
           for arch, v in (("qrnn_lm_wikitext103", 267_744), ("qrnn_lm_wikitext2", 33_280))}
CASES = [dict(V=V, cutoffs=c, tied=tied, targets=t, layout=layout, malloc=MALLOC) for V, c in CUTOFFS.items()
         for tied in (False, True) for t in ("shortlist", "zipf") for layout in LAYOUTS]


@functools.lru_cache(maxsize=None)
def layer(V: int, cutoffs: str, tied: bool) -> nn.Module:
    torch.manual_seed(0)
    weight = nn.Embedding(V, D).weight if tied else None
    return AdaptiveSoftmax(D, V, [int(c) for c in cutoffs.split(",")], div_value=DIV, tied_weight=weight)


@functools.lru_cache(maxsize=None)
def batch(V: int, cutoffs: str, targets: str):
    g = torch.Generator().manual_seed(0)
    p = target_probs(V)
    if targets == "shortlist":
        p[int(cutoffs.split(",")[0]):] = 0
    return torch.randn(N, D, generator=g, requires_grad=True), torch.multinomial(p / p.sum(), N, True, generator=g)


def use(module: nn.Module, layout: str, own: list) -> None:
    logits.LOGIT_ALIGN, logits.NARROW_FEATURES, buffered = LAYOUTS[layout]
    module.logit_buffers = own if buffered else [None] * len(own)  # None: fresh memory every step


def measure(V, cutoffs, tied, targets, layout, malloc) -> dict:
    module, (x, t) = layer(V, cutoffs, tied), batch(V, cutoffs, targets)
    own = module.logit_buffers

    def step():
        module.zero_grad(set_to_none=True)
        (-module.target_log_prob(x, t).sum()).backward()

    try:
        use(module, layout, own)
        return {"ms": time_ms(step, repeats=CALLS)["median"], "head_width": module.shortlist_size + module.n_clusters}
    finally:
        use(module, "default", own)


def over_default(cases):  # each case's median ms over the default layout's, same layer and targets
    for c in cases:
        default = find(cases, **dict(c["params"], layout="default"))["ms"]
        c["metrics"]["over_default"] = round(median(c["metrics"]["ms"]) / median(default), 3)
    return []


SECTIONS = [dict(title="The adaptive softmax's logit layout and memory, ms", command="python -m benchmarks.logit_layout",
                 files=["logit_layout"], columns={k: k for k in ("V", "cutoffs", "tied", "targets", "layout")} | {
                     "head width": "head_width", "ms": "ms:,.2f", "/ default": "over_default:.2f"},
                 text=f"One training step's output layer and loss (N = {N:,}, d = {D}), forward + backward, median over "
                      "rounds, with glibc's own malloc settings as a plain fairseq-train run has them. `plain`: logits "
                      "as wide as their classes; `aligned`: rows padded to a multiple of 8; `unbuffered`: aligned, and "
                      "tails of at most 8 features multiplied features-major; `default`: unbuffered, and the logits kept "
                      "from step to step. `shortlist` targets time the head alone.")]

if __name__ == "__main__":
    main("logit_layout", CASES, measure, over_default, repeats=5,
         quick_cases=[c for c in CASES if c["V"] == 33_280 and not c["tied"] and c["targets"] == "zipf"])
