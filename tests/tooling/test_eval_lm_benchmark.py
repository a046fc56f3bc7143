"""benchmarks.eval_lm's parts, for real: the Zipf corpus's dictionary size after
fairseq-preprocess, the parsing of eval-lm's result lines, the per-child peak
RSS (benchmarks.harness.run_child), the baseline worktree, the derived metrics
and goals; and (slow) the whole benchmark at --quick sizes."""

import os
import subprocess
import sys

import pytest

from benchmarks import eval_lm, harness, zipf_corpus

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
    assert r == {"tokens": 245_569, "words_per_s": 1569.76, "loss": "10.0739", "perplexity": "1077.85"}
    with pytest.raises(ValueError, match="no fairseq-eval-lm result"):
        eval_lm.parse_eval_log(CAPTURED.splitlines()[0])


def test_peak_rss_is_each_childs_own_not_this_processs(tmp_path):
    parent = bytearray(PARENT_MB * MB)  # this process's peak: a child exec'd from it would start there
    parent[::4096] = b"\1" * len(parent[::4096])
    log = str(tmp_path / "child.log")
    big = harness.run_child([sys.executable, "-c", TOUCH.format(n=CHILD_MB)], log)
    small = harness.run_child([sys.executable, "-c", "print('done')"], log)
    failed = harness.run_child([sys.executable, "-c", "raise SystemExit(3)"], log)
    assert big["returncode"] == small["returncode"] == 0 and failed["returncode"] == 3
    assert big["peak_rss_mb"] >= CHILD_MB
    assert small["peak_rss_mb"] < SMALL_CHILD_MB  # neither the parent's nor the previous child's
    assert small["text"] == "done\n"
    del parent


def test_the_baseline_runs_from_a_worktree_of_its_revision(monkeypatch):
    monkeypatch.setattr(eval_lm, "BASELINE_REV", "HEAD")
    eval_lm.plugin.cache_clear()
    try:
        plugin = eval_lm.plugin("a")  # removed at exit
        tree = os.path.dirname(plugin)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tree, capture_output=True, text=True).stdout
        assert head == subprocess.run(["git", "rev-parse", "HEAD"], cwd=harness.ROOT, capture_output=True, text=True).stdout
        assert os.path.isfile(os.path.join(plugin, "models", "qrnn_lm.py")) and plugin != harness.PLUGIN_DIR
        assert eval_lm.plugin("b") == harness.PLUGIN_DIR
        monkeypatch.setattr(eval_lm, "BASELINE_REV", "no-such-rev")
        eval_lm.plugin.cache_clear()
        with pytest.raises(ValueError, match="--baseline-rev 'no-such-rev'"):
            eval_lm.plugin("a")
    finally:
        eval_lm.plugin.cache_clear()


def case(corpus, protocol, variant, words_per_s, rss, ppl="100.00"):
    return {"params": dict(corpus=corpus, protocol=protocol, variant=variant),
            "metrics": {"words_per_s": words_per_s, "peak_rss_mb": rss, "perplexity": ppl, "loss": "6.6439"}}


def test_derived_ratios_and_goals():
    cases = [case("wikitext2", "blocks", "a", 1000, 1800), case("wikitext2", "blocks", "b", 4000, 900),
             case("wikitext2", "blocks", "c", 3000, 800), case("wikitext2", "classic", "a", 200, 900),
             case("wikitext2", "classic", "b", 300, 900, "99.99"), case("zipf", "blocks", "a", 100, 8000),
             case("zipf", "blocks", "b", 400, 1000)]
    judged = eval_lm.goals(cases)
    b = {(c["params"]["corpus"], c["params"]["protocol"]): c["metrics"] for c in cases if c["params"]["variant"] == "b"}
    assert b["wikitext2", "blocks"]["b_over_a"] == 4.0 and b["wikitext2", "classic"]["b_over_a"] == 1.5
    assert b["wikitext2", "blocks"]["same_as_a"] and not b["wikitext2", "classic"]["same_as_a"]
    assert b["zipf", "blocks"]["a_over_b_peak_rss"] == 8.0
    assert [g["met"] for g in judged] == [True, True, False, True, False]
    assert judged[1]["value"] == pytest.approx(4 / 3) and judged[4]["value"] == pytest.approx(2 / 3)
    assert not any(g["met"] for g in eval_lm.goals([]))


@pytest.mark.slow
def test_quick_benchmark_runs_a_and_b_and_writes_no_results_file(tmp_path):
    # A child process: (a)'s worktree goes at its exit. (a) against (b) where --softmax-batch applies.
    env = dict(os.environ, BENCHMARK_RESULTS_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "benchmarks.eval_lm", "--quick"], cwd=harness.ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "valid results file (not kept)" in r.stdout and list(tmp_path.iterdir()) == []
    assert "met: (a) and (b) print the same loss and perplexity" in r.stdout
    assert r.stdout.count("[1/1] {'corpus': 'zipf'") == 3  # (a) and (b) at blocks, (b) at classic_cache
