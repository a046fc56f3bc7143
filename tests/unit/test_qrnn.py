import pytest
import torch
import torch.nn.functional as F

from fairseq_adasoft.modules import QRNN, QRNNLayer
from fairseq_adasoft.modules.dropout import embedding_dropout
from fairseq_adasoft.modules.qrnn import cpu_conv_gates_pay
from references import forget_mult_reference

T, B, C, H = 7, 3, 4, 6


def manual_layer(layer, x, c0=None, prev_x=None):
    """Bradbury et al. 2016, eqs. 1-4, written out step by step."""
    W, b = layer.linear.weight, layer.linear.bias
    outs = []
    for t in range(x.size(0)):
        if layer.window == 2:
            before = x[t - 1] if t > 0 else (prev_x if prev_x is not None else torch.zeros_like(x[0]))
            inp = torch.cat([before, x[t]], dim=1)
        else:
            inp = x[t]
        outs.append(inp @ W.t() + b)
    gates = torch.stack(outs).chunk(3, dim=2)
    z, f, o = torch.tanh(gates[0]), torch.sigmoid(gates[1]), torch.sigmoid(gates[2])
    return o * forget_mult_reference(f, z, c0)


@pytest.mark.parametrize("gate_op", ["linear", "conv"])
@pytest.mark.parametrize("window", [1, 2])
def test_layer_matches_the_paper(window, gate_op):
    torch.manual_seed(0)
    layer = QRNNLayer(C, H, window=window).double()
    layer.gate_op = gate_op
    x = torch.randn(T, B, C, dtype=torch.float64)
    c0 = torch.randn(B, H, dtype=torch.float64)
    prev_x = torch.randn(B, C, dtype=torch.float64) if window == 2 else None
    h, (c_last, x_last) = layer(x, (c0, prev_x))
    torch.testing.assert_close(h, manual_layer(layer, x, c0, prev_x))
    assert c_last.shape == (B, H)
    assert (x_last is None) == (window == 1)


@pytest.mark.parametrize("capability, window, expected", [
    ("AVX512", 2, "conv"), ("AVX512", 1, "linear"), ("AVX2", 2, "linear"), ("DEFAULT", 2, "linear"),
])
def test_auto_gate_op_follows_the_cpu(monkeypatch, capability, window, expected):
    """oneDNN's conv1d gates pay only on AVX-512 CPUs (benchmarks/qrnn_layer.py), in training."""
    cpu_conv_gates_pay.cache_clear()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    try:
        layer = QRNNLayer(C, H, window=window)
        assert layer._resolved_gate_op(torch.zeros(T, B, C)) == expected
        assert layer.eval()._resolved_gate_op(torch.zeros(T, B, C)) == "linear"  # evaluation's few tokens
        layer.train()
        layer.gate_op = "conv" if expected == "linear" else "linear"  # an explicit choice wins
        assert layer._resolved_gate_op(torch.zeros(T, B, C)) == layer.gate_op
    finally:
        cpu_conv_gates_pay.cache_clear()


def test_stack_carries_state_across_chunks():
    """Running 3 + 4 steps with the returned state equals running 7 at once."""
    torch.manual_seed(0)
    qrnn = QRNN(C, H, num_layers=3, output_size=5).eval()
    x = torch.randn(T, B, C)
    full, _ = qrnn(x)
    first, state = qrnn(x[:3])
    second, _ = qrnn(x[3:], state)
    torch.testing.assert_close(torch.cat([first, second]), full)
    assert full.shape == (T, B, 5)
    assert [layer.window for layer in qrnn.layers] == [2, 1, 1]


def test_regularisation_is_off_in_eval_mode():
    torch.manual_seed(0)
    noisy = QRNN(C, H, num_layers=2, dropout=0.5, weight_drop=0.5)
    clean = QRNN(C, H, num_layers=2)
    clean.load_state_dict(noisy.state_dict())
    x = torch.randn(T, B, C)
    noisy.eval()
    torch.testing.assert_close(noisy(x)[0], clean.eval()(x)[0])
    noisy.train()
    assert not torch.equal(noisy(x)[0], noisy(x)[0])  # masks are drawn in training


