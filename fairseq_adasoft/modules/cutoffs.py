"""Adaptive-softmax cutoffs given on the command line (word ids or fractions
of the vocabulary), their checks, and the width of each band, shared by the
adaptive softmax's tails and adaptive input's embeddings."""

from typing import List, Sequence


def validate_cutoffs(cutoffs: Sequence[int], vocab_size: int, flag: str = "cutoffs") -> List[int]:
    """Check that cutoffs are positive, strictly increasing ids below the vocabulary size."""
    cutoffs = [int(c) for c in cutoffs]
    if len(cutoffs) == 0:
        raise ValueError(f"{flag} is empty: give at least one cutoff, e.g. {vocab_size // 15}")
    if cutoffs[0] <= 0:
        raise ValueError(f"{flag} must be positive word ids, got {cutoffs}")
    if any(b <= a for a, b in zip(cutoffs, cutoffs[1:])):
        raise ValueError(
            f"{flag} must be strictly increasing with no duplicates, got {cutoffs}; "
            f"sort them, e.g. {sorted(set(cutoffs))}"
        )
    if cutoffs[-1] >= vocab_size:
        raise ValueError(
            f"{flag} must be below the vocabulary size {vocab_size}, got {cutoffs}; "
            f"drop the cutoffs >= {vocab_size} (the last cluster always ends at the vocabulary size)"
        )
    return cutoffs


def band_dim(dim: int, factor: float, band: int) -> int:
    """Features of band ``band`` (0: the shortlist, i + 1: cluster i) when each
    band has ``factor`` times fewer than the one before: the adaptive softmax's
    tail projections and adaptive input's embeddings, so that they can be tied."""
    return max(1, int(dim // (factor**band)))


def is_fraction_spec(spec: str) -> bool:
    """Whether cutoffs are given as fractions of the vocabulary (every value in (0, 1))."""
    try:
        values = [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        return False
    return bool(values) and all(0.0 < v < 1.0 for v in values)


def parse_cutoffs(spec: str, vocab_size: int, flag: str = "--adaptive-softmax-cutoff") -> List[int]:
    """Read cutoffs given as word ids (``2000,6000``) or as fractions of the
    vocabulary (``0.1,0.3``: every value below 1), and validate them."""
    try:
        values = [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"{flag}={spec!r} is not a comma-separated list of word ids or of fractions of "
            f"the vocabulary, e.g. '2000,6000' or '0.1,0.3'"
        ) from None
    if is_fraction_spec(spec):
        return validate_cutoffs([round(v * vocab_size) for v in values], vocab_size, flag)
    odd = [v for v in values if v != int(v) and not 0.0 < v < 1.0]
    if odd:
        raise ValueError(
            f"{flag}={spec!r}: {odd[0]:g} is neither a word id (an integer) nor a fraction of the "
            f"vocabulary (between 0 and 1), e.g. '2000,6000' or '0.1,0.3'"
        )
    if any(v != int(v) for v in values):
        raise ValueError(
            f"{flag}={spec!r} mixes fractions and word ids; give all values as ids "
            f"(integers) or all as fractions of the vocabulary (below 1)"
        )
    return validate_cutoffs(values, vocab_size, flag)
