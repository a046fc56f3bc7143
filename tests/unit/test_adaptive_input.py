"""Adaptive input (Baevski & Auli 2019): equal to a per-band nn.Embedding +
nn.Linear reference, tied to the adaptive softmax, every parameter trained on
every step, in 16-bit, through a checkpoint, and bad flags refused by name."""

import pytest
import torch
from torch import nn

from fairseq_adasoft.modules import AdaptiveInput, AdaptiveSoftmax, embedding_dropout
from helpers import SMALL_MODEL, build
from references import adaptive_input_reference

V, D, CUTOFFS = 50, 16, [10, 30]


def reference_layers(layer: AdaptiveInput):
    """nn.Embedding + nn.Linear per band holding copies of ``layer``'s weights."""
    embeddings, projections = [], []
    for emb, proj in zip(layer.embeddings, layer.projections):
        e = nn.Embedding(emb.num_embeddings, emb.embedding_dim)
        e.weight.data.copy_(emb.weight)
        embeddings.append(e)
        if emb.embedding_dim == layer.embed_dim:  # a full-width band: the embedding alone
            assert isinstance(proj, nn.Identity)
            projections.append(nn.Identity())
            continue
        p = nn.Linear(proj.in_features, proj.out_features, bias=False)
        p.weight.data.copy_(proj.weight)
        projections.append(p)
    return embeddings, projections


def test_starts_at_the_plain_embeddings_scale_and_tied_tails_as_untied_ones():
    torch.manual_seed(0)
    layer = AdaptiveInput(4000, 64, [1000, 2000], factor=4.0)
    features = [layer(torch.arange(lo, hi)) for lo, hi in ((0, 1000), (1000, 2000), (2000, 4000))]
    assert [round(f.std().item(), 1) for f in features] == [1.0, 1.0, 1.0]  # nn.Embedding's N(0, 1) features
    untied = AdaptiveSoftmax(64, 4000, [1000, 2000], div_value=4.0)
    for i in (1, 2):  # each narrower band's rows spread as an untied tail's output matrix
        tail = untied.tail[i - 1][2].weight
        assert layer.embeddings[i].weight.shape == tail.shape
        assert layer.embeddings[i].weight.std().item() == pytest.approx(tail.std().item(), rel=0.05)
        assert layer.embeddings[i].weight.abs().max() <= tail.shape[1] ** -0.5


