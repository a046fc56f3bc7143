"""fairseq_adasoft: QRNN language models with an adaptive softmax for fairseq.

Importing the package registers, with fairseq's registries, the ``qrnn_lm``
architecture family, the ``adaptive_softmax`` criterion, the
``language_modeling_freqsorted`` task and the ``timed_polynomial_decay``
learning-rate schedule (``--user-dir`` does this import), and makes fairseq's
checkpoint copies atomic and its datasets work with numpy 2 (``compat.py``),
and filters known-harmless third-party warnings from the console (``quiet.py``);
``python -m fairseq_adasoft --help`` lists the flags they add.
``fairseq_adasoft.modules`` needs torch alone, so without fairseq installed
the package imports with nothing to register.
"""

import importlib.util

__version__ = "0.1.0"

if importlib.util.find_spec("fairseq") is not None:
    from . import compat, quiet

    quiet.install()  # hydra's, torch's and fairseq's known-harmless warnings (quiet.py), before fairseq logs them

    compat.install()  # numpy 2's np.compat.long, atomic checkpoint copies (before fairseq-train saves anything)
    from . import criterions, lr_schedulers, models, tasks  # noqa: E402,F401
