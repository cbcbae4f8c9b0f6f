"""Entropy coding of integer symbols with exact integer tables: constriction encodes, the
compiled decoder of ``engine.rangedecoder`` decodes.

Stream layout (one ``constriction.stream.queue`` range-coder stream, 32-bit words written
little-endian):

1. Table symbols, grouped by table: for ``t = 0 .. T-1``, the symbols of all positions with
   ``indexes == t`` in increasing position order, coded with table ``t`` in one call. A value
   outside table ``t``'s range is coded as its escape symbol ``sizes[t] - 1``.
2. For every escaped position, in position order, a header symbol ``2 * L + side`` from a
   66-symbol categorical with (almost) equal counts: ``side`` is 0 for a value below the
   table's range and 1 for one above it, and ``L`` (0..32) is the bit length of the excess
   ``e >= 0``: ``v = offsets[t] - 1 - e`` below, ``v = offsets[t] + sizes[t] - 1 + e`` above.
   Any int32 value against any int32 offset gives ``e < 2**32``, so ``L <= 32``.
3. For every escaped position, in position order, the ``L - 1`` bits of ``e`` below its leading
   one (none when ``L <= 1``): first the low ``min(L - 1, 16)`` bits, then the remaining high bits,
   each chunk of ``w`` bits with constriction's ``Uniform(2**w)`` (exact: ``2**24 / 2**w``
   counts per value).

Exact tables: constriction 0.5.0 has no integer-CDF constructor. Its ``Categorical(p,
perfect=False)`` calls ``from_floating_point_probabilities_fast``, whose fixed-point CDF is
``cdf[i] = floor(sum(p[:i]) * ((2**24 - S) / sum(p))) + i``. With ``p = counts - 1`` the
scale is exactly 1.0 and every partial sum is an integer below ``2**24``, exact in float32 and
float64, so ``cdf[i] == sum(counts[:i])``. ``tests/entropy/test_coder.py`` probes the decoder's
quantile function to prove this for the pinned version, and pins a golden stream.
"""

from __future__ import annotations

import weakref
from functools import lru_cache

import constriction
import numpy as np

from qlic_codec.entropy.tables import TOTAL, CdfTables
from qlic_codec.errors import CorruptStreamError

_Categorical = constriction.stream.model.Categorical
_Uniform = constriction.stream.model.Uniform
_RangeEncoder = constriction.stream.queue.RangeEncoder

_MAX_BITS = 32  # an excess is below 2**32
_HEADER_SYMBOLS = 2 * (_MAX_BITS + 1)  # (bit length 0..32) x (side below / above)
_CHUNK_BITS = 16
_DECODE_CHUNK = 1 << 16  # symbols encoded per call (bounds the memory of a piece)
# Above this many symbols, the positions of each table are found by scanning the indexes
# table by table (``_scan``) instead of sorting them all at once (``_group``): a sort holds
# an int64 position per symbol (6 bytes per pixel of the image), a scan a piece of them.
_SORT_MAX = 1 << 22
_SCAN_PIECE = 1 << 20  # indexes compared at a time by ``_scan``
# Powers of two 2**0 .. 2**32: the bit length of e is the number of them that are <= e.
_POWERS = np.left_shift(np.int64(1), np.arange(_MAX_BITS + 1, dtype=np.int64))


