"""What the adaptive softmax's logit layout and memory (fairseq_adasoft/modules/logits.py)
buy on this CPU: one training step's output layer, forward + backward of
``-target_log_prob(x, t).sum()``, under four layouts alternated in one
process (so a drift in the machine's speed reaches all alike):

  plain       logits exactly as wide as their classes, weights as stored
  aligned     rows padded with -inf columns to a multiple of LOGIT_ALIGN
  unbuffered  aligned, and the weights of tails with at most NARROW_FEATURES
              features multiplied features-major
  default     unbuffered, and the logits in memory kept from one step to the
              next (LogitBuffer: what the layer does)

The first three allocate each cluster's logits afresh every step. The head's
width differs between them (shortlist + one logit per cluster:
2,803 at WikiText-103's cutoffs, 2,222 at WikiText-2's; the presets' tails are
multiples of 8 wide); only WikiText-103's last tail (6 features) is narrow.
"shortlist" targets (every target in the shortlist, so the tails run on no
rows) isolate the head, "zipf" targets show the whole layer. Untied (variant
(b) of benchmarks.large_vocab) and tied to a plain embedding (variant (a));
N is the main job's tokens per update. It runs with the recipes' malloc
settings, or with glibc's own (``--glibc-malloc``: a plain fairseq-train run's).

    python -m benchmarks.logit_layout          # writes benchmarks/results/logit_layout.json
    python -m benchmarks.logit_layout --glibc-malloc   # writes logit_layout_glibc_malloc.json
    python -m benchmarks.logit_layout --quick  # one round, writes nothing
"""

import argparse
import os
import sys

import torch
from torch import nn

from benchmarks.common import MALLOC_ENV, spread, time_ms, write_result
from benchmarks.output_layer import D, DIV, N, target_probs
from fairseq_adasoft.modules import AdaptiveSoftmax, logits, parse_cutoffs
from fairseq_adasoft.presets import ARCHITECTURES

# The presets' cutoffs resolved to word ids (qrnn_lm_wikitext2's are fractions of V).
SETTINGS = {name: dict(V=v, cutoffs=parse_cutoffs(ARCHITECTURES[arch]["adaptive_softmax_cutoff"], v))
            for name, arch, v in (("wikitext103", "qrnn_lm_wikitext103", 267_744),
                                  ("wikitext2", "qrnn_lm_wikitext2", 33_280))}
ALIGNED, FEATURES_MAJOR = dict(LOGIT_ALIGN=logits.LOGIT_ALIGN), dict(NARROW_FEATURES=logits.NARROW_FEATURES)
LAYOUTS = {"plain": dict(LOGIT_ALIGN=1, NARROW_FEATURES=0, buffered=False),
           "aligned": dict(**ALIGNED, NARROW_FEATURES=0, buffered=False),
           "unbuffered": dict(**ALIGNED, **FEATURES_MAJOR, buffered=False),
           "default": dict(**ALIGNED, **FEATURES_MAJOR, buffered=True)}
ROUNDS, QUICK_ROUNDS = 5, 1  # alternations of the layouts
CALLS = 3  # forward + backward passes per timed repeat
SEED = 0


def layer(setting: dict, tied: bool) -> nn.Module:
    torch.manual_seed(SEED)
    embedding = nn.Embedding(setting["V"], D) if tied else None
    return AdaptiveSoftmax(D, setting["V"], setting["cutoffs"], div_value=DIV,
                           tied_weight=embedding.weight if embedding is not None else None)


def targets(setting: dict, shortlist_only: bool, g: torch.Generator) -> torch.Tensor:
    p = target_probs(dict(V=setting["V"], targets="zipf"))
    if shortlist_only:
        p[setting["cutoffs"][0]:] = 0
    return torch.multinomial(p / p.sum(), N, replacement=True, generator=g)


def step_ms(module: nn.Module, x: torch.Tensor, t: torch.Tensor, rounds: int) -> dict:
    """Median ms of one forward + backward under each layout, the layouts alternated ``rounds`` times."""
    samples = {name: [] for name in LAYOUTS}

    def step():
        module.zero_grad(set_to_none=True)
        (-module.target_log_prob(x, t).sum()).backward()

    own = module.logit_buffers

    def use(layout):
        for attr, value in layout.items():
            if attr != "buffered":
                setattr(logits, attr, value)
        module.logit_buffers = own if layout["buffered"] else [None] * len(own)  # None: fresh memory

    try:
        for _ in range(rounds):
            for name, layout in LAYOUTS.items():
                use(layout)
                samples[name].append(time_ms(step, repeats=CALLS)["median"])
    finally:
        use(LAYOUTS["default"])
    return {name: spread(s) for name, s in samples.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round; writes nothing")
    parser.add_argument("--glibc-malloc", action="store_true",
                        help="glibc's own malloc settings (a plain fairseq-train run's), not the recipes'")
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    env.update({} if args.glibc_malloc else MALLOC_ENV)
    if env != dict(os.environ):  # glibc reads them only at start-up
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks.logit_layout", *sys.argv[1:]], env)
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(N, D, generator=g, requires_grad=True)
    rows = []
    for name, setting in SETTINGS.items():
        for tied in (False, True):
            module = layer(setting, tied)
            for shortlist_only in (True, False):
                ms = step_ms(module, x, targets(setting, shortlist_only, g), rounds)
                median = {layout: m["median"] for layout, m in ms.items()}
                rows.append({"setting": name, "V": setting["V"], "cutoffs": ",".join(map(str, setting["cutoffs"])),
                             "tied": tied, "head_width": module.shortlist_size + module.n_clusters,
                             "targets": "shortlist" if shortlist_only else "zipf", "ms": ms,
                             "plain_over_default": round(median["plain"] / median["default"], 3)})
                print(f"{name:11s} tied={tied!s:5s} {rows[-1]['targets']:9s} "
                      + "  ".join(f"{k} {v:7.1f} ms" for k, v in median.items())
                      + f"  x{rows[-1]['plain_over_default']}", flush=True)
    payload = {"N": N, "d": D, "div_value": DIV, "rounds": rounds, "calls_per_repeat": CALLS,
               "layouts": LAYOUTS, "rows": rows}
    if not args.quick:
        name, flag = ("logit_layout_glibc_malloc", " --glibc-malloc") if args.glibc_malloc else ("logit_layout", "")
        print(write_result(name, payload, "python -m benchmarks.logit_layout" + flag))
    return payload


if __name__ == "__main__":
    main()
