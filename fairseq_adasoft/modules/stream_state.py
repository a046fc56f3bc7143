"""The hidden state that stateful truncated BPTT carries from batch to batch.

Per stream set (a split's name), per QRNN layer, it holds the detached
``(c_T, x_T)`` of all S streams of every process (S x H and, for window 2,
S x C). A batch reads and writes only its own rows ``[first_row, first_row +
rows)`` (the ``stream`` dict of ``tasks/streams.py``). The state is saved in
the state dict under ``<prefix><stream set>.c<layer>`` (and ``.x<layer>``),
so that a run resumed mid-epoch continues its streams; under DDP
``share_rows`` gives every process every other process's rows first.
"""

import logging
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

LayerState = Tuple[Tensor, Optional[Tensor]]


class StreamState(nn.Module):
    """The carried ``(c, x)`` per layer of each stream set; no parameters."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        self.carried: Dict[str, List[LayerState]] = {}
        self._register_state_dict_hook(StreamState._save)
        self._register_load_state_dict_pre_hook(StreamState._load, with_module=True)

    def read(self, stream: Dict, device: torch.device) -> Optional[List[LayerState]]:
        """This batch's rows of the state its streams carry, or None when they
        start afresh (batch 0) or nothing was carried for them."""
        carried = self.carried.get(stream["name"])
        if stream["batch"] == 0:
            return None
        if carried is None:  # e.g. resumed from a checkpoint saved without it
            logger.warning("--stateful-bptt: no carried state for batch %d of %r: its streams restart from zeros",
                           stream["batch"], stream["name"])
            return None
        if carried[0][0].size(0) != stream["num_streams"]:
            raise ValueError(
                f"--stateful-bptt: the carried state of {stream['name']!r} is for {carried[0][0].size(0)} streams, "
                f"this run reads {stream['num_streams']} (--batch-size x processes): resume with the batch size "
                f"and number of processes that saved the checkpoint, or pass --reset-dataloader to restart the epoch"
            )
        if carried[0][0].device != device:  # loaded from a checkpoint on the CPU
            carried = [(c.to(device), None if x is None else x.to(device)) for c, x in carried]
            self.carried[stream["name"]] = carried
        rows = _rows(stream)
        # Copies: autograd keeps c0 for the backward, and keep() overwrites these rows.
        return [(c[rows].clone(), None if x is None else x[rows].clone()) for c, x in carried]

    def keep(self, stream: Dict, state: List[LayerState]) -> None:
        """Store the new state, detached (truncated BPTT), in this batch's rows."""
        carried = self.carried.get(stream["name"])
        S = stream["num_streams"]
        if carried is None or stream["batch"] == 0 or carried[0][0].size(0) != S:
            carried = [(c.new_zeros(S, *c.shape[1:]), None if x is None else x.new_zeros(S, *x.shape[1:]))
                       for c, x in state]
            self.carried[stream["name"]] = carried
        rows = _rows(stream)
        for (all_c, all_x), (c, x) in zip(carried, state):
            all_c[rows] = c.detach()
            if x is not None:
                all_x[rows] = x.detach()

    def forget(self, name: str) -> None:
        """Drop what stream set ``name`` carries."""
        self.carried.pop(name, None)

    def tensors(self, name: str) -> List[Tensor]:
        """The S-stream state tensors of stream set ``name`` (empty if none)."""
        return [t for layer in self.carried.get(name, []) for t in layer if t is not None]

    def share_rows(self, stream: Dict, all_reduce: Callable[[Tensor], Tensor]) -> None:
        """Give this process every process's rows (DDP), so that one checkpoint
        resumes all streams: each contributes its own rows, zeros elsewhere, to
        one fp32 sum, which ``all_reduce`` (a sum over processes) returns."""
        tensors = self.tensors(stream["name"])
        rows = _rows(stream)
        mine = [torch.zeros_like(t, dtype=torch.float32) for t in tensors]
        for m, t in zip(mine, tensors):
            m[rows] = t[rows]
        flat = all_reduce(torch.cat([m.flatten() for m in mine]))
        for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
            t.copy_(part.view_as(t))

    @staticmethod
    def _save(module, state_dict, prefix, local_metadata) -> None:
        for name, layers in module.carried.items():
            for i, (c, x) in enumerate(layers):
                state_dict[f"{prefix}{name}.c{i}"] = c
                if x is not None:
                    state_dict[f"{prefix}{name}.x{i}"] = x

    @staticmethod
    def _load(module, state_dict, prefix, *args) -> None:
        found: Dict[str, Dict[str, Tensor]] = {}
        for key in [k for k in state_dict if k.startswith(prefix)]:
            name, part = key[len(prefix):].rsplit(".", 1)
            found.setdefault(name, {})[part] = state_dict.pop(key).clone()  # owned, as loaded weights are
        module.carried = {
            name: [(parts[f"c{i}"], parts.get(f"x{i}")) for i in range(module.num_layers)]
            for name, parts in found.items()
        }


def _rows(stream: Dict) -> slice:
    return slice(stream["first_row"], stream["first_row"] + stream["rows"])
