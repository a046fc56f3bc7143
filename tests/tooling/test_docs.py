"""The docs agree with the results files: rendered pages are current, the
renderer shows any file in the one schema and names what it cannot read, links resolve."""

import json
import re

import pytest

from benchmarks import report

ROOT = report.ROOT


def test_committed_pages_are_what_the_renderer_writes():
    stale = [p for p, text in report.render().items() if (ROOT / p).read_text() != text]
    assert not stale, f"{', '.join(stale)} differ from the results files: run `{report.COMMAND}`"


def test_every_results_file_is_shown_in_the_docs():
    shown = (ROOT / "docs" / "results.md").read_text() + (ROOT / "README.md").read_text()
    hidden = [p.name for p in report.RESULTS_DIR.iterdir() if p.name not in shown]
    assert not hidden, f"benchmarks/results holds files no page shows: {hidden}"


def machine(**extra):
    return {"cpu": "AMD EPYC", "cpu_cores": 2, "cpu_capability": "AVX2", "cpu_native_bf16": False, "gpu": None, **extra}


def write(directory, name, cases, goals=(), **extra):
    record = {"name": name, "command": "python -m benchmarks.toy", "git_revision": "0123456789abcdef", "date":
              "2026-12-01T10:00:00+00:00", "machine": machine(**extra), "cases": cases, "goals": list(goals)}
    (directory / f"{name}.json").write_text(json.dumps(record))


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path)
    write(tmp_path, "toy", [
        {"params": {"variant": "a", "vocab": 33280}, "metrics": {"ms": {"min": 1.0, "median": 2345.678, "max": 9.0},
                                                                  "ratio": 1.5, "seconds": 90.0, "note": None}},
        {"params": {"variant": "b", "vocab": 33280}, "metrics": {"ms": 12.5, "ratio": 0.25, "seconds": 30.0}},
        {"params": {"variant": "a", "vocab": 267744}, "metrics": {"ms": 3.0, "ratio": 2.0, "seconds": 6.0}},
    ], goals=[{"name": "b at least 1.3x a", "threshold": 1.3, "value": 1.5, "met": True},
              {"name": "unmeasured", "threshold": 2.0, "value": None, "met": False}])
    write(tmp_path, "toy_gpu", [{"params": {"variant": "a", "vocab": 33280}, "metrics": {"ms": 1.25}}], gpu="H100")
    return tmp_path


def test_a_section_renders_each_files_cases_as_rows_and_its_goals(results):
    section = {"title": "Toy", "command": "python -m benchmarks.toy", "files": ["toy"], "where": {"vocab": 33280},
               "text": "A paragraph.", "columns": {"variant": "variant", "V": "vocab", "ms": "ms:,.1f",
                                                    "ratio": "ratio:x", "time": "seconds:min", "note": "note"},
               "goals": lambda record: [{"name": "judged here", "threshold": 1, "value": 0.5, "met": False}]}
    text = report.section(section)
    assert text.startswith("## Toy\n\n`python -m benchmarks.toy`; `toy.json`: 2 cores, AMD EPYC, AVX2, 2026-12-01, "
                           "revision `0123456`.\n\nA paragraph.\n\n| variant | V | ms | ratio | time | note |")
    assert "| a | 33,280 | 2,345.7 | 1.50x | 1.5 min | — |" in text  # a spread renders as its median
    assert "| b | 33,280 | 12.5 | 0.25x | 0.5 min | — |" in text and "267,744" not in text
    assert "- b at least 1.3x a: 1.50 (target 1.30): met" in text
    assert "- unmeasured: — (target 2.00): **not met**" in text and "- judged here: 0.50 (target 1): **not met**" in text
    shown = {"toy"}  # a file's own goals go under the first section that shows it
    assert "b at least" not in report.section(section, shown) and "judged here" in report.section(section, shown)
    several = report.section({**section, "files": ["toy", "toy_gpu"], "columns": {"ms": "ms"}})
    assert "| file (machine) | ms |" in several
    assert "| `toy_gpu.json` (H100, 2 cores, AMD EPYC, AVX2) | 1.25 |" in several


