"""Forward+backward time of the QRNN on this CPU (or GPU, --cuda), at the seed's sizes and the main
job's batch: a QRNNLayer of window 2 and 1, gates as a Linear over [x_{t-1}, x_t] or a causal conv1d,
against its gate floor (the gate op alone); a 4-layer QRNN against a 4-layer nn.LSTM; with --cuda,
the fused Triton kernel against the torch ops, fp32 and fp16. --bf16: all under CPU bf16 autocast.

    python -m benchmarks.qrnn_layer [--cuda | --bf16] [--input-size C --hidden-size H] [--tag NAME]
"""

import torch

from benchmarks.harness import arguments, goal, main, median, time_ms
from fairseq_adasoft.modules import QRNN, QRNNLayer
from fairseq_adasoft.presets import ARCHITECTURES, MAIN_JOB

SEED = ARCHITECTURES["qrnn_lm_wikitext2_seed"]
T, B, UNITS, LAYERS = MAIN_JOB["tokens_per_sample"], MAIN_JOB["batch_size"], SEED["hidden_size"], SEED["num_layers"]
WARMUP, CALLS = 3, 10  # calls per timed repeat
GOAL_LAYER_VS_FLOOR, GOAL_STACK_VS_LSTM = 1.3, 2.0
GOAL_TRITON_LAYER_VS_FLOOR, GOAL_TRITON_STACK_VS_LSTM = 1.5, 3.0  # fp16 at both shapes; the seed's shape
# The kernels' shapes (T, B, H, with C = H): the seed's, and AWD-QRNN's WikiText-2 setting.
KERNEL_SHAPES = {"seed": (T, B, UNITS), "awd_qrnn": (70, 40, 1550)}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def cases(device="cpu", precision="fp32", C=UNITS, H=UNITS, t=T, b=B, shapes=KERNEL_SHAPES, dtypes=("fp32", "fp16")):
    size = dict(device=device, precision=precision, T=t, B=b, input_size=C, hidden_size=H)
    out = [dict(part="layer", window=w, **size) for w in (2, 1)] + [dict(part="stack", window=0, **size)]
    return out + [dict(part="kernel", window=1, device=device, precision=p, T=s[0], B=s[1], input_size=s[2],
                       hidden_size=s[2], shape=name) for name, s in shapes.items() for p in dtypes] * (device != "cpu")


def timed(fn, device: str, precision: str) -> dict:
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = fn()
        (out[0] if isinstance(out, tuple) else out).sum().backward()
    return time_ms(step, repeats=5, warmup=WARMUP, calls=CALLS, sync=torch.cuda.synchronize if device == "cuda" else None)


def measure(part, window, device, precision, T, B, input_size, hidden_size, shape=None) -> dict:
    torch.manual_seed(0)
    dtype = DTYPES.get(precision, torch.float32) if part == "kernel" else torch.float32
    x = torch.randn(T, B, input_size, device=device, dtype=dtype, requires_grad=True)  # T x B x C
    if part == "stack":
        qrnn, lstm = (m(input_size, hidden_size, num_layers=LAYERS).to(device) for m in (QRNN, torch.nn.LSTM))
        m = {"qrnn_ms": timed(lambda: qrnn(x), device, precision), "lstm_ms": timed(lambda: lstm(x), device, precision)}
        return {**m, "qrnn_speedup_vs_lstm": m["lstm_ms"]["median"] / m["qrnn_ms"]["median"]}
    layer, m = QRNNLayer(input_size, hidden_size, window=window).to(device, dtype), {}
    gates = {"linear": layer._gates_linear, "conv": layer._gates_conv}
    if part == "kernel":  # the fused kernel against the torch ops (--qrnn-kernel)
        m["floor_ms"] = timed(lambda: layer._gates_linear(x, None, layer.linear.weight), device, precision)
        lstm = torch.nn.LSTM(input_size, hidden_size, num_layers=LAYERS).to(device, dtype)
        m["lstm_ms"] = timed(lambda: lstm(x), device, precision)
        for kernel in ("torch", "triton"):
            layer.kernel = kernel
            stack = QRNN(input_size, hidden_size, num_layers=LAYERS, kernel=kernel).to(device, dtype)
            m[f"layer_{kernel}_ms"] = timed(lambda: layer(x), device, precision)
            m[f"stack_{kernel}_ms"] = timed(lambda: stack(x), device, precision)
            m[f"layer_{kernel}_vs_floor"] = m[f"layer_{kernel}_ms"]["median"] / m["floor_ms"]["median"]
            m[f"stack_{kernel}_vs_lstm"] = m["lstm_ms"]["median"] / m[f"stack_{kernel}_ms"]["median"]
        return m
    for op, gate in gates.items():
        layer.gate_op = op
        m[f"floor_{op}_ms"] = timed(lambda: gate(x, None, layer.linear.weight), device, precision)
        m[f"layer_{op}_ms"] = timed(lambda: layer(x), device, precision)
    layer.gate_op = "auto"
    m["auto_picks"] = chosen = layer._resolved_gate_op(x)
    return {**m, "layer_vs_floor": m[f"layer_{chosen}_ms"]["median"] / m[f"floor_{chosen}_ms"]["median"]}


