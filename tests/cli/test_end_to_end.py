"""The real command-line tools on a tiny generated corpus."""

import math
import os
import re
import subprocess
import sys

import pytest
import torch

from helpers import (FREQSORTED, PLUGIN, ROOT, eval_lm, eval_result, fairseq_cli, own_test_nll, run, saved, torchrun,
                     train, train_losses)

pytestmark = pytest.mark.slow

WHOLE_STREAM = ["--tokens-per-sample", "4096", "--batch-size", "1"]  # the test split in one block


def test_preprocess_train_eval_lm(data_bin, tiny_corpus, tmp_path):
    save = tmp_path / "ckpt"
    _, out = train(data_bin, "--max-update", "60", "--save-dir", save, user_dir="fairseq_adasoft")
    losses = train_losses(out)
    assert len(losses) == 12 and losses[-1] < losses[0] - 1.0, losses
    checkpoint = save / "checkpoint_last.pt"
    assert checkpoint.exists()

    # The installed package path works as --user-dir too, from any directory.
    installed = subprocess.run(
        [fairseq_cli("python"), "-c", "import fairseq_adasoft, os; print(os.path.dirname(fairseq_adasoft.__file__))"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert os.path.samefile(installed, PLUGIN)
    _, out = eval_lm(data_bin, checkpoint, *WHOLE_STREAM, user_dir=installed, cwd=tmp_path)
    loss_base2, ppl = map(float, eval_result(out))

    nll, ntokens = own_test_nll(checkpoint, data_bin, tiny_corpus / "test.txt")
    assert f"Evaluated {ntokens:,} tokens" in out
    assert math.exp(nll) == pytest.approx(2 ** loss_base2, rel=1e-4)
    assert math.exp(nll) == pytest.approx(ppl, abs=0.006)  # eval-lm prints 2 decimals

    sampled = subprocess.run(
        [fairseq_cli("python"), os.path.join(ROOT, "examples", "sample.py"), checkpoint,
         "--data", data_bin, "--prefix", "w000 w001", "--words", "6"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # end-of-line samples print as line breaks, not words
    assert sampled[:2] == ["w000", "w001"] and 2 < len(sampled) <= 8
    assert all(re.fullmatch(r"w\d{3}|<unk>", w) for w in sampled), sampled


# None is fairseq's default, pytorch_ddp, of which c10d is an alias (fairseq.models.distributed_fairseq_model).
@pytest.mark.parametrize("ddp_backend", [None, "legacy_ddp"])
def test_ddp_two_processes(data_bin, tmp_path, ddp_backend):
    """Two gloo processes train and save, under the default --ddp-backend
    (pytorch_ddp, without --find-unused-parameters) and the others."""
    save = tmp_path / "ckpt"
    _, single = train(data_bin, "--max-update", "1", "--no-save")
    _, out = run(torchrun(["--standalone", "--nproc_per_node", "2"], data_bin,
                          "--distributed-backend", "gloo", "--max-update", "10", "--save-dir", save,
                          *(["--ddp-backend", ddp_backend] if ddp_backend else [])))
    assert "distributed init (rank 1)" in out and "distributed init (rank 0)" in out
    assert "find_unused_parameters': False" in out
    assert f"ddp_backend': '{ddp_backend or 'pytorch_ddp'}'" in out
    # Each rank reads half of the epoch's batches.
    per_epoch = lambda log: int(re.search(r"grouped total_num_itrs = (\d+)", log).group(1))  # noqa: E731
    assert per_epoch(out) == math.ceil(per_epoch(single) / 2)
    state = saved(save / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == 10
    assert state["cfg"]["distributed_training"]["distributed_world_size"] == 2
    assert train_losses(out)[-1] < train_losses(out)[0]


def test_cli_reports_bad_input_with_the_fix(tmp_path):
    code, out = train(tmp_path / "missing", "--max-update", "1", model=[], check=False)
    assert code != 0
    assert "ValueError: data directory" in out and "run fairseq-preprocess --only-source" in out


def test_resorted_dictionary_trains_and_evaluates_unchanged(data_bin, alphabetical_data_bin, tmp_path):
    """Trained on data binarized with an alphabetical --srcdict (re-sorted on the
    fly), the model scores the test split identically through the remap and
    through data that fairseq-preprocess sorted itself."""
    save = tmp_path / "ckpt"
    _, out = train(alphabetical_data_bin, "--max-update", "20", "--save-dir", save)
    assert "not in training-frequency order: re-sorted" in out
    checkpoint = save / "checkpoint_last.pt"
    perplexities = []
    for data in (alphabetical_data_bin, data_bin):
        _, out = eval_lm(data, checkpoint, *WHOLE_STREAM, *FREQSORTED)
        perplexities.append(eval_result(out))
    assert perplexities[0] == perplexities[1]
    # fairseq's own task would read the alphabetical ids as they are: refused, naming the fix.
    code, out = eval_lm(alphabetical_data_bin, checkpoint, *WHOLE_STREAM, check=False)
    assert code != 0 and "pass --task language_modeling_freqsorted" in out


def test_plot_training_draws_both_figures_for_each_run(data_bin, tmp_path):
    logs = {}
    for name, extra in (("adaptive", []), ("full", ["--adaptive-softmax-cutoff", ""])):
        log = tmp_path / f"{name}.log"
        train(data_bin, *extra, "--max-epoch", "2", "--max-update", "30", "--log-file", log, "--no-save")
        logs[name] = log
    out = tmp_path / "curves.png"
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from plot_training import plot_runs, read_log

    runs = {name: read_log(str(log)) for name, log in logs.items()}
    assert all(len(r["valid"]) == 2 and len(r["train"]) >= 4 for r in runs.values())
    fig = plot_runs(runs, str(out))
    by_time, by_epoch = fig.axes
    assert [line.get_label() for line in by_time.lines] == ["adaptive", "full"]
    assert {"adaptive (train)", "full (valid)"} <= {line.get_label() for line in by_epoch.lines}
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    # The command line does the same.
    run([fairseq_cli("python"), os.path.join(ROOT, "examples", "plot_training.py"), "--out", tmp_path / "cli.png",
         f"adaptive={logs['adaptive']}", f"full={logs['full']}"])
    assert (tmp_path / "cli.png").stat().st_size > 10_000


def test_store_ema_averages_the_weights_and_they_evaluate(data_bin, tiny_corpus, tmp_path):
    """fairseq's --store-ema keeps an exponential average of the weights beside
    them. The model's integer word-order buffer must be copied, not averaged
    (fairseq cannot average an integer tensor), and the averaged weights load
    and score like any checkpoint."""
    decay, start, last = 0.8, 10, 20
    save = tmp_path / "ckpt"
    train(data_bin, "--batch-size", "2",  # an epoch of ~70 updates: no epoch end among those read back
          "--max-update", str(last), "--store-ema", "--ema-decay", str(decay), "--ema-start-update", str(start),
          "--save-interval-updates", "1", "--keep-interval-updates", "-1", "--no-epoch-checkpoints",
          "--save-dir", save)

    def weights(path):
        return saved(path)["model"]

    # Before --ema-start-update fairseq copies the weights; from it on, it averages.
    expected = weights(next(save.glob(f"checkpoint_*_{start - 1}.pt")))
    for n in range(start, last + 1):
        new = weights(next(save.glob(f"checkpoint_*_{n}.pt")))
        expected = {k: v if not v.is_floating_point() else decay * expected[k] + (1 - decay) * new[k]
                    for k, v in new.items()}
    state = saved(save / "checkpoint_last.pt")
    ema = state["extra_state"]["ema"]
    assert ema.keys() == expected.keys()
    for key in ema:
        torch.testing.assert_close(ema[key], expected[key], rtol=1e-5, atol=1e-6)
    assert not torch.equal(ema["decoder.embed_tokens.weight"], state["model"]["decoder.embed_tokens.weight"])

    # fairseq writes the averaged weights as a checkpoint of their own; fairseq-eval-lm
    # scores it as our own loop does.
    from fairseq.checkpoint_utils import save_ema_as_checkpoint

    save_ema_as_checkpoint(str(save / "checkpoint_last.pt"), str(tmp_path / "ema.pt"))  # fairseq needs str
    _, out = eval_lm(data_bin, tmp_path / "ema.pt", *WHOLE_STREAM)
    loss_base2, _ = map(float, eval_result(out))
    ema_nll, _ = own_test_nll(tmp_path / "ema.pt", data_bin, tiny_corpus / "test.txt")
    assert math.exp(ema_nll) == pytest.approx(2 ** loss_base2, rel=1e-4)
    assert ema_nll != own_test_nll(save / "checkpoint_last.pt", data_bin, tiny_corpus / "test.txt")[0]
