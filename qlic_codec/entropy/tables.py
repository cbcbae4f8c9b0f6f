"""Integer CDF tables for the entropy coder (CompressAI's table convention).

A set of ``T`` tables is three int32 arrays:

- ``cdf_counts[T, S_max]``: the integer frequency count of each symbol. Inside table ``t``
  (``s < sizes[t]``) every count is at least 1; after it the row is padded with zeros. Each row
  sums to exactly ``2**PRECISION``.
- ``sizes[T]``: the number of symbols of table ``t``, the last of which is the *escape* symbol.
- ``offsets[T]``: the integer value that symbol 0 stands for.

A value ``v`` coded with table ``t`` becomes symbol ``v - offsets[t]``; a value outside
``offsets[t] .. offsets[t] + sizes[t] - 2`` is coded as the escape symbol ``sizes[t] - 1`` and
its value goes to the coder's escape channel (see ``coder.py``).

The builders below use floating point, but only at export time: the model file stores the
resulting integers, and the decoder never recomputes them. Each builder still follows a fixed
rule so that the same inputs give the same integers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qlic_codec.errors import ModelFileError

# Fixed-point precision of constriction's default Categorical model (``u32`` probabilities,
# ``PRECISION = 24`` in ``DefaultContiguousCategoricalEntropyModel``): counts sum to 2**24.
PRECISION = 24
TOTAL = 1 << PRECISION

# Upper bound on a table's symbol count. It bounds the memory a model file can ask for and
# keeps every table far below constriction's own limit of 2**24 - 1 symbols.
MAX_TABLE_SIZE = 1 << 16

# CompressAI's ``GaussianConditional`` defaults.
DEFAULT_TAIL_MASS = 1e-9


@dataclass(frozen=True, eq=False)
class CdfTables:
    """A set of integer CDF tables; see the module docstring for the convention.

    The arrays are stored as read-only copies, so a table set cannot change after the coder
    has built (and cached) its models from it. Equality is identity (``eq=False``): that keeps
    the object hashable for the coder's model cache.

    Attributes:
        cdf_counts: int32[T, S_max] symbol counts, zero-padded after ``sizes[t]``.
        sizes: int32[T] number of symbols of each table, escape symbol included.
        offsets: int32[T] value of symbol 0 of each table.
    """

    cdf_counts: np.ndarray
    sizes: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        for field in ("cdf_counts", "sizes", "offsets"):
            array = np.array(getattr(self, field), copy=True)
            array.flags.writeable = False
            object.__setattr__(self, field, array)

    @classmethod
    def from_counts(cls, counts: Sequence[np.ndarray], offsets: Sequence[int]) -> CdfTables:
        """Packs one count vector per table into a zero-padded table set.

        Args:
            counts: one integer vector per table, escape symbol last.
            offsets: the value of symbol 0 of each table.

        Returns:
            The packed tables (not validated; call ``validate``).
        """
        if len(counts) == 0 or len(counts) != len(offsets):
            raise ValueError(f"need one offset per table, got {len(counts)} tables and "
                             f"{len(offsets)} offsets")
        s_max = max(len(c) for c in counts)
        cdf_counts = np.zeros((len(counts), s_max), dtype=np.int32)
        for t, c in enumerate(counts):
            cdf_counts[t, :len(c)] = c
        sizes = np.array([len(c) for c in counts], dtype=np.int32)
        return cls(cdf_counts, sizes, np.asarray(offsets, dtype=np.int32))

    @property
    def num_tables(self) -> int:
        """The number of tables ``T``."""
        return int(self.cdf_counts.shape[0])

    def validate(self, name: str) -> None:
        """Checks every rule of the convention; the model loader calls this on untrusted data.

        Args:
            name: how the table set is named in error messages (e.g. ``"cdf_y"``).

        Raises:
            ModelFileError: with a one-line reason for the first broken rule.
        """
        for field in ("cdf_counts", "sizes", "offsets"):
            array = getattr(self, field)
            if array.dtype != np.int32:
                raise ModelFileError(f"{name}: {field} must be int32, got {array.dtype}")
        counts, sizes, offsets = self.cdf_counts, self.sizes, self.offsets
        if counts.ndim != 2:
            raise ModelFileError(f"{name}: cdf_counts must be 2-D, got shape {counts.shape}")
        num_tables, s_max = counts.shape
        if num_tables < 1:
            raise ModelFileError(f"{name}: needs at least one table")
        if sizes.shape != (num_tables,) or offsets.shape != (num_tables,):
            raise ModelFileError(f"{name}: sizes {sizes.shape} and offsets {offsets.shape} must "
                                 f"both have shape ({num_tables},)")
        if not 2 <= s_max <= MAX_TABLE_SIZE:
            raise ModelFileError(f"{name}: table width {s_max} not in [2, {MAX_TABLE_SIZE}]")
        bad = np.flatnonzero((sizes < 2) | (sizes > s_max))
        if bad.size:
            t = int(bad[0])
            raise ModelFileError(f"{name}: sizes[{t}] = {sizes[t]} not in [2, {s_max}]")
        inside = np.arange(s_max)[None, :] < sizes[:, None]
        bad = np.flatnonzero(np.any(inside & (counts < 1), axis=1))
        if bad.size:
            raise ModelFileError(f"{name}: table {int(bad[0])} has a count below 1")
        bad = np.flatnonzero(np.any(~inside & (counts != 0), axis=1))
        if bad.size:
            raise ModelFileError(f"{name}: table {int(bad[0])} has nonzero padding")
        sums = counts.sum(axis=1, dtype=np.int64)
        bad = np.flatnonzero(sums != TOTAL)
        if bad.size:
            t = int(bad[0])
            raise ModelFileError(f"{name}: table {t} sums to {sums[t]}, expected 2**{PRECISION}")


def counts_from_pmf(pmf: np.ndarray, tail_mass: float) -> np.ndarray:
    """Quantises a probability vector plus an escape probability to integer counts.

    Rule (exactly reproducible for the same float inputs): append ``tail_mass`` to ``pmf``
    (``S`` entries), give every symbol one count, and share the remaining ``2**24 - S`` counts in
    proportion: ``scaled = p * ((2**24 - S) / fsum(p))``, take ``floor(scaled)``, then hand the
    counts still missing one each to the largest fractional parts, ties to the lower index.
    Every count is thus at least 1 and the total is exactly ``2**24``.

    Args:
        pmf: float64[S - 1] non-negative probabilities of the in-range symbols (need not sum
            to one).
        tail_mass: non-negative probability of the escape symbol (values outside the range).

    Returns:
        int32[S] counts, escape symbol last.
    """
    p = np.append(np.asarray(pmf, dtype=np.float64).ravel(), float(tail_mass))
    size = p.size
    if not 2 <= size <= MAX_TABLE_SIZE:
        raise ValueError(f"pmf of {size - 1} symbols: need 1 to {MAX_TABLE_SIZE - 1}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("pmf and tail_mass must be finite and non-negative")
    # math.fsum is correctly rounded, so the total does not depend on summation order.
    total = math.fsum(p.tolist())
    if not total > 0:
        raise ValueError("pmf and tail_mass sum to zero")
    free = TOTAL - size
    scaled = p * (free / total)
    base = np.floor(scaled)
    frac = scaled - base
    base = base.astype(np.int64)
    missing = free - int(base.sum())
    # Each scaled value is at most free * (1 + 2**-52) / total times p, so the floors cannot
    # overshoot, and the fractional parts add up to `missing`, which is below `size`.
    if not 0 <= missing < size:
        raise ValueError(f"internal rounding error: {missing} counts missing of {free}")
    order = np.argsort(-frac, kind="stable")
    base[order[:missing]] += 1
    counts = base + 1
    return counts.astype(np.int32)


def gaussian_scale_table(min_scale: float = 0.11, max_scale: float = 256.0,
                         levels: int = 64) -> np.ndarray:
    """Log-spaced scales of the Gaussian conditional (CompressAI's ``get_scale_table``).

    Args:
        min_scale: the smallest standard deviation.
        max_scale: the largest standard deviation.
        levels: the number of scales (tables).

    Returns:
        float64[levels], increasing from ``min_scale`` to ``max_scale``.
    """
    if levels < 2 or not 0 < min_scale < max_scale:
        raise ValueError(f"need levels >= 2 and 0 < min_scale < max_scale, got {levels}, "
                         f"{min_scale}, {max_scale}")
    return np.exp(np.linspace(math.log(min_scale), math.log(max_scale), levels))


def _gaussian_tail_bound(tail_mass: float) -> float:
    """Returns ``t`` with ``P(|X| > t) = tail_mass`` for a standard normal ``X``.

    Bisection on ``erfc`` with a fixed number of steps, so it needs neither scipy nor an
    inverse error function.
    """
    if not 0 < tail_mass < 1:
        raise ValueError(f"tail_mass must be in (0, 1), got {tail_mass}")
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if math.erfc(mid / math.sqrt(2.0)) > tail_mass:
            lo = mid
        else:
            hi = mid
    return hi


def _gaussian_pmf(scale: float, radius: int) -> tuple[np.ndarray, float]:
    """The zero-mean Gaussian of std ``scale`` on integer bins ``-radius .. radius``.

    Returns:
        (pmf over the ``2 * radius + 1`` bins, mass outside them).
    """
    c = 1.0 / (scale * math.sqrt(2.0))
    # Upper-tail probabilities Q(k) = P(X > k - 0.5) for k = 0 .. radius + 1, from erfc, which
    # keeps full relative precision in the tails where 1 - Phi would cancel.
    upper = np.array([0.5 * math.erfc((k - 0.5) * c) for k in range(radius + 2)])
    half = upper[:-1] - upper[1:]  # P(v) for v = 0 .. radius
    pmf = np.concatenate([half[:0:-1], half])
    return pmf, 2.0 * upper[-1]


def build_gaussian_tables(scale_table: np.ndarray,
                          tail_mass: float = DEFAULT_TAIL_MASS) -> CdfTables:
    """One table per scale for a zero-mean Gaussian discretised on integer bins.

    As in CompressAI's ``GaussianConditional.update``: table ``t`` covers ``-R .. R`` with
    ``R = ceil(scale * tail_bound)``, where ``tail_bound`` puts a two-sided mass ``tail_mass``
    beyond it, so ``offsets[t] = -R`` and escapes are rare. The mass outside ``[-R - 0.5,
    R + 0.5]`` becomes the escape symbol's probability.

    Args:
        scale_table: float64[T] positive standard deviations, e.g. ``gaussian_scale_table()``.
        tail_mass: two-sided tail probability that sets the table's range.

    Returns:
        The validated tables.
    """
    scales = np.asarray(scale_table, dtype=np.float64).ravel()
    if scales.size < 1 or not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise ValueError("scale_table must hold at least one positive finite scale")
    tail_bound = _gaussian_tail_bound(tail_mass)
    counts, offsets = [], []
    for scale in scales.tolist():
        radius = math.ceil(scale * tail_bound)
        pmf, tail = _gaussian_pmf(scale, radius)
        counts.append(counts_from_pmf(pmf, tail))
        offsets.append(-radius)
    tables = CdfTables.from_counts(counts, offsets)
    tables.validate("gaussian tables")
    return tables


def build_factorized_tables(pmfs: Sequence[np.ndarray], offsets: Sequence[int],
                            tail_masses: Sequence[float] | None = None) -> CdfTables:
    """One table per channel of the factorized prior of the hyper-latent ``z``.

    Args:
        pmfs: per channel, float probabilities of the values ``offsets[c] ..
            offsets[c] + len(pmfs[c]) - 1`` (from the trained model).
        offsets: per channel, the value of the first pmf entry.
        tail_masses: per channel, the probability of values outside that range (the escape).
            Default: ``max(0, 1 - sum(pmf))``.

    Returns:
        The validated tables.
    """
    if len(pmfs) == 0 or len(pmfs) != len(offsets):
        raise ValueError(f"need one offset per pmf, got {len(pmfs)} pmfs and {len(offsets)} "
                         "offsets")
    if tail_masses is not None and len(tail_masses) != len(pmfs):
        raise ValueError(f"need one tail mass per pmf, got {len(tail_masses)}")
    counts = []
    for c, pmf in enumerate(pmfs):
        pmf = np.asarray(pmf, dtype=np.float64).ravel()
        if tail_masses is None:
            tail = max(0.0, 1.0 - math.fsum(pmf.tolist()))
        else:
            tail = float(tail_masses[c])
        counts.append(counts_from_pmf(pmf, tail))
    info = np.iinfo(np.int32)
    if any(not info.min <= int(o) <= info.max for o in offsets):
        raise ValueError("offsets must fit in int32")
    tables = CdfTables.from_counts(counts, [int(o) for o in offsets])
    tables.validate("factorized tables")
    return tables
