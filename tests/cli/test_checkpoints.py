"""Checkpoint files through the real CLIs: a SIGKILL during a save leaves
checkpoint_last.pt whole, and a truncated or wrong file names itself and the fix."""

import os
import re
import signal
import subprocess
import time

import pytest
import torch

from helpers import ROOT, eval_lm, eval_result, fairseq_cli, run, saved, train, train_args

from fairseq_adasoft import compat

EVAL = ["--tokens-per-sample", "64", "--batch-size", "1"]
# Wide layers on a one-sample batch: a checkpoint of hundreds of MB (weights and
# Adam's two moments) whose copy takes measurable time, with cheap updates.
BIG = ["--embed-dim", "1536", "--hidden-size", "1536", "--num-layers", "2", "--batch-size", "1",
       "--tokens-per-sample", "8", "--disable-validation", "--no-epoch-checkpoints",
       "--save-interval-updates", "2", "--keep-interval-updates", "1", "--max-update", "100000"]
LOADED_RE = re.compile(r"Loaded checkpoint \S+checkpoint_last\.pt \(epoch \d+ @ (\d+) updates\)")


def updates_of(path):
    return saved(path)["optimizer_history"][-1]["num_updates"]


@pytest.fixture(scope="module")
def trained(data_bin, tmp_path_factory):
    save = tmp_path_factory.mktemp("ckpt")
    train(data_bin, "--max-update", "4", "--save-interval-updates", "2", "--no-epoch-checkpoints", "--save-dir", save)
    return save


def test_copy_is_atomic_and_patches_checkpoint_utils_only(tmp_path):
    from fairseq import checkpoint_utils, file_io

    src, dst = tmp_path / "new.pt", tmp_path / "checkpoint_last.pt"
    src.write_bytes(b"new" * 1000)
    dst.write_bytes(b"old")
    assert checkpoint_utils.PathManager.copy(str(src), str(dst), overwrite=True)
    assert dst.read_bytes() == src.read_bytes() and sorted(os.listdir(tmp_path)) == ["checkpoint_last.pt", "new.pt"]
    assert checkpoint_utils.PathManager is not file_io.PathManager  # the rest of fairseq is untouched


def test_truncated_checkpoint_passed_to_eval_lm_names_the_file(trained, data_bin, tmp_path):
    broken = tmp_path / "checkpoint_last.pt"
    data = (trained / "checkpoint_last.pt").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    code, out = eval_lm(data_bin, broken, *EVAL, check=False)
    assert code != 0 and "PytorchStreamReader" in out  # the cause is kept, after the message
    assert f"ValueError: checkpoint {broken} is truncated or corrupt" in out
    assert "pass --path a checkpoint_*.pt written by fairseq-train" in out


def test_dictionary_passed_to_eval_lm_names_the_file(data_bin):
    code, out = eval_lm(data_bin, data_bin / "dict.txt", *EVAL, check=False)
    assert code != 0
    assert f"ValueError: checkpoint {data_bin / 'dict.txt'} is a text file, not a checkpoint" in out
    assert "pass --path a checkpoint_*.pt written by fairseq-train" in out


@pytest.mark.slow
def test_truncated_checkpoint_last_at_resume_names_the_intact_restore_file(trained, data_bin, tmp_path):
    save = tmp_path / "save"
    save.mkdir()
    for name in sorted(os.listdir(trained)):  # oldest first, so mtimes keep their order
        (save / name).write_bytes((trained / name).read_bytes())
    last = save / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    resume = ["--max-update", "6", "--no-epoch-checkpoints", "--save-dir", save]
    code, out = train(data_bin, *resume, check=False)
    assert code != 0
    assert f"ValueError: checkpoint {last} is truncated or corrupt" in out
    # The newest save (update 4) wrote checkpoint_1_4.pt, then copied it onto checkpoint_best.pt.
    intact = re.search(r"resume from the newest intact checkpoint with --restore-file (\S+)", out).group(1)
    assert intact in (str(save / "checkpoint_1_4.pt"), str(save / "checkpoint_best.pt"))
    _, out = train(data_bin, *resume, "--restore-file", intact)  # the advice works
    assert "(epoch 1 @ 4 updates)" in out and updates_of(last) == 6


