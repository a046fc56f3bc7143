"""Reading what a training run leaves behind: fairseq's ``--log-format json``
output (the console lines ``... | train_inner | {...}`` or the raw lines of
``--log-file``), fairseq-eval-lm's result line, and the settings saved in a
checkpoint."""

import json
import os
import re
from typing import Dict, Iterable, Iterator

from fairseq_adasoft.provenance import spread

# fairseq-eval-lm's result line.
EVAL_RE = re.compile(r"Loss \(base 2\): ([0-9.]+), Perplexity: ([0-9.]+)")
# fairseq-eval-lm's other result line: tokens scored, seconds, tokens/s.
EVALUATED_RE = re.compile(r"Evaluated ([0-9,]+) tokens in ([0-9.]+)s \(([0-9.]+) tokens/s\)")
# The cache's runs' second result line (ScoreTally.line): the same pass scored without the cache.
WITHOUT_CACHE_RE = re.compile(r"without the cache: Loss \(base 2\) ([0-9.]+), Perplexity ([0-9.]+)")
# models/dynamic_eval.py's log lines: the statistics gathered in this run, or read from a kept file.
STATISTICS_GATHERED_RE = re.compile(r"--dynamic-eval: gradient statistics from \d+ training batches \((\d+) tokens\) in ([\d.]+) s")
STATISTICS_READ_RE = re.compile(r"--dynamic-eval: gradient statistics read from (\S+)")

# Setting name -> (config group, key) in a checkpoint's fairseq config.
SETTINGS = {
    "lr": ("optimization", "lr"),
    "streams": ("dataset", "batch_size"),
    "tokens_per_sample": ("task", "tokens_per_sample"),
    "max_update": ("optimization", "max_update"),
    "embed_dim": ("model", "embed_dim"),
    "hidden_size": ("model", "hidden_size"),
    "num_layers": ("model", "num_layers"),
    "dropout": ("model", "dropout"),
    "dropout_input": ("model", "dropout_input"),
    "dropout_hidden": ("model", "dropout_hidden"),
    "dropout_embed": ("model", "dropout_embed"),
    "weight_drop": ("model", "weight_drop"),
    "lr_scheduler": ("lr_scheduler", "_name"),
    "cpu_autocast_bf16": ("model", "cpu_autocast_bf16"),
    "tie_adaptive_weights": ("model", "tie_adaptive_weights"),
    "adaptive_softmax_div_value": ("model", "adaptive_softmax_div_value"),
    "stateful_bptt": ("task", "stateful_bptt"),
}


def json_records(lines: Iterable[str]) -> Iterator[dict]:
    """The JSON object on each line that holds one; other lines are skipped."""
    for line in lines:
        brace = line.find("{")
        if brace < 0:
            continue
        try:
            record = json.loads(line[brace:])
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            yield record


def labelled_paths(specs: Iterable[str], flag: str, example: str) -> Dict[str, str]:
    """``LABEL=PATH`` command-line arguments as an ordered label -> path map."""
    paths = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"{flag} takes LABEL=PATH, got {spec!r}; e.g. {example}")
        paths[label] = path
    return paths


def read_eval(path: str, without_cache: bool = False) -> dict:
    """The last fairseq-eval-lm result in the log at ``path`` (``without_cache``: that of the
    same pass without the continuous cache, which the cache's runs also log)."""
    with open(path) as f:
        text = f.read()
    found = (WITHOUT_CACHE_RE if without_cache else EVAL_RE).findall(text)
    if not found:
        raise ValueError(f"{path} holds no fairseq-eval-lm result line" + (" without the cache" * without_cache))
    loss, ppl = found[-1]
    timed = EVALUATED_RE.findall(text)
    extra = {"seconds": float(timed[-1][1])} if timed else {}  # fairseq's scoring time, the model loaded
    gathered, read = STATISTICS_GATHERED_RE.findall(text), STATISTICS_READ_RE.findall(text)
    if gathered:  # inside fairseq's scoring time: the first batch gathers them
        extra["dynamic_eval_statistics"] = {"gathered_s": float(gathered[-1][1]), "tokens": int(gathered[-1][0])}
    elif read:
        extra["dynamic_eval_statistics"] = {"read_from": read[-1]}
    return {"loss_base2": float(loss), "perplexity": float(ppl), **extra}


def read_train_log(path: str) -> dict:
    """Per-epoch words/s, training perplexity (with dropout) and validation
    perplexity from fairseq's JSON log, and the spread of words/s over its
    --log-interval records.

    fairseq 0.12 repeats records in --log-file (once more each epoch), so
    summaries are keyed by their epoch number and intervals by their update."""
    epochs, valids, intervals = {}, {}, {}
    with open(path) as f:
        for stats in json_records(f):
            if "train_wps" in stats:
                epochs[int(stats["epoch"])] = stats
            elif "valid_ppl" in stats:
                valids[int(stats["epoch"])] = stats
            elif "wps" in stats and "num_updates" in stats:
                intervals[int(stats["num_updates"])] = float(stats["wps"])
    if not epochs:
        raise ValueError(f"{path} holds no fairseq epoch summary (was --log-format json used?)")
    epochs = [epochs[k] for k in sorted(epochs)]
    valids = [valids[k] for k in sorted(valids)]
    train = {
        "epochs": len(epochs),
        "updates": int(epochs[-1]["train_num_updates"]),
        "train_wps_per_epoch": [float(e["train_wps"]) for e in epochs],
        # Beside validation perplexity, it shows over-fitting.
        "train_ppl_per_epoch": [float(e["train_ppl"]) for e in epochs],
        "train_wall_s": float(epochs[-1]["train_wall"]),
        "valid_ppl_per_epoch": [float(v["valid_ppl"]) for v in valids],
    }
    if intervals:
        # Intervals that span an epoch's end also hold its validation and checkpoint, so
        # the median sits above whole-epoch words/s and near a short benchmark's.
        train["train_wps_per_log_interval"] = spread(list(intervals.values()))
    return train


def read_settings(save_dir: str) -> dict:
    """SETTINGS as saved in the checkpoint's fairseq config, so they cannot
    drift from what ran, whatever flags the run added."""
    import torch

    path = os.path.join(save_dir, "checkpoint_last.pt")
    if not os.path.exists(path):
        raise ValueError(f"{path} not found: name a train.sh save dir whose training finished")
    cfg = torch.load(path, map_location="cpu", weights_only=False)["cfg"]
    settings = {name: cfg[group].get(key) for name, (group, key) in SETTINGS.items()}
    lr = settings["lr"]
    settings["lr"] = lr[0] if isinstance(lr, (list, tuple)) else lr  # fairseq keeps a per-phase list
    return settings


def read_run(save_dir: str) -> dict:
    """A finished run's training log and its eval-lm results on valid and test."""
    path = lambda name: os.path.join(save_dir, name)  # noqa: E731
    return {
        "train": read_train_log(path("train.log")),
        "valid": read_eval(path("eval_valid.log")),
        "test": read_eval(path("eval_test.log")),
    }
