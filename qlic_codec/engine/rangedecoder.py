"""The range decoder of ``docs/FORMAT.md`` 4.1 and the layout of 4.3, compiled: one call
decodes a whole sequence (table symbols, escape headers, escape bits) without the GIL.

It reads the streams that constriction's ``queue.RangeEncoder`` writes (``entropy.coder``)
and gives the values constriction's ``RangeDecoder`` gives, symbol for symbol
(``tests/entropy/test_rangedecoder.py``). Decoding was constriction's before: one call per
table and per piece from Python, a sort of the positions and the bookkeeping around them made
about 34 ns per symbol of a 1920x1080 decode (55 ms on one thread). Here each symbol is a
test against its table's likeliest symbol (or a binary search in the table's cumulative
counts) and a few integer operations, about 4 ns (``_table_symbols``).

Corrupt data ends in a status code, never in a read outside an array: the caller
(``coder.SegmentDecoder``) turns it into ``CorruptStreamError``.

The information check of 4.3 is in integers: each symbol's information ``-log2(prob/2**24)``
is rounded down to a multiple of ``2**-16`` bit (``information_units``), so the sum is never
above the exact one and a stream the exact check accepts is accepted here.
"""

import numpy as np

from . import cpu  # noqa: F401  (first: the engine's start-up imports Numba)
from numba import njit, prange

from .cpu import JIT, JIT_PARALLEL

PRECISION = 24
INFO_BITS = 16  # information is counted in units of 2**-16 bit

# Status codes of ``decode_sequence``.
OK = 0
QUANTILE = 1  # a point outside the model: FORMAT.md 4.1 step 2
BUDGET = 2  # more information than the words can carry
HEADER = 3  # an escape's bit length above 32
RANGE = 4  # an escaped value outside int32
MESSAGES = {
    QUANTILE: "corrupt entropy-coded stream (a point outside its model)",
    BUDGET: "corrupt entropy-coded stream: it decodes to more information than its words "
            "can hold",
    HEADER: "escape bit length above 32 in entropy-coded stream",
    RANGE: "escaped value outside int32 in entropy-coded stream",
}

_HEADER_SYMBOLS = 66
_CHUNK_BITS = 16


def information_units(counts: np.ndarray) -> np.ndarray:
    """A lower bound of ``2**16 * -log2(count / 2**24)`` for counts ``1 .. 2**24``, as int64,
    computed in integers: the integer part from the bit length, then each fractional bit by
    squaring a 30-bit fixed-point mantissa and truncating. Truncation only lowers the
    mantissa, and each squaring halves what that costs in the result, so the result is never
    above the exact value (and within 2 units of it, ``tests/entropy/test_rangedecoder.py``)."""
    c = np.asarray(counts, dtype=np.int64)
    if c.size and (c.min() < 1 or c.max() > 1 << PRECISION):
        raise ValueError("counts must be 1 .. 2**24")
    length = np.zeros(c.shape, np.int64)  # bit length of c
    for j in range(PRECISION + 1):
        length += (c >> j) > 0
    power = (c & (c - 1)) == 0
    # k: the largest integer with c * 2**k <= 2**24, the integer part of the information.
    k = PRECISION - length + power
    frac = 30
    m = (np.int64(1) << (PRECISION + frac)) // (c << k)  # 2**24 / (c * 2**k), in [1, 2)
    two = np.int64(2) << frac
    units = k << INFO_BITS
    for bit in range(INFO_BITS - 1, -1, -1):
        m = (m * m) >> frac
        up = m >= two
        units = units + np.where(up, np.int64(1) << bit, 0)
        m = np.where(up, m >> 1, m)
    return units


class Tables:
    """A ``CdfTables`` set laid out for the decoder: cumulative counts, sizes, offsets and each
    symbol's information, built once per table set."""

    def __init__(self, tables) -> None:
        counts = tables.cdf_counts.astype(np.int64)
        T, S = counts.shape
        self.sizes = tables.sizes.astype(np.int64)
        self.offsets = tables.offsets.astype(np.int64)
        self.cdf = np.zeros((T, S + 1), np.int64)
        self.cdf[:, 1:] = np.cumsum(counts, axis=1)
        info = np.zeros((T, S), np.int64)
        inside = counts > 0
        info[inside] = information_units(counts[inside])
        self.info = info
        # The least information a symbol of each table carries: the check before decoding.
        self.min_info = np.array([info[t, :s].min() for t, s in enumerate(self.sizes)],
                                 np.int64)


