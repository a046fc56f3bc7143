"""Dynamic evaluation through fairseq-eval-lm and the tuner, on a trained checkpoint."""

import subprocess
import sys

import pytest
import torch

from helpers import FREQSORTED, PLUGIN, eval_lm, eval_result, fairseq_cli, saved, train
from fairseq_adasoft import tune
from fairseq_adasoft.logs import WITHOUT_CACHE_RE
from fairseq_adasoft.presets import DYNAMIC_EVAL

pytestmark = pytest.mark.slow

# The checkpoints are scored as trained (FREQSORTED), over the segments dynamic eval reads.
STATIC = [*FREQSORTED, "--stateful-bptt", "--tokens-per-sample", str(DYNAMIC_EVAL["segment"])]
DYNAMIC = [*FREQSORTED, "--stateful-bptt", "--dynamic-eval", "--dynamic-eval-lr", "0.001",
           "--dynamic-eval-decay", "0.01"]
CACHE = ["--neural-cache-size", "40", "--neural-cache-theta", "0.5", "--neural-cache-lambda", "0.3"]


@pytest.fixture(scope="module")
def kept_statistics(tmp_path_factory):
    return tmp_path_factory.mktemp("dynamic") / "stats.pt"


@pytest.fixture(scope="module")
def printed(data_bin, trained_checkpoint, kept_statistics):
    """fairseq-eval-lm's result line on test under each protocol (one run each); the first
    dynamic run keeps its statistics, which "kept" then reads."""
    keep = ["--dynamic-eval-stats-file", str(kept_statistics)]
    runs = {"static": STATIC, "dynamic": DYNAMIC + keep, "kept": DYNAMIC + keep, "cache": STATIC + CACHE,
            "both": DYNAMIC + CACHE, "frozen": DYNAMIC + ["--dynamic-eval-lr", "0", "--dynamic-eval-decay", "0"],
            "frozen_cache": DYNAMIC + ["--dynamic-eval-lr", "0"] + CACHE}
    out = {name: eval_lm(data_bin, trained_checkpoint, *flags)[1] for name, flags in runs.items()}
    assert all(("--dynamic-eval: gradient statistics from" in text) == (name not in ("static", "cache", "kept"))
               for name, text in out.items())
    assert f"gradient statistics kept in {kept_statistics}" in out["dynamic"]
    assert f"gradient statistics read from {kept_statistics}" in out["kept"]
    results = {name: eval_result(text) for name, text in out.items()}
    # A cache's run also prints its pass without the cache: the run without the cache's figure.
    results["both_without_cache"], = WITHOUT_CACHE_RE.findall(out["both"])
    return results


def test_one_pass_gives_dynamic_evaluation_with_and_without_the_cache(printed):
    assert printed["both_without_cache"] == printed["dynamic"]
    assert printed["both"] != printed["dynamic"]


def test_kept_statistics_score_as_gathered_ones(printed):
    assert printed["kept"] == printed["dynamic"]


def test_kept_statistics_of_other_settings_are_refused(data_bin, trained_checkpoint, printed, kept_statistics,
                                                        tmp_path):
    for flags, what in ((["--dynamic-eval-stats-tokens", "7"], "holds statistics of other weights or settings"),
                        (["--dynamic-eval-stats-file", str(tmp_path / "none" / "s.pt")], "does not exist")):
        code, out = eval_lm(data_bin, trained_checkpoint, *DYNAMIC, "--dynamic-eval-stats-file",
                            str(kept_statistics), *flags, check=False)
        assert code != 0 and f"--dynamic-eval-stats-file" in out and what in out, out[-2000:]
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a torch file")
    code, out = eval_lm(data_bin, trained_checkpoint, *DYNAMIC, "--dynamic-eval-stats-file", str(broken), check=False)
    assert code != 0 and "is not a statistics file" in out and broken.read_bytes() == b"not a torch file"


def test_learning_rate_zero_is_the_static_classic_protocol(printed):
    assert printed["frozen"] == printed["static"]
    assert printed["frozen_cache"] == printed["cache"]


def test_adapting_lowers_the_perplexity_alone_and_with_the_cache(printed):
    ppl = {name: float(line[1]) for name, line in printed.items()}
    assert ppl["dynamic"] < ppl["static"] and ppl["both"] < ppl["cache"], ppl


