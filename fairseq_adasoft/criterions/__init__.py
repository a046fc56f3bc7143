"""The ``adaptive_softmax`` criterion, registered with fairseq."""

from . import adaptive_softmax  # noqa: F401
