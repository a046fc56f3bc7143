"""fairseq-eval-lm words/s and peak memory before (a) and after (b)
target-aware scoring, side by side, with two reference points: (c) fairseq's
lstm_lm + adaptive_loss of the same size and (d) qrnn_lm with a full softmax.

(a) runs the plugin of --baseline-rev (default 6ccfa01, the commit before
target-aware scoring: every batch builds the N x V log-probabilities and
gathers the targets' column) from a temporary ``git worktree``; (b), (c) and
(d) run this checkout's plugin. Each model is trained once, briefly, with
the real fairseq-train (speed and memory do not depend on training; (a) and
(b) score the same checkpoint) and kept under runs/eval_lm_bench/. Each
measurement is one fairseq-eval-lm child on the test split: the words/s it
logs, the child's wall seconds, its peak RSS (ru_maxrss from os.wait4) and
its printed perplexity.

Corpora: WikiText-2 (data-bin/wikitext-2, V = 33,280, qrnn_lm_wikitext2) and
a Zipf corpus with V = 267,744 (benchmarks.zipf_corpus; qrnn_lm_wikitext103's
cutoffs on a 2 x 256 QRNN), where (a) needs --softmax-batch to fit in memory.
Protocols: presets.EVAL_PROTOCOLS' blocks and classic (--stateful-bptt),
each also with the continuous cache (qrnn_lm only).

    python -m benchmarks.eval_lm             # writes benchmarks/results/eval_lm.json
    python -m benchmarks.eval_lm --only wikitext2 --variants a --protocols blocks,classic --tag before
    python -m benchmarks.eval_lm --quick     # tiny corpora and models in a temp folder, writes nothing

Needs recipes/wikitext2/prepare.sh to have run (data-bin/wikitext-2).
"""

import argparse
import contextlib
import json
import os
import shlex
import shutil
import tempfile
import time

from benchmarks import zipf_corpus
from benchmarks.before_after import baseline_worktree, check_plugin, code_digest, run_child
from benchmarks.common import BIN, DATA, MALLOC_ENV, PLUGIN_DIR, ROOT, tagged, write_result
from fairseq_adasoft.logs import EVAL_RE, EVALUATED_RE
from fairseq_adasoft.hardware import cpu_has_native_bf16
from fairseq_adasoft.presets import ARCHITECTURES, EVAL_PROTOCOLS
from fairseq_adasoft.tasks.language_modeling_freqsorted import NEURAL_CACHE_LAMBDA, NEURAL_CACHE_THETA

WORK_DIR = os.path.join(ROOT, "runs", "eval_lm_bench")  # gitignored: corpora, checkpoints, logs
BASELINE_REV = "6ccfa01"  # the commit before target-aware scoring
# What fairseq logs when --user-dir's package was imported from elsewhere first.
FOREIGN_IMPORT = "has already been imported"
CACHE_SIZE = 2000  # Grave et al. 2017's WikiText-2 cache, the middle of tune_cache.SIZES
CACHE = ["--neural-cache-size", str(CACHE_SIZE), "--neural-cache-theta", str(NEURAL_CACHE_THETA),
         "--neural-cache-lambda", str(NEURAL_CACHE_LAMBDA)]
P = EVAL_PROTOCOLS
BLOCKS = ["--tokens-per-sample", str(P["block_tokens"]), "--batch-size", str(P["block_batch_size"])]
CLASSIC = ["--stateful-bptt", "--tokens-per-sample", str(P["classic_tokens"]),
           "--batch-size", str(P["classic_test_streams"])]
