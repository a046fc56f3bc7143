"""What fairseq-eval-lm reports, tallied beside it for scores it does not print: the
continuous cache's runs also tally the model's own log p(target), so that one pass over a
split gives the perplexity with the cache and without it (the same forward, the same
dynamic-evaluation steps)."""

import logging
import math

import torch
from torch import Tensor

from .lazy_log_probs import LazyLogProbs

logger = logging.getLogger(__name__)
# The label of the cache's runs' second result line (fairseq_adasoft.logs reads it).
WITHOUT_CACHE = "--neural-cache-size: the same pass without the cache"


class ScoreTally:
    """fairseq-eval-lm's sum of log p(target) and token count, summed as it sums them: per
    stream row the positions before its padding, in fp32, skipping infinite scores."""

    def __init__(self, pad: int):
        self.pad, self.total, self.count = pad, torch.zeros((), dtype=torch.float32), 0

    def add(self, log_p: Tensor, target: Tensor) -> None:
        """log_p, target: B x T."""
        for row, tokens in zip(log_p.detach().float().cpu(), target.cpu()):
            scores = row[: int(tokens.ne(self.pad).sum())]
            scores = scores[~scores.isinf()]
            self.total = self.total + scores.sum()
            self.count += scores.numel()

    def tallied(self, log_probs: Tensor, target: Tensor) -> Tensor:
        """``log_probs`` (B x T x V, maybe lazy), whose values at ``target`` (what a scorer reads)
        are added here."""
        if not isinstance(log_probs, LazyLogProbs):
            self.add(log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1), target)
            return log_probs

        def at(index: Tensor) -> Tensor:
            values = log_probs.at(index)
            if torch.equal(index, target):
                self.add(values, target)
            return values

        return LazyLogProbs(tuple(target.shape), log_probs.size(-1), log_probs.dtype, log_probs.device, at,
                            log_probs.materialize)

    def line(self, what: str) -> str:
        """fairseq-eval-lm's result line, for ``what``."""
        loss = -self.total.item() / max(self.count, 1) / math.log(2)
        return f"{what}: Loss (base 2) {loss:.4f}, Perplexity {2 ** loss:.2f}"

    def logged_after(self, batches, what: str = WITHOUT_CACHE):
        """``batches`` (with their len), logging ``line(what)`` once the scorer has read them all."""
        return _ThenLog(batches, lambda: logger.info(self.line(what)))


class _ThenLog:
    def __init__(self, batches, log):
        self.batches, self.log = batches, log

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        yield from self.batches
        self.log()
