import os
import random
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)  # the venv's fairseq-* scripts
PLUGIN = os.path.join(ROOT, "fairseq_adasoft")

# A tiny corpus from a first-order Markov chain over a Zipf-like vocabulary:
# frequent words are frequent, and the next word is predictable, so a few
# updates visibly lower the loss.
CORPUS_VOCAB = 120
CORPUS_SEED = 1234


def make_corpus(path, n_lines, seed, vocab=CORPUS_VOCAB):
    rng = random.Random(seed)
    words = [f"w{i:03d}" for i in range(vocab)]
    weights = [1.0 / (i + 1) for i in range(vocab)]
    successor = {w: rng.choices(words, weights, k=3) for w in words}
    with open(path, "w") as f:
        for _ in range(n_lines):
            w = rng.choices(words, weights)[0]
            line = [w]
            for _ in range(rng.randint(5, 15)):
                w = rng.choice(successor[w]) if rng.random() < 0.8 else rng.choices(words, weights)[0]
                line.append(w)
            f.write(" ".join(line) + "\n")


def run(cmd, cwd=ROOT, env=None, check=True, timeout=600):
    """Run a CLI, returning (returncode, combined output); fail with the output."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{out[-6000:]}")
    return proc.returncode, out


def fairseq_cli(name):
    return os.path.join(BIN, name)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    for split, n, seed in (("train", 400, CORPUS_SEED), ("valid", 40, CORPUS_SEED + 1), ("test", 40, CORPUS_SEED + 2)):
        make_corpus(d / f"{split}.txt", n, seed)
    return d


@pytest.fixture(scope="session")
def data_bin(tiny_corpus, tmp_path_factory):
    dest = tmp_path_factory.mktemp("data-bin")
    run([
        fairseq_cli("fairseq-preprocess"), "--only-source",
        "--trainpref", tiny_corpus / "train.txt",
        "--validpref", tiny_corpus / "valid.txt",
        "--testpref", tiny_corpus / "test.txt",
        "--destdir", dest, "--workers", "1",
    ])
    return dest


@pytest.fixture(scope="session")
def trained_checkpoint(data_bin, tmp_path_factory):
    """A small qrnn_lm trained for 30 updates, shared by the tests that only score one."""
    from cli_setup import MODEL, TRAIN

    save = tmp_path_factory.mktemp("trained-ckpt")
    run([fairseq_cli("fairseq-train"), data_bin, "--user-dir", PLUGIN, "--arch", "qrnn_lm", *MODEL, *TRAIN,
         "--max-update", "30", "--save-dir", save, "--no-epoch-checkpoints"])
    return save / "checkpoint_last.pt"


@pytest.fixture(scope="session")
def alphabetical_data_bin(tiny_corpus, data_bin, tmp_path_factory):
    """The same corpus binarized with an alphabetical --srcdict (not frequency-sorted)."""
    dest = tmp_path_factory.mktemp("data-bin-alpha")
    lines = (data_bin / "dict.txt").read_text().splitlines()
    srcdict = dest / "alphabetical.txt"
    srcdict.write_text("\n".join(sorted(lines)) + "\n")
    run([
        fairseq_cli("fairseq-preprocess"), "--only-source", "--srcdict", srcdict,
        "--trainpref", tiny_corpus / "train.txt",
        "--validpref", tiny_corpus / "valid.txt",
        "--testpref", tiny_corpus / "test.txt",
        "--destdir", dest, "--workers", "1",
    ])
    return dest
