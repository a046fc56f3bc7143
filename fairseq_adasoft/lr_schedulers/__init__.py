from . import timed_polynomial_decay  # noqa: F401
