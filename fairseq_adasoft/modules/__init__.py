"""Plain torch modules (no fairseq imports): QRNN, ForgetMult, adaptive softmax and input, their cutoffs
(parsed and chosen), dropout, dynamic evaluation's update, continuous cache, the stateful-BPTT stream
state, target-aware log-probabilities."""

from .adaptive_input import AdaptiveInput  # noqa: F401
from .adaptive_softmax import AdaptiveSoftmax  # noqa: F401
from .cutoffs import band_dim, is_fraction_spec, parse_cutoffs, validate_cutoffs  # noqa: F401
from .dynamic_eval import DynamicEvalSetup, DynamicEvaluation, GradientStatistics  # noqa: F401
from .dropout import LockedDropout, embedding_dropout  # noqa: F401
from .forget_mult import ForgetMultFunction, forget_mult  # noqa: F401
from .lazy_log_probs import LazyLogProbs  # noqa: F401
from .neural_cache import CacheMemory, NeuralCache  # noqa: F401
from .qrnn import QRNN, QRNNLayer  # noqa: F401
from .score_tally import ScoreTally  # noqa: F401
from .stream_state import StreamState  # noqa: F401
