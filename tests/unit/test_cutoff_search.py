import pytest

from fairseq_adasoft.modules.cutoffs import (
    DEFAULT_COST_MODEL,
    MIN_HEAD_COVERAGE,
    auto_cutoffs,
    expected_cost,
    measure_cost_model,
    seed_rule_cutoffs,
)

V, D, DIV, BATCH_TOKENS = 33_280, 400, 4.0, 3360


def zipf_counts(v=V, exponent=1.0):
    return [0] * 4 + [1e7 / (r ** exponent) for r in range(1, v - 4 + 1)]


@pytest.mark.parametrize("exponent", [1.0, 1.2])  # Zipf's law; the seed's head then covers >= 75%
def test_auto_cutoffs_are_valid_and_cheaper_than_the_seed_rule(exponent):
    counts = zipf_counts(exponent=exponent)
    cutoffs = auto_cutoffs(counts, D, DIV, BATCH_TOKENS)
    assert 1 <= len(cutoffs) <= 4
    assert all(a < b for a, b in zip(cutoffs, cutoffs[1:])) and 0 < cutoffs[0] and cutoffs[-1] < V
    assert sum(counts[: cutoffs[0]]) >= MIN_HEAD_COVERAGE * sum(counts)
    seed = seed_rule_cutoffs(V)
    cost = lambda c: expected_cost(c, counts, D, DIV, BATCH_TOKENS, DEFAULT_COST_MODEL)  # noqa: E731
    assert cost(cutoffs) < cost(seed)


def test_a_flatter_distribution_gets_a_head_that_still_covers_enough():
    counts = zipf_counts(exponent=0.9)  # the [V/15, 3V/15] head would cover too little here
    cutoffs = auto_cutoffs(counts, D, DIV, BATCH_TOKENS)
    assert sum(counts[: cutoffs[0]]) >= MIN_HEAD_COVERAGE * sum(counts) > sum(counts[: round(V / 15)])


def test_cost_model_is_a_fit_of_real_timings():
    model = measure_cost_model("cpu", d=64, repeats=2)
    assert model.overhead_s > 0 and model.seconds_per_madd > 0
    assert model(1e9) > model(1e6) >= model(0)


def test_tiny_vocabularies_are_refused():
    with pytest.raises(ValueError, match="too few for an adaptive softmax"):
        auto_cutoffs([5] * 100, D, DIV, BATCH_TOKENS)
