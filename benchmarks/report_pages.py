"""The tables of docs/results.md and docs/experiments/wikitext2-cpu-hour.md.

Labels and "what was tried" are data here; every figure is read from a results
file through ``Results.get``. Run ``python -m benchmarks.report`` after a change.
"""

from benchmarks.report import (
    COMMAND, PUBLISHED_AWD_QRNN, Results, code, dynamic_scoring_time, f2, machine, minutes, n0, protocol_ppl, table,
    three, x2,
)
from benchmarks.report_large_vocab import large_vocab_table

HOUR_RUNS = [  # (file name, label) of the main job's runs, newest configuration first
    ("wikitext2_main_bf16_timed", "`run.sh`, bf16 CPU"),
    ("wikitext2_main_fp32_avx2", "`run.sh`, AVX2 CPU (fp32, 4 x 500), again"),
    ("wikitext2_main_bf16_timed_rerun", "`run.sh` again"),
    ("wikitext2_screen_fp32_avx2_500", "`run.sh`, AVX2 CPU (fp32, 4 x 500)"),
    ("wikitext2_main", "`EPOCHS=7`, slower bf16 CPU"),
    ("wikitext2_main_quick", "`QUICK=1`"),
]


def cache_setting(r: Results, name: str) -> str:
    best = r.get(f"{name}_protocols", "cache", "tuning", "best")
    return f"{n0(best['size'])}, {best['theta']:g}, {best['lambda']:g}"


def hour_table(r: Results) -> str:
    rows = []
    for name, label in HOUR_RUNS:
        train = r.get(name, "train")
        rows.append([
            label, machine(r, name), f"{n0(train['updates'])} ({train['epochs']})",
            minutes(train["train_wall_s"]), minutes(r.get(name, "wall_seconds", "total")),
            three(protocol_ppl(r, name, "valid")), three(protocol_ppl(r, name), "classic"),
            cache_setting(r, name), f"{code(name)}, {code(name + '_protocols')}",
        ])
    return table(["run", "machine", "updates (epochs begun)", "training", "whole job", "valid: blocks / classic / cache",
                  "test: blocks / classic / cache", "cache size, theta, lambda", "files"], rows)


def compare_table(r: Results) -> str:
    n = "wikitext2_compare"
    rows = []
    for kind in ("adaptive", "full"):
        run = r.get(n, "runs", kind)
        rows.append([kind, n0(r.get(n, "train_wps_median", kind)), f"{n0(run['train']['train_wall_s'])} s",
                     f2(run["valid"]["perplexity"]), f2(run["test"]["perplexity"])])
    seed = r.get(n, "published_seed")
    rows.append([f"published seed, {seed['hardware']}", "—",
                 f"{seed['adaptive']['train_minutes']} vs {seed['full']['train_minutes']} min", "—",
                 f"{seed['adaptive']['test_ppl']} vs {seed['full']['test_ppl']}"])
    return table(["softmax", "train words/s (median of epochs)", "train time", "valid ppl", "test ppl"], rows) + (
        f"\n\nAdaptive: {x2(r.get(n, 'speedup_train_wps'))} the words/s, test perplexity "
        f"{100 * r.get(n, 'test_ppl_gap'):+.1f}% against the full softmax ({code(n)}, {machine(r, n)}).")


LM_SETUPS = [("qrnn_lm+adaptive_softmax", "`qrnn_lm` + `adaptive_softmax`"), ("qrnn_lm+full_softmax", "`qrnn_lm` + full softmax"),
             ("lstm_lm+adaptive_loss", "fairseq `lstm_lm` + `adaptive_loss`"), ("lstm_lm+cross_entropy", "fairseq `lstm_lm` + `cross_entropy`")]


