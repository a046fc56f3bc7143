"""Adaptive input representations (Baevski & Auli 2019, "Adaptive Input
Representations for Neural Language Modeling", ICLR, arXiv:1809.10853).

The vocabulary, sorted by decreasing frequency, is split by the adaptive
softmax's cutoffs into bands; band i embeds its words in ``d / factor^i``
features and projects them to ``d``, so rare words cost few parameters:

    e(w) = P_i E_i[w - cutoffs[i-1]]   for w in band i

A band as wide as ``d`` (the first, or any with ``factor`` 1) has no P_i: it
would only reparametrise its rows, and the band then equals ``nn.Embedding``.

It mirrors ``nn.Embedding`` (``tokens -> tokens.shape x d``, ``num_embeddings``,
``padding_idx``). Every band runs on every call, on however many tokens it has
(possibly none), so each parameter gets a gradient on every step, as the
adaptive softmax's tails do: DistributedDataParallel needs no
``find_unused_parameters``.
"""

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .cutoffs import band_dim, validate_cutoffs

# Rows uniform within dim^-1/2 have variance 1 / (3 dim): a N(0, 3) projection gives features of variance 1.
UNIFORM_TO_UNIT_STD = 3.0**0.5


class AdaptiveInput(nn.Module):
    """Args:
        vocab_size: number of words (V), ids sorted by decreasing frequency.
        embed_dim: features of every output vector (d).
        cutoffs: strictly increasing ids in (0, V); ``len(cutoffs) + 1`` bands.
        factor: band i has ``d // factor^i`` features (at least 1).
        padding_idx: as ``nn.Embedding``'s: that word's vector is zero and gets no gradient.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        cutoffs: Sequence[int],
        factor: float = 4.0,
        padding_idx: Optional[int] = None,
    ):
        super().__init__()
        if factor < 1.0:
            raise ValueError(f"AdaptiveInput factor must be >= 1 (bands never wider than embed_dim), got {factor}")
        self.cutoffs = validate_cutoffs(cutoffs, vocab_size) + [vocab_size]
        self.num_embeddings = vocab_size
        self.embed_dim = embed_dim
        self.padding_idx = padding_idx
        self.band_dims = [band_dim(embed_dim, factor, b) for b in range(len(self.cutoffs))]
        self.embeddings = nn.ModuleList()
        self.projections = nn.ModuleList()
        for lo, hi, dim in zip([0] + self.cutoffs[:-1], self.cutoffs, self.band_dims):
            pad = padding_idx - lo if padding_idx is not None and lo <= padding_idx < hi else None
            self.embeddings.append(nn.Embedding(hi - lo, dim, padding_idx=pad))
            # A band as wide as embed_dim needs no projection: it would only reparametrise its rows.
            self.projections.append(nn.Identity() if dim == embed_dim else nn.Linear(dim, embed_dim, bias=False))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The full-width band's rows are N(0, 1), as nn.Embedding's (the plain embedding's).
        # A narrower band's rows start as nn.Linear weights do (uniform within dim^-1/2), which
        # is how an adaptive softmax tail's output matrix starts: tied, the tail starts as an
        # untied one. Its projection, N(0, 3), keeps each output feature at unit variance.
        for embedding, projection in zip(self.embeddings, self.projections):
            embedding.reset_parameters()
            if isinstance(projection, nn.Identity):
                continue
            bound = embedding.embedding_dim**-0.5
            with torch.no_grad():
                embedding.weight.uniform_(-bound, bound)
                if embedding.padding_idx is not None:
                    embedding.weight[embedding.padding_idx].zero_()
            nn.init.normal_(projection.weight, std=UNIFORM_TO_UNIT_STD)

    def forward(self, tokens: Tensor) -> Tensor:
        flat = tokens.reshape(-1)
        band = torch.bucketize(flat, flat.new_tensor(self.cutoffs[:-1]), right=True)  # N
        out = None
        bands = zip([0] + self.cutoffs[:-1], self.embeddings, self.projections)
        for b, (lo, embedding, projection) in enumerate(bands):
            rows = (band == b).nonzero().squeeze(1)  # may be empty: the band still runs
            x = projection(embedding(flat.index_select(0, rows) - lo))  # rows x d
            out = x.new_zeros(flat.numel(), self.embed_dim) if out is None else out
            out = out.index_copy(0, rows, x.to(out.dtype))
        return out.view(*tokens.shape, self.embed_dim)
