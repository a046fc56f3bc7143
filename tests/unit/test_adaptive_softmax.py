import pytest
import torch
import torch.nn.functional as F

from fairseq_adasoft.modules import AdaptiveSoftmax, parse_cutoffs, validate_cutoffs
from fairseq_adasoft.modules.logits import LOGIT_ALIGN, NARROW_FEATURES, aligned_linear

D, V, CUTOFFS = 16, 100, [10, 40]
PAD = 1  # fairseq's pad id


def with_torch_reference(div_value=2.0, head_bias=True):
    torch.manual_seed(0)
    ours = AdaptiveSoftmax(D, V, CUTOFFS, div_value=div_value, head_bias=head_bias)
    ref = torch.nn.AdaptiveLogSoftmaxWithLoss(D, V, CUTOFFS, div_value=div_value, head_bias=head_bias)
    with torch.no_grad():
        ref.head.weight.copy_(ours.head.weight)
        if head_bias:
            ref.head.bias.copy_(ours.head.bias)
        for mine, theirs in zip(ours.tail, ref.tail):
            theirs[0].weight.copy_(mine[0].weight)
            theirs[1].weight.copy_(mine[2].weight)
    return ours, ref


def test_equals_torch_adaptive_log_softmax():
    ours, ref = with_torch_reference()
    x = torch.randn(64, D)
    target = torch.randint(0, V, (64,))
    result = ref(x, target)
    torch.testing.assert_close(ours.target_log_prob(x, target), result.output, rtol=0, atol=1e-5)
    torch.testing.assert_close(-ours.target_log_prob(x, target).mean(), result.loss, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.log_prob(x), ref.log_prob(x), rtol=0, atol=1e-5)
    assert torch.equal(ours.predict(x), ref.predict(x))


def test_full_distribution_sums_to_one_and_agrees_with_target_scores():
    ours, _ = with_torch_reference()
    x = torch.randn(3, 5, D)  # B x T x d, as fairseq hands it over
    lp = ours.get_log_prob(x)
    assert lp.shape == (3, 5, V)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(3, 5), rtol=0, atol=1e-5)
    flat = x.reshape(-1, D)
    for target in range(V):
        t = torch.full((flat.size(0),), target)
        torch.testing.assert_close(ours.target_log_prob(flat, t), lp.reshape(-1, V)[:, target], rtol=0, atol=1e-5)


def test_cluster_boundaries_are_scored():
    ours, ref = with_torch_reference()
    boundary = [0, 9, 10, 11, 39, 40, 41, 99, 10 + PAD, 40 + PAD]
    x = torch.randn(len(boundary), D)
    t = torch.tensor(boundary)
    torch.testing.assert_close(ours.target_log_prob(x, t), ref(x, t).output, rtol=0, atol=1e-5)
    assert ours.cluster_of(t).tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 1, 2]


def test_every_parameter_gets_a_gradient_even_without_tail_targets():
    ours, _ = with_torch_reference()
    x = torch.randn(8, D, requires_grad=True)
    ours.target_log_prob(x, torch.randint(0, CUTOFFS[0], (8,))).sum().backward()
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        if name.startswith("tail"):
            assert torch.count_nonzero(p.grad) == 0, name


def test_gradients_match_finite_differences():
    ours, _ = with_torch_reference()
    ours.double()
    ours.inplace_backward = False  # gradcheck backpropagates through one graph many times
    x = torch.randn(12, D, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 5, 9, 10, 20, 39, 40, 60, 99, 3, 15, 45])
    assert torch.autograd.gradcheck(lambda inp: ours.target_log_prob(inp, t), (x,))


def test_inplace_backward_gives_the_same_gradients_and_refuses_a_second_pass():
    ours, ref = with_torch_reference()
    x = torch.randn(32, D, requires_grad=True)
    t = torch.randint(0, V, (32,))
    grads = []
    for inplace in (True, False):
        ours.inplace_backward = inplace
        ours.zero_grad()
        x.grad = None
        (-ours.target_log_prob(x, t).sum()).backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in ours.parameters()])
    # torch's module, same weights; its logits are not padded (ours: head 12, tails 30 and 60 wide)
    torch_grads = torch.autograd.grad(ref(x, t).loss * 32, [x, *ref.parameters()])
    for mine, theirs in zip(grads[0], torch_grads):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)
    for a, b in zip(*grads):
        assert torch.equal(a, b)
    ours.inplace_backward = True
    loss = -ours.target_log_prob(x, t).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace_backward=False"):
        loss.backward()


