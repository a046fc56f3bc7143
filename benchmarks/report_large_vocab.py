"""The large-vocabulary table of docs/results.md (``python -m benchmarks.large_vocab``'s
file), and where its one-process gain stops."""

import re

from benchmarks.report import Results, code, f2, machine, n0, table, x2

# The one-process goal as the results file names it (benchmarks.large_vocab.derive).
ONE_PROCESS_GOAL_KEY = re.compile(r"zipf_b_at_least_([0-9.]+)x_a_one_process")

LARGE_VOCAB_VARIANTS = [("a", "(a) plain embedding"), ("b", "(b) adaptive input"), ("c", "(c) adaptive input, tied")]
LARGE_VOCAB_CORPORA = [("zipf", "Zipf, V = 267,744"), ("wikitext2", "WikiText-2, V = 33,280")]


def large_vocab_table(r: Results) -> str:
    n = "large_vocab"
    rows = []
    for corpus, label in LARGE_VOCAB_CORPORA:
        for v, name in LARGE_VOCAB_VARIANTS:
            speed, steps = r.get(n, "speed", corpus, v), r.get(n, "steps", corpus, v)
            share = steps["share_of_median"]
            rows.append([label, name] + [f"{n0(speed[m]['words_per_s']['median'])} ({n0(speed[m]['peak_rss_mb'])} MB)"
                                         for m in ("one_process", "ddp_2_gloo")]
                        + [f"{steps['parameters'] / 1e6:.1f}M", f"{steps['input_output_layers']['train_state_bytes'] / 2**20:,.0f} MB",
                           " / ".join(f"{100 * share[k]:.0f}%" for k in ("forward", "backward", "all_reduce_2_gloo", "optimizer"))])
    q = r.get(n, "quality_wikitext2")
    goals = [f"- `{goal}`: {'met' if met else '**not met**'}" for goal, met in r.get(n, "derived", "goals").items()]
    return "\n".join([
        f"### Large vocabularies: adaptive input (`python -m benchmarks.large_vocab`, {code(n)}, {machine(r, n)})", "",
        f"{r.get(n, 'model')}; fairseq-train words/s (largest process's peak RSS), one process and 2-process gloo DDP "
        "at the same global batch; the parameters, what training keeps for the input and output layers (fp32 weights, "
        "gradients and Adam's moments), and the share of a one-process step in forward / backward / a 2-process "
        "all-reduce of its gradients / the optimizer (timed in a process of its own with the fairseq-train runs' malloc "
        "settings). "
        "How it works: [large-vocabularies.md](large-vocabularies.md).", "",
        table(["corpus", "variant", "words/s, 1 process", "words/s, DDP 2 x gloo", "parameters",
               "input + output layers' training state", "forward / backward / all-reduce / optimizer"], rows), "",
        f"WikiText-2 validation perplexity after {q['a']['updates']} updates of the main job's flags: "
        f"(a) {f2(q['a']['valid_ppl'])}, (c) {f2(q['c']['valid_ppl'])} "
        f"({100 * r.get(n, 'derived', 'wikitext2_c_valid_ppl_gap'):+.1f}%). The goals, as the file judges them:", "",
        *goals, "", side_by_side(r), "", before_after(r), "", one_process_bound(r), "",
        logit_layout_table(r, "logit_layout", "the recipes' malloc settings"), "",
        logit_layout_table(r, "logit_layout_glibc_malloc", "glibc's own malloc settings, as a plain fairseq-train run"),
    ])


def side_by_side(r: Results) -> str:
    """The one-process speed goals' pairs run in turn (``--side-by-side N``), and the goals as that file judges them."""
    n = "large_vocab_side_by_side"
    pairs = []
    for corpus, label in LARGE_VOCAB_CORPORA:
        a, b = r.get(n, corpus, "pair")
        runs = r.get(n, corpus, "run_medians")
        repeats = r.get(n, corpus, "repeat_ratios")
        pairs.append(f"({b}) / ({a}) at {label}: {r.get(n, corpus, 'ratio'):.3f} (runs of ({a}): "
                     f"{', '.join(n0(x) for x in runs[a])} words/s; of ({b}): {', '.join(n0(x) for x in runs[b])}; "
                     f"each repeat's ratio: {', '.join(f'{x:.3f}' for x in repeats)}, after a memory copy at "
                     f"{', '.join(f'{x:g}' for x in r.get(n, corpus, 'copy_gb_per_s_before_each_repeat'))} GB/s)")
    goals = ", ".join(f"`{goal}` {'met' if met else '**not met**'}" for goal, met in r.get(n, "goals").items())
    return (f"The same one-process runs, each pair in turn {len(runs[a])} times so that a drift in the machine's "
            f"speed reaches both alike ({code(n)}, {machine(r, n)}, {r.get(n, 'date')[:16]} UTC; the ratio of the "
            f"medians over all logged intervals): {'; '.join(pairs)}. As that file judges them: {goals}.")


