"""The continuous cache's p_cache(target) for a whole grid of (size, theta) in one
pass over a split, for the tuner (``python -m fairseq_adasoft.tune cache``).

``NeuralCache.attend`` per setting recomputes h_t . h_i for every (size, theta),
though the dot products depend on neither. Here each batch computes them once,
against the memory of the largest size (which holds every smaller window), and
lays every position's keys out by lag (nearest last), so that the window of
``size`` is the last ``size`` columns for every position alike. The windows of
the sorted sizes are nested: the columns split into rings (the nearest
``sizes[0]`` keys, then the next ``sizes[1] - sizes[0]``, ...), each ring's
softmax terms are taken once per theta against the ring's own maximum, as
``attend``'s softmax does, and a window's sums are its rings' sums rescaled to
the window's maximum. The edge cases are ``attend``'s: a position with no
visible key (a stream's first word) remembers nothing, keys whose word is the
pad are masked, and the memory carries over between batches.
"""

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple

import torch
from torch import Tensor

NEVER_A_WORD = -1  # the word of the padding left of a stream's first key: no target equals it
GROWTH = 2  # a key buffer holds twice what it must: one copy per (largest size) / T batches


def lag_layout(scores: Tensor, values: Tensor, before: int, width: int) -> Tuple[Tensor, Tensor]:
    """B x T x K scores and B x K words -> B x T x width each, column c of row t
    being key ``before + t - width + c`` (-inf score, NEVER_A_WORD where that is < 0)."""
    B, T, K = scores.shape
    missing = max(width - before, 0)  # keys left of the first: the streams' start, before the memory fills
    if missing:
        scores = torch.cat([scores.new_full((B, T, missing), -math.inf), scores], dim=2)
        values = torch.cat([values.new_full((B, missing), NEVER_A_WORD), values], dim=1)
    padded, words, row, before = scores.contiguous(), values.contiguous(), K + missing, before + missing - width
    # Row t starts `t` further right than row t-1: a stride of row + 1 walks the diagonal.
    lagged = padded.as_strided((B, T, width), (T * row, row + 1, 1), padded.storage_offset() + before)
    lagged_words = words.as_strided((B, T, width), (row, 1, 1), words.storage_offset() + before)
    return lagged, lagged_words


@dataclass
class KeyBuffer:
    """Every stream's keys h_i (and words x_{i+1}) from global index ``base`` on,
    with room to append: concatenating the largest window's keys each batch
    would copy more than the batch computes (B x 4,000 x C for 70 positions)."""

    keys: Tensor  # B x capacity x C; [:, :end] filled, oldest first
    values: Tensor  # B x capacity
    base: int  # the global index of keys[:, 0]
    end: int
    read: int  # positions read so far: this batch's first reads keys [read - size, read)
    pending: Tensor  # B x C: h of the last position read, whose word opens the next batch

    def append(self, keys: Tensor, values: Tensor, oldest: int) -> None:
        """Add B x n keys and their words, first dropping those before global index ``oldest`` if full."""
        n = keys.size(1)
        if self.end + n > self.keys.size(1):  # full: a fresh buffer, copied once every many batches
            start = max(0, oldest - self.base)
            kept = self.end - start
            grown = KeyBuffer.empty(keys, GROWTH * (kept + n), self.base + start, self.read, self.pending)
            grown.keys[:, :kept], grown.values[:, :kept] = self.keys[:, start:self.end], self.values[:, start:self.end]
            grown.end = kept
            self.__dict__.update(grown.__dict__)
        self.keys[:, self.end:self.end + n], self.values[:, self.end:self.end + n] = keys, values
        self.end += n

    @staticmethod
    def empty(like: Tensor, capacity: int, base: int, read: int, pending: Tensor) -> "KeyBuffer":
        B, _, C = like.shape
        values = torch.empty(B, capacity, dtype=torch.long, device=like.device)
        return KeyBuffer(like.new_empty(B, capacity, C), values, base, 0, read, pending)


