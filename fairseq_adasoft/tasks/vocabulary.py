"""The vocabulary order the adaptive softmax needs: word ids sorted by
decreasing training frequency.

It counts the tokens of the binarized training split, checks the dictionary
against those counts, and when it is not in that order (a ``--srcdict``, a
sentencepiece vocabulary, ...) builds a sorted copy and the old -> new id map
that every split is read through; special symbols keep their ids and the
user's files are never touched.
"""

import logging
import os
from typing import NamedTuple, Optional

import numpy as np
import torch
from fairseq import utils
from fairseq.data import BaseWrapperDataset, Dictionary, data_utils

from fairseq_adasoft.tasks.splits import check_split

logger = logging.getLogger(__name__)

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
    """The binarized training split under ``data``; a ValueError says what is missing."""
    path = _train_prefix(data)
    if os.path.isfile(path + ".bin") and os.path.getsize(path + ".bin") == 0:
        raise _empty_train_split(data)  # before check_split: train.sh and its users read this wording
    check_split(path, "train")
    dataset = data_utils.load_indexed_dataset(path, dictionary, dataset_impl)
    if dataset is None:
        raise ValueError(f"no training split at {path}.{{bin,idx}}: run fairseq-preprocess with --trainpref")
    return dataset


def train_token_counts(data: str, dictionary, dataset_impl=None) -> np.ndarray:
    """How often each dictionary id occurs in the binarized training split."""
    dataset = train_split(data, dictionary, dataset_impl)
    # One bincount per chunk of ~COUNT_CHUNK_TOKENS tokens, not per line: a
    # V-sized bincount per line would cost lines x V.
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


class FrequencyOrder(NamedTuple):
    dictionary: Dictionary  # in training-frequency order
    old_to_new: Optional[torch.Tensor]  # file id -> sorted id, None when the file is in order
    train_counts: np.ndarray  # training count of every (sorted) id


def frequency_order_of(data: str, d: Dictionary, dataset_impl=None, no_resort: bool = False,
                       max_unk_share: float = 1.0) -> FrequencyOrder:
    """``d`` re-sorted by its training counts in ``data``; ValueErrors name the fix."""
    counts = train_token_counts(data, d, dataset_impl)
    unk_share = counts[d.unk()] / counts.sum()
    if unk_share > max_unk_share:
        raise ValueError(
            f"{100 * unk_share:.1f}% of the training tokens in {data} are {d.unk_word}: the "
            f"dictionary lacks the training words. Rebuild the data with fairseq-preprocess without "
            f"--srcdict (or with a dictionary made from this training text), or raise --max-unk-share"
        )
    order = frequency_order(counts, d.nspecial)
    if order == list(range(len(d))):
        return FrequencyOrder(d, None, counts)
    dict_path = os.path.join(utils.split_paths(data)[0], "dict.txt")
    first = next(k for k, old in enumerate(order) if old != k)
    if no_resort:
        raise ValueError(
            f"{dict_path} is not in training-frequency order ({d[first]!r}, id {first}, occurs "
            f"{counts[first]} times; {d[order[first]]!r} occurs {counts[order[first]]} times): "
            f"drop --no-resort to re-sort it on the fly, or rebuild the data with "
            f"fairseq-preprocess --only-source without --srcdict"
        )
    old_to_new = torch.empty(len(d), dtype=torch.long)
    old_to_new[torch.tensor(order)] = torch.arange(len(d))
    moved = sum(1 for k, old in enumerate(order) if old != k)
    logger.info(
        "%s is not in training-frequency order: re-sorted %d of %d ids in memory (the file is "
        "unchanged; the order is saved in checkpoints)", dict_path, moved, len(d)
    )
    return FrequencyOrder(sorted_dictionary(d, order, counts), old_to_new, counts[order])
