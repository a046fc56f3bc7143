"""The fixtures the tests share; everything else they share is in helpers.py."""

import pytest

from helpers import CORPUS_LINES, CORPUS_SEED, make_corpus, preprocess, train


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    for offset, (split, n) in enumerate(CORPUS_LINES.items()):
        make_corpus(d / f"{split}.txt", n, CORPUS_SEED + offset)
    return d


def _splits(corpus):
    return dict(validpref=corpus / "valid.txt", testpref=corpus / "test.txt")


@pytest.fixture(scope="session")
def data_bin(tiny_corpus, tmp_path_factory):
    dest = tmp_path_factory.mktemp("data-bin")
    preprocess(dest, tiny_corpus / "train.txt", **_splits(tiny_corpus))
    return dest


@pytest.fixture(scope="session")
def trained_checkpoint(data_bin, tmp_path_factory):
    """A small qrnn_lm trained for 30 updates, shared by the tests that only score one."""
    save = tmp_path_factory.mktemp("trained-ckpt")
    train(data_bin, "--max-update", "30", "--save-dir", save, "--no-epoch-checkpoints")
    return save / "checkpoint_last.pt"


@pytest.fixture(scope="session")
def alphabetical_data_bin(tiny_corpus, data_bin, tmp_path_factory):
    """The same corpus binarized with an alphabetical --srcdict (not frequency-sorted)."""
    dest = tmp_path_factory.mktemp("data-bin-alpha")
    lines = (data_bin / "dict.txt").read_text().splitlines()
    srcdict = dest / "alphabetical.txt"
    srcdict.write_text("\n".join(sorted(lines)) + "\n")
    preprocess(dest, tiny_corpus / "train.txt", "--srcdict", srcdict, **_splits(tiny_corpus))
    return dest
