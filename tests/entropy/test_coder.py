"""Tests of the range coder layer: exact integer models, round trips, escapes, corrupt data."""

import time

import constriction
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qlic_codec.entropy import coder
from qlic_codec.entropy.coder import decode_symbols, encode_symbols, exact_categorical
from qlic_codec.entropy.tables import (
    TOTAL,
    CdfTables,
    build_gaussian_tables,
    counts_from_pmf,
    gaussian_scale_table,
)
from qlic_codec.errors import CorruptStreamError, ModelFileError

I32 = np.iinfo(np.int32)
GAUSSIAN = build_gaussian_tables(gaussian_scale_table())


def _random_counts(rng: np.random.Generator, size: int) -> np.ndarray:
    weights = rng.exponential(size=size) ** 4
    return counts_from_pmf(weights[:-1], float(weights[-1])).astype(np.int64)


def _random_tables(rng: np.random.Generator, num_tables: int) -> CdfTables:
    counts = [_random_counts(rng, int(rng.integers(2, 40))) for _ in range(num_tables)]
    offsets = rng.integers(-50, 50, num_tables)
    # Offsets at the int32 ends, so that escapes reach the largest excess both ways.
    offsets[0], offsets[-1] = I32.max, I32.min
    return CdfTables.from_counts(counts, offsets.tolist())


def _round_trip(values: np.ndarray, indexes: np.ndarray, tables: CdfTables) -> bytes:
    data = encode_symbols(values, indexes, tables)
    assert len(data) % 4 == 0
    decoded = decode_symbols(data, indexes, tables)
    assert decoded.dtype == np.int32
    np.testing.assert_array_equal(decoded, values)
    return data


# --- exact integer models -------------------------------------------------------------------

def _decode_at_quantile(model, quantile: int) -> int:
    """Decodes one symbol from a stream whose first quantile is exactly ``quantile``.

    A fresh range decoder has lower = 0 and range = 2**64 - 1; it reads a 64-bit point from
    the first two words and looks up ``point // ((2**64 - 1) >> 24)`` in the model's CDF.
    """
    point = quantile * ((2**64 - 1) >> 24)
    words = np.array([point >> 32, point & 0xFFFFFFFF], dtype=np.uint32)
    return int(constriction.stream.queue.RangeDecoder(words).decode(model, 1)[0])


def _probe_cdf(model, counts: np.ndarray) -> None:
    """Asserts that the model's fixed-point CDF is exactly ``cumsum(counts)``."""
    cdf = np.concatenate([[0], np.cumsum(counts)]).tolist()
    assert cdf[-1] == TOTAL
    assert _decode_at_quantile(model, 0) == 0
    assert _decode_at_quantile(model, TOTAL - 1) == len(counts) - 1
    for s in range(1, len(counts)):
        # cdf[s] is the first quantile of symbol s and the one before it the last of s - 1.
        assert _decode_at_quantile(model, cdf[s] - 1) == s - 1
        assert _decode_at_quantile(model, cdf[s]) == s


@pytest.mark.parametrize("seed, size", [(0, 2), (1, 3), (2, 17), (3, 66), (4, 1000)])
def test_model_cdf_is_exactly_the_counts(seed: int, size: int) -> None:
    counts = _random_counts(np.random.default_rng(seed), size)
    _probe_cdf(exact_categorical(counts), counts)


def test_model_cdf_extreme_counts() -> None:
    for counts in ([TOTAL - 1, 1], [1, TOTAL - 1], [1, 1, 1, TOTAL - 3],
                   [1] * 100 + [TOTAL - 100]):
        _probe_cdf(exact_categorical(np.array(counts)), np.array(counts))


def test_model_cdf_of_shipped_gaussian_tables() -> None:
    for t in (0, 31, 63):
        counts = GAUSSIAN.cdf_counts[t, :GAUSSIAN.sizes[t]].astype(np.int64)
        _probe_cdf(coder._models_for(GAUSSIAN).models[t], counts)


def test_naive_float_construction_is_not_exact() -> None:
    # Passing the counts themselves (not counts - 1) shifts the CDF: constriction gives every
    # symbol one count and shares only the remaining 2**24 - S in proportion.
    counts = _random_counts(np.random.default_rng(5), 50)
    naive = constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)
    with pytest.raises(AssertionError):
        _probe_cdf(naive, counts)