@pytest.mark.parametrize("gate", [True, False])
def test_a_checkpoint_saved_with_output_gate_keeps_its_gate(data_bin, trained_checkpoint, tmp_path, gate):
    """The flag --output-gate (on by default: passing it turned the gate off) is now --no-output-gate;
    a checkpoint whose saved config says output_gate loads with that gate and scores the same."""
    from fairseq import checkpoint_utils

    new, old = trained_checkpoint, tmp_path / "old.pt"  # the shared checkpoint has the default gate
    if not gate:
        train(data_bin, "--max-update", "2", "--no-epoch-checkpoints", "--save-dir", tmp_path, "--no-output-gate")
        new = tmp_path / "checkpoint_last.pt"
    state = saved(new)
    state["cfg"]["model"]["output_gate"] = not state["cfg"]["model"].pop("no_output_gate")
    torch.save(state, old)
    (model,), _ = checkpoint_utils.load_model_ensemble([str(old)], arg_overrides={"data": str(data_bin)})
    assert {layer.output_gate for layer in model.decoder.qrnn.layers} == {gate}
    assert eval_result(eval_lm(data_bin, old, *EVAL)[1]) == eval_result(eval_lm(data_bin, new, *EVAL)[1])


def _newest_first_file(save):
    """fairseq's first file of the newest save (written whole, then copied onto checkpoint_last.pt)."""
    found = [(int(m.group(1)), save / m.group(0)) for m in
             (re.fullmatch(r"checkpoint_\d+_(\d+)\.pt", n) for n in os.listdir(save)) if m]
    return max(found, default=(0, None))


def _size(path, since=0.0):
    """Size of ``path`` if it was written after ``since``, else None."""
    try:
        return os.path.getsize(path) if os.path.getmtime(path) >= since else None
    except FileNotFoundError:
        return None


def _kill_during_copy(cmd, save, timeout=300):
    """Run ``cmd`` until a copy onto checkpoint_last.pt (or its temp file) is under way
    over a whole old checkpoint_last.pt, then SIGKILL it. Returns whether that happened."""
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"))
    last, armed = save / "checkpoint_last.pt", False
    try:
        while time.time() < started + timeout and proc.poll() is None:
            _, first = _newest_first_file(save)
            full = (_size(first) or 0) if first else 0
            if not armed:
                armed = bool(full) and (_size(last) or 0) >= 0.9 * full
            elif any(size is not None and size < 0.9 * full  # a fresh file, well short of whole
                     for size in (_size(last, started), _size(str(last) + ".tmp", started))):
                proc.send_signal(signal.SIGKILL)
                return True
            time.sleep(0.0005)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_copy_leaves_checkpoint_last_whole(data_bin, tmp_path):
    save = tmp_path / "save"
    save.mkdir()
    cmd = [fairseq_cli("fairseq-train"), *train_args(str(data_bin), *BIG, "--save-dir", str(save))]
    for _ in range(2):  # the second round resumes from the first one's checkpoint_last.pt
        assert _kill_during_copy(cmd, save), "never caught a copy onto checkpoint_last.pt under way"
        newest, _ = _newest_first_file(save)
        assert compat.is_intact(save / "checkpoint_last.pt")
        # The old or the new checkpoint, whole (a save every 2 updates).
        assert updates_of(save / "checkpoint_last.pt") in (newest - 2, newest)
    resumed_from = updates_of(save / "checkpoint_last.pt")
    _, out = run([*cmd, "--max-update", str(resumed_from + 1), "--save-interval-updates", "0"])
    assert int(LOADED_RE.search(out).group(1)) == resumed_from
    assert updates_of(save / "checkpoint_last.pt") == resumed_from + 1