def goals(cases):
    metrics = {(c["params"]["part"], c["params"]["window"], c["params"].get("shape"), c["params"]["precision"]):
               c["metrics"] for c in cases}
    worst = lambda key, part, pick: pick([median(m[key]) for k, m in metrics.items() if k[0] == part] or [None])  # noqa: E731
    out = [goal("QRNN layer within 1.3x of its gate floor (worst window)", worst("layer_vs_floor", "layer", max),
                GOAL_LAYER_VS_FLOOR, at_most=True),
           goal("4-layer QRNN 2x faster than nn.LSTM", worst("qrnn_speedup_vs_lstm", "stack", min), GOAL_STACK_VS_LSTM)]
    fp16 = [median(m["layer_triton_vs_floor"]) for k, m in metrics.items() if k[0] == "kernel" and k[3] == "fp16"]
    seed = [median(m["stack_triton_vs_lstm"]) for k, m in metrics.items() if k[0] == "kernel" and k[2] == "seed"]
    return out + ([goal("Triton layer within 1.5x of its gate floor, fp16", max(fp16), GOAL_TRITON_LAYER_VS_FLOOR,
                        at_most=True),
                   goal("Triton stack 3x cuDNN's LSTM at the seed's shape", min(seed), GOAL_TRITON_STACK_VS_LSTM)]
                  if fp16 and seed else [])


SIZE = {"C": "input_size", "H": "hidden_size"}
FILES = ["qrnn_layer_cuda", "qrnn_layer_cpu_avx2_main"]  # earlier CPU runs at 300 units: in git at 0f3350d
SECTIONS = [dict(title="QRNN layer of window 2, forward+backward, ms", command="python -m benchmarks.qrnn_layer",
                 files=FILES, where={"part": "layer", "window": 2}, text=f"T = {T}, B = {B}.",
                 columns=SIZE | {"GEMM gates": "layer_linear_ms:,.2f", "conv1d gates": "layer_conv_ms:,.2f",
                                 "auto picks": "auto_picks", "layer / gate floor": "layer_vs_floor:.2f"}),
            dict(title="4-layer QRNN against 4-layer nn.LSTM, forward+backward, ms", command="python -m benchmarks.qrnn_layer",
                 files=FILES, where={"part": "stack"},
                 columns=SIZE | {"QRNN": "qrnn_ms:,.2f", "nn.LSTM": "lstm_ms:,.2f", "QRNN vs LSTM": "qrnn_speedup_vs_lstm:.2f"})]

if __name__ == "__main__":
    p = arguments(repeats=1)
    p.add_argument("--cuda", action="store_true", help="measure on the GPU, the Triton kernel too")
    p.add_argument("--bf16", action="store_true", help="CPU bf16 autocast for every model")
    p.add_argument("--input-size", type=int, default=UNITS, help="features into each first layer (C)")
    p.add_argument("--hidden-size", type=int, default=UNITS, help="units of every layer (H)")
    args = p.parse_args()
    if args.bf16 and args.cuda:
        raise ValueError("--bf16 measures CPU autocast; drop --cuda")
    device, precision = ("cuda", "fp32") if args.cuda else ("cpu", "bf16" if args.bf16 else "fp32")
    name = "qrnn_layer_" + ("cuda" if args.cuda else "cpu_bf16" if args.bf16 else "cpu")
    main(name, cases(device, precision, args.input_size, args.hidden_size), measure, goals, args=args,
         quick_cases=cases(device, precision, 8, 16, t=5, b=3, shapes={"seed": (3, 2, 8)}, dtypes=("fp32",)))
