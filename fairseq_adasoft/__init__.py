"""fairseq_adasoft: QRNN language models with an adaptive softmax for fairseq.

Importing the package registers, with fairseq's registries, the ``qrnn_lm``
architecture family, the ``adaptive_softmax`` criterion and the
``language_modeling_freqsorted`` task (``--user-dir`` does this import).
"""

__version__ = "0.1.0"

from . import criterions, models, tasks  # noqa: F401
