"""CUDA and 16-bit checks of the plain-torch modules; skipped without a GPU.

Run on a GPU machine: ``python -m pytest -q tests/unit/test_cuda.py``
(``benchmarks/gpu_fp16_check.sh`` does, then trains with ``--fp16``)."""

import copy

import pytest
import torch

from fairseq_adasoft.modules import QRNN, AdaptiveSoftmax, forget_mult
from references import forget_mult_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = torch.device("cuda")
T, B, H = 40, 4, 64
# 16-bit inputs, fp32 recurrence inside: only the input/output rounding differs.
TOL_16 = {torch.float16: dict(rtol=1e-2, atol=4e-3), torch.bfloat16: dict(rtol=4e-2, atol=3e-2)}


def fzc(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(T, B, H, generator=g).to(CUDA, dtype).requires_grad_()
    z = torch.randn(T, B, H, generator=g).to(CUDA, dtype).requires_grad_()
    c0 = torch.randn(B, H, generator=g).to(CUDA, dtype).requires_grad_()
    return f, z, c0


def values_and_grads(fn, args, grad_out):
    out = fn(*args)
    return out, torch.autograd.grad(out, args, grad_out.to(out.dtype))


@pytest.mark.parametrize("with_c0", [True, False])
def test_forget_mult_fp32_cuda_equals_reference(with_c0):
    f, z, c0 = fzc(torch.float32)
    args = (f, z, c0) if with_c0 else (f, z)
    grad_out = torch.randn(T, B, H, device=CUDA)
    out, grads = values_and_grads(forget_mult, args, grad_out)
    ref, ref_grads = values_and_grads(forget_mult_reference, args, grad_out)
    assert out.is_cuda and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # and the CUDA result equals the CPU one
    cpu_args = [a.detach().cpu() for a in args]
    torch.testing.assert_close(out.cpu(), forget_mult(*cpu_args), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_forget_mult_16bit_cuda_close_to_fp32(dtype):
    f, z, c0 = fzc(dtype, seed=1)
    grad_out = torch.randn(T, B, H, device=CUDA)
    out, grads = values_and_grads(forget_mult, (f, z, c0), grad_out)
    # fp32 reference on the same (already rounded) inputs
    args32 = tuple(a.detach().float().requires_grad_() for a in (f, z, c0))
    ref, ref_grads = values_and_grads(forget_mult_reference, args32, grad_out)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(out.float(), ref, **TOL_16[dtype])
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a.float(), b, **TOL_16[dtype])


def test_qrnn_cuda_equals_cpu_in_eval_mode():
    torch.manual_seed(0)
    cpu = QRNN(32, 64, num_layers=3, dropout=0.2, output_size=48, zoneout=0.1, weight_drop=0.1).eval()
    gpu = copy.deepcopy(cpu).to(CUDA)
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(25, B, 32)
    with torch.no_grad():
        out_cpu, hid_cpu = cpu(x)
        out_gpu, hid_gpu = gpu(x.to(CUDA))
        out2_cpu, _ = cpu(x, hid_cpu)  # carried state (window-2 first layer)
        out2_gpu, _ = gpu(x.to(CUDA), hid_gpu)
    assert out_gpu.shape == (25, B, 48) and out_cpu.abs().sum() > 0
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out2_gpu.cpu(), out2_cpu, rtol=1e-4, atol=1e-5)
    for (c_g, x_g), (c_c, x_c) in zip(hid_gpu, hid_cpu):
        torch.testing.assert_close(c_g.cpu(), c_c, rtol=1e-4, atol=1e-5)
        assert (x_g is None) == (x_c is None)


def adaptive_softmax_case(n=512, d=64, vocab=1000, seed=0):
    torch.manual_seed(seed)
    layer = AdaptiveSoftmax(d, vocab, [100, 400], div_value=2.0, head_bias=True).eval()
    x = 3 * torch.randn(n, d)
    target = torch.cat([torch.randint(0, 100, (n // 2,)), torch.randint(100, vocab, (n - n // 2,))])
    return layer, x, target, layer.target_log_prob(x, target).detach()


def check_log_prob(out, ref, full):
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-2, atol=5e-2)
    assert full.dtype == torch.float32 and torch.isfinite(full).all()
    torch.testing.assert_close(full.exp().sum(-1).cpu(), torch.ones(full.size(0)), rtol=0, atol=1e-3)


def test_adaptive_softmax_half_module_on_cuda_matches_fp32_cpu():
    layer, x, target, ref = adaptive_softmax_case()
    half = copy.deepcopy(layer).to(CUDA).half()
    xh = x.to(CUDA).half().requires_grad_()
    out = half.target_log_prob(xh, target.to(CUDA))
    check_log_prob(out, ref, half.log_prob(xh.detach()))
    (-out.sum()).backward()  # backward through fp16 weights stays finite
    assert torch.isfinite(xh.grad).all() and xh.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in half.parameters())


def test_adaptive_softmax_under_autocast_fp16_matches_fp32_cpu():
    layer, x, target, ref = adaptive_softmax_case(seed=1)
    gpu = copy.deepcopy(layer).to(CUDA)
    with torch.autocast("cuda", dtype=torch.float16):
        assert gpu.head(x.to(CUDA)).dtype == torch.float16  # autocast is really on
        out = gpu.target_log_prob(x.to(CUDA), target.to(CUDA))
        full = gpu.log_prob(x.to(CUDA))
    check_log_prob(out, ref, full)
    torch.testing.assert_close(full.gather(1, target.to(CUDA).unsqueeze(1)).squeeze(1), out, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_kernel_layer_on_cuda_equals_the_torch_ops(dtype):
    """--qrnn-kernel triton compiled for the GPU (tests/unit/test_triton_qrnn.py runs it interpreted on CPU)."""
    pytest.importorskip("triton")
    from fairseq_adasoft.modules import QRNNLayer

    torch.manual_seed(0)
    layers = [QRNNLayer(H, H, window=2, kernel=k).to(CUDA) for k in ("torch", "triton")]
    layers[1].load_state_dict(layers[0].state_dict())
    x = torch.randn(T, B, H, device=CUDA)
    out = []
    for layer in layers:
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            h, (c, _) = layer(x)
        (h.float().square().sum() + c.float().sum()).backward()
        out.append([h.float(), c.float(), layer.linear.weight.grad])
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else TOL_16[dtype]
    for got, expected in zip(out[1], out[0]):
        torch.testing.assert_close(got, expected, **tol)