def test_float32_input_gives_the_same_model() -> None:
    # Every partial sum of counts - 1 is an integer below 2**24, exact in float32 too.
    counts = _random_counts(np.random.default_rng(6), 300)
    model32 = constriction.stream.model.Categorical((counts - 1).astype(np.float32),
                                                    perfect=False)
    _probe_cdf(model32, counts)


def test_encoder_interval_is_exactly_the_counts() -> None:
    # Independent of the decoder: the point a one-symbol stream ends on must lie in that
    # symbol's interval [cdf[s], cdf[s + 1]) of the quantile axis.
    counts = _random_counts(np.random.default_rng(7), 40)
    cdf = np.concatenate([[0], np.cumsum(counts)]).tolist()
    model = exact_categorical(counts)
    for s in range(len(counts)):
        encoder = constriction.stream.queue.RangeEncoder()
        encoder.encode(np.array([s], dtype=np.int32), model)
        words = encoder.get_compressed().tolist() + [0, 0]
        point = (words[0] << 32) | words[1]
        assert cdf[s] <= point // ((2**64 - 1) >> 24) < cdf[s + 1]


def test_code_length_matches_counts() -> None:
    rng = np.random.default_rng(8)
    counts = _random_counts(rng, 30)
    tables = CdfTables.from_counts([counts], [0])
    symbols = rng.choice(29, size=20000, p=counts[:-1] / counts[:-1].sum()).astype(np.int32)
    data = encode_symbols(symbols, np.zeros(symbols.size, np.int32), tables)
    ideal = -np.log2(counts[symbols] / TOTAL).sum()
    assert ideal <= 8 * len(data) <= ideal + 64


def test_exact_categorical_rejects_bad_counts() -> None:
    for counts in ([TOTAL], [0, TOTAL], [1, TOTAL - 2], [[1, TOTAL - 1]]):
        with pytest.raises(ValueError):
            exact_categorical(np.array(counts))


# --- round trips ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_round_trip_random(seed: int) -> None:
    rng = np.random.default_rng(seed)
    tables = _random_tables(rng, int(rng.integers(1, 70)))
    n = int(rng.integers(1, 5000))
    indexes = rng.integers(0, tables.num_tables, n).astype(np.int32)
    values = (tables.offsets[indexes].astype(np.int64)
              + rng.integers(-3, 45, n)).clip(I32.min, I32.max)
    far = rng.random(n) < 0.05
    values[far] = rng.integers(I32.min, I32.max, far.sum(), endpoint=True)
    values[rng.random(n) < 0.01] = I32.min
    values[rng.random(n) < 0.01] = I32.max
    _round_trip(values.astype(np.int32), indexes, tables)


def test_round_trip_gaussian_with_escapes() -> None:
    rng = np.random.default_rng(9)
    n = 20000
    indexes = rng.integers(0, 64, n).astype(np.int32)
    scales = gaussian_scale_table()
    # Scales 3x too large: a steady rate of escapes just outside each table.
    values = np.rint(rng.normal(0, 3 * scales[indexes])).clip(I32.min, I32.max)
    _round_trip(values.astype(np.int32), indexes, GAUSSIAN)


def test_scanning_large_inputs_gives_the_stream_of_sorting(monkeypatch) -> None:
    """Many symbols are grouped by table by scanning, in pieces: the same words as sorting
    them all at once, and the same values back, for every index dtype."""
    rng = np.random.default_rng(21)
    n = 5000
    indexes = rng.integers(0, 64, n).astype(np.int32)
    indexes[:700] = 3  # a table that spans several pieces
    scales = gaussian_scale_table()
    values = np.rint(rng.normal(0, 3 * scales[indexes])).astype(np.int32)
    sorted_stream = encode_symbols(values, indexes, GAUSSIAN)
    monkeypatch.setattr(coder, "_SORT_MAX", 0)
    monkeypatch.setattr(coder, "_SCAN_PIECE", 1000)
    monkeypatch.setattr(coder, "_DECODE_CHUNK", 97)
    for dtype in (np.int32, np.uint8, np.uint16):
        assert _round_trip(values, indexes.astype(dtype), GAUSSIAN) == sorted_stream


