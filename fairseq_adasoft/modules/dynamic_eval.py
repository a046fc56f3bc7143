"""Dynamic evaluation (Krause, Kahembwe, Murray & Renals 2018, "Dynamic
Evaluation of Neural Sequence Models", ICML, arXiv:1709.07432): the model
adapts to the text it scores. The text is read in segments s_1, s_2, ...;
segment s_i is scored with the weights theta_{i-1}, then its loss L(s_i)
(the mean negative log-likelihood of its tokens) takes one gradient step.

This is the paper's RMS update with the RMS-scaled global prior (its Section
5, "RMS with a global prior", as the authors' ``dynamiceval.py`` computes it),
with gradient statistics gathered once on N_b batches of training data:

    MS_g = 1/N_b sum_k (dL_k/dtheta)^2,   rms = sqrt(MS_g)
    RMS_norm = rms / mean(rms)             (mean: of each tensor's mean, over tensors)
    theta_i = theta_{i-1} - eta * dL(s_i)/dtheta / (rms + epsilon)
                          + lambda * min(RMS_norm, 1/lambda) * (theta_g - theta_{i-1})

theta_g are the trained weights; the clip at 1/lambda keeps the decay from
overshooting them. Statistics and updates run in fp32 whatever the
parameters' dtype (16-bit models keep an fp32 copy that is cast back).

Rows of an embedding that are read only by row lookups can be updated
lazily (``lazy_rows``): a row no gradient reaches only decays, by the factor
(1 - lambda * rate) per step, so it is brought up to date when it is next
read instead of on every step. The result equals the dense update.
"""

from typing import Callable, Iterable, List, NamedTuple, Optional, Sequence

import torch
from torch import Tensor, nn

# dynamiceval.py's stabiliser, in the units of its rms (gradients of a mean loss).
EPSILON = 2e-5


class DynamicEvalSetup(NamedTuple):
    """What a model needs to start dynamic evaluation once its trained weights are loaded."""
    lr: float  # eta
    decay: float  # lambda
    statistics_batches: Callable[[], Iterable]  # the training batches for MS_g
    statistics_file: str = ""  # where MS_g is kept between runs ("": gathered every run)
    statistics_settings: Optional[dict] = None  # what the batches were: a kept file must match it


class GradientStatistics:
    """Sums of squared gradients over training batches: call ``add`` after each backward."""

    def __init__(self, params: Iterable[nn.Parameter]):
        self.params = list(params)
        self.sums = [torch.zeros_like(p, dtype=torch.float32) for p in self.params]
        self.batches = 0

    def add(self) -> None:
        for p, total in zip(self.params, self.sums):
            if p.grad is not None:
                total.add_(p.grad.float().square())
        self.batches += 1

    def rms(self) -> List[Tensor]:
        """Per parameter, sqrt(MS_g). Rows of a matrix that no batch reached (an embedding's words
        absent from the batches read) take the rms of the rarest row reached, not 0, which would
        step them by eta / epsilon."""
        if self.batches == 0:
            raise ValueError("no training batch gave gradient statistics: dynamic evaluation needs at least one")
        rms = [(total / self.batches).sqrt_() for total in self.sums]
        for r in rms:
            reached = r.ne(0).any(dim=1) if r.dim() == 2 else None
            if reached is not None and reached.any() and not reached.all():
                rarest = torch.where(reached, r.mean(dim=1), torch.full_like(r[:, 0], float("inf"))).argmin()
                r[~reached] = r[rarest].clone()
        return rms