def speed_tables(r: Results) -> str:
    lm = ["lm_throughput", "lm_throughput_avx2"]
    parts = ["### Training words/s through `fairseq-train` (`python -m benchmarks.lm_throughput`)", "",
             table(["setup"] + [f"{machine(r, n)} ({code(n)})" for n in lm],
                   [[label] + [n0(r.get(n, "results", key, "wps", "median")) for n in lm] for key, label in LM_SETUPS])]
    out = "output_layer"
    vocab = r.get(out, "settings", "vocabularies")
    rows = [[f"{n0(v['V'])} ({v['targets']}), cutoffs {v['cutoffs']}"]
            + [f"{n0(r.get(out, 'results', key, m, 'ms_median'))} ({n0(r.get(out, 'results', key, m, 'peak_rss_increase_mb'))} MB)"
               for m in ("full", "ours", "fairseq", "torch")] + [x2(r.get(out, "speedups_median", key, "ours_vs_full"))]
            for key, v in vocab.items()]
    parts += ["", f"### Output layer + loss, forward+backward, ms (peak memory) (`python -m benchmarks.output_layer`, {code(out)}, {machine(r, out)})", "",
              table(["V, targets, cutoffs", "full softmax", "ours", "fairseq `AdaptiveSoftmax`", "torch `AdaptiveLogSoftmaxWithLoss`", "ours vs full"], rows)]
    vs = "vocab_scaling"
    rows = [[n0(row["V"])] + [f"{n0(row[k]['ms_median'])} ({n0(row[k]['peak_rss_increase_mb'])} MB)" for k in ("full", "adaptive_seed_rule", "adaptive_auto")]
            + [str(row["cutoffs"]["auto"]), f"{x2(row['speedup_vs_full']['seed_rule'])} / {x2(row['speedup_vs_full']['auto'])}"]
            for row in r.get(vs, "rows")]
    parts += ["", f"### Cost against vocabulary size, Zipf targets, ms (`python -m benchmarks.vocab_scaling`, {code(vs)})", "",
              table(["V", "full softmax", "adaptive, [V/15, 3V/15]", "adaptive, `auto`", "`auto` cutoffs", "speed-up (seed rule / auto)"], rows)]
    q = ["qrnn_layer_cpu", "qrnn_layer_cpu_bf16", "qrnn_layer_cuda", "qrnn_layer_cpu_avx2", "qrnn_layer_cpu_avx2_main"]
    rows = []
    for n in q:
        s, res = r.get(n, "shape"), r.get(n, "results")
        size = f"{s.get('C', s['H'])} -> {s['H']}" if "C" in s else str(s["H"])
        rows.append([f"{code(n)} ({machine(r, n) if r.get(n, 'machine', 'gpu') is None else r.get(n, 'machine', 'gpu')})", size,
                     f2(res["window2"]["layer_linear_ms"]["median"]) if "window2" in res else "—",
                     f2(res["window2"]["layer_conv_ms"]["median"]) if "window2" in res else "—",
                     f2(res["stack"]["qrnn_ms"]["median"]), f2(res["stack"]["lstm_ms"]["median"]), x2(res["stack"]["qrnn_speedup_vs_lstm"])])
    parts += ["", "### QRNN forward+backward, T = 70, B = 48, ms (`python -m benchmarks.qrnn_layer`)", "",
              table(["file (machine)", "units", "window-2 layer, GEMM gates", "window-2 layer, conv1d gates", "4-layer QRNN", "4-layer `nn.LSTM`", "QRNN vs LSTM"], rows)]
    b = "cpu_bf16_avx2"
    rows = [[label, f2(r.get(b, "results", k, "fp32_ms", "median")), f2(r.get(b, "results", k, "bf16_ms", "median")), x2(r.get(b, "results", k, "bf16_vs_fp32"))]
            for k, label in (("gate_gemm", "one gate GEMM"), ("qrnn_stack", "4 x 800 QRNN stack"))]
    parts += ["", f"### bf16 autocast on a CPU without bf16 instructions, ms (`python -m benchmarks.cpu_bf16`, {code(b)}, {machine(r, b)})", "",
              table(["", "fp32", "bf16 autocast", "bf16 / fp32"], rows)]
    w = "width_throughput"
    widths = r.get(w, "results")
    parts += ["", f"### The main job's model at each QRNN width, bf16, 60 updates (`python -m benchmarks.width_throughput`, {code(w)}, {machine(r, w)})", "",
              table(["QRNN"] + [f"4 x {k}" for k in widths],
                    [["words/s (median)"] + [n0(v["wps"]["median"]) for v in widths.values()],
                     [f"epochs in {r.get(w, 'settings', 'hours')} h at that speed"] + [f2(v["epochs_in_hours"]) for v in widths.values()]])]
    return "\n".join(parts)


EVAL_VARIANTS = [("a", "(a) before"), ("b", "(b) target-aware"), ("c", "(c) fairseq `lstm_lm` + `adaptive_loss`"),
                 ("d", "(d) `qrnn_lm`, full softmax")]
