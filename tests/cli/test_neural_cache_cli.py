"""The continuous cache through fairseq-eval-lm: equal to the formula over the
whole stream, equal to the tuner's scoring, and refused where it cannot work."""

import math
import sys

import pytest
import torch

from helpers import FREQSORTED, eval_lm, eval_result, load_stream, train
from fairseq_adasoft import tune
from fairseq_adasoft.logs import WITHOUT_CACHE_RE
from fairseq_adasoft.modules import NeuralCache
from references import plain_cache_probs

pytestmark = pytest.mark.slow

SIZE, THETA, LAMBDA = 40, 0.5, 0.3
SCORE = [*FREQSORTED, "--tokens-per-sample", "16"]  # the checkpoint scored as trained
CACHE = ["--neural-cache-size", str(SIZE), "--neural-cache-theta", str(THETA), "--neural-cache-lambda", str(LAMBDA)]


@pytest.fixture(scope="module")
def checkpoint(trained_checkpoint):
    return trained_checkpoint


def loss_base2(out):
    return float(eval_result(out)[0])


def formula_nll(checkpoint, data_bin, corpus_file):
    """Mean nll of the test stream with the cache, from one forward over the
    whole stream and the per-position formula (plain_cache_probs)."""
    model, d, stream, source = load_stream(checkpoint, data_bin, corpus_file)
    with torch.no_grad():
        features, extra = model(source, features_only=True)  # 1 x N x C
        model_p = model.get_normalized_probs((features, extra), log_probs=True)[0].double().exp()  # N x V
    cache_p = plain_cache_probs(features[0], source[0], SIZE, THETA, len(d))  # N x V
    p = (1 - LAMBDA) * model_p + LAMBDA * cache_p
    p[0] = model_p[0]  # the first word has nothing to remember
    return -p.gather(1, stream.unsqueeze(1)).log().mean().item()


def test_eval_lm_with_the_cache_equals_the_formula_over_the_whole_stream(data_bin, tiny_corpus, checkpoint):
    _, out = eval_lm(data_bin, checkpoint, *SCORE, "--stateful-bptt", *CACHE)
    expected = formula_nll(checkpoint, data_bin, tiny_corpus / "test.txt")
    assert loss_base2(out) * math.log(2) == pytest.approx(expected, abs=2e-4)
    # The Markov corpus repeats its successors: remembering them helps.
    _, plain = eval_lm(data_bin, checkpoint, *SCORE, "--stateful-bptt")
    assert loss_base2(out) < loss_base2(plain)
    # The same pass also reports the model's own figure: the run without the cache's, to print precision.
    assert WITHOUT_CACHE_RE.findall(out) == [eval_result(plain)]


def test_tuner_scores_as_eval_lm_does(data_bin, checkpoint):
    model, batches = tune.load(str(data_bin), str(checkpoint), "valid", streams=3)
    pad = model.decoder.dictionary.pad()
    split = tune.read_split(model, batches(), pad)
    result = tune.tune_cache(split, pad, sizes=(SIZE,), thetas=(THETA,), lambdas=(LAMBDA, 0.1))
    _, out = eval_lm(data_bin, checkpoint, *SCORE, "--stateful-bptt", "--batch-size", "3", *CACHE, subset="valid")
    _, plain = eval_lm(data_bin, checkpoint, *SCORE, "--stateful-bptt", "--batch-size", "3", subset="valid")
    assert result["grid"][0] == {"size": SIZE, "theta": THETA, "lambda": LAMBDA, "perplexity": pytest.approx(
        2 ** loss_base2(out), rel=2e-4)}
    assert result["without_cache"] == pytest.approx(2 ** loss_base2(plain), rel=2e-4)
    assert result["best"] in result["grid"] and len(result["grid"]) == 2


def test_cache_is_refused_where_it_cannot_work(data_bin, checkpoint, tmp_path):
    code, out = train(data_bin, "--max-update", "2", "--save-dir", tmp_path / "t", *CACHE, check=False)
    assert code != 0 and "--neural-cache-size is an evaluation option" in out
    code, out = eval_lm(data_bin, checkpoint, *SCORE, "--softmax-batch", "4", *CACHE, check=False)
    assert code != 0 and "drop fairseq-eval-lm's --softmax-batch" in out
    code, out = eval_lm(data_bin, checkpoint, *SCORE, "--neural-cache-lambda", "1.5", "--neural-cache-size", "10",
                        check=False)
    assert code != 0 and "--neural-cache-lambda must be in (0, 1)" in out


def test_tuner_refuses_the_test_split(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["tune", "cache", "--data", str(tmp_path), "--save-dir", str(tmp_path),
                                      "--subset", "test"])
    with pytest.raises(ValueError, match="--subset test: tune on a validation split"):
        tune.main()
