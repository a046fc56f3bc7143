"""What a large vocabulary costs qrnn_lm's training on this CPU (4 x 800 QRNN, embedding 400), and
what adaptive input (Baevski & Auli 2019) wins back: (a) plain embedding, the softmax's shortlist
tied to it; (b) adaptive input; (c) adaptive input tied to the softmax; at V = 267,744 (Zipf) and
WikiText-2. Modes: fairseq-train words/s in one process or 2-process gloo DDP; "steps", a step's
phases and the input and output layers' training state; "quality", valid perplexity at 600 updates.

    python -m benchmarks.large_vocab [--quick]   # --pairs --repeats 4: the one-process pairs in turn
"""

import functools
import os
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks import zipf_corpus
from benchmarks.harness import (BIN, DATA, MALLOC_ENV, PLUGIN_DIR, ROOT, arguments, fairseq_train, goal, interval_wps,
                                main, median, spread, time_ms)
from fairseq_adasoft.hardware import cpu_has_native_bf16
from fairseq_adasoft.logs import json_records
from fairseq_adasoft.presets import ARCHITECTURES, MAIN_JOB

VARIANTS = {"a": ["--tie-adaptive-weights"], "b": ["--adaptive-input"], "c": ["--adaptive-input", "--tie-adaptive-weights"]}
ARCH = "qrnn_lm_wikitext2"
CUTOFFS = {"zipf": ARCHITECTURES["qrnn_lm_wikitext103"]["adaptive_softmax_cutoff"],
           "wikitext2": ARCHITECTURES[ARCH]["adaptive_softmax_cutoff"], "quick": "0.05,0.2,0.5"}
COMMON = ["--user-dir", PLUGIN_DIR, *f"--task language_modeling_freqsorted --arch {ARCH} --criterion adaptive_softmax "
          "--optimizer adam --lr 0.002 --clip-norm 0.25 --cpu --seed 1 --log-format json --num-workers 0 "
          "--adaptive-softmax-div-value 4".split()]
STREAMS, TOKENS = MAIN_JOB["batch_size"], str(MAIN_JOB["tokens_per_sample"])
SPEED = ["--disable-validation", "--no-save", "--log-interval", "5"]  # 50 updates: the median of 9 intervals
# --no-save: a run never resumes an earlier one's checkpoint. The main job's flags, decayed over 600 updates.
QUALITY = f"--no-save --stateful-bptt --lr {MAIN_JOB['lr']} --lr-scheduler polynomial_decay --warmup-updates 100 " \
    "--end-learning-rate 0.0001 --log-interval 100".split()
GOAL_ONE_PROCESS, GOAL_DDP, GOAL_STATE, GOAL_PPL_GAP = 1.3, 1.5, 5.0, 0.03
CASES = [dict(corpus=c, variant=v, mode=m) for c in ("zipf", "wikitext2") for v in VARIANTS
         for m in ("steps", "one_process", "ddp_2_gloo")] + [dict(corpus="wikitext2", variant=v, mode="quality") for v in "ac"]
PAIR_CASES = [dict(corpus=c, variant=v, mode="one_process") for c, pair in (("zipf", "ab"), ("wikitext2", "ac")) for v in pair]
DDP_BUCKET_BYTES, STEP_REPEATS, WARMUP_STEPS = 25 * 2**20, 4, 3  # DDP's bucket_cap_mb; steps timed after Adam's state exists


@functools.lru_cache(maxsize=None)
def work(quick: bool) -> str:
    return tempfile.mkdtemp(prefix="large_vocab_") if quick else os.path.join(ROOT, "runs", "eval_lm_bench")


def flags(corpus: str, variant: str, quick: bool, streams: int = STREAMS) -> list:
    data = zipf_corpus.benchmark_corpus(corpus, work(quick), quick, DATA)
    size = ["--embed-dim", "16", "--hidden-size", "32", "--num-layers", "2"] if quick else []
    return [data, *COMMON, *size, *["--cpu-autocast-bf16"] * cpu_has_native_bf16(), "--adaptive-softmax-cutoff",
            CUTOFFS["quick" if quick else corpus], *VARIANTS[variant], "--batch-size", str(streams), "--tokens-per-sample", TOKENS]


