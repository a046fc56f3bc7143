import json

import pytest
import torch

from fairseq_adasoft import provenance
from fairseq_adasoft.record import record_run, record_tuning


def fake_run(path, lr, streams, valid_ppls, hidden_size=800):
    """A train.sh save dir as fairseq leaves it: a checkpoint with its config
    and a JSON log whose records repeat (fairseq 0.12 does that)."""
    path.mkdir()
    cfg = {
        "optimization": {"lr": [lr], "max_update": 10},
        "dataset": {"batch_size": streams},
        "task": {"tokens_per_sample": 70, "stateful_bptt": True},
        "model": {"embed_dim": 400, "hidden_size": hidden_size, "num_layers": 4, "dropout": 0.2, "dropout_input": 0.2,
                  "dropout_hidden": 0.1, "dropout_embed": 0.0, "weight_drop": 0.05 if streams == 24 else 0.0,
                  "cpu_autocast_bf16": True, "tie_adaptive_weights": True, "adaptive_softmax_div_value": 4.0},
        "lr_scheduler": {"_name": "timed_polynomial_decay"},
    }
    torch.save({"cfg": cfg}, path / "checkpoint_last.pt")
    lines = []
    for epoch, ppl in enumerate(valid_ppls, 1):
        summary = {"epoch": epoch, "train_wps": "4000.0", "train_num_updates": str(5 * epoch), "train_wall": "60",
                   "train_ppl": str(ppl - 50)}
        interval = {"epoch": epoch, "wps": str(3000.0 + 1000 * epoch), "num_updates": str(5 * epoch)}
        # fairseq 0.12 writes epoch k's records k times.
        lines += epoch * [json.dumps(interval), json.dumps(summary), json.dumps({"epoch": epoch, "valid_ppl": str(ppl)})]
    (path / "train.log").write_text("\n".join(lines) + "\n")
    return str(path)


def test_tuning_runs_are_read_from_their_own_checkpoints_and_logs(tmp_path):
    runs = {
        "slow": fake_run(tmp_path / "a", 0.002, 48, [300.0, 250.0]),
        "fast": fake_run(tmp_path / "b", 0.004, 24, [280.0, 240.5]),
    }
    cases = {c["params"]["label"]: c for c in record_tuning(runs)}
    fast = cases["fast"]["params"]
    assert fast["lr"] == 0.004 and fast["streams"] == 24
    assert fast["stateful_bptt"] is True and fast["hidden_size"] == 800
    assert fast["adaptive_softmax_div_value"] == 4.0
    assert fast["weight_drop"] == 0.05 and cases["slow"]["params"]["weight_drop"] == 0.0
    assert fast["lr_scheduler"] == "timed_polynomial_decay"
    train = cases["fast"]["metrics"]
    assert train["valid_ppl_per_epoch"] == [280.0, 240.5] and train["epochs"] == 2
    assert train["lowest_valid"] is True and cases["slow"]["metrics"]["lowest_valid"] is False


def test_a_run_without_a_checkpoint_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    fake = fake_run(tmp_path / "ok", 0.002, 48, [300.0])
    (tmp_path / "empty" / "train.log").write_text((tmp_path / "ok" / "train.log").read_text())
    with pytest.raises(ValueError, match="empty/checkpoint_last.pt not found"):
        record_tuning({"ok": fake, "broken": str(tmp_path / "empty")})


def test_labelled_arguments_keep_their_order_and_name_the_flag_when_malformed():
    from fairseq_adasoft.logs import labelled_paths

    assert list(labelled_paths(["b=x/y", "a=z=w"], "--run", "")) == ["b", "a"]
    assert labelled_paths(["a=z=w"], "--run", "")["a"] == "z=w"  # only the first '=' splits
    for bad in ("nolabel", "=path", "label="):
        with pytest.raises(ValueError, match="--run takes LABEL=PATH, got .*; e.g. a=b"):
            labelled_paths([bad], "--run", "a=b")


