"""The console without the third-party warnings known to be harmless (fairseq_adasoft/quiet.py),
and with everything else: other warnings, and errors."""

import sys

from helpers import run, train

FILTERED = (
    "is no longer experimental",
    "The version_base parameter is not specified",
    "is validated against ConfigStore schema",
    "The strict flag in the compose API is deprecated",
    "Usage of deprecated keyword in package header",
    "'pin_memory' argument is set as true",
    "torch.cuda.amp.autocast(args...)",
    "Please install tensorboardX",
)


def test_fairseq_train_prints_none_of_the_known_warnings(data_bin, tmp_path):
    _, out = train(data_bin, "--max-update", "2", "--save-dir", tmp_path / "ckpt", "--no-save")
    assert "num_updates" in out  # it did train (and so went through hydra, the data loaders and train_step)
    # Not the tensorboardX line: fairseq-train imports fairseq's tasks, which log it, before --user-dir
    # imports the plugin (quiet.py).
    shown = [m for m in FILTERED[:-1] if m in out]
    assert not shown, out


SCRIPT = r"""
import logging, sys, warnings
logging.basicConfig(level=logging.INFO, stream=sys.stdout)  # as fairseq_cli.train, before importing fairseq
import fairseq_adasoft  # imports fairseq's tasks, text_to_speech's tensorboardX line among them
warnings.warn("'pin_memory' argument is set as true but no accelerator is found: from elsewhere", UserWarning)
warnings.warn("another warning", UserWarning)
logging.getLogger("fairseq.tasks.text_to_speech").info("another info line")
logging.getLogger("fairseq.tasks.text_to_speech").warning("Please install tensorboardX, as a warning")
raise RuntimeError("a real error")
"""


def test_filters_name_their_source_and_leave_errors(tmp_path):
    code, out = run([sys.executable, "-c", SCRIPT], check=False)
    assert code == 1
    assert "INFO:fairseq.tasks.text_to_speech:Please install tensorboardX" not in out
    assert "another info line" in out and "WARNING:fairseq.tasks.text_to_speech:Please install tensorboardX" in out
    # The same message from another module still shows: the filters name the module.
    assert "'pin_memory' argument is set as true but no accelerator is found: from elsewhere" in out
    assert "UserWarning: another warning" in out
    assert "RuntimeError: a real error" in out