def copy_gb_per_s(nbytes: int = zipf_corpus.BENCHMARK["vocab"] * 400 * 4) -> float:
    """GB read + written per second copying (a)'s fp32 embedding at V = 267,744: (a)'s extra work over (b) is such passes."""
    src, dst = torch.ones(nbytes // 4), torch.empty(nbytes // 4)
    return round(2 * nbytes / time_ms(lambda: dst.copy_(src), repeats=5)["median"] / 1e6, 1)


def _all_reduce(rank, init_file, sizes, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    buckets, samples = [torch.zeros(n) for n in sizes], []
    for _ in range(STEP_REPEATS + 1):  # the first is a warm-up
        dist.barrier()
        start = time.perf_counter()
        for b in buckets:
            dist.all_reduce(b)
        samples.append(1000 * (time.perf_counter() - start))
    if rank == 0:
        torch.save(samples[1:], out)
    dist.destroy_process_group()
    os._exit(0)  # gloo's threads may abort interpreter finalization (see fairseq_adasoft.launch)


def all_reduce_ms(numels: list) -> dict:
    """Milliseconds to all-reduce gradients of these sizes in DDP-sized buckets between 2 gloo processes."""
    sizes = [0]
    for n in numels:  # DDP fills a bucket with whole gradients until it holds bucket_cap_mb
        sizes[-1] += n
        sizes += [0] * (sizes[-1] * 4 >= DDP_BUCKET_BYTES)
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_all_reduce, args=(os.path.join(d, "init"), [n for n in sizes if n], f"{d}/ms.pt"), nprocs=2)
        return spread(torch.load(f"{d}/ms.pt"))


def io_layers(model) -> dict:
    """The input and output layers' parameters (shared ones once) and their fp32 training state."""
    params = {id(p): p for m in (model.decoder.embed_tokens, model.decoder.adaptive_softmax) for p in m.parameters()}
    n = sum(p.numel() for p in params.values())
    return {"io_parameters": n, "io_train_state_mb": n * 4 * 4 / 2**20}  # weights, gradients, Adam's 2 moments


def steps(args: list) -> dict:
    """A one-process training step's phases, in this process (started with the runs' malloc settings)."""
    from fairseq import optim, options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), input_args=args))
    task = tasks.setup_task(cfg.task)
    model, criterion = task.build_model(cfg.model), task.build_criterion(cfg.criterion)
    params = list({id(p): p for p in model.parameters()}.values())
    optimizer = optim.build_optimizer(cfg.optimizer, [p for p in params if p.requires_grad])
    task.load_dataset("train")
    sample = next(task.get_batch_iterator(task.dataset("train"), max_sentences=cfg.dataset.batch_size,
                                          seed=1).next_epoch_itr(shuffle=False))
    phases = {"forward_ms": [], "backward_ms": [], "optimizer_ms": []}
    model.train()
    for repeat in range(WARMUP_STEPS + STEP_REPEATS):
        t = [time.perf_counter()]
        loss = criterion(model, sample)[0]
        t.append(time.perf_counter())
        loss.backward()
        t.append(time.perf_counter())
        optimizer.clip_grad_norm(cfg.optimization.clip_norm), optimizer.step(), optimizer.zero_grad()
        for name, a, b in zip(phases, t, t[1:] + [time.perf_counter()]):
            phases[name] += [1000 * (b - a)] * (repeat >= WARMUP_STEPS)
    ms = {**{k: spread(v) for k, v in phases.items()}, "all_reduce_ms": all_reduce_ms([p.numel() for p in params])}
    total = sum(m["median"] for m in ms.values())
    return {**ms, **{k.replace("_ms", "_share"): round(m["median"] / total, 3) for k, m in ms.items()},
            "parameters": sum(p.numel() for p in params), **io_layers(model), "tokens_per_step": int(sample["ntokens"])}