def test_a_main_run_records_the_sizes_its_checkpoint_trained_with(tmp_path):
    """run.sh passes extra flags such as --hidden-size 600 through; the record
    must name the model that ran, not the architecture's defaults."""
    save_dir = fake_run(tmp_path / "run", 0.006, 48, [150.0, 140.0], hidden_size=600)
    for split, ppl in (("valid", 133.5), ("test", 127.61)):
        (tmp_path / "run" / f"eval_{split}.log").write_text(
            f"INFO | fairseq_cli.eval_lm | Loss (base 2): 7.0, Perplexity: {ppl}\n")
    cases, note = record_run(save_dir, "qrnn_lm_wikitext2, --hidden-size 600")
    assert note == "embedding 400, 4 x 600 QRNN; qrnn_lm_wikitext2, --hidden-size 600"
    train = next(c for c in cases if c["params"]["phase"] == "train")
    assert train["params"]["hidden_size"] == 600 and train["params"]["lr"] == 0.006
    evals = {c["params"]["split"]: c["metrics"] for c in cases if c["params"]["phase"] == "eval"}
    assert all(c["params"].get("protocol") == "blocks" for c in cases if c["params"]["phase"] == "eval")
    assert evals["test"]["perplexity"] == 127.61 and evals["valid"]["perplexity"] == 133.5
    assert train["metrics"]["valid_ppl_per_epoch"] == [150.0, 140.0]
    assert train["metrics"]["train_ppl_per_epoch"] == [100.0, 90.0]
    # One record per update, however often fairseq repeated it.
    assert train["metrics"]["train_wps_per_log_interval"] == {"min": 4000.0, "median": 4500.0, "max": 5000.0}


def test_the_recorder_command_writes_a_valid_results_file_with_its_note_and_no_goals(tmp_path, monkeypatch):
    from fairseq_adasoft import record

    runs = [f"slow={fake_run(tmp_path / 'a', 0.002, 48, [300.0])}", f"fast={fake_run(tmp_path / 'b', 0.004, 24, [280.0])}"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["record", "tuning", "--name", "toy", "--command",
                                     f"SAVE_DIR={tmp_path}/a bash tune.sh [V/15, 3V/15] {tmp_path.parent}/x", "--note",
                                     f"a toy from {tmp_path}/b", "--results-dir", str(tmp_path / "results"), "--run", *runs])
    record.main()
    result = json.loads((tmp_path / "results" / "toy.json").read_text())
    # Paths the recipe passed become relative to where record ran: a results file holds no absolute path.
    assert result["command"] == "SAVE_DIR=a bash tune.sh [V/15, 3V/15] ../x" and result["note"] == "a toy from b"
    assert [c["params"]["label"] for c in result["cases"]] == ["slow", "fast"]
    assert [c["metrics"]["lowest_valid"] for c in result["cases"]] == [False, True]
    assert result["goals"] == [] and provenance.validate(result) == []


