"""The compiled range decoder against the plain reference: constriction's own decoder, driven
through the layout of FORMAT.md 4.3 in numpy, symbol for symbol on random streams, escapes,
several segments and every index dtype; its integer information counts; corrupt words."""

import constriction
import numpy as np
import pytest

from qlic_codec.engine import rangedecoder
from qlic_codec.entropy import coder
from qlic_codec.entropy.tables import (CdfTables, build_gaussian_tables, counts_from_pmf,
                                       gaussian_scale_table)
from qlic_codec.errors import CorruptStreamError

I32 = np.iinfo(np.int32)
GAUSSIAN = build_gaussian_tables(gaussian_scale_table())


def _random_tables(rng, num_tables: int) -> CdfTables:
    """Tables of 2 to 300 symbols, from nearly flat to one symbol taking almost everything
    (counts of 1 beside it), offsets at the int32 ends too."""
    counts = []
    for _ in range(num_tables):
        weights = rng.exponential(size=int(rng.integers(2, 300))) ** rng.uniform(0.5, 12)
        counts.append(counts_from_pmf(weights[:-1], float(weights[-1]) + 1e-12))
    offsets = rng.integers(-100, 100, num_tables)
    offsets[0], offsets[-1] = I32.max, I32.min
    return CdfTables.from_counts(counts, offsets.tolist())


def _reference_decode(data: bytes, segments_indexes, tables: CdfTables):
    """The values of each segment, decoded by constriction's ``RangeDecoder`` with numpy
    around it (how qlic decoded before the compiled decoder)."""
    words = np.frombuffer(data, "<u4").astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    models = [coder.exact_categorical(tables.cdf_counts[t, :s])
              for t, s in enumerate(tables.sizes.tolist())]
    header = coder._header_model()
    out = []
    for indexes in segments_indexes:
        values = np.zeros(indexes.size, np.int64)
        escaped = []
        for t in range(tables.num_tables):
            positions = np.flatnonzero(indexes == t)
            if positions.size == 0:
                continue
            symbols = decoder.decode(models[t], positions.size).astype(np.int64)
            values[positions] = symbols + int(tables.offsets[t])
            escaped.extend(positions[symbols == int(tables.sizes[t]) - 1].tolist())
        escaped.sort()
        lengths, sides = [], []
        for _ in escaped:
            h = int(decoder.decode(header, 1)[0])
            lengths.append(h >> 1)
            sides.append(h & 1)
        for p, length, side in zip(escaped, lengths, sides):
            below = max(length - 1, 0)
            w1 = min(below, 16)
            w2 = below - w1
            low = int(decoder.decode(constriction.stream.model.Uniform(1 << w1), 1)[0]) \
                if w1 else 0
            high = int(decoder.decode(constriction.stream.model.Uniform(1 << w2), 1)[0]) \
                if w2 else 0
            e = ((1 << (length - 1)) if length else 0) | low | (high << 16)
            t = int(indexes[p])
            last = int(tables.offsets[t]) + int(tables.sizes[t]) - 1
            values[p] = last + e if side else int(tables.offsets[t]) - 1 - e
        out.append(values.astype(np.int32))
    return out


def _segments(rng, tables, count, escape_share=0.03, dtype=np.int32):
    out = []
    for _ in range(count):
        n = int(rng.integers(0, 3000))
        indexes = rng.integers(0, tables.num_tables, n).astype(dtype)
        values = rng.integers(-60, 60, n).astype(np.int32)
        wild = rng.random(n) < escape_share
        values[wild] = rng.integers(I32.min, I32.max, int(wild.sum()), dtype=np.int64)
        out.append((values, indexes))
    return out


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.uint8])
@pytest.mark.parametrize("seed", range(4))
def test_the_compiled_decoder_gives_constrictions_values(seed, dtype) -> None:
    rng = np.random.default_rng(100 + seed)
    tables = _random_tables(rng, int(rng.integers(2, 30)))
    segments = _segments(rng, tables, int(rng.integers(1, 6)), dtype=dtype)
    data = coder.encode_segments(segments, tables)
    expected = _reference_decode(data, [i for _, i in segments], tables)
    decoder = coder.SegmentDecoder(data, tables)
    for (values, indexes), want in zip(segments, expected):
        got = decoder.decode(indexes)
        np.testing.assert_array_equal(want, values)  # the reference is right, too
        np.testing.assert_array_equal(got, want)


