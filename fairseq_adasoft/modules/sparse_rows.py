"""Rows of a weight whose gradient is sparse: slicing ``weight[lo:hi]`` in
autograd gives the whole weight a dense gradient (zeros outside the slice),
which for a tied embedding is V x d per step. Dynamic evaluation steps on a
few rows at a time, so there the slice's gradient is kept to its rows."""

import torch
from torch import Tensor


class SparseRows(torch.autograd.Function):
    """``weight[lo:hi]`` forward; backward: a sparse COO gradient of the weight's shape."""

    @staticmethod
    def forward(ctx, weight: Tensor, lo: int, hi: int) -> Tensor:
        ctx.lo, ctx.shape = lo, weight.shape
        return weight[lo:hi]

    @staticmethod
    def backward(ctx, grad: Tensor):
        rows = torch.arange(ctx.lo, ctx.lo + grad.size(0), device=grad.device).unsqueeze(0)
        # The rows are in range and sorted by construction: checking them would only cost time.
        sparse = torch.sparse_coo_tensor(rows, grad, ctx.shape, is_coalesced=True, check_invariants=False)
        return sparse, None, None


def weight_rows(weight: Tensor, lo: int, hi: int, sparse: bool) -> Tensor:
    """``weight[lo:hi]``, with a sparse gradient when ``sparse``."""
    return SparseRows.apply(weight, lo, hi) if sparse else weight[lo:hi]