def measure(corpus: str, variant: str, mode: str, quick: bool = False) -> dict:
    updates = "10" if quick else "50"
    log = os.path.join(work(quick), "large_vocab", f"{corpus}-{variant}-{mode}.log")
    if mode == "steps":
        return steps(flags(corpus, variant, quick))
    if mode == "quality":
        updates = "10" if quick else "600"
        r = fairseq_train([*flags(corpus, variant, quick), *QUALITY, "--max-update", updates, "--total-num-update", updates], log)
        valid = [float(rec["valid_ppl"]) for rec in json_records(r["text"].splitlines()) if "valid_ppl" in rec]
        return {"valid_ppl": valid[-1], "updates": int(updates)}
    ddp = mode == "ddp_2_gloo"
    bandwidth = copy_gb_per_s()
    launch = [os.path.join(BIN, "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "fairseq_adasoft.launch"]
    r = fairseq_train([*flags(corpus, variant, quick, STREAMS // 2 if ddp else STREAMS), *SPEED, "--max-update", updates,
                       *["--distributed-backend", "gloo"] * ddp], log, env={"OMP_NUM_THREADS": "1"} if ddp else None,
                      launch=launch if ddp else None)  # DDP: one core per process
    return {"words_per_s": spread(interval_wps(r["text"])), "peak_rss_mb": r["peak_rss_mb"], "copy_gb_per_s": bandwidth}


def goals(cases):
    """Adds each variant's ratios to (a), the one-process step's ms at V = 267,744 and what (b) saves; then judges."""
    m = {tuple(c["params"][k] for k in ("corpus", "variant", "mode")): c["metrics"] for c in cases}
    wps = {k: median(v["words_per_s"]) for k, v in m.items() if "words_per_s" in v}
    over = lambda x, y, get=wps.get: get(x) / get(y) if get(x) and get(y) else None  # noqa: E731
    z = {v: (m.get(("zipf", v, "one_process")), m.get(("zipf", v, "steps"))) for v in "ab"}
    if all(run and steps for run, steps in z.values()):
        for run, steps in z.values():
            run["step_ms"] = 1000 * steps["tokens_per_step"] / median(run["words_per_s"])
        (a, a_steps), (b, b_steps) = z["a"], z["b"]
        saved = a["step_ms"] - b["step_ms"]  # for the goal, (b) would have to save as much on a step of at most:
        b.update(step_ms_saved_vs_a=saved, step_ms_for_goal=saved / (GOAL_ONE_PROCESS - 1),
                 optimizer_ms_saved_vs_a=a_steps["optimizer_ms"]["median"] - b_steps["optimizer_ms"]["median"])
    state = {k: v["io_train_state_mb"] for k, v in m.items() if "io_train_state_mb" in v}
    ppl = {k: v["valid_ppl"] for k, v in m.items() if "valid_ppl" in v}
    for (corpus, v, mode), metrics in m.items():  # each variant against (a): words/s, (a)'s io state over its, ppl gap
        me, a = (corpus, v, mode), (corpus, "a", mode)
        gap = over(me, a, ppl.get)
        derived = {"over_a": over(me, a), "a_state_over_this": over(a, me, state.get), "valid_ppl_gap_vs_a": gap and gap - 1}
        metrics.update({k: x for k, x in derived.items() if x is not None and v != "a"})
    got = lambda corpus, v, mode, key: m.get((corpus, v, mode), {}).get(key)  # noqa: E731
    judged = [goal(f"zipf: (b) at least {GOAL_ONE_PROCESS:g}x (a)'s words/s, one process", got("zipf", "b", "one_process",
                                                                                             "over_a"), GOAL_ONE_PROCESS),
              goal("wikitext2: (c) not slower than (a), one process", got("wikitext2", "c", "one_process", "over_a"), 1.0),
              goal(f"zipf: (b) at least {GOAL_DDP:g}x (a)'s words/s, 2-process DDP", got("zipf", "b", "ddp_2_gloo", "over_a"),
                   GOAL_DDP),
              goal(f"zipf: input + output layers' training state at least {GOAL_STATE:g}x smaller, (a) over (b)",
                   got("zipf", "b", "steps", "a_state_over_this"), GOAL_STATE),
              goal("wikitext2: (c)'s valid perplexity within 3% of (a)'s (gap)",
                   got("wikitext2", "c", "quality", "valid_ppl_gap_vs_a"), GOAL_PPL_GAP, at_most=True)]
    return [g for g in judged if g["value"] is not None]  # a case list without a goal's cases does not judge it


C, WHAT = "python -m benchmarks.large_vocab", {"corpus": "corpus", "variant": "variant"}
WPS = {"words/s": "words_per_s:,.0f", "/ (a)": "over_a:.2f"}
SECTIONS = [dict(title="Large vocabularies: adaptive input, training words/s in one process", command=C, files=["large_vocab"],
                 where={"mode": "one_process"}, columns=WHAT | WPS | {
                     "peak RSS, MB": "peak_rss_mb:,.0f", "step ms": "step_ms:,.0f", "saved vs (a)": "step_ms_saved_vs_a:,.0f",
                     "of it in the optimizer": "optimizer_ms_saved_vs_a:,.0f", "(b)'s step ms for 1.3x": "step_ms_for_goal:,.0f"},
                 text="(a) plain embedding, (b) adaptive input, (c) adaptive input tied; 4 x 800 QRNN, embedding 400. A "
                      "step's ms is its tokens over words/s. How it works: [large-vocabularies.md](large-vocabularies.md).")]
SECTIONS += [dict(title="Large vocabularies: training words/s under 2-process gloo DDP", command=C, files=["large_vocab"],
                  where={"mode": "ddp_2_gloo"}, columns=WHAT | WPS | {"peak RSS, MB": "peak_rss_mb:,.0f"}),
             dict(title="Large vocabularies: where a one-process step goes", command=C, files=["large_vocab"],
                  where={"mode": "steps"}, columns=WHAT | {"parameters": "parameters:,", "input + output layers' "
                  "training state, MB": "io_train_state_mb:,.0f", "(a) / this": "a_state_over_this:.2f"} | {
                      p: f"{p.replace('-', '_')}_share:.0%" for p in ("forward", "backward", "all-reduce", "optimizer")}),
             dict(title="Large vocabularies: valid perplexity at equal updates", command=C, files=["large_vocab"],
                  where={"mode": "quality"}, columns=WHAT | {"updates": "updates", "valid ppl": "valid_ppl:.2f",
                                                             "vs (a)": "valid_ppl_gap_vs_a:+.1%"}),
             dict(title="Large vocabularies: one-process pairs in turn", command=C + " --pairs --repeats 4",
                  files=["large_vocab_side_by_side"], columns=WHAT | WPS | {"memory copy, GB/s": "copy_gb_per_s"},
                  text="What adaptive input saves is passes over the plain embedding's fp32 weights, bound by memory "
                       "bandwidth (a memory copy's before each run), so the gain moves with the shared machine.")]

if __name__ == "__main__":
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):  # glibc reads them only at start-up (steps)
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks.large_vocab", *sys.argv[1:]],
                  dict(os.environ, **MALLOC_ENV))
    p = arguments()
    p.add_argument("--pairs", action="store_true", help="only the one-process goals' pairs: large_vocab_side_by_side.json")
    args = p.parse_args()
    main("large_vocab_side_by_side" if args.pairs else "large_vocab", PAIR_CASES if args.pairs else CASES, measure,
         goals, args=args, quick_cases=[dict(corpus="zipf", variant=v, mode=m, quick=True) for v in "ab"
                                        for m in ("steps", "one_process")])
