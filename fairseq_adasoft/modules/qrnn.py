"""Quasi-recurrent neural network (Bradbury, Merity, Xiong & Socher 2016,
"Quasi-Recurrent Neural Networks", arXiv:1611.01576).

A QRNN layer computes its three gates for all timesteps at once with a
convolution of width ``window`` over the input, then runs only the cheap
elementwise fo-pooling recurrence (``forget_mult``) sequentially:

    Z = tanh(W_z * X)      candidate
    F = sigmoid(W_f * X)   forget gate
    O = sigmoid(W_o * X)   output gate
    c_t = f_t c_{t-1} + (1 - f_t) z_t,   h_t = o_t c_t

``QRNNLayer`` and ``QRNN`` follow ``torch.nn.LSTM``: time-major inputs
(``T x B x C``), ``forward(input, hidden=None) -> (output, hidden)``.
"""

import functools
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dropout import LockedDropout
from .forget_mult import forget_mult

# torch's CPU capability on which oneDNN's conv1d beats the GEMM for window-2 gates;
# on AVX2 its backward-weights kernel is slow (benchmarks/qrnn_layer.py measures both).
CONV_GATES_CPU_CAPABILITY = "AVX512"


@functools.lru_cache(maxsize=None)
def cpu_conv_gates_pay() -> bool:
    """Whether window-2 QRNN gates run faster as oneDNN's conv1d on this CPU."""
    return torch.backends.cpu.get_cpu_capability() == CONV_GATES_CPU_CAPABILITY


# Per-layer recurrent state: the last cell state c_T (B x H) and, for
# window 2, the last input x_T (B x C) that the next chunk's first step sees.
LayerState = Tuple[Tensor, Optional[Tensor]]

NUM_GATES_WITH_OUTPUT = 3  # Z, F, O
NUM_GATES_WITHOUT_OUTPUT = 2  # Z, F
KERNELS = ("torch", "triton")


def fused_pooling(*args):
    """``triton_qrnn.fused_pooling``, imported on first use: triton is an optional extra."""
    try:
        from .triton_qrnn import fused_pooling as fused
    except ImportError as e:
        raise ValueError(f"the QRNN's triton kernel needs triton ({e}): pip install '.[gpu]' "
                         f"(CUDA builds of torch bring it), or use the torch kernel") from e
    return fused(*args)

