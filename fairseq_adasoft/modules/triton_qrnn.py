"""A fused Triton kernel for the QRNN's pooling (Bradbury et al. 2016), forward
and backward: from the pre-activation gates it applies tanh/sigmoid, the
fo-pooling recurrence with the cell state in fp32, zoneout's expectation
(evaluation) and the output gate, in one program per (batch row, block of
hidden units) that loops over time, as pytorch-qrnn's ForgetMult kernel does.
The torch-op path (``forget_mult``) issues several kernels per timestep or
scan round; this one reads each gate once and writes h once.

    z = tanh(Z), f = keep * sigmoid(F) + (1 - keep), o = sigmoid(O)
    c_t = f_t c_{t-1} + (1 - f_t) z_t,  h_t = o_t c_t   (h_t = c_t without O)

``keep`` is 1 - zoneout in evaluation and 1 otherwise. Importing this module
needs ``triton`` (``pip install .[gpu]``); with ``TRITON_INTERPRET=1`` set
before triton is imported, the kernels run on CPU tensors (tests).
"""

import os
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from .precision import accumulation_dtype

BLOCK_H = 128  # hidden units per program: a few warps' worth of lanes
# Triton picks its interpreter when a kernel is decorated, from this variable.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _pool_forward(gates, c0, h_out, c_out, T, B, H, keep,
                  HAS_C0: tl.constexpr, OUTPUT_GATE: tl.constexpr, G: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < H
    c = tl.zeros([BLOCK], dtype=tl.float32)
    if HAS_C0:
        c = tl.load(c0 + b * H + cols, mask=mask, other=0.0).to(tl.float32)
    for t in range(T):
        row = (t * B + b) * G * H
        z = 2.0 * tl.sigmoid(2.0 * tl.load(gates + row + cols, mask=mask, other=0.0).to(tl.float32)) - 1.0
        f = keep * tl.sigmoid(tl.load(gates + row + H + cols, mask=mask, other=0.0).to(tl.float32)) + (1.0 - keep)
        c = f * c + (1.0 - f) * z
        h = c
        if OUTPUT_GATE:
            h = tl.sigmoid(tl.load(gates + row + 2 * H + cols, mask=mask, other=0.0).to(tl.float32)) * c
        out = (t * B + b) * H + cols
        tl.store(c_out + out, c, mask=mask)
        tl.store(h_out + out, h.to(h_out.dtype.element_ty), mask=mask)