PROTOCOLS = {"blocks": BLOCKS, "classic": CLASSIC, "blocks_cache": BLOCKS + CACHE, "classic_cache": CLASSIC + CACHE}
VARIANTS = {
    "a": ("qrnn", "qrnn_lm + adaptive softmax, the --baseline-rev plugin (a git worktree)"),
    "b": ("qrnn", "qrnn_lm + adaptive softmax, this checkout's plugin"),
    "c": ("lstm", "fairseq's lstm_lm + adaptive_loss (fairseq's AdaptiveSoftmax), this checkout's task"),
    "d": ("qrnn_full", "qrnn_lm + full softmax, this checkout's plugin"),
}
# corpus -> variant -> protocols measured, in this order: (a) and (b) alternate within a protocol.
PLAN = {
    "wikitext2": {"a": tuple(PROTOCOLS), "b": tuple(PROTOCOLS), "c": ("blocks",), "d": ("blocks", "classic")},
    "zipf": {"a": ("blocks", "classic"), "b": ("blocks", "classic")},
}
NOT_MEASURED = {
    "c": {"classic*": "--stateful-bptt needs a model that carries its state (qrnn_lm); fairseq's lstm_lm "
                      "scores every batch alone, so the task refuses it",
          "*_cache": "--neural-cache-size needs qrnn_lm"},
    "d": {"*_cache": "a reference point for speed; the cache is measured on (a) and (b)"},
}
# (a)'s positions per log-probability call at V = 267,744: a whole block batch's N x V tensors would crowd 23 GB.
SOFTMAX_BATCH, QUICK_SOFTMAX_BATCH = 2048, 1024
ARCH = {"wikitext2": "qrnn_lm_wikitext2", "zipf": "qrnn_lm_wikitext103"}
WT2 = ARCHITECTURES[ARCH["wikitext2"]]
# (embed, hidden, layers); at V = 267,744 a small QRNN, so that the output layer dominates.
SIZES = {"wikitext2": tuple(str(WT2[k]) for k in ("embed_dim", "hidden_size", "num_layers")), "zipf": ("256", "256", "2")}
QUICK_SIZE, QUICK_ZIPF_CUTOFFS = ("16", "32", "2"), "0.05,0.2,0.5"
TRAIN_UPDATES, QUICK_UPDATES = 40, 5
TRAIN = ["--task", "language_modeling_freqsorted", "--cpu", "--optimizer", "adam", "--lr", "0.002",
         "--clip-norm", "0.25", "--tokens-per-sample", "70", "--batch-size", "8", "--disable-validation",
         "--no-epoch-checkpoints", "--no-save-optimizer-state", "--seed", "1", "--log-interval", "10"]
# torch >= 2.6 loads with weights_only=True, which refuses the argparse.Namespace that fairseq
# saves for a legacy (args-based) model such as lstm_lm; these checkpoints are our own.
LEGACY_CHECKPOINT_ENV = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def shown(cmd) -> str:
    return shlex.join(cmd).replace(ROOT + os.sep, "")


def parse_eval_log(text: str) -> dict:
    """Tokens, seconds and words/s of fairseq-eval-lm's last result, and its loss and perplexity as printed."""
    evaluated, scores = EVALUATED_RE.findall(text), EVAL_RE.findall(text)
    if not evaluated or not scores:
        raise ValueError("the log holds no fairseq-eval-lm result lines ('Evaluated ...', 'Loss (base 2) ...')")
    tokens, seconds, per_s = evaluated[-1]
    loss, ppl = scores[-1]
    return {"tokens": int(tokens.replace(",", "")), "eval_s": float(seconds), "words_per_s": float(per_s),
            "loss_base2": float(loss), "perplexity": float(ppl), "printed": {"loss": loss, "perplexity": ppl}}


def train(save_dir: str, data: str, flags: list, updates: int) -> str:
    """checkpoint_last.pt of a brief fairseq-train run; skipped when ``save_dir`` holds one with these flags."""
    ckpt, record = os.path.join(save_dir, "checkpoint_last.pt"), os.path.join(save_dir, "command.json")
    cmd = [os.path.join(BIN, "fairseq-train"), data, "--user-dir", PLUGIN_DIR, *TRAIN, *flags,
           "--max-update", str(updates), "--save-dir", save_dir]
    if os.path.exists(ckpt) and os.path.exists(record):
        with open(record) as f:
            if json.load(f)["command"] == shown(cmd):
                return ckpt
        raise ValueError(f"{save_dir} holds a checkpoint trained with other flags: delete that folder, "
                         f"or pass --work-dir a new one")
    shutil.rmtree(save_dir, ignore_errors=True)  # fairseq-train would resume a half-done run
    os.makedirs(save_dir)
    print("training:", shown(cmd), flush=True)
    r = run_child(cmd, os.path.join(save_dir, "train.log"), env=dict(os.environ, **MALLOC_ENV))
    if r["returncode"] != 0 or not os.path.exists(ckpt):
        raise RuntimeError(f"fairseq-train failed; see {save_dir}/train.log")
    with open(record, "w") as f:
        json.dump({"command": shown(cmd), **r}, f)
    return ckpt


