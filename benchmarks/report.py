"""Render the docs' figures from benchmarks/results/*.json (one schema:
fairseq_adasoft.provenance), so that no figure is typed by hand.

    python -m benchmarks.report           # rewrite what differs
    python -m benchmarks.report --check   # write nothing; exit 1 naming each file that differs

docs/results.md is every benchmark module's ``SECTIONS`` (benchmarks/<name>.py), in ORDER:

    SECTIONS = [{"title": "heading", "command": "python -m benchmarks.x",
                 "files": ["results_stem", ...],        # each file's cases are rows
                 "columns": {"header": "key[:format spec]"},  # key: a params or metrics name
                 "where": {"param": value},             # optional: only the cases whose params include these
                 "text": "markdown paragraph",          # optional, before the table
                 "goals": judge}]                       # optional: judge(record) -> [goal], targets judged here

README.md and docs/**/*.md may hold blocks ``<!-- KEY:begin`` TEMPLATE ``-->`` ... ``<!-- KEY:end -->``:
the text between ``-->`` and the end marker is TEMPLATE with each placeholder
``{stem:param=value,...:key[:format spec]}`` replaced by that file's one matching case's value,
``{stem:goal=part of its name:value}`` by a goal's value (or threshold, met), ``{stem:machine}`` by
its machine in words, ``{stem:date}`` and ``{stem:revision}`` likewise.
A spread renders as its median, a list item by item, None as —, an int with thousands
separators, a float with 2 decimals unless a format spec says otherwise (also "min": seconds
as "1.5 min", "x": a ratio as "2.50x").
"""

import argparse
import importlib
import json
import re
import sys
from pathlib import Path

from fairseq_adasoft.provenance import validate

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
COMMAND = "python -m benchmarks.report"
# docs/results.md's order; a module with SECTIONS not named here follows, by name.
ORDER = ["wikitext2", "lm_throughput", "output_layer", "qrnn_layer", "cpu_bf16", "eval_lm", "large_vocab", "logit_layout",
         "test_suite"]
BLOCK = re.compile(r"(<!-- (\w[\w-]*):begin\n(.*?)\n-->\n)(.*?)(<!-- \2:end -->)", re.S)
# Format specs beyond Python's: seconds as minutes, a ratio as "2.50x".
UNITS = {"min": lambda s: f"{s / 60:.1f} min", "x": lambda r: f"{r:.2f}x"}
PLACEHOLDER = re.compile(r"\{(\w+):([^{}]*)\}")


class ResultsError(Exception):
    """A results file the docs read is missing, or lacks a case or key they read."""


def load(stem: str) -> dict:
    try:
        record = json.loads((RESULTS_DIR / f"{stem}.json").read_text())
    except FileNotFoundError:
        raise ResultsError(f"benchmarks/results/{stem}.json is missing; {COMMAND} reads it") from None
    problems = validate(record)
    if problems:
        raise ResultsError(f"benchmarks/results/{stem}.json is not in the results schema: " + "; ".join(problems))
    return record


def fmt(value, spec: str = "") -> str:
    if isinstance(value, dict):  # a spread of repeats
        value = value["median"]
    if isinstance(value, list):
        return ", ".join(fmt(v, spec) for v in value)
    if value is None:
        return "—"
    if isinstance(value, (bool, str)):
        return str(value)
    if spec in UNITS:
        return UNITS[spec](value)
    if spec:
        return format(value, spec)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def machine(record: dict) -> str:
    """The machine in words, from the file's machine block."""
    m = record["machine"]
    words = [f"{m['cpu_cores']} cores, {m['cpu']}"]
    if (m.get("cpu_family_model") or {}).get("family") is not None:
        words.append(f"family {m['cpu_family_model']['family']}")
    if m.get("cpu_capability"):
        words.append(m["cpu_capability"] + (" + bf16" if m.get("cpu_native_bf16") else ""))
    return ", ".join(([m["gpu"]] if m.get("gpu") else []) + words)


def select(record: dict, where: dict) -> list:
    return [c for c in record["cases"]
            if all(k in c["params"] and str(c["params"][k]) == str(v) for k, v in where.items())]


