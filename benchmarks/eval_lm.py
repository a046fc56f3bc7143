"""fairseq-eval-lm words/s and peak memory of (a) the plugin before target-aware scoring
(--baseline-rev, from a git worktree) and (b) this checkout's, on the same checkpoint, with
(c) fairseq's lstm_lm + adaptive_loss and (d) qrnn_lm with a full softmax for reference. Each
model trained briefly (speed does not depend on training) under runs/eval_lm_bench/; each case
one fairseq-eval-lm child on the test split of WikiText-2 or a Zipf corpus with V = 267,744
(2 x 256 QRNN: the output layer dominates), under presets.EVAL_PROTOCOLS and the cache.

    python -m benchmarks.eval_lm [--baseline-rev REV] [--quick]
"""

import atexit
import functools
import os
import shutil
import subprocess
import tempfile

from benchmarks import zipf_corpus
from benchmarks.harness import BIN, DATA, PLUGIN_DIR, ROOT, arguments, fairseq_train, find, goal, main, run_child, shown
from fairseq_adasoft.hardware import cpu_has_native_bf16
from fairseq_adasoft.logs import EVAL_RE, EVALUATED_RE
from fairseq_adasoft.presets import ARCHITECTURES, EVAL_PROTOCOLS as P
from fairseq_adasoft.tasks.language_modeling_freqsorted import NEURAL_CACHE_LAMBDA, NEURAL_CACHE_THETA

WORK_DIR = os.path.join(ROOT, "runs", "eval_lm_bench")  # gitignored
BASELINE_REV = "6ccfa01"  # the commit before target-aware scoring
FOREIGN_IMPORT = "has already been imported"  # fairseq's words when --user-dir's package came from elsewhere
CACHE = ["--neural-cache-size", "2000", "--neural-cache-theta", str(NEURAL_CACHE_THETA),
         "--neural-cache-lambda", str(NEURAL_CACHE_LAMBDA)]  # Grave et al. 2017's WikiText-2 cache size
BLOCKS = ["--tokens-per-sample", str(P["block_tokens"]), "--batch-size", str(P["block_batch_size"])]
CLASSIC = ["--stateful-bptt", "--tokens-per-sample", str(P["classic_tokens"]), "--batch-size", str(P["classic_test_streams"])]
PROTOCOLS = {"blocks": BLOCKS, "classic": CLASSIC, "blocks_cache": BLOCKS + CACHE, "classic_cache": CLASSIC + CACHE}
MODEL = {"a": "qrnn", "b": "qrnn", "c": "lstm", "d": "qrnn_full"}
# (corpus, protocol) -> variants, in turn; lstm_lm carries no state (no classic) and has no cache.
PLAN = {("wikitext2", "blocks"): "abcd", ("wikitext2", "classic"): "abd", ("wikitext2", "blocks_cache"): "ab",
        ("wikitext2", "classic_cache"): "ab", ("zipf", "blocks"): "ab", ("zipf", "classic"): "ab"}
CASES = [dict(corpus=c, protocol=p, variant=v) for (c, p), vs in PLAN.items() for v in vs]
SOFTMAX_BATCH = 2048  # (a)'s positions per log-probability call at V = 267,744: N x V tensors would crowd 23 GB
ARCH = {"wikitext2": "qrnn_lm_wikitext2", "zipf": "qrnn_lm_wikitext103"}
WT2 = ARCHITECTURES[ARCH["wikitext2"]]
SIZES = {"wikitext2": [str(WT2[k]) for k in ("embed_dim", "hidden_size", "num_layers")], "zipf": ["256", "256", "2"],
         "quick": ["16", "32", "2"]}  # (embed, hidden, layers); at V = 267,744 small, so that the output layer dominates
TRAIN = ["--task", "language_modeling_freqsorted", "--cpu", "--optimizer", "adam", "--lr", "0.002",
         "--clip-norm", "0.25", "--tokens-per-sample", "70", "--batch-size", "8", "--disable-validation",
         "--no-epoch-checkpoints", "--no-save-optimizer-state", "--seed", "1", "--log-interval", "10"]


@functools.lru_cache(maxsize=None)
def work(quick: bool) -> str:
    return tempfile.mkdtemp(prefix="eval_lm_quick_") if quick else WORK_DIR


