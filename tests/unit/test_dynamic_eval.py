"""Dynamic evaluation (Krause et al. 2018): the update against its formula,
and qrnn_lm scored by fairseq's own scorer against a plain score-then-step
loop written here."""

import pytest
import torch
import torch.nn.functional as F
from fairseq.sequence_scorer import SequenceScorer
from torch import nn

from fairseq_adasoft.modules import DynamicEvaluation, GradientStatistics, NeuralCache
from fairseq_adasoft.modules.dynamic_eval import EPSILON
from fairseq_adasoft.modules.sparse_rows import weight_rows
from helpers import SMALL_MODEL, build
from references import dynamic_eval_update, rarest_row_for_unreached

LR, DECAY = 0.0005, 0.02
SEGMENT, STREAMS = 8, 2


def test_gradient_statistics_are_root_mean_squares():
    p = nn.Parameter(torch.zeros(3, 2))
    stats = GradientStatistics([p])
    grads = [torch.randn(3, 2) for _ in range(4)]
    for g in grads:
        p.grad = g.clone()
        stats.add()
    (rms,) = stats.rms()
    torch.testing.assert_close(rms, torch.stack(grads).square().mean(0).sqrt())


def test_rows_no_batch_reached_take_the_rarest_reached_rows_rms():
    p, bias = nn.Parameter(torch.zeros(5, 2)), nn.Parameter(torch.zeros(3))
    stats = GradientStatistics([p, bias])
    for scale in (1.0, 2.0):
        p.grad = torch.zeros(5, 2)
        p.grad[1], p.grad[3] = torch.tensor([3.0, 3.0]) * scale, torch.tensor([0.5, 1.5]) * scale  # rows 0, 2, 4: none
        bias.grad = torch.tensor([0.0, 1.0, 2.0])  # a zero entry of a vector stays zero
        stats.add()
    rms, bias_rms = stats.rms()
    reached = torch.tensor([[0.5, 1.5], [1.0, 3.0]]).square().mean(0).sqrt()  # row 3: the smaller mean rms
    for row in (0, 2, 4, 3):
        torch.testing.assert_close(rms[row], reached)
    torch.testing.assert_close(rms[1], torch.tensor([3.0, 6.0]).square().mean().sqrt().expand(2))
    torch.testing.assert_close(bias_rms, torch.tensor([0.0, 1.0, 2.0]))


def test_tied_rows_with_a_sparse_gradient_give_the_dense_one():
    torch.manual_seed(0)
    weight = nn.Parameter(torch.randn(30, 4))
    x, tokens = torch.randn(5, 4), torch.tensor([3, 3, 17, 29])
    grads = []
    for sparse in (False, True):
        weight.grad = None
        loss = F.linear(x, weight_rows(weight, 2, 9, sparse)).logsumexp(1).sum()
        (loss + F.embedding(tokens, weight, sparse=sparse).pow(2).sum()).backward()
        assert weight.grad.is_sparse == sparse
        grads.append(weight.grad.to_dense())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-6)


# (dtype, sparse gradient: None, "coo" or "rows" (as nn.Embedding(sparse=True) gives it), rows read by every step)
STEP_CASES = [(torch.float32, None, 0), (torch.bfloat16, None, 0), (torch.float32, "coo", 0),
              (torch.float32, "rows", 0), (torch.float32, "rows", 4), (torch.bfloat16, None, 4)]


@pytest.mark.parametrize("dtype,sparse,prefix", STEP_CASES)
def test_steps_follow_the_formula_with_lazy_rows_and_16_bit_weights(dtype, sparse, prefix):
    torch.manual_seed(0)
    embedding = nn.Parameter(torch.randn(12, 4).to(dtype))
    dense = nn.Parameter(torch.randn(5, 3).to(dtype))
    rms = [torch.rand(12, 4) + 0.01, torch.rand(5, 3) + 0.01]
    dyn = DynamicEvaluation([embedding, dense], rms, LR, 5.0, lazy_rows=[embedding],  # some rates clip at 1
                            rows_read_every_step=prefix)
    expected = [embedding.detach().float().clone(), dense.detach().float().clone()]
    trained = [t.clone() for t in expected]
    for step in range(6):
        rows = torch.cat([torch.randint(0, 12, (3,)), torch.arange(prefix)])  # a tied shortlist reads its rows
        dyn.read_rows(embedding, rows)
        # What a forward reads is up to date, with the rows never read only decaying in between.
        tol = 1e-6 if dtype == torch.float32 else 1e-2
        torch.testing.assert_close(embedding.detach()[rows].float(), expected[0][rows], rtol=tol, atol=tol)
        grads = [torch.zeros(12, 4), torch.randn(5, 3)]
        grads[0][rows] = torch.randn(len(rows), 4)
        embedding.grad, dense.grad = grads[0].to(dtype), grads[1].to(dtype)
        if sparse:  # "rows": as nn.Embedding(sparse=True) and weight_rows give it
            embedding.grad = embedding.grad.to_sparse(1 if sparse == "rows" else 2)
        dyn.step()
        expected = [dynamic_eval_update(e, t, g.to(dtype).float(), r, rms, LR, 5.0, EPSILON)
                    for e, t, g, r in zip(expected, trained, grads, rms)]
    dyn.read_rows(embedding, torch.arange(12))
    for p, e, w in zip([embedding, dense], expected, dyn.weights):
        torch.testing.assert_close(w, e, rtol=1e-6, atol=1e-6)  # fp32 weights, even for bf16 parameters
        assert p.dtype == dtype and torch.equal(p.detach(), w.to(dtype))


