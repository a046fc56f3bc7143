"""What the command-line tests share: a small model, training flags, log parsing,
and the test split's nll computed directly from a checkpoint."""

import torch

import fairseq_adasoft  # noqa: F401  (registers the task for the in-process checkpoint load)
from fairseq_adasoft.logs import EVAL_RE, json_records  # noqa: F401  (EVAL_RE: fairseq-eval-lm's result line)

MODEL = ["--embed-dim", "32", "--hidden-size", "48", "--num-layers", "2",
         "--dropout", "0", "--dropout-input", "0", "--dropout-hidden", "0",
         "--dropout-embed", "0", "--weight-drop", "0"]
TRAIN = ["--task", "language_modeling_freqsorted", "--tokens-per-sample", "32",
         "--criterion", "adaptive_softmax", "--adaptive-softmax-cutoff", "20,60",
         "--optimizer", "adam", "--lr", "0.01", "--batch-size", "8", "--cpu",
         "--log-format", "json", "--log-interval", "5", "--seed", "3",
         # No data-loading threads: a sub-second run could end while one was still
         # alive, and the process then aborted at exit (seen once in CI).
         "--num-workers", "0", "--data-buffer-size", "0"]


def train_interval_values(output, key):
    """One value per logged training interval (epoch summaries say "train_loss", "train_lr" instead)."""
    return [float(rec[key]) for rec in json_records(output.splitlines()) if {"loss", "num_updates", key} <= rec.keys()]


def train_losses(output):
    return train_interval_values(output, "loss")


def own_test_nll(checkpoint, data_bin, corpus_file):
    """Mean natural-log nll of the test stream, computed here from the checkpoint."""
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides={"data": str(data_bin)}
    )
    model = models[0].eval()
    d = task.dictionary
    stream = torch.cat([
        d.encode_line(line, add_if_not_exist=False, append_eos=True).long()
        for line in open(corpus_file).read().splitlines()
    ])
    source = torch.cat([stream.new_tensor([d.eos()]), stream[:-1]]).unsqueeze(0)  # 1 x N
    with torch.no_grad():
        lprobs = model.get_normalized_probs(model(source), log_probs=True)[0]  # N x V
    return -lprobs.gather(1, stream.unsqueeze(1)).mean().item(), stream.numel()
