"""fairseq's own tools on a trained qrnn_lm: the hub's sample and score,
fairseq-interactive, --sample-break-mode eos, and checkpoint averaging."""

import math
import re

import numpy as np
import pytest
import torch

from helpers import FREQSORTED, PLUGIN, TRAIN, eval_lm, eval_result, fairseq_cli, own_test_nll, run, saved, train, train_losses
import fairseq_adasoft  # noqa: F401  (installs the numpy shim, registers the task)
from fairseq_adasoft import average_checkpoints
from fairseq_adasoft.models.qrnn_lm import QRNNLanguageModel
from fairseq_adasoft.tasks.language_modeling_freqsorted import FreqSortedLanguageModelingTask

pytestmark = pytest.mark.slow

UPDATE_CHECKPOINTS = ["checkpoint_2_30.pt", "checkpoint_2_20.pt", "checkpoint_1_10.pt"]  # newest first


@pytest.fixture(scope="module")
def save_dir(data_bin, tmp_path_factory):
    """One tiny run, with a checkpoint every 10 updates (the averaging tests' inputs)."""
    save = tmp_path_factory.mktemp("fairseq-tools")
    train(data_bin, "--max-update", "30", "--save-interval-updates", "10", "--save-dir", save)
    assert all((save / name).exists() for name in UPDATE_CHECKPOINTS)
    return save


@pytest.fixture(scope="module")
def lm(save_dir, data_bin):
    return QRNNLanguageModel.from_pretrained(str(save_dir), checkpoint_file="checkpoint_last.pt",
                                             data_name_or_path=str(data_bin)).eval()


def forward_lprobs(lm, tokens):
    """log p of every token of ``tokens`` (ending in eos) from one forward pass after an eos."""
    model = lm.models[0]
    source = torch.cat([tokens.new_tensor([lm.task.dictionary.eos()]), tokens[:-1]]).unsqueeze(0)
    with torch.no_grad():
        return model.get_normalized_probs(model(source), log_probs=True)[0]  # N x V


def test_numpy_compat_shim():
    # fairseq 0.12's TokenBlockDataset asks for np.compat.long (numpy 1.x: int).
    assert np.compat.long is int


def test_hub_loads_the_freqsorted_task_and_vocabulary(lm, save_dir):
    state = saved(save_dir / "checkpoint_last.pt")
    assert isinstance(lm.task, FreqSortedLanguageModelingTask)
    assert lm.task.dictionary.symbols == state["task_state"]["dictionary_symbols"]


def test_hub_score_equals_a_direct_forward(lm):
    sentence = "w000 w001 w003 w000 w005"
    scored = lm.score(sentence)
    tokens = lm.encode(sentence)  # the words, then eos
    # The hub scores each word after an eos and the words before it, not the closing eos.
    assert torch.equal(scored["tokens"], tokens[:-1]) and tokens[-1] == lm.task.dictionary.eos()
    own = forward_lprobs(lm, tokens).gather(1, tokens.unsqueeze(1)).squeeze(1)[:-1]
    torch.testing.assert_close(scored["positional_scores"], own, rtol=0, atol=1e-5)
    assert scored["score"].item() == pytest.approx(own.mean().item(), abs=1e-5)


def test_hub_greedy_sample_is_the_argmax_continuation(lm):
    d = lm.task.dictionary
    out = lm.sample("w000 w001", beam=1, sampling=True, sampling_topk=1, min_len=8, max_len_b=8)
    words = out.split()
    assert len(words) == 8 and words[:2] == ["w000", "w001"]
    tokens = lm.encode(out)
    lprobs = forward_lprobs(lm, tokens)
    # The generator never emits pad, nor eos before min_len.
    lprobs[:, d.pad()] = lprobs[:, d.eos()] = float("-inf")
    assert tokens[2:-1].tolist() == lprobs[1:-2].argmax(-1).tolist()


def test_hub_topk_sample_draws_from_the_top_k(lm):
    d = lm.task.dictionary
    k, drawn = 5, set()
    for seed in range(4):
        torch.manual_seed(seed)
        out = lm.sample("w000", beam=1, sampling=True, sampling_topk=k, min_len=10, max_len_b=10)
        tokens = lm.encode(out)
        assert len(out.split()) == 10
        lprobs = forward_lprobs(lm, tokens)
        lprobs[:, d.pad()] = lprobs[:, d.eos()] = float("-inf")
        topk = lprobs[:-2].topk(k, dim=-1).indices  # the choices at each sampled position
        for step, token in enumerate(tokens[1:-1].tolist()):
            assert token in topk[step].tolist(), (out, step)
        drawn.add(out)
    assert len(drawn) > 1  # top-5 sampling is not greedy decoding


def test_interactive_continues_each_line_like_the_hub(lm, save_dir, data_bin, tmp_path):
    prefixes = ["w000 w001", "w005"]
    (tmp_path / "prefixes.txt").write_text("\n".join(prefixes) + "\n")
    _, out = run([fairseq_cli("fairseq-interactive"), data_bin, "--user-dir", PLUGIN,
                  *FREQSORTED, "--path", save_dir / "checkpoint_last.pt", "--cpu",
                  "--beam", "1", "--min-len", "6", "--max-len-b", "6", "--input", tmp_path / "prefixes.txt"])
    hypotheses = [line.split("\t") for line in out.splitlines() if line.startswith("H-")]
    assert len(hypotheses) == 2
    for (tag, score, text), prefix in zip(hypotheses, prefixes):
        assert text == lm.sample(prefix, beam=1, min_len=6, max_len_b=6), tag
        assert len(text.split()) == 6 and text.startswith(prefix)
        assert math.isfinite(float(score))


