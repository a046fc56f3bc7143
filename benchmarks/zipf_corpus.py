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
# benchmarks.eval_lm's corpora: the WikiText-103-sized one, and tiny stand-ins for its --quick.
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


def word(rank: int) -> str:
    return f"w{rank}"


def write_split(path: str, ids: np.ndarray) -> None:
    words = ids.tolist()
    with open(path, "w") as f:
        for start in range(0, len(words), LINE_TOKENS):
            f.write(" ".join(map(word, words[start : start + LINE_TOKENS])) + "\n")


def write_text(dest: str, vocab: int, sizes: dict, seed: int = SEED) -> dict:
    """{train,valid,test}.txt under ``dest``; ``sizes`` maps a split to its Zipf samples.
    Returns each split's word count (train: its samples plus one of every type)."""
    if vocab % PADDING_FACTOR or vocab <= N_SPECIAL:
        raise ValueError(f"--zipf-vocab must be a multiple of {PADDING_FACTOR} above {N_SPECIAL} (fairseq-preprocess "
                         f"pads the dictionary to one with made-up words), got {vocab}")
    n_types = vocab - N_SPECIAL
    rng = np.random.default_rng(seed)
    p = zipf_probs(n_types)
    os.makedirs(dest, exist_ok=True)
    words = {}
    for split in SPLITS:
        ids = rng.choice(n_types, size=sizes[split], p=p)
        if split == "train":
            ids = rng.permutation(np.concatenate([np.arange(n_types), ids]))
        write_split(os.path.join(dest, f"{split}.txt"), ids)
        words[split] = int(ids.size)
    return words


def dictionary_size(data_bin: str) -> int:
    """len() of the fairseq Dictionary in ``data_bin``, specials included."""
    from fairseq.data import Dictionary

    return len(Dictionary.load(os.path.join(data_bin, "dict.txt")))


def split_tokens(data_bin: str) -> dict:
    """Tokens per split of a binarized corpus, fairseq-preprocess's end-of-line tokens included."""
    from fairseq.data import Dictionary, data_utils

    d = Dictionary.load(os.path.join(data_bin, "dict.txt"))
    sizes = {}
    for split in SPLITS:
        dataset = data_utils.load_indexed_dataset(os.path.join(data_bin, split), d)
        sizes[split] = int(dataset.sizes.sum()) if dataset is not None else 0
    return sizes


def prepare(dest: str, vocab: int, sizes: dict, seed: int = SEED, workers: int = 2) -> str:
    """The binarized corpus in ``dest``/bin (text in ``dest``/text); skipped when
    ``dest`` already holds one made with the same settings."""
    settings = {"vocab": vocab, "zipf_samples": sizes, "seed": seed, "line_tokens": LINE_TOKENS}
    data_bin, marker = os.path.join(dest, "bin"), os.path.join(dest, "bin", ".prepared")
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f)["settings"] == settings:
                return data_bin
    shutil.rmtree(data_bin, ignore_errors=True)  # another setting's, or an interrupted run's
    text = os.path.join(dest, "text")
    words = write_text(text, vocab, sizes, seed)
    tmp = data_bin + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [os.path.join(BIN, "fairseq-preprocess"), "--only-source", "--destdir", tmp, "--workers", str(workers)]
    for split in SPLITS:
        cmd += [f"--{split}pref", os.path.join(text, f"{split}.txt")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"fairseq-preprocess failed:\n{out.stderr[-3000:]}")
    got = dictionary_size(tmp)
    if got != vocab:
        raise RuntimeError(f"{tmp}/dict.txt gives a {got}-entry dictionary, not {vocab}")
    with open(os.path.join(tmp, ".prepared"), "w") as f:
        json.dump({"settings": settings, "words": words, "dictionary_size": got}, f)
    os.replace(tmp, data_bin)
    return data_bin


def benchmark_corpus(corpus: str, work: str, quick: bool, wikitext2: str) -> str:
    """The data-bin of ``corpus`` ("wikitext2" or "zipf"), made under ``work`` if synthetic."""
    if quick:
        return prepare(os.path.join(work, f"quick-{corpus}"), **QUICK[corpus])
    if corpus == "zipf":
        return prepare(os.path.join(work, f"zipf-{BENCHMARK['vocab']}"), **BENCHMARK)
    return need(wikitext2)