def test_without_gradients_the_weights_decay_back_to_the_trained_ones():
    trained = torch.randn(6, 3)
    p = nn.Parameter(trained.clone())
    rms = [torch.rand(6, 3) + 0.1]
    dyn = DynamicEvaluation([p], rms, LR, DECAY)
    p.data += torch.randn(6, 3)  # as after some steps on text
    gaps = []
    for _ in range(5):
        gaps.append((p.detach() - trained).abs())
        p.grad = None
        dyn.step()
    rate = (DECAY * rms[0] / rms[0].mean()).clamp(max=1)
    for before, after in zip(gaps, gaps[1:] + [(p.detach() - trained).abs()]):
        torch.testing.assert_close(after, before * (1 - rate))
        assert (after < before).all()


def test_refuses_negative_settings():
    p = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="lr >= 0 and decay >= 0"):
        DynamicEvaluation([p], [torch.ones(2)], -1.0, DECAY)


def built(data_bin, *extra):
    torch.manual_seed(1)  # every call builds the same weights
    task, model, _ = build(data_bin, *SMALL_MODEL, "--adaptive-softmax-cutoff", "20,60", "--tie-adaptive-weights",
                           "--stateful-bptt", "--dynamic-eval", "--dynamic-eval-lr", str(LR),
                           "--dynamic-eval-decay", str(DECAY), "--dynamic-eval-segment", str(SEGMENT),
                           "--dynamic-eval-stats-tokens", "300", *extra)
    task.load_dataset("test")
    return task, model.eval()


def fairseq_scores(task, model) -> list:
    """Per stream row, per batch: fairseq's SequenceScorer's positional scores (fairseq-eval-lm's)."""
    scorer, out = SequenceScorer(task.target_dictionary), []
    for sample in task.eval_lm_dataloader(task.dataset("test"), batch_size=STREAMS, num_workers=0):
        out += [h[0]["positional_scores"] for h in scorer.generate([model], sample)]
    return out


def reference_scores(task, model, cache=None) -> list:
    """The plain loop: statistics, then per segment score, step (the formula), next segment."""
    decoder, pad = model.decoder, task.dictionary.pad()
    decoder.use_dynamic_eval(None)
    params = list(model.parameters())
    trained = [p.detach().clone() for p in params]

    def nll_and_scores(sample):
        stream = sample["net_input"]["stream"]
        features, _ = decoder.extract_features(sample["net_input"]["src_tokens"], stream=stream)
        target = sample["target"]
        log_p = decoder.adaptive_softmax.target_log_prob(features.reshape(-1, features.size(-1)), target.reshape(-1))
        log_p = log_p.view(target.shape)
        real = target.ne(pad)
        return -log_p[real].mean(), log_p, features, real

    squares = [torch.zeros_like(p) for p in params]
    batches = list(task.dynamic_eval_statistics())
    for sample in batches:
        grads = torch.autograd.grad(nll_and_scores(sample)[0], params, allow_unused=True)
        squares = [s + (0 if g is None else g.square()) for s, g in zip(squares, grads)]
    rms = [rarest_row_for_unreached((s / len(batches)).sqrt()) for s in squares]
    out, memory = [], None
    for sample in task.eval_lm_dataloader(task.dataset("test"), batch_size=STREAMS, num_workers=0):
        loss, log_p, features, real = nll_and_scores(sample)
        scores = log_p.detach()
        if cache is not None:  # the cache over the adapted model's features
            weights, values, memory = cache.attend(features.detach(), sample["net_input"]["src_tokens"], memory)
            p_cache = cache.target_probs(weights, values, sample["target"])
            scores = cache.mix(scores, p_cache, weights.sum(-1) > 0)
        out += [scores[row][real[row]] for row in range(len(real))]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        with torch.no_grad():
            for p, t, g, r in zip(params, trained, grads, rms):
                p.copy_(dynamic_eval_update(p, t, torch.zeros_like(p) if g is None else g, r, rms, LR, DECAY, EPSILON))
    return out