def before_after(r: Results) -> str:
    """The pairs with an earlier revision's plugin and this one's, in turn (``--baseline-rev``)."""
    n = "large_vocab_before_after"
    labels = dict(LARGE_VOCAB_CORPORA)
    parts = []
    for corpus, result in r.get(n, "current").items():
        a, b = result["pair"]
        repeats = len(result["run_medians"][a])  # the same for every corpus of one run
        ratios = {k: r.get(n, k, corpus, "ratio") for k in ("baseline", "current")}
        wps = {k: {v: n0(r.get(n, k, corpus, "words_per_s", v, "median")) for v in (a, b)} for k in ratios}
        parts.append(f"({b}) / ({a}) at {labels[corpus]}: {ratios['baseline']:.3f} before (({a}): {wps['baseline'][a]}, "
                     f"({b}): {wps['baseline'][b]} words/s), {ratios['current']:.3f} after (({a}): {wps['current'][a]}, "
                     f"({b}): {wps['current'][b]})")
    return (f"Before and after on one machine ({code(n)}, {machine(r, n)}): the same pairs with the plugin of "
            f"`{r.get(n, 'baseline_rev')[:7]}` and with the file's revision, the four runs in turn "
            f"{repeats} times: {'; '.join(parts)}.")


def one_process_bound(r: Results) -> str:
    """How fast (b)'s one-process step would have to be for the goal, given what (a) spends beyond it."""
    n = "large_vocab"
    ms = {v: 1000 * r.get(n, "steps", "zipf", v, "tokens_per_step")
          / r.get(n, "speed", "zipf", v, "one_process", "words_per_s", "median") for v in "ab"}
    optimizer = {v: r.get(n, "steps", "zipf", v, "ms", "optimizer", "median") for v in "ab"}
    extra = ms["a"] - ms["b"]
    goal = next(float(m.group(1)) for m in map(ONE_PROCESS_GOAL_KEY.fullmatch, r.get(n, "derived", "goals")) if m)
    return (f"Where the one-process gain comes from: at V = 267,744 a fairseq-train step (tokens per step over "
            f"words/s) takes {n0(ms['a'])} ms with (a) and {n0(ms['b'])} ms with (b). Adaptive input saves the "
            f"plain embedding's {n0(extra)} ms (the breakdown puts {n0(optimizer['a'] - optimizer['b'])} ms of "
            f"(a)'s extra in the optimizer) and nothing of the QRNN's or the adaptive softmax's work, which both "
            f"run: for {goal:g}x, with the same saving, (b)'s step would have to take at most "
            f"{n0(extra / (goal - 1))} ms.")


def logit_layout_table(r: Results, n: str, malloc: str) -> str:
    """The adaptive softmax's forward + backward under each logit layout (``benchmarks.logit_layout``)."""
    layouts = list(r.get(n, "layouts"))
    rows = [[f"V = {row['V']:,}, cutoffs {row['cutoffs']}", "tied" if row["tied"] else "untied", row["head_width"],
             row["targets"], *(f2(row["ms"][k]["median"]) for k in layouts), x2(row["plain_over_default"]),
             x2(row["ms"]["unbuffered"]["median"] / row["ms"]["default"]["median"])]
            for row in r.get(n, "rows")]
    return "\n".join([
        f"#### The adaptive softmax's logit layout and memory, {malloc} (`{r.get(n, 'command')}`, {code(n)}, "
        f"{machine(r, n)})", "",
        f"One training step's output layer and loss (N = {r.get(n, 'N'):,} rows, d = {r.get(n, 'd')}), forward + "
        f"backward in ms, median of {r.get(n, 'rounds')} rounds alternating the layouts: `plain` (logits as wide as "
        "their classes), `aligned` (rows padded with -inf columns to a multiple of 8), `unbuffered` (aligned, and "
        "tails of at most 8 features multiplied features-major) and `default` (unbuffered, and the logits in memory "
        "kept from one step to the next; `fairseq_adasoft/modules/logits.py`). The first three allocate the logits "
        "afresh every step. `shortlist` targets leave the tails no rows, so they time the head alone.", "",
        table(["vocabulary", "head", "head width", "targets", *layouts, "plain / default", "unbuffered / default"], rows),
    ])
