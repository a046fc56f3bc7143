"""Stateful BPTT through the real CLIs: resume mid-epoch, DDP, and eval-lm's
classic protocol."""

import math

import pytest
import torch

from helpers import FREQSORTED, eval_lm, eval_result, own_test_nll, run, saved, torchrun, train, train_losses

pytestmark = pytest.mark.slow

# 4 streams of ~1,100 tokens in 16-step windows: ~70 batches per epoch.
STATEFUL = ["--stateful-bptt", "--batch-size", "4", "--tokens-per-sample", "16", "--log-interval", "1",
            "--lr-scheduler", "fixed"]


def train_stateful(data_bin, save, max_update, *extra):
    return train(data_bin, *STATEFUL, "--max-update", str(max_update), "--save-dir", save, *extra)[1]


def test_resume_mid_epoch_continues_the_streams_exactly(data_bin, tmp_path):
    straight = train_losses(train_stateful(data_bin, tmp_path / "straight", 8))
    train_stateful(data_bin, tmp_path / "resumed", 4)  # "killed" after 4 updates, mid-epoch
    checkpoint = tmp_path / "resumed" / "checkpoint_last.pt"
    state = saved(checkpoint)
    assert state["extra_state"]["train_iterator"]["iterations_in_epoch"] == 4
    assert state["model"]["decoder.carried.train.c0"].abs().sum() > 0

    # The same resume without the carried state: the loss after the resume differs.
    stateless = tmp_path / "stateless"
    stateless.mkdir()
    state["model"] = {k: v for k, v in state["model"].items() if ".carried." not in k}
    torch.save(state, stateless / "checkpoint_last.pt")
    without_state = train_losses(train_stateful(data_bin, stateless, 8))

    resumed = train_losses(train_stateful(data_bin, tmp_path / "resumed", 8))
    assert len(straight) == 8 and len(resumed) == 4
    assert resumed == straight[4:]
    assert without_state[0] != straight[4]


def test_ddp_streams_train_and_checkpoint_every_rank_state(data_bin, tmp_path):
    save = tmp_path / "ckpt"
    _, out = run(torchrun(["--standalone", "--nproc_per_node", "2"], data_bin, *STATEFUL, "--batch-size", "2",
                          "--distributed-backend", "gloo", "--max-epoch", "1", "--save-dir", save))
    single = train_stateful(data_bin, tmp_path / "single", 1)
    batches = lambda log: int(next(l for l in log.splitlines() if "grouped total_num_itrs" in l).split()[-1])  # noqa: E731
    # 2 ranks x 2 streams cover the epoch in as many windows as 1 rank x 4 streams.
    assert batches(out) == batches(single)
    state = saved(save / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == batches(out)
    for key in ("decoder.carried.train.c0", "decoder.carried.train.x0"):
        rows = state["model"][key]  # 4 streams x features, rank 1's rows shared with rank 0
        assert rows.shape[0] == 4 and (rows.abs().sum(1) > 0).all()
    losses = train_losses(out)
    assert sum(losses[-5:]) < sum(losses[:5])


def test_eval_lm_classic_protocol_scores_every_token_with_the_whole_history(data_bin, tiny_corpus, trained_checkpoint):
    checkpoint = trained_checkpoint
    score = [*FREQSORTED, "--tokens-per-sample", "16"]
    _, out = eval_lm(data_bin, checkpoint, *score, "--stateful-bptt")  # one stream, as awd-lstm-lm's test batch size 1
    loss_base2, _ = map(float, eval_result(out))
    nll, ntokens = own_test_nll(checkpoint, data_bin, tiny_corpus / "test.txt")  # one forward over all
    assert f"Evaluated {ntokens:,} tokens" in out
    assert 2 ** loss_base2 == pytest.approx(math.exp(nll), rel=1e-4)

    # Several streams cover the same tokens; independent 16-token blocks see less context.
    _, streams = eval_lm(data_bin, checkpoint, *score, "--stateful-bptt", "--batch-size", "3")
    assert f"Evaluated {ntokens:,} tokens" in streams
    _, blocks = eval_lm(data_bin, checkpoint, *score, "--batch-size", "3")
    assert float(eval_result(blocks)[0]) > loss_base2