@functools.lru_cache(maxsize=None)
def plugin(variant: str) -> str:
    """--user-dir of a variant: (a)'s is BASELINE_REV's, checked out in a worktree removed at exit."""
    if variant != "a":
        return PLUGIN_DIR
    tree = os.path.join(tempfile.mkdtemp(prefix="eval_lm_baseline_"), "tree")
    if subprocess.run(["git", "worktree", "add", "--detach", tree, BASELINE_REV], cwd=ROOT).returncode:
        raise ValueError(f"--baseline-rev {BASELINE_REV!r} names no commit of this checkout: give a sha it holds")
    atexit.register(subprocess.run, ["git", "worktree", "remove", "--force", tree], cwd=ROOT)
    return os.path.join(tree, "fairseq_adasoft")


@functools.lru_cache(maxsize=None)
def model(corpus: str, name: str, quick: bool) -> str:
    """checkpoint_last.pt of a brief fairseq-train run."""
    e, h, layers = SIZES["quick" if quick else corpus]
    flags = ["--arch", ARCH[corpus], "--criterion", "adaptive_softmax", "--embed-dim", e, "--hidden-size", h,
             "--num-layers", layers] + ["--cpu-autocast-bf16"] * cpu_has_native_bf16()
    if corpus == "zipf" or quick:  # the WikiText-103 preset's ids need V > 76,000; the tiny corpora take fractions
        flags += ["--adaptive-softmax-cutoff", "0.05,0.2,0.5" if quick else ARCHITECTURES[ARCH[corpus]]["adaptive_softmax_cutoff"]]
    flags += ["--adaptive-softmax-cutoff", ""] * (name == "qrnn_full")
    if name == "lstm":  # the qrnn model's cutoffs as its task resolved them (word ids); max positions = block tokens
        import torch

        cutoffs = torch.load(model(corpus, "qrnn", quick), weights_only=False)["cfg"]["model"]["adaptive_softmax_cutoff"]
        flags = ["--arch", "lstm_lm", "--decoder-embed-dim", e, "--decoder-hidden-size", h, "--decoder-out-embed-dim", e,
                 "--decoder-layers", layers, "--criterion", "adaptive_loss", "--adaptive-softmax-cutoff", cutoffs,
                 "--ddp-backend", "legacy_ddp", "--tokens-per-sample", str(P["block_tokens"]), "--batch-size", "1"]
    save = os.path.join(work(quick), corpus, name)
    shutil.rmtree(save, ignore_errors=True)  # fairseq-train would resume an earlier run
    fairseq_train([zipf_corpus.benchmark_corpus(corpus, work(quick), quick, DATA), "--user-dir", PLUGIN_DIR, *TRAIN,
                   *flags, "--max-update", "5" if quick else "40", "--save-dir", save], os.path.join(save, "train.log"))
    return os.path.join(save, "checkpoint_last.pt")


def parse_eval_log(text: str) -> dict:
    """Words/s of fairseq-eval-lm's last result, its tokens, and its loss and perplexity as printed."""
    evaluated, scores = EVALUATED_RE.findall(text), EVAL_RE.findall(text)
    if not evaluated or not scores:
        raise ValueError("the log holds no fairseq-eval-lm result lines ('Evaluated ...', 'Loss (base 2) ...')")
    tokens, _, per_s = evaluated[-1]
    return {"tokens": int(tokens.replace(",", "")), "words_per_s": float(per_s), "loss": scores[-1][0],
            "perplexity": scores[-1][1]}