def batch_grid(hidden: Tensor, inputs: Tensor, target: Tensor, memory: Optional[KeyBuffer],
               sizes: Sequence[int], thetas: Sequence[float], pad: Optional[int]) -> Tuple[Tensor, Tensor, KeyBuffer]:
    """One batch of B streams: p_cache(target) R x H x B x T and remembered R x B x T
    for the R sorted distinct ``sizes`` and the H ``thetas``, and the memory to pass on."""
    h = hidden.float()  # fp32, as attend
    largest, T = sizes[-1], h.size(1)
    if memory is None:  # attend's first batch: h_0 .. h_{T-2}, each with the word after it
        memory = KeyBuffer.empty(h, GROWTH * (largest + T), 0, 0, h[:, -1])
        memory.append(h[:, :-1], inputs[:, 1:], 0)
    else:  # the pending h_{read-1} reads this batch's first word
        memory.append(torch.cat([memory.pending.unsqueeze(1), h[:, :-1]], dim=1), inputs, memory.read - largest)
    first = max(0, memory.read - largest - memory.base)  # the oldest key any position here can see
    keys, values = memory.keys[:, first:memory.end], memory.values[:, first:memory.end]
    before = memory.read - memory.base - first  # keys preceding this batch's first position
    memory.read, memory.pending = memory.read + T, h[:, -1]
    scores = torch.bmm(h, keys.transpose(1, 2))  # B x T x K, for every setting
    if pad is not None and values.eq(pad).any():  # the pads close the last stream only: skip the pass elsewhere
        scores = scores.masked_fill(values.eq(pad).unsqueeze(1), -math.inf)
    lagged, words = lag_layout(scores, values, before, largest)
    matches = words.eq(target.unsqueeze(2))  # B x T x largest

    # Rings: columns [largest - sizes[k], largest - sizes[k-1]), nearest first.
    edges = [largest - s for s in (0, *sizes)]
    rings = [(lo, hi) for hi, lo in zip(edges, edges[1:])]
    ring_max = torch.stack([lagged[..., lo:hi].amax(-1) for lo, hi in rings])  # R x B x T, -inf: nothing visible
    remembered = ring_max.gt(-math.inf).cummax(0).values  # window k sees something if one of its rings does

    # The matching keys are few (a word's own past): their terms one by one.
    b, t, col = matches.nonzero(as_tuple=True)
    ring_of = torch.bucketize(col, torch.tensor([lo for lo, _ in rings[::-1]][1:]), right=True)
    ring_of = len(rings) - 1 - ring_of  # bucket counts from the farthest ring
    matched = lagged[b, t, col]

    R, B, T = ring_max.shape
    total = torch.zeros(len(thetas), R, B, T, dtype=torch.float64)
    at_target = torch.zeros(len(thetas), R, B, T, dtype=torch.float64)
    shifts = torch.empty(len(thetas), R, B, T)
    for i, theta in enumerate(thetas):
        shift = theta * ring_max  # = the max of theta * score in the ring: attend's softmax shift
        shifts[i] = shift
        safe = shift.masked_fill(shift.eq(-math.inf), 0.0)  # an empty ring's terms are exp(-inf) = 0
        for k, (lo, hi) in enumerate(rings):
            terms = (theta * lagged[..., lo:hi]).sub_(safe[k].unsqueeze(2)).exp_()
            total[i, k] = terms.sum(-1)
        terms = (theta * matched - safe[ring_of, b, t]).exp()
        at_target[i].index_put_((ring_of, b, t), terms.double(), accumulate=True)

    # Window k: its rings' sums, each rescaled from its own maximum to the window's.
    window_max = shifts.double().cummax(1).values  # H x R x B x T
    probs = torch.empty(R, len(thetas), B, T)
    for k in range(R):
        scale = (shifts[:, :k + 1].double() - window_max[:, k:k + 1]).exp().nan_to_num(0.0)  # -inf - -inf: 0
        z = (total[:, :k + 1] * scale).sum(1)
        a = (at_target[:, :k + 1] * scale).sum(1)
        probs[k] = torch.where(z > 0, a / z, torch.zeros_like(z)).float()

    return probs, remembered, memory


def grid_target_probs(batches: Iterable[Tuple[Tensor, Tensor, Tensor]], sizes: Sequence[int],
                      thetas: Sequence[float], pad: Optional[int]) -> Tuple[Tensor, Tensor]:
    """p_cache(target) of every (size, theta), len(sizes) x len(thetas) x N, and
    whether anything was remembered, len(sizes) x N, at the N real targets of
    contiguous batches (features B x T x C, words read B x T, targets B x T)."""
    if not sizes or min(sizes) < 1:
        raise ValueError(f"the cache grid's sizes must be >= 1 (--neural-cache-size), got {tuple(sizes)}")
    if not thetas or not min(thetas) > 0:  # theta * max(score) is the softmax's shift only for theta > 0
        raise ValueError(f"the cache grid's thetas must be > 0 (--neural-cache-theta), got {tuple(thetas)}")
    distinct = sorted(set(sizes))
    order = [distinct.index(s) for s in sizes]  # back to the order asked
    memory, probs, remembered = None, [], []
    for hidden, inputs, target in batches:
        p, seen, memory = batch_grid(hidden, inputs, target, memory, distinct, thetas, pad)
        real = target.ne(pad) if pad is not None else torch.ones_like(target, dtype=torch.bool)
        probs.append(p[:, :, real])
        remembered.append(seen[:, real])
    return torch.cat(probs, dim=2)[order], torch.cat(remembered, dim=1)[order]
