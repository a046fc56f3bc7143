"""Adaptive softmax (Grave, Joulin, Cissé, Grangier & Jégou 2017, "Efficient
softmax approximation for GPUs", arXiv:1609.04309).

The vocabulary, sorted by decreasing frequency, is split by ``cutoffs`` into a
shortlist ``[0, cutoffs[0])`` and clusters ``[cutoffs[i], cutoffs[i+1])``. The
head scores the shortlist words plus one logit per cluster; tail ``i`` scores
the words inside cluster ``i`` from a projection to ``d / div_value^(i+1)``:

    log p(w) = log p_head(w)                          for w in the shortlist
    log p(w) = log p_head(cluster i) + log p_tail_i(w)  for w in cluster i

Layout and parameter shapes match ``torch.nn.AdaptiveLogSoftmaxWithLoss`` so
weights can be compared, but unlike it (and fairseq's ``AdaptiveSoftmax``):

* every log-softmax and every sum runs in fp32, whatever the input dtype, so
  fp16/bf16 models cannot overflow the loss;
* while gradients are tracked, every tail runs on every call, on however many
  rows it has (possibly zero), so each parameter is part of the autograd graph
  and receives a gradient (zero when unused) on every step;
  DistributedDataParallel needs no ``find_unused_parameters``;
* scoring (fairseq-eval-lm, the hub's ``score``) is target-aware: only the head
  and the tails the targets fall in run, and no N x V tensor is built
  (``get_log_prob`` with a target returns a ``LazyLogProbs``);
* by default (``inplace_backward``) the loss's backward turns each cluster's
  saved probabilities into its gradient in place, so a graph backpropagates
  once; build with ``inplace_backward=False`` to backpropagate twice
  (``retain_graph=True``, ``gradcheck``);
* each cluster's logits are computed in the layout the CPU BLAS is fast at
  (``modules/logits.py``): rows padded to an aligned width with -inf columns,
  filled outside autograd (their gradient is 0); while training on CPU they
  live in memory the layer keeps from one step to the next.
"""

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cutoffs import band_dim, validate_cutoffs
from .lazy_log_probs import LazyLogProbs
from .logits import LogitBuffer, aligned_linear, linear_nll
from .precision import accumulation_dtype, upcast
from .sparse_rows import weight_rows


def check_tied_input(tied_input: nn.Module, cutoffs: Sequence[int], input_dim: int, div_value: float) -> None:
    """An adaptive input can share its bands with the softmax's clusters only
    when both split the vocabulary alike and each band has its cluster's width."""
    if list(tied_input.cutoffs) != list(cutoffs):
        raise ValueError(
            f"tying an adaptive input to the adaptive softmax needs the same cutoffs, got {tied_input.cutoffs[:-1]} "
            f"and {list(cutoffs[:-1])}: drop --adaptive-input-cutoff (it defaults to --adaptive-softmax-cutoff)"
        )
    widths = [band_dim(input_dim, div_value, b) for b in range(1, len(cutoffs))]
    if tied_input.embed_dim != input_dim or tied_input.band_dims[1:] != widths:
        raise ValueError(
            f"tying an adaptive input to the adaptive softmax needs bands as wide as the tails' projections "
            f"({widths} features for embed_dim {input_dim}), got {tied_input.band_dims[1:]}: set "
            f"--adaptive-input-factor equal to --adaptive-softmax-div-value ({div_value:g})"
        )


