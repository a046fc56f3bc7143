"""Forward+backward time of the QRNN on this machine's CPU (or GPU with --cuda).

Measures, at the seed experiment's sizes:
  * the window-2 gate operation done as a Linear over [x_{t-1}, x_t] and as a
    causal conv1d, which QRNNLayer picks between per device;
  * a QRNNLayer against its gate-operation floor (the gate op alone);
  * a 4-layer QRNN stack (windows 2/1/1/1) against a 4-layer nn.LSTM.

  * with --cuda, the pooling kernels (--qrnn-kernel): the fused Triton kernel
    against the torch-op scan, each layer against its gate-GEMM floor, and the
    4-layer stacks against cuDNN's LSTM, fp32 and fp16, at KERNEL_SHAPES.

    python -m benchmarks.qrnn_layer [--cuda] [--bf16] [--repeats 5]
        [--input-size C --hidden-size H --tag NAME]

``--bf16`` runs everything, the LSTM included, under CPU bf16 autocast.
``--input-size``/``--hidden-size`` measure other sizes (the main job's first
layer is 400 -> 800); ``--tag`` is appended to the results file's name.
"""

import argparse

import torch

from benchmarks import common
from fairseq_adasoft.modules import QRNN, QRNNLayer
from fairseq_adasoft.presets import ARCHITECTURES, MAIN_JOB

# The seed experiment's model at the main job's batch shape.
SEED = ARCHITECTURES["qrnn_lm_wikitext2_seed"]
T, B, SEED_UNITS = MAIN_JOB["tokens_per_sample"], MAIN_JOB["batch_size"], SEED["hidden_size"]
NUM_LAYERS = SEED["num_layers"]
WARMUP = 3
ITERS_PER_REPEAT = 10
GOAL_LAYER_VS_FLOOR = 1.3
GOAL_STACK_VS_LSTM = 2.0
# The kernels' shapes (T, B, H, with C = H): the seed's, and AWD-QRNN's WikiText-2 setting.
KERNEL_SHAPES = {"seed": (T, B, SEED_UNITS), "awd_qrnn": (70, 40, 1550)}
KERNEL_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
GOAL_TRITON_LAYER_VS_FLOOR = 1.5  # fp16, both shapes
GOAL_TRITON_STACK_VS_LSTM = 3.0  # the seed's shape


def time_ms(fn, repeats, device, bf16=False):
    """min/median/max milliseconds of one call, over repeats of ITERS_PER_REPEAT calls."""
    if bf16:
        plain = fn

        def fn():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                plain()

    sync = torch.cuda.synchronize if device.type == "cuda" else None
    return common.time_ms(fn, repeats, WARMUP, ITERS_PER_REPEAT, sync)


def fwd_bwd(module, x):
    def step():
        out = module(x)
        out = out[0] if isinstance(out, tuple) else out
        out.sum().backward()
    return step


def gate_floor(layer, x, mode):
    """The gate op alone (what a QRNN cannot avoid), forward+backward."""
    weight = layer.linear.weight  # G*H x window*C

    def step():
        if mode == "conv":
            out = layer._gates_conv(x, None, weight)
        else:
            out = layer._gates_linear(x, None, weight)
        out.sum().backward()
    return step


def kernel_comparison(device, repeats, shapes=KERNEL_SHAPES, dtypes=KERNEL_DTYPES) -> dict:
    """Per shape and dtype: forward+backward ms of the gate floor, the layer with
    each kernel, the stacks with each kernel and cuDNN's LSTM."""
    out = {}
    for shape_name, (t, b, h) in shapes.items():
        for dtype_name, dtype in dtypes.items():
            torch.manual_seed(0)
            x = torch.randn(t, b, h, device=device, dtype=dtype, requires_grad=True)
            layer = QRNNLayer(h, h, window=1).to(device, dtype)
            entry = {"floor_ms": time_ms(gate_floor(layer, x, "linear"), repeats, device)}
            for kernel in ("torch", "triton"):
                layer.kernel = kernel
                entry[f"layer_{kernel}_ms"] = time_ms(fwd_bwd(layer, x), repeats, device)
                entry[f"layer_{kernel}_vs_floor"] = entry[f"layer_{kernel}_ms"]["median"] / entry["floor_ms"]["median"]
                qrnn = QRNN(h, h, num_layers=NUM_LAYERS, kernel=kernel).to(device, dtype)
                entry[f"stack_{kernel}_ms"] = time_ms(fwd_bwd(qrnn, x), repeats, device)
            lstm = torch.nn.LSTM(h, h, num_layers=NUM_LAYERS).to(device, dtype)
            entry["lstm_ms"] = time_ms(fwd_bwd(lstm, x), repeats, device)
            for kernel in ("torch", "triton"):
                entry[f"stack_{kernel}_vs_lstm"] = entry["lstm_ms"]["median"] / entry[f"stack_{kernel}_ms"]["median"]
            out[f"{shape_name}_{dtype_name}"] = {"shape": {"T": t, "B": b, "H": h}, **entry}
    return out


