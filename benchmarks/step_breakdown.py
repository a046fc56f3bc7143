"""Where one training step of a fairseq model goes, in-process: the
criterion's forward, the backward, fairseq's optimizer (gradient clipping
and the update), and the gradient all-reduce of 2-process gloo DDP, timed on
the gradients' own sizes in DistributedDataParallel's 25 MB buckets between
two fresh processes. Also the parameters of the input and output layers and
what training keeps for them (parameters, gradients, Adam's two moments).
Used by benchmarks.large_vocab, which runs it in a child process with the
fairseq-train runs' malloc settings (glibc reads them only at start-up):

    python -m benchmarks.step_breakdown OUT.json DATA [fairseq-train flags ...]
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.common import MALLOC_ENV, spread

DDP_BUCKET_BYTES = 25 * 2**20  # DistributedDataParallel's bucket_cap_mb default
REPEATS = 4
# Steps before timing: Adam's state is allocated and the heap settles, as fairseq-train's dropped first interval.
WARMUP_STEPS = 3
ADAM_STATES = 2  # exp_avg, exp_avg_sq


def build(data: str, flags: list):
    """Task, model, criterion and fairseq optimizer as fairseq-train builds them."""
    from fairseq import optim, options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    args = options.parse_args_and_arch(options.get_training_parser(), input_args=[data, *flags])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    optimizer = optim.build_optimizer(cfg.optimizer, [p for p in model.parameters() if p.requires_grad])
    return task, model, criterion, optimizer, cfg


def one_batch(task, cfg):
    task.load_dataset("train")
    itr = task.get_batch_iterator(task.dataset("train"), max_sentences=cfg.dataset.batch_size, seed=1)
    return next(itr.next_epoch_itr(shuffle=False))


def unique_params(module):
    return list({id(p): p for p in module.parameters()}.values())


def io_layers(model) -> dict:
    """The input and output layers' parameters (shared ones once) and training's fp32 state for them."""
    decoder = model.decoder
    params = {id(p): p for m in (decoder.embed_tokens, decoder.adaptive_softmax) for p in m.parameters()}
    n = sum(p.numel() for p in params.values())
    return {"parameters": n, "train_state_bytes": n * 4 * (2 + ADAM_STATES)}  # weights, grads, moments


def _all_reduce_worker(rank, init_file, sizes, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    buckets = [torch.zeros(n) for n in sizes]
    samples = []
    for _ in range(REPEATS + 1):  # the first is a warm-up
        dist.barrier()
        start = time.perf_counter()
        for b in buckets:
            dist.all_reduce(b)
        samples.append(1000 * (time.perf_counter() - start))
    if rank == 0:
        torch.save(samples[1:], out)
    dist.destroy_process_group()
    os._exit(0)  # gloo's threads may abort interpreter finalization (see fairseq_adasoft.launch.finish)


def all_reduce_ms(numels) -> dict:
    """Milliseconds to all-reduce gradients of these sizes in DDP-sized buckets, 2 gloo processes."""
    sizes, current = [], 0
    for n in numels:
        current += n
        if current * 4 >= DDP_BUCKET_BYTES:
            sizes.append(current)
            current = 0
    sizes += [current] if current else []
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "ms.pt")
        mp.spawn(_all_reduce_worker, args=(os.path.join(d, "init"), sizes, out), nprocs=2, join=True)
        return spread(torch.load(out))


def measure(data: str, flags: list) -> dict:
    task, model, criterion, optimizer, cfg = build(data, flags)
    model.train()
    sample = one_batch(task, cfg)
    phases = {"forward": [], "backward": [], "optimizer": []}
    for repeat in range(WARMUP_STEPS + REPEATS):
        t0 = time.perf_counter()
        loss = criterion(model, sample)[0]
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.clip_grad_norm(cfg.optimization.clip_norm)
        optimizer.step()
        optimizer.zero_grad()
        t3 = time.perf_counter()
        if repeat >= WARMUP_STEPS:
            for name, (a, b) in zip(phases, ((t0, t1), (t1, t2), (t2, t3))):
                phases[name].append(1000 * (b - a))
    ms = {name: spread(samples) for name, samples in phases.items()}
    ms["all_reduce_2_gloo"] = all_reduce_ms([p.numel() for p in unique_params(model)])
    total = sum(m["median"] for m in ms.values())
    return {"ms": ms, "share_of_median": {k: round(m["median"] / total, 3) for k, m in ms.items()},
            "parameters": sum(p.numel() for p in unique_params(model)), "input_output_layers": io_layers(model),
            "tokens_per_step": int(sample["ntokens"])}


def measure_in_child(data: str, flags: list, out: str) -> dict:
    """``measure`` in a fresh process with the fairseq-train runs' malloc settings, so a
    step's fresh gradient and Adam buffers reuse freed memory as they do in training."""
    cmd = [sys.executable, "-m", "benchmarks.step_breakdown", out, data, *flags]
    r = subprocess.run(cmd, env=dict(os.environ, **MALLOC_ENV), capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    with open(out) as f:
        return json.load(f)


if __name__ == "__main__":
    with open(sys.argv[1], "w") as f:
        json.dump(measure(sys.argv[2], sys.argv[3:]), f, indent=1)