def escape_header_cdf() -> np.ndarray:
    """Cumulative counts of the 66-symbol escape-header model (FORMAT.md 4.2)."""
    counts = np.full(_HEADER_SYMBOLS, (1 << PRECISION) // _HEADER_SYMBOLS, np.int64)
    counts[: (1 << PRECISION) % _HEADER_SYMBOLS] += 1
    cdf = np.zeros(_HEADER_SYMBOLS + 1, np.int64)
    cdf[1:] = np.cumsum(counts)
    return cdf


def new_state(words: np.ndarray) -> np.ndarray:
    """The decoder's state at the start of ``words``: ``[pos, lower, range, point, info]`` as
    uint64 (``info``, the information decoded so far in units, counts against the budget of
    the whole stream)."""
    n = words.size
    w0 = np.uint64(words[0]) if n > 0 else np.uint64(0)
    w1 = np.uint64(words[1]) if n > 1 else np.uint64(0)
    return np.array([min(n, 2), 0, 2**64 - 1, (int(w0) << 32) | int(w1), 0], np.uint64)


# Each chunk of indexes is four pieces, counted in turns: most indexes name one of a few
# tables, and with one counter per table each count waits for the one before, about 1 ns an
# index; four pieces make four independent chains. Each piece then has its own start in the
# grouped order.
_PIECES = 4


@njit(inline="always")
def _pieces(k, step, n):
    # Where chunk k's four pieces start and end, and how many indexes all four have.
    lo = np.empty(_PIECES, np.uint64)
    hi = np.empty(_PIECES, np.uint64)
    common = np.uint64(step)
    for u in range(_PIECES):
        start = min(n, (_PIECES * k + u) * step)
        lo[u], hi[u] = start, min(n, start + step)
        common = min(common, hi[u] - lo[u])
    return lo, hi, common


@njit(inline="never", **JIT)
def _count_chunk(indexes, counts, k, step, n):
    # A function of its own with unsigned indices, like ``_table_symbols``: inlined in the
    # parallel loop, these loops ran at about half the speed (measured).
    lo, hi, common = _pieces(k, step, n)
    c0, c1, c2, c3 = counts[0], counts[1], counts[2], counts[3]
    for j in range(common):
        c0[np.uint64(indexes[lo[0] + j])] += 1
        c1[np.uint64(indexes[lo[1] + j])] += 1
        c2[np.uint64(indexes[lo[2] + j])] += 1
        c3[np.uint64(indexes[lo[3] + j])] += 1
    for u in range(_PIECES):
        c = counts[u]
        for i in range(lo[u] + common, hi[u]):
            c[np.uint64(indexes[i])] += 1


@njit(inline="never", **JIT)
def _order_chunk(indexes, fill, order, k, step, n):
    # The pieces one after another: taking them in turns, as the counts do, was no faster
    # here (measured), the stores to ``order`` and not the fill positions bounding it.
    lo, hi, _ = _pieces(k, step, n)
    for u in range(_PIECES):
        f = fill[u]
        for i in range(lo[u], hi[u]):
            t = np.uint64(indexes[i])
            order[f[t]] = np.int32(i)
            f[t] += 1


@njit(**JIT_PARALLEL)
def _count_kernel(indexes, by_piece):
    n, chunks = indexes.size, by_piece.shape[0] // _PIECES
    step = -(-n // (_PIECES * chunks))
    for k in prange(chunks):
        _count_chunk(indexes, by_piece[_PIECES * k: _PIECES * (k + 1)], k, step, n)


@njit(**JIT_PARALLEL)
def _order_kernel(indexes, starts, order):
    # Each piece writes its positions of each table from where the pieces before it end
    # (``starts``), in increasing position: the order a serial counting sort gives.
    n, chunks = indexes.size, starts.shape[0] // _PIECES
    step = -(-n // (_PIECES * chunks))
    for k in prange(chunks):
        _order_chunk(indexes, starts[_PIECES * k: _PIECES * (k + 1)].copy(), order, k, step, n)


_COUNT_CHUNK = 1 << 16  # indexes a chunk of ``table_counts`` counts on its own


class TableCounts:
    """How many of a segment's indexes name each table (``total``, int64), counted in
    parallel chunks of four pieces each (``by_piece``): the decoder needs the totals before
    it decodes (for its budget), and the pieces' counts let it group the positions by table
    in parallel (``grouped_positions``). As a serial ``np.bincount`` and a serial counting
    sort they were about a fifth of a slice's serial work."""

    def __init__(self, indexes: np.ndarray, num_tables: int) -> None:
        chunks = max(1, min(64, indexes.size // _COUNT_CHUNK))
        self.by_piece = np.zeros((_PIECES * chunks, num_tables), np.int64)
        _count_kernel(indexes, self.by_piece)
        self.total = self.by_piece.sum(axis=0)

    def grouped_positions(self, indexes: np.ndarray) -> np.ndarray:
        """The positions of ``indexes`` (those counted) grouped by table, increasing within
        each table (int32): a stable counting sort, made piece by piece in parallel."""
        T = self.total.size
        table_starts = np.zeros(T, np.int64)
        np.cumsum(self.total[:-1], out=table_starts[1:])
        starts = np.empty_like(self.by_piece)
        starts[0] = table_starts
        np.cumsum(self.by_piece[:-1], axis=0, out=starts[1:])
        starts[1:] += table_starts
        order = np.empty(indexes.size, np.int32)
        _order_kernel(indexes, starts, order)
        return order


def table_counts(indexes: np.ndarray, num_tables: int) -> np.ndarray:
    """How many of ``indexes`` (each in ``[0, num_tables)``, checked by the caller) name each
    table, int64: ``np.bincount`` (``coder._table_counts``), counted in parallel chunks."""
    return TableCounts(indexes, num_tables).total


@njit(inline="always")
def _search(cdf, lo, hi, quantile):
    # The symbol s in [lo, hi) with cdf[s] <= quantile < cdf[s + 1], given cdf[lo] <=
    # quantile < cdf[hi]. A binary search: tried against a guide of 1,024 buckets per
    # table that narrows it first, it was faster (13 against 17 ns per symbol of a
    # 1920x1080 decode), the guide's load lying on the path from one symbol to the next.
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if cdf[mid] <= quantile:
            lo = mid
        else:
            hi = mid
    return lo


@njit(inline="always")
def _quantile(lower, rng, point):
    """FORMAT.md 4.1 steps 1-2: the scale and the quantile (2**24 or more: corrupt). The
    state is uint64, so every operation wraps modulo 2**64."""
    scale = rng >> np.uint64(PRECISION)
    return scale, np.int64((point - lower) // scale)


@njit(inline="always")
def _advance(words, pos, lower, rng, point, scale, left, prob):
    """Steps 4-5: narrow the state to the symbol's interval and renormalise."""
    lower = lower + scale * np.uint64(left)
    rng = scale * np.uint64(prob)
    if rng < np.uint64(1 << 32):
        lower = lower << np.uint64(32)
        rng = rng << np.uint64(32)
        word = np.uint64(0)
        if pos < words.size:
            word = np.uint64(words[pos])
            pos += 1
        point = (point << np.uint64(32)) | word
    return pos, lower, rng, point


@njit(inline="never")
def _table_symbols(words, pos, lower, rng, point, row, size, offset, bits, used, budget, order,
                   a, b, values, escaped):
    """Step 1 of ``decode_sequence`` for the positions ``order[a:b]`` of one table (cumulative
    counts ``row``): returns ``(status, pos, lower, range, point, used, escapes found)``.

    A function of its own, never inlined, with unsigned indices: inside ``decode_sequence``
    the loop kept its state on the stack and its indices' wraparound checks (too many values
    live at once), 26 ms for the 1,632,000 symbols of a 1920x1080 decode; here it runs in
    registers, 8 ms. Each symbol is first tested against the table's likeliest one (98% of
    them at quality 4): ``cdf[m] <= (point - lower) // scale < cdf[m + 1]`` is ``scale *
    cdf[m] <= point - lower < scale * cdf[m + 1]`` (no product reaches 2**64: scale < 2**40,
    counts <= 2**24), so the division and the search run only for the others (6.8 ms).
    Steps 4 and 5 are written out here: through ``_advance``, or a step-5 helper shared with
    it (inlined, returning the state as a tuple), this loop took 25 ms again."""
    m = 0  # the likeliest symbol
    for k in range(1, size):
        if row[k + 1] - row[k] > row[m + 1] - row[m]:
            m = k
    m_lo, m_hi = np.uint64(row[m]), np.uint64(row[m + 1])
    m_bits = bits[m]
    last = np.uint64(size - 1)  # the escape symbol
    found = 0
    for j in range(np.uint64(a), np.uint64(b)):
        scale = rng >> np.uint64(PRECISION)
        d = point - lower
        left = scale * m_lo
        if left <= d and d < scale * m_hi:
            s = np.uint64(m)
            lower = lower + left
            rng = scale * (m_hi - m_lo)
            used += m_bits
        else:
            q = np.int64(d // scale)
            if q >= 1 << PRECISION:
                return QUANTILE, pos, lower, rng, point, used, found
            s = np.uint64(_search(row, 0, size, q))
            lower = lower + scale * np.uint64(row[s])
            rng = scale * np.uint64(row[s + np.uint64(1)] - row[s])
            used += bits[s]
        if rng < np.uint64(1 << 32):  # step 5: renormalise
            lower = lower << np.uint64(32)
            rng = rng << np.uint64(32)
            word = np.uint64(0)
            if pos < words.size:
                word = np.uint64(words[pos])
                pos += 1
            point = (point << np.uint64(32)) | word
        if used > budget:
            return BUDGET, pos, lower, rng, point, used, found
        p = np.uint64(order[j])
        if s == last:
            escaped[p] = 1
            found += 1
            values[p] = 0
        else:
            values[p] = offset + np.int64(s)
    return OK, pos, lower, rng, point, used, found


@njit(**JIT)
def decode_sequence(words, state, indexes, table_counts, order, cdf, sizes, offsets, info,
                    budget, header_cdf, header_info, values):
    """Decode one sequence of FORMAT.md 4.3 into ``values`` (int32, one per index) from
    ``state`` (``new_state``), which it advances. Returns a status code (``OK`` ...).

    ``order`` is the positions grouped by table, increasing within a table
    (``TableCounts.grouped_positions``), and ``table_counts`` how many indexes name each
    table (the caller has them for its budget check); the escapes are found again in
    increasing position from the symbols."""
    n = indexes.size
    T = sizes.size
    counts = np.zeros(T + 1, np.int64)  # counts[t]: where table t's positions start
    for t in range(T):
        counts[t + 1] = counts[t] + table_counts[t]
    escaped = np.zeros(n, np.uint8)
    n_escaped = 0
    pos, lower, rng, point = np.int64(state[0]), state[1], state[2], state[3]
    used = np.int64(state[4])
    # 1. Table symbols, table by table.
    for t in range(T):
        a, b = counts[t], counts[t + 1]
        if a == b:
            continue
        status, pos, lower, rng, point, used, found = _table_symbols(
            words, pos, lower, rng, point, cdf[t], sizes[t], offsets[t], info[t], used, budget,
            order, a, b, values, escaped)
        if status != OK:
            return status
        n_escaped += found
    if n_escaped:
        # 2. Escape headers, in position order.
        positions = np.empty(n_escaped, np.int64)
        lengths = np.empty(n_escaped, np.int64)
        sides = np.empty(n_escaped, np.int64)
        k = 0
        for p in range(n):
            if escaped[p]:
                positions[k] = p
                k += 1
        for k in range(n_escaped):
            scale, q = _quantile(lower, rng, point)
            if q >= 1 << PRECISION:
                return QUANTILE
            h = _search(header_cdf, 0, header_cdf.size - 1, q)
            pos, lower, rng, point = _advance(words, pos, lower, rng, point, scale,
                                              header_cdf[h], header_cdf[h + 1] - header_cdf[h])
            used += header_info[h]
            if used > budget:
                return BUDGET
            lengths[k] = h >> 1
            sides[k] = h & 1
            if lengths[k] > 32:
                return HEADER
        # 3. Escape bits: the low chunk, then the high chunk, of each escape in order.
        for k in range(n_escaped):
            L = lengths[k]
            below = L - 1 if L > 1 else 0
            w1 = below if below < _CHUNK_BITS else _CHUNK_BITS
            w2 = below - w1
            low, high = np.int64(0), np.int64(0)
            for chunk in range(2):
                w = w1 if chunk == 0 else w2
                if w == 0:
                    continue
                # Uniform(2**w): symbol s has the interval [s, s + 1) * 2**(24 - w).
                scale, q = _quantile(lower, rng, point)
                if q >= 1 << PRECISION:
                    return QUANTILE
                s = q >> (PRECISION - w)
                per_bin = np.int64(1) << (PRECISION - w)
                pos, lower, rng, point = _advance(words, pos, lower, rng, point, scale,
                                                  s * per_bin, per_bin)
                used += w << INFO_BITS
                if chunk == 0:
                    low = s
                else:
                    high = s
            if used > budget:
                return BUDGET
            lead = (np.int64(1) << (L - 1)) if L > 0 else np.int64(0)
            e = lead | low | (high << _CHUNK_BITS)
            p = positions[k]
            t = indexes[p]
            if sides[k] == 1:
                v = offsets[t] + sizes[t] - 1 + e
            else:
                v = offsets[t] - 1 - e
            if v < -(2**31) or v > 2**31 - 1:
                return RANGE
            values[p] = v
    state[0], state[1], state[2], state[3] = pos, lower, rng, point
    state[4] = np.uint64(used)
    return OK
