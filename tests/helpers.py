"""What the tests share (conftest.py holds only the fixtures built from it): the
generated corpus, the small model, the real command-line tools (``run``,
``preprocess``, ``train``, ``eval_lm``), the in-process ``build`` of what
fairseq-train builds, and parsing of what those tools print."""

import os
import random
import subprocess
import sys

import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

import fairseq_adasoft  # noqa: F401  (registers the components for the in-process builds and loads)
from fairseq_adasoft.logs import EVAL_RE, json_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)  # the venv's fairseq-* scripts
PLUGIN = os.path.join(ROOT, "fairseq_adasoft")

# A tiny corpus from a first-order Markov chain over a Zipf-like vocabulary:
# frequent words are frequent, and the next word is predictable, so a few
# updates visibly lower the loss.
CORPUS_VOCAB = 120
CORPUS_SEED = 1234
CORPUS_LINES = {"train": 400, "valid": 40, "test": 40}


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


# The small qrnn_lm. ``small_model()`` is what train() trains; in-process builds
# use a narrower one (SMALL_MODEL), whose width some messages checked quote ("d=16").
DROPOUTS = ("dropout", "dropout-input", "dropout-hidden", "dropout-embed", "weight-drop")


def small_model(embed_dim=32, hidden_size=48, num_layers=2, dropout=0):
    """The model's flags; ``dropout=None`` keeps the architecture's dropouts."""
    flags = ["--embed-dim", str(embed_dim), "--hidden-size", str(hidden_size), "--num-layers", str(num_layers)]
    for name in DROPOUTS if dropout is not None else ():
        flags += [f"--{name}", str(dropout)]
    return flags


MODEL = small_model()
SMALL_MODEL = small_model(16, 24, dropout=None)

FREQSORTED = ["--task", "language_modeling_freqsorted"]
TRAIN = [*FREQSORTED, "--tokens-per-sample", "32",
         "--criterion", "adaptive_softmax", "--adaptive-softmax-cutoff", "20,60",
         "--optimizer", "adam", "--lr", "0.01", "--batch-size", "8", "--cpu",
         "--log-format", "json", "--log-interval", "5", "--seed", "3",
         # No data-loading threads: a sub-second run could end while one was still
         # alive, and the process then aborted at exit (seen once in CI).
         "--num-workers", "0", "--data-buffer-size", "0"]


def fairseq_cli(name):
    """The venv's console script ``name`` (fairseq-train, torchrun, python, ...)."""
    return os.path.join(BIN, name)


def run(cmd, cwd=ROOT, env=None, check=True, timeout=600):
    """Run a CLI, returning (returncode, combined output); fail with the output."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{out[-6000:]}")
    return proc.returncode, out


def preprocess(destdir, trainpref, *flags, validpref=None, testpref=None):
    """fairseq-preprocess --only-source of one to three text files into ``destdir``."""
    prefs = [(name, path) for name, path in (("--validpref", validpref), ("--testpref", testpref)) if path]
    return run([fairseq_cli("fairseq-preprocess"), "--only-source", *flags, "--trainpref", trainpref,
                *(arg for pref in prefs for arg in pref), "--destdir", destdir, "--workers", "1"])


def train_args(data, *flags, user_dir=PLUGIN, model=MODEL):
    """fairseq-train's arguments: the small model with TRAIN's settings, then ``flags``."""
    return [data, "--user-dir", user_dir, "--arch", "qrnn_lm", *model, *TRAIN, *flags]


def train(data, *flags, check=True, cwd=ROOT, user_dir=PLUGIN, model=MODEL):
    """fairseq-train (see train_args); returns (returncode, output)."""
    return run([fairseq_cli("fairseq-train"), *train_args(data, *flags, user_dir=user_dir, model=model)],
               cwd=cwd, check=check)


def torchrun(torchrun_flags, data, *flags):
    """torchrun's command line for train_args(data, *flags) through fairseq_adasoft.launch."""
    return [fairseq_cli("torchrun"), *torchrun_flags, "-m", "fairseq_adasoft.launch", *train_args(data, *flags)]


def eval_lm(data, checkpoint, *flags, subset="test", check=True, cwd=ROOT, user_dir=PLUGIN):
    """fairseq-eval-lm on the CPU over ``subset``; returns (returncode, output)."""
    return run([fairseq_cli("fairseq-eval-lm"), data, "--user-dir", user_dir, "--path", checkpoint,
                "--gen-subset", subset, "--cpu", *flags], cwd=cwd, check=check)


def eval_result(output):
    """fairseq-eval-lm's last result line: (loss in base 2, perplexity), as printed."""
    return EVAL_RE.findall(output)[-1]


def train_interval_values(output, key):
    """One value per logged training interval (epoch summaries say "train_loss", "train_lr" instead)."""
    return [float(rec[key]) for rec in json_records(output.splitlines()) if {"loss", "num_updates", key} <= rec.keys()]


def train_losses(output):
    return train_interval_values(output, "loss")


def saved(path):
    """A checkpoint file's saved dict, on the CPU (fairseq pickles more than tensors)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def training_config(data, *extra, arch="qrnn_lm", criterion="adaptive_softmax", task="language_modeling_freqsorted"):
    """fairseq-train's configuration for these arguments (on the CPU), parsed in-process."""
    args = options.parse_args_and_arch(
        options.get_training_parser(),
        input_args=[str(data), "--user-dir", PLUGIN, "--task", task, "--arch", arch,
                    "--criterion", criterion, "--cpu", *map(str, extra)],
    )
    return convert_namespace_to_omegaconf(args)


def build(data, *extra, **components):
    """Task, model and criterion, built in-process exactly as fairseq-train does."""
    cfg = training_config(data, *extra, **components)
    task_obj = tasks.setup_task(cfg.task)
    model = task_obj.build_model(cfg.model)
    return task_obj, model, task_obj.build_criterion(cfg.criterion)


def load_stream(checkpoint, data_bin, corpus_file):
    """A checkpoint's model (in eval mode) and dictionary, and ``corpus_file`` as one
    stream: its N words (each line ending in eos), and the 1 x N source that reads them."""
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides={"data": str(data_bin)}
    )
    d = task.dictionary
    stream = torch.cat([
        d.encode_line(line, add_if_not_exist=False, append_eos=True).long()
        for line in open(corpus_file).read().splitlines()
    ])
    source = torch.cat([stream.new_tensor([d.eos()]), stream[:-1]]).unsqueeze(0)  # 1 x N
    return models[0].eval(), d, stream, source


def own_test_nll(checkpoint, data_bin, corpus_file):
    """Mean natural-log nll of the test stream, computed here from the checkpoint."""
    model, _, stream, source = load_stream(checkpoint, data_bin, corpus_file)
    with torch.no_grad():
        lprobs = model.get_normalized_probs(model(source), log_probs=True)[0]  # N x V
    return -lprobs.gather(1, stream.unsqueeze(1)).mean().item(), stream.numel()