EVAL_CORPORA = [("wikitext2", "WikiText-2 test"), ("zipf", "Zipf, V = 267,744")]


def eval_lm_table(r: Results) -> str:
    n = "eval_lm"
    rows = []
    for corpus, label in EVAL_CORPORA:
        runs, derived = r.get(n, "results", corpus), r.get(n, "derived", corpus)
        for protocol in r.get(n, "results", corpus, "b"):
            cells = [f"{n0(runs[v][protocol]['words_per_s'])} ({n0(runs[v][protocol]['peak_rss_mb'])} MB)"
                     if protocol in runs.get(v, {}) else "—" for v, _ in EVAL_VARIANTS]
            same = "same" if derived["perplexity_equal"][protocol] else "**differs**"
            rows.append([label, f"`{protocol}`", *cells, x2(derived["speedup_b_vs_a"][protocol]),
                         f"{runs['b'][protocol]['printed']['perplexity']} ({same})"])
    goals = [f"- {g['goal']}: {'met' if g['met'] else 'not measured' if g['met'] is None else '**not met**'}"
             for g in r.get(n, "goals")]
    chunk = r.get(n, "softmax_batch", "zipf", "a")
    return "\n".join([
        f"### `fairseq-eval-lm`: target-aware scoring, words/s (peak RSS) (`python -m benchmarks.eval_lm`, {code(n)}, {machine(r, n)})", "",
        "(a) is the plugin before target-aware scoring (`baseline` in the file), run from a git worktree on the same "
        f"checkpoint as (b); at V = 267,744 it runs with `--softmax-batch {chunk}` to fit in memory. Models trained "
        "briefly (speed does not depend on training), so the perplexities only show that (a) and (b) agree. "
        "How it works: [scoring.md](scoring.md).", "",
        table(["corpus", "protocol"] + [label for _, label in EVAL_VARIANTS] + ["(b) / (a)", "perplexity (b), vs (a)"], rows), "",
        "The issue's goals, as the file judges them:", "", *goals,
    ])


DYNAMIC_RUNS = [("wikitext2_main_fp32_avx2", "`run.sh`, AVX2 CPU (fp32, 4 x 500)")]  # *_protocols.json with dynamic evaluation
PUBLISHED_DYNAMIC = [  # WikiText-2 test, classic protocol -> with dynamic evaluation (Krause et al. 2018)
    ("AWD-LSTM", 65.8, 44.3, "Krause et al. 2018"),
    ("AWD-QRNN", 66.8, 44.0, "the authors' dynamic-evaluation README, 20-token segments"),
]


def dynamic_table(r: Results) -> str:
    rows = []
    for name, label in DYNAMIC_RUNS:
        p = f"{name}_protocols"
        test = {k: r.get(p, k, "test") for k in ("classic", "cache", "dynamic", "dynamic_cache")}
        best = r.get(p, "dynamic", "tuning", "best")
        rows.append([label, machine(r, p), " / ".join(f2(t["perplexity"]) for t in test.values()),
                     f"{100 * (1 - test['dynamic']['perplexity'] / test['classic']['perplexity']):.1f}%",
                     dynamic_scoring_time(test["dynamic"]), f"{best['lr']:g}, {best['decay']:g}", code(p)])
    published = "; ".join(f"{model} {before} -> {after} ({source})" for model, before, after, source in PUBLISHED_DYNAMIC)
    return "\n".join([
        table(["checkpoint", "machine", "test: classic / cache / dynamic / dynamic + cache", "dynamic below classic",
               "test scored in", "lr, decay (tuned on valid)", "file"], rows), "",
        f"Published WikiText-2 test perplexities, classic -> dynamic evaluation (not measured here): {published}.",
    ])


