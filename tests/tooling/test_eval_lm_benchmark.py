"""benchmarks.eval_lm's and benchmarks.before_after's parts, for real: the Zipf corpus's dictionary size after
fairseq-preprocess, the parsing of eval-lm's result lines, the per-child peak
RSS, the baseline worktree and the check that --user-dir runs its code; and
(slow) the whole benchmark at --quick sizes."""

import json
import os
import sys

import pytest

from benchmarks import before_after, common, eval_lm, zipf_corpus

MB = 2**20
PARENT_MB, CHILD_MB, SMALL_CHILD_MB = 300, 200, 100
# Lines as fairseq-eval-lm printed them in a WikiText-2 run of this benchmark.
CAPTURED = """INFO:fairseq_cli.eval_lm:Evaluated 245,569 tokens in 156.4s (1569.76 tokens/s)
INFO:fairseq_cli.eval_lm:Loss (base 2): 10.0739, Perplexity: 1077.85
"""
TOUCH = "b = bytearray({n} * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"  # resident, not just mapped


def test_zipf_corpus_dictionary_has_exactly_v_entries_and_is_reused(tmp_path):
    sizes = {"train": 300, "valid": 40, "test": 60}
    data_bin = zipf_corpus.prepare(str(tmp_path), vocab=64, sizes=sizes, workers=1)
    assert zipf_corpus.dictionary_size(data_bin) == 64
    lines = lambda words: -(-words // zipf_corpus.LINE_TOKENS)  # noqa: E731  (one </s> per line)
    train_words = sizes["train"] + 64 - zipf_corpus.N_SPECIAL  # one of every type, then the samples
    assert zipf_corpus.split_tokens(data_bin) == {
        "train": train_words + lines(train_words), "valid": 40 + lines(40), "test": 60 + lines(60)}
    stamp = os.path.getmtime(os.path.join(data_bin, "dict.txt"))
    assert zipf_corpus.prepare(str(tmp_path), vocab=64, sizes=sizes, workers=1) == data_bin
    assert os.path.getmtime(os.path.join(data_bin, "dict.txt")) == stamp  # same settings: not rebuilt


def test_zipf_corpus_refuses_a_vocabulary_fairseq_would_pad(tmp_path):
    with pytest.raises(ValueError, match="--zipf-vocab must be a multiple of 8"):
        zipf_corpus.write_text(str(tmp_path), 61, {"train": 10, "valid": 1, "test": 1})


def test_eval_log_parsing_reads_the_captured_lines_as_printed():
    r = eval_lm.parse_eval_log("INFO:fairseq_cli.eval_lm:loading model(s)\n" + CAPTURED)
    assert r == {"tokens": 245_569, "eval_s": 156.4, "words_per_s": 1569.76, "loss_base2": 10.0739,
                 "perplexity": 1077.85, "printed": {"loss": "10.0739", "perplexity": "1077.85"}}
    with pytest.raises(ValueError, match="no fairseq-eval-lm result"):
        eval_lm.parse_eval_log(CAPTURED.splitlines()[0])


def test_peak_rss_is_each_childs_own_not_this_processs(tmp_path):
    parent = bytearray(PARENT_MB * MB)  # this process's peak: a child exec'd from it would start there
    parent[::4096] = b"\1" * len(parent[::4096])
    log = str(tmp_path / "child.log")
    big = before_after.run_child([sys.executable, "-c", TOUCH.format(n=CHILD_MB)], log)
    small = before_after.run_child([sys.executable, "-c", "pass"], log)
    failed = before_after.run_child([sys.executable, "-c", "raise SystemExit(3)"], log)
    assert big["returncode"] == small["returncode"] == 0 and failed["returncode"] == 3
    assert big["peak_rss_mb"] >= CHILD_MB
    assert small["peak_rss_mb"] < SMALL_CHILD_MB  # neither the parent's nor the previous child's
    del parent


def test_baseline_worktree_runs_its_own_code_and_is_removed():
    head = before_after.git("rev-parse", "HEAD")
    with before_after.baseline_worktree("HEAD") as (plugin, sha):
        tree = os.path.dirname(plugin)
        assert sha == head and os.path.isfile(os.path.join(plugin, "__init__.py"))
        files = before_after.plugin_files(plugin)
        assert "fairseq_adasoft.models.qrnn_lm" in files and "fairseq_adasoft.modules.adaptive_softmax" in files
        assert all(f.startswith(os.path.realpath(plugin) + os.sep) for f in files.values() if f)
        assert before_after.check_plugin(plugin) == len(files)
        assert before_after.code_digest(plugin) == before_after.code_digest(plugin)
    assert not os.path.exists(tree)
    assert tree not in before_after.git("worktree", "list")


def test_plugin_check_fails_when_the_code_comes_from_elsewhere(monkeypatch, tmp_path):
    elsewhere = os.path.join(common.PLUGIN_DIR, "__init__.py")  # the pip-installed checkout's
    monkeypatch.setattr(before_after, "plugin_files", lambda d: {"fairseq_adasoft": elsewhere})
    with pytest.raises(RuntimeError, match="loads code from elsewhere"):
        before_after.check_plugin(str(tmp_path / "fairseq_adasoft"))


def test_a_bad_revision_or_flag_is_named():
    with pytest.raises(ValueError, match="--baseline-rev 'no-such-rev'"):
        with before_after.baseline_worktree("no-such-rev"):
            pass
    with pytest.raises(ValueError, match="--variants takes a comma-separated subset of a,b,c,d"):
        eval_lm.parse_args(["--variants", "a,x"])
    with pytest.raises(ValueError, match="--protocols"):
        eval_lm.parse_args(["--protocols", "stream"])


def run_record(words_per_s, rss, ppl="100.00"):
    return {"words_per_s": words_per_s, "peak_rss_mb": rss, "printed": {"loss": "6.6439", "perplexity": ppl}}


def test_derived_ratios_and_goals():
    results = {
        "wikitext2": {"a": {"blocks": run_record(1000, 1800), "classic": run_record(200, 900)},
                      "b": {"blocks": run_record(4000, 900), "classic": run_record(300, 900, "99.99")},
                      "c": {"blocks": run_record(3000, 800)}},
        "zipf": {"a": {"blocks": run_record(100, 8000)}, "b": {"blocks": run_record(400, 1000)}},
    }
    derived = eval_lm.derive(results)
    assert derived["wikitext2"]["speedup_b_vs_a"] == {"blocks": 4.0, "classic": 1.5}
    assert derived["wikitext2"]["perplexity_equal"] == {"blocks": True, "classic": False}
    assert derived["wikitext2"]["b_vs_c"] == {"blocks": 1.333} and derived["wikitext2"]["b_vs_d"] == {"blocks": None}
    assert derived["zipf"]["memory_ratio_a_vs_b"] == {"blocks": 8.0}
    assert [g["met"] for g in eval_lm.goals(derived)] == [True, True, False, True, False]
    assert all(g["met"] is None for g in eval_lm.goals({}))


@pytest.mark.slow
def test_quick_benchmark_runs_the_variants_and_writes_no_results_file(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", str(tmp_path / "results"))
    # (a) against (b) where --softmax-batch applies: the other runs repeat these paths at the suite's cost.
    payload = eval_lm.main(["--quick", "--only", "zipf", "--variants", "a,b", "--protocols", "blocks",
                            "--work-dir", str(tmp_path / "work")])
    assert not os.path.exists(tmp_path / "results")
    assert len(payload["baseline"]["sha"]) == 40
    assert all(v["modules_checked"] > 0 for v in payload["variants"].values())
    for corpus, runs in payload["results"].items():
        test_tokens = payload["corpora"][corpus]["tokens"]["test"]
        for variant, protocols in runs.items():
            assert set(protocols) == {"blocks"}
            for r in protocols.values():
                assert r["tokens"] == test_tokens and r["words_per_s"] > 0 and r["peak_rss_mb"] > 0
    assert set(payload["results"]) == {"zipf"} and set(payload["results"]["zipf"]) == set("ab")
    assert "--softmax-batch" in payload["results"]["zipf"]["a"]["blocks"]["command"]
    assert all(all(d["perplexity_equal"].values()) for d in payload["derived"].values())
    json.dumps(payload)  # what write_result would write
