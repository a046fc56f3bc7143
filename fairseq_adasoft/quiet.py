"""Filters for third-party console noise known to be harmless here, installed when the
plugin is imported (``install()``, from ``fairseq_adasoft/__init__.py``, before fairseq is
imported through it). Each filter names one message, and where it can its module and
category; every other warning, and every error, still shows.

- hydra 1.3 under fairseq 0.12: ``hydra.experimental.initialize()``/``compose()`` "is no
  longer experimental", "The version_base parameter is not specified", "'config' is
  validated against ConfigStore schema with the same name", "The strict flag in the compose
  API is deprecated", "Usage of deprecated keyword in package header '# @package _group_'":
  fairseq's use of hydra's API, which works as it is.
- torch's DataLoader: "'pin_memory' argument is set as true but no accelerator is found"
  (fairseq asks for pinned memory; on a CPU there is none to pin).
- fairseq's ``train_step``: the FutureWarning that ``torch.cuda.amp.autocast(args...)`` is
  deprecated (it runs disabled unless ``--amp``).
- fairseq.tasks.text_to_speech's INFO line "Please install tensorboardX" (no task here uses
  it; ``--tensorboard-logdir`` writes through torch's own SummaryWriter). It is logged when
  fairseq's tasks are imported: processes that import the plugin first (``python -m
  fairseq_adasoft...``, ``torchrun -m fairseq_adasoft.launch``, the hub, the tests) never
  print it, but fairseq-train and fairseq-eval-lm import fairseq's tasks before
  ``--user-dir`` imports the plugin, so they still print that one line at start-up.

Standard library only: it must not import torch or fairseq.
"""

import logging
import warnings

# (action's message regex, category, module regex): warnings.filterwarnings' message and
# module are regexes matched at the start, the message case-insensitively.
WARNINGS = (
    (r"hydra\.experimental\.(initialize|compose)\(\) is no longer experimental", UserWarning, r"hydra\."),
    (r"\s*The version_base parameter is not specified", UserWarning, r"hydra\."),
    (r"\s*The strict flag in the compose API is deprecated", UserWarning, r"hydra\."),
    (r"In '[^']*': Usage of deprecated keyword in package header '# @package _group_'", UserWarning, r"hydra\."),
    # Raised with a stacklevel past the top of the stack: its module is "sys".
    (r"\s*'[^']*' is validated against ConfigStore schema with the same name", UserWarning, ""),
    (r"'pin_memory' argument is set as true but no accelerator is found", UserWarning, r"torch\.utils\.data\."),
    (r"`torch\.cuda\.amp\.autocast\(args\.\.\.\)` is deprecated", FutureWarning, r"fairseq\."),
)

# logger name -> the start of the one message dropped from it
LOG_LINES = {"fairseq.tasks.text_to_speech": "Please install tensorboardX"}


class _DropMessage(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not str(record.msg).startswith(self.start)


def install() -> None:
    """Install the filters; idempotent."""
    for message, category, module in WARNINGS:
        # filterwarnings removes an equal filter before inserting it: calling twice adds nothing.
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, start in LOG_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.start == start for f in logger.filters):
            logger.addFilter(_DropMessage(start))
