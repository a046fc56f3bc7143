"""The registered model, criterion and task, driven through fairseq's APIs."""

import shutil

import pytest
import torch
import torch.nn.functional as F

from helpers import SMALL_MODEL, build, make_corpus, preprocess

ADAPTIVE = SMALL_MODEL + ["--adaptive-softmax-cutoff", "20,60"]


def batch(task, bsz=3, tgt_len=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    V = len(task.dictionary)
    tokens = torch.randint(task.dictionary.nspecial, V, (bsz, tgt_len + 1), generator=g)
    target = tokens[:, 1:].clone()
    target[0, -2:] = task.dictionary.pad()  # some padding, which must be ignored
    return {
        "net_input": {"src_tokens": tokens[:, :-1], "src_lengths": torch.full((bsz,), tgt_len)},
        "target": target,
        "ntokens": int(target.ne(task.dictionary.pad()).sum()),
    }


@pytest.mark.parametrize("output", ["adaptive", "full"])
def test_incremental_decoding_equals_full_forward(data_bin, output):
    task, model, _ = build(data_bin, *(ADAPTIVE if output == "adaptive" else SMALL_MODEL))
    model.eval()
    tokens = batch(task)["net_input"]["src_tokens"]
    full = model.get_normalized_probs(model(tokens), log_probs=True)  # B x T x V
    state = {}
    for t in range(tokens.size(1)):
        step = model.get_normalized_probs(model.decoder(tokens[:, : t + 1], incremental_state=state), log_probs=True)
        torch.testing.assert_close(step[:, -1], full[:, t], rtol=0, atol=1e-5)
    # Beam search reorders hypotheses: the state must follow them.
    order = torch.tensor([2, 0, 0])
    model.decoder.reorder_incremental_state_scripting(state, order)
    nxt = torch.randint(4, len(task.dictionary), (3, 1))
    extended = torch.cat([tokens.index_select(0, order), nxt], dim=1)
    step = model.get_normalized_probs(model.decoder(extended, incremental_state=state), log_probs=True)
    reference = model.get_normalized_probs(model(extended), log_probs=True)
    torch.testing.assert_close(step[:, -1], reference[:, -1], rtol=0, atol=1e-5)


def test_adaptive_model_probabilities_are_normalised(data_bin):
    task, model, _ = build(data_bin, *ADAPTIVE)
    model.eval()
    probs = model.get_normalized_probs(model(batch(task)["net_input"]["src_tokens"]), log_probs=False)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:2]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("output", ["adaptive", "full"])
def test_criterion_loss_is_the_summed_nll_of_non_pad_targets(data_bin, output):
    task, model, criterion = build(data_bin, *(ADAPTIVE if output == "adaptive" else SMALL_MODEL))
    model.eval()
    sample = batch(task)
    with torch.no_grad():
        loss, sample_size, log = criterion(model, sample)
    with torch.no_grad():
        lprobs = model.get_normalized_probs(model(**sample["net_input"]), log_probs=True)
    expected = F.nll_loss(lprobs.reshape(-1, lprobs.size(-1)), sample["target"].reshape(-1),
                          ignore_index=task.dictionary.pad(), reduction="sum")
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-4)
    assert sample_size == sample["ntokens"]
    if output == "adaptive":
        assert sum(log[f"cluster{i}_ntokens"] for i in range(3)) == sample["ntokens"]
        assert sum(log[f"cluster{i}_loss"] for i in range(3)) == pytest.approx(expected.item(), rel=1e-5)


def test_tied_full_softmax_shares_the_embedding(data_bin):
    _, model, _ = build(data_bin, *SMALL_MODEL, "--share-input-output-embed")
    assert model.decoder.output_projection.weight is model.decoder.embed_tokens.weight
    _, untied, _ = build(data_bin, *SMALL_MODEL)
    assert untied.decoder.output_projection.weight is not untied.decoder.embed_tokens.weight


def test_fraction_cutoffs_are_resolved_to_ids_for_the_checkpoint(data_bin):
    task, model, _ = build(data_bin, *SMALL_MODEL, "--adaptive-softmax-cutoff", "0.25,0.5")
    V = len(task.dictionary)
    assert model.decoder.adaptive_softmax.cutoffs == [round(0.25 * V), round(0.5 * V), V]


@pytest.mark.parametrize(
    "cutoff,match",
    [("60,20", "strictly increasing"), ("20,20", "strictly increasing"),
     ("20,100000", "below the vocabulary size"), ("a,b", "not a comma-separated list")],
)
def test_bad_cutoffs_name_the_flag(data_bin, cutoff, match):
    with pytest.raises(ValueError, match=match) as err:
        build(data_bin, *SMALL_MODEL, "--adaptive-softmax-cutoff", cutoff)
    assert "--adaptive-softmax-cutoff" in str(err.value)