def test_zoneout_uses_its_expectation_in_eval_and_is_random_in_training():
    torch.manual_seed(0)
    p = 0.3
    layer = QRNNLayer(C, H, window=1, zoneout=p)
    x = torch.randn(T, B, C)
    gates = layer.linear(x).chunk(3, dim=2)
    z, f, o = torch.tanh(gates[0]), torch.sigmoid(gates[1]), torch.sigmoid(gates[2])
    expected = o * forget_mult_reference(1 - (1 - f) * (1 - p), z)
    torch.testing.assert_close(layer.eval()(x)[0], expected)
    layer.train()
    assert not torch.equal(layer(x)[0], layer(x)[0])


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="window must be 1 or 2"):
        QRNNLayer(C, H, window=3)
    with pytest.raises(ValueError, match="zoneout must be in"):
        QRNNLayer(C, H, zoneout=1.0)
    with pytest.raises(ValueError, match=r"expects input T x B x 4"):
        QRNNLayer(C, H)(torch.randn(T, B, C + 1))
    with pytest.raises(ValueError, match="2 windows for 3 layers"):
        QRNN(C, H, num_layers=3, windows=[2, 1])


def test_conv_and_linear_gates_give_the_same_gradients():
    torch.manual_seed(0)
    layer = QRNNLayer(C, H, window=2).double()
    x = torch.randn(T, B, C, dtype=torch.float64, requires_grad=True)
    prev_x = torch.randn(B, C, dtype=torch.float64)
    grads = {}
    for gate_op in ("linear", "conv"):
        layer.gate_op = gate_op
        h, _ = layer(x, (None, prev_x))
        grads[gate_op] = torch.autograd.grad(h.sum(), [x, layer.linear.weight, layer.linear.bias])
    for a, b in zip(grads["linear"], grads["conv"]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("gate_op", ["linear", "conv"])
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
def test_16_bit_stack_stays_close_to_fp32(dtype, tol, gate_op):
    torch.manual_seed(0)
    qrnn = QRNN(C, H, num_layers=3).eval()
    x = torch.randn(40, B, C)
    reference, _ = qrnn(x)
    low = QRNN(C, H, num_layers=3).eval()
    low.load_state_dict(qrnn.state_dict())
    low.to(dtype)
    for layer in low.layers:
        layer.gate_op = gate_op
    out, state = low(x.to(dtype))
    assert out.dtype == dtype and state[0][0].dtype == dtype
    torch.testing.assert_close(out.float(), reference, rtol=tol, atol=tol)


def test_embedding_dropout_equals_masking_the_whole_matrix():
    """The fast path scales looked-up rows; AWD-LSTM scales the V x C matrix
    first. Same mask, so the same output and the same embedding gradient."""
    V, C, p = 50, 8, 0.3
    embed = torch.nn.Embedding(V, C, padding_idx=1)
    tokens = torch.randint(0, V, (20, 4))  # T x B, with repeated words
    torch.manual_seed(3)
    fast = embedding_dropout(embed, tokens, p, training=True)
    fast.pow(2).sum().backward()
    fast_grad = embed.weight.grad.clone()
    embed.weight.grad = None
    torch.manual_seed(3)
    mask = embed.weight.new_empty(V).bernoulli_(1 - p).div_(1 - p)
    reference = F.embedding(tokens, embed.weight * mask.unsqueeze(1), embed.padding_idx)
    reference.pow(2).sum().backward()
    torch.testing.assert_close(fast, reference)
    torch.testing.assert_close(fast_grad, embed.weight.grad)
    # whole word types are dropped: every occurrence of a word shares its scale
    dropped = {int(w) for w in tokens.flatten() if mask[w] == 0}
    assert dropped, "seed 3 should drop some of the 50 types at p=0.3"
    for w in dropped:
        assert fast[tokens == w].abs().sum() == 0
    assert torch.equal(embedding_dropout(embed, tokens, p, training=False), embed(tokens))
