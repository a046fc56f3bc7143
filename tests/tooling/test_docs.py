"""The docs agree with the results files: rendered pages are current, links resolve,
results files carry their provenance and no hand-added fields."""

import json
import re
import shutil
from pathlib import Path

import pytest

from benchmarks import report

ROOT = report.ROOT
RESULTS = sorted(report.RESULTS_DIR.glob("*.json"))
PROVENANCE = ("name", "command", "git_revision", "date", "machine")
# Keys that only a hand edit ever wrote into a results file.
HAND_ADDED = re.compile(r"^(stall|renamed|.*_added)$")


@pytest.fixture(scope="module")
def rendered():
    return report.render(report.Results())


def test_committed_pages_are_what_the_renderer_writes(rendered):
    stale = [p for p, text in rendered.items() if (ROOT / p).read_text() != text]
    assert not stale, f"{', '.join(stale)} differ from the results files: run `{report.COMMAND}`"


def test_renderer_names_the_file_and_field_it_cannot_read(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(report.RESULTS_DIR, results)
    path = results / "wikitext2_compare.json"
    record = json.loads(path.read_text())
    del record["speedup_train_wps"]
    original = path.read_text()
    path.write_text(json.dumps(record))
    with pytest.raises(report.ResultsError, match=r"benchmarks/results/wikitext2_compare\.json has no field 'speedup_train_wps'"):
        report.render(report.Results(results))
    path.write_text(original)
    (results / "lm_throughput.json").unlink()
    with pytest.raises(report.ResultsError, match=r"lm_throughput\.json is missing"):
        report.readme_results(report.Results(results))


def test_check_mode_names_a_stale_page(tmp_path, monkeypatch, capsys):
    for p in report.render(report.Results()):
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / p, tmp_path / p)
    (tmp_path / "docs" / "results.md").write_text("old\n")
    monkeypatch.setattr(report, "ROOT", tmp_path)
    assert report.main(["--check"]) == 1
    assert "docs/results.md is stale: run python -m benchmarks.report" in capsys.readouterr().err


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


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_results_file_has_provenance_and_no_hand_added_fields(path):
    record = json.loads(path.read_text())
    missing = [k for k in PROVENANCE if k not in record]
    assert not missing, f"{path.name} lacks {missing}: results files are written by fairseq_adasoft.provenance.write_result"
    assert record["name"] == path.stem, f"{path.name} is named {record['name']!r} inside"

    def keys(value, prefix=""):
        if isinstance(value, dict):
            for k, v in value.items():
                yield prefix + k, k
                yield from keys(v, prefix + k + ".")

    hand = [full for full, k in keys(record) if HAND_ADDED.match(k)]
    assert not hand, f"{path.name} has hand-added fields {hand}"
