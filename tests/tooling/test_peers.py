"""benchmarks.peers (issue #39): the flags each model trains with, the rounds, the per-run records that make it
resumable, the parsing and the judging; and its --quick run, which trains every model to the clock on a tiny
corpus and writes nothing into benchmarks/results."""

import contextlib
import json
import os

import pytest

from benchmarks import harness, peers, peers_runs
from fairseq_adasoft import provenance
from fairseq_adasoft.hardware import cpu_has_native_bf16
from fairseq_adasoft.presets import ARCHITECTURES, MAIN_JOB

WIKITEXT2_DICT = 33_280  # WikiText-2's fairseq dictionary: 33,276 entries padded to a multiple of 8


def value(flags, name):
    return flags[len(flags) - 1 - flags[::-1].index(name) + 1]  # the last occurrence wins, as in argparse


@pytest.fixture
def wikitext2_dict(monkeypatch):
    monkeypatch.setattr(peers.zipf_corpus, "dictionary_size", lambda data: WIKITEXT2_DICT)


def test_qrnn_flags_are_run_sh_s_with_train_sh_s_adam(wikitext2_dict):
    fp32 = peers.model_flags("qrnn_lm", "fp32", 0.006, "data", quick=False)
    bf16 = peers.model_flags("qrnn_lm", "bf16", 0.006, "data", quick=False)
    for flags in (fp32, bf16):
        assert value(flags, "--arch") == MAIN_JOB["arch"] and value(flags, "--criterion") == "adaptive_softmax"
        assert set(MAIN_JOB["train_flags"].split()) <= set(flags)
        assert value(flags, "--batch-size") == str(MAIN_JOB["batch_size"])
        assert value(flags, "--tokens-per-sample") == str(MAIN_JOB["tokens_per_sample"])
    assert value(fp32, "--hidden-size") == str(MAIN_JOB["fp32_hidden_size"]) and "--cpu-autocast-bf16" not in fp32
    assert "--cpu-autocast-bf16" in bf16 and "--hidden-size" not in bf16  # the preset's width, as run.sh on bf16
    # train.sh's Adam flags, which presets.py does not hold: the benchmark's copy must match the recipe's.
    train_sh = open(os.path.join(harness.ROOT, "recipes", "wikitext2", "train.sh")).read()
    adam = train_sh[train_sh.index("adam) OPTIMIZER_FLAGS="):train_sh.index("seed) OPTIMIZER_FLAGS")]
    pairs = [peers.TRAIN_SH_ADAM[i:i + 2] for i in range(0, len(peers.TRAIN_SH_ADAM), 2)]
    assert all(f'{k} "{v}"' in adam or f"{k} {v}" in adam for k, v in pairs), adam


def test_every_model_is_timed_alike_and_shares_the_cutoffs(wikitext2_dict):
    budget_h = peers.BUDGET_MINUTES / 60
    ids = "2220,6656"  # the preset's [V/15, 3V/15] of WikiText-2's dictionary
    for model in peers.MODELS:
        flags = peers.model_flags(model, "fp32", 1e-3, "data", quick=False)
        assert value(flags, "--lr-scheduler") == "timed_polynomial_decay" and value(flags, "--lr") == "0.001"
        assert float(value(flags, "--stop-time-hours")) == pytest.approx(budget_h, rel=1e-5)
        assert {"--disable-validation", "--no-save-optimizer-state"} <= set(flags)  # nothing scored on the clock
        assert value(flags, "--seed") == str(peers.SEED)
        if model != "qrnn_lm":  # fairseq's models take word ids; qrnn_lm's preset resolves its fractions to these
            assert value(flags, "--adaptive-softmax-cutoff") == ids and value(flags, "--criterion") == "adaptive_loss"
            assert value(flags, "--ddp-backend") == "legacy_ddp"
    lstm = peers.model_flags("lstm_lm", "fp32", 1e-3, "data", quick=False)
    preset = ARCHITECTURES[MAIN_JOB["arch"]]
    assert [value(lstm, f) for f in ("--decoder-layers", "--decoder-embed-dim", "--decoder-hidden-size", "--dropout")] \
        == [str(preset["num_layers"]), str(preset["embed_dim"]), str(MAIN_JOB["fp32_hidden_size"]), str(preset["dropout"])]
    t = peers.model_flags("transformer_lm", "fp32", 1e-3, "data", quick=False)
    assert {"--adaptive-input", "--tie-adaptive-weights", "--tie-adaptive-proj"} <= set(t)
    assert value(t, "--adaptive-input-cutoff") == ids and value(t, "--adam-betas") == "(0.9, 0.98)"
    assert value(t, "--dropout") == "0.1" and value(t, "--attention-dropout") == "0.0333"  # wiki103's, a third
    # warm-up: the LM example's 8% of the updates 20 min at the expected words/s give (1,500 x 1,200 / 3,072)
    assert value(t, "--warmup-updates") == str(round(0.08 * int(1500 * 1200 / 3072)))
    assert float(value(t, "--end-learning-rate")) == pytest.approx(1e-3 / 60, rel=1e-2)


