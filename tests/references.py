"""Test-only references: the definitions the package's fast code is checked
against, written as literally as possible."""

from typing import Optional

import torch
from torch import Tensor


def forget_mult_reference(f: Tensor, z: Tensor, c0: Optional[Tensor] = None) -> Tensor:
    """fo-pooling, c_t = f_t c_{t-1} + (1 - f_t) z_t, as a plain loop that
    autograd differentiates: T x B x H -> T x B x H."""
    c_prev = torch.zeros_like(z[0]) if c0 is None else c0
    outputs = []
    for f_t, z_t in zip(f.unbind(0), z.unbind(0)):
        c_prev = f_t * c_prev + (1 - f_t) * z_t
        outputs.append(c_prev)
    return torch.stack(outputs)  # T x B x H


def plain_cache_probs(hidden: Tensor, inputs: Tensor, size: int, theta: float, vocab_size: int) -> Tensor:
    """The continuous cache's p_cache at every position of one whole stream, by
    the formula, one position at a time: T x C hidden states, T words read ->
    T x V (zero rows where nothing is remembered)."""
    T = hidden.size(0)
    probs = torch.zeros(T, vocab_size, dtype=torch.float64)
    h = hidden.double()
    for t in range(1, T):
        past = range(max(0, t - size), t)
        scores = torch.stack([theta * h[t].dot(h[i]) for i in past])
        for i, w in zip(past, torch.softmax(scores, dim=0)):
            probs[t, inputs[i + 1]] += w
    return probs


def target_positions(batches, k: int) -> Tensor:
    """Corpus position of every target of batch k of a ``StreamBatches``
    (B x T; -1 at padding)."""
    T = batches.tokens_per_sample
    cols = torch.arange(k * T, min((k + 1) * T, batches.longest))
    pos = batches.positions.unsqueeze(1) + cols.unsqueeze(0)  # B x T
    return pos.masked_fill(batches.targets[:, cols].eq(batches.pad), -1)


def adaptive_input_reference(tokens: Tensor, cutoffs, embeddings, projections) -> Tensor:
    """Adaptive input (Baevski & Auli 2019) one token at a time: the band of
    each word, its row of that band's ``nn.Embedding``, then that band's ``nn.Linear``."""
    bounds = [0] + list(cutoffs)
    rows = []
    for w in tokens.reshape(-1).tolist():
        band = max(b for b, lo in enumerate(bounds) if w >= lo)
        rows.append(projections[band](embeddings[band](torch.tensor(w - bounds[band]))))
    return torch.stack(rows).view(*tokens.shape, -1)


def rarest_row_for_unreached(rms: Tensor) -> Tensor:
    """A matrix's rms with every row no statistics batch reached (all zero) given the rms of the
    reached row whose mean is smallest, one row at a time."""
    if rms.dim() != 2:
        return rms
    reached = {i for i in range(len(rms)) if rms[i].abs().sum() > 0}
    if not reached or len(reached) == len(rms):
        return rms
    rarest = min(reached, key=lambda i: rms[i].mean().item())
    out = rms.clone()
    for i in range(len(rms)):
        if i not in reached:
            out[i] = rms[rarest]
    return out


def dynamic_eval_update(weight: Tensor, trained: Tensor, grad: Tensor, rms: Tensor, all_rms, lr: float,
                        decay: float, epsilon: float) -> Tensor:
    """One step of Krause et al. 2018's RMS update with the RMS-scaled global prior,
    as their dynamiceval.py writes it: decrate = min(rms / mean rms, 1 / lambda),
    dW = lambda * decrate * (theta_g - theta) - lr * grad / (rms + epsilon)."""
    mean_rms = sum(r.mean() for r in all_rms) / len(all_rms)
    decrate = torch.clamp(rms / mean_rms, max=1 / decay if decay > 0 else float("inf"))
    return weight + decay * decrate * (trained - weight) - lr * grad / (rms + epsilon)