class QRNNLayer(nn.Module):
    """One QRNN layer with fo-pooling (or f-pooling when ``output_gate=False``).

    Args:
        input_size: features of the input ``x`` (C).
        hidden_size: features of the cell state and output (H).
        window: convolution width over time, 1 or 2 (Bradbury et al. use 2 on
            the first layer of their language model, 1 above).
        output_gate: use the O gate (fo-pooling); without it, h_t = c_t.
        zoneout: probability of keeping a unit's previous cell state at a
            timestep during training (f_t forced to 1); in eval mode the
            forget gate takes its expectation instead.
        weight_drop: DropConnect probability on the gate weights during
            training (Wan et al. 2013, used by AWD-QRNN).

    ``gate_op`` ("auto", "linear" or "conv") picks how the gates are computed;
    both use the same ``linear`` parameters, so checkpoints do not depend on it.
    ``kernel`` ("torch" or "triton") picks how the pooling runs: torch ops
    around ``forget_mult``, or one fused Triton kernel (``triton_qrnn.py``; CUDA
    tensors, or CPU ones under ``TRITON_INTERPRET=1``). Training with zoneout
    draws a mask the fused kernel does not take, so it runs the torch ops.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        window: int = 1,
        output_gate: bool = True,
        zoneout: float = 0.0,
        weight_drop: float = 0.0,
        kernel: str = "torch",
    ):
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"QRNNLayer kernel must be one of {KERNELS}, got {kernel!r}")
        if window not in (1, 2):
            raise ValueError(f"QRNNLayer window must be 1 or 2, got {window}")
        for name, p in (("zoneout", zoneout), ("weight_drop", weight_drop)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"QRNNLayer {name} must be in [0, 1), got {p}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.window = window
        self.output_gate = output_gate
        self.zoneout = zoneout
        self.weight_drop = weight_drop
        num_gates = NUM_GATES_WITH_OUTPUT if output_gate else NUM_GATES_WITHOUT_OUTPUT
        # Columns [0:C) multiply x_{t-1}, [C:2C) multiply x_t when window == 2.
        self.linear = nn.Linear(window * input_size, num_gates * hidden_size)
        self.gate_op = "auto"
        self.kernel = kernel

    def _resolved_gate_op(self, x: Tensor) -> str:
        if self.gate_op != "auto":
            return self.gate_op
        # For window 2 on an AVX-512 CPU oneDNN's conv1d beats a Linear over [x_{t-1}, x_t] in
        # training; on CUDA and AVX2, and for evaluation's few tokens per batch, the GEMM wins.
        conv_pays = self.window == 2 and self.training and x.device.type == "cpu" and cpu_conv_gates_pay()
        return "conv" if conv_pays else "linear"

    def _gates_linear(self, x: Tensor, prev_x: Optional[Tensor], weight: Tensor) -> Tensor:
        if self.window == 2:
            if prev_x is None:
                prev_x = x.new_zeros(x.shape[1:])
            shifted = torch.cat([prev_x.unsqueeze(0), x[:-1]], dim=0)  # T x B x C
            x = torch.cat([shifted, x], dim=2)  # T x B x 2C
        return F.linear(x, weight, self.linear.bias)  # T x B x G*H

    def _gates_conv(self, x: Tensor, prev_x: Optional[Tensor], weight: Tensor) -> Tensor:
        """The same gates as a causal convolution over time (same weights)."""
        C = self.input_size
        if prev_x is None:
            prev_x = x.new_zeros(x.shape[1:])
        inp = torch.cat([prev_x.unsqueeze(0), x], dim=0) if self.window == 2 else x
        inp = inp.permute(1, 2, 0)  # B x C x T(+1)
        kernel = weight.view(-1, self.window, C).transpose(1, 2)  # G*H x C x window
        return F.conv1d(inp, kernel, self.linear.bias).permute(2, 0, 1)  # T x B x G*H

    def _gates(self, x: Tensor, prev_x: Optional[Tensor]) -> Tensor:
        weight = self.linear.weight  # G*H x window*C
        if self.training and self.weight_drop > 0.0:
            weight = F.dropout(weight, self.weight_drop, training=True)
        if self._resolved_gate_op(x) == "conv":
            return self._gates_conv(x, prev_x, weight)
        return self._gates_linear(x, prev_x, weight)

    def forward(
        self, input: Tensor, hidden: Optional[LayerState] = None
    ) -> Tuple[Tensor, LayerState]:
        """input: T x B x C; hidden: (c0 B x H, prev_x B x C or None)."""
        if input.dim() != 3 or input.size(2) != self.input_size:
            raise ValueError(
                f"QRNNLayer expects input T x B x {self.input_size}, got {tuple(input.shape)}"
            )
        c0, prev_x = hidden if hidden is not None else (None, None)
        if prev_x is not None:  # a carried state may come from a run in another precision
            prev_x = prev_x.to(input.dtype)
        gates = self._gates(input, prev_x)  # T x B x G*H
        last_x = input[-1] if self.window == 2 else None
        if self.kernel == "triton" and not (self.training and self.zoneout > 0.0):
            keep = 1.0 if self.training else 1.0 - self.zoneout  # zoneout's expectation in evaluation
            h, c_last = fused_pooling(gates, c0, keep, self.output_gate)
            return h, (c_last, last_x)
        gates = gates.chunk(gates.size(2) // self.hidden_size, dim=2)
        z = torch.tanh(gates[0])
        f = torch.sigmoid(gates[1])
        if self.zoneout > 0.0:
            if self.training:
                keep = f.new_empty(f.shape).bernoulli_(1 - self.zoneout)
                f = 1 - (1 - f) * keep
            else:
                f = 1 - (1 - f) * (1 - self.zoneout)
        c = forget_mult(f, z, c0)  # T x B x H
        h = torch.sigmoid(gates[2]) * c if self.output_gate else c
        return h, (c[-1], last_x)


class QRNN(nn.Module):
    """A stack of QRNN layers with the interface of ``torch.nn.LSTM``.

    Args:
        input_size, hidden_size, num_layers: as in ``nn.LSTM``.
        dropout: locked (variational) dropout between layers, as AWD-QRNN's
            ``dropouth``; ``nn.LSTM`` applies plain dropout at the same place.
        windows: window per layer; default 2 on the first layer, 1 above
            (awd-lstm-lm's QRNN language model).
        output_size: hidden size of the last layer (default ``hidden_size``);
            AWD-LSTM sets it to the embedding size so output weights can be tied.
        output_gate, zoneout, weight_drop, kernel: passed to every ``QRNNLayer``.

    ``forward(input T x B x C, hidden=None)`` returns the last layer's output
    ``T x B x output_size`` and a list with one ``LayerState`` per layer.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        windows: Optional[Sequence[int]] = None,
        output_size: Optional[int] = None,
        output_gate: bool = True,
        zoneout: float = 0.0,
        weight_drop: float = 0.0,
        kernel: str = "torch",
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"QRNN num_layers must be >= 1, got {num_layers}")
        if windows is None:
            windows = [2] + [1] * (num_layers - 1)
        if len(windows) != num_layers:
            raise ValueError(f"QRNN got {len(windows)} windows for {num_layers} layers")
        output_size = output_size or hidden_size
        sizes = [input_size] + [hidden_size] * (num_layers - 1) + [output_size]
        self.layers = nn.ModuleList(
            QRNNLayer(sizes[i], sizes[i + 1], windows[i], output_gate, zoneout, weight_drop, kernel)
            for i in range(num_layers)
        )
        self.between_layers = LockedDropout(dropout)

    def forward(
        self, input: Tensor, hidden: Optional[List[LayerState]] = None
    ) -> Tuple[Tensor, List[LayerState]]:
        if hidden is not None and len(hidden) != len(self.layers):
            raise ValueError(f"QRNN hidden has {len(hidden)} states for {len(self.layers)} layers")
        x = input
        new_hidden = []
        for i, layer in enumerate(self.layers):
            x, state = layer(x, None if hidden is None else hidden[i])
            new_hidden.append(state)
            if i < len(self.layers) - 1:
                x = self.between_layers(x)
        return x, new_hidden