def saved_cutoffs(ckpt: str) -> str:
    """The adaptive softmax cutoffs as word ids, as the task resolved them into the checkpoint."""
    import torch

    return torch.load(ckpt, map_location="cpu", weights_only=False)["cfg"]["model"]["adaptive_softmax_cutoff"]


def train_models(corpus: str, data: str, work: str, quick: bool, needed: set) -> dict:
    """Model name -> (checkpoint, training flags) of the models the chosen variants score."""
    updates, (e, h, layers) = (QUICK_UPDATES, QUICK_SIZE) if quick else (TRAIN_UPDATES, SIZES[corpus])
    qrnn = ["--arch", ARCH[corpus], "--criterion", "adaptive_softmax"]
    if cpu_has_native_bf16():  # the main job's precision where bf16 matmuls pay (recipes/wikitext2/run.sh)
        qrnn += ["--cpu-autocast-bf16"]
    qrnn += ["--embed-dim", e, "--hidden-size", h, "--num-layers", layers] if quick or corpus == "zipf" else []
    if corpus == "zipf":  # the WikiText-103 preset's ids need V > 76,000; the tiny corpus takes fractions
        qrnn += ["--adaptive-softmax-cutoff", QUICK_ZIPF_CUTOFFS if quick else ARCHITECTURES[ARCH[corpus]]
                 ["adaptive_softmax_cutoff"]]
    flags, models = {"qrnn": qrnn, "qrnn_full": qrnn + ["--adaptive-softmax-cutoff", ""]}, {}
    for name in ("qrnn", "qrnn_full"):  # lstm_lm takes the qrnn model's cutoffs
        if name in needed or (name == "qrnn" and "lstm" in needed):
            models[name] = (train(os.path.join(work, corpus, name), data, flags[name], updates), flags[name])
    if "lstm" in needed:
        # The qrnn model's cutoffs as the task resolved them: the same word ids.
        lstm = ["--arch", "lstm_lm", "--decoder-embed-dim", e, "--decoder-hidden-size", h,
                "--decoder-out-embed-dim", e, "--decoder-layers", layers, "--criterion", "adaptive_loss",
                "--adaptive-softmax-cutoff", saved_cutoffs(models["qrnn"][0]), "--ddp-backend", "legacy_ddp",
                # lstm_lm's max positions are its training --tokens-per-sample: eval-lm skips longer blocks.
                "--tokens-per-sample", str(P["block_tokens"]), "--batch-size", "1"]
        models["lstm"] = (train(os.path.join(work, corpus, "lstm"), data, lstm, updates), lstm)
    return models


def evaluate(data: str, plugin: str, ckpt: str, flags: list, log_path: str, env_vars=None) -> dict:
    cmd = [os.path.join(BIN, "fairseq-eval-lm"), data, "--user-dir", plugin, "--task", "language_modeling_freqsorted",
           "--path", ckpt, "--gen-subset", "test", "--cpu", "--num-workers", "0", *flags]
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    load = os.getloadavg()[0]  # other work on the machine slows a run: its words/s needs this beside it
    r = run_child(cmd, log_path, env=dict(os.environ, **(env_vars or {})))
    with open(log_path) as f:
        text = f.read()
    if r.pop("returncode") != 0:
        raise RuntimeError(f"fairseq-eval-lm failed ({log_path}):\n{text[-3000:]}")
    if FOREIGN_IMPORT in text:
        raise RuntimeError(f"{log_path}: --user-dir {plugin} was not the code that ran ({FOREIGN_IMPORT!r})")
    prefix = "".join(f"{k}={v} " for k, v in (env_vars or {}).items())
    return {**parse_eval_log(text), **r, "load_average_1min": round(load, 2), "command": prefix + shown(cmd)}


def ratio(x, y):
    return round(x / y, 3) if x is not None and y else None


