"""Target-aware scoring: a ``... x V`` log-probability tensor that computes
only the columns that are read.

fairseq's scorers (``SequenceScorer``: ``fairseq-eval-lm``, the hub's
``score``) ask the model for the whole distribution and then gather one column
per position, the target. For an adaptive softmax (Grave et al. 2017) that
column costs the head plus the one tail the target falls in, while the whole
distribution costs every tail at every position and N x V memory.

``LazyLogProbs`` holds two functions instead of values: ``at(index)``, the
log-probabilities of one given word per position, and ``full()``, the whole
distribution. A gather of one column per position along the vocabulary (what
every scorer does), a view that keeps the vocabulary dimension, ``.data``,
``exp`` and ``exp_`` stay lazy; any other operation first computes the whole
distribution, exactly as it is computed without this class, and runs on it.
So the tensor never holds a made-up value: whatever reads it reads the true
distribution. It has no autograd: build it only where no gradient is needed.
"""

import math
from typing import Callable, Sequence

import torch
from torch import Tensor
from torch.utils._pytree import tree_map

aten = torch.ops.aten


class LazyLogProbs(Tensor):
    """``lead x V`` values given by ``at(index)`` (index ``lead`` -> values
    ``lead``: one word's value per position) and ``full()`` (-> ``lead x V``).
    ``shape``: what the tensor shows, ``lead x V`` or a view of the same size."""

    @staticmethod
    def __new__(cls, lead: Sequence[int], vocab_size: int, dtype: torch.dtype, device: torch.device,
                at: Callable[[Tensor], Tensor], full: Callable[[], Tensor], shape: Sequence[int] = None):
        shape = tuple(shape) if shape is not None else tuple(lead) + (vocab_size,)
        self = Tensor._make_wrapper_subclass(cls, shape, dtype=dtype, device=device, requires_grad=False)
        self._lead, self._at, self._full, self._computed = tuple(lead), at, full, None
        return self

    def __init__(self, *args, **kwargs):
        super().__init__()

    def __repr__(self) -> str:
        return f"LazyLogProbs(shape={tuple(self.shape)}, dtype={self.dtype})"

    def at(self, index: Tensor) -> Tensor:
        """The value of word ``index[p]`` at each position p (index: this tensor's shape without V)."""
        if self._computed is not None:
            return self._computed.gather(-1, index.unsqueeze(-1)).squeeze(-1)
        return self._at(index.reshape(self._lead)).reshape(index.shape)

    def materialize(self) -> Tensor:
        """The whole distribution as a plain tensor, computed once."""
        if self._computed is None:
            self._computed = self._full().reshape(self.shape)
        return self._computed

    def _like(self, at=None, full=None, shape=None) -> "LazyLogProbs":
        return LazyLogProbs(self._lead, self.size(-1), self.dtype, self.device, at or self._at,
                            full or self._full, shape or self.shape)

    def _exp_functions(self):
        at, full = self._at, self._full
        return (lambda index: at(index).exp()), (lambda: full().exp())

    def _lazy(self, func, args):
        """The lazy result of ``func(*args)``, or None where the values are needed."""
        if func in (aten.detach.default, aten.alias.default):  # .data, .detach()
            return self
        if self._computed is not None:
            return None
        if func is aten.gather.default:
            dim, index = args[1], args[2]
            if dim % self.dim() == self.dim() - 1 and tuple(index.shape) == tuple(self.shape[:-1]) + (1,):
                return self.at(index.squeeze(-1)).unsqueeze(-1)
        if func in (aten.view.default, aten._unsafe_view.default):
            shape = tuple(args[1])
            if shape[-1:] == self.shape[-1:] and -1 not in shape and math.prod(shape) == self.numel():
                return self._like(shape=shape)
        if func is aten.exp.default:
            at, full = self._exp_functions()
            return self._like(at, full)
        if func is aten.exp_.default:  # in place: this tensor now holds probabilities
            self._at, self._full = self._exp_functions()
            return self
        return None

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if args and isinstance(args[0], LazyLogProbs) and not kwargs:
            result = args[0]._lazy(func, args)
            if result is not None:
                return result
        computed = tree_map(lambda a: a.materialize() if isinstance(a, LazyLogProbs) else a, (args, kwargs))
        return func(*computed[0], **computed[1])

