"""One-off: convert the kept recipe results files to the one results schema
(fairseq_adasoft.provenance), one file per run (the run's and its protocols'
merged), renamed for what they are; removes the rest of wikitext2_*. Keeps each
file's command (made relative), git revision, date and machine, and every figure."""

import json
import os
import re
import subprocess

from fairseq_adasoft.provenance import validate
from fairseq_adasoft.record import comparison_cases, run_cases

RESULTS = "benchmarks/results"
RUNS = {  # new name: old name (its run file and <old>_protocols.json)
    "wikitext2_main_bf16": "wikitext2_main_bf16_timed",
    "wikitext2_main_bf16_rerun": "wikitext2_main_bf16_timed_rerun",
    "wikitext2_main_avx2": "wikitext2_screen_fp32_avx2_500",
    "wikitext2_main_avx2_rerun": "wikitext2_main_fp32_avx2",
    "wikitext2_main_quick": "wikitext2_main_quick",
}
KEEP = {"wikitext2_compare.json", "wikitext2_compare.png"} | {f"{n}.json" for n in RUNS}
CHECKOUT = re.compile(r"(?<![\w.])/work/main/")  # the checkout these runs were recorded in


def load(name):
    with open(f"{RESULTS}/{name}.json") as f:
        return json.load(f)


def relative(text):
    for new, old in RUNS.items():  # old names in notes become the kept files' names
        text = re.sub(rf"\b{old}\b", new, text)
    return CHECKOUT.sub("", text)


def write(name, old, cases, note, goals=()):
    record = {"name": name, "command": relative(old["command"]), "git_revision": old["git_revision"],
              "date": old["date"], "machine": old["machine"], "cases": cases, "goals": list(goals)}
    if note:
        record["note"] = relative(note)
    problems = validate(record)
    assert not problems, (name, problems)
    with open(f"{RESULTS}/{name}.json", "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")


def convert_run(new, old_name):
    run, prot = load(old_name), load(f"{old_name}_protocols")
    evals = {p: {s: prot[p][s] for s in ("valid", "test") if s in prot[p]} for p in
             ("blocks", "classic", "cache", "dynamic", "dynamic_cache") if p in prot}
    assert evals["blocks"] == {"valid": run["valid"], "test": run["test"]}, old_name  # the run's are protocols' blocks
    tunings = {p: prot[p]["tuning"] for p in ("cache", "dynamic") if p in prot}
    cases = run_cases(run.get("settings", {}), run["train"], evals, tunings, run["wall_seconds"])
    note = run.get("config", "")
    if prot["git_revision"] != run["git_revision"] or prot["date"][:13] != run["date"][:13]:
        note += (f". The evaluations were recorded at {prot['git_revision'][:7]} on {prot['date'][:16]} UTC "
                 f"({relative(prot['command'])})")
    extra = run.get("note", "").split("protocol", 1)[-1].split(". ", 1)  # what the old note said beyond the file names
    if len(extra) == 2:
        note += ". " + extra[1]
    write(new, run, cases, note)


def convert_compare():
    old = load("wikitext2_compare")
    optimizer = re.search(r"OPTIMIZER=(\w+)", old["command"]).group(1)
    cases = comparison_cases(old["runs"], optimizer)
    a = cases[0]["metrics"]
    assert abs(a["train_wps_vs_full"] - old["speedup_train_wps"]) < 1e-12
    assert abs(a["test_ppl_vs_full"] - old["test_ppl_gap"]) < 1e-12
    write("wikitext2_compare", old, cases, old["config"])


def convert_test_suite():
    old = load("test_suite")
    metrics = {k: old[k] for k in ("wall_seconds", "passed", "failed", "skipped")}
    write("test_suite", old, [{"params": {"command": "bash scripts/test.sh -q"}, "metrics": metrics}], None)


if __name__ == "__main__":
    for new, old in RUNS.items():
        convert_run(new, old)
    convert_compare()
    convert_test_suite()
    for name in sorted(os.listdir(RESULTS)):
        if name.startswith("wikitext2_") and name not in KEEP:
            subprocess.run(["git", "rm", "-q", f"{RESULTS}/{name}"], check=True)
            print("removed", name)
