"""``qrnn_lm``'s side of dynamic evaluation (Krause et al. 2018; the update
itself is ``modules/dynamic_eval.py``): ``DynamicEval``, an object the decoder
holds as ``decoder.dynamic_eval`` (as it holds its carried stream state and
its neural cache). The decoder scores each batch (a segment of every stream)
with its current weights, then takes one step on that batch's loss.

fairseq's scorers run the model under ``torch.no_grad`` and then read
``get_normalized_probs`` at the targets; so the forward re-enables autograd
while adapting, and ``get_normalized_probs`` computes log p(target) from that
graph, steps, and returns the scores computed before the step. No token is
scored by weights that have trained on it.

The decoder meets the object through explicit arguments: its parameters, the
embedding matrix read by row lookups only, a training batch's loss (to gather
the statistics) and its output layer's log p(target).
"""

import hashlib
import logging
import os
import time
from typing import Callable, List, Optional

import torch
from torch import Tensor, nn

from fairseq_adasoft.modules import DynamicEvalSetup, DynamicEvaluation, GradientStatistics, LazyLogProbs

logger = logging.getLogger(__name__)


def mean_nll(log_p: Tensor, target: Tensor, pad: int) -> Tensor:
    """The mean negative log-likelihood of the real (non-pad) targets, as Krause et al.'s loss."""
    real = target.ne(pad)
    return -torch.where(real, log_p, torch.zeros_like(log_p)).sum() / real.sum().clamp(min=1)


def _zero_grad(params: List[nn.Parameter]) -> None:
    for p in params:
        p.grad = None


class DynamicEval:
    """Dynamic evaluation as a decoder holds it: the setting (``DynamicEvalSetup``), and from
    the first evaluation batch on, Krause et al.'s update of the decoder's weights."""

    def __init__(self, setup: DynamicEvalSetup, pad: int, vocab_size: int):
        self.setup, self.pad, self.vocab_size = setup, pad, vocab_size
        self.update: Optional[DynamicEvaluation] = None  # started at the first evaluation batch
        self.gathering = False  # while the statistics' training batches run through the decoder
        self._lazy: Optional[nn.Parameter] = None
        self._rows_always_read: Optional[Tensor] = None
        self._batch_shape = None

    @property
    def started(self) -> bool:
        return self.update is not None

    def restart(self, lr: float, decay: float) -> None:
        """Score from the trained weights again, with this learning rate and decay (not yet
        started: the setting it will start with)."""
        if self.update is None:
            self.setup = self.setup._replace(lr=lr, decay=decay)
        else:
            self.update.restart(lr, decay)

    def start(self, params: List[nn.Parameter], batch_loss: Callable[[dict], Tensor],
              lazy_embedding: Optional[nn.Parameter] = None, rows_always_read: Optional[Tensor] = None) -> None:
        """Krause et al.'s update from the trained weights ``params``, with MS_g read from
        --dynamic-eval-stats-file when it holds them, else gathered (and kept there) from
        ``batch_loss(sample)``, a training batch's mean nll. ``lazy_embedding``: a matrix read
        only by row lookups of the batch's tokens (and ``rows_always_read``), updated lazily."""
        kept = StatisticsFile(self.setup.statistics_file, self.setup.statistics_settings, params)
        rms = kept.read()
        if rms is None:
            rms = self._gather_statistics(params, batch_loss)
            kept.write(rms)
        self._lazy, self._rows_always_read = lazy_embedding, rows_always_read
        lazy = [] if lazy_embedding is None else [lazy_embedding]
        prefix = 0  # a tied shortlist's rows 0..S-1, read by every forward, step densely
        if rows_always_read is not None and torch.equal(rows_always_read, torch.arange(len(rows_always_read))):
            prefix, self._rows_always_read = len(rows_always_read), None
        self.update = DynamicEvaluation(params, rms, self.setup.lr, self.setup.decay, lazy_rows=lazy,
                                        rows_read_every_step=prefix)

    def before_forward(self, tokens: Tensor) -> None:
        """Before the forward of a batch it will score: note its shape, and bring the lazy
        embedding's rows the forward reads up to date."""
        self._batch_shape = tuple(tokens.shape)  # what score_then_step must be given whole
        if self._lazy is None:
            return
        rows = tokens.reshape(-1).unique()
        if self._rows_always_read is not None:  # a tied shortlist also reads its rows
            rows = torch.cat([rows, self._rows_always_read.to(rows.device)]).unique()
        self.update.read_rows(self._lazy, rows)

    def score_then_step(self, features: Tensor, sample, target_log_probs: Callable[[Tensor, Tensor], Tensor]
                        ) -> LazyLogProbs:
        """log p(target) of this batch under the current weights (B x T x V, read at the
        targets only; ``target_log_probs(features, target)``: the output layer's, B x T), after
        which the weights take their step."""
        target = None if sample is None else sample.get("target")
        if target is None or tuple(features.shape[:2]) != self._batch_shape:
            raise ValueError(
                "--dynamic-eval scores each batch's targets before training on them (fairseq-eval-lm): it needs "
                "the whole batch's targets; drop --softmax-batch, which splits the batch"
            )
        if not features.requires_grad:
            raise ValueError("--dynamic-eval steps on the model's weights: they must require gradients")
        params = self.update.params
        with torch.enable_grad():
            log_p = target_log_probs(features, target)
            _zero_grad(params)
            loss = mean_nll(log_p, target, self.pad)
            loss.backward()
        self._warn_if_diverged(loss)
        self.update.step()
        _zero_grad(params)
        scored = log_p.detach()

        def at(index: Tensor) -> Tensor:
            if not torch.equal(index, target):
                raise ValueError("--dynamic-eval has scored each position's target word only")
            return scored

        def full() -> Tensor:
            raise ValueError("--dynamic-eval scores the target words only (fairseq-eval-lm's scores), "
                             "not whole distributions")

        return LazyLogProbs(tuple(target.shape), self.vocab_size, scored.dtype, scored.device, at, full)

    def _warn_if_diverged(self, loss: Tensor) -> None:
        """One warning per setting (learning rate, decay) once a batch's loss is no longer finite:
        the perplexity will be inf or nan, and the settings are what to change."""
        update = self.update
        setting = (update.lr, update.decay)
        if getattr(self, "_warned_setting", None) == setting or bool(torch.isfinite(loss.detach())):
            return
        self._warned_setting = setting
        if update.steps == 0:
            logger.warning("--dynamic-eval: the loss of the first batch is %s, before any step: the trained "
                           "model's own scores are not finite", loss.item())
        else:
            logger.warning("--dynamic-eval: the weights diverged at step %d (the loss of batch %d is %s); the "
                           "perplexity will be inf or nan: lower --dynamic-eval-lr (currently %g) or raise "
                           "--dynamic-eval-decay (currently %g)",
                           update.steps, update.steps + 1, loss.item(), update.lr, update.decay)

    def _gather_statistics(self, params: List[nn.Parameter], batch_loss: Callable[[dict], Tensor]) -> List[Tensor]:
        """MS_g over the training batches, from the trained weights: the rms per parameter."""
        stats = GradientStatistics(params)
        start, tokens = time.perf_counter(), 0
        self.gathering = True
        try:
            for sample in self.setup.statistics_batches():
                with torch.enable_grad():
                    loss = batch_loss(sample)
                    _zero_grad(params)
                    loss.backward()
                stats.add()
                tokens += int(sample["ntokens"])
        finally:
            self.gathering = False
            _zero_grad(params)
        logger.info("--dynamic-eval: gradient statistics from %d training batches (%d tokens) in %.1f s",
                    stats.batches, tokens, time.perf_counter() - start)
        return stats.rms()