def test_wide_gaussian_tables_and_the_largest_excesses() -> None:
    rng = np.random.default_rng(5)
    n = 50_000
    indexes = rng.integers(0, GAUSSIAN.num_tables, n).astype(np.int32)
    values = np.rint(rng.normal(0, gaussian_scale_table()[indexes])).astype(np.int32)
    values[:4] = [I32.min, I32.max, I32.min + 1, I32.max - 1]  # 32-bit excesses, both sides
    data = coder.encode_segments([(values, indexes)], GAUSSIAN)
    want, = _reference_decode(data, [indexes], GAUSSIAN)
    np.testing.assert_array_equal(coder.decode_symbols(data, indexes, GAUSSIAN), want)
    np.testing.assert_array_equal(want, values)


def test_information_units_are_a_tight_lower_bound() -> None:
    counts = np.concatenate([np.arange(1, 70_000), 1 << np.arange(25),
                             np.random.default_rng(0).integers(1, 2**24 + 1, 100_000)])
    units = rangedecoder.information_units(counts)
    exact = (24 - np.log2(counts.astype(np.float64))) * 2**16
    assert np.all(units <= exact + 1e-6)
    assert np.all(units >= exact - 2)
    np.testing.assert_array_equal(rangedecoder.information_units(1 << np.arange(25)),
                                  (24 - np.arange(25)) << 16)
    with pytest.raises(ValueError):
        rangedecoder.information_units(np.array([0]))


def test_a_point_outside_the_model_is_refused() -> None:
    # lower = 0, range = 2**64 - 1: a point of 2**64 - 1 gives the quantile 2**24 (4.1 step 2).
    data = np.array([2**32 - 1, 2**32 - 1], "<u4").tobytes()
    with pytest.raises(CorruptStreamError, match="outside its model"):
        coder.decode_symbols(data, np.zeros(3, np.int32), GAUSSIAN)


def test_random_words_give_values_or_corrupt_stream_errors() -> None:
    rng = np.random.default_rng(11)
    tables = _random_tables(rng, 5)
    outcomes = set()
    for trial in range(300):
        words = rng.integers(0, 2**32, int(rng.integers(0, 12)), dtype=np.uint64)
        indexes = rng.integers(0, 5, int(rng.integers(1, 2000))).astype(np.int32)
        try:
            values = coder.decode_symbols(words.astype("<u4").tobytes(), indexes, tables)
            assert values.shape == indexes.shape
            outcomes.add("values")
        except CorruptStreamError as exc:
            outcomes.add(str(exc).split(" (")[0][:40])
    assert "values" in outcomes and len(outcomes) >= 2


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_table_counts_are_bincount(threads, dtype) -> None:
    """The decoder's parallel table counts equal ``coder._table_counts`` (np.bincount), from
    one chunk to many, with tables that no index names."""
    rng = np.random.default_rng(11)
    for n, tables in ((0, 3), (1, 2), (1000, 64), (5 * rangedecoder._COUNT_CHUNK + 17, 300)):
        top = min(tables, np.iinfo(dtype).max + 1)
        indexes = rng.integers(0, top // 2 + 1, n).astype(dtype)
        got = rangedecoder.table_counts(indexes, tables)
        assert got.dtype == np.int64
        assert np.array_equal(got, coder._table_counts(indexes, tables))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_grouped_positions_are_a_stable_sort(threads, dtype) -> None:
    """The positions the decoder groups by table in parallel chunks are those of a stable
    sort of the indexes (the serial counting sort it replaced), from one chunk to many, with
    tables that no index names and chunks that name none of some table."""
    rng = np.random.default_rng(12)
    for n, tables in ((1, 2), (1000, 64), (3 * rangedecoder._COUNT_CHUNK + 5, 7),
                      (5 * rangedecoder._COUNT_CHUNK + 17, 300)):
        top = min(tables, np.iinfo(dtype).max + 1)
        indexes = rng.integers(0, top // 2 + 1, n).astype(dtype)
        indexes[: n // 3] = 0  # whole chunks of one table
        counts = rangedecoder.TableCounts(indexes, tables)
        order = counts.grouped_positions(indexes)
        assert order.dtype == np.int32
        assert np.array_equal(order, np.argsort(indexes, kind="stable"))
