"""The adaptive softmax's logits and loss, one cluster (the head or a tail) at
a time: ``aligned_linear`` computes a cluster's logits in the layout the CPU
BLAS is fast at, ``SoftmaxNLL`` turns them into each row's negative
log-likelihood with a backward that reuses their memory."""

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# Logits are computed this many columns at a time: a GEMM whose output rows have an odd width
# (the untied head's shortlist + clusters, 2,803 at WikiText-103's cutoffs) falls off the CPU
# BLAS's fast path (benchmarks/results/logit_layout.json).
LOGIT_ALIGN = 8
# A tail with this few features or fewer (WikiText-103's last: 6) multiplies by its weight stored
# features-major: the CPU BLAS then computes the weight's gradient in its fast layout (same file).
NARROW_FEATURES = 8


def aligned_linear(x: Tensor, weights: Sequence[Tensor], bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, cat(weights), bias)`` for ``x`` N x d, N x C, with -inf columns after the C
    real ones up to a multiple of ``LOGIT_ALIGN``: classes of probability 0 under a log-softmax,
    whose gradient is 0, so readers of the log-probabilities only slice the real columns off.
    On CPU with at most ``NARROW_FEATURES`` features, the weight is multiplied features-major."""
    width = sum(w.size(0) for w in weights)
    pad = -width % LOGIT_ALIGN
    if pad:
        weights = [*weights, weights[0].new_zeros(pad, weights[0].size(1))]
        bias = None if bias is None else F.pad(bias, (0, pad))
    if x.device.type == "cpu" and x.size(1) <= NARROW_FEATURES:
        weight_t = torch.cat([w.t() for w in weights], dim=1)  # d x C, contiguous
        logits = torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)
    else:
        logits = F.linear(x, weights[0] if len(weights) == 1 else torch.cat(weights), bias)
    if pad:
        with torch.no_grad():  # mm saves its inputs, not its output; these columns' gradient is 0
            logits[:, width:] = float("-inf")
    return logits


class SoftmaxNLL(torch.autograd.Function):
    """Per-row nll = -log_softmax(logits)[target], with backward
    (softmax(logits) - one_hot(target)) * grad. Saves the N x C
    log-probabilities in place of the logits (the same memory; the logits are
    freed), never zero-fills an N x C gradient as log_softmax + gather's
    backward does, and with ``inplace_backward`` turns the saved tensor into
    the gradient instead of allocating another N x C one (a large share of the
    layer's time at a large V on CPU). That backward can then run only once."""

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, inplace_backward: bool) -> Tensor:
        log_probs = F.log_softmax(logits, dim=1)  # N x C
        ctx.save_for_backward(log_probs, target)
        ctx.inplace_backward, ctx.consumed = inplace_backward, False
        return -log_probs.gather(1, target.unsqueeze(1)).squeeze(1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        if ctx.consumed:
            raise RuntimeError(
                "AdaptiveSoftmax's backward reuses its saved log-probabilities in place, so it runs once "
                "per forward; to backpropagate twice (retain_graph=True, gradcheck) build it with "
                "inplace_backward=False"
            )
        log_probs, target = ctx.saved_tensors
        ctx.consumed = ctx.inplace_backward
        g = grad.unsqueeze(1)  # N x 1
        probs = log_probs.exp_() if ctx.inplace_backward else log_probs.exp()  # N x C
        grad_logits = probs.mul_(g)  # softmax * grad
        grad_logits.scatter_add_(1, target.unsqueeze(1), -g)
        return grad_logits, None, None