def test_train_with_sample_break_mode_eos(data_bin, tmp_path):
    save = tmp_path / "eos"
    _, out = train(data_bin, "--sample-break-mode", "eos", "--max-update", "20", "--save-dir", save)
    losses = train_losses(out)
    assert len(losses) == 4 and all(map(math.isfinite, losses)) and losses[-1] < losses[0], losses
    state = saved(save / "checkpoint_last.pt")
    assert state["cfg"]["task"]["sample_break_mode"] == "eos"
    assert state["optimizer_history"][-1]["num_updates"] == 20


def test_average_is_the_mean_and_evaluates(save_dir, data_bin, tiny_corpus, tmp_path):
    averaged = tmp_path / "avg.pt"
    run([fairseq_cli("python"), "-m", "fairseq_adasoft.average_checkpoints", "--inputs", save_dir,
         "--num-update-checkpoints", "2", "--output", averaged])
    newest = [saved(save_dir / name) for name in UPDATE_CHECKPOINTS[:2]]
    avg = saved(averaged)
    assert avg["model"].keys() == newest[0]["model"].keys()
    for key, value in avg["model"].items():
        if value.is_floating_point():
            mean = (newest[0]["model"][key].double() + newest[1]["model"][key].double()) / 2
            torch.testing.assert_close(value, mean.float(), rtol=0, atol=1e-7)
            assert not torch.equal(value, newest[0]["model"][key]), key
        else:
            assert torch.equal(value, newest[0]["model"][key]), key
    assert avg["cfg"] == newest[0]["cfg"] and avg["task_state"] == newest[0]["task_state"]

    _, out = eval_lm(data_bin, averaged, "--tokens-per-sample", "4096", "--batch-size", "1")
    loss_base2, _ = map(float, eval_result(out))
    nll, ntokens = own_test_nll(averaged, data_bin, tiny_corpus / "test.txt")
    assert f"Evaluated {ntokens:,} tokens" in out
    assert math.exp(nll) == pytest.approx(2 ** loss_base2, rel=1e-4)


def test_average_of_listed_files_and_upper_bound(save_dir, tmp_path):
    listed, bounded = tmp_path / "listed.pt", tmp_path / "bounded.pt"
    average_checkpoints.main(["--inputs", *(str(save_dir / n) for n in UPDATE_CHECKPOINTS[1:]), "--output", str(listed)])
    average_checkpoints.main(["--inputs", str(save_dir), "--num-update-checkpoints", "2",
                              "--checkpoint-upper-bound", "20", "--output", str(bounded)])
    a = saved(listed)["model"]
    b = saved(bounded)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_average_bad_inputs_name_the_file(save_dir, tmp_path):
    good = str(save_dir / "checkpoint_2_30.pt")
    out = str(tmp_path / "avg.pt")
    main = average_checkpoints.main
    missing = str(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=re.escape(f"checkpoint '{missing}' not found")):
        main(["--inputs", good, missing, "--output", out])

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((save_dir / "checkpoint_2_30.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match=re.escape(f"checkpoint '{truncated}' cannot be read")):
        main(["--inputs", good, str(truncated), "--output", out])

    state = saved(good)
    wider = dict(state, model=dict(state["model"], **{
        "decoder.embed_tokens.weight": torch.zeros(128, 40)}))
    torch.save(wider, tmp_path / "wider.pt")
    with pytest.raises(ValueError, match=r"wider.pt' is of a different model .*decoder.embed_tokens.weight"):
        main(["--inputs", good, str(tmp_path / "wider.pt"), "--output", out])

    symbols = state["task_state"]["dictionary_symbols"]
    reordered = dict(state, task_state={"dictionary_symbols": symbols[:4] + [symbols[5], symbols[4]] + symbols[6:]})
    torch.save(reordered, tmp_path / "reordered.pt")
    with pytest.raises(ValueError, match="reordered.pt' orders its vocabulary unlike"):
        main(["--inputs", good, str(tmp_path / "reordered.pt"), "--output", out])

    with pytest.raises(ValueError, match="--num-update-checkpoints 9: .* holds only 3"):
        main(["--inputs", str(save_dir), "--num-update-checkpoints", "9", "--output", out])
    assert not (tmp_path / "avg.pt").exists()


def test_eval_lm_scores_fairseqs_own_lstm_lm(data_bin, tmp_path):
    """lstm_lm saves its config as an argparse.Namespace, which torch's weights-only load refuses
    and the plugin's config upgrade must read: fairseq-eval-lm --user-dir scores it all the same."""
    flags = [flag for flag in TRAIN if flag not in ("adaptive_softmax",)]
    flags[flags.index("--criterion") + 1:flags.index("--criterion") + 1] = ["adaptive_loss"]
    run([fairseq_cli("fairseq-train"), data_bin, "--user-dir", PLUGIN, "--arch", "lstm_lm", *flags,
         "--decoder-layers", "1", "--decoder-embed-dim", "16", "--decoder-hidden-size", "16",
         "--decoder-out-embed-dim", "16", "--ddp-backend", "legacy_ddp", "--max-update", "20",
         "--save-dir", tmp_path, "--no-epoch-checkpoints"])
    state = saved(tmp_path / "checkpoint_last.pt")
    assert type(state["cfg"]["model"]).__name__ == "Namespace"  # the case this covers
    _, out = eval_lm(data_bin, tmp_path / "checkpoint_last.pt", *FREQSORTED, "--tokens-per-sample", "32")
    _, ppl = eval_result(out)
    assert float(ppl) < len(state["task_state"]["dictionary_symbols"])  # trained: better than uniform
