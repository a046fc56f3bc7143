"""The ``timed_polynomial_decay`` learning-rate schedule, registered with fairseq."""

from . import timed_polynomial_decay  # noqa: F401
