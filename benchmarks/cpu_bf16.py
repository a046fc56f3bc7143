"""fp32 against --cpu-autocast-bf16 on an AVX2 CPU: the one-off measurement behind refusing the flag on CPUs without
bf16 matmuls. The benchmark that ran it lives in git (last at 663587b); its file, cpu_bf16_avx2.json, is kept."""

SECTIONS = [dict(title="bf16 autocast on a CPU without bf16 instructions, ms", command="python -m benchmarks.cpu_bf16 "
                 "(at 663587b)", files=["cpu_bf16_avx2"], columns={"": "op", "fp32": "fp32_ms:,.2f",
                                                                   "bf16 autocast": "bf16_ms:,.2f", "bf16 / fp32": "bf16_vs_fp32:.2f"},
                 text="Forward + backward at the main job's T, B and width.")]
