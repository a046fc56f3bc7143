"""What a large vocabulary costs qrnn_lm's training on this CPU, and what
adaptive input (Baevski & Auli 2019) wins back, at equal embed_dim and QRNN
(qrnn_lm_wikitext2's 4 x 800, embedding 400; the adaptive softmax at div 4;
bf16 matmuls, --cpu-autocast-bf16, on CPUs that have bf16 instructions):

  (a) plain embedding, the head's shortlist tied to it (the main job's tying),
  (b) adaptive input (factor 4) + adaptive softmax, untied,
  (c) (b) tied: each band's embedding is its softmax cluster's (--tie-adaptive-weights;
      the tails keep their own projections, see docs/large-vocabularies.md).

On a Zipf corpus with V = 267,744 (benchmarks.zipf_corpus; WikiText-103's
cutoffs 2800,20000,76000) and on WikiText-2 (V = 33,280, the seed's cutoffs):

  speed:   real fairseq-train runs, words/s (fairseq's log, first interval
           dropped) and the largest process's peak RSS, in one process and
           under 2-process gloo DDP (torchrun + fairseq_adasoft.launch, one
           thread each, the same global batch);
  steps:   where a step's time goes, forward / backward / gradient all-reduce /
           optimizer (benchmarks.step_breakdown, in a child process with the
           runs' malloc settings), and the parameters,
           gradients and Adam states of the input and output layers;
  quality: WikiText-2 only, (a) and (c) trained the same number of updates
           (the main job's flags), validation perplexity.

    python -m benchmarks.large_vocab            # writes benchmarks/results/large_vocab.json
    python -m benchmarks.large_vocab --quick    # tiny corpora and models in a temp folder, writes nothing
    python -m benchmarks.large_vocab --side-by-side 2   # the speed goals' pairs in turn: large_vocab_side_by_side.json
    python -m benchmarks.large_vocab --side-by-side 2 --baseline-rev REV --corpus zipf
        # each pair with REV's plugin and this checkout's in turn: large_vocab_before_after.json
"""

import argparse
import os
import tempfile

import torch

from benchmarks import step_breakdown, zipf_corpus
from benchmarks.before_after import baseline_worktree, check_plugin, run_child
from benchmarks.common import BIN, DATA, MALLOC_ENV, PLUGIN_DIR, ROOT, spread, time_ms, write_result
from fairseq_adasoft.logs import json_records
from fairseq_adasoft.hardware import cpu_has_native_bf16
from fairseq_adasoft.presets import ARCHITECTURES, MAIN_JOB

VARIANTS = {
    "a": ("plain embedding + adaptive softmax, shortlist tied", ["--tie-adaptive-weights"]),
    "b": ("adaptive input + adaptive softmax", ["--adaptive-input"]),
    "c": ("adaptive input tied to the adaptive softmax", ["--adaptive-input", "--tie-adaptive-weights"]),
}
ARCH = "qrnn_lm_wikitext2"
CUTOFFS = {"zipf": ARCHITECTURES["qrnn_lm_wikitext103"]["adaptive_softmax_cutoff"],
           "wikitext2": ARCHITECTURES[ARCH]["adaptive_softmax_cutoff"]}
