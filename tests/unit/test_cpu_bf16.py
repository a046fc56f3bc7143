"""--cpu-autocast-bf16: its numerics, and its refusal to train on a CPU without
bf16 matmul instructions, where torch's bf16 matmuls crawl."""

import logging
import os
import platform

import pytest
import torch

from fairseq_adasoft.models import qrnn_decoder
from fairseq_adasoft.hardware import cpu_has_native_bf16
from helpers import SMALL_MODEL, build
from test_fairseq_components import ADAPTIVE, batch


@pytest.fixture
def native_bf16(monkeypatch):
    """Behave as on a CPU with bf16 instructions: the numerics are the same on
    any CPU, only slower without them."""
    monkeypatch.setattr(qrnn_decoder, "cpu_has_native_bf16", lambda: True)


@pytest.fixture
def no_native_bf16(monkeypatch):
    monkeypatch.setattr(qrnn_decoder, "cpu_has_native_bf16", lambda: False)


@pytest.mark.skipif(platform.machine() != "x86_64" or not os.path.exists("/proc/cpuinfo"),
                    reason="reads x86 flags from /proc/cpuinfo")
def test_native_bf16_matches_the_cpu_flags():
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    assert cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_tile"})


def test_cpu_bf16_autocast_stays_close_to_fp32(data_bin, native_bf16):
    task, fp32, criterion = build(data_bin, *ADAPTIVE)
    _, bf16, _ = build(data_bin, *ADAPTIVE, "--cpu-autocast-bf16")
    bf16.load_state_dict(fp32.state_dict())
    fp32.eval(), bf16.eval()
    sample = batch(task)
    features32, _ = fp32.decoder(sample["net_input"]["src_tokens"])
    features16, _ = bf16.decoder(sample["net_input"]["src_tokens"])
    assert features16.dtype == torch.float32  # the output layer and loss see fp32
    torch.testing.assert_close(features16, features32, rtol=0.05, atol=0.05)
    loss16, _, _ = criterion(bf16, sample)
    loss32, _, _ = criterion(fp32, sample)
    assert loss16.item() == pytest.approx(loss32.item(), rel=0.01)
    loss16.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in bf16.parameters())
    # Training adds bf16 output-layer matmuls; the same dropout masks from the same seed.
    fp32.train(), bf16.train()
    losses = []
    for model in (fp32, bf16):
        torch.manual_seed(3)
        losses.append(criterion(model, sample)[0].item())
    assert losses[1] == pytest.approx(losses[0], rel=0.01) and losses[1] != losses[0]


def test_cpu_bf16_full_softmax_logits_are_bf16_only_while_training(data_bin, native_bf16):
    task, model, criterion = build(data_bin, *SMALL_MODEL, "--cpu-autocast-bf16")  # no cutoffs: full softmax
    sample = batch(task)
    model.train()
    assert model(**sample["net_input"])[0].dtype == torch.bfloat16
    loss, _, _ = criterion(model, sample)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert model.decoder.output_projection.weight.grad.dtype == torch.float32
    model.eval()
    assert model(**sample["net_input"])[0].dtype == torch.float32  # evaluation scores in fp32


@pytest.mark.parametrize("cutoffs", [ADAPTIVE, SMALL_MODEL], ids=["adaptive", "full"])
def test_training_with_bf16_is_refused_without_bf16_instructions(data_bin, no_native_bf16, cutoffs):
    task, model, criterion = build(data_bin, *cutoffs, "--cpu-autocast-bf16")
    model.train()
    with pytest.raises(ValueError, match=r"--cpu-autocast-bf16: this CPU .* Drop --cpu-autocast-bf16"):
        criterion(model, batch(task))
    _, plain, _ = build(data_bin, *cutoffs)  # fp32 trains as before
    plain.train()
    criterion(plain, batch(task))[0].backward()


def test_a_bf16_model_still_evaluates_without_bf16_instructions(data_bin, monkeypatch, caplog):
    task, model, criterion = build(data_bin, *ADAPTIVE, "--cpu-autocast-bf16")
    model.eval()
    sample = batch(task)
    monkeypatch.setattr(qrnn_decoder, "cpu_has_native_bf16", lambda: True)
    expected = criterion(model, sample)[0]
    monkeypatch.setattr(qrnn_decoder, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert torch.equal(criterion(model, sample)[0], expected)  # the same bf16 numerics
    warnings = [r.getMessage() for r in caplog.records if "no bf16 matmul instructions" in r.getMessage()]
    assert len(warnings) == 1 and "cpu_autocast_bf16': False" in warnings[0]  # once, with the way out
