from . import qrnn_lm  # noqa: F401
