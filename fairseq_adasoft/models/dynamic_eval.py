"""``qrnn_lm``'s side of dynamic evaluation (``modules/dynamic_eval.py``;
Krause et al. 2018): the decoder scores each batch (a segment of every
stream) with its current weights, then takes one step on that batch's loss.

fairseq's scorers run the model under ``torch.no_grad`` and then read
``get_normalized_probs`` at the targets; so the forward re-enables autograd
while adapting, and ``get_normalized_probs`` computes log p(target) from that
graph, steps, and returns the scores computed before the step. No token is
scored by weights that have trained on it.
"""

import hashlib
import logging
import os
import time
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairseq_adasoft.modules import DynamicEvalSetup, DynamicEvaluation, GradientStatistics, LazyLogProbs

logger = logging.getLogger(__name__)


class DynamicEvalDecoder:
    """Mixed into ``QRNNDecoder``, which owns the weights being adapted."""

    dynamic_setup: Optional[DynamicEvalSetup] = None
    dynamic: Optional[DynamicEvaluation] = None
    _gathering = False
    _batch_shape = None

    def use_dynamic_eval(self, setup: Optional[DynamicEvalSetup]) -> None:
        """Score with dynamic evaluation (None: without). It starts at the first
        evaluation batch, from the weights loaded by then (the trained ones)."""
        self.dynamic_setup, self.dynamic = setup, None

    def adapting(self) -> bool:
        """Whether this forward is scored and then stepped on (gathering the statistics first)."""
        if self.dynamic_setup is None or self.training or self._gathering:
            return False
        if self.dynamic is None:
            self.dynamic = self._start_dynamic_eval()
        return True

    def read_embedding_rows(self, tokens: Tensor) -> None:
        """Bring the embedding rows this forward reads up to date (lazy rows)."""
        self._batch_shape = tuple(tokens.shape)  # what score_then_step must be given whole
        weight = self._lazy_embedding()
        if weight is None:
            return
        rows = tokens.reshape(-1).unique()
        if self.adaptive_softmax is not None:  # a tied shortlist also reads its rows
            rows = torch.cat([rows, self.adaptive_softmax.tied_weight_rows().to(rows.device)]).unique()
        self.dynamic.read_rows(weight, rows)

    def score_then_step(self, net_output, sample) -> LazyLogProbs:
        """log p(target) of this batch under the current weights (B x T x V, read
        at the targets only), after which the weights take their step."""
        features = net_output[0]
        target = None if sample is None else sample.get("target")
        if target is None or tuple(features.shape[:2]) != self._batch_shape:
            raise ValueError(
                "--dynamic-eval scores each batch's targets before training on them (fairseq-eval-lm): it needs "
                "the whole batch's targets; drop --softmax-batch, which splits the batch"
            )
        if not features.requires_grad:
            raise ValueError("--dynamic-eval steps on the model's weights: they must require gradients")
        with torch.enable_grad():
            log_p = self._target_log_probs(features, target)
            self.zero_grad(set_to_none=True)
            self._mean_nll(log_p, target).backward()
        self.dynamic.step()
        self.zero_grad(set_to_none=True)
        scored = log_p.detach()

        def at(index: Tensor) -> Tensor:
            if not torch.equal(index, target):
                raise ValueError("--dynamic-eval has scored each position's target word only")
            return scored

        def full() -> Tensor:
            raise ValueError("--dynamic-eval scores the target words only (fairseq-eval-lm's scores), "
                             "not whole distributions")

        return LazyLogProbs(tuple(target.shape), len(self.dictionary), scored.dtype, scored.device, at, full)

    def _target_log_probs(self, features: Tensor, target: Tensor) -> Tensor:
        """log p(target): B x T, fp32."""
        if self.adaptive_softmax is not None:
            flat = self.adaptive_softmax.target_log_prob(features.reshape(-1, features.size(-1)), target.reshape(-1))
            return flat.view(target.shape)
        log_probs = F.log_softmax(self.output_layer(features).float(), dim=-1)
        return log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)

    def _mean_nll(self, log_p: Tensor, target: Tensor) -> Tensor:
        """The mean negative log-likelihood of the real (non-pad) targets, as Krause et al.'s loss."""
        real = target.ne(self.dictionary.pad())
        return -torch.where(real, log_p, torch.zeros_like(log_p)).sum() / real.sum().clamp(min=1)

    def _lazy_embedding(self) -> Optional[nn.Parameter]:
        """The embedding matrix when it is read only by lookups (and a tied adaptive softmax's rows)."""
        if not isinstance(self.embed_tokens, nn.Embedding):
            return None
        weight = self.embed_tokens.weight
        if self.output_projection is not None and self.output_projection.weight is weight:
            return None  # a tied full softmax reads every row
        return weight

    def _start_dynamic_eval(self) -> DynamicEvaluation:
        """Krause et al.'s update from the trained weights, with MS_g read from
        --dynamic-eval-stats-file when it holds them, else gathered (and kept there)."""
        params, setup = list(self.parameters()), self.dynamic_setup
        kept = StatisticsFile(setup.statistics_file, setup.statistics_settings, params)
        rms = kept.read()
        if rms is None:
            rms = self._gather_statistics(params)
            kept.write(rms)
        lazy = [p for p in [self._lazy_embedding()] if p is not None]
        if lazy:  # a step reads few of its rows: their gradient need not be V x d
            self.embed_tokens.sparse = True
            if self.adaptive_softmax is not None:
                self.adaptive_softmax.sparse_tied_rows = True
        return DynamicEvaluation(params, rms, setup.lr, setup.decay, lazy_rows=lazy)

    def _gather_statistics(self, params: List[nn.Parameter]) -> List[Tensor]:
        """MS_g over the training batches, from the trained weights: the rms per parameter."""
        stats = GradientStatistics(params)
        cache, self.neural_cache = self.neural_cache, None  # the statistics read training text
        device, start, tokens, names = params[0].device, time.perf_counter(), 0, set()
        self._gathering = True
        try:
            for sample in self.dynamic_setup.statistics_batches():
                stream = sample["net_input"]["stream"]
                target = sample["target"].to(device)
                with torch.enable_grad():
                    features, _ = self.extract_features(sample["net_input"]["src_tokens"].to(device), stream=stream)
                    self.zero_grad(set_to_none=True)
                    self._mean_nll(self._target_log_probs(features, target), target).backward()
                stats.add()
                tokens += int(sample["ntokens"])
                names.add(stream["name"])
        finally:
            self._gathering, self.neural_cache = False, cache
            self.zero_grad(set_to_none=True)
            for name in names:
                self.carried.forget(name)
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