QUICK_MODEL, QUICK_CUTOFFS = ["--embed-dim", "16", "--hidden-size", "32", "--num-layers", "2"], "0.05,0.2,0.5"
BATCH = ["--batch-size", str(MAIN_JOB["batch_size"]), "--tokens-per-sample", str(MAIN_JOB["tokens_per_sample"])]
DDP_BATCH = ["--batch-size", str(MAIN_JOB["batch_size"] // 2), "--tokens-per-sample", str(MAIN_JOB["tokens_per_sample"])]
COMMON = ["--task", "language_modeling_freqsorted", "--arch", ARCH,
          "--criterion", "adaptive_softmax", "--optimizer", "adam", "--lr", "0.002", "--clip-norm", "0.25",
          "--cpu", "--seed", "1", "--log-format", "json", "--num-workers", "0"]
SPEED = ["--disable-validation", "--no-save", "--log-interval", "5"]
SPEED_UPDATES, QUICK_UPDATES = 50, 10  # fairseq logs every 5 updates: the median of 9 intervals
# Quality: the main job's training flags and learning rate, decayed over QUALITY_UPDATES.
ONE_PROCESS_GOAL = 1.3  # the issue's: (b) at least this many times (a)'s words/s in one process
SIDE_BY_SIDE = {"zipf": ("a", "b"), "wikitext2": ("a", "c")}  # the pairs the one-process speed goals compare
MODEL = f"--arch {ARCH} (4 x 800 QRNN, embedding 400), adaptive softmax div 4"
QUALITY_UPDATES = 600  # about one epoch of WikiText-2 at the main job's batch
# --no-save: a run never resumes an earlier one's checkpoint (of other flags, or already finished).
QUALITY = ["--no-save", "--stateful-bptt", "--lr", str(MAIN_JOB["lr"]), "--lr-scheduler", "polynomial_decay",
           "--warmup-updates", "100", "--end-learning-rate", "0.0001", "--log-interval", "100"]


# (a)'s embedding at V = 267,744 in fp32: the size its gradient, clipping and Adam stream every step.
EMBEDDING_BYTES = zipf_corpus.BENCHMARK["vocab"] * ARCHITECTURES[ARCH]["embed_dim"] * 4


def copy_gb_per_s(nbytes: int = EMBEDDING_BYTES) -> float:
    """The memory bandwidth the machine gives now: GB read + written per second by copying
    ``nbytes`` (median of a few copies). (a)'s extra work over (b) is such passes."""
    src = torch.ones(nbytes // 4)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), repeats=5)["median"]
    return round(2 * nbytes / ms / 1e6, 1)


def fairseq_flags(plugin: str = PLUGIN_DIR) -> list:
    """The flags every run shares, with the plugin it runs (--user-dir)."""
    return ["--user-dir", plugin, *COMMON]


def model_flags(corpus: str, quick: bool) -> list:
    # The main job's precision where bf16 matmuls pay (recipes/wikitext2/run.sh), fp32 elsewhere.
    precision = ["--cpu-autocast-bf16"] if cpu_has_native_bf16() else []
    return [*(QUICK_MODEL if quick else []), *precision, "--adaptive-softmax-cutoff",
            QUICK_CUTOFFS if quick else CUTOFFS[corpus], "--adaptive-softmax-div-value", "4"]


def interval_wps(log_text: str) -> list:
    """Words/s of each logged training interval but the first (start-up and warm-up)."""
    return [float(r["wps"]) for r in json_records(log_text.splitlines()) if "wps" in r][1:]


def train_speed(data: str, flags: list, updates: int, log: str, ddp: bool, plugin: str = PLUGIN_DIR) -> dict:
    if ddp:
        launch = [os.path.join(BIN, "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "fairseq_adasoft.launch"]
        flags = [*flags, *DDP_BATCH, "--distributed-backend", "gloo"]
        env = dict(os.environ, **MALLOC_ENV, OMP_NUM_THREADS="1")  # one core per process
    else:
        launch, flags, env = [os.path.join(BIN, "fairseq-train")], [*flags, *BATCH], dict(os.environ, **MALLOC_ENV)
    cmd = [*launch, data, *fairseq_flags(plugin), *SPEED, *flags, "--max-update", str(updates)]
    r = run_child(cmd, log, env=env)
    text = open(log).read()
    if r["returncode"] != 0:
        raise RuntimeError(f"fairseq-train failed ({log}):\n{text[-3000:]}")
    return {"intervals": interval_wps(text), "peak_rss_mb": r["peak_rss_mb"], "wall_s": r["wall_s"],
            "command": " ".join(cmd).replace(ROOT + os.sep, "")}


def speed(data: str, flags: list, updates: int, log: str, ddp: bool) -> dict:
    run = train_speed(data, flags, updates, log, ddp)
    return {"words_per_s": spread(run.pop("intervals")), **run}


def one_process_goals(zipf_b_over_a: float, wikitext2_c_over_a: float) -> dict:
    """The one-process speed goals, judged on unrounded ratios (0.9995 is slower, though it prints as 1.0)."""
    return {f"zipf_b_at_least_{ONE_PROCESS_GOAL:g}x_a_one_process": zipf_b_over_a >= ONE_PROCESS_GOAL,
            "wikitext2_c_not_slower": wikitext2_c_over_a >= 1.0}


def pair_runs(work: str, quick: bool, repeats: int, updates: int, corpora: list, plugins: dict) -> dict:
    """The one-process speed goals' pairs of ``corpora``, each run in turn ``repeats`` times
    (a, b, a, b, ...; with several plugins, each plugin's pair in turn), so a drift in the
    machine's speed reaches all alike. Per plugin label and corpus: words/s over all of each
    variant's logged intervals, each run's median, the ratio of the medians, each repeat's
    ratio of its two runs' medians, and the memory bandwidth before each repeat."""
    out = {label: {} for label in plugins}
    for corpus in corpora:
        pair = SIDE_BY_SIDE[corpus]
        data = zipf_corpus.benchmark_corpus(corpus, work, quick, DATA)
        intervals = {(label, v): [] for label in plugins for v in pair}
        medians = {(label, v): [] for label in plugins for v in pair}
        commands, bandwidth = {}, []
        for repeat in range(repeats):
            bandwidth.append(copy_gb_per_s())
            for label, plugin in plugins.items():
                for v in pair:
                    log = os.path.join(work, "large_vocab", f"side-by-side-{corpus}-{label}-{v}-{repeat}.log")
                    run = train_speed(data, [*model_flags(corpus, quick), *VARIANTS[v][1]], updates, log, ddp=False,
                                      plugin=plugin)
                    intervals[label, v] += run["intervals"]
                    medians[label, v].append(spread(run["intervals"])["median"])
                    commands[label] = run["command"]
                    print(f"{corpus:9s} {label} ({v}) run {repeat + 1}: {medians[label, v][-1]:8.0f} words/s",
                          flush=True)
        for label in plugins:
            wps = {v: spread(intervals[label, v]) for v in pair}
            out[label][corpus] = {"pair": list(pair), "words_per_s": wps,
                                  "run_medians": {v: medians[label, v] for v in pair},
                                  "repeat_ratios": [ratio(b, a) for a, b in zip(*(medians[label, v] for v in pair))],
                                  "copy_gb_per_s_before_each_repeat": bandwidth,
                                  "ratio": ratio(wps[pair[1]]["median"], wps[pair[0]]["median"]),
                                  "command": commands[label]}
    return out


def side_by_side(work: str, quick: bool, repeats: int, updates: int) -> dict:
    """Both pairs with this checkout's plugin, and the one-process speed goals judged on them."""
    out = pair_runs(work, quick, repeats, updates, list(SIDE_BY_SIDE), {"current": PLUGIN_DIR})["current"]
    z, w = out["zipf"]["words_per_s"], out["wikitext2"]["words_per_s"]
    out["goals"] = one_process_goals(z["b"]["median"] / z["a"]["median"], w["c"]["median"] / w["a"]["median"])
    return out


def before_after(work: str, quick: bool, repeats: int, updates: int, corpora: list, rev: str) -> dict:
    """The pairs of ``corpora`` with the plugin of git revision ``rev`` (a temporary worktree)
    and with this checkout's, in turn."""
    with baseline_worktree(rev) as (plugin, sha):
        check_plugin(plugin)
        runs = pair_runs(work, quick, repeats, updates, corpora, {"baseline": plugin, "current": PLUGIN_DIR})
    return {"baseline_rev": sha, **runs}


def valid_perplexity(data: str, flags: list, updates: int, log: str) -> dict:
    cmd = [os.path.join(BIN, "fairseq-train"), data, *fairseq_flags(), *QUALITY, *BATCH, *flags,
           "--max-update", str(updates), "--total-num-update", str(updates)]
    r = run_child(cmd, log, env=dict(os.environ, **MALLOC_ENV))
    records = list(json_records(open(log).read().splitlines()))
    valid = [rec for rec in records if "valid_ppl" in rec]
    if r["returncode"] != 0 or not valid:
        raise RuntimeError(f"fairseq-train failed or did not validate ({log})")
    train = [rec for rec in records if "train_wps" in rec]
    return {"updates": updates, "valid_ppl": float(valid[-1]["valid_ppl"]), "train_wps": float(train[-1]["train_wps"]),
            "wall_s": r["wall_s"], "command": " ".join(cmd).replace(ROOT + os.sep, "")}


def ratio(x, y):
    return round(x / y, 3)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny corpora, model and runs in a temp folder; no file")
    parser.add_argument("--work-dir", default=os.path.join(ROOT, "runs", "eval_lm_bench"),
                        help="where the Zipf corpus is kept (shared with benchmarks.eval_lm) and runs write")
    parser.add_argument("--side-by-side", type=int, metavar="N",
                        help="only run the one-process speed goals' pairs in turn, N times each, and write "
                             "large_vocab_side_by_side.json")
    parser.add_argument("--baseline-rev", metavar="REV",
                        help="with --side-by-side: run each pair with the plugin of git revision REV (a temporary "
                             "worktree) and with this checkout's in turn, and write large_vocab_before_after.json")
    parser.add_argument("--corpus", action="append", choices=list(SIDE_BY_SIDE),
                        help="with --baseline-rev: only this corpus's pair (repeatable; default both)")
    args = parser.parse_args(argv)
    if args.corpus and not args.baseline_rev:
        raise ValueError("--corpus picks the pairs of a --baseline-rev comparison; --side-by-side alone judges "
                         "both one-process goals, so it runs both pairs: add --baseline-rev REV, or drop --corpus")
    if args.baseline_rev and not args.side_by_side:
        raise ValueError("--baseline-rev compares the --side-by-side pairs: add --side-by-side N")
    work = tempfile.mkdtemp(prefix="large_vocab_") if args.quick else args.work_dir
    os.makedirs(os.path.join(work, "large_vocab"), exist_ok=True)
    updates = QUICK_UPDATES if args.quick else SPEED_UPDATES
    if args.side_by_side:
        head = {"model": MODEL, "batch": " ".join(BATCH)}
        command = f"python -m benchmarks.large_vocab --side-by-side {args.side_by_side}"
        if args.baseline_rev:
            corpora = args.corpus or list(SIDE_BY_SIDE)
            payload = {**head, **before_after(work, args.quick, args.side_by_side, updates, corpora, args.baseline_rev)}
            name = "large_vocab_before_after"
            command += f" --baseline-rev {args.baseline_rev}" + "".join(f" --corpus {c}" for c in corpora)
        else:
            payload = {**head, **side_by_side(work, args.quick, args.side_by_side, updates)}
            name = "large_vocab_side_by_side"
        if not args.quick:
            print(write_result(name, payload, command))
        return payload
    payload = {"variants": {k: {"what": what, "flags": " ".join(f)} for k, (what, f) in VARIANTS.items()},
               "model": MODEL,
               "batch": {"one_process": " ".join(BATCH), "ddp_per_process": " ".join(DDP_BATCH)},
               "corpora": {}, "speed": {}, "steps": {}}
    for corpus in ("zipf", "wikitext2"):
        data = zipf_corpus.benchmark_corpus(corpus, work, args.quick, DATA)
        payload["corpora"][corpus] = {"data": data.replace(ROOT + os.sep, ""),
                                      "dictionary_size": zipf_corpus.dictionary_size(data),
                                      "model_flags": " ".join(model_flags(corpus, args.quick))}
        runs = payload["speed"][corpus] = {}
        for variant, (_, flags) in VARIANTS.items():
            flags = [*model_flags(corpus, args.quick), *flags]
            payload["steps"].setdefault(corpus, {})[variant] = step_breakdown.measure_in_child(
                data, [*fairseq_flags(), *BATCH, *flags],
                os.path.join(work, "large_vocab", f"{corpus}-{variant}-steps.json"))
            for mode in ("one_process", "ddp_2_gloo"):
                log = os.path.join(work, "large_vocab", f"{corpus}-{variant}-{mode}.log")
                runs.setdefault(variant, {})[mode] = speed(data, flags, updates, log, mode != "one_process")
                print(f"{corpus:9s} ({variant}) {mode:11s} {runs[variant][mode]['words_per_s']['median']:8.0f} words/s "
                      f"peak RSS {runs[variant][mode]['peak_rss_mb']:6.0f} MB", flush=True)
    quality = {}
    for variant in ("a", "c"):
        flags = [*model_flags("wikitext2", args.quick), *VARIANTS[variant][1]]
        quality[variant] = valid_perplexity(zipf_corpus.benchmark_corpus("wikitext2", work, args.quick, DATA), flags,
                                            QUICK_UPDATES if args.quick else QUALITY_UPDATES,
                                            os.path.join(work, "large_vocab", f"quality-{variant}.log"))
        print(f"wikitext2 ({variant}) valid ppl {quality[variant]['valid_ppl']:.2f}", flush=True)
    payload["quality_wikitext2"] = quality
    payload["derived"] = derive(payload)
    if not args.quick:
        print(write_result("large_vocab", payload, "python -m benchmarks.large_vocab"))
    return payload


def derive(p: dict) -> dict:
    """The ratios the goals name, and whether each is met."""
    wps = {c: {v: {m: r["words_per_s"]["median"] for m, r in modes.items()} for v, modes in runs.items()}
           for c, runs in p["speed"].items()}
    layers = {v: p["steps"]["zipf"][v]["input_output_layers"]["train_state_bytes"] for v in VARIANTS}
    q = p["quality_wikitext2"]
    raw = {
        "zipf_b_over_a_one_process": wps["zipf"]["b"]["one_process"] / wps["zipf"]["a"]["one_process"],
        "zipf_b_over_a_ddp": wps["zipf"]["b"]["ddp_2_gloo"] / wps["zipf"]["a"]["ddp_2_gloo"],
        "zipf_io_train_state_a_over_b": layers["a"] / layers["b"],
        "zipf_io_train_state_a_over_c": layers["a"] / layers["c"],
        "wikitext2_c_over_a_one_process": wps["wikitext2"]["c"]["one_process"] / wps["wikitext2"]["a"]["one_process"],
        "wikitext2_c_valid_ppl_gap": q["c"]["valid_ppl"] / q["a"]["valid_ppl"] - 1,
    }
    derived = {k: round(v, 4 if k.endswith("gap") else 3) for k, v in raw.items()}
    derived["goals"] = {  # judged before rounding
        **one_process_goals(raw["zipf_b_over_a_one_process"], raw["wikitext2_c_over_a_one_process"]),
        "zipf_b_at_least_1.5x_a_ddp": raw["zipf_b_over_a_ddp"] >= 1.5,
        "zipf_io_train_state_at_least_5x_smaller": raw["zipf_io_train_state_a_over_b"] >= 5,
        "wikitext2_c_valid_ppl_within_3%": raw["wikitext2_c_valid_ppl_gap"] <= 0.03,
    }
    return derived


if __name__ == "__main__":
    main()
