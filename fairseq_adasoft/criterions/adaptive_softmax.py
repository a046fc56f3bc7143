"""``adaptive_softmax``: the loss of an adaptive softmax output layer
(Grave et al. 2017, "Efficient softmax approximation for GPUs"), or of a full
softmax when the model has no adaptive softmax.

Unlike fairseq's ``adaptive_loss`` it works with every ``--ddp-backend``
(each tail runs every step, so every parameter gets a gradient), computes
log-probabilities and sums in fp32 under ``--fp16``, and logs per-cluster
statistics.
"""

import math

import torch
from fairseq.criterions import register_criterion
from fairseq.criterions.cross_entropy import CrossEntropyCriterion, CrossEntropyCriterionConfig
from fairseq.logging import metrics


@register_criterion("adaptive_softmax", dataclass=CrossEntropyCriterionConfig)
class AdaptiveSoftmaxCriterion(CrossEntropyCriterion):
    """Negative log-likelihood of the targets under the model's adaptive
    softmax (Grave et al. 2017), or its full softmax when it has none."""

    def compute_loss(self, model, net_output, sample, reduce=True):
        target = model.get_targets(sample, net_output).reshape(-1)  # N = B*T
        keep = target.ne(self.padding_idx).nonzero().squeeze(1)
        target = target.index_select(0, keep)
        layer = getattr(model.decoder, "adaptive_softmax", None)
        if layer is None:  # full softmax: the decoder returned logits
            lprobs = model.get_normalized_probs(net_output, log_probs=True)  # fp32
            lprobs = lprobs.reshape(-1, lprobs.size(-1)).index_select(0, keep)
            nll = -lprobs.gather(1, target.unsqueeze(1)).squeeze(1)
        elif hasattr(layer, "target_log_prob"):
            features = net_output[0].reshape(-1, net_output[0].size(-1))  # N x d
            nll = -layer.target_log_prob(features.index_select(0, keep), target)
        else:
            raise ValueError(
                f"--criterion adaptive_softmax needs fairseq_adasoft's AdaptiveSoftmax, but the "
                f"model's decoder.adaptive_softmax is {type(layer).__name__}; use --arch qrnn_lm, "
                f"or fairseq's --criterion adaptive_loss for fairseq's own adaptive softmax"
            )
        return (nll.sum() if reduce else nll), self._cluster_stats(layer, target, nll.detach())

    @staticmethod
    def _cluster_stats(layer, target, nll):
        """Target count and summed nll per cluster (0 is the head's shortlist)."""
        if not hasattr(layer, "cluster_of"):
            return {}
        n = layer.n_clusters + 1
        cluster = layer.cluster_of(target)
        counts = torch.bincount(cluster, minlength=n)
        sums = torch.zeros(n, dtype=torch.float32, device=nll.device).index_add_(0, cluster, nll.float())
        stats = {}
        for i, (count, total) in enumerate(zip(counts.tolist(), sums.tolist())):
            stats[f"cluster{i}_ntokens"] = count
            stats[f"cluster{i}_loss"] = total
        return stats

    def forward(self, model, sample, reduce=True):
        net_output = model(**sample["net_input"])
        loss, cluster_stats = self.compute_loss(model, net_output, sample, reduce=reduce)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        logging_output = {
            "loss": loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
            **cluster_stats,
        }
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        ntokens = sum(log.get("ntokens", 0) for log in logging_outputs)
        i = 0
        while logging_outputs and f"cluster{i}_ntokens" in logging_outputs[0]:
            count = sum(log.get(f"cluster{i}_ntokens", 0) for log in logging_outputs)
            loss = sum(log.get(f"cluster{i}_loss", 0) for log in logging_outputs)
            metrics.log_scalar(f"cluster{i}_frac", count / max(ntokens, 1), ntokens, round=4)
            if count > 0:  # base 2, as fairseq logs its losses
                metrics.log_scalar(f"cluster{i}_loss", loss / count / math.log(2), count, round=3)
            i += 1