def exact_categorical(counts: np.ndarray) -> constriction.stream.model.Categorical:
    """A constriction model whose fixed-point CDF is exactly ``cumsum(counts)``.

    Args:
        counts: integer counts, each >= 1, summing to ``2**24``, at least 2 of them.

    Returns:
        A concrete ``Categorical`` over symbols ``0 .. len(counts) - 1``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or counts.size < 2 or counts.min() < 1 or counts.sum() != TOTAL:
        raise ValueError("counts must be >= 1, at least 2 of them, summing to 2**24")
    # See the module docstring: p = counts - 1 makes constriction's scale exactly 1.0.
    return _Categorical((counts - 1).astype(np.float64), perfect=False)


@lru_cache(maxsize=1)
def _header_model() -> constriction.stream.model.Categorical:
    # Equal counts, the 2**24 % 66 leftover counts going to the first symbols.
    counts = np.full(_HEADER_SYMBOLS, TOTAL // _HEADER_SYMBOLS, dtype=np.int64)
    counts[:TOTAL % _HEADER_SYMBOLS] += 1
    return exact_categorical(counts)


class _TableModels:
    """The constriction models and int64 copies of one ``CdfTables``, built once."""

    def __init__(self, tables: CdfTables) -> None:
        tables.validate("entropy tables")
        self.sizes = tables.sizes.astype(np.int64)
        self.offsets = tables.offsets.astype(np.int64)
        self.models = [exact_categorical(tables.cdf_counts[t, :size])
                       for t, size in enumerate(tables.sizes.tolist())]


_MODEL_CACHE: weakref.WeakKeyDictionary[CdfTables, _TableModels] = weakref.WeakKeyDictionary()


def _models_for(tables: CdfTables) -> _TableModels:
    models = _MODEL_CACHE.get(tables)
    if models is None:
        models = _TableModels(tables)
        _MODEL_CACHE[tables] = models
    return models


_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.uint8), np.dtype(np.uint16))


def _check_indexes(indexes: np.ndarray, tables: CdfTables) -> None:
    if not isinstance(tables, CdfTables):
        raise ValueError(f"tables must be CdfTables, got {type(tables).__name__}")
    if not isinstance(indexes, np.ndarray) or indexes.dtype not in _INDEX_DTYPES \
            or indexes.ndim != 1:
        raise ValueError("indexes must be a 1-D int32, uint8 or uint16 numpy array")
    if indexes.size and (indexes.min() < 0 or indexes.max() >= tables.num_tables):
        raise ValueError(f"indexes must be in [0, {tables.num_tables}), got "
                         f"[{indexes.min()}, {indexes.max()}]")


def _group(indexes: np.ndarray, num_tables: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Positions sorted by table (stable), and (table, start, stop) for each non-empty table."""
    # A stable sort of 16-bit keys is a radix sort in numpy, about 5x faster than for int32.
    keys = indexes.astype(np.uint16) if num_tables <= 1 << 16 else indexes
    order = np.argsort(keys, kind="stable")
    stops = np.cumsum(np.bincount(indexes, minlength=num_tables)).tolist()
    starts = [0] + stops[:-1]
    groups = [(t, a, b) for t, (a, b) in enumerate(zip(starts, stops)) if b > a]
    return order, groups


def _table_counts(indexes: np.ndarray, num_tables: int) -> np.ndarray:
    """How many positions name each table: ``np.bincount`` in pieces (it converts its whole
    input to int64 first)."""
    counts = np.zeros(num_tables, np.int64)
    for a in range(0, indexes.size, _SCAN_PIECE):
        counts += np.bincount(indexes[a: a + _SCAN_PIECE], minlength=num_tables)
    return counts


def _pieces(indexes: np.ndarray, num_tables: int):
    """``(table, positions)`` for t = 0 .. T-1: the positions with ``indexes == t`` in
    increasing order, in pieces of at most ``_DECODE_CHUNK``, in stream order (section 1 of
    the layout). Few symbols are sorted at once; many are scanned table by table."""
    if indexes.size <= _SORT_MAX:
        order, groups = _group(indexes, num_tables)
        for t, start, stop in groups:
            for a in range(start, stop, _DECODE_CHUNK):
                yield t, order[a: min(a + _DECODE_CHUNK, stop)]
        return
    for t in np.flatnonzero(_table_counts(indexes, num_tables)).tolist():
        for a in range(0, indexes.size, _SCAN_PIECE):
            positions = np.flatnonzero(indexes[a: a + _SCAN_PIECE] == t)
            positions += a
            for b in range(0, positions.size, _DECODE_CHUNK):
                yield t, positions[b: b + _DECODE_CHUNK]


def _chunk_widths(lengths: np.ndarray) -> np.ndarray:
    """int64[n, 2] widths of the low and high chunk of each excess, from its bit length."""
    below_lead = np.maximum(lengths - 1, 0)
    low = np.minimum(below_lead, _CHUNK_BITS)
    return np.stack([low, below_lead - low], axis=1)


