"""The ``qrnn_lm`` model family, registered with fairseq."""

from . import qrnn_lm  # noqa: F401