def test_a_template_block_is_rendered_between_its_markers(results):
    page = ("intro\n<!-- fig:begin\nb is {toy:variant=b:ratio:.0%} of a, {toy:variant=a,vocab=267744:ms} ms "
            "on {toy_gpu:machine}, {toy:date}; {toy:goal=b at least:value:x}\n-->\nold text\n<!-- fig:end -->\nafter\n")
    rendered = report.render_blocks(page)
    assert rendered == page.replace("old text", "b is 25% of a, 3.00 ms on H100, 2 cores, AMD EPYC, AVX2, 2026-12-01; "
                                    "1.50x")
    assert report.render_blocks(rendered) == rendered


def test_renderer_names_the_file_and_case_it_cannot_read(results):
    with pytest.raises(report.ResultsError, match=r"toy\.json has 2 cases or goals for \{'variant': 'a'\}"):
        report.render_blocks("<!-- x:begin\n{toy:variant=a:ms}\n-->\n\n<!-- x:end -->")
    with pytest.raises(report.ResultsError, match=r"toy\.json has 1 cases or goals .* 'missing'"):
        report.render_blocks("<!-- x:begin\n{toy:variant=b:missing}\n-->\n\n<!-- x:end -->")
    with pytest.raises(report.ResultsError, match=r"benchmarks/results/gone\.json is missing"):
        report.render_blocks("<!-- x:begin\n{gone:machine}\n-->\n\n<!-- x:end -->")
    (results / "old.json").write_text(json.dumps({"name": "old", "figure": 1}))
    with pytest.raises(report.ResultsError, match=r"old\.json is not in the results schema: missing key 'command'"):
        report.load("old")


def test_check_mode_names_a_stale_page_and_writes_nothing(tmp_path, monkeypatch, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "results.md").write_text("old\n")
    monkeypatch.setattr(report, "ROOT", tmp_path)
    monkeypatch.setattr(report, "render", lambda: {"docs/results.md": "new\n"})
    assert report.main(["--check"]) == 1
    assert "docs/results.md is stale: run python -m benchmarks.report" in capsys.readouterr().err
    assert (tmp_path / "docs" / "results.md").read_text() == "old\n"
    assert report.main([]) == 0 and (tmp_path / "docs" / "results.md").read_text() == "new\n"
    assert report.main(["--check"]) == 0


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 200, f"README.md has {lines} lines; move reference material into docs/"


def markdown_files():
    return [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md"))


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:|#", target):
            continue
        if not (page.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_speak_to_users(page):
    """No development wording: targets, where shown, are the project's stated targets."""
    words = re.findall(r"[^\n]*\bissues?\b[^\n]*", page.read_text(), flags=re.I)
    assert all("fairseq" in w for w in words), f"{page.relative_to(ROOT)}: {words}"


def test_the_recipes_targets_are_judged_here_from_the_files_they_wrote():
    """A recipe's file holds no goals; benchmarks/wikitext2.py judges the project's stated targets on it."""
    from benchmarks import wikitext2

    bf16, quick = report.load("wikitext2_main_bf16"), report.load("wikitext2_main_quick_bf16")
    assert bf16["goals"] == quick["goals"] == []
    met = {g["name"].split(":")[0].split(" in ")[0]: (g["value"], g["met"]) for g in wikitext2.main_job_goals(bf16)}
    assert {p: met[p] for p in ("blocks", "classic", "cache", "dynamic")} == {
        "blocks": (120.57, False), "classic": (117.58, False), "cache": (84.98, True), "dynamic": (74.19, True)}
    assert met["whole job (full)"] == (4821.0, False) and met["after training (tunings, every protocol on valid and test)"] == (1254.0, False)
    judged = wikitext2.main_job_goals(bf16)
    assert [g["met"] for g in judged[-3:]] == [True, True, False]  # dynamic evaluation's gain, with the cache, its time
    assert judged[-3]["value"] == pytest.approx(1 - 74.19 / 117.58, abs=1e-4) and judged[-1]["value"] == 359.7
    # A QUICK run is judged against the QUICK budget.
    assert [g["threshold"] for g in wikitext2.main_job_goals(quick) if g["name"].startswith("whole job (quick)")] == [1500.0]
    compare = wikitext2.compare_goals(report.load("wikitext2_compare"))
    assert [(g["threshold"], g["met"]) for g in compare] == [(3.0, True), (0.04, True)]
    assert compare[0]["value"] == pytest.approx(4.556, abs=1e-3)
