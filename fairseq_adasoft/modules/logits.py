"""The adaptive softmax's logits and loss, one cluster (the head or a tail) at
a time: ``aligned_linear`` computes a cluster's logits in the layout the CPU
BLAS is fast at; ``linear_nll`` turns them into each row's negative
log-likelihood in memory a ``LogitBuffer`` keeps from one training step to
the next, with a backward that turns them into the gradient in place."""

import weakref
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .precision import accumulation_dtype

# Logits are computed this many columns at a time: a GEMM whose output rows have an odd width
# (the untied head's shortlist + clusters, 2,803 at WikiText-103's cutoffs) falls off the CPU
# BLAS's fast path (benchmarks/results/logit_layout.json).
LOGIT_ALIGN = 8
# A tail with this few features or fewer (WikiText-103's last: 6) multiplies by its weight stored
# features-major: the CPU BLAS then computes the weight's gradient in its fast layout (same file).
NARROW_FEATURES = 8


def aligned_weight(x: Tensor, weights: Sequence[Tensor], bias: Optional[Tensor] = None):
    """``cat(weights)`` (C x d) and ``bias`` padded with zero rows to a multiple of ``LOGIT_ALIGN``,
    as ``(weight, bias, C, features_major)``: on CPU with at most ``NARROW_FEATURES`` features the
    weight is d x C (contiguous), else C x d."""
    width = sum(w.size(0) for w in weights)
    pad = -width % LOGIT_ALIGN
    if pad:
        weights = [*weights, weights[0].new_zeros(pad, weights[0].size(1))]
        bias = None if bias is None else F.pad(bias, (0, pad))
    if x.device.type == "cpu" and x.size(1) <= NARROW_FEATURES:
        return torch.cat([w.t() for w in weights], dim=1), bias, width, True
    return (weights[0] if len(weights) == 1 else torch.cat(weights)), bias, width, False


def _d_by_c(weight: Tensor, features_major: bool, dtype: torch.dtype) -> Tensor:
    """``aligned_weight``'s weight in ``dtype`` as the d x C right-hand side of a matmul."""
    w = weight.to(dtype)
    return w if features_major else w.t()


def _matmul(x: Tensor, w: Tensor, bias: Optional[Tensor], out: Optional[Tensor] = None) -> Tensor:
    """``x @ w (+ bias)``, into ``out`` when given (``F.linear`` is this with ``w = weight.t()``)."""
    return torch.mm(x, w, out=out) if bias is None else torch.addmm(bias, x, w, out=out)