class DynamicEvaluation:
    """Krause et al.'s update over ``params`` (the model's, trained values kept
    as theta_g), from ``rms`` (``GradientStatistics.rms()``). ``lazy_rows``:
    2-D parameters read only where ``read_rows`` says."""

    def __init__(self, params: Sequence[nn.Parameter], rms: Sequence[Tensor], lr: float, decay: float,
                 epsilon: float = EPSILON, lazy_rows: Sequence[nn.Parameter] = (), rows_read_every_step: int = 0):
        if lr < 0 or decay < 0:
            raise ValueError(f"dynamic evaluation needs lr >= 0 and decay >= 0, got {lr} and {decay}")
        self.params = list(params)
        self.rms = [r.float() for r in rms]
        self.trained = [p.detach().float().clone() for p in self.params]  # theta_g
        # The fp32 weights the steps update; for fp32 parameters, the parameters themselves.
        self.weights = [p.data if p.dtype == torch.float32 else t.clone() for p, t in zip(self.params, self.trained)]
        self.lazy = {i: None for i, p in enumerate(self.params) if any(p is q for q in lazy_rows)}
        # Rows [0, prefix) of a lazy parameter (a tied shortlist) are read by every forward: they
        # step densely, as a view, with the other weights.
        self.prefix = rows_read_every_step
        self.restart(lr, decay, epsilon)

    def restart(self, lr: float, decay: float, epsilon: float = EPSILON) -> None:
        """Back to the trained weights, with this learning rate and decay."""
        mean_rms = sum(r.mean() for r in self.rms) / len(self.rms)
        self.lr, self.decay = lr, decay
        self.lr_scale = [lr / (r + epsilon) for r in self.rms]
        # lambda * min(RMS_norm, 1/lambda) = min(lambda * RMS_norm, 1).
        self.decay_scale = [(decay * r / mean_rms).clamp_(max=1.0) for r in self.rms]
        for i, (w, t) in enumerate(zip(self.weights, self.trained)):
            w.copy_(t)
            self._publish(i)
        self.steps = 0
        # Per lazy parameter: the step each row is up to date with, and the rows read since the last step.
        self.row_step = {i: torch.zeros(self.params[i].size(0), dtype=torch.long, device=self.params[i].device)
                         for i in self.lazy}
        self.lazy = {i: [] for i in self.lazy}

    def read_rows(self, param: nn.Parameter, rows: Tensor) -> None:
        """Before ``rows`` of a lazy parameter are read: bring them up to date."""
        i = self._index(param)
        rows = rows.reshape(-1).to(self.row_step[i].device)
        rows = rows[rows >= self.prefix] if self.prefix else rows  # the prefix is always up to date
        behind = rows[self.row_step[i][rows] < self.steps]
        if behind.numel():
            lag = (self.steps - self.row_step[i][behind]).to(self.weights[i].dtype).unsqueeze(1)
            w, t, keep = self.weights[i], self.trained[i], 1.0 - self.decay_scale[i][behind]
            w[behind] = t[behind] + (w[behind] - t[behind]) * keep.pow(lag)
            self.row_step[i][behind] = self.steps
            self._publish(i, behind)
        self.lazy[i].append(rows)

    @torch.no_grad()
    def step(self) -> None:
        """One step from the gradients in the parameters' ``.grad`` (None: no gradient)."""
        # Dense weights (and lazy prefixes) step together: w += decay_scale * (t - w), then
        # w -= lr_scale * grad, each one fused pass over every tensor.
        decayed, trained, decay = [], [], []
        stepped, grads, lr_scale = [], [], []
        for i, p in enumerate(self.params):
            w, t = self.weights[i], self.trained[i]
            if i in self.lazy:
                grad = self._lazy_step(i, p.grad)
                if not self.prefix:
                    continue
                w, t, p_grad = w[:self.prefix], t[:self.prefix], grad
                d, ls = self.decay_scale[i][:self.prefix], self.lr_scale[i][:self.prefix]
            else:
                p_grad, d, ls = None if p.grad is None else p.grad.float(), self.decay_scale[i], self.lr_scale[i]
            decayed.append(w)
            trained.append(t)
            decay.append(d)
            if p_grad is not None:
                stepped.append(w)
                grads.append(p_grad)
                lr_scale.append(ls)
        if decayed:
            torch._foreach_lerp_(decayed, trained, decay)
        if stepped:
            torch._foreach_addcmul_(stepped, grads, lr_scale, value=-1.0)
        for i in range(len(self.params)):
            if i not in self.lazy:
                self._publish(i)
            elif self.prefix:
                self._publish(i, slice(0, self.prefix))
        self.steps += 1

    def _lazy_step(self, i: int, grad: Optional[Tensor]) -> Optional[Tensor]:
        """Step the rows read since the last step beyond the prefix; return the prefix's gradient
        (dense, fp32; None without a gradient)."""
        rows = torch.cat(self.lazy[i]).unique() if self.lazy[i] else self.row_step[i][:0]
        self.lazy[i] = []
        prefix_grad, rows_grad = (None, None) if grad is None else _split_rows(grad, rows, self.prefix)
        if rows.numel():
            self._update(self.weights[i], self.trained[i], rows_grad, i, rows)
            self.row_step[i][rows] = self.steps + 1
            self._publish(i, rows)
        return prefix_grad

    def _update(self, w: Tensor, t: Tensor, grad: Optional[Tensor], i: int, rows: Tensor) -> None:
        new = w[rows] + (t[rows] - w[rows]) * self.decay_scale[i][rows]
        if grad is not None:
            new -= grad * self.lr_scale[i][rows]
        w[rows] = new

    def _publish(self, i: int, rows=None) -> None:
        """Copy the fp32 weights into a 16-bit parameter."""
        p, w = self.params[i], self.weights[i]
        if p.dtype == torch.float32:  # w is the parameter's own data
            return
        with torch.no_grad():
            if rows is None:
                p.copy_(w)
            else:
                p[rows] = w[rows].to(p.dtype)

    def _index(self, param: nn.Parameter) -> int:
        for i in self.lazy:
            if self.params[i] is param:
                return i
        raise ValueError("read_rows: that parameter was not given as lazy_rows")



def _split_rows(grad: Tensor, rows: Tensor, prefix: int):
    """A dense or sparse (COO, as ``nn.Embedding(sparse=True)`` gives) gradient as its dense
    rows [0, prefix) (None when prefix is 0) and its dense ``rows`` (sorted, all >= prefix), fp32."""
    if grad.is_sparse and grad.sparse_dim() != 1:  # not by rows (a hybrid tensor): densify
        grad = grad.to_dense()
    if not grad.is_sparse:
        return (grad[:prefix].float() if prefix else None), grad[rows].float()
    grad = grad.coalesce()
    index, values = grad.indices()[0], grad.values().float()
    head = None
    if prefix:
        inside = index < prefix
        head = values.new_zeros(prefix, *values.shape[1:]).index_copy_(0, index[inside], values[inside])
    # Each row's place among the gradient's sorted rows; rows it does not hold get zeros.
    place = torch.searchsorted(index, rows).clamp_(max=max(index.numel() - 1, 0))
    held = index[place].eq(rows) if index.numel() else torch.zeros_like(rows, dtype=torch.bool)
    picked = values[place] if index.numel() else values.new_zeros(len(rows), *values.shape[1:])
    return head, picked * held.view(-1, *[1] * (values.dim() - 1))