class AdaptiveSoftmax(nn.Module):
    """Adaptive softmax output layer (Grave et al. 2017).

    Args:
        input_dim: features of the input (d).
        vocab_size: number of classes (V), ids sorted by decreasing frequency.
        cutoffs: strictly increasing ids in (0, V); ``len(cutoffs)`` clusters.
        div_value: tail ``i`` projects to ``d // div_value^(i+1)`` features.
        dropout: dropout on the tail projections (training only).
        head_bias: give the head a bias.
        tied_weight: an input embedding matrix (V x d) to share, as fairseq's
            ``--tie-adaptive-weights`` does (Press & Wolf 2017; Baevski & Auli
            2019): the head scores its shortlist with rows [0, cutoffs[0]) and
            keeps its own cluster rows; tail i scores its words with rows
            [cutoffs[i], cutoffs[i+1]) when its projection has d features
            (``div_value`` 1), and keeps its own output matrix otherwise.
        tied_input: an ``AdaptiveInput`` with the same cutoffs and bands to share,
            as fairseq's ``--tie-adaptive-weights`` with ``--adaptive-input``
            (Baevski & Auli 2019): the head's shortlist rows are band 0's
            embedding, and tail i's output matrix is band i + 1's embedding.
        tie_proj: with ``tied_input``, tail i also projects with band i + 1's
            projection, transposed (fairseq's ``--tie-adaptive-proj``).
        inplace_backward: let the loss's backward turn its saved
            probabilities into the gradient (faster, less memory; one
            backward per forward).
        train_autocast_dtype: while training on CPU, run the loss's head and
            tail matmuls (``target_log_prob``) under ``torch.autocast("cpu",
            train_autocast_dtype)``; the log-softmax and loss stay fp32, and
            evaluation keeps the parameters' precision so reported scores are
            not rounded.
    """

    def __init__(
        self,
        input_dim: int,
        vocab_size: int,
        cutoffs: Sequence[int],
        div_value: float = 4.0,
        dropout: float = 0.0,
        head_bias: bool = False,
        tied_weight: Optional[nn.Parameter] = None,
        inplace_backward: bool = True,
        train_autocast_dtype: Optional[torch.dtype] = None,
        tied_input: Optional[nn.Module] = None,
        tie_proj: bool = False,
    ):
        super().__init__()
        self.inplace_backward = inplace_backward
        self.train_autocast_dtype = train_autocast_dtype
        self.cutoffs = validate_cutoffs(cutoffs, vocab_size) + [vocab_size]
        if div_value < 1.0:
            raise ValueError(f"div_value must be >= 1, got {div_value}")
        self.input_dim = input_dim
        self.vocab_size = vocab_size
        self.shortlist_size = self.cutoffs[0]
        self.n_clusters = len(self.cutoffs) - 1
        if tied_weight is not None and tuple(tied_weight.shape) != (vocab_size, input_dim):
            raise ValueError(
                f"the tied embedding is {tuple(tied_weight.shape)}, the adaptive softmax needs "
                f"{vocab_size} x {input_dim}: give the embedding the output layer's dimension"
            )
        if tied_weight is not None and tied_input is not None:
            raise ValueError("tie the adaptive softmax to an embedding matrix or to an adaptive input, not both")
        if tie_proj and tied_input is None:
            raise ValueError("tie_proj shares an adaptive input's projections: give tied_input")
        if tied_input is not None:
            check_tied_input(tied_input, self.cutoffs, input_dim, div_value)
        self.tied_weight = tied_weight
        # The tied rows' gradient as a sparse tensor of the embedding's shape (dynamic evaluation).
        self.sparse_tied_rows = False
        self.tied_input = tied_input
        self.tie_proj = tie_proj
        if tied_weight is None and tied_input is None:
            self.head = nn.Linear(input_dim, self.shortlist_size + self.n_clusters, bias=head_bias)
        else:  # only the cluster rows are the head's own
            self.head_clusters = nn.Linear(input_dim, self.n_clusters, bias=head_bias)
        self.tail = nn.ModuleList()
        self.logit_buffers = [LogitBuffer() for _ in range(self.n_clusters + 1)]  # the head's, then each tail's
        self.tail_tied = []  # whether tail i's output matrix is a shared one
        for i in range(self.n_clusters):
            proj_dim = band_dim(input_dim, div_value, i + 1)
            cluster_size = self.cutoffs[i + 1] - self.cutoffs[i]
            tied = tied_input is not None or (tied_weight is not None and proj_dim == input_dim)
            # Identity keeps the parameter names: at p = 0 it skips a no-op pass, and
            # with tie_proj it stands where the tail's own projection would be.
            layers = [
                nn.Identity() if tie_proj else nn.Linear(input_dim, proj_dim, bias=False),
                nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            ]
            if not tied:
                layers.append(nn.Linear(proj_dim, cluster_size, bias=False))
            self.tail.append(nn.Sequential(*layers))
            self.tail_tied.append(tied)

    def _matmuls(self, x: Tensor) -> torch.autocast:
        enabled = self.train_autocast_dtype is not None and self.training and x.device.type == "cpu"
        return torch.autocast("cpu", dtype=self.train_autocast_dtype or torch.bfloat16, enabled=enabled)

    def _head_weights(self):
        """The head's weights (shortlist rows, then cluster rows) and bias, for ``aligned_weight``."""
        if self.tied_input is None and self.tied_weight is None:
            return [self.head.weight], self.head.bias
        if self.tied_input is not None:
            shortlist = self.tied_input.embeddings[0].weight
        else:
            shortlist = weight_rows(self.tied_weight, 0, self.shortlist_size, self.sparse_tied_rows)
        bias = self.head_clusters.bias
        bias = None if bias is None else F.pad(bias, (self.shortlist_size, 0))  # the shortlist rows have none
        return [shortlist, self.head_clusters.weight], bias

    def _tail_features(self, i: int, x: Tensor):
        """Tail i's features (rows x d -> rows x its width) and output weight (cluster_size x width)."""
        if self.tie_proj:  # band i + 1 maps its features to d; the tail maps d to them
            projection = self.tied_input.projections[i + 1]
            x = F.linear(x, projection.weight.t()) if isinstance(projection, nn.Linear) else x
        tail = self.tail[i]
        h = tail[1](tail[0](x))  # projection, dropout
        if self.tied_input is not None:
            weight = self.tied_input.embeddings[i + 1].weight
        elif self.tail_tied[i]:
            weight = weight_rows(self.tied_weight, self.cutoffs[i], self.cutoffs[i + 1], self.sparse_tied_rows)
        else:
            weight = tail[2].weight
        return h, weight

    def _head(self, x: Tensor) -> Tensor:
        """Head logits: N x d -> N x (shortlist + clusters), aligned (``aligned_linear``)."""
        return aligned_linear(x, *self._head_weights())

    def _tail(self, i: int, x: Tensor) -> Tensor:
        """Tail i logits: rows x d -> rows x cluster_size, aligned (``aligned_linear``)."""
        h, weight = self._tail_features(i, x)
        return aligned_linear(h, [weight])

    def tied_weight_rows(self) -> Tensor:
        """The rows of ``tied_weight`` this layer reads (none when untied)."""
        ranges = [(0, self.shortlist_size)] if self.tied_weight is not None else []
        ranges += [(self.cutoffs[i], self.cutoffs[i + 1]) for i in range(self.n_clusters)
                   if self.tied_weight is not None and self.tail_tied[i]]
        return torch.cat([torch.arange(lo, hi) for lo, hi in ranges]) if ranges else torch.zeros(0, dtype=torch.long)

    def cluster_of(self, target: Tensor) -> Tensor:
        """0 for shortlist targets, i + 1 for targets in cluster i."""
        return torch.bucketize(target, target.new_tensor(self.cutoffs[:-1]), right=True)

    def target_log_prob(self, input: Tensor, target: Tensor) -> Tensor:
        """log p(target) (fp32 for 16-bit inputs) for ``input`` N x d and ``target`` N (ids in [0, V))."""
        if input.dim() != 2 or target.dim() != 1 or input.size(0) != target.size(0):
            raise ValueError(
                f"target_log_prob expects input N x d and target N, got "
                f"{tuple(input.shape)} and {tuple(target.shape)}"
            )
        cluster = self.cluster_of(target)  # N
        # The head's class for each row: the word itself, or its cluster's logit.
        head_target = torch.where(cluster == 0, target, self.shortlist_size - 1 + cluster)
        with self._matmuls(input):
            nll = linear_nll(input, *self._head_weights(), head_target, self.logit_buffers[0], self.inplace_backward)
            for i in range(self.n_clusters):
                # May be empty: the tail still runs, so its weights get a zero gradient.
                rows = (cluster == i + 1).nonzero().squeeze(1)
                if rows.numel() == 0 and not torch.is_grad_enabled():
                    continue  # no gradient to give: skip the tail
                h, weight = self._tail_features(i, input.index_select(0, rows))
                in_cluster = target.index_select(0, rows) - self.cutoffs[i]
                tail_nll = linear_nll(h, [weight], None, in_cluster, self.logit_buffers[i + 1], self.inplace_backward)
                nll = nll.index_add(0, rows, tail_nll)
        return -nll

    forward = target_log_prob

    def log_prob(self, input: Tensor) -> Tensor:
        """Log-probabilities (fp32 for 16-bit inputs) over the whole vocabulary: ... x d -> ... x V."""
        lead = input.shape[:-1]
        x = input.reshape(-1, input.size(-1))  # N x d
        head_lp = F.log_softmax(upcast(self._head(x)), dim=-1)  # N x (s + k), aligned
        parts = [head_lp[:, : self.shortlist_size]]
        for i in range(self.n_clusters):
            cluster_lp = head_lp[:, self.shortlist_size + i].unsqueeze(1)  # N x 1
            tail_lp = F.log_softmax(upcast(self._tail(i, x)), dim=-1)[:, : self.cutoffs[i + 1] - self.cutoffs[i]]
            parts.append(tail_lp + cluster_lp)
        return torch.cat(parts, dim=1).view(*lead, self.vocab_size)

    def get_log_prob(self, input: Tensor, target: Optional[Tensor] = None) -> Tensor:
        """fairseq's interface (``FairseqDecoder.get_normalized_probs``): B x T x d -> B x T x V.
        Given the targets (a scorer's call) and no gradient to track, the result
        is a ``LazyLogProbs``: reading one word per position, as scorers do,
        costs the head and the tails those words fall in."""
        if target is None or torch.is_grad_enabled():
            return self.log_prob(input)
        return self.lazy_log_prob(input)

    def lazy_log_prob(self, input: Tensor) -> LazyLogProbs:
        """``log_prob(input)`` computed only where it is read (``modules/lazy_log_probs.py``)."""
        lead = tuple(input.shape[:-1])
        x = input.reshape(-1, input.size(-1))  # N x d
        return LazyLogProbs(lead, self.vocab_size, accumulation_dtype(input.dtype), input.device,
                            at=lambda index: self.target_log_prob(x, index.reshape(-1)).view(lead),
                            full=lambda: self.log_prob(input))

    def predict(self, input: Tensor) -> Tensor:
        """Most likely class for each row: ... x d -> ..."""
        return self.log_prob(input).argmax(dim=-1)