def derive(results: dict) -> dict:
    """Per corpus: (b)/(a) words/s per protocol, (b)/(c) and (b)/(d) at blocks, (a)/(b) peak RSS, and
    whether (a) and (b) printed the same perplexity and loss."""
    derived = {}
    for corpus, runs in results.items():
        a, b, c, d = (runs.get(v, {}) for v in "abcd")
        both = [p for p in b if p in a]
        get = lambda r, p, k: r[p][k] if p in r else None  # noqa: E731
        derived[corpus] = {
            "speedup_b_vs_a": {p: ratio(b[p]["words_per_s"], a[p]["words_per_s"]) for p in both},
            "memory_ratio_a_vs_b": {p: ratio(a[p]["peak_rss_mb"], b[p]["peak_rss_mb"]) for p in both},
            "perplexity_equal": {p: a[p]["printed"] == b[p]["printed"] for p in both},
            "b_vs_c": {"blocks": ratio(get(b, "blocks", "words_per_s"), get(c, "blocks", "words_per_s"))},
            "b_vs_d": {"blocks": ratio(get(b, "blocks", "words_per_s"), get(d, "blocks", "words_per_s"))},
        }
    return derived


def goals(derived: dict) -> list:
    """The issue's goals; ``met`` is None where a run they need was not made."""
    at = lambda corpus, key: derived.get(corpus, {}).get(key, {}).get("blocks")  # noqa: E731
    at_least = lambda x, goal: None if x is None else x >= goal  # noqa: E731
    equal = [e for d in derived.values() for e in d["perplexity_equal"].values()]
    return [
        {"goal": "WikiText-2 blocks: (b) words/s >= 3x (a)", "met": at_least(at("wikitext2", "speedup_b_vs_a"), 3)},
        {"goal": "WikiText-2 blocks: (b) words/s >= (c) lstm_lm + adaptive_loss", "met": at_least(at("wikitext2", "b_vs_c"), 1)},
        {"goal": "V=267,744 blocks: (b) words/s >= 5x (a)", "met": at_least(at("zipf", "speedup_b_vs_a"), 5)},
        {"goal": "V=267,744 blocks: (b) peak RSS at least 4x lower than (a)'s",
         "met": at_least(at("zipf", "memory_ratio_a_vs_b"), 4)},
        {"goal": "(a) and (b) print the same loss and perplexity, every corpus and protocol measured",
         "met": all(equal) if equal else None},
    ]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny corpora and models in a temp folder, no results file")
    parser.add_argument("--tag", default="", help="suffix of the results file's name, e.g. before")
    parser.add_argument("--baseline-rev", default=BASELINE_REV, help="the commit whose plugin (a) runs")
    parser.add_argument("--only", choices=tuple(PLAN), help="one corpus (default: both)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="a comma-separated subset of a,b,c,d")
    parser.add_argument("--protocols", help=f"a comma-separated subset of {','.join(PROTOCOLS)} "
                                            "(default: all in PLAN; --quick: blocks,classic_cache)")
    parser.add_argument("--work-dir", help=f"corpora, checkpoints and logs (default {WORK_DIR}; --quick: a temp folder)")
    args = parser.parse_args(argv)
    for flag, given, allowed in (("--variants", args.variants, VARIANTS), ("--protocols", args.protocols, PROTOCOLS)):
        if given is not None and (not given or not set(given.split(",")) <= set(allowed)):
            raise ValueError(f"{flag} takes a comma-separated subset of {','.join(allowed)}, got {given!r}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start, load_before = time.perf_counter(), os.getloadavg()
    work = args.work_dir or (tempfile.mkdtemp(prefix="eval_lm_quick_") if args.quick else WORK_DIR)
    corpora = [args.only] if args.only else list(PLAN)
    variants = [v for v in VARIANTS if v in args.variants.split(",")]
    wanted = args.protocols.split(",") if args.protocols else ["blocks", "classic_cache"] if args.quick else PROTOCOLS
    plan = {c: {v: [p for p in PLAN[c][v] if p in wanted] for v in variants if v in PLAN[c]} for c in corpora}
    corpora = [c for c in corpora if any(plan[c].values())]
    softmax_batch = QUICK_SOFTMAX_BATCH if args.quick else SOFTMAX_BATCH
    data, models, corpus_info = {}, {}, {}
    for corpus in corpora:
        data[corpus] = zipf_corpus.benchmark_corpus(corpus, work, args.quick, DATA)
        needed = {VARIANTS[v][0] for v, protocols in plan[corpus].items() if protocols}
        models[corpus] = train_models(corpus, data[corpus], work, args.quick, needed)
        corpus_info[corpus] = {"data": shown([data[corpus]]), "dictionary_size": zipf_corpus.dictionary_size(data[corpus]),
                               "tokens": zipf_corpus.split_tokens(data[corpus]),
                               "model_flags": {name: shown(flags) for name, (_, flags) in models[corpus].items()}}
    results = {c: {} for c in corpora}
    worktree = baseline_worktree(args.baseline_rev) if "a" in variants else contextlib.nullcontext((None, None))
    with worktree as (baseline_plugin, sha):
        plugins = {v: baseline_plugin if v == "a" else PLUGIN_DIR for v in variants}
        code = {v: {"plugin": "the --baseline-rev worktree" if v == "a" else shown([PLUGIN_DIR]),
                    "modules_checked": check_plugin(p), "code_digest": code_digest(p)} for v, p in plugins.items()}
        for corpus, protocol in ((c, p) for c in corpora for p in PROTOCOLS):
            for variant in (v for v in variants if protocol in plan[corpus].get(v, ())):
                chunk = ["--softmax-batch", str(softmax_batch)] if variant == "a" and corpus == "zipf" else []
                log = os.path.join(work, corpus, "eval", f"{variant}-{protocol}.log")
                r = evaluate(data[corpus], plugins[variant], models[corpus][VARIANTS[variant][0]][0],
                             PROTOCOLS[protocol] + chunk, log, LEGACY_CHECKPOINT_ENV if variant == "c" else None)
                if r["tokens"] != corpus_info[corpus]["tokens"]["test"]:
                    raise RuntimeError(f"{log} scored {r['tokens']} of the test split's "
                                       f"{corpus_info[corpus]['tokens']['test']} tokens")
                results[corpus].setdefault(variant, {})[protocol] = r
                print(f"{corpus:9s} ({variant}) {protocol:13s} {r['words_per_s']:9.1f} words/s  wall {r['wall_s']:7.1f} s"
                      f"  peak RSS {r['peak_rss_mb']:7.0f} MB  load {r['load_average_1min']:.2f}  "
                      f"ppl {r['printed']['perplexity']}", flush=True)
    derived = derive(results)
    payload = {
        "what": "fairseq-eval-lm on the test split, one child process per run: words/s as eval-lm logs it "
                "(its 'tokens/s'), the child's wall seconds and peak RSS, its printed loss and perplexity",
        "baseline": {"rev": args.baseline_rev, "sha": sha},
        "variants": {v: {"model": VARIANTS[v][0], "what": VARIANTS[v][1], **code[v]} for v in variants},
        "plugin_code_differs_a_vs_b": code["a"]["code_digest"] != code["b"]["code_digest"]
        if {"a", "b"} <= set(code) else None,
        "protocols": {p: shlex.join(flags) for p, flags in PROTOCOLS.items()},
        "softmax_batch": {"zipf": {"a": softmax_batch}, "note": "fairseq-eval-lm --softmax-batch, (a) at V=267,744 "
                          "only: SequenceScorer scores a batch of B x T >= it in chunks of that many positions"},
        "corpora": corpus_info,
        "training": {"updates": QUICK_UPDATES if args.quick else TRAIN_UPDATES, "common_flags": shlex.join(TRAIN)},
        "memory_method": "peak_rss_mb: ru_maxrss from os.wait4 on the fairseq-eval-lm child, spawned by a small "
                         "fresh Python shim (a child's ru_maxrss starts at the peak RSS of the process that execs it)",
        "not_measured": NOT_MEASURED,
        "results": results,
        "derived": derived,
        "goals": goals(derived),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print("derived:", json.dumps(derived), "\ngoals:", json.dumps(payload["goals"]), flush=True)
    if args.quick:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)  # a failed run keeps it, for its logs
        return payload
    defaults = vars(parse_args([]))
    options = [f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "tag" and v != defaults[k]]
    name, command = tagged("eval_lm", " ".join(["python -m benchmarks.eval_lm", *options]), args.tag)
    print("wrote", write_result(name, payload, command=command))
    return payload


if __name__ == "__main__":
    main()