def value(case: dict, key: str):
    return case["params"][key] if key in case["params"] else case["metrics"].get(key)


def row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def section(s: dict, shown: set = None) -> str:
    """A section's table, and under it each file's goals (those in the file: only where the page first shows it)."""
    several, shown = len(s["files"]) > 1, set() if shown is None else shown
    header = (["file (machine)"] if several else []) + list(s["columns"])
    lines, goals, where = [row(header), "|" + "---|" * len(header)], [], []
    for stem in s["files"]:
        record = load(stem)
        where.append(f"`{stem}.json`: {machine(record)}, {record['date'][:10]}, revision `{record['git_revision'][:7]}`")
        lines += [row(([f"`{stem}.json` ({machine(record)})"] if several else [])
                      + [fmt(value(case, c.partition(":")[0]), c.partition(":")[2]) for c in s["columns"].values()])
                  for case in select(record, s.get("where", {}))]
        judged = ([] if stem in shown else record["goals"]) + (s["goals"](record) if "goals" in s else [])
        shown.add(stem)
        goals += ["", f"The project's stated targets, judged on `{stem}.json`:", ""] * bool(judged) + [
            f"- {g['name']}: {fmt(g['value'])} (target {fmt(g['threshold'])}): {'met' if g['met'] else '**not met**'}"
            for g in judged]
    return "\n".join([f"## {s['title']}", "", f"`{s['command']}`; " + "; ".join(where) + ".",
                      *(["", s["text"]] if s.get("text") else []), "", *lines, *goals])


def sections() -> list:
    names = [p.stem for p in (ROOT / "benchmarks").glob("*.py") if re.search(r"^SECTIONS\s*=", p.read_text(), re.M)]
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    return [s for n in names for s in importlib.import_module(f"benchmarks.{n}").SECTIONS]


def placeholder(match) -> str:
    stem, rest = match.group(1), match.group(2)
    record = load(stem)
    if rest in ("machine", "date", "revision"):
        return {"machine": machine(record), "date": record["date"][:10], "revision": record["git_revision"][:7]}[rest]
    where, key, *spec = rest.split(":")
    params = dict(pair.split("=", 1) for pair in where.split(",") if pair)
    if "goal" in params:  # {stem:goal=PART OF ITS NAME:value|threshold|met}
        found = [{"params": {}, "metrics": g} for g in record["goals"] if params["goal"] in g["name"]]
    else:
        found = select(record, params)
    if len(found) != 1 or value(found[0], key) is None:
        raise ResultsError(f"benchmarks/results/{stem}.json has {len(found)} cases or goals for {params} "
                           f"(the docs read one, with {key!r}): {match.group(0)}")
    return fmt(value(found[0], key), ":".join(spec))


def render_blocks(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + PLACEHOLDER.sub(placeholder, m.group(3)) + "\n" + m.group(5), text)


def results_page() -> str:
    shown = set()
    return "\n\n".join([
        "# Results", f"<!-- Generated by `{COMMAND}` from benchmarks/results/*.json: edit the benchmarks' SECTIONS, "
        "not this page. -->", "Every figure below is read from the results file named above its table, which also "
        "holds the command, git revision and machine of its run. How the main job's settings were chosen: "
        "[experiments/wikitext2-cpu-hour.md](experiments/wikitext2-cpu-hour.md).",
        *(section(s, shown) for s in sections())]) + "\n"


def render() -> dict:
    """{path relative to the repository: the text it should hold}."""
    pages = {"docs/results.md": results_page()}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        rel = str(path.relative_to(ROOT))
        if rel != "docs/results.md" and BLOCK.search(path.read_text()):
            pages[rel] = render_blocks(path.read_text())
    return pages


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 naming every file that differs")
    args = parser.parse_args(argv)
    try:
        pages = render()
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stale = [p for p, text in pages.items() if not (ROOT / p).is_file() or (ROOT / p).read_text() != text]
    for p in stale:
        if args.check:
            print(f"{p} is stale: run {COMMAND}", file=sys.stderr)
        else:
            (ROOT / p).write_text(pages[p])
            print(f"wrote {p}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
