"""One timed run of benchmarks.peers, start to finish: train to the clock, score the last checkpoint with
fairseq-eval-lm, and keep the outcome as a record (fairseq_adasoft.provenance's schema, one case) in the
run's own directory. The record is written last, so a directory without one holds a run that stopped:
it is deleted and the run redone from scratch (a timed run cannot be resumed fairly: the restart's
start-up, reload and cold caches would be charged to its budget). A record from another machine kind,
or of other flags, is redone too, never mixed in."""

import glob
import json
import os
import re
import shutil

from benchmarks.harness import BIN, MALLOC_ENV, PLUGIN_DIR, fairseq_train, run_child
from fairseq_adasoft import provenance
from fairseq_adasoft.logs import EVALUATED_RE, read_eval, read_train_log
from fairseq_adasoft.presets import EVAL_PROTOCOLS

CURVE = "curve.json"  # validation perplexity of the run's interval checkpoints, kept once scored
THREADS = 2  # the 2 cores: every run and every evaluation, whatever the machine has
THREAD_ENV = {"OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
# What makes two machines one kind: runs of different kinds are never judged together.
KIND_KEYS = ("cpu", "cpu_family_model", "cpu_capability", "cpu_native_bf16", "cpu_cores")
# fairseq-train's line with the model's size.
PARAMS_RE = re.compile(r"num\. shared model params: ([\d,]+)")
INTERVAL_CHECKPOINT_RE = re.compile(r"checkpoint_\d+_(\d+)\.pt$")
SECONDS_PER_MINUTE = 60.0
# recipes/wikitext2/eval.sh's protocols (presets.EVAL_PROTOCOLS): fairseq's independent blocks, and
# awd-lstm-lm's classic stream read in steps with the state carried (one stream on test).
PROTOCOL_FLAGS = {
    "blocks": lambda split: ["--tokens-per-sample", str(EVAL_PROTOCOLS["block_tokens"]),
                             "--batch-size", str(EVAL_PROTOCOLS["block_batch_size"])],
    "classic": lambda split: ["--stateful-bptt", "--tokens-per-sample", str(EVAL_PROTOCOLS["classic_tokens"]),
                              "--batch-size", str(EVAL_PROTOCOLS[f"classic_{split}_streams"])],
}


def machine_kind(machine: dict) -> dict:
    return {k: machine.get(k) for k in KIND_KEYS}


def record_path(run_dir: str) -> str:
    """The run's record, named after the run (its directory), as provenance.write_results names it."""
    return os.path.join(run_dir, f"{os.path.basename(run_dir)}.json")


def finished(run_dir: str, flags: str, kind: dict):
    """The run's metrics if its record is complete, from this machine kind and these flags; else None."""
    path = record_path(run_dir)
    if not os.path.isfile(path):
        return None
    record = json.load(open(path))
    if provenance.validate(record):
        return None
    if machine_kind(record["machine"]) != kind:
        print(f"peers: {os.path.basename(run_dir)} ran on another machine kind ({machine_kind(record['machine'])}): "
              "running it again here", flush=True)
        return None
    case = record["cases"][0]
    return case["metrics"] if case["params"].get("flags") == flags else None


# eval.sh's task (the plugin's loader also reads fairseq's own models' checkpoints).
PLUGIN_TASK = ["--user-dir", PLUGIN_DIR, "--task", "language_modeling_freqsorted"]


def evaluate(data: str, checkpoint: str, split: str, protocol: str, log_path: str, task_flags=PLUGIN_TASK) -> dict:
    """fairseq-eval-lm under ``protocol`` as eval.sh runs it: perplexity, scoring seconds and tokens scored."""
    cmd = [os.path.join(BIN, "fairseq-eval-lm"), data, *task_flags, "--path", checkpoint, "--gen-subset", split,
           *PROTOCOL_FLAGS[protocol](split), "--cpu"]
    r = run_child(cmd, log_path, env=dict(os.environ, **MALLOC_ENV, **THREAD_ENV))
    if r["returncode"] != 0:
        raise RuntimeError(f"fairseq-eval-lm on {split} ({protocol}) failed:\n{r['text'][-3000:]}")
    return {**read_eval(log_path), "tokens": int(EVALUATED_RE.findall(r["text"])[-1][0].replace(",", ""))}


def parameters(train_log_text: str) -> int:
    found = PARAMS_RE.findall(train_log_text)
    if not found:
        raise ValueError("fairseq-train's log holds no 'num. shared model params' line: was it fairseq 0.12's?")
    return int(found[-1].replace(",", ""))


def words_per_s(train: dict) -> float:
    """The median of the logged intervals' words/s, or of the epochs' where no interval was logged."""
    spread = train.get("train_wps_per_log_interval") or provenance.spread(train["train_wps_per_epoch"])
    return spread["median"]


def training_seconds(checkpoint: str) -> float:
    """The training time fairseq's guard had counted when it saved ``checkpoint``."""
    import torch

    return float(torch.load(checkpoint, map_location="cpu", weights_only=False)["extra_state"]["previous_training_time"])


def train_and_score(run_dir: str, data: str, flags: list, evals: list, command: str, kind: dict,
                    task_flags=PLUGIN_TASK) -> dict:
    """Metrics of the run in ``run_dir`` (named after it): its record's when finished here, else trained and scored now.
    ``flags``: fairseq-train's, after the data, save dir and logging; ``evals``: (split, protocol) pairs;
    ``task_flags``: fairseq-eval-lm's task."""
    name, shown_flags = os.path.basename(run_dir), " ".join(flags + task_flags).replace(PLUGIN_DIR, "fairseq_adasoft")
    done = finished(run_dir, shown_flags, kind)
    if done is not None:
        print(f"peers: {name} finished before on this machine kind: kept", flush=True)
        return done
    shutil.rmtree(run_dir, ignore_errors=True)  # a stopped run, another machine's or other flags': from scratch
    os.makedirs(run_dir)
    log = os.path.join(run_dir, "train.log")
    r = fairseq_train([data, "--user-dir", PLUGIN_DIR, "--save-dir", run_dir, "--log-format", "json", *flags], log,
                      env=THREAD_ENV)
    train = read_train_log(log)
    last = os.path.join(run_dir, "checkpoint_last.pt")
    metrics = {"parameters": parameters(r["text"]), "updates": train["updates"], "epochs": train["epochs"],
               "train_wall_s": train["train_wall_s"], "clock_s": round(training_seconds(last), 1),
               "train_wps": words_per_s(train), "peak_rss_mb": r["peak_rss_mb"]}
    for split, protocol in evals:
        scored = evaluate(data, last, split, protocol, os.path.join(run_dir, f"eval_{split}_{protocol}.log"), task_flags)
        metrics[f"{split}_ppl_{protocol}"] = scored["perplexity"]
        metrics[f"{split}_{protocol}_eval_s"] = scored.get("seconds")
        metrics[f"{split}_{protocol}_tokens"] = scored["tokens"]
    provenance.write_results(name, [{"params": {"run": name, "flags": shown_flags}, "metrics": metrics}], command,
                             run_dir)
    return metrics


def interval_checkpoints(run_dir: str) -> list:
    """The run's --save-interval-updates checkpoints, in update order."""
    found = [(int(m.group(1)), p) for p in glob.glob(os.path.join(run_dir, "checkpoint_*_*.pt"))
             if (m := INTERVAL_CHECKPOINT_RE.search(p))]
    return [p for _, p in sorted(found)]


def evenly(items: list, n: int) -> list:
    """``n`` of ``items`` spread evenly, the last included (all when there are fewer)."""
    if len(items) <= n:
        return list(items)
    return [items[round((i + 1) * len(items) / n) - 1] for i in range(n)]


def curve(run_dir: str, data: str, points: int, final: tuple, task_flags=PLUGIN_TASK) -> tuple:
    """(minutes of training, validation perplexity, blocks protocol) at up to ``points`` interval checkpoints,
    then ``final`` (the last checkpoint's). Scores are kept in the run's CURVE file and not redone."""
    path = os.path.join(run_dir, CURVE)
    scored = json.load(open(path)) if os.path.isfile(path) else {}
    for checkpoint in evenly(interval_checkpoints(run_dir), points):
        key = os.path.basename(checkpoint)
        if key not in scored:
            ppl = evaluate(data, checkpoint, "valid", "blocks", checkpoint[:-len(".pt")] + "_valid.log",
                           task_flags)["perplexity"]
            scored[key] = [round(training_seconds(checkpoint) / SECONDS_PER_MINUTE, 2), ppl]
            json.dump(scored, open(path, "w"))
    pairs = sorted(scored.values()) + [list(final)]
    return [m for m, _ in pairs], [p for _, p in pairs]
