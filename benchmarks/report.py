"""Render the docs' figures from benchmarks/results/*.json, so no figure is typed by hand.

    python -m benchmarks.report           # rewrite docs/results.md and the marked blocks
    python -m benchmarks.report --check   # exit 1, naming each file that differs

Writes docs/results.md whole, and the blocks between ``<!-- KEY:begin -->`` and
``<!-- KEY:end -->`` in README.md and docs/experiments/wikitext2-cpu-hour.md.
The tables themselves are in benchmarks/report_pages.py.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
COMMAND = "python -m benchmarks.report"

# The commands the docs name, kept here so that a rename is one edit.
MAIN_JOB = "bash recipes/wikitext2/run.sh"
TEST_SUITE = "bash scripts/test.sh"

# Published figures (not measured here), labelled as such wherever they appear.
PUBLISHED_AWD_QRNN = dict(test_ppl=66.8, source="awd-lstm-lm README: AWD-QRNN, 500 epochs, about 12.5 h on a GP100, no cache")


class ResultsError(Exception):
    """A results file the renderer reads is missing, or lacks a field it reads."""


class Results:
    """Read-only access to one directory of results files, by name and key path."""

    def __init__(self, directory: Path = RESULTS_DIR):
        self.directory = Path(directory)
        self._files = {}

    def path(self, name: str) -> str:
        return f"benchmarks/results/{name}.json"

    def exists(self, name: str) -> bool:
        return (self.directory / f"{name}.json").is_file()

    def file(self, name: str) -> dict:
        if name not in self._files:
            try:
                with open(self.directory / f"{name}.json") as f:
                    self._files[name] = json.load(f)
            except FileNotFoundError:
                raise ResultsError(f"{self.path(name)} is missing; {COMMAND} reads it") from None
        return self._files[name]

    def get(self, name: str, *keys):
        value = self.file(name)
        for i, key in enumerate(keys):
            try:
                value = value[key]
            except (KeyError, IndexError, TypeError):
                field = ".".join(str(k) for k in keys[: i + 1])
                raise ResultsError(f"{self.path(name)} has no field '{field}'; {COMMAND} reads it") from None
        return value


# Formatting: every figure passes through one of these.
def f2(x) -> str:
    return f"{x:,.2f}"


def n0(x) -> str:
    return f"{x:,.0f}"


def x2(x) -> str:
    return f"{x:.2f}x"


def minutes(seconds) -> str:
    return f"{seconds / 60:.1f} min"


def dynamic_scoring_time(test: dict) -> str:
    """How long fairseq-eval-lm --dynamic-eval took, and whether that included gathering the statistics."""
    stats = test.get("dynamic_eval_statistics") or {}
    if "gathered_s" in stats:
        return f"{minutes(test['seconds'])} ({minutes(stats['gathered_s'])} of it gathering the statistics)"
    return f"{minutes(test['seconds'])}{' (statistics kept by the tuner)' if 'read_from' in stats else ''}"


def code(name: str) -> str:
    return f"`{name}.json`"


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine(r: Results, name: str) -> str:
    """The CPU a run had, from its file's machine block (older files record less)."""
    m = r.get(name, "machine")
    words = [f"{r.get(name, 'machine', 'cpu_cores')} cores, {r.get(name, 'machine', 'cpu')}"]
    family = m.get("cpu_family_model", {}).get("family")
    if family is not None:
        words.append(f"family {family}")
    if "cpu_capability" in m:
        words.append(m["cpu_capability"] + (" + bf16" if m.get("cpu_native_bf16") else ""))
    return ", ".join(words)


def protocol_ppl(r: Results, name: str, split: str = "test") -> dict:
    """Perplexity under each protocol a ``*_protocols.json`` file holds."""
    p = f"{name}_protocols"
    return {k: r.get(p, k, split, "perplexity") for k in ("blocks", "classic", "cache") if k in r.file(p)}