@pytest.mark.parametrize("width", [12, 16])
@pytest.mark.parametrize("features", [D, NARROW_FEATURES])  # the weight as stored, or features-major
def test_aligned_linear_pads_with_zero_probability_columns(width, features):
    x = torch.randn(5, features, requires_grad=True)
    w, b = torch.randn(width, features, requires_grad=True), torch.randn(width, requires_grad=True)
    t = torch.randint(0, width, (5,))
    out = aligned_linear(x, [w[:7], w[7:]], b)
    assert out.size(1) % LOGIT_ALIGN == 0 and 0 <= out.size(1) - width < LOGIT_ALIGN
    assert torch.isneginf(out[:, width:]).all()
    expected = F.linear(x, w, b)
    torch.testing.assert_close(out[:, :width], expected, rtol=0, atol=0)
    grads = [torch.autograd.grad(F.cross_entropy(logits, t), [x, w, b]) for logits in (out, expected)]
    for mine, theirs in zip(*grads):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_models_score_in_fp32_without_overflow(dtype):
    ours, _ = with_torch_reference()
    reference = ours.target_log_prob
    x = torch.randn(64, D) * 30  # logits far outside what a 16-bit sum tolerates
    t = torch.randint(0, V, (64,))
    expected = reference(x.to(dtype).float(), t)
    half = ours.to(dtype)
    out = half.target_log_prob(x.to(dtype), t)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.isfinite(out.sum())
    torch.testing.assert_close(out, expected, rtol=0.05, atol=0.5)  # 16-bit weights and matmuls
    assert half.log_prob(x.to(dtype)).dtype == torch.float32


def test_train_autocast_rounds_only_training_matmuls_to_bf16():
    ours, _ = with_torch_reference()
    fast = AdaptiveSoftmax(D, V, CUTOFFS, div_value=2.0, head_bias=True, train_autocast_dtype=torch.bfloat16)
    fast.load_state_dict(ours.state_dict())
    x = torch.randn(256, D)
    t = torch.randint(0, V, (256,))
    fast.eval()
    assert torch.equal(fast.target_log_prob(x, t), ours.target_log_prob(x, t))  # evaluation: fp32
    fast.train()
    out = fast.target_log_prob(x, t)
    expected = ours.target_log_prob(x, t)
    assert out.dtype == torch.float32 and not torch.equal(out, expected)  # bf16 logits while training
    torch.testing.assert_close(out, expected, rtol=0, atol=0.05)
    out.sum().backward()
    expected.sum().backward()
    for (name, mine), theirs in zip(fast.named_parameters(), ours.parameters()):
        assert mine.grad.dtype == torch.float32, name
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=0.05, atol=0.05, msg=name)


@pytest.mark.parametrize(
    "cutoffs,match",
    [([40, 10], "strictly increasing"), ([10, 10], "strictly increasing"), ([10, 100], "below the vocabulary size 100"),
     ([0, 10], "positive"), ([], "empty")],
)
def test_bad_cutoffs_are_clear_errors(cutoffs, match):
    with pytest.raises(ValueError, match=match):
        validate_cutoffs(cutoffs, V)
    with pytest.raises(ValueError, match=match):
        AdaptiveSoftmax(D, V, cutoffs)


def test_cutoff_spec_parsing():
    assert parse_cutoffs("10,40", V) == [10, 40]
    assert parse_cutoffs("0.0667,0.2", 33280) == [2220, 6656]
    with pytest.raises(ValueError, match="--adaptive-softmax-cutoff='ten'"):
        parse_cutoffs("ten", V)
    with pytest.raises(ValueError, match="mixes fractions and word ids"):
        parse_cutoffs("0.1,40", V)