def measure(corpus: str, protocol: str, variant: str, quick: bool = False) -> dict:
    data = zipf_corpus.benchmark_corpus(corpus, work(quick), quick, DATA)
    chunk = ["--softmax-batch", str(1024 if quick else SOFTMAX_BATCH)] * (variant == "a" and corpus == "zipf")
    cmd = [os.path.join(BIN, "fairseq-eval-lm"), data, "--user-dir", plugin(variant), "--task",
           "language_modeling_freqsorted", "--path", model(corpus, MODEL[variant], quick), "--gen-subset", "test",
           "--cpu", "--num-workers", "0", *PROTOCOLS[protocol], *chunk]
    # torch >= 2.6 loads weights only, refusing the argparse.Namespace fairseq saves for lstm_lm (our own checkpoint)
    r = run_child(cmd, os.path.join(work(quick), corpus, "eval", f"{variant}-{protocol}.log"),
                  env=dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"))
    if r["returncode"] or FOREIGN_IMPORT in r["text"]:
        raise RuntimeError(f"{shown(' '.join(cmd))} failed or ran code from elsewhere:\n{r['text'][-3000:]}")
    m = parse_eval_log(r["text"])
    if m["tokens"] != zipf_corpus.split_tokens(data)["test"]:
        raise RuntimeError(f"{shown(' '.join(cmd))} scored {m['tokens']} tokens, not the whole test split")
    return {"words_per_s": m["words_per_s"], "peak_rss_mb": r["peak_rss_mb"], "perplexity": m["perplexity"],
            "loss": m["loss"]}


def goals(cases):
    """Adds (b)'s b_over_a (words/s), a_over_b_peak_rss and same_as_a (printed loss and perplexity), then judges."""
    for c in cases:
        p = c["params"]
        if p["variant"] == "b" and any(d["params"] == dict(p, variant="a") for d in cases):
            a, b = find(cases, **dict(p, variant="a")), c["metrics"]
            b.update(b_over_a=round(b["words_per_s"] / a["words_per_s"], 3),
                     a_over_b_peak_rss=round(a["peak_rss_mb"] / b["peak_rss_mb"], 3),
                     same_as_a=(a["loss"], a["perplexity"]) == (b["loss"], b["perplexity"]))
    at = lambda corpus, key, v="b": next((c["metrics"].get(key) for c in cases if dict(  # noqa: E731
        corpus=corpus, protocol="blocks", variant=v).items() <= c["params"].items()), None)
    vs = lambda v: at("wikitext2", "words_per_s") / at("wikitext2", "words_per_s", v) if at("wikitext2", "words_per_s", v) else None  # noqa: E731
    same = [c["metrics"]["same_as_a"] for c in cases if "same_as_a" in c["metrics"]]
    return [goal("WikiText-2 blocks: (b) words/s >= 3x (a)", at("wikitext2", "b_over_a"), 3),
            goal("WikiText-2 blocks: (b) words/s >= (c) lstm_lm + adaptive_loss", vs("c"), 1),
            goal("V=267,744 blocks: (b) words/s >= 5x (a)", at("zipf", "b_over_a"), 5),
            goal("V=267,744 blocks: (b) peak RSS at least 4x lower than (a)'s", at("zipf", "a_over_b_peak_rss"), 4),
            goal("(a) and (b) print the same loss and perplexity, every corpus and protocol measured (share)",
                 sum(same) / len(same) if same else None, 1)]


SECTIONS = [dict(title="fairseq-eval-lm: target-aware scoring", command="python -m benchmarks.eval_lm", files=["eval_lm"],
                 columns={k: k for k in ("corpus", "protocol", "variant")} | {
                     "words/s": "words_per_s:,.0f", "peak RSS, MB": "peak_rss_mb:,.0f", "perplexity": "perplexity",
                     "(b) / (a)": "b_over_a:.2f", "same as (a)": "same_as_a"},
                 text=f"(a) the plugin before target-aware scoring ({BASELINE_REV}), on (b)'s checkpoint; (b) this "
                      "plugin; (c) fairseq's lstm_lm + adaptive_loss; (d) qrnn_lm, full softmax. At V = 267,744 (a) runs "
                      f"with `--softmax-batch {SOFTMAX_BATCH}` to fit in memory. Models trained briefly, so the perplexities "
                      "only show that (a) and (b) agree. How it works: [scoring.md](scoring.md).")]

if __name__ == "__main__":
    p = arguments()
    p.add_argument("--baseline-rev", default=BASELINE_REV, help="the commit whose plugin (a) runs")
    args = p.parse_args()
    BASELINE_REV = args.baseline_rev
    main("eval_lm", CASES, measure, goals, args=args,
         quick_cases=[dict(corpus="zipf", protocol=p, variant=v, quick=True) for p in ("blocks", "classic_cache")
                      for v in "ab" if p == "blocks" or v == "b"])
