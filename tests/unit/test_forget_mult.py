import pytest
import torch

from fairseq_adasoft.modules import forget_mult
from references import forget_mult_reference

T, B, H = 9, 3, 5


def inputs(dtype=torch.float64, seed=0, with_c0=True):
    g = torch.Generator().manual_seed(seed)
    f = torch.rand(T, B, H, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    z = torch.randn(T, B, H, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    c0 = torch.randn(B, H, generator=g, dtype=torch.float64).to(dtype).requires_grad_() if with_c0 else None
    return f, z, c0


METHODS = ["loop", "scan"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("with_c0", [True, False])
def test_fast_equals_reference_in_values_and_gradients(with_c0, method):
    f, z, c0 = inputs(with_c0=with_c0)
    args = (f, z) if c0 is None else (f, z, c0)
    fast, ref = forget_mult(*args, method=method), forget_mult_reference(*args)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)
    grad_out = torch.randn_like(fast)
    g_fast = torch.autograd.grad(fast, args, grad_out)
    g_ref = torch.autograd.grad(ref, args, grad_out)
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_recurrence_by_hand(method):
    f = torch.tensor([[[0.5]], [[0.25]]])
    z = torch.tensor([[[2.0]], [[4.0]]])
    c0 = torch.tensor([[1.0]])
    # c1 = 0.5*1 + 0.5*2 = 1.5; c2 = 0.25*1.5 + 0.75*4 = 3.375
    assert forget_mult(f, z, c0, method=method).flatten().tolist() == [1.5, 3.375]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("with_c0", [True, False])
def test_gradcheck_float64(with_c0, method):
    f, z, c0 = inputs(with_c0=with_c0)
    args = (f, z) if c0 is None else (f, z, c0)
    assert torch.autograd.gradcheck(lambda *a: forget_mult(*a, method=method), args)


def test_scan_matches_loop_on_long_fp32_sequences():
    """Rounding only, no drift: the scan never goes through log space."""
    g = torch.Generator().manual_seed(1)
    f = torch.rand(300, 4, 32, generator=g).requires_grad_()
    z = torch.randn(300, 4, 32, generator=g).requires_grad_()
    grad = torch.randn(300, 4, 32, generator=g)
    loop, scan = forget_mult(f, z, method="loop"), forget_mult(f, z, method="scan")
    torch.testing.assert_close(scan, loop, rtol=1e-5, atol=1e-5)
    for a, b in zip(torch.autograd.grad(scan, (f, z), grad), torch.autograd.grad(loop, (f, z), grad)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
def test_half_precision_accumulates_in_fp32(dtype, tol, method):
    f, z, c0 = inputs(dtype=torch.float32)
    out = forget_mult(f.detach().to(dtype), z.detach().to(dtype), c0.detach().to(dtype), method=method)
    assert out.dtype == dtype
    ref = forget_mult_reference(f.detach().to(dtype).float(), z.detach().to(dtype).float(), c0.detach().to(dtype).float())
    # Only the final rounding to 16 bits separates the two.
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)


def test_half_precision_gradients_have_input_dtype():
    f, z, c0 = (t.detach().to(torch.bfloat16).requires_grad_() for t in inputs(dtype=torch.float32))
    forget_mult(f, z, c0).float().sum().backward()
    assert f.grad.dtype == z.grad.dtype == c0.grad.dtype == torch.bfloat16


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="same T x B x H shape"):
        forget_mult(torch.rand(3, 2, 4), torch.rand(3, 2, 5))
    with pytest.raises(ValueError, match="'auto', 'loop' or 'scan'"):
        forget_mult(torch.rand(3, 2, 4), torch.rand(3, 2, 4), method="triton")
