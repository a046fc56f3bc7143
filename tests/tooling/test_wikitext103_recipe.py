"""recipes/wikitext103 end to end through the real tools, on a generated
corpus with a large vocabulary packed as the official archive and "downloaded"
from a file:// URL: prepare checks the counts and binarizes, train.sh trains
adaptive input tied to the adaptive softmax, eval.sh scores both protocols,
and run.sh records them."""

import json
import os
import zipfile

import pytest
import torch

from helpers import ROOT, make_corpus, run, small_model

pytestmark = pytest.mark.slow

RECIPE = os.path.join(ROOT, "recipes", "wikitext103")
VOCAB = 5000  # word types in the generator; the 1,500 training lines use a few thousand
SMALL = [*small_model(dropout=None), "--adaptive-softmax-cutoff", "0.05,0.2", "--num-workers", "0",
         "--data-buffer-size", "0"]


def official_layout_archive(tmp_path):
    """wikitext-103-v1.zip's layout (wikitext-103/wiki.{split}.tokens) and each split's token count."""
    src = tmp_path / "src"
    src.mkdir()
    counts, archive = {}, tmp_path / "wikitext-103-v1.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for split, lines, seed in (("train", 1500, 1), ("valid", 60, 2), ("test", 60, 3)):
            path = src / f"wiki.{split}.tokens"
            make_corpus(path, lines, seed, vocab=VOCAB)
            counts[split] = sum(len(line.split()) + 1 for line in path.read_text().splitlines())
            z.write(path, f"wikitext-103/wiki.{split}.tokens")
    return archive, counts


def test_wikitext103_recipe_runs_end_to_end_from_a_local_archive(tmp_path):
    archive, counts = official_layout_archive(tmp_path)
    env = {"WIKITEXT_URL": archive.as_uri(), "DOWNLOAD_DIR": str(tmp_path / "download"),
           "EXPECTED_TOKENS": ",".join(f"{k}={v}" for k, v in counts.items()),
           "DATA_BIN": str(tmp_path / "bin"), "CKPT_ROOT": str(tmp_path / "ckpt"),
           "BENCHMARK_RESULTS_DIR": str(tmp_path / "results"), "QUICK": "1", "MAX_UPDATE": "6",
           "BATCH_SIZE": "4", "TOKENS_PER_SAMPLE": "16"}
    _, out = run(["bash", os.path.join(RECIPE, "run.sh"), *SMALL], env=env)
    assert f"prepare: downloading {archive.as_uri()}" in out
    assert f"prepare: train: {counts['train']:,} tokens, as expected" in out
    vocab_size = len((tmp_path / "bin" / "dict.txt").read_text().splitlines())
    assert vocab_size > 1500

    result = json.loads((tmp_path / "results" / "wikitext103_quick.json").read_text())
    save_dir = tmp_path / "ckpt" / "wikitext103_quick"
    evals = {(c["params"]["protocol"], c["params"]["split"]): c["metrics"] for c in result["cases"]
             if c["params"]["phase"] == "eval"}
    assert set(evals) == {(p, s) for p in ("blocks", "classic") for s in ("valid", "test")} and result["goals"] == []
    for protocol, suffix in (("blocks", ""), ("classic", "_classic")):
        for split in ("valid", "test"):
            assert evals[protocol, split]["perplexity"] > 1
            assert f"Evaluated {counts[split]:,} tokens" in (save_dir / f"eval_{split}{suffix}.log").read_text()
    assert "33.0 test perplexity" in result["note"] and "published" in result["note"]
    state = torch.load(save_dir / "checkpoint_best.pt", weights_only=False)
    cfg = state["cfg"]["model"]
    assert cfg["_name"] == "qrnn_lm_wikitext103" and cfg["adaptive_input"] and cfg["tie_adaptive_weights"]
    assert not cfg["tie_adaptive_proj"]  # the tails keep their own projections
    assert cfg["hidden_size"] == 48 and cfg["adaptive_input_factor"] == cfg["adaptive_softmax_div_value"] == 4
    assert any(k.startswith("decoder.embed_tokens.embeddings.2") for k in state["model"])

    # Prepared data is not prepared again (train.sh's and eval.sh's skips: tests/tooling/test_recipes.py).
    assert "already prepared" in run(["bash", os.path.join(RECIPE, "prepare.sh")], env=env)[1]
