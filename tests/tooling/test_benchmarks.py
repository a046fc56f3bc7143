"""The harness behind the results files, and the benchmarks at toy sizes."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from benchmarks import harness, lm_throughput, qrnn_layer
from fairseq_adasoft.provenance import validate

SLEEP_S = 0.002  # long enough to dominate a call's own overhead


def test_time_ms_reports_the_time_of_one_call_and_waits_for_the_device():
    calls, syncs = [], []

    def call():
        calls.append(1)
        time.sleep(SLEEP_S)

    result = harness.time_ms(call, repeats=3, warmup=2, calls=2, sync=lambda: syncs.append(1))
    assert len(calls) == 2 + 3 * 2  # warm-up, then every repeat's calls
    assert len(syncs) == 1 + 3  # after the warm-up and after each repeat
    assert 1000 * SLEEP_S <= result["min"] <= result["median"] <= result["max"]  # each call sleeps SLEEP_S
    assert harness.spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}


def test_run_measures_the_cases_in_rounds_and_spreads_repeats():
    order, values = [], iter([1.0, 10.0, 3.0, 30.0, 2.0, 20.0])

    def measure(variant):
        order.append(variant)
        return {"ms": next(values), "kind": "toy", "spread": {"min": 0, "median": 5.0, "max": 9}}

    cases = harness.run([dict(variant="a"), dict(variant="b")], measure, repeats=3, log=lambda *a, **k: None)
    assert order == ["a", "b"] * 3  # each round measures every case in turn
    assert harness.find(cases, variant="a") == {"ms": {"min": 1.0, "median": 2.0, "max": 3.0}, "kind": "toy",
                                                "spread": {"min": 5.0, "median": 5.0, "max": 5.0}}
    assert harness.ratio(cases, "ms", {"variant": "b"}, {"variant": "a"}) == 10.0
    assert harness.ratio(cases, "ms", {"variant": "c"}, {"variant": "a"}) is None
    with pytest.raises(KeyError, match="2 cases match"):
        harness.find(cases)
    assert harness.goal("x", None, 1.0)["met"] is False  # not measured: not met
    assert harness.goal("x", 1.2, 1.3, at_most=True) == {"name": "x", "threshold": 1.3, "value": 1.2, "met": True}


def test_main_writes_one_schema_with_command_tag_and_goals(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "RESULTS_DIR", str(tmp_path))
    toy = qrnn_layer.cases("cpu", "fp32", 8, 16, t=5, b=3)
    monkeypatch.setattr(qrnn_layer, "WARMUP", 1)
    monkeypatch.setattr(qrnn_layer, "CALLS", 1)
    measured, judged = harness.main("qrnn_layer_cpu", toy, qrnn_layer.measure, qrnn_layer.goals,
                                    argv=["--repeats", "2", "--tag", "toy"])
    record = json.loads((tmp_path / "qrnn_layer_cpu_toy.json").read_text())
    assert validate(record) == [] and record["cases"] == measured and record["goals"] == judged
    assert record["command"] == "python -m benchmarks.qrnn_layer --repeats 2 --tag toy"
    x = torch.zeros(5, 3, 8)
    for window in (1, 2):
        m = harness.find(measured, part="layer", window=window)
        assert m["auto_picks"] == qrnn_layer.QRNNLayer(8, 16, window=window)._resolved_gate_op(x)
        assert set(m["layer_vs_floor"]) == {"min", "median", "max"}  # a derived figure per repeat, spread too
    stack = harness.find(measured, part="stack")
    assert stack["qrnn_ms"]["min"] <= stack["qrnn_ms"]["max"]
    worst = max(harness.find(measured, part="layer", window=w)["layer_vs_floor"]["median"] for w in (1, 2))
    assert judged[0]["value"] == worst and judged[0]["met"] == (worst <= qrnn_layer.GOAL_LAYER_VS_FLOOR)
    # --quick measures, validates and writes nothing
    harness.main("qrnn_layer_quick", toy[:1], qrnn_layer.measure, argv=["--quick"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qrnn_layer_cpu_toy.json"]


def test_qrnn_layer_measure_computes_its_ratios(monkeypatch):
    monkeypatch.setattr(qrnn_layer, "WARMUP", 0)
    monkeypatch.setattr(qrnn_layer, "CALLS", 1)
    params = dict(device="cpu", precision="fp32", T=3, B=2, input_size=8, hidden_size=8)
    layer = qrnn_layer.measure(part="layer", window=2, **params)
    assert layer["layer_vs_floor"] == (layer[f"layer_{layer['auto_picks']}_ms"]["median"]
                                       / layer[f"floor_{layer['auto_picks']}_ms"]["median"])
    stack = qrnn_layer.measure(part="stack", window=0, **params)
    assert stack["qrnn_speedup_vs_lstm"] == stack["lstm_ms"]["median"] / stack["qrnn_ms"]["median"]
    fast = {"layer_triton_vs_floor": 1.2, "stack_triton_vs_lstm": 3.5}
    kernels = [{"params": dict(part="kernel", window=1, shape=s, precision="fp16"), "metrics": m}
               for s, m in (("seed", fast), ("awd_qrnn", {**fast, "layer_triton_vs_floor": 1.6}))]
    assert [g["met"] for g in qrnn_layer.goals(kernels)] == [False, False, False, True]  # no layer or stack measured


def test_width_cases_run_run_sh_s_model_and_count_its_epochs(monkeypatch):
    calls = []

    def fake_train_wps(flags, updates):  # 1,000 words/s per 100 units of width
        calls.append((flags, updates))
        return {"words_per_s": harness.spread([10.0 * int(flags[flags.index("--hidden-size") + 1])])}

    monkeypatch.setattr(lm_throughput, "train_wps", fake_train_wps)
    monkeypatch.setattr(lm_throughput, "train_tokens", lambda data: 2_000_000)
    monkeypatch.setattr(lm_throughput, "need", lambda data: data)
    # 0.5 h x 5,000 words/s = 9M words = 4.5 epochs of 2M tokens; 8,000 words/s: 7.2.
    monkeypatch.setattr(lm_throughput.epochs_in_hours, "__defaults__", (0.5,))
    assert lm_throughput.measure(hidden_size=500, precision="bf16", updates=20)["epochs_in_hours"] == 4.5
    assert lm_throughput.measure(hidden_size=800, precision="fp32", updates=20)["epochs_in_hours"] == 7.2
    assert [u for _, u in calls] == [20, 20]
    for flags, _ in calls:  # run.sh's model
        assert flags[flags.index("--arch") + 1] == "qrnn_lm_wikitext2"
        assert {"--stateful-bptt", "--tie-adaptive-weights"} <= set(flags)
    assert "--cpu-autocast-bf16" in calls[0][0] and "--cpu-autocast-bf16" not in calls[1][0]
    assert lm_throughput.goals([{"params": {"hidden_size": 500}, "metrics": {}}]) == []  # the goal is the setups'


def test_peak_rss_is_each_childs_own_not_this_processs(tmp_path):
    mb, parent_mb, child_mb, small_mb = 2**20, 300, 200, 100
    parent = bytearray(parent_mb * mb)  # this process's peak: a child exec'd from it would start there
    parent[::4096] = b"\1" * len(parent[::4096])
    touch = f"b = bytearray({child_mb} * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"  # resident, not just mapped
    log = str(tmp_path / "child.log")
    big = harness.run_child([sys.executable, "-c", touch], log)
    small = harness.run_child([sys.executable, "-c", "print('done')"], log)
    failed = harness.run_child([sys.executable, "-c", "raise SystemExit(3)"], log)
    assert big["returncode"] == small["returncode"] == 0 and failed["returncode"] == 3
    assert big["peak_rss_mb"] >= child_mb
    assert small["peak_rss_mb"] < small_mb  # neither the parent's nor the previous child's
    assert small["text"] == "done\n"
    del parent


def test_test_suite_reads_pytests_summary_line():
    from benchmarks.test_suite import tally

    out = "tests/test_a.py ....\n===== 169 passed, 7 skipped, 2 deselected in 321.05s (0:05:21) =====\n"
    assert tally(out) == {"passed": 169, "failed": 0, "skipped": 7, "deselected": 2}
    assert tally("== 1 failed, 3 passed, 1 error in 2.00s ==")["errors"] == 1
    with pytest.raises(ValueError, match="no pytest summary line"):
        tally("collected 0 items\n")


QUICK = [["qrnn_layer"], ["output_layer"], ["output_layer", "--scaling"], ["large_vocab"], ["lm_throughput"],
         ["lm_throughput", "--widths"]]


@pytest.mark.slow
@pytest.mark.parametrize("command", QUICK, ids=" ".join)
def test_quick_run_makes_a_valid_results_file_and_writes_none(tmp_path, command):
    if command[0] == "lm_throughput" and not os.path.isfile(os.path.join(harness.DATA, "dict.txt")):
        pytest.skip("needs recipes/wikitext2/prepare.sh's data-bin/wikitext-2")
    env = dict(os.environ, BENCHMARK_RESULTS_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", f"benchmarks.{command[0]}", *command[1:], "--quick"], cwd=harness.ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "valid results file (not kept)" in r.stdout and "[1/1]" in r.stdout
    assert list(tmp_path.iterdir()) == []
