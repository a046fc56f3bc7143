"""DistributedDataParallel (gloo, no find_unused_parameters) over the adaptive
softmax, where one rank's batch has no tail targets at all. Each tail still
runs on zero rows, so every parameter is reduced on every step; a layer that
skipped the empty tails would fail at the second step."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from fairseq_adasoft.modules import AdaptiveSoftmax

D, V, CUTOFFS, N, STEPS, WORLD = 8, 50, [10, 30], 12, 2, 2


def rank_batch(rank):
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(N, D, generator=g)
    high = V if rank == 0 else CUTOFFS[0]  # rank 1: shortlist targets only
    return x, torch.randint(0, high, (N,), generator=g)


def make_module():
    torch.manual_seed(0)
    return AdaptiveSoftmax(D, V, CUTOFFS)


def worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    model = DistributedDataParallel(make_module())  # find_unused_parameters=False
    x, t = rank_batch(rank)
    for _ in range(STEPS):
        model.zero_grad()
        (-model(x, t).sum()).backward()
    torch.save({n: p.grad for n, p in model.module.named_parameters()}, os.path.join(out_dir, f"grads{rank}.pt"))
    dist.destroy_process_group()
    # gloo's threads may abort the interpreter's finalization (SIGABRT), failing a finished
    # worker; the launcher leaves the same way after training (fairseq_adasoft.launch.finish).
    os._exit(0)


def test_ddp_reduces_every_parameter_when_a_rank_has_no_tail_targets(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    single = make_module()
    loss = sum(-single.target_log_prob(*rank_batch(r)).sum() for r in range(WORLD)) / WORLD
    loss.backward()
    for rank in range(WORLD):
        grads = torch.load(tmp_path / f"grads{rank}.pt")
        for name, p in single.named_parameters():
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-6, msg=f"rank {rank} {name}")
    tail_grads = [g for n, g in grads.items() if n.startswith("tail")]
    assert all(torch.count_nonzero(g) > 0 for g in tail_grads)  # rank 0's tail gradients arrived
