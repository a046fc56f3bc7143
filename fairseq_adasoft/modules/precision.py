"""Where 16-bit inputs must be computed in fp32 (recurrences, log-softmax,
loss sums), wider inputs keep their own precision (float64 for gradcheck);
and whether this CPU can do bf16 matmuls at speed."""

import functools
import platform

import torch
from torch import Tensor

HALF_DTYPES = (torch.float16, torch.bfloat16)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in HALF_DTYPES else dtype


def upcast(x: Tensor) -> Tensor:
    """``x`` in fp32 if it is fp16/bf16, else unchanged."""
    return x.to(accumulation_dtype(x.dtype))


# torch's probes for the x86 instructions that multiply bf16 in hardware.
NATIVE_BF16_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (x86: AVX512-BF16 or AMX).

    Without them torch's CPU bf16 matmuls fall back to slow code: on an
    AVX2-only AMD EPYC they ran 22-31x slower than fp32
    (benchmarks/results/cpu_bf16_avx2.json). Other architectures cannot be
    probed here and count as capable."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return True
    probes = [getattr(torch.cpu, name, None) for name in NATIVE_BF16_PROBES]
    probes = [probe for probe in probes if probe is not None]
    return not probes or any(probe() for probe in probes)