class StatisticsFile:
    """Dynamic evaluation's rms kept between runs: they cost a pass over the
    training split, and depend only on the trained weights and how the
    batches were cut, which the file records and checks."""

    FORMAT = "fairseq_adasoft dynamic evaluation statistics, v1"

    def __init__(self, path: str, settings: Optional[dict], params: List[nn.Parameter]):
        self.path, self.settings = path, dict(settings or {})
        self.shapes = [tuple(p.shape) for p in params]
        self.weights = self._fingerprint(params) if path else ""
        folder = os.path.dirname(os.path.abspath(path)) if path else ""
        if path and not os.path.isdir(folder):
            raise ValueError(f"--dynamic-eval-stats-file {path}: its folder {folder} does not exist; create it "
                             f"or name a file in an existing folder")

    @staticmethod
    def _fingerprint(params: List[nn.Parameter]) -> str:
        digest = hashlib.sha256()
        for p in params:
            digest.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def read(self) -> Optional[List[Tensor]]:
        """The kept rms, None when there is no file; a file of other weights or settings is refused."""
        if not self.path or not os.path.exists(self.path):
            return None
        try:
            kept = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(f"--dynamic-eval-stats-file {self.path} is not a statistics file ({error}): "
                             f"delete it to gather the statistics again, or name another file") from error
        found = (kept.get("format"), kept.get("weights"), kept.get("settings"),
                 [tuple(r.shape) for r in kept.get("rms", [])])
        if found != (self.FORMAT, self.weights, self.settings, self.shapes):
            raise ValueError(f"--dynamic-eval-stats-file {self.path} holds statistics of other weights or settings "
                             f"(it has {kept.get('settings')}, this run {self.settings}): delete it to gather "
                             f"them again, or name another file")
        logger.info("--dynamic-eval: gradient statistics read from %s", self.path)
        return kept["rms"]

    def write(self, rms: List[Tensor]) -> None:
        if not self.path:
            return
        partial = f"{self.path}.partial"  # written whole, then renamed: a kill leaves no half file
        torch.save({"format": self.FORMAT, "weights": self.weights, "settings": self.settings,
                    "rms": [r.cpu() for r in rms]}, partial)
        os.replace(partial, self.path)
        logger.info("--dynamic-eval: gradient statistics kept in %s", self.path)
