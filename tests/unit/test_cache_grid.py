"""The cache tuner's grid (modules/cache_grid.py: h_t . h_i once per batch for
every setting) equals scoring each (size, theta) through ``NeuralCache.attend``
(tune.cache_target_probs), over contiguous batches with carried memory."""

import pytest
import torch

from fairseq_adasoft import tune
from fairseq_adasoft.modules import NeuralCache
from fairseq_adasoft.modules.cache_grid import grid_target_probs
from references import plain_cache_probs

B, L, T, C, V = 3, 40, 7, 8, 9  # streams, stream length (the last batch is short), batch, features, vocabulary
PAD = 1
PADDED = 9  # the last stream ends this many words early, across a batch boundary, as eval_lm pads it
SIZES = (12, 2, 60, 5)  # below and above the batch, one above the stream; not sorted
SMALL_SIZES = (3, 1, 5)  # a key buffer of 2 x (5 + T) keys: full, and copied, twice in a stream of L
THETAS = (0.5, 2.0, 8.0)
LAMBDAS = (0.1, 0.3)
REL = 1e-6
# fp32 scores of ~100 (theta * h_t . h_i for norms ~10) round the softmax's exponents by ~1e-6
# absolute in either path: the large-score test allows ten times that against the fp64 formula.
LARGE_SCALE, LARGE_ATOL = 5.0, 1e-5


def split(seed=0):
    """tune.read_split's output for random features (norms near 1, as qrnn_lm's) and a small vocabulary."""
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(2, V, (B, L + 1), generator=g)
    words[-1, L + 1 - PADDED:] = PAD
    hidden = torch.randn(B, L, C, generator=g) / C ** 0.5 * 2
    model_lp = torch.log_softmax(torch.randn(B, L, V, generator=g), dim=-1)
    batches = []
    for lo in range(0, L, T):
        tokens, target = words[:, lo:min(lo + T, L)], words[:, lo + 1:min(lo + T, L) + 1]
        lp = model_lp[:, lo:lo + T].gather(2, target.unsqueeze(2)).squeeze(2)
        batches.append((hidden[:, lo:lo + T], tokens, target, lp))
    return batches


def reference_grid(batches):
    """Every (size, theta, lambda)'s perplexity, each (size, theta) scored through attend."""
    model_lp = torch.cat([lp[t.ne(PAD)] for _, _, t, lp in batches])
    out = {}
    for size in SIZES:
        for theta in THETAS:
            cache_p, remembered = tune.cache_target_probs(NeuralCache(size, theta, LAMBDAS[0], pad=PAD), batches)
            for lam in LAMBDAS:
                out[size, theta, lam] = tune.perplexity(NeuralCache(size, theta, lam, pad=PAD), model_lp, cache_p,
                                                        remembered)
    return out


@pytest.mark.parametrize("sizes", [SIZES, SMALL_SIZES], ids=["sizes", "small_sizes"])
@pytest.mark.parametrize("seed", [0, 1])
def test_grid_probs_equal_attend_per_setting(seed, sizes):
    batches = split(seed)
    assert any(t.eq(PAD).any() for _, _, t, _ in batches) and batches[-1][0].size(1) < T
    probs, remembered = grid_target_probs(((f, x, t) for f, x, t, _ in batches), sizes, THETAS, PAD)
    for i, size in enumerate(sizes):
        for j, theta in enumerate(THETAS):
            ref_p, ref_remembered = tune.cache_target_probs(NeuralCache(size, theta, 0.1, pad=PAD), batches)
            assert torch.equal(remembered[i], ref_remembered)
            first_words = torch.arange(B) * T  # batch 0's real targets come stream by stream
            assert not ref_remembered[first_words].any() and ref_remembered.sum() == len(ref_remembered) - B
            torch.testing.assert_close(probs[i, j], ref_p, rtol=REL, atol=REL)


@pytest.mark.parametrize("seed", [0, 1])
def test_tuner_grid_equals_attend_per_setting(seed):
    batches = split(seed)
    expected = reference_grid(batches)
    result = tune.tune_cache(batches, PAD, sizes=SIZES, thetas=THETAS, lambdas=LAMBDAS)
    assert [(g["size"], g["theta"], g["lambda"]) for g in result["grid"]] == list(expected)  # same grid, same order
    assert [g["perplexity"] for g in result["grid"]] == [round(p, 3) for p in expected.values()]
    # Unrounded, through the same mixing as the tuner.
    model_lp = torch.cat([lp[t.ne(PAD)] for _, _, t, lp in batches])
    probs, remembered = grid_target_probs(((f, x, t) for f, x, t, _ in batches), SIZES, THETAS, PAD)
    for (size, theta, lam), ppl in expected.items():
        i, j = SIZES.index(size), THETAS.index(theta)
        fast = tune.perplexity(NeuralCache(size, theta, lam, pad=PAD), model_lp, probs[i, j], remembered[i])
        assert fast == pytest.approx(ppl, rel=REL)


def test_large_scores_keep_each_window_exact():
    """Features of norm ~10: theta * h_t . h_i spans hundreds, so a window's maximum
    lies far above a nearer ring's (exp underflows from the wrong maximum); each
    ring's terms are taken from its own, as close to the fp64 formula as attend."""
    batches = [(f * LARGE_SCALE, x, t, lp) for f, x, t, lp in split(2)]
    probs, _ = grid_target_probs(((f, x, t) for f, x, t, _ in batches), SIZES, THETAS, PAD)
    hidden = torch.cat([f for f, *_ in batches], 1)
    words = torch.cat([batches[0][1][:, :1], *(t for *_, t, _ in batches)], 1)  # B x (L + 1)
    real = words[:, 1:].ne(PAD)
    for i, size in enumerate(SIZES):
        for j, theta in enumerate(THETAS):
            exact = torch.stack([plain_cache_probs(hidden[b], words[b], size, theta, V).gather(
                1, words[b, 1:].unsqueeze(1)).squeeze(1) for b in range(B)])  # B x L
            by_batch = torch.cat([exact[:, lo:lo + T][real[:, lo:lo + T]] for lo in range(0, L, T)])  # as read
            attend, _ = tune.cache_target_probs(NeuralCache(size, theta, 0.1, pad=PAD), batches)
            torch.testing.assert_close(attend.double(), by_batch, rtol=0, atol=LARGE_ATOL)
            torch.testing.assert_close(probs[i, j].double(), by_batch, rtol=0, atol=LARGE_ATOL)


@pytest.mark.parametrize("sizes,thetas,message", [
    ((0, 5), (1.0,), r"sizes must be >= 1 \(--neural-cache-size\), got \(0, 5\)"),
    ((5,), (1.0, 0.0), r"thetas must be > 0 \(--neural-cache-theta\), got \(1.0, 0.0\)"),
])
def test_bad_grid_is_refused(sizes, thetas, message):
    with pytest.raises(ValueError, match=message):
        grid_target_probs(((f, x, t) for f, x, t, _ in split()), sizes, thetas, PAD)
