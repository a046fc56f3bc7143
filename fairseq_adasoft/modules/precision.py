"""Where 16-bit inputs must be computed in fp32 (recurrences, log-softmax,
loss sums), wider inputs keep their own precision (float64 for gradcheck)."""

import torch
from torch import Tensor

HALF_DTYPES = (torch.float16, torch.bfloat16)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in HALF_DTYPES else dtype


def upcast(x: Tensor) -> Tensor:
    """``x`` in fp32 if it is fp16/bf16, else unchanged."""
    return x.to(accumulation_dtype(x.dtype))