def three(ppl: dict, bold: str = "") -> str:
    return " / ".join(f"**{f2(v)}**" if k == bold else f2(v) for k, v in ppl.items())


# README's blocks.
def readme_commands(r: Results) -> str:
    bf16, avx2, quick = "wikitext2_main_bf16_timed", "wikitext2_screen_fp32_avx2_500", "wikitext2_main_quick"
    lines = [
        "```bash",
        f"{MAIN_JOB}    # set up, prepare WikiText-2, train for the hour, evaluate",
        f"{TEST_SUITE}             # set up if needed, then run the test suite",
        "```",
        "",
        f"On 2 CPU cores the main job took {minutes(r.get(bf16, 'wall_seconds', 'total'))} on a CPU with bf16 "
        f"matmuls ({code(bf16)}) and {minutes(r.get(avx2, 'wall_seconds', 'total'))} on an AVX2 one "
        f"({code(avx2)}); `QUICK=1 {MAIN_JOB}` (150 updates) took {minutes(r.get(quick, 'wall_seconds', 'total'))} "
        f"({code(quick)}).",
    ]
    if r.exists("test_suite"):
        lines.append(
            f"The test suite took {minutes(r.get('test_suite', 'wall_seconds'))}: "
            f"{r.get('test_suite', 'passed')} passed, {r.get('test_suite', 'skipped')} skipped ({code('test_suite')})."
        )
    return "\n".join(lines)


# The files that measure (b) / (a) in one process at V = 267,744, and where each keeps it.
ONE_PROCESS_FILES = {"large_vocab": ("derived", "zipf_b_over_a_one_process"),
                     "large_vocab_side_by_side": ("zipf", "ratio"),
                     "large_vocab_before_after": ("current", "zipf", "ratio")}


def one_process_range(r: Results) -> str:
    ratios = [r.get(name, *keys) for name, keys in ONE_PROCESS_FILES.items()]
    return f"{min(ratios):.2f}x to {max(ratios):.2f}x"


