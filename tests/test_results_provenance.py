"""What a results file says about the tree and machine it came from."""

import subprocess

import torch

from benchmarks import common


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_a_changed_results_file_does_not_make_the_code_dirty(tmp_path, monkeypatch):
    """run.sh records two results files in turn: the second must name the
    clean revision the run came from, while a code change still shows."""
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "run.json").write_text("{}\n")
    (tmp_path / "model.py").write_text("x = 1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(common, "ROOT", str(tmp_path))
    clean = common._git_revision()
    assert len(clean) == 40
    (tmp_path / "benchmarks" / "results" / "run.json").write_text('{"ppl": 1}\n')
    assert common._git_revision() == clean
    (tmp_path / "model.py").write_text("x = 2\n")
    assert common._git_revision() == clean + "+dirty"


def test_machine_info_names_the_cpu_capability():
    info = common.machine_info()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(info["cpu_native_bf16"], bool)


def test_machine_info_tells_cpu_generations_apart(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    block = "processor\t: {}\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: {}\nmodel name\t: AMD EPYC\n\n"
    cpuinfo.write_text(block.format(0, 2) + block.format(1, 9))
    first = common._first_cpu(str(cpuinfo))
    assert common._cpu_family_model(first) == {"vendor": "AuthenticAMD", "family": 26, "model": 2}
    assert common._cpu_model(first) == "AMD EPYC"
    assert common._first_cpu(str(tmp_path / "missing")) == {}
    assert common._cpu_family_model({}) == {}
    assert "cpu_family_model" in common.machine_info()
