"""Adaptive-softmax cutoffs, in one place: reading them from the command line
(word ids or fractions of the vocabulary), their checks, the width of each
band (shared by the adaptive softmax's tails and adaptive input's
embeddings), and choosing them.

Choosing them uses the cost model of Grave et al. 2017
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


def validate_cutoffs(cutoffs: Sequence[int], vocab_size: int, flag: str = "cutoffs") -> List[int]:
    """Check that cutoffs are positive, strictly increasing ids below the vocabulary size."""
    cutoffs = [int(c) for c in cutoffs]
    if len(cutoffs) == 0:
        raise ValueError(f"{flag} is empty: give at least one cutoff, e.g. {vocab_size // 15}")
    if cutoffs[0] <= 0:
        raise ValueError(f"{flag} must be positive word ids, got {cutoffs}")
    if any(b <= a for a, b in zip(cutoffs, cutoffs[1:])):
        raise ValueError(
            f"{flag} must be strictly increasing with no duplicates, got {cutoffs}; "
            f"sort them, e.g. {sorted(set(cutoffs))}"
        )
    if cutoffs[-1] >= vocab_size:
        raise ValueError(
            f"{flag} must be below the vocabulary size {vocab_size}, got {cutoffs}; "
            f"drop the cutoffs >= {vocab_size} (the last cluster always ends at the vocabulary size)"
        )
    return cutoffs


def band_dim(dim: int, factor: float, band: int) -> int:
    """Features of band ``band`` (0: the shortlist, i + 1: cluster i) when each
    band has ``factor`` times fewer than the one before: the adaptive softmax's
    tail projections and adaptive input's embeddings, so that they can be tied."""
    return max(1, int(dim // (factor**band)))


def is_fraction_spec(spec: str) -> bool:
    """Whether cutoffs are given as fractions of the vocabulary (every value in (0, 1))."""
    try:
        values = [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        return False
    return bool(values) and all(0.0 < v < 1.0 for v in values)


def parse_cutoffs(spec: str, vocab_size: int, flag: str = "--adaptive-softmax-cutoff") -> List[int]:
    """Read cutoffs given as word ids (``2000,6000``) or as fractions of the
    vocabulary (``0.1,0.3``: every value below 1), and validate them."""
    try:
        values = [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"{flag}={spec!r} is not a comma-separated list of word ids or of fractions of "
            f"the vocabulary, e.g. '2000,6000' or '0.1,0.3'"
        ) from None
    if is_fraction_spec(spec):
        return validate_cutoffs([round(v * vocab_size) for v in values], vocab_size, flag)
    odd = [v for v in values if v != int(v) and not 0.0 < v < 1.0]
    if odd:
        raise ValueError(
            f"{flag}={spec!r}: {odd[0]:g} is neither a word id (an integer) nor a fraction of the "
            f"vocabulary (between 0 and 1), e.g. '2000,6000' or '0.1,0.3'"
        )
    if any(v != int(v) for v in values):
        raise ValueError(
            f"{flag}={spec!r} mixes fractions and word ids; give all values as ids "
            f"(integers) or all as fractions of the vocabulary (below 1)"
        )
    return validate_cutoffs(values, vocab_size, flag)


# Choosing cutoffs (``auto``).

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
