"""What --cpu-autocast-bf16 does to speed on this CPU: fp32 against bf16
autocast, forward+backward, at the main job's sizes (recipes/wikitext2/run.sh).

Measures one gate GEMM (a window-1 layer's Z, F, O gates) and the whole
QRNN stack. Where the CPU multiplies bf16 in hardware (AVX512-BF16 or
AMX) bf16 is the faster one; elsewhere torch falls back to slow code, which is
why the model refuses to train with the flag there.

    python -m benchmarks.cpu_bf16 [--repeats 3]

Writes benchmarks/results/cpu_bf16_<torch's CPU capability>.json, e.g.
cpu_bf16_avx2.json, so machines of different kinds keep separate files.
"""

import argparse

import torch

from benchmarks.common import time_ms, write_result
from fairseq_adasoft.modules import QRNN
from fairseq_adasoft.presets import ARCHITECTURES, MAIN_JOB

# The main job's batch shape and model (fairseq_adasoft/presets.py).
MODEL = ARCHITECTURES[MAIN_JOB["arch"]]
T, B = MAIN_JOB["tokens_per_sample"], MAIN_JOB["batch_size"]
EMBED, HIDDEN, LAYERS = MODEL["embed_dim"], MODEL["hidden_size"], MODEL["num_layers"]
WINDOWS = [2] + [1] * (LAYERS - 1)
GATES = 3  # Z, F and O (Bradbury et al. 2016)
WARMUP = 1


def fwd_bwd(step, bf16: bool):
    """One forward (under bf16 autocast if asked) and backward of ``step``."""
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = step()
        out.float().sum().backward()
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)

    gate = torch.nn.Linear(HIDDEN, GATES * HIDDEN)
    gate_input = torch.randn(T * B, HIDDEN, requires_grad=True)  # (T*B) x H
    stack = QRNN(EMBED, HIDDEN, num_layers=LAYERS, windows=WINDOWS, output_size=EMBED)
    stack_input = torch.randn(T, B, EMBED, requires_grad=True)  # T x B x C
    gate_flops = 3 * 2 * T * B * HIDDEN * GATES * HIDDEN  # forward + two backward GEMMs

    results = {}
    for name, step in (("gate_gemm", lambda: gate(gate_input)), ("qrnn_stack", lambda: stack(stack_input)[0])):
        fp32 = time_ms(fwd_bwd(step, bf16=False), args.repeats, WARMUP)
        bf16 = time_ms(fwd_bwd(step, bf16=True), args.repeats, WARMUP)
        results[name] = {"fp32_ms": fp32, "bf16_ms": bf16, "bf16_vs_fp32": bf16["median"] / fp32["median"]}
        print(f"{name}: fp32 {fp32['median']:.1f} ms, bf16 {bf16['median']:.1f} ms "
              f"(bf16 takes {results[name]['bf16_vs_fp32']:.2f}x the fp32 time)")
    for precision in ("fp32", "bf16"):
        results["gate_gemm"][f"{precision}_gflops"] = gate_flops / results["gate_gemm"][f"{precision}_ms"]["median"] / 1e6

    # The file is named by the CPU kind; "machine" records the capability and bf16 support.
    path = write_result(f"cpu_bf16_{torch.backends.cpu.get_cpu_capability().lower()}", {
        "shape": {"T": T, "B": B, "embed": EMBED, "hidden": HIDDEN, "layers": LAYERS},
        "results": results,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
