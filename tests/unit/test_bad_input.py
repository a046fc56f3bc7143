"""Bad flags and broken data files end in a ValueError that names the flag or
the file and the fix, before fairseq or a module fails on them."""

import shutil

import pytest
from fairseq.data import indexed_dataset

from helpers import PLUGIN, SMALL_MODEL, build, fairseq_cli, run

MODEL_FLAGS = {
    "--hidden-size 0": (["--hidden-size", "0"], "--hidden-size must be >= 1, got 0"),
    "--hidden-size -5": (["--hidden-size", "-5"], "--hidden-size must be >= 1, got -5"),
    "--embed-dim 0": (["--embed-dim", "0"], "--embed-dim must be >= 1, got 0"),
    "--num-layers 0": (["--num-layers", "0"], "--num-layers must be >= 1, got 0"),
    "--first-window 3": (["--first-window", "3"], "--first-window must be 1 or 2, got 3"),
    "--dropout-embed 1.5": (["--dropout-embed", "1.5"], r"--dropout-embed must be in \[0, 1\), got 1.5"),
    "--dropout-embed -0.5": (["--dropout-embed", "-0.5"], r"--dropout-embed must be in \[0, 1\), got -0.5"),
    "--dropout 1.5": (["--dropout", "1.5"], r"--dropout must be in \[0, 1\), got 1.5"),
    "--dropout-input 1.0": (["--dropout-input", "1.0"], r"--dropout-input must be in \[0, 1\), got 1.0"),
    "--dropout-hidden 1.0": (["--dropout-hidden", "1.0"], r"--dropout-hidden must be in \[0, 1\), got 1.0"),
    "--weight-drop 1.0": (["--weight-drop", "1.0"], r"--weight-drop must be in \[0, 1\), got 1.0"),
    "--zoneout 1.0": (["--zoneout", "1.0"], r"--zoneout must be in \[0, 1\), got 1.0"),
    "--adaptive-softmax-div-value 0": (["--adaptive-softmax-cutoff", "20,40", "--adaptive-softmax-div-value", "0"],
                                       "--adaptive-softmax-div-value must be >= 1, got 0"),
    "--adaptive-softmax-cutoff 1.5": (["--adaptive-softmax-cutoff", "1.5"],
                                      "--adaptive-softmax-cutoff='1.5': 1.5 is neither a word id"),
    "--tokens-per-sample 0": (["--tokens-per-sample", "0"], "--tokens-per-sample must be >= 1, got 0"),
    "--max-unk-share 2": (["--max-unk-share", "2"], r"--max-unk-share must be in \[0, 1\], got 2"),
}


@pytest.mark.parametrize("flags,message", MODEL_FLAGS.values(), ids=MODEL_FLAGS.keys())
def test_bad_numeric_flag_is_named(data_bin, flags, message):
    with pytest.raises(ValueError, match=message):
        build(data_bin, *SMALL_MODEL, *flags)


def test_good_flags_still_build(data_bin):
    _, model, _ = build(data_bin, *SMALL_MODEL, "--dropout", "0", "--zoneout", "0.5",
                        "--adaptive-softmax-cutoff", "0.2,0.5", "--adaptive-softmax-div-value", "1")
    assert model.decoder.adaptive_softmax.cutoffs[:-1] == [26, 64]  # of 128 ids


@pytest.mark.parametrize("output", [[], ["--adaptive-softmax-cutoff", "20,60"]], ids=["full", "adaptive"])
def test_fairseq_adaptive_loss_names_our_criterion_before_its_ddp_backend_check(data_bin, output):
    # fairseq-train builds the model, then the criterion, whose own check asks for --ddp-backend=legacy_ddp
    with pytest.raises(ValueError, match="--criterion adaptive_loss only serves .* --criterion adaptive_softmax"):
        build(data_bin, *SMALL_MODEL, *output, criterion="adaptive_loss")


def copy_data(data_bin, tmp_path):
    dest = tmp_path / "data-bin"
    shutil.copytree(data_bin, dest)
    return dest


def test_truncated_train_bin_is_named(data_bin, tmp_path):
    data = copy_data(data_bin, tmp_path)
    with open(data / "train.bin", "r+b") as f:
        f.truncate(f.seek(0, 2) // 2)
    with pytest.raises(ValueError, match=r"train.bin is truncated .* fairseq-preprocess --trainpref"):
        build(data, *SMALL_MODEL)


def test_truncated_valid_bin_is_named(data_bin, tmp_path):
    data = copy_data(data_bin, tmp_path)
    with open(data / "valid.bin", "r+b") as f:
        f.truncate(10)
    task, _, _ = build(data, *SMALL_MODEL)
    with pytest.raises(ValueError, match=r"valid.bin is truncated .* --validpref"):
        task.load_dataset("valid")


@pytest.mark.parametrize("stateful", [[], ["--stateful-bptt", "--batch-size", "2"]], ids=["blocks", "streams"])
def test_empty_valid_split_is_named(data_bin, tmp_path, stateful):
    data = copy_data(data_bin, tmp_path)
    # What fairseq-preprocess writes for an empty --validpref: an empty .bin and a header-only .idx.
    builder = indexed_dataset.MMapIndexedDatasetBuilder(str(data / "valid.bin"))
    builder.finalize(str(data / "valid.idx"))
    task, _, _ = build(data, *SMALL_MODEL, *stateful)
    with pytest.raises(ValueError, match="the valid split .*valid.bin is empty: give fairseq-preprocess a non-empty "
                                         "--validpref .*--disable-validation"):
        task.load_dataset("valid")


def test_fp16_on_the_cpu_names_the_cpu_option(data_bin):
    task, _, _ = build(data_bin, *SMALL_MODEL, "--fp16")  # build() trains with --cpu
    with pytest.raises(ValueError, match="--fp16 trains on a CUDA GPU .* --cpu-autocast-bf16"):
        task.load_dataset("train")  # what fairseq-train does before it builds the fp16 optimizer
    task.load_dataset("test")  # fairseq-eval-lm --fp16 --cpu works, and stays allowed


@pytest.mark.slow
def test_fp16_without_cuda_through_fairseq_train(data_bin, tmp_path):
    """fairseq-train --fp16 without --cpu on a machine without CUDA."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --fp16 without --cpu is a valid run")
    code, out = run(
        [fairseq_cli("fairseq-train"), str(data_bin), "--user-dir", PLUGIN, "--task", "language_modeling_freqsorted",
         "--arch", "qrnn_lm", "--criterion", "adaptive_softmax", *SMALL_MODEL, "--tokens-per-sample", "20",
         "--batch-size", "4", "--max-update", "1", "--optimizer", "adam", "--lr", "1e-3", "--fp16", "--no-save",
         "--save-dir", str(tmp_path)],
        check=False, timeout=300)
    assert code != 0
    assert "ValueError: --fp16 trains on a CUDA GPU" in out
    assert "Torch not compiled with CUDA" not in out
