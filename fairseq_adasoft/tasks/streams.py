"""Stateful truncated BPTT batching: a split as contiguous streams.

The classic RNN language-model protocol (Zaremba et al. 2014; awd-lstm-lm's
``batchify``/``get_batch``) reads the corpus as one token sequence, cuts it
into S streams, and feeds batch k as the k-th window of ``tokens_per_sample``
steps of every stream, so that a model can carry its hidden state from batch
k to batch k+1. Here, unlike ``batchify``, no token is dropped:

* the input of target position p is token p-1, and token 0 gets the
  end-of-sentence symbol as context, so every token is a target exactly once;
* stream lengths differ by at most one (the first ``N mod S`` streams are one
  longer) and a shorter stream is padded in the last batch;
* with DDP, rank r owns streams [r*B, (r+1)*B) for B streams per process, and
  every rank has the same number of batches, ceil(longest stream / T).

Each batch carries ``net_input["stream"] = {"name", "batch", "first_row",
"rows", "num_streams"}``: which stream set it continues, its index (0 starts
the streams afresh) and the rows it owns in the global S-stream state.
"""

import logging
import math
from typing import Dict, List, Optional

import numpy as np
import torch
from fairseq.data import FairseqDataset, data_utils, iterators

logger = logging.getLogger(__name__)


def stream_bounds(num_tokens: int, num_streams: int) -> np.ndarray:
    """Start of each stream and the end of the last: S + 1 target positions."""
    if num_streams > num_tokens:
        raise ValueError(
            f"--stateful-bptt: {num_streams} streams (--batch-size x processes) for a split of "
            f"{num_tokens} tokens; lower --batch-size (or --batch-size-valid)"
        )
    base, extra = divmod(num_tokens, num_streams)
    lengths = np.full(num_streams, base, dtype=np.int64)
    lengths[:extra] += 1
    return np.concatenate([[0], np.cumsum(lengths)])


def load_token_stream(path: str, split: str, dictionary, dataset_impl=None, combine=False,
                      old_to_new: Optional[torch.Tensor] = None) -> "TokenStream":
    """The binarized split at ``path`` as one stream, its ids mapped through
    ``old_to_new`` when the dictionary was re-sorted."""
    lines = data_utils.load_indexed_dataset(path, dictionary, dataset_impl, combine=combine)
    if lines is None or len(lines) == 0:
        raise ValueError(f"--stateful-bptt: no {split!r} split at {path}.{{bin,idx}}: binarize it with fairseq-preprocess")
    tokens = torch.from_numpy(np.concatenate([lines[i].numpy() for i in range(len(lines))]).astype(np.int32))
    if old_to_new is not None:  # binarized with the file's ids
        tokens = old_to_new[tokens.long()].int()
    logger.info("--stateful-bptt: %s is one stream of %d tokens", split, len(tokens))
    return TokenStream(split, tokens, eos=dictionary.eos(), pad=dictionary.pad())


def stream_batch_iterator(stream: "TokenStream", streams_per_shard: Optional[int], tokens_per_sample: int,
                          num_shards: int = 1, shard_id: int = 0, seed: int = 1, num_workers: int = 0,
                          epoch: int = 1, data_buffer_size: int = 0) -> iterators.EpochBatchIterator:
    """fairseq's epoch iterator over this shard's batches of ``stream``, in order."""
    if not streams_per_shard:
        raise ValueError("--stateful-bptt batches whole streams: set --batch-size (streams per process; "
                         "--batch-size-valid for validation) instead of --max-tokens")
    batches = StreamBatches(stream, streams_per_shard, tokens_per_sample, num_shards, shard_id)
    # One item of ``batches`` is one whole batch, and order matters: no shuffling.
    return iterators.EpochBatchIterator(
        dataset=batches, collate_fn=batches.collater, batch_sampler=[[k] for k in range(len(batches))],
        seed=seed, num_workers=num_workers, epoch=epoch, buffer_size=data_buffer_size,
        disable_shuffling=True)


class TokenStream(FairseqDataset):
    """A whole split as one sequence of token ids (lines joined, each ending in eos)."""

    def __init__(self, name: str, tokens: torch.Tensor, eos: int, pad: int):
        super().__init__()
        self.name = name
        self.tokens = tokens  # N
        self.eos, self.pad = eos, pad

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index):
        return self.tokens[index]


class StreamBatches(FairseqDataset):
    """Item k is the whole k-th batch (B x <=T) of this shard's streams."""

    supports_fetch_outside_dataloader = True

    def __init__(self, stream: TokenStream, streams_per_shard: int, tokens_per_sample: int,
                 num_shards: int, shard_id: int):
        super().__init__()
        if not 0 <= shard_id < num_shards:
            raise ValueError(f"shard {shard_id} of {num_shards} does not exist")
        self.name, self.pad = stream.name, stream.pad
        self.tokens_per_sample = tokens_per_sample
        self.num_streams = streams_per_shard * num_shards
        self.first_row = shard_id * streams_per_shard
        bounds = stream_bounds(len(stream.tokens), self.num_streams)
        self.longest = int(np.max(np.diff(bounds)))
        inputs = torch.cat([stream.tokens.new_tensor([stream.eos]), stream.tokens[:-1]])  # N: token p-1
        # B x L (L: the longest stream), padded on the right.
        self.inputs = torch.full((streams_per_shard, self.longest), self.pad, dtype=stream.tokens.dtype)
        self.targets = self.inputs.clone()
        for row in range(streams_per_shard):
            lo, hi = bounds[self.first_row + row], bounds[self.first_row + row + 1]
            self.inputs[row, : hi - lo] = inputs[lo:hi]
            self.targets[row, : hi - lo] = stream.tokens[lo:hi]
        self.positions = torch.as_tensor(bounds[self.first_row: self.first_row + streams_per_shard])  # B

    def __len__(self) -> int:
        return math.ceil(self.longest / self.tokens_per_sample)

    def __getitem__(self, k: int) -> int:
        return k

    def collater(self, items: List[int]) -> Dict:
        (k,) = items  # one item is one whole batch
        cols = slice(k * self.tokens_per_sample, (k + 1) * self.tokens_per_sample)
        src = self.inputs[:, cols].long()  # B x T
        target = self.targets[:, cols].long()  # B x T
        real = target.ne(self.pad)
        return {
            "id": torch.arange(self.first_row, self.first_row + src.size(0)),
            "nsentences": src.size(0),
            "ntokens": int(real.sum()),
            "net_input": {
                "src_tokens": src,
                "src_lengths": real.sum(1),
                "stream": {"name": self.name, "batch": k, "first_row": self.first_row,
                           "rows": src.size(0), "num_streams": self.num_streams},
            },
            "target": target,
        }

