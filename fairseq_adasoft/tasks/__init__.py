"""The ``language_modeling_freqsorted`` task, registered with fairseq."""

from . import language_modeling_freqsorted  # noqa: F401
