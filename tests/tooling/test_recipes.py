"""The recipes: data discovery and verification without training, and (slow) whole recipes on the tiny corpus."""

import json
import os

import pytest
import torch

from helpers import ROOT, run
from benchmarks import wikitext2
from fairseq_adasoft import provenance
from fairseq_adasoft.logs import json_records

PREPARE = os.path.join(ROOT, "recipes", "wikitext2", "prepare.sh")
TRAIN_SH = os.path.join(ROOT, "recipes", "wikitext2", "train.sh")


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


@pytest.mark.parametrize("split_files, error", [
    ((), "no training split at {train}.{{bin,idx}}"),
    (("train.bin", "train.idx"), "the training split {train} is empty"),
])
def test_train_names_a_data_bin_without_a_usable_train_split(tmp_path, split_files, error):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "dict.txt").write_text("w000 5\n")
    for name in split_files:
        (tmp_path / "bin" / name).write_bytes(b"")
    code, out = run(["bash", TRAIN_SH], env={"DATA_BIN": str(tmp_path / "bin"), "SAVE_DIR": str(tmp_path / "ckpt")},
                    check=False)
    assert code != 0
    assert "train: " + error.format(train=tmp_path / "bin" / "train") in out
    assert f"DATA_BIN={tmp_path / 'bin'} must be a fairseq-preprocess --destdir with a train split" in out
    assert "Traceback" not in out
    assert not (tmp_path / "ckpt").exists()


