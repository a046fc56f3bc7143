"""ForgetMult: the fo-pooling recurrence of a QRNN (Bradbury et al. 2016, eq. 4).

    c_t = f_t * c_{t-1} + (1 - f_t) * z_t

``ForgetMultFunction`` computes ``(f, z, c0) -> c`` with ``f, z`` of shape
``T x B x H``, ``c0`` of shape ``B x H`` (or None for zeros), and ``c`` of
shape ``T x B x H`` in the dtype of ``z``, as one autograd node with a
hand-written backward (instead of ~3T nodes). Its two linear recurrences
(forward over time, and the gradient backwards over time) run either as a
plain loop (``"loop"``, best on CPU, where each step is one fused
``addcmul``) or as a parallel Hillis-Steele scan (``"scan"``, best on GPU:
log2(T) rounds of whole-tensor ops instead of T tiny kernel launches). The
scan combines (f, u) pairs directly, never in log space, so its results
differ from the loop's only by rounding. Half and bfloat16 inputs run in
fp32: the running cell state is a long product of factors in (0, 1) and
loses all precision in 16-bit sums.
"""

from typing import Optional

import torch
from torch import Tensor

from .precision import accumulation_dtype


def linear_recurrence_loop(a: Tensor, b: Tensor, h0: Optional[Tensor] = None) -> Tensor:
    """h_t = a_t h_{t-1} + b_t over the first dimension, h_{-1} = h0 (or 0)."""
    h = torch.empty_like(b)
    h_prev = torch.zeros_like(b[0]) if h0 is None else h0
    for t, (a_t, b_t) in enumerate(zip(a.unbind(0), b.unbind(0))):
        h_prev = torch.addcmul(b_t, a_t, h_prev, out=h[t])
    return h


def linear_recurrence_scan(a: Tensor, b: Tensor, h0: Optional[Tensor] = None) -> Tensor:
    """The same recurrence as an inclusive parallel scan (Hillis & Steele 1986)
    of the affine maps h -> a_t h + b_t, composed as
    (a1, b1) then (a2, b2) = (a2 a1, a2 b1 + b2)."""
    if h0 is not None:
        b = torch.cat([torch.addcmul(b[:1], a[:1], h0.unsqueeze(0)), b[1:]])
    T = a.size(0)
    step = 1
    while step < T:
        b = torch.cat([b[:step], torch.addcmul(b[step:], a[step:], b[:-step])])
        a = torch.cat([a[:step], a[step:] * a[:-step]])
        step *= 2
    return b


RECURRENCES = {"loop": linear_recurrence_loop, "scan": linear_recurrence_scan}


class ForgetMultFunction(torch.autograd.Function):
    """fo-pooling with explicit forward and backward recurrences.

    With ``u_t = (1 - f_t) z_t`` the forward is ``c_t = f_t c_{t-1} + u_t``.
    Writing ``g_t`` for dLoss/dc_t including the path through c_{t+1}:

        g_t = dL/dc_t + f_{t+1} g_{t+1}
        dL/dz_t = g_t (1 - f_t)
        dL/df_t = g_t (c_{t-1} - z_t)
        dL/dc0  = f_0 g_0

    Only the two scans are sequential; everything else is one vector op.
    """

    @staticmethod
    def forward(ctx, f: Tensor, z: Tensor, c0: Optional[Tensor], method: str) -> Tensor:
        recurrence = RECURRENCES[method]
        acc = accumulation_dtype(z.dtype)
        f32, z32 = f.to(acc), z.to(acc)
        u = torch.addcmul(z32, f32, z32, value=-1)  # T x B x H: (1 - f) * z
        c = recurrence(f32, u, None if c0 is None else c0.to(acc))  # T x B x H
        ctx.method = method
        ctx.c0_dtype = None if c0 is None else c0.dtype
        ctx.save_for_backward(f, z, c, c0 if c0 is not None else c.new_empty(0))
        return c.to(z.dtype)

    @staticmethod
    def backward(ctx, grad_c: Tensor):
        f, z, c, c0 = ctx.saved_tensors
        acc = c.dtype
        f32, z32 = f.to(acc), z.to(acc)
        # g_t = grad_t + f_{t+1} g_{t+1}: the forward recurrence, reversed in time.
        f_next = torch.cat([f32[1:], torch.zeros_like(f32[:1])])  # T x B x H
        g = RECURRENCES[ctx.method](f_next.flip(0), grad_c.to(acc).flip(0)).flip(0)
        c_prev = torch.cat([
            (torch.zeros_like(c[:1]) if ctx.c0_dtype is None else c0.to(acc).unsqueeze(0)), c[:-1]
        ])  # T x B x H: c_{t-1}
        grad_z = g * (1 - f32)
        grad_f = g * (c_prev - z32)
        grad_c0 = None if ctx.c0_dtype is None else (f32[0] * g[0]).to(ctx.c0_dtype)
        return grad_f.to(f.dtype), grad_z.to(z.dtype), grad_c0, None


def forget_mult(f: Tensor, z: Tensor, c0: Optional[Tensor] = None, method: str = "auto") -> Tensor:
    """Fast fo-pooling; see ``ForgetMultFunction``. Shapes: T x B x H.

    ``method``: ``"loop"``, ``"scan"``, or ``"auto"`` (scan on GPU, loop elsewhere).
    """
    if method == "auto":
        method = "scan" if f.is_cuda else "loop"
    if method not in RECURRENCES:
        raise ValueError(f"forget_mult method must be 'auto', 'loop' or 'scan', got {method!r}")
    if f.shape != z.shape or f.dim() != 3:
        raise ValueError(
            f"forget_mult expects f and z of the same T x B x H shape, got "
            f"{tuple(f.shape)} and {tuple(z.shape)}"
        )
    return ForgetMultFunction.apply(f, z, c0, method)
