"""Choosing adaptive-softmax cutoffs with the cost model of Grave et al. 2017
("Efficient softmax approximation for GPUs", section 4): a matrix product of
B x d by d x k costs g = max(c + lam * k0B0, c + lam * k B) -- a fixed overhead
until the product is big enough, then linear. Here m = B * d * k
multiply-adds, so g(m) = c + lam * max(m0, m).

For cutoffs s = c_0 < c_1 < ... < c_J < V, with p_i the share of training
tokens in cluster i and d_i = d // div^(i+1), one batch of B tokens costs

    g(B d (s + J)) + sum_i [ g(B p_i d d_i) + g(B p_i d_i (c_{i+1} - c_i)) ]

(head, then each tail's projection and output on its expected rows). Cost
alone would starve the model (a tiny head, 1-dimensional tails), so two
capacity constraints hold: the head covers at least MIN_HEAD_COVERAGE of the
training tokens, and every tail projects to at least MIN_TAIL_DIM features.
For each number of clusters an exact dynamic program over a log-spaced grid of
candidate boundaries then finds the cheapest cutoffs.
"""

import time
from dataclasses import dataclass
from typing import List, Sequence

import torch

GRID_POINTS = 128  # candidate boundaries, log-spaced over the vocabulary
MIN_SHORTLIST = 64  # below this the head is too small to be worth a cluster
CLUSTER_CHOICES = (1, 2, 3, 4)  # tail clusters: 2-5 clusters with the head (Grave et al.)
# Grave et al. 2017, section 4: the head keeps the frequent words, which cover
# most tokens; a head covering less costs perplexity against a full softmax.
MIN_HEAD_COVERAGE = 0.75
MIN_TAIL_DIM = 8  # narrower tail projections lose too much capacity


@dataclass
class CostModel:
    """g(m) = overhead_s + seconds_per_madd * max(flat_madds, m)."""

    overhead_s: float
    seconds_per_madd: float
    flat_madds: float

    def __call__(self, madds: float) -> float:
        return self.overhead_s + self.seconds_per_madd * max(self.flat_madds, madds)


# measure_cost_model() on a 2-core CPU (fp32), the machines this plugin was tuned on.
DEFAULT_COST_MODEL = CostModel(overhead_s=6.8e-6, seconds_per_madd=1.62e-11, flat_madds=16384.0)


def measure_cost_model(device="cpu", d: int = 256, repeats: int = 5) -> CostModel:
    """Fit the cost model to timed matrix products on ``device``."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sizes = [(8, 8), (64, 64), (256, 512), (1024, 2048), (2048, 8192)]  # (B, k) with d fixed
    times = []
    for b, k in sizes:
        x, w = torch.randn(b, d, device=device), torch.randn(d, k, device=device)
        x @ w
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            x @ w
        sync()
        times.append((time.perf_counter() - start) / repeats)
    madds = [b * d * k for b, k in sizes]
    overhead = times[0]
    per_madd = max((times[-1] - overhead) / madds[-1], 1e-15)
    flat = max([m for m, t in zip(madds, times) if t <= 2 * overhead], default=0.0)
    return CostModel(overhead, per_madd, float(flat))


def expected_cost(cutoffs: Sequence[int], counts: Sequence[float], d: int, div_value: float,
                  batch_tokens: int, cost: CostModel) -> float:
    """Modelled seconds of one forward pass of the output layer."""
    total = float(sum(counts))
    bounds = list(cutoffs) + [len(counts)]
    seconds = cost(batch_tokens * d * (bounds[0] + len(cutoffs)))
    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        rows = batch_tokens * sum(counts[lo:hi]) / total
        d_i = max(1, int(d // div_value ** (i + 1)))
        seconds += cost(rows * d * d_i) + cost(rows * d_i * (hi - lo))
    return seconds


def seed_rule_cutoffs(vocab_size: int) -> List[int]:
    """Grave et al.'s [V/15, 3V/15] cutoffs, the seed experiment's."""
    return [round(vocab_size / 15), 3 * round(vocab_size / 15)]


def auto_cutoffs(counts: Sequence[float], d: int, div_value: float, batch_tokens: int,
                 cost: CostModel = DEFAULT_COST_MODEL) -> List[int]:
    """The cheapest cutoffs under ``cost`` for a vocabulary with these
    (frequency-sorted) token counts."""
    V = len(counts)
    if V <= 2 * MIN_SHORTLIST:
        raise ValueError(f"the vocabulary has {V} words: too few for an adaptive softmax, use a full softmax")
    # The seed rule's points are candidates too, so auto never does worse.
    classic = set(seed_rule_cutoffs(V))
    grid = sorted(({int(round(MIN_SHORTLIST * (V / MIN_SHORTLIST) ** (j / GRID_POINTS)))
                    for j in range(GRID_POINTS)} | classic) - {V})
    prefix = [0.0]
    for c in counts:
        prefix.append(prefix[-1] + float(c))
    total = prefix[-1]

    def tail(i, lo, hi):  # cost of cluster i spanning [lo, hi)
        rows = batch_tokens * (prefix[hi] - prefix[lo]) / total
        d_i = max(1, int(d // div_value ** (i + 1)))
        return cost(rows * d * d_i) + cost(rows * d_i * (hi - lo))

    heads = [g for g in range(len(grid)) if prefix[grid[g]] >= MIN_HEAD_COVERAGE * total]
    best_cost, best = float("inf"), None
    for clusters in CLUSTER_CHOICES:
        if int(d // div_value ** clusters) < MIN_TAIL_DIM:
            break
        # layer[g]: cheapest (cost, cutoffs) of the head and tails 0..i-1 when cluster i
        # starts at grid[g]; the head's cost depends on the shortlist, so it is paid up front.
        layer = {g: (cost(batch_tokens * d * (grid[g] + clusters)), [grid[g]]) for g in heads}
        for i in range(clusters - 1):
            layer = {
                g2: min(((c + tail(i, grid[g1], grid[g2]), path + [grid[g2]])
                         for g1, (c, path) in layer.items() if g1 < g2 and path is not None),
                        default=(float("inf"), None))
                for g2 in range(len(grid))
            }
        for g, (c, path) in layer.items():
            if path is None:
                continue
            c += tail(clusters - 1, grid[g], V)
            if c < best_cost:
                best_cost, best = c, path
    if best is None:
        raise ValueError(
            f"no cutoffs satisfy the capacity constraints for d={d}, div_value={div_value}: lower "
            f"--adaptive-softmax-div-value or give --adaptive-softmax-cutoff explicitly"
        )
    return best