def results_page(r: Results) -> str:
    return "\n".join([
        "# Results", "",
        f"<!-- Generated by `{COMMAND}` from benchmarks/results/*.json: edit the renderer, not this page. -->", "",
        "Every figure below is read from the results file named beside it, which also holds the command, git revision",
        "and machine of its run. How the main job's settings were chosen: [experiments/wikitext2-cpu-hour.md](experiments/wikitext2-cpu-hour.md).", "",
        "## WikiText-2 main job (`recipes/wikitext2/run.sh`)", "",
        "Perplexities are `fairseq-eval-lm`'s under the protocols of [stateful-bptt.md](stateful-bptt.md);",
        "the cache setting was chosen on valid ([continuous-cache.md](continuous-cache.md)).", "",
        hour_table(r), "",
        "### Dynamic evaluation ([dynamic-evaluation.md](dynamic-evaluation.md))", "",
        dynamic_table(r), "",
        "Published WikiText-2 test perplexities, for reference (not measured here; classic protocol, no cache):",
        f"the seed experiment's QRNN {r.get('wikitext2_compare', 'published_seed', 'adaptive', 'test_ppl')} with adaptive softmax and "
        f"{r.get('wikitext2_compare', 'published_seed', 'full', 'test_ppl')} with full softmax ({code('wikitext2_compare')}, `published_seed`); "
        f"AWD-QRNN {PUBLISHED_AWD_QRNN['test_ppl']} ({PUBLISHED_AWD_QRNN['source']}).", "",
        "## Adaptive against full softmax (`recipes/wikitext2/compare.sh`)", "",
        compare_table(r), "",
        "![Loss against wall-clock time and against epoch, adaptive and full softmax](../benchmarks/results/wikitext2_compare.png)", "",
        "## Speed benchmarks", "",
        speed_tables(r), "",
        eval_lm_table(r), "",
        large_vocab_table(r), "",
    ])


# docs/experiments/wikitext2-cpu-hour.md
def hour(r, name):
    t = r.get(name, "train")
    return (f"test {three(protocol_ppl(r, name), 'classic')}; {n0(t['updates'])} updates "
            f"over {t['epochs']} epochs in {minutes(t['train_wall_s'])}")


def sweep(r, name, labels):
    parts = []
    for key, label in labels.items():
        valid = r.get(name, "runs", key, "train", "valid_ppl_per_epoch")
        parts.append(f"{label} {f2(valid[-1])}" + (f" after {len(valid)} epochs" if len(valid) > 1 else ""))
    return "valid " + "; ".join(parts)


def cache(r, name):
    t = r.get(f"{name}_protocols", "cache", "tuning")
    return (f"valid {f2(t['without_cache'])} -> {f2(t['best']['perplexity'])} (size {n0(t['best']['size'])}, theta "
            f"{t['best']['theta']:g}, lambda {t['best']['lambda']:g}, best of {len(t['grid'])}); test "
            f"{f2(r.get(name + '_protocols', 'cache', 'test', 'perplexity'))}")


def runs(*names):
    summaries = ("wikitext2_tuning", "wikitext2_dropout", "wikitext2_batch", "wikitext2_width")
    return ", ".join(code(n) + ("" if n.startswith(summaries) or n.endswith("_protocols") else " (+ `_protocols`)") for n in names)