def assert_same_scores(got, expected, atol=2e-5):
    """Equal up to float rounding: the update's terms are grouped differently here."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.float(), e.float(), rtol=0, atol=atol)


def test_fairseqs_scorer_gives_the_plain_loops_scores(data_bin):
    task, model = built(data_bin)
    got = fairseq_scores(task, model)
    _, static = built(data_bin)  # the same seed: the same weights
    static.decoder.use_dynamic_eval(None)
    unadapted = fairseq_scores(task, static)
    expected = reference_scores(*built(data_bin))
    assert_same_scores(got, expected)
    # The model did adapt, toward the text: later segments score higher than the static model's.
    assert torch.cat(got).mean() > torch.cat(unadapted).mean() + 0.05
    # The first segment: not yet (scored through the training loss, whose log-sum-exp rounds apart).
    assert_same_scores(got[:STREAMS], unadapted[:STREAMS])


def test_with_the_cache_it_mixes_the_adapted_models_states(data_bin):
    cache = ["--neural-cache-size", "30", "--neural-cache-theta", "0.5", "--neural-cache-lambda", "0.2"]
    task, model = built(data_bin, *cache)
    got = fairseq_scores(task, model)
    expected = reference_scores(*built(data_bin), cache=NeuralCache(30, 0.5, 0.2, pad=task.dictionary.pad()))
    assert_same_scores(got, expected)


def test_no_token_is_scored_after_the_model_trained_on_it(data_bin):
    """Change the text after position p: every score up to p stays the same. A
    step taken on a segment before scoring it would let position p (in the middle
    of its segment) see the tokens after it."""
    task, model = built(data_bin)
    stream = task.dataset("test")
    p = 5 * SEGMENT + SEGMENT // 2  # in stream row 0, mid-segment
    first = torch.cat(fairseq_scores(task, model)[::STREAMS])  # row 0, all its segments
    changed = stream.tokens.clone()
    changed[p + 1: p + 40] = (changed[p + 1: p + 40] + 7) % (len(task.dictionary) - 4) + 4  # real words only
    stream.tokens = changed
    task2, model2 = built(data_bin)
    task2.datasets["test"] = stream
    second = torch.cat(fairseq_scores(task2, model2)[::STREAMS])
    assert torch.equal(first[: p + 1], second[: p + 1])
    assert not torch.equal(first[p + 1:], second[p + 1:])


def test_bad_settings_name_the_flag(data_bin):
    for extra, message in ((["--dynamic-eval-lr", "-1"], "--dynamic-eval-lr must be >= 0"),
                           (["--dynamic-eval-segment", "0"], "--dynamic-eval-segment must be >= 1"),
                           (["--dynamic-eval-decay", "-0.1"], "--dynamic-eval-decay must be >= 0")):
        with pytest.raises(ValueError, match=message):
            built(data_bin, *extra)
    with pytest.raises(ValueError, match="add --stateful-bptt"):
        build(data_bin, *SMALL_MODEL, "--adaptive-softmax-cutoff", "20,60", "--dynamic-eval")
    with pytest.raises(ValueError, match="--dynamic-eval needs --arch qrnn_lm"):
        build(data_bin, "--stateful-bptt", "--dynamic-eval", "--decoder-layers", "1", arch="lstm_lm",
              criterion="cross_entropy")


def test_generation_is_refused_before_the_statistics_are_gathered(data_bin):
    """fairseq's generators (the hub's sample, fairseq-interactive) decode incrementally:
    --dynamic-eval refuses at the first step, before it reads a single training batch."""
    from fairseq.sequence_generator import SequenceGenerator

    task, model = built(data_bin)
    read, setup = [], model.decoder.dynamic_eval.setup
    counted = lambda: read.append(1) or setup.statistics_batches()  # noqa: E731
    model.decoder.use_dynamic_eval(setup._replace(statistics_batches=counted))
    d = task.target_dictionary
    prefix = torch.tensor([[d.index("w000"), d.index("w001")]])
    sample = {"net_input": {"src_tokens": prefix, "src_lengths": torch.tensor([2])}}
    generator = SequenceGenerator([model], d, beam_size=1, max_len_b=4)
    with pytest.raises(ValueError, match="--dynamic-eval scores given text .*it cannot generate"):
        generator.generate([model], sample, prefix_tokens=prefix)
    assert read == [] and not model.decoder.dynamic_eval.started


def test_divergence_warns_once_naming_the_learning_rate(data_bin, caplog):
    """A learning rate that blows the weights up: one warning naming --dynamic-eval-lr, however
    many batches score inf or nan after it; a sane one: none."""
    task, model = built(data_bin, "--dynamic-eval-lr", "1e30")
    with caplog.at_level("WARNING", logger="fairseq_adasoft.models.dynamic_eval"):
        scores = torch.cat(fairseq_scores(task, model))
    assert not scores.isfinite().all()
    warned = [r.getMessage() for r in caplog.records if "--dynamic-eval-lr" in r.getMessage()]
    assert len(warned) == 1, warned
    assert "diverged at step" in warned[0] and "currently 1e+30" in warned[0]
    caplog.clear()
    task, model = built(data_bin)
    with caplog.at_level("WARNING", logger="fairseq_adasoft.models.dynamic_eval"):
        assert torch.cat(fairseq_scores(task, model)).isfinite().all()
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
