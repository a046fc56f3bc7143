"""What --cpu-autocast-bf16 does to speed on this CPU: fp32 against bf16 autocast,
forward+backward, at the main job's sizes (recipes/wikitext2/run.sh): one gate
GEMM (a window-1 layer's Z, F, O gates) and the whole QRNN stack. Where the CPU
multiplies bf16 in hardware (AVX512-BF16 or AMX) bf16 is the faster one;
elsewhere torch falls back to slow code, which is why the model refuses to
train with the flag there.

    python -m benchmarks.cpu_bf16 [--repeats 3]   # writes cpu_bf16_<torch's CPU capability>.json, e.g. cpu_bf16_avx2
"""

import torch

from benchmarks.harness import main, time_ms
from fairseq_adasoft.modules import QRNN
from fairseq_adasoft.presets import ARCHITECTURES, MAIN_JOB

MODEL = ARCHITECTURES[MAIN_JOB["arch"]]
T, B = MAIN_JOB["tokens_per_sample"], MAIN_JOB["batch_size"]
EMBED, HIDDEN, LAYERS = MODEL["embed_dim"], MODEL["hidden_size"], MODEL["num_layers"]
GATES = 3  # Z, F and O (Bradbury et al. 2016)
CASES = [dict(op="gate_gemm", T=T, B=B, hidden=HIDDEN), dict(op="qrnn_stack", T=T, B=B, hidden=HIDDEN)]


def step(op: str, T: int, B: int, hidden: int):
    torch.manual_seed(0)
    if op == "gate_gemm":
        gate, x = torch.nn.Linear(hidden, GATES * hidden), torch.randn(T * B, hidden, requires_grad=True)
        return lambda: gate(x)
    embed = EMBED * hidden // HIDDEN  # the main job's embedding, scaled with the width
    stack = QRNN(embed, hidden, num_layers=LAYERS, windows=[2] + [1] * (LAYERS - 1), output_size=embed)
    x = torch.randn(T, B, embed, requires_grad=True)
    return lambda: stack(x)[0]


def measure(op: str, T: int, B: int, hidden: int, repeats: int = 3) -> dict:
    forward, ms = step(op, T, B, hidden), {}
    for precision in ("fp32", "bf16"):
        def fwd_bwd():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = forward()
            out.float().sum().backward()
        ms[f"{precision}_ms"] = time_ms(fwd_bwd, repeats)
    return {**ms, "bf16_vs_fp32": ms["bf16_ms"]["median"] / ms["fp32_ms"]["median"]}


SECTIONS = [dict(title="bf16 autocast on a CPU without bf16 instructions, ms", command="python -m benchmarks.cpu_bf16",
                 files=["cpu_bf16_avx2"], columns={"": "op", "fp32": "fp32_ms:,.2f", "bf16 autocast": "bf16_ms:,.2f",
                                                   "bf16 / fp32": "bf16_vs_fp32:.2f"},
                 text="Forward + backward at the main job's T, B and width: one gate GEMM, and the 4-layer QRNN stack.")]

if __name__ == "__main__":
    main(f"cpu_bf16_{torch.backends.cpu.get_cpu_capability().lower()}", CASES, measure,
         quick_cases=[dict(op=op, T=5, B=3, hidden=16) for op in ("gate_gemm", "qrnn_stack")])
