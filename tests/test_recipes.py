"""Recipe behaviour that needs no training: data discovery and verification."""

import os

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
