"""Dropout variants of AWD-LSTM (Merity et al. 2018, "Regularizing and
Optimizing LSTM Language Models"), written for time-major ``T x B x C`` tensors."""

from torch import Tensor, nn


class LockedDropout(nn.Module):
    """Variational dropout (Gal & Ghahramani 2016): one mask per sequence,
    shared by every timestep, so a unit is either on or off for the whole
    sequence. Identity in eval mode."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"LockedDropout p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:  # x: T x B x C
        if not self.training or self.p == 0.0:
            return x
        mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1 - self.p)
        return x * mask.div_(1 - self.p)  # 1 x B x C broadcast over T


def embedding_dropout(embed: nn.Module, tokens: Tensor, p: float, training: bool) -> Tensor:
    """Drop whole word types (rows of the embedding matrix), rescaling the
    survivors, as in AWD-LSTM's ``embedded_dropout``. ``embed`` is an
    ``nn.Embedding`` or an ``AdaptiveInput`` (linear in each row, so scaling
    its output scales the word's row); ``tokens`` has any shape, the result
    has that shape plus the embedding dimension."""
    x = embed(tokens)  # tokens.shape x C
    if not training or p == 0.0:
        return x
    mask = x.new_empty(embed.num_embeddings).bernoulli_(1 - p).div_(1 - p)  # V: one scale per word type
    # Scaling the looked-up rows equals scaling the whole V x C matrix, as
    # AWD-LSTM does, at a fraction of the cost when the batch has fewer tokens than V.
    return x * mask[tokens].unsqueeze(-1)