def encode_symbols(values: np.ndarray, indexes: np.ndarray, tables: CdfTables) -> bytes:
    """Range-codes integer values, each with the table its index names.

    Args:
        values: int32[n] the values to code (any int32; outside a table's range they escape).
        indexes: int32[n] table index of each value, in ``[0, T)``.
        tables: the tables (validated on first use).

    Returns:
        The compressed stream, a whole number of little-endian 32-bit words.

    Raises:
        ValueError: on bad shapes, dtypes or index range.
        ModelFileError: if ``tables`` breaks the table convention.
    """
    return encode_segments([(values, indexes)], tables)


def encode_segments(segments, tables: CdfTables) -> bytes:
    """Range-codes several segments into one stream, one after the other, each laid out as
    the module docstring describes (its table symbols, then its escapes).

    A decoder that needs one segment's values to know the next segment's indexes (the
    slices of a channel-conditional model) decodes them in the same order with
    ``SegmentDecoder``. One segment gives the same bytes as ``encode_symbols``.

    Args:
        segments: ``(values, indexes)`` pairs as for ``encode_symbols``.
        tables: the tables of every segment.
    """
    checked = []
    for values, indexes in segments:
        _check_indexes(indexes, tables)
        if not isinstance(values, np.ndarray) or values.dtype != np.int32 or values.ndim != 1:
            raise ValueError("values must be a 1-D int32 numpy array")
        if values.shape != indexes.shape:
            raise ValueError(f"values {values.shape} and indexes {indexes.shape} differ in "
                             "shape")
        checked.append((values, indexes))
    models = _models_for(tables)
    if not any(values.size for values, _ in checked):
        return b""
    encoder = _RangeEncoder()
    for values, indexes in checked:
        if values.size:
            _encode_segment(encoder, values, indexes, models, tables)
    return encoder.get_compressed().astype("<u4").tobytes()


def _encode_segment(encoder, values, indexes, models, tables) -> None:
    escaped = []  # positions of escaped values, per table
    # A table's symbols coded piece by piece give the words of one call (a queue coder's
    # state carries over), so the pieces only bound the memory.
    for t, positions in _pieces(indexes, tables.num_tables):
        symbols = values[positions].astype(np.int64) - models.offsets[t]
        escape = models.sizes[t] - 1
        outside = (symbols < 0) | (symbols >= escape)
        if np.any(outside):
            symbols[outside] = escape
            escaped.append(positions[np.flatnonzero(outside)])
        encoder.encode(symbols.astype(np.int32), models.models[t])

    if escaped:
        positions = np.sort(np.concatenate(escaped))
        v_esc = values[positions].astype(np.int64)
        o_esc = models.offsets[indexes[positions]]
        last = o_esc + models.sizes[indexes[positions]] - 1
        side = (v_esc >= last).astype(np.int64)
        excess = np.where(side == 1, v_esc - last, o_esc - 1 - v_esc)
        lengths = np.searchsorted(_POWERS, excess, side="right").astype(np.int64)
        encoder.encode((2 * lengths + side).astype(np.int32), _header_model())
        widths = _chunk_widths(lengths)
        chunks = np.stack([excess & ((1 << widths[:, 0]) - 1),
                           (excess >> _CHUNK_BITS) & ((1 << widths[:, 1]) - 1)], axis=1)
        keep = widths.ravel() > 0
        if np.any(keep):
            encoder.encode(chunks.ravel()[keep].astype(np.int32), _Uniform(),
                           (1 << widths.ravel()[keep]).astype(np.int32))


def decode_symbols(data: bytes, indexes: np.ndarray, tables: CdfTables) -> np.ndarray:
    """Decodes the values that ``encode_symbols`` coded with the same indexes and tables.

    Trailing unused words are ignored. Garbage input takes time bounded by ``len(indexes)``
    and ends in either some values or ``CorruptStreamError``.

    Args:
        data: the compressed stream.
        indexes: int32[n] the table index of each value, as given to the encoder.
        tables: the tables given to the encoder.

    Returns:
        int32[n] the decoded values, escapes resolved.

    Raises:
        CorruptStreamError: if ``data`` is not a valid stream for these indexes and tables.
        ValueError: on bad ``indexes`` or ``tables`` arguments.
        ModelFileError: if ``tables`` breaks the table convention.
    """
    return SegmentDecoder(data, tables).decode(indexes)


