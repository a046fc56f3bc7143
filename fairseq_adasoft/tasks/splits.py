"""Checks of a binarized split before fairseq reads it: an empty or truncated
``.bin`` fails here, naming the file and the fairseq-preprocess flag that
rebuilds it, instead of deep in fairseq's mmap reader ("cannot mmap an empty
file", "buffer is smaller than requested size")."""

import os

import numpy as np
from fairseq.data import indexed_dataset

PREPROCESS_FLAG = {"train": "--trainpref", "valid": "--validpref", "test": "--testpref"}


def _preprocess_flag(split: str) -> str:
    return PREPROCESS_FLAG.get(split, "--validpref / --testpref")


def _or_leave_out(split: str) -> str:
    return "" if split == "train" else " (or leave the split out: --valid-subset, --disable-validation)"


def expected_bin_bytes(prefix: str) -> int:
    """The size of ``prefix.bin`` that the mmap index ``prefix.idx`` describes."""
    index = indexed_dataset.MMapIndexedDataset.Index(indexed_dataset.index_file_path(prefix))
    if len(index) == 0:
        return 0
    pointer, size = index[len(index) - 1]
    return int(pointer) + int(size) * np.dtype(index.dtype).itemsize


def check_split(prefix: str, split: str) -> None:
    """Raise a ValueError naming ``prefix.bin`` when it is empty or shorter than its index says."""
    bin_path = indexed_dataset.data_file_path(prefix)
    if not os.path.isfile(bin_path):
        return  # absent: fairseq's "Dataset not found" names the split already
    size = os.path.getsize(bin_path)
    if size == 0:
        raise ValueError(f"the {split} split {bin_path} is empty: give fairseq-preprocess a non-empty "
                         f"{_preprocess_flag(split)}{_or_leave_out(split)}")
    if indexed_dataset.infer_dataset_impl(prefix) != "mmap":
        return
    expected = expected_bin_bytes(prefix)
    if size < expected:
        raise ValueError(
            f"{bin_path} is truncated ({size} of the {expected} bytes its .idx describes; an interrupted "
            f"copy or fairseq-preprocess?): copy it again or rebuild it with fairseq-preprocess "
            f"{_preprocess_flag(split)}{_or_leave_out(split)}"
        )
