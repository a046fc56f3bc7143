"""``language_modeling_freqsorted``: fairseq's ``language_modeling`` task for
models with an adaptive softmax (Grave et al. 2017), whose clusters are only
meaningful when word ids are sorted by decreasing frequency.

The task wires three jobs into fairseq: the vocabulary order
(``vocabulary.py``: the dictionary re-sorted by training counts, every split
remapped, the order saved in the checkpoint's task state), the cutoffs
(``cutoff_resolution.py``: fractions and ``auto`` resolved to ids before the model is
built) and, with ``--stateful-bptt``, contiguous streams (``streams.py``)
whose hidden state the model carries; plus the flags of the continuous cache
and of dynamic evaluation for fairseq-eval-lm.
"""

import math
import os
from dataclasses import dataclass, field
from typing import Optional

import torch
from fairseq import utils
from fairseq.distributed import utils as distributed_utils
from fairseq.tasks import register_task
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask
from omegaconf import II

from fairseq_adasoft.modules import DynamicEvalSetup, NeuralCache, ScoreTally
from fairseq_adasoft.presets import DYNAMIC_EVAL
from fairseq_adasoft.flag_ranges import AT_LEAST_ONE, POSITIVE, SHARE, Range, check_flag_ranges
from fairseq_adasoft.tasks.adaptive_loss_guard import refuse_adaptive_loss, refuse_adaptive_loss_config
from fairseq_adasoft.tasks.cutoff_resolution import log_cluster_shares, resolve_cutoffs
from fairseq_adasoft.tasks.splits import check_split
from fairseq_adasoft.tasks.streams import StreamBatches, TokenStream, load_token_stream, stream_batch_iterator
from fairseq_adasoft.tasks.vocabulary import RemapTokensDataset, check_data_dir, frequency_order_of

# The defaults of the continuous cache: the best of the cache tuner's grid on
# WikiText-2's validation split for qrnn_lm_wikitext2.
NEURAL_CACHE_THETA = 6.0
NEURAL_CACHE_LAMBDA = 0.25


@dataclass
class FreqSortedLanguageModelingConfig(LanguageModelingConfig):
    no_resort: bool = field(
        default=False,
        metadata={"help": "fail instead of re-sorting a dictionary that is not in training-frequency order"},
    )
    max_unk_share: float = field(
        default=0.1,
        metadata={"help": "fail when more than this share of training tokens is <unk>, the sign of a "
                  "dictionary that lacks the training words"},
    )
    measure_cutoff_cost: bool = field(
        default=False,
        metadata={"help": "for --adaptive-softmax-cutoff auto, time matrix products on this device for "
                  "the cost model (default: constants measured on a 2-core CPU)"},
    )
    stateful_bptt: bool = field(
        default=False,
        metadata={"help": "truncated BPTT over contiguous streams: --batch-size streams per process, "
                  "consecutive batches continue them and the model carries its hidden state across "
                  "batches (the classic RNN-LM protocol of awd-lstm-lm; in fairseq-eval-lm, "
                  "--batch-size streams, default 1); without it every block is scored alone"},
    )
    cutoff_batch_tokens: Optional[int] = field(
        default=None,
        metadata={"help": "tokens per batch the --adaptive-softmax-cutoff auto cost model assumes "
                  "(default: --batch-size x --tokens-per-sample)"},
    )
    # Evaluation only: Grave, Joulin & Usunier 2017's continuous cache (modules/neural_cache.py).
    neural_cache_size: int = field(
        default=0,
        metadata={"help": "fairseq-eval-lm: mix a continuous cache of the last N hidden states into the "
                  "model's probabilities (qrnn_lm; with --stateful-bptt it spans batches); 0: off"},
    )
    neural_cache_theta: float = field(
        default=NEURAL_CACHE_THETA, metadata={"help": "the cache's softmax scale on h_t . h_i"}
    )
    neural_cache_lambda: float = field(
        default=NEURAL_CACHE_LAMBDA, metadata={"help": "the cache's share of the mixed probability"}
    )
    # Evaluation only: Krause et al. 2018's dynamic evaluation (modules/dynamic_eval.py).
    dynamic_eval: bool = field(
        default=False,
        metadata={"help": "fairseq-eval-lm --stateful-bptt: score each segment of the streams, then take one "
                  "RMS-normalised gradient step on it with a decay toward the trained weights (Krause et al. "
                  "2018; qrnn_lm), so that the model adapts to the text it scores"},
    )
    dynamic_eval_lr: float = field(default=DYNAMIC_EVAL["lr"], metadata={"help": "dynamic evaluation's learning rate (eta)"})
    dynamic_eval_decay: float = field(
        default=DYNAMIC_EVAL["decay"], metadata={"help": "dynamic evaluation's decay toward the trained weights (lambda)"}
    )
    dynamic_eval_segment: int = field(
        default=DYNAMIC_EVAL["segment"],
        metadata={"help": "tokens per stream per step of dynamic evaluation; it replaces --tokens-per-sample "
                  "for fairseq-eval-lm's batches, and cuts the training batches of the statistics"},
    )
    dynamic_eval_stats_tokens: Optional[int] = field(
        default=DYNAMIC_EVAL["statistics_tokens"],
        metadata={"help": "training tokens whose gradients (mean squares, from the trained weights) normalise "
                  "dynamic evaluation's steps (default: the whole training split, as Krause et al.; "
                  "--dynamic-eval-stats-file keeps them)"},
    )
    dynamic_eval_stats_file: str = field(default="", metadata={
        "help": "keep dynamic evaluation's gradient statistics in this file: read when it exists (it must hold "
                "those of these weights and statistics flags), else gathered and written; empty: gathered at every run"})
    # fairseq's flags the task reads: which split is trained on (every other is
    # scored in full) and the precision, which fairseq checks only after the model is built.
    train_subset: str = II("dataset.train_subset")
    fp16: bool = II("common.fp16")
    cpu: bool = II("common.cpu")


