"""Quality numbers, the sub-level grid they map to, and the search for a target file size.

A model file holds its per-level heads for ``levels`` sub-levels, ``quality_steps`` per unit
of quality (16 for the bundled models: 1.0, 1.0625, ..., 8.0), so a quality ``q`` is the
sub-level ``k = round((q - 1) * quality_steps)`` (halves round up) and a sub-level ``k`` is
the quality ``1 + k / quality_steps``. Qualities between grid points are rounded to the
nearest one: the header and ``qlic info`` report the quality that was used. A model without
a grid (``quality_steps`` 1) has integer qualities only, 4.5 rounding to 5.

Choosing the sub-level is the encoder's business alone (the stream names the row of the
heads the decoder reads), so the floats here cannot change decoded pixels.

This module imports nothing from qlic but ``errors``: the command line uses it to parse its
options without loading the codec.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from .errors import InvalidArgumentError

__all__ = ["TOLERANCE", "SizeSearch", "parse_size", "search_size", "to_level", "to_quality"]

# A size target is met when the file is within this fraction of it, above or below.
TOLERANCE = 0.03

_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([kKmMgG]i?)?[bB]?\s*")
_UNITS = {None: 1, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 2**10, "mi": 2**20, "gi": 2**30}


def to_level(quality: float, levels: int, steps: int) -> int:
    """The 0-based sub-level of a quality number, rounded to the nearest on the grid.

    Raises:
        InvalidArgumentError: ``quality`` is not a finite number in 1..``to_quality(levels -
            1, steps)``.
    """
    if isinstance(quality, bool) or not _is_number(quality) or not math.isfinite(quality):
        raise InvalidArgumentError(f"quality must be a number, got {quality!r}")
    top = to_quality(levels - 1, steps)
    if not 1 <= quality <= top:
        raise InvalidArgumentError(f"quality {quality} is out of range 1..{top} for this "
                                   "model")
    return min(levels - 1, math.floor((float(quality) - 1) * steps + 0.5))


def to_quality(level: int, steps: int) -> int | float:
    """The quality number of a 0-based sub-level: an int on integer levels, else a float."""
    whole, part = divmod(level, steps)
    return 1 + whole if part == 0 else 1 + level / steps


def parse_size(text: str) -> int:
    """Bytes from a size such as ``50000``, ``50k``, ``1.5M`` or ``64KiB``.

    ``k``, ``M``, ``G`` are powers of 1000 and ``Ki``, ``Mi``, ``Gi`` powers of 1024; a
    trailing ``B`` is allowed. The result is rounded to whole bytes.

    Raises:
        InvalidArgumentError: Not a size, or less than one byte.

    Example:
        >>> parse_size("50k"), parse_size("1.5M"), parse_size("64KiB")
        (50000, 1500000, 65536)
    """
    match = _SIZE.fullmatch(str(text))
    if match is None:
        raise InvalidArgumentError(f"{text!r} is not a size; write e.g. 50000, 50k or 1.5M")
    unit = match.group(2).lower() if match.group(2) else None
    size = round(float(match.group(1)) * _UNITS[unit])
    if size < 1:
        raise InvalidArgumentError(f"size {text!r} is less than one byte")
    return size


@dataclass(frozen=True)
class SizeSearch:
    """The outcome of ``search_size``: the sub-level chosen, its file size, whether that is
    within ``TOLERANCE`` of the target, and how many sub-levels were tried."""

    level: int
    size: int
    met: bool
    tries: int


def search_size(size_of: Callable[[int], int], levels: int, target: int,
                tolerance: float = TOLERANCE) -> SizeSearch:
    """The sub-level whose file size is nearest ``target`` (the smaller on a tie).

    The size grows with the level (not strictly, but the search needs only that it does
    not shrink much), so a bisection finds the first level at or above the target, and the
    nearer of it and the level below wins: about log2(levels) + 1 calls of ``size_of``.
    When no level is within ``tolerance`` (a target below what level 0 makes, or above the
    top level), the nearest one is still returned, with ``met`` false.
    """
    sizes: dict[int, int] = {}

    def size(level: int) -> int:
        if level not in sizes:
            sizes[level] = size_of(level)
        return sizes[level]

    lo, hi = 0, levels - 1
    if size(hi) < target:
        lo = hi
    while lo < hi:  # invariant: size(hi) >= target, and every level below lo is smaller
        mid = (lo + hi) // 2
        if size(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    candidates = [lo] + ([lo - 1] if lo > 0 else [])
    best = min(candidates, key=lambda level: (abs(size(level) - target), size(level)))
    return SizeSearch(best, size(best), abs(size(best) - target) <= tolerance * target,
                      len(sizes))


def _is_number(value: object) -> bool:
    try:
        float(value)  # numpy scalars too
    except (TypeError, ValueError):
        return False
    return not isinstance(value, (str, bytes))
