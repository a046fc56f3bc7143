import math

import pytest
import torch

from fairseq_adasoft.modules import NeuralCache
from references import plain_cache_probs

B, L, C, V = 3, 23, 6, 11  # streams, stream length, features, vocabulary
PAD = 1


def streams(seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, L, C, generator=g)  # B x L x C
    inputs = torch.randint(2, V, (B, L), generator=g)  # B x L, no padding
    return hidden, inputs


def read_in_batches(cache, hidden, inputs, T):
    """p_cache over the vocabulary, reading the streams T positions at a time."""
    memory, out = None, []
    for lo in range(0, hidden.size(1), T):
        weights, values, memory = cache.attend(hidden[:, lo:lo + T], inputs[:, lo:lo + T], memory)
        out.append(cache.cache_probs(weights, values, V))
    return torch.cat(out, dim=1)  # B x L x V


@pytest.mark.parametrize("T", [1, 5, 23])
@pytest.mark.parametrize("size", [1, 4, 100])
def test_batches_with_carried_memory_equal_the_formula(T, size):
    hidden, inputs = streams()
    cache = NeuralCache(size, theta=0.7, lam=0.1)
    fast = read_in_batches(cache, hidden, inputs, T)
    for b in range(B):
        ref = plain_cache_probs(hidden[b], inputs[b], size, 0.7, V)
        torch.testing.assert_close(fast[b].double(), ref, rtol=0, atol=1e-6)


def test_probabilities_by_hand():
    # Stream "a b a": the second 'a' (t=2) remembers h0 -> b and h1 -> a.
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])  # 1 x 3 x 2
    inputs = torch.tensor([[2, 3, 2]])
    cache = NeuralCache(size=10, theta=math.log(3.0), lam=0.5)
    weights, values, _ = cache.attend(hidden, inputs, None)
    probs = cache.cache_probs(weights, values, 4)[0]  # 3 x 4
    assert probs[0].sum() == 0  # nothing remembered yet
    torch.testing.assert_close(probs[1], torch.tensor([0.0, 0.0, 0.0, 1.0]))  # only h0 -> b(3)
    # h2.h0 = 1, h2.h1 = 0: weights 3/4 on b (3), 1/4 on a (2).
    torch.testing.assert_close(probs[2], torch.tensor([0.0, 0.0, 0.25, 0.75]))


def test_mixture_is_a_distribution_and_keeps_the_model_where_nothing_is_remembered():
    hidden, inputs = streams(1)
    cache = NeuralCache(size=8, theta=0.5, lam=0.2)
    weights, values, _ = cache.attend(hidden, inputs, None)
    model_lp = torch.log_softmax(torch.randn(B, L, V), dim=-1)
    remembered = weights.sum(-1, keepdim=True) > 0
    mixed = cache.mix(model_lp, cache.cache_probs(weights, values, V), remembered)
    torch.testing.assert_close(mixed.exp().sum(-1), torch.ones(B, L))
    torch.testing.assert_close(mixed[:, 0], model_lp[:, 0])  # position 0 remembers nothing
    expected = 0.8 * model_lp[:, 5].exp() + 0.2 * cache.cache_probs(weights, values, V)[:, 5]
    torch.testing.assert_close(mixed[:, 5].exp(), expected)


def test_mixing_at_the_remembered_words_only_equals_the_full_mixture():
    """V = 11 words in streams of 23: every batch repeats words, and the second
    batch reads a carried memory with padded stream ends."""
    hidden, inputs = streams(3)
    inputs[0, -4:] = PAD
    cache = NeuralCache(size=6, theta=0.7, lam=0.3, pad=PAD)
    memory = None
    for lo, hi in ((0, 9), (9, L)):
        weights, values, memory = cache.attend(hidden[:, lo:hi], inputs[:, lo:hi], memory)
        assert all(row.unique().numel() < row.numel() for row in values)  # every stream repeats a word
        model_lp = torch.log_softmax(torch.randn(B, hi - lo, V), dim=-1)
        remembered = weights.sum(-1, keepdim=True) > 0
        full = cache.mix(model_lp, cache.cache_probs(weights, values, V), remembered)
        torch.testing.assert_close(cache.mixed_log_probs(model_lp, weights, values), full, rtol=0, atol=1e-6)


def test_target_probs_equal_the_full_distribution_at_the_target():
    hidden, inputs = streams(2)
    cache = NeuralCache(size=6, theta=1.3, lam=0.1)
    weights, values, _ = cache.attend(hidden, inputs, None)
    target = torch.cat([inputs[:, 1:], inputs[:, :1]], dim=1)
    full = cache.cache_probs(weights, values, V).gather(2, target.unsqueeze(2)).squeeze(2)
    torch.testing.assert_close(cache.target_probs(weights, values, target), full)


def test_padding_is_never_remembered():
    hidden, inputs = streams(3)
    inputs[0, 10:] = PAD  # a stream that ended
    cache = NeuralCache(size=50, theta=0.9, lam=0.1, pad=PAD)
    probs = read_in_batches(cache, hidden, inputs, 7)
    assert probs[..., PAD].abs().max() == 0
    torch.testing.assert_close(probs[1:].double(), torch.stack(
        [plain_cache_probs(hidden[b], inputs[b], 50, 0.9, V) for b in (1, 2)]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("args, flag", [
    ((0, 0.5, 0.1), "--neural-cache-size"),
    ((10, 0.0, 0.1), "--neural-cache-theta"),
    ((10, 0.5, 1.0), "--neural-cache-lambda"),
    ((10, 0.5, 0.0), "--neural-cache-lambda"),
])
def test_bad_settings_name_their_flag(args, flag):
    with pytest.raises(ValueError, match=flag):
        NeuralCache(*args)