def aligned_linear(x: Tensor, weights: Sequence[Tensor], bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, cat(weights), bias)`` for ``x`` N x d, N x C, with -inf columns after the C
    real ones up to a multiple of ``LOGIT_ALIGN``: classes of probability 0 under a log-softmax,
    whose gradient is 0, so readers of the log-probabilities only slice the real columns off."""
    weight, bias, width, features_major = aligned_weight(x, weights, bias)
    logits = _matmul(x, _d_by_c(weight, features_major, weight.dtype), bias)
    with torch.no_grad():  # mm saves its inputs, not its output; these columns' gradient is 0
        logits[:, width:] = float("-inf")
    return logits


class LogitBuffer:
    """Memory kept for one cluster's logits from one training step to the next.

    A large tail's logits are hundreds of MB at a large V. Allocated afresh each
    step, all their pages fault in again: glibc hands such blocks back to the
    system, and with the recipes' malloc settings it often grows the heap rather
    than reuse them (benchmarks/results/logit_layout.json). While a graph that
    has not been backpropagated still holds the memory, ``take`` allocates anew.
    """

    def __init__(self):
        self.memory: Optional[Tensor] = None
        self.lent = None  # a weak reference to the view a pending backward reads

    def take(self, rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        if self.lent is not None and self.lent() is not None:
            return torch.empty(rows, cols, dtype=dtype, device=device)
        n = rows * cols
        m = self.memory
        if m is None or m.numel() < n or m.dtype != dtype or m.device != device:
            m = self.memory = None  # freed before its successor is allocated
            m = self.memory = torch.empty(n, dtype=dtype, device=device)
        view = m[:n].view(rows, cols)
        self.lent = weakref.ref(view)
        return view

    def __reduce__(self):  # a copy or a pickle of the model starts without memory
        return LogitBuffer, ()


class LinearNLL(torch.autograd.Function):
    """Per-row nll = -log_softmax(x W^T + b)[target] over ``aligned_weight``'s
    logits, whose -inf pad columns start at ``width``. The logits are computed
    in ``matmul_dtype`` (an autocast's, or the inputs'), then, in the
    accumulation dtype and in place (in the ``buffer``'s memory when given),
    softmaxed for the backward when gradients are tracked (``track``), else
    log-softmaxed.
    Backward: d nll / d logits = (softmax - one_hot(target)) * grad, made in
    place of the saved probabilities with ``inplace_backward`` (which can then
    run only once), and multiplied back through W and x as autograd's mm
    would, in ``matmul_dtype``."""

    @staticmethod
    def forward(ctx, x, weight, bias, target, width, features_major, matmul_dtype, track, buffer, inplace_backward):
        with torch.autocast(x.device.type, enabled=False):  # the dtypes are chosen here
            w = _d_by_c(weight, features_major, matmul_dtype)
            xm, b = x.to(matmul_dtype), None if bias is None else bias.to(matmul_dtype)
            n, c, dtype = x.size(0), w.size(1), accumulation_dtype(x.dtype)
            if buffer is None:
                logits = _matmul(xm, w, b).to(dtype)
            else:
                logits = buffer.take(n, c, dtype, x.device)
                if matmul_dtype == dtype:
                    _matmul(xm, w, b, out=logits)
                else:
                    logits.copy_(_matmul(xm, w, b))
            logits[:, width:] = float("-inf")
            in_place = x.device.type == "cpu"  # the CPU kernels read each row before they write it (tested)
            if not track:  # scoring: the log-probabilities, as log_prob computes them
                log_probs = torch.log_softmax(logits, 1, out=logits) if in_place else F.log_softmax(logits, 1)
                return -log_probs.gather(1, target.unsqueeze(1)).squeeze(1)
            # The backward needs softmax(logits): keep it, not the log-softmax, and get each row's
            # log-sum-exp from its largest logit and largest probability (at least 1 / C: exact).
            peak, target_logit = logits.amax(1), logits.gather(1, target.unsqueeze(1)).squeeze(1)
            probs = torch.softmax(logits, 1, out=logits) if in_place else F.softmax(logits, 1)
            log_sum_exp = peak - probs.amax(1).log()
        ctx.save_for_backward(x, weight, bias, target)
        ctx.probs = probs  # an attribute: the buffer's weak reference then tells when it is free
        ctx.features_major, ctx.matmul_dtype = features_major, matmul_dtype
        ctx.inplace_backward = inplace_backward
        return log_sum_exp - target_logit

    @staticmethod
    def backward(ctx, grad: Tensor):
        if ctx.probs is None:  # an in-place backward already ran
            raise RuntimeError(
                "AdaptiveSoftmax's backward turns its saved probabilities into the gradient in place, so it runs once "
                "per forward; to backpropagate twice (retain_graph=True, gradcheck) build it with "
                "inplace_backward=False"
            )
        x, weight, bias, target = ctx.saved_tensors
        grad_logits = ctx.probs if ctx.inplace_backward else ctx.probs.clone()  # N x C
        if ctx.inplace_backward:
            ctx.probs = None  # consumed; the buffer is free once this backward ends
        g = grad.unsqueeze(1)  # N x 1
        # A summed loss's gradient is all ones: on CPU, where reading it costs no device sync, skip a
        # pass over N x C; elsewhere (CUDA) multiply, since testing the values would wait for the device.
        if grad.device.type != "cpu" or (grad != 1).any():
            grad_logits.mul_(g)
        grad_logits.scatter_add_(1, target.unsqueeze(1), -g)
        gm, md = grad_logits.to(ctx.matmul_dtype), ctx.matmul_dtype
        w = _d_by_c(weight, ctx.features_major, md)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(gm, w.t()).to(x.dtype)
        if ctx.needs_input_grad[1]:  # in the weight's own layout, as autograd's mm gives it
            xm = x.to(md)
            grad_w = (torch.mm(xm.t(), gm) if ctx.features_major else torch.mm(gm.t(), xm)).to(weight.dtype)
        if bias is not None and ctx.needs_input_grad[2]:
            grad_b = grad_logits.sum(0).to(bias.dtype)
        return grad_x, grad_w, grad_b, None, None, None, None, None, None, None


def linear_nll(x: Tensor, weights: Sequence[Tensor], bias: Optional[Tensor], target: Tensor,
               buffer: Optional[LogitBuffer] = None, inplace_backward: bool = True) -> Tensor:
    """-log_softmax(aligned_linear(x, weights, bias))[target], per row, in the accumulation dtype
    (fp32 for 16-bit inputs). ``buffer`` serves while gradients are tracked on CPU, where fresh
    memory is slow; elsewhere a caching allocator (or no backward) makes it moot. Without
    gradients to track, the scores are the log-softmax's, as ``log_prob``'s are."""
    weight, bias, width, features_major = aligned_weight(x, weights, bias)
    device = x.device.type
    autocast = torch.is_autocast_enabled(device) and x.dtype == torch.float32
    matmul_dtype = torch.get_autocast_dtype(device) if autocast else x.dtype
    track = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    buffer = buffer if track and device == "cpu" else None
    return LinearNLL.apply(x, weight, bias, target, width, features_major, matmul_dtype, track, buffer,
                           inplace_backward)
