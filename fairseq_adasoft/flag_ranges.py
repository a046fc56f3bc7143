"""Numeric flags checked against their allowed ranges before anything is
built, so that a bad value is reported by the flag's name instead of by the
module (or the ZeroDivisionError) it would reach later."""

import math
from typing import Mapping, NamedTuple


class Range(NamedTuple):
    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = True

    def __contains__(self, value) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


AT_LEAST_ONE = Range(1)
POSITIVE = Range(0, low_open=True)
PROBABILITY = Range(0, 1)  # [0, 1): a dropout of 1 would divide by 1 - p = 0
SHARE = Range(0, 1, high_open=False)


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def check_flag_ranges(cfg, ranges: Mapping[str, Range]) -> None:
    """Raise a ValueError naming the first flag of ``cfg`` outside its range (unset flags pass)."""
    for field, allowed in ranges.items():
        value = getattr(cfg, field, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
                or value not in allowed:
            raise ValueError(f"{flag_name(field)} must be {allowed}, got {value}")