def test_cases_run_one_grid_point_of_every_model_per_round_then_bf16():
    full = peers.cases(quick=False, bf16=True)
    assert [c["model"] for c in full[:9]] == list(peers.MODELS) * 3
    assert [c["grid"] for c in full[:9:3]] == list(peers.GRID)
    assert full[9] == dict(model="qrnn_lm", precision="bf16", grid=peers.BEST_FP32) and len(full) == 10
    assert len(peers.cases(quick=False, bf16=False)) == 9 and len(peers.cases(quick=True, bf16=False)) == 3
    assert peers.LRS["qrnn_lm"] == {"0.5x": 0.003, "1x": 0.006, "2x": 0.012} == peers.LRS["lstm_lm"]


def test_bf16_row_takes_the_fp32_rows_best_lr(monkeypatch):
    seen = []
    monkeypatch.setattr(peers.peers_runs, "train_and_score", lambda run_dir, data, flags, *a: seen.append(flags) or {})
    monkeypatch.setattr(peers, "model_flags", lambda model, precision, lr, data, quick: [model, precision, lr])
    monkeypatch.setattr(peers, "SETTINGS", dict(data="d", work="w", quick=False, kind={}))
    monkeypatch.setattr(peers, "MEASURED", {"qrnn_lm_fp32_lr0.5x": {"valid_ppl_blocks": 130.0, "lr": 0.003},
                                            "qrnn_lm_fp32_lr1x": {"valid_ppl_blocks": 120.0, "lr": 0.006},
                                            "lstm_lm_fp32_lr1x": {"valid_ppl_blocks": 100.0, "lr": 0.006}})
    assert peers.measure("qrnn_lm", "bf16", peers.BEST_FP32)["lr"] == 0.006 and seen == [["qrnn_lm", "bf16", 0.006]]
    monkeypatch.setattr(peers, "MEASURED", {})
    with pytest.raises(ValueError, match="run the fp32 cases first"):
        peers.measure("qrnn_lm", "bf16", peers.BEST_FP32)


def record(cases):
    return {"cases": [{"params": dict(model=m, precision=p, grid="1x"), "metrics": metrics} for m, p, metrics in cases]}


def test_goal_is_qrnn_test_ppl_over_the_better_peers():
    rows = [("qrnn_lm", "fp32", {"best": True, "test_ppl_blocks": 85.0}),
            ("qrnn_lm", "fp32", {"best": False, "test_ppl_blocks": 50.0}),  # not the grid's best: not judged
            ("qrnn_lm", "bf16", {"best": True, "test_ppl_blocks": 60.0}),  # nor the bf16 row
            ("transformer_lm", "fp32", {"best": True, "test_ppl_blocks": 100.0}),
            ("lstm_lm", "fp32", {"best": True, "test_ppl_blocks": 140.0})]
    [g] = peers.judge(record(rows))
    assert g["value"] == pytest.approx(0.85) and g["threshold"] == peers.GOAL_VS_BEST_PEER and g["met"]
    rows[0][2]["test_ppl_blocks"] = 86.0
    assert not peers.judge(record(rows))[0]["met"]
    assert peers.judge(record(rows[:3]))[0] == {**g, "value": None, "met": False}  # no peer measured


def test_best_is_the_lowest_validation_perplexity_of_the_models_grid():
    measured = {"lstm_lm_fp32_lr0.5x": {"valid_ppl_blocks": 150.0}, "lstm_lm_fp32_lr1x": {"valid_ppl_blocks": 140.0},
                "qrnn_lm_fp32_lr1x": {"valid_ppl_blocks": 90.0}}
    assert peers.best(measured, "lstm_lm", "fp32") == "lstm_lm_fp32_lr1x"
    assert peers.best(measured, "transformer_lm", "fp32") is None


KIND = {"cpu": "AMD EPYC", "cpu_family_model": {"family": 26}, "cpu_capability": "AVX512", "cpu_native_bf16": True,
        "cpu_cores": 2}


def test_a_finished_run_is_kept_only_from_this_machine_kind_and_flags(tmp_path, monkeypatch):
    run_dir = str(tmp_path / "run")
    assert peers_runs.finished(run_dir, "--lr 1", KIND) is None  # never run
    monkeypatch.setattr(provenance, "machine_info", lambda: dict(KIND, torch_threads=2))
    case = {"params": {"run": "run", "flags": "--lr 1"}, "metrics": {"valid_ppl_blocks": 99.0}}
    provenance.write_results("run", [case], "python -m benchmarks.peers", run_dir)
    assert peers_runs.finished(run_dir, "--lr 1", KIND) == {"valid_ppl_blocks": 99.0}
    assert peers_runs.finished(run_dir, "--lr 2", KIND) is None  # other flags: redone
    assert peers_runs.finished(run_dir, "--lr 1", dict(KIND, cpu_family_model={"family": 25})) is None