class SegmentDecoder:
    """Decodes the segments of an ``encode_segments`` stream one at a time, in order, with the
    compiled decoder of ``engine.rangedecoder``.

    The information budget (``_information_units_budget``) covers the whole stream: every
    segment's symbols count against the same words, so garbage fails however it is split.

    Raises:
        CorruptStreamError: (from the constructor) a stream that is not whole words.
    """

    def __init__(self, data: bytes, tables: CdfTables) -> None:
        self.tables = tables
        self.layout = decoder_tables(tables)
        rangedecoder = _rangedecoder()
        data = bytes(data)
        if len(data) % 4:
            raise CorruptStreamError(f"entropy-coded stream of {len(data)} bytes is not a "
                                     "whole number of 32-bit words")
        self.size = len(data)
        self.words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        self.budget = _information_units_budget(self.words.size)
        self.state = rangedecoder.new_state(self.words)

    def decode(self, indexes: np.ndarray) -> np.ndarray:
        """The next segment's values: int32[n] for int32[n] table indexes."""
        t, rangedecoder = self.layout, _rangedecoder()
        _check_indexes(indexes, self.tables)
        n = indexes.size
        if n == 0:
            return np.zeros(0, dtype=np.int32)
        indexes = np.ascontiguousarray(indexes)
        counts = rangedecoder.TableCounts(indexes, self.tables.num_tables)
        # Before anything of size n is allocated: even the likeliest symbols cost this much.
        if int(self.state[4]) + int(counts.total @ t.min_info) > self.budget:
            raise CorruptStreamError(f"entropy-coded stream of {self.size} bytes is too short "
                                     f"for {n} more symbols")
        values = np.empty(n, dtype=np.int32)
        status = rangedecoder.decode_sequence(
            self.words, self.state, indexes, counts.total, counts.grouped_positions(indexes),
            t.cdf, t.sizes, t.offsets, t.info, self.budget, *_header_model_arrays(), values)
        if status != rangedecoder.OK:
            raise CorruptStreamError(rangedecoder.MESSAGES[status])
        return values


def _rangedecoder():
    """The compiled decoder, imported when a stream is first decoded: it loads Numba, which
    ``qlic info`` and the encoder's entropy coding never need."""
    from qlic_codec.engine import rangedecoder
    return rangedecoder


@lru_cache(maxsize=1)
def _header_model_arrays():
    """The escape-header model's cumulative counts and information, for the decoder."""
    rangedecoder = _rangedecoder()
    cdf = rangedecoder.escape_header_cdf()
    return cdf, rangedecoder.information_units(np.diff(cdf))


_DECODER_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def decoder_tables(tables: CdfTables):
    """The decoder's layout of a table set (``engine.rangedecoder.Tables``: cumulative
    counts, sizes, offsets and each symbol's information), validated and built once."""
    if not isinstance(tables, CdfTables):
        raise ValueError(f"tables must be CdfTables, got {type(tables).__name__}")
    layout = _DECODER_CACHE.get(tables)
    if layout is None:
        tables.validate("entropy tables")
        layout = _rangedecoder().Tables(tables)
        _DECODER_CACHE[tables] = layout
    return layout


def _information_units_budget(num_words: int) -> int:
    """The most information that ``num_words`` words of our encoder can carry, in the
    decoder's units of ``2**-16`` bit.

    The range coder keeps a 64-bit range of at least 2**32 after each renormalisation and
    emits one word per 2**32 it shrinks, each symbol shrinking it by at least its
    probability. So coding symbols of information ``I = sum(-log2 p)`` emits at least
    ``I / 32 - 1`` words before the seal: a stream of ``W`` words never carries more than
    ``32 * (W + 1)`` bits (one more word is allowed here). The decoder counts each symbol's
    information rounded down (``rangedecoder.information_units``), so a decoder that has
    counted more than this is reading garbage (or an empty stream claiming a huge image),
    whatever the symbols: refusing it is exact, not a heuristic.
    """
    return (32 * (num_words + 2)) << _rangedecoder().INFO_BITS
