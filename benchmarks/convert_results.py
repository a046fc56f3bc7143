"""One-off: the speed benchmarks' results files into the one schema (run once, then deleted).

Each kept file keeps its command (checkout prefix dropped), git revision, date and machine; its
figures become cases with the params and metrics the ported benchmark writes, and its goals are
judged by the ported benchmark's own goals function on those cases.
"""

import json
import os
import subprocess

from benchmarks import eval_lm, large_vocab, lm_throughput, logit_layout, output_layer, qrnn_layer
from fairseq_adasoft.provenance import validate

DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
REMOVED = ["eval_lm_before", "ddp_teardown", "large_vocab_before_after", "qrnn_layer_cpu_bf16", "qrnn_layer_cpu_avx2",
           "logit_layout"]  # logit_layout (the recipes' malloc) goes; logit_layout_glibc_malloc takes its name


def load(name):
    with open(os.path.join(DIR, f"{name}.json")) as f:
        return json.load(f)


def case(params, metrics):
    return {"params": params, "metrics": metrics}


def spread(d, prefix="ms_"):
    return {k: d[prefix + k] for k in ("min", "median", "max")}


def write(name, old, cases, goals=(), note=None, command=None):
    command = (command or old["command"]).replace("/work/main/", "")
    record = {"name": name, "command": command, "git_revision": old["git_revision"], "date": old["date"],
              "machine": old["machine"], "cases": cases, "goals": list(goals), **({"note": note} if note else {})}
    problems = validate(record)
    assert not problems, (name, problems)
    with open(os.path.join(DIR, f"{name}.json"), "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")


def lm(name):
    old = load(name)
    cases = [case({"setup": s}, {"words_per_s": r["wps"]}) for s, r in old["results"].items()]
    write(name, old, cases, lm_throughput.goals(cases))


def width():
    old = load("width_throughput")
    write("width_throughput", old, [case({"hidden_size": int(w), "precision": "bf16"},
                                         {"words_per_s": r["wps"], "epochs_in_hours": r["epochs_in_hours"]})
                                    for w, r in old["results"].items()])


def cpu_bf16():
    old = load("cpu_bf16_avx2")
    s = old["shape"]
    write("cpu_bf16_avx2", old, [case({"op": op, "T": s["T"], "B": s["B"], "hidden": s["hidden"]},
                                      {k: r[k] for k in ("fp32_ms", "bf16_ms", "bf16_vs_fp32")})
                                 for op, r in old["results"].items()])


def qrnn(name, device="cpu"):
    old = load(name)
    s, r = old["shape"], old["results"]
    size = dict(device=device, precision="fp32", T=s["T"], B=s["B"], input_size=s.get("C", s["H"]), hidden_size=s["H"])
    cases = [case(dict(part="layer", window=w, **size), r[f"window{w}"]) for w in (2, 1)]
    cases.append(case(dict(part="stack", window=0, **size), r["stack"]))
    note = None
    if "scan_vs_loop_forget_mult_cuda" in old:  # the old note named a development issue; its facts stay
        note = ("Run on a lent GPU machine (torch 2.11 cu130, Python 3.12, no fairseq); forget_mult picks 'scan' on "
                "CUDA. ForgetMult on CUDA, scan against loop: " + "; ".join(old["scan_vs_loop_forget_mult_cuda"]) + ".")
    write(name, old, cases, qrnn_layer.goals(cases), note)


def output():
    old = load("output_layer")
    cases, seen = [], set()
    for key, v in old["settings"]["vocabularies"].items():
        for method in output_layer.METHODS:
            if method == "full" and v["V"] in seen:
                continue
            r = old["results"][key][method]
            cases.append(case(dict(method=method, V=v["V"], targets=v["targets"], cutoffs=",".join(map(str, v["cutoffs"]))),
                              {"ms": spread(r), "peak_rss_mb": r["peak_rss_increase_mb"]}))
        seen.add(v["V"])
    write("output_layer", old, cases, output_layer.goals(cases))


def scaling():
    old = load("vocab_scaling")
    cases = []
    for row in old["rows"]:
        cases.append(case(dict(method="full", V=row["V"], targets="zipf", cutoffs="", rule=""),
                          {"ms": spread(row["full"]), "peak_rss_mb": row["full"]["peak_rss_increase_mb"]}))
        for rule in ("seed_rule", "auto"):
            r = row[f"adaptive_{rule}"]
            cases.append(case(dict(method="ours", V=row["V"], targets="zipf", cutoffs=",".join(map(str, row["cutoffs"][rule])),
                                   rule=rule), {"ms": spread(r), "peak_rss_mb": r["peak_rss_increase_mb"]}))
    output_layer.speedups(cases)
    write("vocab_scaling", old, cases)