def test_every_escape_length_and_side() -> None:
    # Excess 0 and every power of two (and one below) on both sides of a mid-range table.
    tables = CdfTables.from_counts([np.array([1 << 22] * 4)], [0])
    excess = np.unique([0] + [e for k in range(32) for e in ((1 << k) - 1, 1 << k)])
    above, below = 3 + excess, -1 - excess
    values = np.concatenate([above[above <= I32.max], below[below >= I32.min]])
    _round_trip(values.astype(np.int32), np.zeros(values.size, np.int32), tables)


def test_int32_extremes_against_extreme_offsets() -> None:
    tables = CdfTables.from_counts([np.array([1 << 23] * 2)] * 4,
                                   [I32.min, I32.max - 1, I32.max, 0])
    values = np.array([I32.min, I32.max, 0, -1, I32.min + 1, I32.max - 1], dtype=np.int32)
    for t in range(4):
        _round_trip(values, np.full(values.size, t, np.int32), tables)


def test_empty_single_and_one_table() -> None:
    empty = np.zeros(0, np.int32)
    assert encode_symbols(empty, empty, GAUSSIAN) == b""
    assert decode_symbols(b"", empty, GAUSSIAN).shape == (0,)
    assert decode_symbols(b"\0" * 8, empty, GAUSSIAN).shape == (0,)
    for value in (0, 3, -100000, I32.max):
        _round_trip(np.array([value], np.int32), np.array([40], np.int32), GAUSSIAN)
    values = np.arange(-300, 300, dtype=np.int32)
    _round_trip(values, np.full(values.size, 17, np.int32), GAUSSIAN)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(I32.min, I32.max), st.integers(0, 63)), max_size=60))
def test_round_trip_property(pairs: list) -> None:
    values = np.array([v for v, _ in pairs], dtype=np.int32)
    indexes = np.array([t for _, t in pairs], dtype=np.int32)
    _round_trip(values, indexes, GAUSSIAN)


def test_encoding_is_deterministic_and_ignores_trailing_words() -> None:
    rng = np.random.default_rng(10)
    indexes = rng.integers(0, 64, 1000).astype(np.int32)
    values = rng.integers(-20, 20, 1000).astype(np.int32)
    data = encode_symbols(values, indexes, GAUSSIAN)
    assert encode_symbols(values.copy(), indexes.copy(), GAUSSIAN) == data
    np.testing.assert_array_equal(decode_symbols(data + bytes(8), indexes, GAUSSIAN), values)
    np.testing.assert_array_equal(decode_symbols(bytearray(data), indexes, GAUSSIAN), values)


def test_models_are_built_once_per_tables() -> None:
    tables = _random_tables(np.random.default_rng(11), 5)
    assert coder._models_for(tables) is coder._models_for(tables)


# --- compression and format -----------------------------------------------------------------

@pytest.mark.parametrize("table", [8, 24, 40, 56])
def test_rate_close_to_entropy(table: int) -> None:
    rng = np.random.default_rng(table)
    scale = gaussian_scale_table()[table]
    n = 40000
    values = np.rint(rng.normal(0, scale, n)).astype(np.int32)
    data = encode_symbols(values, np.full(n, table, np.int32), GAUSSIAN)
    # Ideal cost of these samples under the discretised Gaussian itself.
    from scipy.stats import norm

    p = norm.cdf((values + 0.5) / scale) - norm.cdf((values - 0.5) / scale)
    ideal = -np.log2(p).sum()
    assert 8 * len(data) <= 1.02 * ideal + 64


# Two tables with explicit counts; values in range, below, above and at the int32 ends.
GOLDEN_TABLES = CdfTables.from_counts(
    [np.array([10066329, 5033165, 1677722]),
     np.array([1677722, 3355443, 5033165, 3355443, 3355443])], [-1, 3])
GOLDEN_VALUES = np.array([-1, 0, 3, 4, 5, 6, 7, -5, I32.max, I32.min, 0, 1], dtype=np.int32)
GOLDEN_INDEXES = np.array([0, 0, 1, 1, 1, 1, 1, 0, 1, 0, 1, 1], dtype=np.int32)
GOLDEN_HEX = "f0ecc9890ee517955fb10e22fab538ec"


