from . import language_modeling_freqsorted  # noqa: F401
