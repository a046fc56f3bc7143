"""ForgetMult: the fo-pooling recurrence of a QRNN (Bradbury et al. 2016, eq. 4).

    c_t = f_t * c_{t-1} + (1 - f_t) * z_t

Two implementations with one contract, ``(f, z, c0) -> c`` with ``f, z`` of
shape ``T x B x H``, ``c0`` of shape ``B x H`` (or None for zeros), and ``c`` of
shape ``T x B x H`` in the dtype of ``z``:

* ``forget_mult_reference``: the plain loop, differentiated by autograd. It is
  the definition the tests compare against.
* ``ForgetMultFunction``: the same loop with a hand-written backward, so
  autograd records one node instead of ~3T. Half and bfloat16 inputs run the
  recurrence in fp32: the running cell state is a long product of factors in
  (0, 1) and loses all precision in 16-bit accumulation.
"""

from typing import Optional

import torch
from torch import Tensor

from .precision import accumulation_dtype


def forget_mult_reference(f: Tensor, z: Tensor, c0: Optional[Tensor] = None) -> Tensor:
    """The recurrence written as literally as possible (for tests)."""
    c_prev = torch.zeros_like(z[0]) if c0 is None else c0
    outputs = []
    for f_t, z_t in zip(f.unbind(0), z.unbind(0)):
        c_prev = f_t * c_prev + (1 - f_t) * z_t
        outputs.append(c_prev)
    return torch.stack(outputs)  # T x B x H


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
    def forward(ctx, f: Tensor, z: Tensor, c0: Optional[Tensor]) -> Tensor:
        acc = accumulation_dtype(z.dtype)
        f32, z32 = f.to(acc), z.to(acc)
        u = torch.addcmul(z32, f32, z32, value=-1)  # T x B x H: (1 - f) * z
        c = torch.empty_like(u)
        c_prev = (torch.zeros_like(u[0]) if c0 is None else c0.to(acc))
        for t, (f_t, u_t) in enumerate(zip(f32.unbind(0), u.unbind(0))):
            c_prev = torch.addcmul(u_t, f_t, c_prev, out=c[t])
        ctx.has_c0 = c0 is not None
        ctx.c0_dtype = None if c0 is None else c0.dtype
        ctx.save_for_backward(f, z, c, c0 if c0 is not None else c.new_empty(0))
        return c.to(z.dtype)

    @staticmethod
    def backward(ctx, grad_c: Tensor):
        f, z, c, c0 = ctx.saved_tensors
        acc = c.dtype
        f32, z32 = f.to(acc), z.to(acc)
        grad_c = grad_c.to(acc)
        g = torch.empty_like(grad_c)  # T x B x H
        T = g.size(0)
        g_next = grad_c[T - 1].clone()
        g[T - 1] = g_next
        grads = grad_c.unbind(0)
        fs = f32.unbind(0)
        for t in range(T - 2, -1, -1):
            g_next = torch.addcmul(grads[t], fs[t + 1], g_next, out=g[t])
        c_prev = torch.empty_like(c)  # T x B x H: c_{t-1}
        c_prev[1:] = c[:-1]
        if ctx.has_c0:
            c_prev[0] = c0.to(acc)
        else:
            c_prev[0].zero_()
        grad_z = g * (1 - f32)
        grad_f = g * (c_prev - z32)
        grad_c0 = (fs[0] * g[0]).to(ctx.c0_dtype) if ctx.has_c0 else None
        return grad_f.to(f.dtype), grad_z.to(z.dtype), grad_c0


def forget_mult(f: Tensor, z: Tensor, c0: Optional[Tensor] = None) -> Tensor:
    """Fast fo-pooling; see ``ForgetMultFunction``. Shapes: T x B x H."""
    if f.shape != z.shape or f.dim() != 3:
        raise ValueError(
            f"forget_mult expects f and z of the same T x B x H shape, got "
            f"{tuple(f.shape)} and {tuple(z.shape)}"
        )
    return ForgetMultFunction.apply(f, z, c0)