def test_golden_stream() -> None:
    # A change here breaks every stored .qlic file: the format (grouping, escape scheme,
    # word order) or constriction's model construction changed.
    data = encode_symbols(GOLDEN_VALUES, GOLDEN_INDEXES, GOLDEN_TABLES)
    assert data.hex() == GOLDEN_HEX
    np.testing.assert_array_equal(
        decode_symbols(bytes.fromhex(GOLDEN_HEX), GOLDEN_INDEXES, GOLDEN_TABLES), GOLDEN_VALUES)


# --- argument errors ------------------------------------------------------------------------

def test_encode_rejects_bad_arguments() -> None:
    ok = np.zeros(4, np.int32)
    for values, indexes in [
        (ok.astype(np.int64), ok),
        (ok, ok.astype(np.int64)),
        (ok.reshape(2, 2), ok.reshape(2, 2)),
        (ok[:3], ok),
        (ok, np.array([0, 1, 64, 2], np.int32)),
        (ok, np.array([0, -1, 0, 0], np.int32)),
        (list(ok), ok),
    ]:
        with pytest.raises(ValueError):
            encode_symbols(values, indexes, GAUSSIAN)
    with pytest.raises(ValueError):
        encode_symbols(ok, ok, "tables")
    with pytest.raises(ValueError):
        decode_symbols(b"", np.array([64], np.int32), GAUSSIAN)


def test_invalid_tables_raise_model_file_error() -> None:
    bad = CdfTables(np.array([[TOTAL - 1, 2]], np.int32), np.array([2], np.int32),
                    np.array([0], np.int32))
    with pytest.raises(ModelFileError):
        encode_symbols(np.zeros(1, np.int32), np.zeros(1, np.int32), bad)


# --- corrupt data ---------------------------------------------------------------------------

FUZZ_RNG = np.random.default_rng(12)
FUZZ_INDEXES = FUZZ_RNG.integers(0, 64, 300).astype(np.int32)
FUZZ_VALUES = np.rint(FUZZ_RNG.normal(0, 2 * gaussian_scale_table()[FUZZ_INDEXES]))
FUZZ_VALUES[::37] = FUZZ_RNG.integers(I32.min, I32.max, FUZZ_VALUES[::37].size)
FUZZ_VALUES = FUZZ_VALUES.astype(np.int32)
FUZZ_DATA = encode_symbols(FUZZ_VALUES, FUZZ_INDEXES, GAUSSIAN)


def _decode_corrupt(data: bytes) -> None:
    """Decoding must give int32 values or CorruptStreamError, fast, and nothing else."""
    start = time.perf_counter()
    try:
        values = decode_symbols(data, FUZZ_INDEXES, GAUSSIAN)
    except CorruptStreamError as exc:
        assert "\n" not in str(exc)
    else:
        assert values.dtype == np.int32 and values.shape == FUZZ_INDEXES.shape
    assert time.perf_counter() - start < 60  # a hang, not a speed target


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    _decode_corrupt(data)


@FUZZ
@given(st.integers(0, len(FUZZ_DATA) - 1))
def test_truncated(length: int) -> None:
    _decode_corrupt(FUZZ_DATA[:length])


