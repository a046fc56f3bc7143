"""Target-aware scoring: what fairseq's SequenceScorer (fairseq-eval-lm, the
hub's score) reads equals the full distribution's values, nothing N x V is
built, and everything else still sees the whole distribution."""

import copy
import re

import pytest
import torch
from fairseq.dataclass.configs import GenerationConfig
from fairseq.sequence_scorer import SequenceScorer
from torch.profiler import ProfilerActivity, profile

from helpers import FREQSORTED, SMALL_MODEL, build, eval_lm, load_stream, preprocess, train
from fairseq_adasoft.modules import AdaptiveSoftmax, LazyLogProbs, NeuralCache

V, D, CUTOFFS = 200, 12, [20, 60, 120]
BOUNDARY_IDS = [0, 1, 19, 20, 59, 60, 119, 120, V - 1]  # 1 is fairseq's pad
ATOL = 1e-6
FLAGS = [*SMALL_MODEL, "--adaptive-softmax-cutoff", "20,60", "--tokens-per-sample", "16"]


def layer(dtype=torch.float32, **kwargs):
    torch.manual_seed(0)
    return AdaptiveSoftmax(D, V, CUTOFFS, div_value=2.0, **kwargs).eval().to(dtype)


def targets(n):
    """Every boundary id, then random words of every cluster."""
    g = torch.Generator().manual_seed(1)
    return torch.cat([torch.tensor(BOUNDARY_IDS), torch.randint(0, V, (n - len(BOUNDARY_IDS),), generator=g)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tied", [False, True])
def test_target_scores_equal_the_full_distribution_in_every_cluster(dtype, tied):
    tied_weight = torch.nn.Parameter(torch.randn(V, D)) if tied else None
    m = layer(dtype, tied_weight=tied_weight)
    x = torch.randn(3, 20, D).to(dtype)
    t = targets(60).view(3, 20)
    with torch.no_grad():
        lazy = m.get_log_prob(x, target=t)
        full = m.log_prob(x)
        assert isinstance(lazy, LazyLogProbs) and lazy.dtype == full.dtype == torch.float32  # 16-bit scored in fp32
        got = lazy.data.gather(dim=2, index=t.unsqueeze(-1))
    torch.testing.assert_close(got, full.gather(2, t.unsqueeze(-1)), rtol=0, atol=ATOL)


def test_any_other_read_sees_the_whole_distribution():
    m, x, t = layer(), torch.randn(2, 5, D), targets(10).view(2, 5)
    with torch.no_grad():
        full = m.log_prob(x)
        lazy = m.get_log_prob(x, target=t)
        torch.testing.assert_close(lazy.exp().sum(-1), torch.ones(2, 5))
        assert torch.equal(lazy[:, -1, :], full[:, -1, :]) and torch.equal(lazy + 0, full)
        two = torch.stack([t, torch.zeros_like(t)], -1)  # two columns per position
        assert torch.equal(lazy.gather(2, two), full.gather(2, two))
        assert torch.equal(lazy.gather(0, torch.zeros(1, 5, V, dtype=torch.long)), full[:1])
        flat = m.get_log_prob(x, target=t).view(1, 10, V)  # SequenceScorer's --softmax-batch view
        torch.testing.assert_close(flat.gather(2, t.view(1, 10, 1)), full.view(1, 10, V).gather(2, t.view(1, 10, 1)),
                                   rtol=0, atol=ATOL)
        probs = m.get_log_prob(x, target=t)
        assert probs.exp_() is probs  # fairseq's get_normalized_probs(log_probs=False)
        torch.testing.assert_close(probs.gather(2, t.unsqueeze(-1)), full.exp().gather(2, t.unsqueeze(-1)),
                                   rtol=0, atol=ATOL)
        assert not isinstance(m.get_log_prob(x), LazyLogProbs)  # no target: generation's call
    assert not isinstance(m.get_log_prob(x, target=t), LazyLogProbs)  # a gradient to track


def test_cache_mixture_at_the_target_equals_the_full_mixture():
    cache = NeuralCache(size=6, theta=0.7, lam=0.3, pad=1)
    g = torch.Generator().manual_seed(2)
    hidden, words = torch.randn(2, 9, D, generator=g), torch.randint(0, 8, (2, 9), generator=g)  # repeats
    weights, values, _ = cache.attend(hidden, words, None)
    m, t = layer(), words.roll(-1, 1)
    with torch.no_grad():
        lazy = cache.lazy_mixed_log_probs(m.get_log_prob(hidden, target=t), weights, values)
        full = cache.mixed_log_probs(m.log_prob(hidden), weights, values)
        torch.testing.assert_close(lazy.gather(2, t.unsqueeze(-1)), full.gather(2, t.unsqueeze(-1)), rtol=0, atol=ATOL)
        torch.testing.assert_close(lazy.exp().sum(-1), torch.ones(2, 9))


def full_scores(model, sample):
    """log p(target) per position from the whole distribution (no target given: fairseq's generation call)."""
    with torch.no_grad():
        lprobs = model.get_normalized_probs(model(**sample["net_input"]), log_probs=True)  # B x T x V
    return lprobs.gather(2, sample["target"].unsqueeze(-1)).squeeze(-1)


def scorer_scores(models, sample, task, softmax_batch=None):
    hypos = SequenceScorer(task.target_dictionary, softmax_batch).generate(models, sample)
    return [h[0]["positional_scores"] for h in hypos]


def eval_batches(task, *, streams=None):
    task.load_dataset("test")
    return list(task.eval_lm_dataloader(task.dataset("test"), max_tokens=None, batch_size=streams or 4,
                                        num_workers=0))


@pytest.fixture(scope="module")
def blocks(data_bin):
    task, model, _ = build(data_bin, *FLAGS)
    return task, model.eval(), eval_batches(task)


@pytest.mark.parametrize("softmax_batch", [None, 7])  # 7: fairseq splits every batch, off its rows
def test_fairseq_scorer_reads_target_scores_equal_to_the_full_distribution(blocks, softmax_batch):
    task, model, batches = blocks
    for sample in batches:
        expected = full_scores(model, sample)
        got = scorer_scores([model], sample, task, softmax_batch)
        for i, scores in enumerate(got):
            real = sample["target"][i].ne(task.dictionary.pad())
            torch.testing.assert_close(scores, expected[i][real], rtol=0, atol=ATOL)


def test_an_ensemble_averages_the_target_probabilities(blocks):
    task, model, batches = blocks
    other = copy.deepcopy(model)
    torch.nn.init.normal_(other.decoder.adaptive_softmax.tail[0][0].weight)
    sample = batches[0]
    expected = torch.logaddexp(full_scores(model, sample), full_scores(other, sample)) - torch.log(torch.tensor(2.0))
    got = scorer_scores([model, other], sample, task)
    torch.testing.assert_close(got[0], expected[0][sample["target"][0].ne(task.dictionary.pad())], rtol=0, atol=1e-5)


@pytest.mark.parametrize("cache", [False, True])
def test_stateful_streams_score_as_with_the_full_distribution(data_bin, cache):
    cache_flags = ["--neural-cache-size", "12", "--neural-cache-theta", "0.5"] if cache else []
    task, model, _ = build(data_bin, *FLAGS, "--stateful-bptt", *cache_flags)
    model.eval()
    reference = copy.deepcopy(model)  # carries its own state and cache memory
    for sample in eval_batches(task, streams=3):
        expected = full_scores(reference, sample)
        got = scorer_scores([model], sample, task)
        for i, scores in enumerate(got):
            torch.testing.assert_close(scores, expected[i][sample["target"][i].ne(task.dictionary.pad())],
                                       rtol=0, atol=ATOL)


def test_generation_sees_normalised_distributions(blocks):
    task, model, batches = blocks
    seen = []
    original = model.get_normalized_probs

    def recording(net_output, log_probs, sample=None):
        out = original(net_output, log_probs, sample)
        seen.append((type(out), out.exp().sum(-1)))  # now: the generator then edits it in place
        return out

    model.get_normalized_probs = recording
    prefix = torch.tensor([[4, 5, 6], [7, 8, 9]])  # words, no eos or pad
    sample = {"net_input": {"src_tokens": prefix, "src_lengths": torch.tensor([3, 3])}}
    try:
        for settings in (dict(beam=2), dict(beam=1, sampling=True)):
            seen.clear()
            generator = task.build_generator([model], GenerationConfig(min_len=4, max_len_b=12, **settings))
            out = task.inference_step(generator, [model], sample)
            assert len(out) == 2 and seen
            for kind, total in seen:
                assert kind is torch.Tensor
                torch.testing.assert_close(total, torch.ones(total.shape))
    finally:
        del model.get_normalized_probs


BIG_V, BIG_CUTOFFS = 20_000, "1000,5000"


@pytest.fixture(scope="module")
def big_vocabulary(tmp_path_factory):
    """A corpus of BIG_V word types: every type once, then Zipf draws (p(rank r) ~ 1/r)."""
    d = tmp_path_factory.mktemp("big-vocab")
    g = torch.Generator().manual_seed(3)
    words = [f"w{i}" for i in range(BIG_V)]
    zipf = 1.0 / torch.arange(1, BIG_V + 1, dtype=torch.float64)

    def lines(ids):
        return "\n".join(" ".join(words[i] for i in row) for row in ids.view(-1, 50).tolist()) + "\n"

    (d / "train.txt").write_text(lines(torch.cat([torch.arange(BIG_V), torch.multinomial(zipf, 3 * BIG_V, True, generator=g)])))
    (d / "test.txt").write_text(lines(torch.multinomial(zipf, 2000, True, generator=g)))
    dest = d / "bin"
    preprocess(dest, d / "train.txt", validpref=d / "test.txt", testpref=d / "test.txt")
    return dest


def largest_allocation(fn) -> int:
    """Bytes of the largest block any operation allocated while ``fn`` ran."""
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(e.self_cpu_memory_usage for e in prof.events())


def test_scoring_builds_only_the_head_and_the_needed_tail_rows(big_vocabulary):
    task, model, _ = build(big_vocabulary, "--embed-dim", "16", "--hidden-size", "16", "--num-layers", "1",
                           "--adaptive-softmax-cutoff", BIG_CUTOFFS, "--tokens-per-sample", "64")
    model.eval()
    sample = eval_batches(task, streams=16)[0]
    layer, target = model.decoder.adaptive_softmax, sample["target"].reshape(-1)
    rows = torch.bincount(layer.cluster_of(target), minlength=layer.n_clusters + 1).tolist()
    widths = [layer.shortlist_size + layer.n_clusters] + [b - a for a, b in zip(layer.cutoffs, layer.cutoffs[1:])]
    head_and_tails = max(len(target) * widths[0], *(r * w for r, w in zip(rows[1:], widths[1:]))) * 4  # fp32 bytes
    n_by_v = len(target) * len(task.dictionary) * 4
    assert head_and_tails < n_by_v / 4  # the corpus gives the check room
    assert largest_allocation(lambda: scorer_scores([model], sample, task)) <= head_and_tails
    assert largest_allocation(lambda: full_scores(model, sample)) >= n_by_v  # the check can fail


@pytest.mark.slow
def test_eval_lm_word_probs_equal_the_full_distribution(data_bin, tiny_corpus, tmp_path):
    """fairseq-eval-lm --output-word-probs, one stream carried across batches that
    --softmax-batch splits, against the whole stream's full distribution."""
    train(data_bin, "--max-update", "5", "--save-dir", tmp_path, "--no-epoch-checkpoints")
    checkpoint = tmp_path / "checkpoint_last.pt"
    _, out = eval_lm(data_bin, checkpoint, *FREQSORTED, "--stateful-bptt", "--tokens-per-sample", "16",
                     "--batch-size", "1", "--softmax-batch", "5", "--output-word-probs")
    printed = [float(p) for line in out.splitlines() if re.search(r"fairseq_cli\.eval_lm(:| \| )\d+ ", line)
               for p in re.findall(r"\S+ \[(-?\d+\.\d+)\]", line)]
    _, tokens = own_test_nll_per_token(checkpoint, data_bin, tiny_corpus / "test.txt")
    assert len(printed) == len(tokens)
    torch.testing.assert_close(torch.tensor(printed), tokens, rtol=0, atol=1e-5)  # printed to 6 decimals


def own_test_nll_per_token(checkpoint, data_bin, corpus_file):
    """log p of every test token from one forward over the whole stream and the full distribution."""
    model, _, stream, source = load_stream(checkpoint, data_bin, corpus_file)
    sample = {"net_input": {"src_tokens": source}, "target": stream.unsqueeze(0)}
    return stream, full_scores(model, sample)[0]
