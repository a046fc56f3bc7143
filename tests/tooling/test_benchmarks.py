"""The timing helpers behind the results files, and the QRNN benchmark at toy sizes."""

import json
import time

import pytest
import torch

from benchmarks import common, qrnn_layer
from fairseq_adasoft.hardware import cpu_has_native_bf16

SLEEP_S = 0.002  # long enough to dominate a call's own overhead


def test_time_ms_reports_the_time_of_one_call_and_waits_for_the_device():
    calls, syncs = [], []

    def call():
        calls.append(1)
        time.sleep(SLEEP_S)

    result = common.time_ms(call, repeats=3, warmup=2, calls_per_repeat=2, sync=lambda: syncs.append(1))
    assert len(calls) == 2 + 3 * 2  # warm-up, then every repeat's calls
    assert len(syncs) == 1 + 3  # after the warm-up and after each repeat
    assert 1000 * SLEEP_S <= result["min"] <= result["median"] <= result["max"]  # each call sleeps SLEEP_S
    assert common.spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}


def test_qrnn_layer_benchmark_records_sizes_tag_and_choice(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", str(tmp_path))
    for name, value in (("T", 5), ("B", 3), ("WARMUP", 1), ("ITERS_PER_REPEAT", 1)):
        monkeypatch.setattr(qrnn_layer, name, value)
    monkeypatch.setattr("sys.argv", ["qrnn_layer", "--repeats", "2", "--input-size", "8", "--hidden-size", "16",
                                     "--tag", "toy"])
    qrnn_layer.main()
    result = json.loads((tmp_path / "qrnn_layer_cpu_toy.json").read_text())
    assert result["command"] == "python -m benchmarks.qrnn_layer --input-size 8 --hidden-size 16 --tag toy"
    assert result["shape"] == {"T": 5, "B": 3, "C": 8, "H": 16, "layers": qrnn_layer.NUM_LAYERS}
    x = torch.zeros(5, 3, 8)
    for window in (1, 2):
        entry = result["results"][f"window{window}"]
        assert entry["auto_picks"] == qrnn_layer.QRNNLayer(8, 16, window=window)._resolved_gate_op(x)
        chosen = entry["auto_picks"]
        assert entry["layer_vs_floor"] == entry[f"layer_{chosen}_ms"]["median"] / entry[f"floor_{chosen}_ms"]["median"]
    stack = result["results"]["stack"]
    assert stack["qrnn_speedup_vs_lstm"] == stack["lstm_ms"]["median"] / stack["qrnn_ms"]["median"]


def test_width_benchmark_runs_each_width_as_run_sh_does_and_counts_its_epochs(tmp_path, monkeypatch):
    from benchmarks import width_throughput

    monkeypatch.setattr(common, "RESULTS_DIR", str(tmp_path))
    (tmp_path / "dict.txt").write_text("word 1\n")
    monkeypatch.setattr(width_throughput, "DATA", str(tmp_path))
    monkeypatch.setattr(width_throughput, "train_tokens", lambda data: 2_000_000)
    monkeypatch.setattr(width_throughput, "cpu_has_native_bf16", lambda: True)
    calls = []

    def fake_run(name, args, updates):  # 1,000 words/s per 100 units of width
        calls.append((args, updates))
        width = int(args[args.index("--hidden-size") + 1])
        return {"wps": common.spread([10.0 * width])}

    monkeypatch.setattr(width_throughput, "run", fake_run)
    monkeypatch.setattr("sys.argv", ["width_throughput", "--widths", "500,800", "--updates", "20",
                                     "--hours", "0.5", "--tag", "toy"])
    width_throughput.main()
    result = json.loads((tmp_path / "width_throughput_toy.json").read_text())
    assert result["command"] == ("python -m benchmarks.width_throughput --widths 500,800 --updates 20 "
                                 "--hours 0.5 --tag toy")
    assert [updates for _, updates in calls] == [20, 20]
    for args, _ in calls:  # run.sh's model, with bf16 where the CPU has it
        assert args[args.index("--arch") + 1] == "qrnn_lm_wikitext2"
        assert {"--stateful-bptt", "--tie-adaptive-weights", "--cpu-autocast-bf16"} <= set(args)
    # 0.5 h x 5,000 words/s = 9M words = 4.5 epochs of 2M tokens; 8,000 words/s: 7.2.
    assert result["results"]["500"]["epochs_in_hours"] == 4.5
    assert result["results"]["800"]["epochs_in_hours"] == 7.2
    assert result["settings"]["precision"].startswith("bf16")


def test_width_benchmark_refuses_widths_it_cannot_read():
    from benchmarks.width_throughput import parse_widths

    assert parse_widths("500,1000") == [500, 1000]
    for bad in ("500,wide", "0,800", ""):
        with pytest.raises(ValueError, match="--widths"):
            parse_widths(bad)


def test_cpu_bf16_benchmark_names_its_file_by_the_cpu(tmp_path, monkeypatch):
    """The benchmark behind the refusal's figures, at toy sizes."""
    from benchmarks import common, cpu_bf16

    monkeypatch.setattr(common, "RESULTS_DIR", str(tmp_path))
    for name, value in (("T", 5), ("B", 3), ("EMBED", 8), ("HIDDEN", 16)):
        monkeypatch.setattr(cpu_bf16, name, value)
    monkeypatch.setattr("sys.argv", ["cpu_bf16", "--repeats", "2"])
    cpu_bf16.main()
    capability = torch.backends.cpu.get_cpu_capability()
    result = json.loads((tmp_path / f"cpu_bf16_{capability.lower()}.json").read_text())
    assert result["machine"]["cpu_capability"] == capability
    assert result["machine"]["cpu_native_bf16"] == cpu_has_native_bf16()
    assert "native_bf16" not in result  # recorded once, under "machine"
    assert result["shape"] == {"T": 5, "B": 3, "embed": 8, "hidden": 16, "layers": cpu_bf16.LAYERS}
    for entry in result["results"].values():
        assert entry["bf16_vs_fp32"] == pytest.approx(entry["bf16_ms"]["median"] / entry["fp32_ms"]["median"])


def test_test_suite_reads_pytests_summary_line():
    from benchmarks.test_suite import tally

    out = "tests/test_a.py ....\n===== 169 passed, 7 skipped, 2 deselected in 321.05s (0:05:21) =====\n"
    assert tally(out) == {"passed": 169, "failed": 0, "skipped": 7, "deselected": 2}
    assert tally("== 1 failed, 3 passed, 1 error in 2.00s ==")["errors"] == 1
    with pytest.raises(ValueError, match="no pytest summary line"):
        tally("collected 0 items\n")


@pytest.mark.slow
def test_logit_layout_benchmark_times_every_layout_of_every_setting(tmp_path):
    import subprocess
    import sys

    from benchmarks import logit_layout

    # A child process: the benchmark re-executes itself with the runs' malloc settings.
    env = {"PATH": "/usr/bin:/bin", "BENCHMARK_RESULTS_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "benchmarks.logit_layout", "--quick"], cwd=common.ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [line for line in r.stdout.splitlines() if " ms" in line]
    assert len(lines) == len(logit_layout.SETTINGS) * 2 * 2  # tied or not, shortlist or Zipf targets
    assert all(all(f"{name} " in line for name in logit_layout.LAYOUTS) for line in lines)
    assert list(tmp_path.iterdir()) == []  # --quick writes nothing
