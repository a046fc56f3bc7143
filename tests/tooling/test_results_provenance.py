"""What a results file says about the tree and machine it came from."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

from fairseq_adasoft import hardware, provenance

RESULTS_DIR = Path(__file__).resolve().parents[2] / provenance.RESULTS_SUBDIR
RESULTS = sorted(RESULTS_DIR.glob("*.json"))


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_a_changed_results_file_does_not_make_the_code_dirty(tmp_path):
    """A results file written (or converted) in the checkout must not mark the next
    one as run from a changed tree, while a code change still shows."""
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "run.json").write_text("{}\n")
    (tmp_path / "model.py").write_text("x = 1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    clean = provenance.git_revision(str(tmp_path))
    assert len(clean) == 40
    (tmp_path / "benchmarks" / "results" / "run.json").write_text('{"ppl": 1}\n')
    assert provenance.git_revision(str(tmp_path)) == clean
    (tmp_path / "model.py").write_text("x = 2\n")
    assert provenance.git_revision(str(tmp_path)) == clean + "+dirty"


def test_machine_info_names_the_cpu_capability():
    info = provenance.machine_info()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(info["cpu_native_bf16"], bool)


def test_machine_info_tells_cpu_generations_apart(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    block = "processor\t: {}\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: {}\nmodel name\t: AMD EPYC\n\n"
    cpuinfo.write_text(block.format(0, 2) + block.format(1, 9))
    first = hardware.first_cpu(str(cpuinfo))
    assert hardware.cpu_family_model(first) == {"vendor": "AuthenticAMD", "family": 26, "model": 2}
    assert hardware.cpu_model_name(first) == "AMD EPYC"
    assert hardware.first_cpu(str(tmp_path / "missing")) == {}
    assert hardware.cpu_family_model({}) == {}
    assert "cpu_family_model" in provenance.machine_info()


def test_a_results_file_holds_its_provenance_then_its_cases_and_goals(tmp_path):
    cases = [{"params": {"variant": "a"}, "metrics": {"figure": 1.5, "ms": provenance.spread([3.0, 1.0, 2.0])}}]
    goals = [{"name": "figure at least 1", "threshold": 1.0, "value": 1.5, "met": True}]
    path = provenance.write_results("toy", cases, "python -m toy", str(tmp_path / "results"), goals, note="a toy")
    assert path == str(tmp_path / "results" / "toy.json")
    record = json.loads((tmp_path / "results" / "toy.json").read_text())
    assert list(record) == ["name", "command", "git_revision", "date", "machine", "cases", "goals", "note"]
    assert record["name"] == "toy" and record["command"] == "python -m toy" and record["note"] == "a toy"
    assert record["cases"] == [{"params": {"variant": "a"}, "metrics": {"figure": 1.5, "ms": {"min": 1.0, "median": 2.0, "max": 3.0}}}]
    assert record["goals"] == goals and provenance.validate(record) == []


def test_a_record_outside_the_schema_is_refused_before_writing(tmp_path):
    case = {"params": {"data": "/home/me/data-bin"}, "metrics": {"ppl": 1.0}}
    with pytest.raises(ValueError, match=r"toy\.json would not be a valid results file: absolute path in '/home/me/data-bin'"):
        provenance.write_results("toy", [case], "python -m toy", str(tmp_path))
    assert not (tmp_path / "toy.json").exists()
    good = {"name": "x", "command": "c", "git_revision": "r", "date": "d", "machine": {}, "goals": [],
            "cases": [{"params": {"a": 1}, "metrics": {"m": [1, 2], "s": {"min": 1, "median": 2, "max": 3}}}]}
    assert provenance.validate(good) == []
    assert provenance.validate({**good, "cases": []}) == ["no cases"]
    assert provenance.validate({**good, "extra": 1}) == ["unknown key 'extra'"]
    assert provenance.validate({**good, "cases": [{"params": {"a": [1]}, "metrics": {}}]}) == ["cases[0].params.a is not a scalar"]
    assert provenance.validate({**good, "cases": [{"params": {}, "metrics": {"m": {"median": 1}}}]}) == [
        "cases[0].metrics.m is not a scalar, list of scalars or spread"]
    assert provenance.validate({**good, "goals": [{"name": "g", "threshold": 1, "value": 1, "met": "yes"}]}) == [
        "goals[0] is not {name, threshold, value, met (bool)}"]


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_every_results_file_is_in_the_one_schema(path):
    record = json.loads(path.read_text())
    assert provenance.validate(record) == [], f"{path.name} is not in the results schema"
    assert record["name"] == path.stem, f"{path.name} is named {record['name']!r} inside"


def test_no_results_file_holds_an_absolute_path():
    # The grep of the project's done-when: a "/" then a name, at the start or after a quote, space or =.
    absolute = re.compile(r'(^|[" =])/[A-Za-z_.-]+/', re.M)
    found = [p.name for p in RESULTS_DIR.iterdir() if p.suffix == ".json" and absolute.search(p.read_text())]
    assert not found, f"absolute paths in {found}"
