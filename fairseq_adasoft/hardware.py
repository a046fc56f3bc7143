"""What this CPU is and can do: the probes the model, the recipes and the results
files use (the QRNN layer's own gate choice lives in ``modules/qrnn.py``)."""

import functools
import platform

import torch

# torch's probes for the x86 instructions that multiply bf16 in hardware.
NATIVE_BF16_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (x86: AVX512-BF16 or AMX).
    Without them torch's CPU bf16 matmuls fall back to slow code. Other
    architectures cannot be probed here and count as capable."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return True
    probes = [getattr(torch.cpu, name, None) for name in NATIVE_BF16_PROBES]
    probes = [probe for probe in probes if probe is not None]
    return not probes or any(probe() for probe in probes)


def first_cpu(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The first processor's "key: value" lines of /proc/cpuinfo, or {} off Linux."""
    fields = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip() and fields:
                    break  # the first processor's block has ended
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        return {}
    return fields


def cpu_model_name(cpu: dict) -> str:
    return cpu.get("model name") or platform.processor() or "unknown"


def cpu_family_model(cpu: dict) -> dict:
    """The vendor, family and model numbers, or {} where /proc/cpuinfo has none:
    a model name such as "AMD EPYC" does not tell CPU generations apart."""
    keys = {"vendor_id": "vendor", "cpu family": "family", "model": "model"}
    return {name: int(cpu[key]) if cpu[key].isdigit() else cpu[key] for key, name in keys.items() if key in cpu}


if __name__ == "__main__":  # the recipes' probe, run as a file: torch alone, not the package's fairseq import
    print(int(cpu_has_native_bf16()))