def test_a_checkpoint_saved_before_dynamic_evaluation_existed(data_bin, trained_checkpoint, printed, tmp_path):
    state = saved(trained_checkpoint)
    task_cfg, model_cfg = state["cfg"]["task"], state["cfg"]["model"]
    for key in [k for k in task_cfg if k.startswith("dynamic_eval")]:
        del task_cfg[key]
    # Under a named variant's --arch, fairseq fills no dataclass default into a saved config.
    model_cfg["_name"] = model_cfg["arch"] = "qrnn_lm_wikitext2_seed"
    for key in ("qrnn_kernel", "adaptive_input", "adaptive_input_factor", "adaptive_input_cutoff", "tie_adaptive_proj"):
        del model_cfg[key]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    _, out = eval_lm(data_bin, old, *DYNAMIC)
    assert eval_result(out) == printed["dynamic"]


def test_refused_where_it_cannot_work(data_bin, trained_checkpoint, tmp_path):
    code, out = train(data_bin, "--max-update", "2", "--save-dir", tmp_path / "t", "--stateful-bptt", "--dynamic-eval",
                      check=False)
    assert code != 0 and "--dynamic-eval is an evaluation option" in out
    code, out = eval_lm(data_bin, trained_checkpoint, *DYNAMIC, "--softmax-batch", "4", check=False)
    assert code != 0 and "drop --softmax-batch" in out
    code, out = eval_lm(data_bin, trained_checkpoint, *FREQSORTED, "--dynamic-eval", check=False)
    assert code != 0 and "--dynamic-eval adapts the model along contiguous streams" in out
    code, out = eval_lm(data_bin, trained_checkpoint, *DYNAMIC, "--dynamic-eval-stats-tokens", "0", check=False)
    assert code != 0 and "--dynamic-eval-stats-tokens must be >= 1" in out


def test_tuner_scores_as_eval_lm_does(data_bin, trained_checkpoint, tmp_path):
    save = tmp_path / "ckpt"
    save.mkdir()
    (save / "checkpoint_best.pt").symlink_to(trained_checkpoint)
    model, batches = tune.load(str(data_bin), str(save / "checkpoint_best.pt"), "valid", 3, flags=["--dynamic-eval"])
    tuned = tune.tune_dynamic_eval(model, batches, 10 ** 9, lrs=(0.001,), decays=(0.01, 0.0))
    _, out = eval_lm(data_bin, trained_checkpoint, *DYNAMIC, "--batch-size", "3", subset="valid")
    _, static = eval_lm(data_bin, trained_checkpoint, *STATIC, "--batch-size", "3", subset="valid")
    assert tuned["grid"][0]["perplexity"] == pytest.approx(2 ** float(eval_result(out)[0]), rel=2e-4)
    assert tuned["without_dynamic_eval"] == pytest.approx(2 ** float(eval_result(static)[0]), rel=2e-4)
    assert tuned["best"] in tuned["grid"] and len(tuned["grid"]) == 2


def test_tuner_refuses_the_test_split(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["tune", "dynamic-eval", "--data", str(tmp_path), "--save-dir", str(tmp_path),
                                      "--subset", "test"])
    with pytest.raises(ValueError, match="--subset test: tune on a validation split"):
        tune.main()


def test_a_mean_loss_past_floats_range_scores_as_a_diverged_setting():
    class Diverged(torch.nn.Module):  # scores every word -1,000 nats: exp(1,000) is past float's range
        class decoder:
            dictionary = type("Dictionary", (), {"pad": staticmethod(lambda: 1)})

            @staticmethod
            def get_normalized_probs(net_output, log_probs, sample):
                return torch.full((*sample["target"].shape, 5), -1000.0)

        def forward(self, **net_input):
            return None

    sample = {"net_input": {}, "target": torch.tensor([[2, 3]])}
    assert tune.score(Diverged(), [sample], 10)["perplexity"] == float("inf")


def test_an_empty_split_is_named_not_divided_by():
    model = type("Model", (), {"decoder": None})()
    with pytest.raises(ValueError, match="--subset valid: the split gave no tokens to score"):
        tune.score(model, [], 10, "valid")


def test_interactive_generation_is_refused_before_the_statistics_are_gathered(data_bin, trained_checkpoint):
    """fairseq-interactive stops at the first decoding step, without the pass over the
    training split that dynamic evaluation's statistics cost (it used to make it first)."""
    proc = subprocess.run([fairseq_cli("fairseq-interactive"), data_bin, "--user-dir", PLUGIN,
                           "--path", trained_checkpoint, *DYNAMIC, "--cpu"],
                          input="w000 w001\n", capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "--dynamic-eval scores given text (fairseq-eval-lm); it cannot generate" in out
    assert "gradient statistics" not in out