def every_band_tokens(shape=(3, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, V, shape, generator=g)
    tokens.view(-1)[:6] = torch.tensor([0, CUTOFFS[0] - 1, CUTOFFS[0], CUTOFFS[1] - 1, CUTOFFS[1], V - 1])
    return tokens


def test_equals_a_reference_of_one_embedding_and_projection_per_band():
    torch.manual_seed(0)
    layer = AdaptiveInput(V, D, CUTOFFS, factor=2.0, padding_idx=1)
    assert layer.band_dims == [16, 8, 4]
    tokens = every_band_tokens()
    ref = adaptive_input_reference(tokens, CUTOFFS, *reference_layers(layer))
    torch.testing.assert_close(layer(tokens), ref, rtol=1e-6, atol=1e-6)
    assert torch.count_nonzero(layer(torch.tensor([1]))) == 0  # padding_idx: a zero vector


def test_every_band_gets_a_gradient_even_without_its_tokens():
    layer = AdaptiveInput(V, D, CUTOFFS)
    layer(torch.tensor([[2, 3, 4]])).sum().backward()  # band 0 only
    assert all(p.grad is not None for p in layer.parameters())
    assert all(torch.count_nonzero(p.grad) == 0 for n, p in layer.named_parameters() if ".0." not in n)


def test_embedding_dropout_drops_whole_word_types():
    torch.manual_seed(0)
    layer = AdaptiveInput(V, D, CUTOFFS)
    tokens = torch.tensor([[5, 5, 20, 20, 40, 40, 41, 42, 43, 44, 45, 46]])
    x = embedding_dropout(layer, tokens, 0.5, training=True)
    clean = layer(tokens)
    for w in tokens.unique().tolist():
        at = tokens.view(-1) == w
        scales = x.view(-1, D)[at].norm(dim=1) / clean.view(-1, D)[at].norm(dim=1)
        assert torch.allclose(scales, scales[0].expand_as(scales))  # one scale per word type
        assert min(abs(scales[0].item() - 0.0), abs(scales[0].item() - 2.0)) < 1e-5  # dropped or 1 / (1 - p)
    torch.testing.assert_close(embedding_dropout(layer, tokens, 0.5, training=False), clean)


@pytest.mark.parametrize("tie_proj", [False, True])
def test_tied_to_the_adaptive_softmax_shares_tensors_and_gradients(tie_proj):
    torch.manual_seed(0)
    layer = AdaptiveInput(V, D, CUTOFFS, factor=4.0)
    softmax = AdaptiveSoftmax(D, V, CUTOFFS, div_value=4.0, tied_input=layer, tie_proj=tie_proj)
    # The tails hold no output matrix of their own, and no projection with tie_proj.
    assert [len(list(t.parameters())) for t in softmax.tail] == [0 if tie_proj else 1] * 2
    assert sum(p.numel() for p in softmax.parameters()) == sum(p.numel() for p in layer.parameters()) + \
        softmax.head_clusters.weight.numel() + (0 if tie_proj else sum(t[0].weight.numel() for t in softmax.tail))
    # The softmax equals one written with copies of the shared weights.
    copy = AdaptiveSoftmax(D, V, CUTOFFS, div_value=4.0)
    with torch.no_grad():
        copy.head.weight.copy_(torch.cat([layer.embeddings[0].weight, softmax.head_clusters.weight]))
        for i in range(2):
            proj = layer.projections[i + 1].weight.t() if tie_proj else softmax.tail[i][0].weight
            copy.tail[i][0].weight.copy_(proj)
            copy.tail[i][2].weight.copy_(layer.embeddings[i + 1].weight)
    x, target = torch.randn(12, D), every_band_tokens((12,))
    torch.testing.assert_close(softmax(x, target), copy(x, target), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(softmax.log_prob(x), copy.log_prob(x), rtol=1e-6, atol=1e-6)
    # Gradients from the input side and from the output side add up in the shared tensors.
    tokens = every_band_tokens()
    shared = [layer.embeddings[2].weight] + ([layer.projections[2].weight] if tie_proj else [])
    grads = []
    for loss in (lambda: layer(tokens).pow(2).sum(), lambda: -softmax(x, target).sum(),
                 lambda: layer(tokens).pow(2).sum() - softmax(x, target).sum()):
        for p in shared:
            p.grad = None
        loss().backward()
        grads.append([p.grad.clone() for p in shared])
    for g_in, g_out, g_both in zip(*grads):
        assert torch.count_nonzero(g_in) > 0 and torch.count_nonzero(g_out) > 0
        torch.testing.assert_close(g_both, g_in + g_out)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_stays_close_to_fp32(dtype):
    torch.manual_seed(0)
    layer = AdaptiveInput(V, D, CUTOFFS)
    tokens = every_band_tokens()
    expected = layer(tokens)
    torch.testing.assert_close(layer.to(dtype)(tokens).float(), expected, rtol=2e-2, atol=2e-2)


def test_refuses_bad_arguments():
    with pytest.raises(ValueError, match="factor must be >= 1"):
        AdaptiveInput(V, D, CUTOFFS, factor=0.5)
    layer = AdaptiveInput(V, D, [10, 20])
    with pytest.raises(ValueError, match="same cutoffs.*drop --adaptive-input-cutoff"):
        AdaptiveSoftmax(D, V, CUTOFFS, tied_input=layer)
    with pytest.raises(ValueError, match="--adaptive-input-factor equal to --adaptive-softmax-div-value"):
        AdaptiveSoftmax(D, V, CUTOFFS, div_value=2.0, tied_input=AdaptiveInput(V, D, CUTOFFS, factor=4.0))


ADAPTIVE_INPUT = SMALL_MODEL + ["--adaptive-softmax-cutoff", "20,60", "--adaptive-input"]


@pytest.mark.parametrize("flags", [[], ["--tie-adaptive-weights"], ["--tie-adaptive-weights", "--tie-adaptive-proj"]])
def test_the_model_builds_it_and_reloads_it(data_bin, tmp_path, flags):
    task, model, _ = build(data_bin, *ADAPTIVE_INPUT, *flags)
    embed = model.decoder.embed_tokens
    assert isinstance(embed, AdaptiveInput) and embed.cutoffs[:-1] == [20, 60]
    assert (model.decoder.adaptive_softmax.tied_input is embed) == bool(flags)
    n_plain = sum(p.numel() for p in build(data_bin, *SMALL_MODEL, "--adaptive-softmax-cutoff", "20,60")[1].parameters())
    n = sum(p.numel() for p in model.parameters())
    assert n < n_plain  # smaller bands, and with tying fewer matrices still
    torch.save(model.state_dict(), tmp_path / "m.pt")
    _, again, _ = build(data_bin, *ADAPTIVE_INPUT, *flags)
    again.load_state_dict(torch.load(tmp_path / "m.pt"))
    model.eval(), again.eval()
    tokens = torch.randint(4, len(task.dictionary), (2, 9))
    torch.testing.assert_close(again(tokens)[0], model(tokens)[0], rtol=0, atol=0)


def test_flags_are_resolved_and_checked(data_bin):
    task, model, _ = build(data_bin, *SMALL_MODEL, "--adaptive-softmax-cutoff", "0.2,0.5", "--adaptive-input",
                           "--adaptive-input-cutoff", "auto", "--tie-adaptive-weights")
    V = len(task.dictionary)
    assert model.decoder.embed_tokens.cutoffs == model.decoder.adaptive_softmax.cutoffs == [round(0.2 * V), round(0.5 * V), V]
    _, model, _ = build(data_bin, *ADAPTIVE_INPUT, "--adaptive-input-cutoff", "0.1")
    assert model.decoder.embed_tokens.cutoffs == [round(0.1 * V), V]
    for extra, match in [
        (["--adaptive-input-factor", "0.5"], "--adaptive-input-factor must be >= 1"),
        (["--adaptive-input-cutoff", "10,30", "--tie-adaptive-weights"], "drop --adaptive-input-cutoff"),
        (["--adaptive-input-factor", "2", "--tie-adaptive-weights"], "--adaptive-input-factor equal to"),
        (["--tie-adaptive-proj"], "add --adaptive-input --tie-adaptive-weights"),
    ]:
        with pytest.raises(ValueError, match=match):
            build(data_bin, *ADAPTIVE_INPUT, *extra)
    with pytest.raises(ValueError, match="--adaptive-input needs bands"):
        build(data_bin, *SMALL_MODEL, "--adaptive-input")
    with pytest.raises(ValueError, match="--tie-adaptive-weights ties an adaptive softmax"):
        build(data_bin, *SMALL_MODEL, "--adaptive-input", "--adaptive-input-cutoff", "20", "--tie-adaptive-weights")
    with pytest.raises(ValueError, match="add --adaptive-input, or drop it"):
        build(data_bin, *SMALL_MODEL, "--adaptive-input-cutoff", "20")
