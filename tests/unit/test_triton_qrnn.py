"""The fused Triton pooling kernel (--qrnn-kernel triton) against the plain
recurrence and the torch-op layer, run on CPU through Triton's interpreter
(fp32 and fp16: the interpreter has no bf16)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # read when triton decorates a kernel: set before it is imported

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")
from fairseq_adasoft.modules import QRNN, QRNNLayer  # noqa: E402
from fairseq_adasoft.modules import triton_qrnn  # noqa: E402
from fairseq_adasoft.modules.triton_qrnn import fused_pooling  # noqa: E402
from helpers import SMALL_MODEL, build  # noqa: E402
from references import forget_mult_reference  # noqa: E402

if not triton_qrnn.INTERPRETED:
    pytest.skip("triton was imported before TRITON_INTERPRET=1 was set: its kernels would need a GPU",
                allow_module_level=True)

T, B, H = 7, 3, 37  # odd sizes: H is not a multiple of the kernel's block


def reference_pooling(gates, c0, keep, output_gate):
    chunks = gates.float().split(gates.size(2) // (3 if output_gate else 2), dim=2)
    z, f = torch.tanh(chunks[0]), keep * torch.sigmoid(chunks[1]) + (1 - keep)
    c = forget_mult_reference(f, z, None if c0 is None else c0.float())
    return (torch.sigmoid(chunks[2]) * c if output_gate else c), c[-1]


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float16, 2e-3)])
@pytest.mark.parametrize("output_gate", [True, False])
@pytest.mark.parametrize("with_c0", [True, False])
def test_kernel_equals_the_plain_recurrence_values_and_gradients(dtype, tol, output_gate, with_c0):
    torch.manual_seed(0)
    gates = torch.randn(T, B, (3 if output_gate else 2) * H).to(dtype).requires_grad_()
    c0 = torch.randn(B, H).to(dtype).requires_grad_() if with_c0 else None
    grad_h, grad_c = torch.randn(T, B, H), torch.randn(B, H)
    h, c_last = fused_pooling(gates, c0, 0.8, output_gate)
    assert h.dtype == c_last.dtype == dtype
    ((h.float() * grad_h).sum() + (c_last.float() * grad_c).sum()).backward()
    ref_gates = gates.detach().clone().requires_grad_()
    ref_c0 = None if c0 is None else c0.detach().clone().requires_grad_()
    ref_h, ref_c = reference_pooling(ref_gates, ref_c0, 0.8, output_gate)
    ((ref_h * grad_h).sum() + (ref_c * grad_c).sum()).backward()
    for got, expected in [(h, ref_h), (c_last, ref_c), (gates.grad, ref_gates.grad)] + (
            [(c0.grad, ref_c0.grad)] if with_c0 else []):
        torch.testing.assert_close(got.float(), expected.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("training", [True, False])
def test_layer_with_the_kernel_equals_the_torch_layer(window, training):
    torch.manual_seed(1)
    layers = [QRNNLayer(11, H, window=window, zoneout=0.25, kernel=kernel) for kernel in ("torch", "triton")]
    layers[1].load_state_dict(layers[0].state_dict())
    x = torch.randn(T, B, 11)
    state = (torch.randn(B, H), torch.randn(B, 11) if window == 2 else None)
    outputs = []
    for layer in layers:
        layer.train(training)
        layer.zoneout = 0.0 if training else 0.25  # training zoneout draws a mask: the torch ops run it
        torch.manual_seed(2)
        h, (c, _) = layer(x, state)
        (h.square().sum() + c.sum()).backward()
        outputs.append([h, c, layer.linear.weight.grad, layer.linear.bias.grad])
    for got, expected in zip(outputs[1], outputs[0]):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_training_zoneout_runs_the_torch_ops():
    torch.manual_seed(3)
    layers = [QRNNLayer(5, H, zoneout=0.5, kernel=kernel) for kernel in ("torch", "triton")]
    layers[1].load_state_dict(layers[0].state_dict())
    x = torch.randn(T, B, 5)
    outs = []
    for layer in layers:
        torch.manual_seed(4)
        outs.append(layer.train()(x)[0])
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)


def test_qrnn_lm_with_the_triton_kernel_scores_as_with_torch_ops(data_bin):
    flags = [*SMALL_MODEL, "--adaptive-softmax-cutoff", "20,60", "--dropout", "0", "--dropout-input", "0",
             "--dropout-hidden", "0", "--weight-drop", "0", "--dropout-embed", "0"]
    torch.manual_seed(5)
    task, torch_model, criterion = build(data_bin, *flags)
    _, triton_model, _ = build(data_bin, *flags, "--qrnn-kernel", "triton")
    triton_model.load_state_dict(torch_model.state_dict())
    task.load_dataset("valid")
    sample = next(iter(task.get_batch_iterator(task.dataset("valid"), max_sentences=4).next_epoch_itr(shuffle=False)))
    losses = []
    for model in (torch_model, triton_model):
        loss, _, _ = criterion(model.train(), sample)
        loss.backward()
        losses.append((loss, model.decoder.qrnn.layers[0].linear.weight.grad))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
    assert triton_model.decoder.qrnn.layers[1].kernel == "triton"


def test_refuses_what_it_cannot_run(monkeypatch):
    with pytest.raises(ValueError, match="kernel must be one of"):
        QRNNLayer(4, 4, kernel="cuda")
    monkeypatch.setattr(triton_qrnn, "INTERPRETED", False)
    with pytest.raises(ValueError, match="runs on CUDA tensors.*use --qrnn-kernel torch"):
        QRNN(4, 6, kernel="triton")(torch.randn(3, 2, 4))


def test_kernel_benchmark_times_every_path_and_judges_its_goals(monkeypatch):
    from benchmarks import qrnn_layer

    monkeypatch.setattr(qrnn_layer, "WARMUP", 0)  # the interpreter is slow; the timings here are not the point
    monkeypatch.setattr(qrnn_layer, "CALLS", 1)
    entry = qrnn_layer.measure(part="kernel", window=1, device="cpu", precision="fp32", T=3, B=2, input_size=8,
                               hidden_size=8, shape="seed")
    for key in ("floor_ms", "layer_torch_ms", "layer_triton_ms", "stack_torch_ms", "stack_triton_ms", "lstm_ms"):
        assert entry[key]["median"] > 0
    assert entry["stack_triton_vs_lstm"] == entry["lstm_ms"]["median"] / entry["stack_triton_ms"]["median"]
    fast = {"layer_triton_vs_floor": 1.2, "stack_triton_vs_lstm": 3.5}
    kernels = [{"params": dict(part="kernel", window=1, shape=s, precision="fp16"), "metrics": m}
               for s, m in (("seed", fast), ("awd_qrnn", {**fast, "layer_triton_vs_floor": 1.6}))]
    assert [g["met"] for g in qrnn_layer.goals(kernels)][-2:] == [False, True]