DROPS = {"baseline": "0.2/0.2/0.1", "more_dropout": "0.3/0.3/0.15 (stopped in epoch 3)", "less_dropout": "0.1/0.1/0.05"}
STEPS = [  # (step, what was tried, result, files, kept)
    ("1", "`qrnn_lm_wikitext2` at the seed's 4 x 300, fp32, Adam lr 0.002, 6 epochs", lambda r: hour(r, "wikitext2_main_4x300"),
     ["wikitext2_main_4x300"], "no: a wider model"),
    ("2", "embedding 400, 4 x 800, `--cpu-autocast-bf16 --stateful-bptt --tie-adaptive-weights`, lr 0.002, 5 epochs",
     lambda r: hour(r, "wikitext2_bf16_800"), ["wikitext2_bf16_800"], "the model"),
    ("3", "Adam lr x streams, one epoch each (the whole schedule in it), valid after it", lambda r: sweep(r, "wikitext2_tuning", {
        k: f"lr {r.get('wikitext2_tuning', 'runs', k, 'settings', 'lr'):g}, {r.get('wikitext2_tuning', 'runs', k, 'settings', 'streams')} streams"
        for k in r.get("wikitext2_tuning", "runs")}), ["wikitext2_tuning"], "48 streams (faster epochs); lr 0.006 for a 7x longer schedule"),
    ("4", "the output layer's matmuls in bf16 while training too (step 3's runs from the second on)", lambda r: "no run of its own",
     [], "yes"),
    ("5", "the main job: lr 0.006, 7 epochs, on a slower bf16 CPU", lambda r: hour(r, "wikitext2_main"), ["wikitext2_main"], "yes (until step 9)"),
    ("6", "lr 0.008 over 8 epochs", lambda r: hour(r, "wikitext2_main_lr008_8ep"), ["wikitext2_main_lr008_8ep"], "no: lr 0.006"),
    ("7", "the continuous cache on step 5's checkpoint (evaluation only)", lambda r: cache(r, "wikitext2_main"),
     ["wikitext2_main_protocols"], "`PROTOCOL=cache`"),
    ("8", "every tail tied to the embedding (`--adaptive-softmax-div-value 1`), fp32, one epoch",
     lambda r: sweep(r, "wikitext2_tuning_fp32_avx2", {"lr_0.008_48_fp32": "div 4", "lr_0.008_48_fp32_div1": "div 1"}),
     ["wikitext2_tuning_fp32_avx2"], "no: div 4"),
    ("9", "lr decaying over the hour (`timed_polynomial_decay`) against over 3 epochs, fp32, AVX2",
     lambda r: f"{hour(r, 'wikitext2_main_fp32_avx2_timed')}; 3 epochs: {hour(r, 'wikitext2_main_fp32_avx2_3ep')}",
     ["wikitext2_main_fp32_avx2_timed", "wikitext2_main_fp32_avx2_3ep"], "yes, on every CPU"),
    ("10", "dropout (`--dropout`/`-input`/`-hidden`) in fp32", lambda r: f"{sweep(r, 'wikitext2_dropout_fp32_avx2', DROPS)}; 0.1/0.1/0.05, "
     f"{hour(r, 'wikitext2_main_fp32_avx2_lowdrop')}", ["wikitext2_dropout_fp32_avx2", "wikitext2_main_fp32_avx2_lowdrop"],
     "half dropout in fp32 (until step 12)"),
    ("11", "half the batch: 24 streams at lr 0.004", lambda r: hour(r, "wikitext2_main_fp32_avx2_b24"),
     ["wikitext2_batch_fp32_avx2", "wikitext2_main_fp32_avx2_b24"], "no: 48 streams"),
    ("12", "a narrower QRNN in fp32, the architecture's dropout: 4 x 600, then 4 x 500",
     lambda r: f"4 x 600: {hour(r, 'wikitext2_screen_fp32_avx2_600_drop2')}; 4 x 500: {hour(r, 'wikitext2_screen_fp32_avx2_500')}",
     ["wikitext2_width_fp32_avx2", "wikitext2_screen_fp32_avx2_600_drop2", "wikitext2_screen_fp32_avx2_500"],
     "4 x 500 on CPUs without bf16"),
    ("12b", "the 4 x 500 at lr 0.008", lambda r: hour(r, "wikitext2_screen_fp32_avx2_500_lr008"),
     ["wikitext2_screen_fp32_avx2_500_lr008"], "no: lr 0.006"),
    ("13", "`run.sh` as it is on a faster bf16 CPU", lambda r: hour(r, "wikitext2_main_bf16_timed"), ["wikitext2_main_bf16_timed"],
     "the main job"),
    ("14", "1.5x the dropout (0.3/0.3/0.15) over that hour", lambda r: hour(r, "wikitext2_screen_bf16_drop3"),
     ["wikitext2_screen_bf16_drop3"], "no"),
    ("15", "the same job again", lambda r: hour(r, "wikitext2_main_bf16_timed_rerun"), ["wikitext2_main_bf16_timed_rerun"],
     "run-to-run spread"),
]

CURVES = [("wikitext2_main", "step 5"), ("wikitext2_screen_fp32_avx2_500", "step 12, 4 x 500 fp32"),
          ("wikitext2_main_bf16_timed", "step 13"), ("wikitext2_screen_bf16_drop3", "step 14"),
          ("wikitext2_main_bf16_timed_rerun", "step 15")]


def experiment_blocks(r: Results) -> dict:
    steps = table(["step", "what was tried", "result (test: blocks / classic / cache)", "files", "kept"],
                  [[s, what, result(r), runs(*files), kept] for s, what, result, files, kept in STEPS])
    curves = table(["run", "machine", "valid ppl by epoch (`fairseq-train`; the last at the stop)", "file"],
                   [[label, machine(r, n), ", ".join(f2(v) for v in r.get(n, "train", "valid_ppl_per_epoch")), code(n)]
                    for n, label in CURVES])
    return {"steps": steps, "curves": curves}
