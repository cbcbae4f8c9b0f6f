"""Integer values from a range-coded stream (FORMAT.md 4.3): tables, grouping, escapes."""

import numpy as np

from .rangecoder import Categorical, RangeDecoder, Uniform

ESCAPE_HEADER_SYMBOLS = 66
CHUNK_BITS = 16


def escape_header_model():
    counts = [(1 << 24) // ESCAPE_HEADER_SYMBOLS] * ESCAPE_HEADER_SYMBOLS
    for i in range((1 << 24) % ESCAPE_HEADER_SYMBOLS):
        counts[i] += 1
    return Categorical(counts)


class Tables:
    """A table set from a model's ``entropy.<key>.*`` arrays."""

    def __init__(self, arrays, key):
        counts = arrays[f"entropy.{key}.cdf_counts"]
        self.sizes = [int(s) for s in arrays[f"entropy.{key}.sizes"]]
        self.offsets = [int(o) for o in arrays[f"entropy.{key}.offsets"]]
        self.models = [Categorical(counts[t, :s].tolist()) for t, s in enumerate(self.sizes)]


def decode_values(data: bytes, indexes: np.ndarray, tables: Tables) -> np.ndarray:
    """The values of one stream whose position ``i`` was coded with table ``indexes[i]``."""
    return decode_segment(stream_decoder(data), indexes, tables)


def stream_decoder(data: bytes) -> RangeDecoder:
    """A range decoder at the start of a stream's words."""
    if len(data) % 4:
        raise ValueError("a stream is a whole number of 32-bit words")
    return RangeDecoder(np.frombuffer(data, "<u4"))


def decode_segment(decoder: RangeDecoder, indexes: np.ndarray, tables: Tables) -> np.ndarray:
    """One sequence of values laid out as FORMAT.md 4.3 says, read from where ``decoder``
    stands; a stream of several segments (4.4) is read by calling this once per segment."""
    n = indexes.size
    values = np.zeros(n, np.int64)
    escaped = []
    # 1. Table symbols: table by table in increasing order, positions in increasing order.
    for t in sorted(set(indexes.tolist())):
        model, size, offset = tables.models[t], tables.sizes[t], tables.offsets[t]
        for i in np.flatnonzero(indexes == t).tolist():
            symbol = decoder.decode(model)
            if symbol == size - 1:
                escaped.append(i)
            else:
                values[i] = offset + symbol
    escaped.sort()
    # 2. One header per escape, in position order: 2 * bit length + side.
    header_model = escape_header_model()
    headers = [decoder.decode(header_model) for _ in escaped]
    # 3. The bits below each excess's leading one, in position order, low chunk first.
    for i, header in zip(escaped, headers):
        length, side = header >> 1, header & 1
        if length > 32:
            raise ValueError("escape longer than 32 bits")
        below = max(length - 1, 0)
        low_bits = min(below, CHUNK_BITS)
        excess = (1 << (length - 1)) if length else 0
        if low_bits:
            excess |= decoder.decode(Uniform(1 << low_bits))
        if below - low_bits:
            excess |= decoder.decode(Uniform(1 << (below - low_bits))) << CHUNK_BITS
        t = int(indexes[i])
        if side:
            values[i] = tables.offsets[t] + tables.sizes[t] - 1 + excess
        else:
            values[i] = tables.offsets[t] - 1 - excess
        if not -(2**31) <= values[i] < 2**31:
            raise ValueError("escaped value outside int32")
    return values