@triton.jit
def _pool_backward(gates, c0, c_all, grad_h, grad_c_last, grad_gates, grad_c0, T, B, H, keep,
                   HAS_C0: tl.constexpr, OUTPUT_GATE: tl.constexpr, G: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < H
    # carry: dL/dc_t through c_{t+1}; it starts as the gradient of the returned c_T.
    carry = tl.load(grad_c_last + b * H + cols, mask=mask, other=0.0).to(tl.float32)
    c_init = tl.zeros([BLOCK], dtype=tl.float32)
    if HAS_C0:
        c_init = tl.load(c0 + b * H + cols, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(c_all + ((T - 1) * B + b) * H + cols, mask=mask, other=0.0)
    for step in range(T):
        t = T - 1 - step
        row = (t * B + b) * G * H
        out = (t * B + b) * H + cols
        # c_{t-1}, read from a clamped row and replaced by c0 (or 0) at t = 0: masks stay block-shaped.
        c_prev = tl.load(c_all + (tl.maximum(t - 1, 0) * B + b) * H + cols, mask=mask, other=0.0)
        c_prev = tl.where(t > 0, c_prev, c_init)
        z = 2.0 * tl.sigmoid(2.0 * tl.load(gates + row + cols, mask=mask, other=0.0).to(tl.float32)) - 1.0
        sf = tl.sigmoid(tl.load(gates + row + H + cols, mask=mask, other=0.0).to(tl.float32))
        f = keep * sf + (1.0 - keep)
        dh = tl.load(grad_h + out, mask=mask, other=0.0).to(tl.float32)
        g = carry
        if OUTPUT_GATE:
            o = tl.sigmoid(tl.load(gates + row + 2 * H + cols, mask=mask, other=0.0).to(tl.float32))
            g += dh * o
            tl.store(grad_gates + row + 2 * H + cols, (dh * c * o * (1.0 - o)).to(grad_gates.dtype.element_ty), mask=mask)
        else:
            g += dh
        tl.store(grad_gates + row + cols, (g * (1.0 - f) * (1.0 - z * z)).to(grad_gates.dtype.element_ty), mask=mask)
        tl.store(grad_gates + row + H + cols, (g * (c_prev - z) * keep * sf * (1.0 - sf)).to(grad_gates.dtype.element_ty),
                 mask=mask)
        carry = f * g
        c = c_prev
    if HAS_C0:
        tl.store(grad_c0 + b * H + cols, carry.to(grad_c0.dtype.element_ty), mask=mask)


class FusedPooling(torch.autograd.Function):
    """(gates T x B x G*H, c0 B x H or None) -> (h T x B x H, c_T B x H)."""

    @staticmethod
    def forward(ctx, gates: Tensor, c0: Optional[Tensor], keep: float, output_gate: bool):
        T, B, GH = gates.shape
        G = 3 if output_gate else 2
        H = GH // G
        gates = gates.contiguous()
        c0_in = c0.contiguous() if c0 is not None else gates.new_empty(0)
        h = gates.new_empty(T, B, H)
        c = torch.empty(T, B, H, dtype=accumulation_dtype(gates.dtype), device=gates.device)
        grid = (B, triton.cdiv(H, BLOCK_H))
        _pool_forward[grid](gates, c0_in, h, c, T, B, H, keep, HAS_C0=c0 is not None, OUTPUT_GATE=output_gate,
                            G=G, BLOCK=BLOCK_H)
        ctx.save_for_backward(gates, c0_in, c)
        ctx.keep, ctx.output_gate, ctx.has_c0 = keep, output_gate, c0 is not None
        return h, c[-1].to(gates.dtype)

    @staticmethod
    def backward(ctx, grad_h: Tensor, grad_c_last: Tensor):
        gates, c0, c = ctx.saved_tensors
        T, B, H = c.shape
        grad_h = torch.zeros_like(c) if grad_h is None else grad_h.contiguous()
        grad_c_last = c.new_zeros(B, H) if grad_c_last is None else grad_c_last.contiguous()
        grad_gates = torch.empty_like(gates)
        grad_c0 = torch.empty_like(c0) if ctx.has_c0 else gates.new_empty(0)
        _pool_backward[(B, triton.cdiv(H, BLOCK_H))](
            gates, c0, c, grad_h, grad_c_last, grad_gates, grad_c0, T, B, H, ctx.keep,
            HAS_C0=ctx.has_c0, OUTPUT_GATE=ctx.output_gate, G=gates.size(2) // H, BLOCK=BLOCK_H)
        return grad_gates, (grad_c0 if ctx.has_c0 else None), None, None


def fused_pooling(gates: Tensor, c0: Optional[Tensor] = None, keep: float = 1.0,
                  output_gate: bool = True) -> Tuple[Tensor, Tensor]:
    """The pooling of a QRNN layer from its pre-activation gates (Z, F[, O]
    along the last dimension): returns h (T x B x H) and c_T (B x H)."""
    if gates.dim() != 3 or gates.size(2) % (3 if output_gate else 2):
        raise ValueError(f"fused_pooling expects gates T x B x {'3' if output_gate else '2'}H, got {tuple(gates.shape)}")
    if gates.size(0) == 0:
        raise ValueError("fused_pooling needs at least one timestep")
    if not gates.is_cuda and not INTERPRETED:
        raise ValueError(f"the QRNN's triton kernel (--qrnn-kernel triton) runs on CUDA tensors, these are on "
                         f"{gates.device}: use --qrnn-kernel torch there (or TRITON_INTERPRET=1 to test it on CPU)")
    return FusedPooling.apply(gates, c0, float(keep), output_gate)
