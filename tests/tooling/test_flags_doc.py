"""The plugin's flags from the command line: ``python -m fairseq_adasoft
--help`` lists them, and docs/flags.md is exactly its ``--markdown`` rendering."""

import os
import subprocess
import sys

from helpers import ROOT

REGENERATE = "python -m fairseq_adasoft --markdown > docs/flags.md"


def flags_command(option):
    proc = subprocess.run([sys.executable, "-m", "fairseq_adasoft", option], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_help_lists_every_component_and_flag():
    out = flags_command("--help")
    for text in ("model qrnn_lm", "task language_modeling_freqsorted", "criterion adaptive_softmax",
                 "lr scheduler timed_polynomial_decay", "--stateful-bptt", "--adaptive-softmax-cutoff",
                 "--cpu-autocast-bf16", "--neural-cache-size", "--end-learning-rate", "qrnn_lm_wikitext2"):
        assert text in out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  --")]
    assert "--stateful-bptt" in listed and "--tokens-per-sample" not in listed  # fairseq's own task flag


def test_committed_flags_page_is_the_rendering():
    with open(os.path.join(ROOT, "docs", "flags.md")) as f:
        committed = f.read()
    assert REGENERATE in committed.splitlines()[0]  # says it is generated, and how
    assert committed == flags_command("--markdown"), (
        f"docs/flags.md differs from the dataclasses' help strings: run `{REGENERATE}`")
