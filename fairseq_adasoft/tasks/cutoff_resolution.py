"""The task's side of the cutoffs (``modules/cutoffs.py`` parses and chooses them):
resolving ``--adaptive-softmax-cutoff`` before the model is built: fractions
of the vocabulary become word ids (so the checkpoint keeps ids), ``auto``
becomes the cheapest cutoffs under Grave et al.'s cost model over the
training counts, and the share of training tokens per cluster is logged."""

import logging
from typing import List, Sequence

import torch

from fairseq_adasoft.modules.cutoffs import (
    DEFAULT_COST_MODEL,
    CostModel,
    auto_cutoffs,
    expected_cost,
    is_fraction_spec,
    measure_cost_model,
    parse_cutoffs,
    seed_rule_cutoffs,
)

logger = logging.getLogger(__name__)


def resolve_cutoffs(model_cfg, train_counts, batch_tokens: int, measure_cost: bool) -> None:
    """Rewrite ``model_cfg.adaptive_softmax_cutoff`` and ``adaptive_input_cutoff``
    as word ids, in place; adaptive input's ``auto`` takes the softmax's result.
    Ids are validated by the model that uses them: fairseq's lstm_lm carries a
    default cutoff it ignores unless its criterion is adaptive_loss."""
    spec = getattr(model_cfg, "adaptive_softmax_cutoff", None)
    if spec == "auto":
        cutoffs = choose_cutoffs(model_cfg, train_counts, batch_tokens, measure_cost)
        model_cfg.adaptive_softmax_cutoff = ",".join(map(str, cutoffs))
    elif spec and is_fraction_spec(str(spec)):
        cutoffs = parse_cutoffs(str(spec), len(train_counts))
        model_cfg.adaptive_softmax_cutoff = ",".join(map(str, cutoffs))
    spec = getattr(model_cfg, "adaptive_input_cutoff", None)
    if spec == "auto":
        if not model_cfg.adaptive_softmax_cutoff:
            raise ValueError("--adaptive-input-cutoff auto takes the adaptive softmax's cutoffs: set "
                             "--adaptive-softmax-cutoff, or give --adaptive-input-cutoff as word ids")
        model_cfg.adaptive_input_cutoff = model_cfg.adaptive_softmax_cutoff
    elif spec and is_fraction_spec(str(spec)):
        cutoffs = parse_cutoffs(str(spec), len(train_counts), "--adaptive-input-cutoff")
        model_cfg.adaptive_input_cutoff = ",".join(map(str, cutoffs))


def choose_cutoffs(model_cfg, train_counts, batch_tokens: int, measure_cost: bool) -> List[int]:
    """--adaptive-softmax-cutoff auto: the cheapest cutoffs under Grave et al.'s cost model."""
    d = getattr(model_cfg, "embed_dim", None) or getattr(model_cfg, "decoder_output_dim", None)
    if not d:
        raise ValueError("--adaptive-softmax-cutoff auto needs the model's output dimension "
                         "(embed_dim or decoder_output_dim); give the cutoffs explicitly")
    div_value = (getattr(model_cfg, "adaptive_softmax_div_value", None)
                 or getattr(model_cfg, "adaptive_softmax_factor", 4.0))
    cost = measured_cost_model() if measure_cost else DEFAULT_COST_MODEL
    cutoffs = auto_cutoffs(train_counts, d, div_value, batch_tokens, cost)
    seed = seed_rule_cutoffs(len(train_counts))
    modelled = lambda c: 1e3 * expected_cost(c, train_counts, d, div_value, batch_tokens, cost)  # noqa: E731
    logger.info(
        "--adaptive-softmax-cutoff auto: %s, modelled %.3g ms per batch of %d tokens (the [V/15, 3V/15] "
        "rule: %.3g ms), cost model %s", cutoffs, modelled(cutoffs), batch_tokens, modelled(seed), cost,
    )
    return cutoffs


def measured_cost_model() -> CostModel:
    """The cost model timed on this device; under DDP every rank must choose the
    same cutoffs, so the ranks' measurements are averaged."""
    cost = measure_cost_model("cuda" if torch.cuda.is_available() else "cpu")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        t = torch.tensor([cost.overhead_s, cost.seconds_per_madd, cost.flat_madds], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        cost = CostModel(*(t / torch.distributed.get_world_size()).tolist())
    return cost


def log_cluster_shares(cutoffs: Sequence[int], counts: Sequence[int]) -> None:
    """The share of training tokens that falls in each cluster."""
    total = sum(counts) or 1
    bounds = [0] + list(cutoffs) + [len(counts)]
    shares = [f"[{lo}, {hi}): {100.0 * sum(counts[lo:hi]) / total:.1f}%" for lo, hi in zip(bounds, bounds[1:])]
    logger.info("adaptive softmax cutoffs %s; share of training tokens %s", cutoffs, ", ".join(shares))