@FUZZ
@given(st.lists(st.integers(0, 8 * len(FUZZ_DATA) - 1), min_size=1, max_size=4))
def test_bit_flips(bits: list) -> None:
    data = bytearray(FUZZ_DATA)
    for bit in bits:
        data[bit // 8] ^= 1 << (bit % 8)
    _decode_corrupt(bytes(data))


def test_invalid_point_and_odd_length() -> None:
    # A first quantile at or above 2**24 is invalid for any model: constriction's
    # AssertionError must come out as CorruptStreamError.
    with pytest.raises(CorruptStreamError):
        decode_symbols(b"\xff" * 8, FUZZ_INDEXES, GAUSSIAN)
    with pytest.raises(CorruptStreamError, match="32-bit words"):
        decode_symbols(FUZZ_DATA[:-1], FUZZ_INDEXES, GAUSSIAN)


def test_escape_outside_int32_is_corrupt() -> None:
    # An escape decoded against a table at the int32 end can land outside int32.
    tables = CdfTables.from_counts([np.array([1 << 23] * 2)], [I32.max])
    found = False
    for seed in range(200):
        data = np.random.default_rng(seed).integers(0, 2**32, 8, dtype=np.uint32)
        try:
            decode_symbols(data.astype("<u4").tobytes(), np.zeros(8, np.int32), tables)
        except CorruptStreamError as exc:
            found = found or "outside int32" in str(exc)
    assert found


# --- speed (printed, not asserted) ----------------------------------------------------------

def test_speed_report(capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(13)
    n = 300_000
    indexes = rng.integers(0, 64, n).astype(np.int32)
    values = np.rint(rng.normal(0, gaussian_scale_table()[indexes])).astype(np.int32)
    encode_symbols(values[:10], indexes[:10], GAUSSIAN)  # models built outside the timing
    timings = {"encode": [], "decode": []}
    for _ in range(3):
        start = time.perf_counter()
        data = encode_symbols(values, indexes, GAUSSIAN)
        timings["encode"].append(time.perf_counter() - start)
        start = time.perf_counter()
        decoded = decode_symbols(data, indexes, GAUSSIAN)
        timings["decode"].append(time.perf_counter() - start)
    np.testing.assert_array_equal(decoded, values)
    with capsys.disabled():
        print(f"\nentropy coder, {n} symbols over 64 tables: "
              f"encode {min(timings['encode']) / n * 1e9:.0f} ns/symbol, "
              f"decode {min(timings['decode']) / n * 1e9:.0f} ns/symbol, "
              f"{8 * len(data) / n:.3f} bits/symbol")


# --- segments: one stream decoded in steps, each step's indexes known only after the last ---

def _segments(rng, tables, count):
    out = []
    for _ in range(count):
        n = int(rng.integers(0, 400))
        indexes = rng.integers(0, tables.num_tables, n).astype(np.int32)
        values = rng.integers(-40, 40, n).astype(np.int32)
        values[rng.random(n) < 0.02] = rng.integers(-(2**31), 2**31 - 1, dtype=np.int64)
        out.append((values, indexes))
    return out


def test_segments_decode_in_order_from_one_stream() -> None:
    rng = np.random.default_rng(7)
    tables = _random_tables(rng, 6)
    segments = _segments(rng, tables, 5)
    data = coder.encode_segments(segments, tables)
    decoder = coder.SegmentDecoder(data, tables)
    for values, indexes in segments:
        assert np.array_equal(decoder.decode(indexes), values)


def test_one_segment_is_the_plain_stream() -> None:
    rng = np.random.default_rng(8)
    tables = _random_tables(rng, 4)
    (values, indexes), = _segments(rng, tables, 1)
    assert coder.encode_segments([(values, indexes)], tables) == encode_symbols(
        values, indexes, tables)


def test_later_indexes_may_depend_on_earlier_values() -> None:
    # As in a channel-conditional model: the tables of slice k come from slices before it.
    rng = np.random.default_rng(9)
    tables = _random_tables(rng, 8)
    first = rng.integers(-5, 5, 300).astype(np.int32)
    first_idx = rng.integers(0, 8, 300).astype(np.int32)
    second_idx = (np.abs(first) % 8).astype(np.int32)
    second = rng.integers(-5, 5, 300).astype(np.int32)
    data = coder.encode_segments([(first, first_idx), (second, second_idx)], tables)
    decoder = coder.SegmentDecoder(data, tables)
    got = decoder.decode(first_idx)
    assert np.array_equal(decoder.decode((np.abs(got) % 8).astype(np.int32)), second)


def test_the_information_budget_spans_all_segments() -> None:
    rng = np.random.default_rng(10)
    tables = _random_tables(rng, 3)
    values = rng.integers(-3, 3, 200).astype(np.int32)
    indexes = rng.integers(0, 3, 200).astype(np.int32)
    data = coder.encode_segments([(values, indexes)], tables)
    decoder = coder.SegmentDecoder(data, tables)
    decoder.decode(indexes)
    with pytest.raises(CorruptStreamError):
        for _ in range(10_000):  # far more symbols than the words can hold
            decoder.decode(np.zeros(4096, np.int32))
