"""Continuous cache (Grave, Joulin & Usunier 2017, "Improving Neural Language
Models with a Continuous Cache"): an evaluation-time memory of the last
``size`` hidden states h_i, each stored with the word x_{i+1} that followed it.
Position t reads it as

    p_cache(w) = sum_i [x_{i+1} = w] softmax_i(theta * h_t . h_i)
    p(w) = (1 - lambda) p_model(w) + lambda p_cache(w)

No parameter is trained: ``size``, ``theta`` and ``lambda`` are tuned on the
validation split. The memory carries over from batch to batch of contiguous
streams, as the QRNN's state does under stateful BPTT.
"""

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from .lazy_log_probs import LazyLogProbs
from .score_tally import ScoreTally


@dataclass
class CacheMemory:
    """The remembered (h_i, x_{i+1}) pairs of B streams, oldest first."""

    keys: Tensor  # B x N x C: hidden states whose next word is known
    values: Tensor  # B x N: those next words
    pending: Tensor  # B x C: the last hidden state, whose next word opens the next batch


class NeuralCache:
    """Grave et al.'s continuous cache over the features a language model
    feeds its output layer."""

    def __init__(self, size: int, theta: float, lam: float, pad: Optional[int] = None,
                 without: Optional[ScoreTally] = None):
        if size < 1:
            raise ValueError(f"--neural-cache-size must be >= 1 (the number of past words remembered), got {size}")
        if not theta > 0:
            raise ValueError(f"--neural-cache-theta must be > 0 (it scales h_t . h_i), got {theta}")
        if not 0 < lam < 1:
            raise ValueError(f"--neural-cache-lambda must be in (0, 1) (the cache's share of p), got {lam}")
        self.size, self.theta, self.lam, self.pad = size, theta, lam, pad
        self.without = without  # tallies the model's own scores of the targets, beside the mixture's

    def attend(self, hidden: Tensor, inputs: Tensor, memory: Optional[CacheMemory]) -> Tuple[Tensor, Tensor, CacheMemory]:
        """Cache weights of every position of a batch.

        hidden: B x T x C, the features at each position; inputs: B x T, the
        words read (inputs[:, t + 1] follows hidden[:, t]); memory: what the
        previous batch of these streams left, or None for fresh streams.
        Returns weights B x T x K (each row sums to 1, or to 0 where nothing
        is remembered yet), their words B x K, and the memory to pass on.
        """
        B, T, C = hidden.shape
        h = hidden.float()  # fp32: the softmax over thousands of dot products
        if memory is None:
            keys, values = h[:, :-1], inputs[:, 1:]  # B x (T-1) x C, B x (T-1)
            before = 0  # keys that precede this batch's first position
        else:
            keys = torch.cat([memory.keys, memory.pending.unsqueeze(1), h[:, :-1]], dim=1)  # B x (N+T) x C
            values = torch.cat([memory.values, inputs], dim=1)  # B x (N+T)
            before = memory.keys.size(1) + 1
        K = keys.size(1)
        # Position t may read keys [before + t - size, before + t): the past, at most `size` back.
        t = torch.arange(T, device=h.device).unsqueeze(1)  # T x 1
        j = torch.arange(K, device=h.device).unsqueeze(0)  # 1 x K
        visible = (j < before + t) & (j >= before + t - self.size)  # T x K
        visible = visible.unsqueeze(0).expand(B, T, K)  # B x T x K
        if self.pad is not None:
            visible = visible & values.ne(self.pad).unsqueeze(1)
        scores = self.theta * torch.bmm(h, keys.transpose(1, 2))  # B x T x K
        scores = scores.masked_fill(~visible, -math.inf)
        # Rows with no visible key (the streams' first word) get weight 0, not NaN.
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        keep = min(self.size, K)
        return weights, values, CacheMemory(keys[:, K - keep:], values[:, K - keep:], h[:, -1])

    def cache_probs(self, weights: Tensor, values: Tensor, vocab_size: int) -> Tensor:
        """p_cache over the vocabulary: B x T x K weights, B x K words -> B x T x V."""
        B, T, K = weights.shape
        probs = weights.new_zeros(B, T, vocab_size)
        return probs.scatter_add_(2, values.unsqueeze(1).expand(B, T, K), weights)

    def target_probs(self, weights: Tensor, values: Tensor, target: Tensor) -> Tensor:
        """p_cache(target): B x T x K weights, B x K words, B x T targets -> B x T."""
        return (weights * values.unsqueeze(1).eq(target.unsqueeze(2))).sum(-1)

    def mixed_log_probs(self, model_log_probs: Tensor, weights: Tensor, values: Tensor) -> Tensor:
        """``mix`` over the whole vocabulary from ``attend``'s weights (B x T x K)
        and words (B x K): B x T x V log-probabilities. The log of the sum is taken
        only at the K remembered words; every other word's mixture is
        log(1 - lambda) + log p_model, a shift (the full-vocabulary logaddexp cost
        more than the model itself)."""
        lp = model_log_probs.float()
        B, T, K = weights.shape
        remembered = weights.sum(-1, keepdim=True) > 0  # B x T x 1
        index = values.unsqueeze(1).expand(B, T, K)  # B x T x K
        cache_p = self.cache_probs(weights, values, lp.size(-1)).gather(2, index)  # B x T x K, repeats summed
        at_words = self.mix(lp.gather(2, index), cache_p, remembered)  # B x T x K
        shifted = torch.where(remembered, lp + math.log1p(-self.lam), lp)  # B x T x V
        return shifted.scatter_(2, index, at_words)  # a repeated word writes one value each time

    def lazy_mixed_log_probs(self, model_log_probs: LazyLogProbs, weights: Tensor, values: Tensor) -> LazyLogProbs:
        """``mixed_log_probs`` for a scorer (B x T x V, lazy): reading one word per
        position costs the model's log p of that word and p_cache of it."""
        B, T = weights.shape[:2]
        remembered = weights.sum(-1) > 0  # B x T

        def at(index: Tensor) -> Tensor:  # B x T words -> B x T
            return self.mix(model_log_probs.at(index), self.target_probs(weights, values, index), remembered)

        def full() -> Tensor:
            return self.mixed_log_probs(model_log_probs.materialize(), weights, values)

        return LazyLogProbs((B, T), model_log_probs.size(-1), torch.float32, weights.device, at, full)

    def mix(self, model_log_probs: Tensor, cache_probs: Tensor, remembered: Tensor) -> Tensor:
        """log((1 - lambda) p_model + lambda p_cache) where the cache holds
        something (``remembered``, broadcastable), else log p_model."""
        lp = model_log_probs.float()
        mixed = torch.logaddexp(lp + math.log1p(-self.lam), torch.log(self.lam * cache_probs))
        return torch.where(remembered, mixed, lp)

