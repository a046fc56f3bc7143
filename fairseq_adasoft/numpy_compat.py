"""Give numpy 2 back the one ``numpy.compat`` name fairseq 0.12 still uses.

fairseq 0.12's ``TokenBlockDataset`` (``--sample-break-mode eos``, the hub's
``sample``/``score``, ``fairseq-interactive``) and ``LanguagePairDataset``
ask for ``np.compat.long``, which numpy 2 removed; in numpy 1.x it was
Python's ``int``. A shim rather than a ``numpy<2`` pin: numpy 1.26 has no
wheels for Python >= 3.13, torch and the rest of the stack are built against
numpy 2, and existing environments are fixed without a reinstall. Importing
the plugin (``--user-dir``, ``import fairseq_adasoft``) installs it; with
numpy 1.x it does nothing.
"""

import types

import numpy as np


def install() -> None:
    """Define ``numpy.compat.long`` where numpy lacks ``numpy.compat`` (numpy >= 2)."""
    if not hasattr(np, "compat"):
        np.compat = types.SimpleNamespace(long=int)


install()
