"""Zipf's law for the benchmarks: target probabilities over a vocabulary, and
a synthetic corpus whose fairseq dictionary has exactly V entries, words drawn
with p(rank r) ∝ 1/r, binarized with fairseq-preprocess --only-source (the
WikiText-103-sized vocabulary of benchmarks.eval_lm and benchmarks.large_vocab).

Every word type occurs at least once in train (one occurrence of each, then
the Zipf samples, shuffled), so the dictionary built from train has all
V - 4 types and fairseq's 4 special symbols. Deterministic for a seed.
"""

import json
import os
import shutil
import subprocess

import numpy as np

from benchmarks.harness import BIN, need

N_SPECIAL = 4  # fairseq Dictionary: <s> <pad> </s> <unk>
PADDING_FACTOR = 8  # fairseq-preprocess pads the dictionary to a multiple of this with made-up words
LINE_TOKENS = 20  # words per line; fairseq adds </s> to each
SEED = 0
SPLITS = ("train", "valid", "test")
# The WikiText-103-sized corpus, and tiny stand-ins for --quick.
BENCHMARK = dict(vocab=267_744, sizes={"train": 2_000_000, "valid": 100_000, "test": 100_000})
QUICK = {"wikitext2": dict(vocab=1_000, sizes={"train": 20_000, "valid": 2_000, "test": 3_000}),
         "zipf": dict(vocab=2_000, sizes={"train": 20_000, "valid": 2_000, "test": 3_000})}


def zipf_probs(n_types: int) -> np.ndarray:
    p = 1.0 / np.arange(1, n_types + 1, dtype=np.float64)
    return p / p.sum()


def target_probs(vocab: int):
    """p(id) over a fairseq dictionary's ``vocab`` ids (a torch tensor): Zipf from id N_SPECIAL on, 0 for the specials."""
    import torch

    return torch.cat([torch.zeros(N_SPECIAL, dtype=torch.float64), torch.from_numpy(zipf_probs(vocab - N_SPECIAL))])


def write_text(dest: str, vocab: int, sizes: dict, seed: int = SEED) -> dict:
    """{train,valid,test}.txt under ``dest`` (``sizes``: each split's Zipf samples; train also
    holds one of every type); returns each split's word count."""
    if vocab % PADDING_FACTOR or vocab <= N_SPECIAL:
        raise ValueError(f"--zipf-vocab must be a multiple of {PADDING_FACTOR} above {N_SPECIAL} (fairseq-preprocess "
                         f"pads the dictionary to one with made-up words), got {vocab}")
    n_types, rng, words = vocab - N_SPECIAL, np.random.default_rng(seed), {}
    os.makedirs(dest, exist_ok=True)
    for split in SPLITS:
        ids = rng.choice(n_types, size=sizes[split], p=zipf_probs(n_types))
        if split == "train":
            ids = rng.permutation(np.concatenate([np.arange(n_types), ids]))
        with open(os.path.join(dest, f"{split}.txt"), "w") as f:
            f.writelines(" ".join(f"w{i}" for i in ids[k:k + LINE_TOKENS].tolist()) + "\n"
                         for k in range(0, len(ids), LINE_TOKENS))
        words[split] = int(ids.size)
    return words


def dictionary(data_bin: str):
    from fairseq.data import Dictionary

    return Dictionary.load(os.path.join(data_bin, "dict.txt"))


def dictionary_size(data_bin: str) -> int:
    return len(dictionary(data_bin))  # specials included


def split_tokens(data_bin: str) -> dict:
    """Tokens per split of a binarized corpus, fairseq-preprocess's end-of-line tokens included."""
    from fairseq.data import data_utils

    datasets = {s: data_utils.load_indexed_dataset(os.path.join(data_bin, s), dictionary(data_bin)) for s in SPLITS}
    return {s: int(d.sizes.sum()) if d is not None else 0 for s, d in datasets.items()}


def prepare(dest: str, vocab: int, sizes: dict, seed: int = SEED, workers: int = 2) -> str:
    """The binarized corpus in ``dest``/bin (text in ``dest``/text), reused when made with the same settings."""
    settings = {"vocab": vocab, "zipf_samples": sizes, "seed": seed, "line_tokens": LINE_TOKENS}
    data_bin, tmp, text = os.path.join(dest, "bin"), os.path.join(dest, "bin.tmp"), os.path.join(dest, "text")
    if os.path.exists(f"{data_bin}/.prepared") and json.load(open(f"{data_bin}/.prepared"))["settings"] == settings:
        return data_bin
    for d in (data_bin, tmp):  # another setting's, or an interrupted run's
        shutil.rmtree(d, ignore_errors=True)
    words = write_text(text, vocab, sizes, seed)
    cmd = [os.path.join(BIN, "fairseq-preprocess"), "--only-source", "--destdir", tmp, "--workers", str(workers),
           *(a for s in SPLITS for a in (f"--{s}pref", os.path.join(text, f"{s}.txt")))]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0 or dictionary_size(tmp) != vocab:
        raise RuntimeError(f"fairseq-preprocess failed or made another dictionary size than {vocab}:\n{out.stderr[-3000:]}")
    with open(os.path.join(tmp, ".prepared"), "w") as f:
        json.dump({"settings": settings, "words": words, "dictionary_size": vocab}, f)
    os.replace(tmp, data_bin)
    return data_bin


def benchmark_corpus(corpus: str, work: str, quick: bool, wikitext2: str) -> str:
    """The data-bin of ``corpus`` ("wikitext2" or "zipf"), made under ``work`` if synthetic."""
    if quick:
        return prepare(os.path.join(work, f"quick-{corpus}"), **QUICK[corpus])
    if corpus == "zipf":
        return prepare(os.path.join(work, f"zipf-{BENCHMARK['vocab']}"), **BENCHMARK)
    return need(wikitext2)
