"""Recipe behaviour that needs no training: data discovery and verification."""

import os

import pytest

from conftest import ROOT, run

PREPARE = os.path.join(ROOT, "recipes", "wikitext2", "prepare.sh")


def test_prepare_names_an_incomplete_wikitext2_dir(tmp_path):
    code, out = run(["bash", PREPARE], env={"WIKITEXT2_DIR": str(tmp_path), "DATA_BIN": str(tmp_path / "bin")},
                    check=False)
    assert code != 0
    assert f"WIKITEXT2_DIR={tmp_path} lacks wiki.{{train,valid,test}}.tokens" in out
    assert not (tmp_path / "bin").exists()


def test_prepare_refuses_files_with_the_wrong_token_count(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"wiki.{split}.tokens").write_text("not wikitext\n")
    code, out = run(["bash", PREPARE], env={"WIKITEXT2_DIR": str(tmp_path), "DATA_BIN": str(tmp_path / "bin")},
                    check=False)
    assert code != 0
    assert "has 3 tokens, WikiText-2 has 2,088,628" in out
    assert not (tmp_path / "bin").exists()


def test_prepare_skips_prepared_data(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / ".prepared").write_text("raw=somewhere dict_size=33276\n")
    _, out = run(["bash", PREPARE], env={"DATA_BIN": str(tmp_path / "bin")})
    assert "already prepared" in out


@pytest.mark.slow
def test_sentencepiece_recipe_trains_through_the_resort(tiny_corpus, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for split in ("train", "valid", "test"):
        (raw / f"wiki.{split}.tokens").write_text((tiny_corpus / f"{split}.txt").read_text())
    env = {"RAW_DIR": str(raw), "SPM_VOCAB": "150", "SPM_DIR": str(tmp_path / "spm"),
           "DATA_BIN": str(tmp_path / "bin"), "SAVE_DIR": str(tmp_path / "ckpt"),
           "QUICK": "1", "MAX_UPDATE": "3", "BATCH_SIZE": "4", "TOKENS_PER_SAMPLE": "16"}
    # Extra arguments go on to fairseq-train; no data-loading threads in a 3-update run
    # (see TRAIN in test_end_to_end.py).
    _, out = run(["bash", os.path.join(ROOT, "recipes", "wikitext2", "spm.sh"),
                  "--num-workers", "0", "--data-buffer-size", "0"], env=env)
    assert "not in training-frequency order: re-sorted" in out
    assert (tmp_path / "ckpt" / "checkpoint_last.pt").exists()
    # The user's files are untouched: dict.txt keeps sentencepiece's order.
    assert (tmp_path / "bin" / "dict.txt").read_text() == (tmp_path / "spm" / "dict.txt").read_text()