def test_missing_data_directory_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="does not exist: run fairseq-preprocess"):
        build(tmp_path / "nowhere", *SMALL_MODEL)
    with pytest.raises(ValueError, match="dict.txt' is missing"):
        build(tmp_path, *SMALL_MODEL)


def valid_sample(task, n=4):
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    return dataset.collater([dataset[i] for i in range(n)])


def test_unsorted_dictionary_is_resorted_with_the_same_loss(data_bin, alphabetical_data_bin):
    sorted_task, model, criterion = build(data_bin, *ADAPTIVE, "--tokens-per-sample", "32")
    alpha_task, alpha_model, _ = build(alphabetical_data_bin, *ADAPTIVE, "--tokens-per-sample", "32")
    assert alpha_task.dictionary.symbols == sorted_task.dictionary.symbols
    # The file keeps its alphabetical ids; only the in-memory dictionary changed.
    assert (alphabetical_data_bin / "dict.txt").read_text().splitlines() == sorted(
        (data_bin / "dict.txt").read_text().splitlines())
    alpha_model.load_state_dict(model.state_dict())
    model.eval(), alpha_model.eval()
    with torch.no_grad():
        loss, n, _ = criterion(model, valid_sample(sorted_task))
        alpha_loss, alpha_n, _ = criterion(alpha_model, valid_sample(alpha_task))
    assert n == alpha_n == 4 * 32 and loss.item() == pytest.approx(alpha_loss.item(), rel=1e-6)


def test_no_resort_turns_the_resort_into_an_error(alphabetical_data_bin):
    with pytest.raises(ValueError, match="not in training-frequency order.*drop --no-resort"):
        build(alphabetical_data_bin, *SMALL_MODEL, "--no-resort")


