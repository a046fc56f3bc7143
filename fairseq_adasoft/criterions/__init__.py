from . import adaptive_softmax  # noqa: F401
