"""linear_nll (a cluster's training loss) against autograd through F.linear +
log_softmax, and the LogitBuffer memory it reuses from one step to the next."""

import copy
import pickle
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from fairseq_adasoft.modules import AdaptiveSoftmax
from fairseq_adasoft.modules.logits import NARROW_FEATURES, LinearNLL, LogitBuffer, aligned_linear, linear_nll

D, V, CUTOFFS, N = 16, 100, [10, 40], 64


def autograd_nll(logits, target):
    return -F.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), 1).gather(1, target.unsqueeze(1)).squeeze(1)


@pytest.mark.parametrize("features", [D, NARROW_FEATURES])  # the weight as stored, or features-major
@pytest.mark.parametrize("width", [12, 16, 70_001])  # padded, aligned, rows longer than a kernel's vector chunk
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("buffered", [False, True])
def test_linear_nll_equals_autograd_through_linear_and_log_softmax(features, width, with_bias, buffered):
    torch.manual_seed(0)
    f64 = dict(dtype=torch.float64)  # the sums over 70,001 classes then agree whatever their order
    x = torch.randn(5, features, **f64, requires_grad=True)
    w = torch.randn(width, features, **f64, requires_grad=True)
    b = torch.randn(width, **f64, requires_grad=True) if with_bias else None
    t = torch.randint(0, width, (5,))
    g = torch.rand(5, **f64)  # an upstream gradient that differs by row
    params = [x, w, *([b] if with_bias else [])]
    buffer = LogitBuffer() if buffered else None
    for _ in range(2):  # the second call reuses the buffer's memory
        mine = linear_nll(x, [w[:7], w[7:]], b, t, buffer)
        theirs = autograd_nll(F.linear(x, w, b), t)
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-12)
        for a, e in zip(torch.autograd.grad(mine, params, g), torch.autograd.grad(theirs, params, g)):
            torch.testing.assert_close(a, e, rtol=0, atol=1e-12)
    assert buffer is None or buffer.memory is not None


@pytest.mark.parametrize("features", [D, NARROW_FEATURES])
def test_autocast_computes_the_matmuls_in_bf16_as_autograd_under_autocast_does(features):
    torch.manual_seed(0)
    x = torch.randn(N, features, requires_grad=True)
    w = torch.randn(50, features, requires_grad=True)
    t = torch.randint(0, 50, (N,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mine = linear_nll(x, [w], None, t, LogitBuffer())
        theirs = autograd_nll(aligned_linear(x, [w]), t)
    assert mine.dtype == torch.float32
    torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)  # the same bf16 logits
    for a, e in zip(torch.autograd.grad(mine.sum(), [x, w]), torch.autograd.grad(theirs.sum(), [x, w])):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, e, rtol=0.02, atol=1e-3)  # bf16 products, summed in another order


@pytest.mark.parametrize("inplace", [True, False])
def test_backward_off_cpu_never_reads_the_upstream_gradient_back(inplace):
    # Reading a CUDA tensor on the host (bool, .item(), an `if` on .any()) waits for the device. A
    # meta tensor has no data, so any such read raises: its backward must run through to the grads.
    meta = dict(device="meta", dtype=torch.float64)
    x, w, target = torch.empty(N, D, **meta), torch.empty(16, D, **meta), torch.zeros(N, dtype=torch.long, device="meta")
    ctx = SimpleNamespace(probs=torch.empty(N, 16, **meta), saved_tensors=(x, w, None, target), features_major=False,
                          matmul_dtype=torch.float64, inplace_backward=inplace, needs_input_grad=(True, True, False))
    grad_x, grad_w, *_ = LinearNLL.backward(ctx, torch.ones(N, **meta))
    assert grad_x.shape == x.shape and grad_w.shape == w.shape


def layer_and_unbuffered_copy():
    torch.manual_seed(0)
    layer = AdaptiveSoftmax(D, V, CUTOFFS, div_value=2.0, head_bias=True)
    reference = copy.deepcopy(layer)
    reference.logit_buffers = [None] * len(layer.logit_buffers)  # a fresh allocation every call
    return layer, reference


def grads(module, batches):
    module.zero_grad(set_to_none=True)
    sum(-module.target_log_prob(x, t).sum() for x, t in batches).backward()
    return [p.grad.clone() for p in module.parameters()]


def batch(n):
    return torch.randn(n, D), torch.randint(0, V, (n,))


def test_training_steps_reuse_the_buffers_and_pending_graphs_keep_their_own_memory():
    layer, reference = layer_and_unbuffered_copy()
    first, smaller, second = batch(N), batch(N // 2), batch(N)
    grads(layer, [first])
    memory = [b.memory.data_ptr() for b in layer.logit_buffers]  # every tail ran (possibly on no rows)
    for step in ([smaller], [first]):
        for mine, theirs in zip(grads(layer, step), grads(reference, step)):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    assert [b.memory.data_ptr() for b in layer.logit_buffers] == memory
    # Two forwards before one backward (gradient accumulation in one graph): the second must not overwrite the first.
    for mine, theirs in zip(grads(layer, [first, second]), grads(reference, [first, second])):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    loss = -layer.target_log_prob(*first).sum()
    del loss  # a graph dropped without a backward gives its memory back
    grads(layer, [first])
    assert [b.memory.data_ptr() for b in layer.logit_buffers] == memory


def test_copies_and_pickles_of_the_layer_start_without_buffer_memory():
    layer, _ = layer_and_unbuffered_copy()
    x, t = batch(N)
    grads(layer, [(x, t)])
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert all(b.memory is None for b in clone.logit_buffers)
        torch.testing.assert_close(clone.target_log_prob(x, t), layer.target_log_prob(x, t), rtol=0, atol=0)


def test_scoring_without_gradients_keeps_no_buffer_memory():
    layer, _ = layer_and_unbuffered_copy()
    with torch.no_grad():
        layer.target_log_prob(*batch(N))
    assert all(b.memory is None for b in layer.logit_buffers)