def test_train_and_score_redoes_an_unfinished_run_from_scratch(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint_1_100.pt").write_text("a stopped run's")
    monkeypatch.setattr(peers_runs, "fairseq_train", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("trained")))
    with pytest.raises(RuntimeError, match="trained"):
        peers_runs.train_and_score(str(run_dir), "data", ["--lr", "1"], [], "cmd", KIND)
    assert list(run_dir.iterdir()) == []  # the stopped run's files are gone before it trains again


def test_log_parsing_and_checkpoint_choice(tmp_path):
    log = "2026-12-08 | INFO | fairseq_cli.train | num. shared model params: 18,702,400 (num. trained: 18,702,400)\n"
    assert peers_runs.parameters(log) == 18_702_400
    with pytest.raises(ValueError, match="num. shared model params"):
        peers_runs.parameters("no such line")
    assert peers_runs.words_per_s({"train_wps_per_epoch": [3.0, 1.0, 2.0]}) == 2.0
    assert peers_runs.words_per_s({"train_wps_per_log_interval": {"min": 1, "median": 5, "max": 9},
                                   "train_wps_per_epoch": [2.0]}) == 5
    for updates in (1000, 200, 30):
        (tmp_path / f"checkpoint_1_{updates}.pt").write_text("")
    (tmp_path / "checkpoint_last.pt").write_text("")
    assert [os.path.basename(p) for p in peers_runs.interval_checkpoints(str(tmp_path))] == \
        ["checkpoint_1_30.pt", "checkpoint_1_200.pt", "checkpoint_1_1000.pt"]  # by update, not by name
    assert peers_runs.evenly(list(range(10)), 3) == [2, 6, 9] and peers_runs.evenly([1, 2], 6) == [1, 2]


def test_curve_scores_evenly_chosen_checkpoints_once_and_ends_at_the_last(tmp_path, monkeypatch):
    for updates in (10, 20, 30, 40):
        (tmp_path / f"checkpoint_1_{updates}.pt").write_text("")
    updates = lambda path: int(os.path.basename(path)[len("checkpoint_1_"):-len(".pt")])  # noqa: E731
    scored = []
    monkeypatch.setattr(peers_runs, "evaluate", lambda data, path, split, protocol, log, task_flags:
                        scored.append((os.path.basename(path), split, protocol)) or {"perplexity": 1000 / updates(path)})
    monkeypatch.setattr(peers_runs, "training_seconds", lambda path: 6.0 * updates(path))
    assert peers_runs.curve(str(tmp_path), "data", 2, (20.0, 10.0)) == ([2.0, 4.0, 20.0], [50.0, 25.0, 10.0])
    assert scored == [("checkpoint_1_20.pt", "valid", "blocks"), ("checkpoint_1_40.pt", "valid", "blocks")]
    assert peers_runs.curve(str(tmp_path), "data", 2, (20.0, 10.0))[1] == [50.0, 25.0, 10.0] and len(scored) == 2


def test_protocols_are_eval_sh_s():
    assert peers_runs.PROTOCOL_FLAGS["blocks"]("test") == ["--tokens-per-sample", "512", "--batch-size", "8"]
    assert peers_runs.PROTOCOL_FLAGS["classic"]("test") == ["--stateful-bptt", "--tokens-per-sample", "70",
                                                           "--batch-size", "1"]
    assert peers_runs.PROTOCOL_FLAGS["classic"]("valid")[-1] == "10"


@pytest.mark.slow
def test_quick_run_trains_every_model_to_the_clock_and_writes_nothing_into_results(tmp_path, monkeypatch):
    results, work = tmp_path / "results", tmp_path / "work"
    monkeypatch.setattr(harness, "RESULTS_DIR", str(results))
    monkeypatch.setattr(peers, "TemporaryDirectory", lambda: contextlib.nullcontext(str(work)))
    measured, judged = peers.main(["--quick"])
    assert not results.exists() and judged == []
    assert not os.path.exists(os.path.join(harness.ROOT, "benchmarks", "results", "peers.png"))
    models = [(c["params"]["model"], c["params"]["precision"]) for c in measured]
    assert models == [(m, "fp32") for m in peers.MODELS] + [("qrnn_lm", "bf16")] * cpu_has_native_bf16()
    for case in measured:
        m, name = case["metrics"], peers.run_name(**case["params"])
        saved = json.load(open(peers_runs.record_path(str(work / name))))
        assert provenance.validate(saved) == [] and saved["cases"][0]["metrics"] == {k: v for k, v in m.items() if k
                                                                                     in saved["cases"][0]["metrics"]}
        assert m["updates"] >= 1 and m["clock_s"] >= peers.QUICK["budget_s"]  # stopped by the clock
        assert m["best"] and m["curve_valid_ppl"][-1] == m["valid_ppl_blocks"]  # one grid point: each is its best
        # every model scored on the same tokens
        assert (m["valid_blocks_tokens"], m["test_blocks_tokens"]) == (
            measured[0]["metrics"]["valid_blocks_tokens"], measured[0]["metrics"]["test_blocks_tokens"])
    assert "test_ppl_classic" in measured[0]["metrics"] and (work / "peers.png").stat().st_size > 10_000