# The allowed values of the numeric flags, checked once in setup_task.
FLAG_RANGES = {
    "tokens_per_sample": AT_LEAST_ONE,
    "max_unk_share": SHARE,
    "cutoff_batch_tokens": AT_LEAST_ONE,
    "neural_cache_size": Range(0),
    "neural_cache_theta": POSITIVE,
    "neural_cache_lambda": Range(0, 1, low_open=True),
    "dynamic_eval_lr": Range(0),
    "dynamic_eval_decay": Range(0),
    "dynamic_eval_segment": AT_LEAST_ONE,
    "dynamic_eval_stats_tokens": AT_LEAST_ONE,
}


@register_task("language_modeling_freqsorted", dataclass=FreqSortedLanguageModelingConfig)
class FreqSortedLanguageModelingTask(LanguageModelingTask):
    """Language modelling with frequency-sorted word ids, as the adaptive
    softmax of Grave et al. 2017 ("Efficient softmax approximation for GPUs")
    requires."""

    @classmethod
    def setup_task(cls, args, **kwargs):
        check_flag_ranges(args, FLAG_RANGES)
        check_data_dir(args.data)
        task = super().setup_task(args, **kwargs)
        order = frequency_order_of(args.data, task.dictionary, args.dataset_impl,
                                   no_resort=args.no_resort, max_unk_share=args.max_unk_share)
        task.dictionary = task.output_dictionary = order.dictionary
        task.old_to_new, task.train_counts = order.old_to_new, order.train_counts
        # Saved in checkpoints: the words behind the model's ids.
        task.state.merge_state_dict({"dictionary_symbols": list(task.dictionary.symbols)})
        task.without_cache = None  # --neural-cache-size: the model's own scores, tallied in the same pass
        return task

    def load_state_dict(self, state_dict):
        saved = state_dict.get("dictionary_symbols")
        if saved is not None and saved != list(self.dictionary.symbols):
            raise ValueError(
                f"the checkpoint's word ids do not match the (frequency-sorted) dictionary of "
                f"{self.args.data}: evaluate on data preprocessed with the dictionary the model "
                f"was trained with"
            )
        super().load_state_dict(state_dict)

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        paths = utils.split_paths(self.args.data)
        path = os.path.join(paths[(epoch - 1) % len(paths)], split)
        check_split(path, split)
        if split == getattr(self.args, "train_subset", "train"):
            self._check_training_precision()  # only fairseq-train loads the training split
        if self.args.stateful_bptt:
            self.datasets[split] = load_token_stream(path, split, self.dictionary, self.args.dataset_impl,
                                                     combine, self.old_to_new)
            return self.datasets[split]
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        if self.old_to_new is not None:  # binarized with the file's ids
            self.datasets[split] = RemapTokensDataset(self.datasets[split], self.old_to_new)
        return self.datasets[split]

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, max_positions=None,
                           ignore_invalid_inputs=False, required_batch_size_multiple=1, seed=1,
                           num_shards=1, shard_id=0, num_workers=0, epoch=1, data_buffer_size=0,
                           disable_iterator_cache=False, skip_remainder_batch=False, **kwargs):
        if not isinstance(dataset, TokenStream):
            if dataset is not self.datasets.get(getattr(self.args, "train_subset", "train")):
                # fairseq's batch_by_size drops a last batch that is not a multiple of
                # --required-batch-size-multiple (fairseq #5036); an evaluation scores every
                # block, and blocks are scored alone, so the batch shape cannot change its loss.
                required_batch_size_multiple = 1
            return super().get_batch_iterator(
                dataset, max_tokens=max_tokens, max_sentences=max_sentences, max_positions=max_positions,
                ignore_invalid_inputs=ignore_invalid_inputs, required_batch_size_multiple=required_batch_size_multiple,
                seed=seed, num_shards=num_shards, shard_id=shard_id, num_workers=num_workers, epoch=epoch,
                data_buffer_size=data_buffer_size, disable_iterator_cache=disable_iterator_cache,
                skip_remainder_batch=skip_remainder_batch, **kwargs)
        return stream_batch_iterator(dataset, max_sentences, self.args.tokens_per_sample, num_shards, shard_id,
                                     seed=seed, num_workers=num_workers, epoch=epoch,
                                     data_buffer_size=data_buffer_size)

    def eval_lm_dataloader(self, dataset, max_tokens=36000, batch_size=None, max_positions=None,
                           num_shards=1, shard_id=0, num_workers=1, data_buffer_size=10, context_window=0):
        if not isinstance(dataset, TokenStream):
            batches = super().eval_lm_dataloader(dataset, max_tokens, batch_size, max_positions, num_shards,
                                                 shard_id, num_workers, data_buffer_size, context_window)
        elif context_window > 0:
            raise ValueError("--context-window re-reads context for independent blocks; --stateful-bptt "
                             "carries the state instead: drop one of the two")
        else:
            tokens = self.args.dynamic_eval_segment if self.args.dynamic_eval else self.args.tokens_per_sample
            batches = stream_batch_iterator(dataset, batch_size or 1, tokens, num_shards, shard_id,
                                            num_workers=num_workers, data_buffer_size=data_buffer_size
                                            ).next_epoch_itr(shuffle=False)
        # The cache's runs also report the model's own perplexity, from the same pass.
        return batches if self.without_cache is None else self.without_cache.logged_after(batches)

    def dynamic_eval_statistics(self):
        """The training batches whose gradients give dynamic evaluation's statistics: contiguous
        streams (Krause et al.'s 100) cut into segments, up to --dynamic-eval-stats-tokens tokens."""
        path = os.path.join(utils.split_paths(self.args.data)[0], self.args.train_subset)
        check_split(path, self.args.train_subset)
        train = load_token_stream(path, self.args.train_subset, self.dictionary, self.args.dataset_impl,
                                  old_to_new=self.old_to_new)
        segment, wanted = self.args.dynamic_eval_segment, self.args.dynamic_eval_stats_tokens
        streams = max(1, min(DYNAMIC_EVAL["statistics_streams"], len(train) // segment))
        batches = StreamBatches(train, streams, segment, num_shards=1, shard_id=0)
        count = len(batches) if wanted is None else min(len(batches), math.ceil(wanted / (streams * segment)))
        for k in range(count):
            yield batches.collater([k])

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        for flag, on in (("--neural-cache-size", self.args.neural_cache_size), ("--dynamic-eval", self.args.dynamic_eval)):
            if on:
                raise ValueError(f"{flag} is an evaluation option (fairseq-eval-lm): drop it from fairseq-train")
        refuse_adaptive_loss(_unwrap(model), criterion)
        out = super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        stream = sample.get("net_input", {}).get("stream")
        if stream is not None and distributed_utils.get_data_parallel_world_size() > 1:
            self._share_stream_state(model, stream)
        return out

    def valid_step(self, sample, model, criterion):
        refuse_adaptive_loss(_unwrap(model), criterion)
        return super().valid_step(sample, model, criterion)

    def _check_training_precision(self) -> None:
        """fairseq's fp16 optimizer keeps its fp32 copy on the current CUDA device,
        so --fp16 training without one dies in torch.cuda."""
        if getattr(self.args, "fp16", False) and (getattr(self.args, "cpu", False) or not torch.cuda.is_available()):
            raise ValueError(
                "--fp16 trains on a CUDA GPU and this run is on the CPU (--cpu, or no CUDA device): "
                "drop --fp16; on the CPU, --cpu-autocast-bf16 (qrnn_lm) runs the matmuls in bf16"
            )

    @staticmethod
    def _share_stream_state(model, stream) -> None:
        """Give every process the state of all S streams, so that rank 0's
        checkpoint can resume every rank's streams (the model sums the rows)."""
        group = distributed_utils.get_data_parallel_group()
        _unwrap(model).share_stream_state(stream, lambda t: distributed_utils.all_reduce(t, group=group))

    def build_model(self, cfg, from_checkpoint=False):
        batch_tokens = self.args.cutoff_batch_tokens or (self.args.batch_size or 1) * self.args.tokens_per_sample
        resolve_cutoffs(cfg, self.train_counts, batch_tokens, self.args.measure_cutoff_cost)
        model = super().build_model(cfg, from_checkpoint)
        if self.args.dynamic_eval:
            self._use_dynamic_eval(model)
        if self.args.stateful_bptt and not hasattr(model, "carried_stream_state"):
            raise ValueError(
                f"--stateful-bptt needs a model that carries its hidden state from batch to batch "
                f"(--arch qrnn_lm and its variants); {type(model).__name__} scores every batch alone: "
                f"drop --stateful-bptt"
            )
        if self.args.neural_cache_size:
            if not hasattr(model, "use_neural_cache"):
                raise ValueError(f"--neural-cache-size needs --arch qrnn_lm or a variant; drop it for {type(model).__name__}")
            self.without_cache = ScoreTally(self.dictionary.pad())
            model.use_neural_cache(NeuralCache(self.args.neural_cache_size, self.args.neural_cache_theta,
                                               self.args.neural_cache_lambda, self.dictionary.pad(), self.without_cache))
        layer = getattr(model.decoder, "adaptive_softmax", None)
        if hasattr(layer, "cutoffs"):
            log_cluster_shares(layer.cutoffs[:-1], self.output_dictionary.count)
        self.fairseq_adaptive_softmax = hasattr(layer, "adapt_target")  # what adaptive_loss can drive
        return model

    def build_criterion(self, cfg):
        # fairseq-train builds the model first: refuse adaptive_loss before its own --ddp-backend check
        refuse_adaptive_loss_config(cfg, getattr(self, "fairseq_adaptive_softmax", True))
        return super().build_criterion(cfg)

    def _use_dynamic_eval(self, model) -> None:
        if not hasattr(model, "use_dynamic_eval"):
            raise ValueError(f"--dynamic-eval needs --arch qrnn_lm or a variant; drop it for {type(model).__name__}")
        if not self.args.stateful_bptt:
            raise ValueError("--dynamic-eval adapts the model along contiguous streams whose state it carries: "
                             "add --stateful-bptt")
        settings = {"split": self.args.train_subset, "segment": self.args.dynamic_eval_segment,
                    "tokens": self.args.dynamic_eval_stats_tokens, "streams": DYNAMIC_EVAL["statistics_streams"]}
        model.use_dynamic_eval(DynamicEvalSetup(self.args.dynamic_eval_lr, self.args.dynamic_eval_decay,
                                                self.dynamic_eval_statistics, self.args.dynamic_eval_stats_file,
                                                settings))


def _unwrap(model):
    while hasattr(model, "module"):  # DDP wrappers
        model = model.module
    return model
