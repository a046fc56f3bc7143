"""``language_modeling_freqsorted``: fairseq's ``language_modeling`` task for
models with an adaptive softmax (Grave et al. 2017), whose clusters are only
meaningful when word ids are sorted by decreasing frequency.

At setup it counts the tokens of the real training split. When the dictionary
(a ``--srcdict``, a sentencepiece vocabulary, ...) is not in that order, it
builds a sorted dictionary and remaps every split's ids on the fly, never
touching the user's files; special symbols keep their ids, and the order is
saved in the checkpoint's task state. It also resolves fractional
``--adaptive-softmax-cutoff`` values into word ids before the model is built
(so the checkpoint keeps ids), and logs the share of training tokens per cluster.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from fairseq import utils
from fairseq.data import BaseWrapperDataset, Dictionary, data_utils, iterators
from fairseq.distributed import utils as distributed_utils
from fairseq.tasks import register_task
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask

from fairseq_adasoft.modules import NeuralCache, is_fraction_spec, parse_cutoffs
from fairseq_adasoft.tasks.streams import StreamBatches, TokenStream
from fairseq_adasoft.modules.cutoff_search import (
    DEFAULT_COST_MODEL,
    CostModel,
    auto_cutoffs,
    expected_cost,
    measure_cost_model,
)

logger = logging.getLogger(__name__)

# The best of benchmarks/tune_neural_cache.py's grid on WikiText-2's validation split for
# qrnn_lm_wikitext2 (with size 2000; benchmarks/results/wikitext2_main_protocols.json, "cache").
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
                  "dictionary that lacks the training words (WikiText-2 has 2.6%)"},
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


COUNT_CHUNK_TOKENS = 1 << 20  # tokens per bincount when counting the training split


class RemapTokensDataset(BaseWrapperDataset):
    """Language-model samples with every token id mapped through ``old_to_new``."""

    def __init__(self, dataset, old_to_new: torch.Tensor):
        super().__init__(dataset)
        self.old_to_new = old_to_new

    def __getitem__(self, index):
        item = dict(self.dataset[index])
        for key in ("source", "target"):
            if item.get(key) is not None:
                item[key] = self.old_to_new[item[key]]
        return item


def _train_prefix(data: str) -> str:
    return os.path.join(utils.split_paths(data)[0], "train")


def _empty_train_split(data: str) -> ValueError:
    return ValueError(f"the training split {_train_prefix(data)} is empty: give fairseq-preprocess a non-empty --trainpref")


def train_split(data: str, dictionary, dataset_impl=None):
    """The binarized training split under ``data`` (recipes/wikitext2/train.sh
    sizes its epochs from it); a ValueError says what is missing."""
    path = _train_prefix(data)
    if os.path.isfile(path + ".bin") and os.path.getsize(path + ".bin") == 0:
        raise _empty_train_split(data)  # fairseq's mmap reader would only say "cannot mmap an empty file"
    dataset = data_utils.load_indexed_dataset(path, dictionary, dataset_impl)
    if dataset is None:
        raise ValueError(f"no training split at {path}.{{bin,idx}}: run fairseq-preprocess with --trainpref")
    return dataset


def train_token_counts(data: str, dictionary, dataset_impl=None) -> np.ndarray:
    """How often each dictionary id occurs in the binarized training split."""
    dataset = train_split(data, dictionary, dataset_impl)
    # One bincount per chunk of ~COUNT_CHUNK_TOKENS tokens, not per line: a
    # V-sized bincount per line would cost lines x V (WikiText-103: 1.8M x 267k).
    counts = np.zeros(len(dictionary), dtype=np.int64)
    chunk, chunk_tokens = [], 0
    for i in range(len(dataset)):
        chunk.append(dataset[i].numpy())
        chunk_tokens += len(chunk[-1])
        if chunk_tokens >= COUNT_CHUNK_TOKENS or i == len(dataset) - 1:
            counts += np.bincount(np.concatenate(chunk), minlength=len(dictionary))
            chunk, chunk_tokens = [], 0
    if counts.sum() == 0:
        raise _empty_train_split(data)
    return counts


def frequency_order(counts: np.ndarray, nspecial: int) -> list:
    """Old ids in their new order: specials first, unchanged, then by decreasing
    training count (ties keep the dictionary's order)."""
    rest = sorted(range(nspecial, len(counts)), key=lambda i: (-counts[i], i))
    return list(range(nspecial)) + rest


def sorted_dictionary(dictionary, order: list, counts: np.ndarray):
    """A copy of ``dictionary`` whose id k is the old id ``order[k]``."""
    new = Dictionary(bos=dictionary.bos_word, pad=dictionary.pad_word, eos=dictionary.eos_word,
                     unk=dictionary.unk_word, extra_special_symbols=None)
    new.symbols = [dictionary.symbols[i] for i in order]
    new.count = [int(counts[i]) for i in order]
    new.indices = {sym: i for i, sym in enumerate(new.symbols)}
    new.nspecial = dictionary.nspecial
    return new


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


@register_task("language_modeling_freqsorted", dataclass=FreqSortedLanguageModelingConfig)
class FreqSortedLanguageModelingTask(LanguageModelingTask):
    """Language modelling with frequency-sorted word ids, as the adaptive
    softmax of Grave et al. 2017 ("Efficient softmax approximation for GPUs")
    requires."""

    @classmethod
    def setup_task(cls, args, **kwargs):
        check_data_dir(args.data)
        task = super().setup_task(args, **kwargs)
        task.resort_by_training_frequency()
        # Saved in checkpoints: the words behind the model's ids.
        task.state.merge_state_dict({"dictionary_symbols": list(task.dictionary.symbols)})
        return task

    def resort_by_training_frequency(self) -> None:
        d = self.dictionary
        counts = train_token_counts(self.args.data, d, self.args.dataset_impl)
        unk_share = counts[d.unk()] / counts.sum()
        if unk_share > self.args.max_unk_share:
            raise ValueError(
                f"{100 * unk_share:.1f}% of the training tokens in {self.args.data} are {d.unk_word}: the "
                f"dictionary lacks the training words. Rebuild the data with fairseq-preprocess without "
                f"--srcdict (or with a dictionary made from this training text), or raise --max-unk-share"
            )
        order = frequency_order(counts, d.nspecial)
        self.train_counts = counts[order]  # in the (new) id order
        self.old_to_new = None
        if order == list(range(len(d))):
            return
        dict_path = os.path.join(utils.split_paths(self.args.data)[0], "dict.txt")
        first = next(k for k, old in enumerate(order) if old != k)
        if self.args.no_resort:
            raise ValueError(
                f"{dict_path} is not in training-frequency order ({d[first]!r}, id {first}, occurs "
                f"{counts[first]} times; {d[order[first]]!r} occurs {counts[order[first]]} times): "
                f"drop --no-resort to re-sort it on the fly, or rebuild the data with "
                f"fairseq-preprocess --only-source without --srcdict"
            )
        self.old_to_new = torch.empty(len(d), dtype=torch.long)
        self.old_to_new[torch.tensor(order)] = torch.arange(len(d))
        self.dictionary = self.output_dictionary = sorted_dictionary(d, order, counts)
        moved = sum(1 for k, old in enumerate(order) if old != k)
        logger.info(
            "%s is not in training-frequency order: re-sorted %d of %d ids in memory (the file is "
            "unchanged; the order is saved in checkpoints)", dict_path, moved, len(d)
        )

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
        if self.args.stateful_bptt:
            self.datasets[split] = self._token_stream(split, epoch, combine)
            return self.datasets[split]
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        if self.old_to_new is not None:  # binarized with the file's ids
            self.datasets[split] = RemapTokensDataset(self.datasets[split], self.old_to_new)
        return self.datasets[split]

    def _token_stream(self, split, epoch, combine) -> TokenStream:
        paths = utils.split_paths(self.args.data)
        path = os.path.join(paths[(epoch - 1) % len(paths)], split)
        lines = data_utils.load_indexed_dataset(path, self.dictionary, self.args.dataset_impl, combine=combine)
        if lines is None or len(lines) == 0:
            raise ValueError(f"--stateful-bptt: no {split!r} split at {path}.{{bin,idx}}: binarize it with fairseq-preprocess")
        tokens = torch.from_numpy(np.concatenate([lines[i].numpy() for i in range(len(lines))]).astype(np.int32))
        if self.old_to_new is not None:  # binarized with the file's ids
            tokens = self.old_to_new[tokens.long()].int()
        logger.info("--stateful-bptt: %s is one stream of %d tokens", split, len(tokens))
        return TokenStream(split, tokens, eos=self.dictionary.eos(), pad=self.dictionary.pad())

    def get_batch_iterator(self, dataset, max_tokens=None, max_sentences=None, max_positions=None,
                           ignore_invalid_inputs=False, required_batch_size_multiple=1, seed=1,
                           num_shards=1, shard_id=0, num_workers=0, epoch=1, data_buffer_size=0,
                           disable_iterator_cache=False, skip_remainder_batch=False, **kwargs):
        if not isinstance(dataset, TokenStream):
            return super().get_batch_iterator(
                dataset, max_tokens=max_tokens, max_sentences=max_sentences, max_positions=max_positions,
                ignore_invalid_inputs=ignore_invalid_inputs, required_batch_size_multiple=required_batch_size_multiple,
                seed=seed, num_shards=num_shards, shard_id=shard_id, num_workers=num_workers, epoch=epoch,
                data_buffer_size=data_buffer_size, disable_iterator_cache=disable_iterator_cache,
                skip_remainder_batch=skip_remainder_batch, **kwargs)
        if not max_sentences:
            raise ValueError("--stateful-bptt batches whole streams: set --batch-size (streams per process; "
                             "--batch-size-valid for validation) instead of --max-tokens")
        batches = StreamBatches(dataset, max_sentences, self.args.tokens_per_sample, num_shards, shard_id)
        # One item of ``batches`` is one whole batch, and order matters: no shuffling.
        return iterators.EpochBatchIterator(
            dataset=batches, collate_fn=batches.collater, batch_sampler=[[k] for k in range(len(batches))],
            seed=seed, num_workers=num_workers, epoch=epoch, buffer_size=data_buffer_size,
            disable_shuffling=True)

    def eval_lm_dataloader(self, dataset, max_tokens=36000, batch_size=None, max_positions=None,
                           num_shards=1, shard_id=0, num_workers=1, data_buffer_size=10, context_window=0):
        if not isinstance(dataset, TokenStream):
            return super().eval_lm_dataloader(dataset, max_tokens, batch_size, max_positions, num_shards,
                                              shard_id, num_workers, data_buffer_size, context_window)
        if context_window > 0:
            raise ValueError("--context-window re-reads context for independent blocks; --stateful-bptt "
                             "carries the state instead: drop one of the two")
        return self.get_batch_iterator(
            dataset, max_sentences=batch_size or 1, num_shards=num_shards, shard_id=shard_id,
            num_workers=num_workers, data_buffer_size=data_buffer_size,
        ).next_epoch_itr(shuffle=False)

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if self.args.neural_cache_size:
            raise ValueError("--neural-cache-size is an evaluation option (fairseq-eval-lm): drop it from fairseq-train")
        out = super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        stream = sample.get("net_input", {}).get("stream")
        if stream is not None and distributed_utils.get_data_parallel_world_size() > 1:
            self._share_stream_state(model, stream)
        return out

    @staticmethod
    def _share_stream_state(model, stream) -> None:
        """Give every process the state of all S streams, so that rank 0's checkpoint
        can resume every rank's streams: each contributes its rows to one sum."""
        while hasattr(model, "module"):  # DDP wrappers
            model = model.module
        tensors = model.carried_stream_state(stream["name"])
        rows = slice(stream["first_row"], stream["first_row"] + stream["rows"])
        mine = [torch.zeros_like(t, dtype=torch.float32) for t in tensors]  # S x H (or S x C), fp32 to sum
        for m, t in zip(mine, tensors):
            m[rows] = t[rows]
        flat = torch.cat([m.flatten() for m in mine])
        flat = distributed_utils.all_reduce(flat, group=distributed_utils.get_data_parallel_group())
        for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
            t.copy_(part.view_as(t))

    def build_model(self, cfg, from_checkpoint=False):
        spec = getattr(cfg, "adaptive_softmax_cutoff", None)
        if spec == "auto":
            cfg.adaptive_softmax_cutoff = ",".join(map(str, self.choose_cutoffs(cfg)))
        elif spec and is_fraction_spec(str(spec)):
            # Resolved here so that the checkpoint keeps word ids.
            cutoffs = parse_cutoffs(str(spec), len(self.output_dictionary))
            cfg.adaptive_softmax_cutoff = ",".join(map(str, cutoffs))
        # Ids are validated by the model that uses them: fairseq's lstm_lm carries a
        # default cutoff it ignores unless its criterion is adaptive_loss.
        model = super().build_model(cfg, from_checkpoint)
        if self.args.stateful_bptt and not hasattr(model, "carried_stream_state"):
            raise ValueError(
                f"--stateful-bptt needs a model that carries its hidden state from batch to batch "
                f"(--arch qrnn_lm and its variants); {type(model).__name__} scores every batch alone: "
                f"drop --stateful-bptt"
            )
        if self.args.neural_cache_size:
            if not hasattr(model, "use_neural_cache"):
                raise ValueError(f"--neural-cache-size needs --arch qrnn_lm or a variant; drop it for {type(model).__name__}")
            model.use_neural_cache(NeuralCache(self.args.neural_cache_size, self.args.neural_cache_theta,
                                               self.args.neural_cache_lambda, pad=self.dictionary.pad()))
        layer = getattr(model.decoder, "adaptive_softmax", None)
        if hasattr(layer, "cutoffs"):
            self._log_cluster_shares(layer.cutoffs[:-1])
        # fairseq's adaptive_loss drives fairseq's AdaptiveSoftmax through adapt_target().
        self._fairseq_adaptive_softmax = hasattr(layer, "adapt_target")
        return model

    def choose_cutoffs(self, cfg):
        """--adaptive-softmax-cutoff auto: the cheapest cutoffs under Grave et al.'s cost model."""
        d = getattr(cfg, "embed_dim", None) or getattr(cfg, "decoder_output_dim", None)
        if not d:
            raise ValueError("--adaptive-softmax-cutoff auto needs the model's output dimension "
                             "(embed_dim or decoder_output_dim); give the cutoffs explicitly")
        div_value = getattr(cfg, "adaptive_softmax_div_value", None) or getattr(cfg, "adaptive_softmax_factor", 4.0)
        batch_tokens = self.args.cutoff_batch_tokens or (self.args.batch_size or 1) * self.args.tokens_per_sample
        cost = DEFAULT_COST_MODEL
        if self.args.measure_cutoff_cost:
            cost = measure_cost_model("cuda" if torch.cuda.is_available() else "cpu")
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                # Every rank must choose the same cutoffs: average the measurements.
                t = torch.tensor([cost.overhead_s, cost.seconds_per_madd, cost.flat_madds], dtype=torch.float64)
                torch.distributed.all_reduce(t)
                cost = CostModel(*(t / torch.distributed.get_world_size()).tolist())
        cutoffs = auto_cutoffs(self.train_counts, d, div_value, batch_tokens, cost)
        V = len(self.output_dictionary)
        seed = [round(V / 15), 3 * round(V / 15)]
        logger.info(
            "--adaptive-softmax-cutoff auto: %s, modelled %.3g ms per batch of %d tokens (the [V/15, 3V/15] "
            "rule: %.3g ms), cost model %s", cutoffs, 1e3 * expected_cost(cutoffs, self.train_counts, d, div_value,
            batch_tokens, cost), batch_tokens, 1e3 * expected_cost(seed, self.train_counts, d, div_value,
            batch_tokens, cost), cost,
        )
        return cutoffs

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