def test_a_whole_run_is_recorded_in_one_file_with_every_protocol_and_tuning(tmp_path, monkeypatch):
    """run.sh's record run --protocols: training, phases, every protocol of protocols.sh and both tunings;
    dynamic evaluation's valid split may go unscored (its tuning scored the start of valid)."""
    from fairseq_adasoft import record

    save_dir = fake_run(tmp_path / "run", 0.006, 48, [150.0, 140.0])
    ppl = {"blocks": 130.0, "classic": 125.0, "cache": 100.0, "dynamic": 80.0, "dynamic_cache": 75.0}
    for protocol, suffix in record.PROTOCOLS.items():
        for split in ("valid", "test"):
            if split == "valid" and protocol in record.TUNINGS_ONLY_VALID:
                continue
            stats = ("--dynamic-eval: gradient statistics read from /abs/stats.pt\n" if "dynamic" in protocol else "")
            (tmp_path / "run" / f"eval_{split}{suffix}.log").write_text(
                f"{stats}Evaluated 1,000 tokens in 12.5s (80.00 tokens/s)\nLoss (base 2): 7.0, Perplexity: {ppl[protocol]}\n")
    grid = [{"size": 100, "theta": 1.0, "lambda": 0.1, "perplexity": 101.0}]
    (tmp_path / "run" / "neural_cache.json").write_text(json.dumps(
        {"subset": "valid", "streams": 10, "tokens": 5000, "without_cache": 124.9, "best": grid[0], "grid": grid}))
    (tmp_path / "run" / "dynamic_eval.json").write_text(json.dumps(
        {"subset": "valid", "streams": 1, "tokens": 2000, "without_dynamic_eval": 124.0,
         "best": {"lr": 1e-4, "decay": 0.01, "perplexity": 82.0}, "grid": [{}, {}]}))
    (tmp_path / "run" / "protocols_phases.txt").write_text("tune_neural_cache=10\ncache_test=5\n")
    monkeypatch.setattr("sys.argv", ["record", "run", "--protocols", "--name", "run", "--command", "bash run.sh",
                                     "--config", "qrnn_lm_wikitext2", "--save-dir", save_dir, "--phase-seconds",
                                     "train=60", "eval_classic=30", "--results-dir", str(tmp_path / "results")])
    record.main()
    result = json.loads((tmp_path / "results" / "run.json").read_text())
    assert provenance.validate(result) == [] and result["goals"] == []
    assert result["note"] == "embedding 400, 4 x 800 QRNN; qrnn_lm_wikitext2"
    by = {tuple(c["params"].get(k) for k in ("phase", "protocol", "split")): c["metrics"] for c in result["cases"]}
    # protocols.sh's phases are parts of run.sh's eval_classic: shown, not added to the total.
    assert by[("job", None, None)] == {"train": 60.0, "eval_classic": 30.0, "total": 90.0, "after_training": 30.0,
                                       "protocols.tune_neural_cache": 10.0, "protocols.cache_test": 5.0}
    assert by[("train", None, None)]["valid_ppl_per_epoch"] == [150.0, 140.0]
    assert {k for k in by if k[0] == "eval"} == {("eval", p, s) for p in ppl for s in ("valid", "test")} - {
        ("eval", "dynamic", "valid"), ("eval", "dynamic_cache", "valid")}
    assert by[("eval", "dynamic", "test")] == {"loss_base2": 7.0, "perplexity": 80.0, "seconds": 12.5,
                                               "statistics_from_file": True, "vs_classic": -0.36}
    assert "vs_classic" not in by[("eval", "classic", "test")]
    assert by[("tune", "cache", "valid")] == {"tokens": 5000, "streams": 10, "settings_tried": 1, "without": 124.9,
                                              "size": 100, "theta": 1.0, "lambda": 0.1, "perplexity": 101.0}
    assert by[("tune", "dynamic", "valid")]["lr"] == 1e-4 and by[("tune", "dynamic", "valid")]["settings_tried"] == 2


def test_classic_and_dynamic_are_read_from_the_cache_runs_shared_pass(tmp_path):
    """protocols.sh scores classic in the cache's pass and dynamic in dynamic_cache's: their
    logs' second line (the same pass without the cache) gives those protocols' figures."""
    from fairseq_adasoft import record

    for split in ("valid", "test"):
        for protocol, (mixed, alone) in {"cache": (100.0, 125.0), "dynamic_cache": (75.0, 80.0)}.items():
            (tmp_path / f"eval_{split}_{protocol}.log").write_text(
                f"x | --neural-cache-size: the same pass without the cache: Loss (base 2) 6.9658, Perplexity {alone}\n"
                f"Evaluated 1,000 tokens in 12.5s (80.00 tokens/s)\nLoss (base 2): 6.6, Perplexity: {mixed}\n")
    for name in record.TUNINGS.values():
        (tmp_path / name).write_text("{}")
    evals, _ = record.read_protocols(str(tmp_path), ["classic", "cache", "dynamic", "dynamic_cache"])
    assert evals["classic"]["test"] == {"loss_base2": 6.9658, "perplexity": 125.0, "same_pass_as": "cache"}
    assert evals["dynamic"]["valid"]["perplexity"] == 80.0 and evals["cache"]["test"]["perplexity"] == 100.0
    assert evals["dynamic_cache"]["test"]["seconds"] == 12.5
