"""Adaptive input tied to the adaptive softmax through the real tools: training
lowers the loss, fairseq-eval-lm's classic protocol scores the checkpoint as one
forward over the whole stream does, and the reloaded model decodes
incrementally and mixes in the continuous cache, as the plain embedding's does."""

import math

import pytest
import torch

from helpers import FREQSORTED, eval_lm, eval_result, own_test_nll, train, train_losses
from fairseq_adasoft.modules import AdaptiveInput, NeuralCache

pytestmark = pytest.mark.slow

ADAPTIVE_INPUT = ["--adaptive-input", "--tie-adaptive-weights", "--tie-adaptive-proj", "--dropout-embed", "0.1"]


def test_adaptive_input_trains_scores_and_decodes(data_bin, tiny_corpus, tmp_path):
    save = tmp_path / "ckpt"
    _, out = train(data_bin, *ADAPTIVE_INPUT, "--max-update", "40", "--save-dir", save, "--no-epoch-checkpoints")
    losses = train_losses(out)
    assert losses[-1] < losses[0] - 1.0, losses
    checkpoint = save / "checkpoint_last.pt"
    _, out = eval_lm(data_bin, checkpoint, *FREQSORTED, "--tokens-per-sample", "16", "--stateful-bptt")
    nll, ntokens = own_test_nll(checkpoint, data_bin, tiny_corpus / "test.txt")  # one forward over all
    assert f"Evaluated {ntokens:,} tokens" in out
    assert 2 ** float(eval_result(out)[0]) == pytest.approx(math.exp(nll), rel=1e-4)

    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)], arg_overrides={"data": str(data_bin)})
    model = models[0].eval()
    assert isinstance(model.decoder.embed_tokens, AdaptiveInput)
    tokens = torch.randint(task.dictionary.nspecial, len(task.dictionary), (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model.get_normalized_probs(model(tokens), log_probs=True)  # B x T x V
        state = {}
        for t in range(tokens.size(1)):
            step = model.get_normalized_probs(model.decoder(tokens[:, : t + 1], incremental_state=state), log_probs=True)
            torch.testing.assert_close(step[:, -1], full[:, t], rtol=0, atol=1e-5)
        model.use_neural_cache(NeuralCache(40, 0.5, 0.3, pad=task.dictionary.pad()))
        mixed = model.get_normalized_probs(model(tokens), log_probs=True)
    torch.testing.assert_close(mixed.exp().sum(-1), torch.ones(2, 8), rtol=0, atol=1e-5)
    assert not torch.allclose(mixed[:, 1:], full[:, 1:])  # the cache changed what it remembers
