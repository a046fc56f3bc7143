"""What a results file says about the tree and machine it came from."""

import json
import subprocess

import torch

from fairseq_adasoft import provenance
from fairseq_adasoft import hardware


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_a_changed_results_file_does_not_make_the_code_dirty(tmp_path):
    """run.sh records two results files in turn: the second must name the
    clean revision the run came from, while a code change still shows."""
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


def test_a_results_file_holds_its_provenance_then_its_payload(tmp_path):
    path = provenance.write_result("toy", {"figure": 1.5}, "python -m toy", str(tmp_path / "results"))
    assert path == str(tmp_path / "results" / "toy.json")
    record = json.loads((tmp_path / "results" / "toy.json").read_text())
    assert list(record) == ["name", "command", "git_revision", "date", "machine", "figure"]
    assert record["name"] == "toy" and record["command"] == "python -m toy" and record["figure"] == 1.5