def kernel_goals(kernels: dict) -> dict:
    fp16 = [v for k, v in kernels.items() if k.endswith("_fp16")]
    return {
        f"triton_layer_within_{GOAL_TRITON_LAYER_VS_FLOOR}x_of_gate_floor_fp16": all(
            e["layer_triton_vs_floor"] <= GOAL_TRITON_LAYER_VS_FLOOR for e in fp16),
        f"triton_stack_{GOAL_TRITON_STACK_VS_LSTM}x_lstm_at_the_seed_shape": all(
            kernels[k]["stack_triton_vs_lstm"] >= GOAL_TRITON_STACK_VS_LSTM for k in kernels if k.startswith("seed_")),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuda", action="store_true", help="measure on the GPU")
    parser.add_argument("--bf16", action="store_true", help="CPU bf16 autocast for every model")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--input-size", type=int, default=SEED_UNITS, help="features into each first layer (C)")
    parser.add_argument("--hidden-size", type=int, default=SEED_UNITS, help="units of every layer (H)")
    parser.add_argument("--tag", default="", help="suffix of the results file's name, e.g. avx2")
    args = parser.parse_args()
    C, H = args.input_size, args.hidden_size
    if args.bf16 and args.cuda:
        raise ValueError("--bf16 measures CPU autocast; drop --cuda")
    device = torch.device("cuda" if args.cuda else "cpu")
    torch.manual_seed(0)
    x = torch.randn(T, B, C, device=device, requires_grad=True)  # T x B x C
    results = {}

    for window in (2, 1):
        layer = QRNNLayer(C, H, window=window).to(device)
        entry = {}
        for mode in ("linear", "conv"):
            layer.gate_op = mode
            entry[f"floor_{mode}_ms"] = time_ms(gate_floor(layer, x, mode), args.repeats, device, args.bf16)
            entry[f"layer_{mode}_ms"] = time_ms(fwd_bwd(layer, x), args.repeats, device, args.bf16)
        layer.gate_op = "auto"
        chosen = layer._resolved_gate_op(x)
        entry["auto_picks"] = chosen
        entry["layer_vs_floor"] = entry[f"layer_{chosen}_ms"]["median"] / entry[f"floor_{chosen}_ms"]["median"]
        results[f"window{window}"] = entry

    qrnn = QRNN(C, H, num_layers=NUM_LAYERS).to(device)
    lstm = torch.nn.LSTM(C, H, num_layers=NUM_LAYERS).to(device)
    stack = {"qrnn_ms": time_ms(fwd_bwd(qrnn, x), args.repeats, device, args.bf16),
             "lstm_ms": time_ms(fwd_bwd(lstm, x), args.repeats, device, args.bf16)}
    stack["qrnn_speedup_vs_lstm"] = stack["lstm_ms"]["median"] / stack["qrnn_ms"]["median"]
    results["stack"] = stack

    if args.cuda:  # the fused kernel against the torch ops (--qrnn-kernel)
        results["kernels"] = kernel_comparison(device, args.repeats)
    goals = {
        f"layer_within_{GOAL_LAYER_VS_FLOOR}x_of_gate_floor": all(
            results[f"window{w}"]["layer_vs_floor"] <= GOAL_LAYER_VS_FLOOR for w in (1, 2)),
        f"stack_{GOAL_STACK_VS_LSTM}x_faster_than_lstm": stack["qrnn_speedup_vs_lstm"] >= GOAL_STACK_VS_LSTM,
        **(kernel_goals(results["kernels"]) if args.cuda else {}),
    }
    name = "qrnn_layer_cuda" if args.cuda else "qrnn_layer_cpu_bf16" if args.bf16 else "qrnn_layer_cpu"
    command = "python -m benchmarks.qrnn_layer" + " --cuda" * args.cuda + " --bf16" * args.bf16
    if (C, H) != (SEED_UNITS, SEED_UNITS):
        command += f" --input-size {C} --hidden-size {H}"
    name, command = common.tagged(name, command, args.tag)
    path = common.write_result(name, {"shape": {"T": T, "B": B, "C": C, "H": H, "layers": NUM_LAYERS},
                                      "results": results, "goals": goals},
                               command=command)
    print(path)
    rows = {**{k: v for k, v in results.items() if k != "kernels"}, **results.get("kernels", {})}
    for key, entry in rows.items():
        print(key, {k: (round(v["median"], 2) if "median" in v else v) if isinstance(v, dict) else round(v, 3)
                    if isinstance(v, float) else v for k, v in entry.items()})
    print(goals)


if __name__ == "__main__":
    main()