def readme_results(r: Results) -> str:
    def hour(name, label):
        t = protocol_ppl(r, name)
        return [label, f"test {three(t, 'classic')} (blocks / classic / cache), "
                f"{minutes(r.get(name, 'train', 'train_wall_s'))} of training",
                machine(r, name), code(f"{name}_protocols")]

    def dynamic(name, label):
        p = f"{name}_protocols"
        classic, dyn = r.get(p, "classic", "test", "perplexity"), r.get(p, "dynamic", "test", "perplexity")
        return [label, f"test {f2(classic)} -> **{f2(dyn)}** ({100 * (dyn / classic - 1):+.1f}%), "
                f"{f2(r.get(p, 'dynamic_cache', 'test', 'perplexity'))} with the cache; test scored in "
                f"{dynamic_scoring_time(r.get(p, 'dynamic', 'test'))}", machine(r, p), code(p)]

    cmp, lm, lma, out, ev = "wikitext2_compare", "lm_throughput", "lm_throughput_avx2", "output_layer", "eval_lm"
    lv = "large_vocab"
    seed = r.get(cmp, "published_seed")
    rows = [
        hour("wikitext2_main_bf16_timed", "main job, bf16 CPU (4 x 800)"),
        hour("wikitext2_main_bf16_timed_rerun", "main job again, same command"),
        hour("wikitext2_screen_fp32_avx2_500", "main job, AVX2 CPU (fp32, 4 x 500)"),
        dynamic("wikitext2_main_fp32_avx2", "dynamic evaluation, main job AVX2 checkpoint"),
        ["adaptive vs full softmax, seed model, 2 epochs",
         f"{x2(r.get(cmp, 'speedup_train_wps'))} the words/s; test {f2(r.get(cmp, 'runs', 'adaptive', 'test', 'perplexity'))}"
         f" vs {f2(r.get(cmp, 'runs', 'full', 'test', 'perplexity'))}", machine(r, cmp), code(cmp)],
        ["`qrnn_lm` + adaptive vs `lstm_lm` + `adaptive_loss`",
         f"{x2(r.get(lm, 'ratios', 'qrnn_adaptive_vs_lstm_adaptive'))} the words/s "
         f"({x2(r.get(lma, 'ratios', 'qrnn_adaptive_vs_lstm_adaptive'))} on AVX2)", machine(r, lm), f"{code(lm)}, {code(lma)}"],
        ["output layer + loss vs full softmax, V = 33,280",
         f"{x2(r.get(out, 'speedups_median', 'wikitext2', 'ours_vs_full'))} faster", machine(r, out), code(out)],
        ["`fairseq-eval-lm`, target-aware scoring vs before",
         f"{x2(r.get(ev, 'derived', 'wikitext2', 'speedup_b_vs_a', 'blocks'))} the words/s on WikiText-2 (blocks); "
         f"{x2(r.get(ev, 'derived', 'zipf', 'speedup_b_vs_a', 'blocks'))} at V = 267,744, with "
         f"{x2(r.get(ev, 'derived', 'zipf', 'memory_ratio_a_vs_b', 'blocks'))} less peak memory; same perplexities",
         machine(r, ev), code(ev)],
        ["adaptive input vs plain embedding, V = 267,744",
         f"{one_process_range(r)} the training words/s in one process (one file of single runs, two of runs in turn; "
         "the ratio moves with the shared machine's state between runs), "
         f"{x2(r.get(lv, 'derived', 'zipf_b_over_a_ddp'))} under 2-process DDP, "
         f"{x2(r.get(lv, 'derived', 'zipf_io_train_state_a_over_b'))} less training state in the input and output layers; "
         f"tied, at V = 33,280: validation perplexity {100 * r.get(lv, 'derived', 'wikitext2_c_valid_ppl_gap'):+.1f}% "
         f"against the plain embedding's at equal updates",
         machine(r, lv), ", ".join(code(n) for n in ONE_PROCESS_FILES)],
        ["published: the seed, adaptive vs full softmax",
         f"test {seed['adaptive']['test_ppl']} vs {seed['full']['test_ppl']}, "
         f"{seed['adaptive']['train_minutes']} vs {seed['full']['train_minutes']} min", "GPU (published)",
         f"{code(cmp)} (`published_seed`)"],
        ["published: AWD-QRNN", f"test {PUBLISHED_AWD_QRNN['test_ppl']}", "GP100 (published)", "awd-lstm-lm README"],
    ]
    return table(["result", "figure", "machine", "file"], rows)


def splice(text: str, key: str, block: str, where: str) -> str:
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    if begin not in text or end not in text:
        raise ResultsError(f"{where} lacks the markers {begin} ... {end}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{block}\n{end}{tail}"


def render(r: Results, root: Path = None) -> dict:
    """{path relative to root (the repository): the text it should hold}."""
    root = root or ROOT
    from benchmarks import report_pages

    out = {"docs/results.md": report_pages.results_page(r)}
    readme = (root / "README.md").read_text()
    readme = splice(readme, "commands", readme_commands(r), "README.md")
    out["README.md"] = splice(readme, "results", readme_results(r), "README.md")
    exp = "docs/experiments/wikitext2-cpu-hour.md"
    text = (root / exp).read_text()
    for key, block in report_pages.experiment_blocks(r).items():
        text = splice(text, key, block, exp)
    out[exp] = text
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 naming every file that differs")
    args = parser.parse_args(argv)
    try:
        pages = render(Results(), ROOT)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stale = [p for p, text in pages.items() if not (ROOT / p).is_file() or (ROOT / p).read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p} is stale: run {COMMAND}", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        (ROOT / p).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / p).write_text(pages[p])
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    from benchmarks.report import main as _main  # one copy of the module, not __main__ beside it

    sys.exit(_main())