def test_empty_training_split_is_a_clear_error(data_bin, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    shutil.copy(data_bin / "dict.txt", empty / "dict.txt")
    (tmp_path / "empty.txt").write_text("")
    preprocess(empty, tmp_path / "empty.txt", "--srcdict", empty / "dict.txt")
    with pytest.raises(ValueError, match="is empty: give fairseq-preprocess a non-empty --trainpref"):
        build(empty, *SMALL_MODEL)


def test_fairseq_adaptive_loss_is_refused_for_qrnn_lm(data_bin):
    from fairseq.criterions.adaptive_loss import AdaptiveLoss

    task, model, _ = build(data_bin, *ADAPTIVE)
    criterion = AdaptiveLoss(task, sentence_avg=False)  # not through task.build_criterion, which refuses it first
    with pytest.raises(ValueError, match="--criterion adaptive_loss only serves fairseq's own"):
        task.valid_step(batch(task), model, criterion)  # train_step checks the same, on the first step
    # fairseq's own adaptive softmax (lstm_lm) keeps fairseq's criterion
    build(data_bin, "--decoder-embed-dim", "16", "--decoder-hidden-size", "16", "--decoder-out-embed-dim", "16",
          "--adaptive-softmax-cutoff", "20,60", "--ddp-backend", "legacy_ddp", arch="lstm_lm", criterion="adaptive_loss")


def test_criterion_refuses_a_foreign_adaptive_softmax(data_bin):
    task, model, criterion = build(
        data_bin, "--decoder-layers", "1", "--decoder-embed-dim", "16", "--decoder-ffn-embed-dim", "16",
        "--decoder-attention-heads", "2", "--adaptive-softmax-cutoff", "20,60", arch="transformer_lm",
    )
    with pytest.raises(ValueError, match="needs fairseq_adasoft's AdaptiveSoftmax"):
        criterion(model, batch(task))


def test_reduce_metrics_logs_base2_loss_and_per_cluster_statistics():
    import math

    from fairseq.logging import metrics

    from fairseq_adasoft.criterions.adaptive_softmax import AdaptiveSoftmaxCriterion

    logs = [
        {"loss": 6.0, "ntokens": 4, "sample_size": 4, "nsentences": 1,
         "cluster0_ntokens": 3, "cluster0_loss": 3.0, "cluster1_ntokens": 1, "cluster1_loss": 3.0},
        {"loss": 10.0, "ntokens": 4, "sample_size": 4, "nsentences": 1,
         "cluster0_ntokens": 2, "cluster0_loss": 2.0, "cluster1_ntokens": 2, "cluster1_loss": 8.0},
    ]
    with metrics.aggregate() as agg:
        AdaptiveSoftmaxCriterion.reduce_metrics(logs)
    values = agg.get_smoothed_values()
    assert values["loss"] == pytest.approx(16.0 / 8 / math.log(2), abs=1e-3)
    assert values["ppl"] == pytest.approx(2 ** round(16.0 / 8 / math.log(2), 3), rel=1e-3)
    assert values["cluster0_frac"] == pytest.approx(5 / 8)
    assert values["cluster1_frac"] == pytest.approx(3 / 8)
    assert values["cluster0_loss"] == pytest.approx(5.0 / 5 / math.log(2), abs=1e-3)
    assert values["cluster1_loss"] == pytest.approx(11.0 / 3 / math.log(2), abs=1e-3)


def test_named_architectures_override_only_what_they_name(data_bin):
    _, seed, _ = build(data_bin, arch="qrnn_lm_wikitext2_seed")
    assert [layer.hidden_size for layer in seed.decoder.qrnn.layers] == [300, 300, 300, 300]
    V = len(seed.decoder.dictionary)
    assert seed.decoder.adaptive_softmax.cutoffs == [round(0.0667 * V), round(0.2 * V), V]
    # A flag on the command line beats the architecture's value.
    _, wt2, _ = build(data_bin, "--num-layers", "2", "--adaptive-softmax-cutoff", "20,60", arch="qrnn_lm_wikitext2")
    assert len(wt2.decoder.qrnn.layers) == 2 and wt2.decoder.adaptive_softmax.cutoffs[:2] == [20, 60]
    assert [layer.hidden_size for layer in wt2.decoder.qrnn.layers] == [800, 400]  # its own sizes
    assert wt2.decoder.qrnn.between_layers.p == 0.1


@pytest.mark.parametrize("div_value,tied_tails", [("4", [False, False]), ("1", [True, True])])
def test_adaptive_tying_shares_the_embedding_where_dimensions_allow(data_bin, div_value, tied_tails):
    task, tied, _ = build(data_bin, *ADAPTIVE, "--tie-adaptive-weights", "--adaptive-softmax-div-value", div_value)
    _, untied, _ = build(data_bin, *ADAPTIVE, "--adaptive-softmax-div-value", div_value)
    layer, embed = tied.decoder.adaptive_softmax, tied.decoder.embed_tokens
    assert layer.tied_weight is embed.weight and layer.tail_tied == tied_tails
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731  (shared ones once)
    shared = 20 * 16 + sum(hi - lo for (lo, hi), t in zip([(20, 60), (60, len(task.dictionary))], tied_tails) if t) * 16
    assert n_params(untied) - n_params(tied) == shared
    # Output-side gradients reach the shared rows, and probabilities stay normalised.
    tied.eval()
    sample = batch(task)
    lprobs = tied.get_normalized_probs(tied(**sample["net_input"]), log_probs=True)
    torch.testing.assert_close(lprobs.exp().sum(-1), torch.ones(lprobs.shape[:2]), rtol=0, atol=1e-5)
    never_input = torch.tensor([t for t in range(4, 20) if t not in sample["net_input"]["src_tokens"]])
    lprobs[..., never_input].sum().backward()
    assert embed.weight.grad[never_input].abs().sum() > 0


def test_tying_flags_refuse_the_wrong_output_layer(data_bin):
    with pytest.raises(ValueError, match="--tie-adaptive-weights ties an adaptive softmax"):
        build(data_bin, *SMALL_MODEL, "--tie-adaptive-weights")
    with pytest.raises(ValueError, match="use --tie-adaptive-weights instead"):
        build(data_bin, *ADAPTIVE, "--share-input-output-embed")


@pytest.mark.parametrize("output", ["adaptive", "full"])
def test_fairseq_beam_search_scores_equal_a_full_forward(data_bin, output):
    """fairseq's SequenceGenerator decodes incrementally and reorders the QRNN
    state between beams; each generated token's score must be the model's
    log-probability of it given the whole prefix."""
    from fairseq.sequence_generator import SequenceGenerator

    task, model, _ = build(data_bin, *(ADAPTIVE if output == "adaptive" else SMALL_MODEL))
    model.eval()
    d = task.target_dictionary
    prefix = batch(task, bsz=2, tgt_len=3)["net_input"]["src_tokens"]  # B x 3
    sample = {"net_input": {"src_tokens": prefix, "src_lengths": torch.full((2,), 3)}}
    generator = SequenceGenerator([model], d, beam_size=3, max_len_b=8, min_len=8)
    with torch.no_grad():
        hypos = generator.generate([model], sample, prefix_tokens=prefix)
        for b, beams in enumerate(hypos):
            assert len(beams) == 3 and torch.equal(beams[0]["tokens"][:3], prefix[b])
            for hyp in beams:
                tokens = hyp["tokens"]  # ends with eos
                source = torch.cat([tokens.new_tensor([d.eos()]), tokens[:-1]]).unsqueeze(0)
                lprobs = model.get_normalized_probs(model(source), log_probs=True)[0]  # T x V
                expected = lprobs.gather(1, tokens.unsqueeze(1)).squeeze(1)
                torch.testing.assert_close(hyp["positional_scores"], expected, rtol=0, atol=1e-4)


def test_no_output_gate_turns_the_output_gate_off(data_bin):
    def gates(*flags):  # each layer's gate setting and gate count (Z, F and O, or Z and F)
        layers = build(data_bin, *SMALL_MODEL, *flags)[1].decoder.qrnn.layers
        return {(layer.output_gate, layer.linear.out_features // layer.hidden_size) for layer in layers}

    assert gates() == {(True, 3)}  # on by default
    assert gates("--no-output-gate") == {(False, 2)}


def test_other_models_keep_the_cutoffs_they_ignore(data_bin):
    """fairseq's lstm_lm carries a default cutoff string that only adaptive_loss
    uses; the task must not reject it for other criteria."""
    _, model, _ = build(data_bin, "--decoder-embed-dim", "16", "--decoder-hidden-size", "16",
                        "--decoder-out-embed-dim", "16", arch="lstm_lm", criterion="cross_entropy")
    assert model.decoder.adaptive_softmax is None


def test_checkpoint_with_other_word_ids_is_refused(data_bin):
    task, _, _ = build(data_bin, *SMALL_MODEL)
    saved = task.state_dict()
    assert saved["dictionary_symbols"] == task.dictionary.symbols
    task.load_state_dict(saved)  # the same words: fine
    with pytest.raises(ValueError, match="word ids do not match"):
        task.load_state_dict({"dictionary_symbols": list(reversed(task.dictionary.symbols))})


def test_model_checks_the_word_order_it_was_trained_with(data_bin):
    """The dictionary's CRC travels in the state dict, under a key fairseq's EMA
    copies rather than averages."""
    from fairseq_adasoft.models.qrnn_lm import vocabulary_crc

    task, model, _ = build(data_bin, *SMALL_MODEL)
    state = model.state_dict()
    assert int(state["vocab_version"]) == vocabulary_crc(task.dictionary)
    model.load_state_dict(state)
    with pytest.raises(ValueError, match="another word order.*--task language_modeling_freqsorted"):
        model.load_state_dict({**state, "vocab_version": state["vocab_version"] + 1})


def test_auto_cutoffs_through_the_task(tmp_path, data_bin):
    make_corpus(tmp_path / "train.txt", 3000, seed=5, vocab=600)
    preprocess(tmp_path / "bin", tmp_path / "train.txt")
    auto = [*SMALL_MODEL, "--adaptive-softmax-cutoff", "auto"]
    task, model, _ = build(tmp_path / "bin", *auto, "--adaptive-softmax-div-value", "2")
    cutoffs = model.decoder.adaptive_softmax.cutoffs
    assert all(a < b for a, b in zip(cutoffs, cutoffs[1:])) and cutoffs[-1] == len(task.dictionary)
    with pytest.raises(ValueError, match="no cutoffs satisfy the capacity constraints for d=16, div_value=4.0"):
        build(tmp_path / "bin", *auto)  # a 16-wide output leaves a 4-wide tail
    with pytest.raises(ValueError, match="too few for an adaptive softmax"):
        build(data_bin, *SMALL_MODEL, "--adaptive-softmax-cutoff", "auto")


def test_dictionary_missing_the_training_words_is_refused(tiny_corpus, data_bin, tmp_path):
    half = (data_bin / "dict.txt").read_text().splitlines()[:30]  # the 30 most frequent words only
    (tmp_path / "dict.txt").write_text("\n".join(half) + "\n")
    preprocess(tmp_path / "bin", tiny_corpus / "train.txt", "--srcdict", tmp_path / "dict.txt")
    with pytest.raises(ValueError, match=r"% of the training tokens .* are <unk>: the dictionary lacks"):
        build(tmp_path / "bin", *SMALL_MODEL)
    build(tmp_path / "bin", *SMALL_MODEL, "--max-unk-share", "0.9")  # deliberately allowed
