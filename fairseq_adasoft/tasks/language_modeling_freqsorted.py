"""``language_modeling_freqsorted``: fairseq's ``language_modeling`` task for
models with an adaptive softmax (Grave et al. 2017), whose clusters are only
meaningful when word ids are sorted by decreasing frequency.

At setup it checks the data directory and the dictionary order, resolves
``--adaptive-softmax-cutoff`` into word ids before the model is built (so the
checkpoint keeps ids), and logs the share of training tokens per cluster.
"""

import logging
import os
from dataclasses import dataclass

from fairseq import utils
from fairseq.tasks import register_task
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask

from fairseq_adasoft.modules import is_fraction_spec, parse_cutoffs

logger = logging.getLogger(__name__)


@dataclass
class FreqSortedLanguageModelingConfig(LanguageModelingConfig):
    pass


def check_data_dir(data: str) -> None:
    """Fail early, naming the fix, when the data directory is not a fairseq-preprocess output."""
    if not data:
        raise ValueError("no data directory given: pass the fairseq-preprocess --destdir as the first argument")
    for path in utils.split_paths(data):
        if not os.path.isdir(path):
            raise ValueError(
                f"data directory {path!r} does not exist: run fairseq-preprocess --only-source "
                f"--destdir {path} ... first (recipes/wikitext2/prepare.sh does it for WikiText-2)"
            )
    dict_path = os.path.join(utils.split_paths(data)[0], "dict.txt")
    if not os.path.isfile(dict_path):
        raise ValueError(
            f"{dict_path!r} is missing: the data directory must be the --destdir of "
            f"fairseq-preprocess --only-source"
        )


def frequency_order_violation(dictionary):
    """Index of the first word whose count exceeds its predecessor's, or None if sorted."""
    counts = dictionary.count[dictionary.nspecial :]
    for i in range(1, len(counts)):
        if counts[i] > counts[i - 1]:
            return dictionary.nspecial + i
    return None


@register_task("language_modeling_freqsorted", dataclass=FreqSortedLanguageModelingConfig)
class FreqSortedLanguageModelingTask(LanguageModelingTask):
    """Language modelling with frequency-sorted word ids, as the adaptive
    softmax of Grave et al. 2017 ("Efficient softmax approximation for GPUs")
    requires."""

    @classmethod
    def setup_task(cls, args, **kwargs):
        check_data_dir(args.data)
        task = super().setup_task(args, **kwargs)
        bad = frequency_order_violation(task.dictionary)
        if bad is not None:
            d = task.dictionary
            raise ValueError(
                f"{os.path.join(utils.split_paths(args.data)[0], 'dict.txt')} is not sorted by "
                f"frequency ({d[bad - 1]!r} count {d.count[bad - 1]} comes before {d[bad]!r} count "
                f"{d.count[bad]}), so adaptive softmax clusters would mix rare and frequent words; "
                f"rebuild the data with fairseq-preprocess --only-source without --srcdict"
            )
        return task

    def build_model(self, cfg, from_checkpoint=False):
        spec = getattr(cfg, "adaptive_softmax_cutoff", None)
        if spec and is_fraction_spec(str(spec)):
            # Resolved here so that the checkpoint keeps word ids.
            cutoffs = parse_cutoffs(str(spec), len(self.output_dictionary))
            cfg.adaptive_softmax_cutoff = ",".join(map(str, cutoffs))
        # Ids are validated by the model that uses them: fairseq's lstm_lm carries a
        # default cutoff it ignores unless its criterion is adaptive_loss.
        model = super().build_model(cfg, from_checkpoint)
        layer = getattr(model.decoder, "adaptive_softmax", None)
        if hasattr(layer, "cutoffs"):
            self._log_cluster_shares(layer.cutoffs[:-1])
        # fairseq's adaptive_loss drives fairseq's AdaptiveSoftmax through adapt_target().
        self._fairseq_adaptive_softmax = hasattr(layer, "adapt_target")
        return model

    def build_criterion(self, cfg):
        name = getattr(cfg, "_name", None) or getattr(cfg, "criterion", None)
        if name == "adaptive_loss" and not getattr(self, "_fairseq_adaptive_softmax", True):
            raise ValueError(
                "--criterion adaptive_loss only serves fairseq's own AdaptiveSoftmax; this model's "
                "output layer is served by --criterion adaptive_softmax (adaptive or full softmax)"
            )
        return super().build_criterion(cfg)

    def _log_cluster_shares(self, cutoffs):
        counts = self.output_dictionary.count
        total = sum(counts) or 1
        bounds = [0] + list(cutoffs) + [len(self.output_dictionary)]
        shares = [
            f"[{lo}, {hi}): {100.0 * sum(counts[lo:hi]) / total:.1f}%"
            for lo, hi in zip(bounds, bounds[1:])
        ]
        logger.info("adaptive softmax cutoffs %s; share of training tokens %s", cutoffs, ", ".join(shares))
