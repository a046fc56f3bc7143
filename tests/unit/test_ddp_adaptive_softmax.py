"""DistributedDataParallel (gloo, no find_unused_parameters) over the adaptive
softmax, alone and tied to an adaptive input, where one rank's batch has no
tail words at all (neither targets nor inputs). Each tail and each band still
runs on zero rows, so every parameter is reduced on every step; a layer that
skipped the empty ones would fail at the second step."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fairseq_adasoft.modules import AdaptiveInput, AdaptiveSoftmax

D, V, CUTOFFS, N, STEPS, WORLD = 8, 50, [10, 30], 12, 2, 2
KINDS = ("softmax", "tied_adaptive_input")


class TiedModel(nn.Module):
    """Adaptive input tied to the adaptive softmax (embeddings and projections)."""

    def __init__(self):
        super().__init__()
        self.embed = AdaptiveInput(V, D, CUTOFFS)
        self.softmax = AdaptiveSoftmax(D, V, CUTOFFS, tied_input=self.embed, tie_proj=True)

    def forward(self, tokens, target):
        return self.softmax(torch.tanh(self.embed(tokens)), target)


def rank_batch(rank, kind):
    g = torch.Generator().manual_seed(rank)
    high = V if rank == 0 else CUTOFFS[0]  # rank 1: shortlist words only
    target = torch.randint(0, high, (N,), generator=g)
    if kind == "softmax":
        return torch.randn(N, D, generator=g), target
    return torch.randint(0, high, (N,), generator=g), target


def make_module(kind):
    torch.manual_seed(0)
    return AdaptiveSoftmax(D, V, CUTOFFS) if kind == "softmax" else TiedModel()


def worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    for kind in KINDS:  # one process group for both: spawning is most of the test's time
        model = DistributedDataParallel(make_module(kind))  # find_unused_parameters=False
        x, t = rank_batch(rank, kind)
        for _ in range(STEPS):
            model.zero_grad()
            (-model(x, t).sum()).backward()
        grads = {n: p.grad for n, p in model.module.named_parameters()}
        torch.save(grads, os.path.join(out_dir, f"{kind}{rank}.pt"))
    dist.destroy_process_group()
    # gloo's threads may abort the interpreter's finalization (SIGABRT), failing a finished
    # worker; the launcher leaves the same way after training (fairseq_adasoft.launch.finish).
    os._exit(0)


def test_ddp_reduces_every_parameter_when_a_rank_has_no_tail_words(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    for kind in KINDS:
        single = make_module(kind)
        loss = sum(-single(*rank_batch(r, kind)).sum() for r in range(WORLD)) / WORLD
        loss.backward()
        for rank in range(WORLD):
            grads = torch.load(tmp_path / f"{kind}{rank}.pt")
            for name, p in single.named_parameters():
                torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-6, msg=f"{kind} rank {rank} {name}")
        far = [g for n, g in grads.items() if "tail" in n or "embeddings.2" in n or "projections.2" in n]
        assert far and all(torch.count_nonzero(g) > 0 for g in far), kind  # rank 0's tail gradients arrived