def test_train_on_several_machines_names_what_is_missing(data_bin, tmp_path):
    env = {"DATA_BIN": str(data_bin), "SAVE_DIR": str(tmp_path / "ckpt"), "QUICK": "1", "NNODES": "2",
           "MASTER_ADDR": "127.0.0.1", "CUDA_DEVICES": "0"}
    code, out = run(["bash", TRAIN_SH], env=env, check=False)
    assert code != 0 and "NODE_RANK: set NODE_RANK, 0 on MASTER_ADDR" in out
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.slow
def test_train_sizes_its_epochs_from_the_data_bin(tiny_corpus, data_bin, tmp_path):
    """EPOCHS=2 is two passes over DATA_BIN's own train split, not WikiText-2's,
    and the lr schedule ends with them."""
    lines = (tiny_corpus / "train.txt").read_text().splitlines()
    tokens = sum(len(line.split()) + 1 for line in lines)  # fairseq-preprocess adds one end-of-line token per line
    batch, block = 4, 16
    per_epoch = -(-tokens // (batch * block))
    env = {"DATA_BIN": str(data_bin), "SAVE_DIR": str(tmp_path / "ckpt"), "EPOCHS": "2",
           "BATCH_SIZE": str(batch), "TOKENS_PER_SAMPLE": str(block)}
    run(["bash", TRAIN_SH, "--stateful-bptt", "--embed-dim", "16", "--hidden-size", "16",
         "--num-workers", "0", "--data-buffer-size", "0"], env=env)
    log = (tmp_path / "ckpt" / "train.log").read_text().splitlines()
    updates = {rec["epoch"]: int(rec["train_num_updates"]) for rec in json_records(log) if "train_num_updates" in rec}
    assert updates == {1: per_epoch, 2: 2 * per_epoch}
    cfg = torch.load(tmp_path / "ckpt" / "checkpoint_last.pt", weights_only=False)["cfg"]
    assert cfg["optimization"]["max_update"] == cfg["lr_scheduler"]["total_num_update"] == 2 * per_epoch


@pytest.mark.parametrize("env, error", [
    ({"SCHEDULE": "hours"}, "SCHEDULE must be 'epochs' or 'time', got 'hours'"),
    ({"SCHEDULE": "time", "OPTIMIZER": "seed"},
     "SCHEDULE=time decays Adam's learning rate; OPTIMIZER=seed keeps a fixed one: set OPTIMIZER=adam or SCHEDULE=epochs"),
    ({"SCHEDULE": "time", "STOP_TIME_HOURS": "0"},
     "SCHEDULE=time decays the learning rate over STOP_TIME_HOURS, got '0': set it to the hours of training wanted"),
])
def test_train_names_a_bad_schedule(data_bin, tmp_path, env, error):
    code, out = run(["bash", TRAIN_SH], env={"DATA_BIN": str(data_bin), "SAVE_DIR": str(tmp_path / "ckpt"), **env},
                    check=False)
    assert code != 0 and "train: " + error in out
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.slow
def test_train_schedules_by_time(data_bin, tmp_path):
    """SCHEDULE=time: no update limit, the learning rate decays over
    STOP_TIME_HOURS and the guard ends training; a rerun is skipped."""
    hours = 15 / 3600
    env = {"DATA_BIN": str(data_bin), "SAVE_DIR": str(tmp_path / "ckpt"), "SCHEDULE": "time",
           "STOP_TIME_HOURS": str(hours), "BATCH_SIZE": "4", "TOKENS_PER_SAMPLE": "16"}
    flags = ["--embed-dim", "16", "--hidden-size", "16", "--num-workers", "0", "--data-buffer-size", "0"]
    _, out = run(["bash", TRAIN_SH, *flags], env=env)
    assert "Stopping training due to cumulative_training_time" in out
    state = torch.load(tmp_path / "ckpt" / "checkpoint_last.pt", weights_only=False)
    assert state["cfg"]["optimization"]["max_update"] == 0
    assert state["cfg"]["lr_scheduler"]["_name"] == "timed_polynomial_decay"
    assert state["cfg"]["lr_scheduler"]["time_budget_hours"] == hours
    assert "schedule=time hours=" in (tmp_path / "ckpt" / ".finished").read_text()
    _, out = run(["bash", TRAIN_SH, *flags], env=env)
    assert "already holds a finished run" in out


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
    # (see TRAIN in helpers.py).
    _, out = run(["bash", os.path.join(ROOT, "recipes", "wikitext2", "spm.sh"),
                  "--num-workers", "0", "--data-buffer-size", "0"], env=env)
    assert "not in training-frequency order: re-sorted" in out
    assert (tmp_path / "ckpt" / "checkpoint_last.pt").exists()
    # The user's files are untouched: dict.txt keeps sentencepiece's order.
    assert (tmp_path / "bin" / "dict.txt").read_text() == (tmp_path / "spm" / "dict.txt").read_text()


@pytest.mark.slow
def test_compare_recipe_trains_both_softmaxes_alike_and_records_them(data_bin, tmp_path):
    env = {"DATA_BIN": str(data_bin), "CKPT_ROOT": str(tmp_path / "ckpt"), "BENCHMARK_RESULTS_DIR": str(tmp_path),
           "QUICK": "1", "MAX_UPDATE": "4", "BATCH_SIZE": "4", "TOKENS_PER_SAMPLE": "16"}
    compare = ["bash", os.path.join(ROOT, "recipes", "wikitext2", "compare.sh"), "--num-workers", "0",
               "--data-buffer-size", "0"]
    _, out = run(compare, env=env)
    result = json.loads((tmp_path / "wikitext2_compare_quick.json").read_text())
    adaptive, full = ({c["params"]["softmax"]: c["metrics"] for c in result["cases"]}[k] for k in ("adaptive", "full"))
    assert adaptive["updates"] == full["updates"] == 4
    assert adaptive["test_ppl_vs_full"] == pytest.approx(adaptive["test_perplexity"] / full["test_perplexity"] - 1)
    # The recipe's file holds no targets; benchmarks/wikitext2.py judges the project's two on it.
    assert result["goals"] == [] and [g["threshold"] for g in wikitext2.compare_goals(result)] == [3.0, 0.04]
    # The same optimizer, and only the adaptive run has cutoffs.
    assert out.count("'optimizer': {'_name': 'adam'") == 2
    assert "Adam lr 0.002," in result["note"]  # train.sh's default LR, read from the checkpoint
    cutoffs = {softmax: torch.load(tmp_path / "ckpt" / f"compare-{softmax}-quick" / "checkpoint_last.pt",
                                   weights_only=False)["cfg"]["model"]["adaptive_softmax_cutoff"]
               for softmax in ("adaptive", "full")}
    assert cutoffs == {"adaptive": "9,26", "full": ""}  # 0.0667 and 0.2 of the 128-word dictionary
    # A second run skips both finished trainings and evaluations.
    _, again = run(compare, env=env)
    assert again.count("already holds a finished run") == 2 and "Loss (base 2)" not in again
    # Other settings in a finished run's SAVE_DIR are refused, and that run is left as it was.
    finished = tmp_path / "ckpt" / "compare-adaptive-quick" / "checkpoint_last.pt"
    stamp = finished.stat().st_mtime_ns
    code, refused = run(compare + ["--dropout", "0.3"], env=env, check=False)
    assert code != 0 and "already holds a finished run with other settings" in refused
    assert "extra=[--num-workers 0 --data-buffer-size 0 --dropout 0.3]" in refused
    assert finished.stat().st_mtime_ns == stamp
    # TOKENS_PER_SAMPLE=16 shaped the training only: the protocols keep their own lengths.
    save_dir = tmp_path / "ckpt" / "compare-adaptive-quick"
    assert "'tokens_per_sample': 512," in (save_dir / "eval_test.log").read_text()
    # The adaptive run's checkpoint under the five evaluation protocols (blocks logs exist already).
    protocols_sh = ["bash", os.path.join(ROOT, "recipes", "wikitext2", "protocols.sh")]
    env["SAVE_DIR"] = str(save_dir)
    _, out = run(protocols_sh, env=env)
    # Three passes per split: blocks (done already), the cache's and dynamic_cache's, each of the
    # last two also reporting the same pass without the cache (classic's and dynamic's figures).
    assert out.count("Loss (base 2): ") == 4 and out.count("without the cache: Loss (base 2) ") == 4
    phases = (save_dir / "protocols_phases.txt").read_text().split()
    assert [p.split("=")[0] for p in phases] == ["tune_neural_cache", "tune_dynamic_eval", "blocks_valid", "blocks_test",
                                                 "cache_valid", "cache_test", "dynamic_cache_valid", "dynamic_cache_test"]
    record = json.loads((tmp_path / "wikitext2_protocols.json").read_text())
    assert provenance.validate(record) == [] and record["goals"] == []
    evals = {(c["params"]["protocol"], c["params"]["split"]): c["metrics"] for c in record["cases"]
             if c["params"]["phase"] == "eval"}
    tuned = {c["params"]["protocol"]: c["metrics"] for c in record["cases"] if c["params"]["phase"] == "tune"}
    assert evals["blocks", "test"]["perplexity"] == adaptive["test_perplexity"]
    cache_log = (save_dir / "eval_test_cache.log").read_text()
    assert "--stateful-bptt: test is one stream of" in cache_log and "'tokens_per_sample': 70," in cache_log
    assert evals["classic", "test"]["perplexity"] > 1 and evals["classic", "test"]["same_pass_as"] == "cache"
    # The cache setting was tuned on valid, and fairseq-eval-lm scores valid with it as the tuner did.
    tuning = json.loads((save_dir / "neural_cache.json").read_text())
    assert tuning["best"] == min(tuning["grid"], key=lambda g: g["perplexity"])
    assert tuned["cache"]["perplexity"] == tuning["best"]["perplexity"] and tuned["cache"]["size"] == tuning["best"]["size"]
    assert evals["cache", "valid"]["perplexity"] == pytest.approx(tuning["best"]["perplexity"], abs=0.01)
    assert tuned["cache"]["without"] == pytest.approx(evals["classic", "valid"]["perplexity"], abs=0.01)
    assert evals["cache", "test"]["vs_classic"] == round(evals["cache", "test"]["perplexity"]
                                                         / evals["classic", "test"]["perplexity"] - 1, 4)
    cache_log = (tmp_path / "ckpt" / "compare-adaptive-quick" / "eval_test_cache.log").read_text()
    assert f"'neural_cache_size': {tuning['best']['size']}" in cache_log
    # Dynamic evaluation too: tuned on valid, scored with that setting, alone and with the cache.
    dynamic_tuning = json.loads((save_dir / "dynamic_eval.json").read_text())
    tuned = dynamic_tuning["best"]
    assert tuned == min(dynamic_tuning["grid"], key=lambda g: g["perplexity"])
    log = (save_dir / "eval_test_dynamic_cache.log").read_text()
    assert f"'dynamic_eval': True, 'dynamic_eval_lr': {tuned['lr']}, 'dynamic_eval_decay': {tuned['decay']}" in log
    assert "'neural_cache_size': 0," not in log and evals["dynamic", "test"]["same_pass_as"] == "dynamic_cache"
    assert evals["dynamic_cache", "test"]["seconds"] > 0
    # The evaluations read the statistics the tuner gathered and kept beside the checkpoint.
    kept = str(save_dir / "dynamic_eval_stats.pt")
    assert dynamic_tuning["statistics_file"] == kept
    assert evals["dynamic_cache", "test"]["statistics_from_file"] is True  # noted without the absolute path
    assert f"gradient statistics read from {kept}" in log
    # A second run redoes nothing.
    _, again = run(protocols_sh, env=env)
    assert "Loss (base 2)" not in again and "without the cache" not in again and "without dynamic" not in again