def layout():
    old = load("logit_layout_glibc_malloc")
    cases = [case(dict(V=row["V"], cutoffs=row["cutoffs"], tied=row["tied"], targets=row["targets"], layout=name,
                       malloc="glibc"), {"ms": row["ms"][name], "head_width": row["head_width"]})
             for row in old["rows"] for name in old["layouts"]]
    logit_layout.over_default(cases)
    write("logit_layout", old, cases, note=f"{old['rounds']} rounds alternating the layouts, {old['calls_per_repeat']} "
          "forward + backward passes per timed sample, glibc's own malloc settings.")


def evaluation():
    old = load("eval_lm")
    cases = []
    for c in eval_lm.CASES:
        r = old["results"][c["corpus"]].get(c["variant"], {}).get(c["protocol"])
        if r:
            cases.append(case(dict(c), {"words_per_s": r["words_per_s"], "peak_rss_mb": r["peak_rss_mb"],
                                        "perplexity": r["printed"]["perplexity"], "loss": r["printed"]["loss"]}))
    note = (f"(a): the plugin of {old['baseline']['sha']} ({old['baseline']['rev']}), from a git worktree; at V = 267,744 "
            f"with --softmax-batch {old['softmax_batch']['zipf']['a']}. Models trained {old['training']['updates']} updates.")
    write("eval_lm", old, cases, eval_lm.goals(cases), note)


def steps_metrics(s):
    ms = {f"{k}_ms": s["ms"][k] for k in ("forward", "backward", "optimizer")}
    ms["all_reduce_ms"] = s["ms"]["all_reduce_2_gloo"]
    share = {f"{k}_share": s["share_of_median"][k] for k in ("forward", "backward", "optimizer")}
    share["all_reduce_share"] = s["share_of_median"]["all_reduce_2_gloo"]
    io = s["input_output_layers"]
    return {**ms, **share, "parameters": s["parameters"], "io_parameters": io["parameters"],
            "io_train_state_mb": io["train_state_bytes"] / 2**20, "tokens_per_step": s["tokens_per_step"]}


def large():
    old = load("large_vocab")
    cases = []
    for corpus in ("zipf", "wikitext2"):
        for v in "abc":
            cases.append(case(dict(corpus=corpus, variant=v, mode="steps"), steps_metrics(old["steps"][corpus][v])))
            for mode in ("one_process", "ddp_2_gloo"):
                r = old["speed"][corpus][v][mode]
                cases.append(case(dict(corpus=corpus, variant=v, mode=mode),
                                  {"words_per_s": r["words_per_s"], "peak_rss_mb": r["peak_rss_mb"]}))
    for v in "ac":
        q = old["quality_wikitext2"][v]
        cases.append(case(dict(corpus="wikitext2", variant=v, mode="quality"), {"valid_ppl": q["valid_ppl"],
                                                                                 "updates": q["updates"]}))
    write("large_vocab", old, cases, large_vocab.goals(cases))


def pairs():
    old = load("large_vocab_side_by_side")
    cases, runs = [], []
    for corpus in ("zipf", "wikitext2"):
        r = old[corpus]
        for v in r["pair"]:
            cases.append(case(dict(corpus=corpus, variant=v, mode="one_process"),
                              {"words_per_s": r["words_per_s"][v], "copy_gb_per_s": r["copy_gb_per_s_before_each_repeat"]}))
            runs.append(f"{corpus} ({v}): {', '.join(f'{x:,.0f}' for x in r['run_medians'][v])}")
        runs.append(f"{corpus}: each repeat's ratio {', '.join(f'{x:.3f}' for x in r['repeat_ratios'])}")
    note = ("Each pair run in turn 4 times; words_per_s spreads all logged intervals of a variant's 4 runs (a rerun "
            "spreads each run's median), copy_gb_per_s lists the memory bandwidth before each repeat. Each run's median "
            "words/s: " + "; ".join(runs) + ".")
    write("large_vocab_side_by_side", old, cases, large_vocab.goals(cases), note,
          command="python -m benchmarks.large_vocab --side-by-side 4")


if __name__ == "__main__":
    lm("lm_throughput"), lm("lm_throughput_avx2"), width(), cpu_bf16(), output(), scaling(), evaluation(), large(), pairs()
    for name in ("qrnn_layer_cpu", "qrnn_layer_cpu_avx2_main"):
        qrnn(name)
    qrnn("qrnn_layer_cuda", "cuda")
    subprocess.run(["git", "rm", "-q", *(f"benchmarks/results/{n}.json" for n in REMOVED)], check=True)
    layout()  # after the old logit_layout.json went
    subprocess.run(["git", "rm", "-q", "benchmarks/results/logit_layout_glibc_malloc.json"], check=True)
