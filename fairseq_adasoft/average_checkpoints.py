"""Average the weights of several checkpoints of one ``qrnn_lm`` run into one checkpoint.

The semantics of fairseq's ``scripts/average_checkpoints.py`` (which the
installed fairseq does not ship): every floating-point weight becomes the
mean over the inputs; everything else (config, task state, optimizer history)
comes from the first input, so ``fairseq-eval-lm --path`` and the hub load the
result like any checkpoint.

    python -m fairseq_adasoft.average_checkpoints --inputs A.pt B.pt C.pt --output avg.pt
    python -m fairseq_adasoft.average_checkpoints --inputs checkpoints/run \
        --num-update-checkpoints 5 --output checkpoints/run/checkpoint_avg5.pt

With a directory and ``--num-update-checkpoints N`` (``--save-interval-updates``
files, ``checkpoint_<epoch>_<update>.pt``) or ``--num-epoch-checkpoints N``
(``checkpoint<epoch>.pt``) the newest N are averaged, optionally none newer
than ``--checkpoint-upper-bound``.
"""

import argparse
import os
import re
import sys
from typing import Dict, List, Optional

import torch

EPOCH_RE = re.compile(r"checkpoint(\d+)\.pt")
UPDATE_RE = re.compile(r"checkpoint_\d+_(\d+)\.pt")


def newest_checkpoints(directory: str, n: int, by_update: bool, upper_bound: Optional[int] = None) -> List[str]:
    """The ``n`` newest epoch (or update) checkpoints in ``directory``, newest first."""
    if not os.path.isdir(directory):
        raise ValueError(f"--inputs {directory!r} is not a directory: with --num-*-checkpoints pass one save dir")
    pattern, flag = (UPDATE_RE, "--num-update-checkpoints") if by_update else (EPOCH_RE, "--num-epoch-checkpoints")
    found = []
    for name in os.listdir(directory):
        m = pattern.fullmatch(name)
        if m and (upper_bound is None or int(m.group(1)) <= upper_bound):
            found.append((int(m.group(1)), os.path.join(directory, name)))
    if len(found) < n:
        raise ValueError(
            f"{flag} {n}: {directory!r} holds only {len(found)} matching checkpoints"
            f" ({pattern.pattern}{', up to --checkpoint-upper-bound %d' % upper_bound if upper_bound is not None else ''});"
            f" ask for fewer, or save more ({'--save-interval-updates' if by_update else 'one per epoch'})"
        )
    return [path for _, path in sorted(found, reverse=True)[:n]]


def load(path: str) -> Dict:
    """A checkpoint's state on the CPU, or a ValueError naming the file."""
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path!r} not found: pass existing fairseq-train checkpoints to --inputs")
    try:
        # weights_only=False: fairseq checkpoints pickle their config objects.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"checkpoint {path!r} cannot be read ({e}): is it truncated? pass another to --inputs") from e
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"{path!r} is not a fairseq checkpoint (no 'model' weights): pass checkpoint*.pt files")
    return state


def _check_same_model(first: str, first_state: Dict, path: str, state: Dict) -> None:
    """Weights of the same names and shapes, and the same vocabulary order, or a ValueError naming ``path``."""
    a, b = first_state["model"], state["model"]
    if a.keys() != b.keys():
        diff = sorted(a.keys() ^ b.keys())
        raise ValueError(f"checkpoint {path!r} is of a different model than {first!r} (weights {diff[:3]} differ):"
                         " average checkpoints of one training run")
    for k, v in a.items():
        if v.shape != b[k].shape or v.dtype != b[k].dtype:
            raise ValueError(f"checkpoint {path!r} is of a different model than {first!r} ({k}: {tuple(b[k].shape)}"
                             f" {b[k].dtype} vs {tuple(v.shape)} {v.dtype}): average checkpoints of one training run")
        # Integer entries (the vocabulary-order marker) identify the model: they must agree.
        if not v.is_floating_point() and not torch.equal(v, b[k]):
            raise ValueError(f"checkpoint {path!r} has another {k} than {first!r}: average checkpoints of one"
                             " training run (same vocabulary order)")
    vocab_a = (first_state.get("task_state") or {}).get("dictionary_symbols")
    vocab_b = (state.get("task_state") or {}).get("dictionary_symbols")
    if vocab_a != vocab_b:
        raise ValueError(f"checkpoint {path!r} orders its vocabulary unlike {first!r}: average checkpoints of one"
                         " training run")


def average(paths: List[str]) -> Dict:
    """The first checkpoint's state with every floating-point weight replaced by the mean over ``paths``."""
    if not paths:
        raise ValueError("--inputs: pass at least one checkpoint")
    first_state = load(paths[0])
    # Sums in float64, so the mean of fp32/fp16 weights is rounded once.
    sums = {k: v.double() for k, v in first_state["model"].items() if v.is_floating_point()}
    for path in paths[1:]:
        state = load(path)
        _check_same_model(paths[0], first_state, path, state)
        for k in sums:
            sums[k] += state["model"][k].double()
        del state  # one input in memory besides the first and the sums
    model = dict(first_state["model"])
    for k, s in sums.items():
        model[k] = (s / len(paths)).to(first_state["model"][k].dtype)
    first_state["model"] = model
    return first_state


def save(state: Dict, output: str) -> None:
    """Write ``output`` whole or not at all (temp file beside it, then ``os.replace``)."""
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise ValueError(f"--output {output!r}: directory {directory!r} does not exist; create it first")
    tmp = output + ".tmp"
    try:
        torch.save(state, tmp)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", nargs="+", required=True,
                        help="checkpoint files, or one save dir with --num-update-checkpoints/--num-epoch-checkpoints")
    parser.add_argument("--output", required=True, help="where to write the averaged checkpoint")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--num-update-checkpoints", type=int, help="average the newest N checkpoint_<epoch>_<update>.pt")
    group.add_argument("--num-epoch-checkpoints", type=int, help="average the newest N checkpoint<epoch>.pt")
    parser.add_argument("--checkpoint-upper-bound", type=int,
                        help="with --num-*-checkpoints: skip checkpoints of a later update (or epoch) than this")
    return parser.parse_args(argv)


def resolve_inputs(args: argparse.Namespace) -> List[str]:
    """The checkpoint files the flags name, newest first for a directory."""
    n = args.num_update_checkpoints if args.num_update_checkpoints is not None else args.num_epoch_checkpoints
    if n is None:
        if args.checkpoint_upper_bound is not None:
            raise ValueError("--checkpoint-upper-bound needs --num-update-checkpoints or --num-epoch-checkpoints")
        return list(args.inputs)
    flag = "--num-update-checkpoints" if args.num_update_checkpoints is not None else "--num-epoch-checkpoints"
    if n < 1:
        raise ValueError(f"{flag} must be >= 1, got {n}")
    if len(args.inputs) != 1:
        raise ValueError(f"{flag}: pass one save dir to --inputs, got {len(args.inputs)} paths")
    return newest_checkpoints(args.inputs[0], n, args.num_update_checkpoints is not None, args.checkpoint_upper_bound)


def main(argv=None) -> None:
    args = parse_args(argv)
    paths = resolve_inputs(args)
    save(average(paths), args.output)
    print(f"averaged {len(paths)} checkpoints into {args.output}: {' '.join(paths)}", file=sys.stderr)


if __name__ == "__main__":
    main()
