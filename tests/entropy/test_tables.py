"""Tests of the integer CDF tables: quantisation rule, builders and validation."""

import math

import numpy as np
import pytest

from qlic_codec.entropy.tables import (
    MAX_TABLE_SIZE,
    PRECISION,
    TOTAL,
    CdfTables,
    build_factorized_tables,
    build_gaussian_tables,
    counts_from_pmf,
    gaussian_scale_table,
)
from qlic_codec.errors import ModelFileError


def _check_counts(counts: np.ndarray, size: int) -> None:
    assert counts.dtype == np.int32
    assert counts.shape == (size,)
    assert counts.min() >= 1
    assert counts.sum(dtype=np.int64) == TOTAL


def test_precision_is_constrictions_default() -> None:
    assert PRECISION == 24 and TOTAL == 1 << 24


# --- counts_from_pmf ------------------------------------------------------------------------

def test_counts_hand_computed() -> None:
    # Dyadic probabilities: free = 2**24 - 3 counts give fractions .5, .25, .25; the one
    # missing count goes to the largest fraction (index 0).
    counts = counts_from_pmf(np.array([0.5, 0.25]), 0.25)
    np.testing.assert_array_equal(counts, [1 << 23, 1 << 22, 1 << 22])
    # Equal fractions: the tie goes to the lowest index.
    counts = counts_from_pmf(np.array([1.0, 1.0]), 1.0)
    np.testing.assert_array_equal(counts, [5592406, 5592405, 5592405])


@pytest.mark.parametrize("seed", range(20))
def test_counts_sum_and_floor(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 5000))
    # Heavy-tailed weights, many far below one count, some exact zeros.
    pmf = rng.exponential(size=size - 1) ** 6
    pmf[rng.random(size - 1) < 0.1] = 0.0
    tail = float(rng.choice([0.0, 1e-12, 0.3]))
    if pmf.sum() + tail == 0:
        tail = 1.0
    counts = counts_from_pmf(pmf, tail)
    _check_counts(counts, size)
    again = counts_from_pmf(pmf.copy(), tail)
    np.testing.assert_array_equal(counts, again)
    # Proportional within the +1 floor and one rounding count.
    ideal = np.append(pmf, tail) / (pmf.sum() + tail) * (TOTAL - size)
    assert np.all(np.abs(counts - 1 - ideal) < 1.0 + 1e-6)


def test_counts_scale_invariant_and_zero_tail() -> None:
    pmf = np.array([0.1, 0.7, 0.2])
    counts = counts_from_pmf(pmf, 0.0)
    _check_counts(counts, 4)
    assert counts[-1] == 1  # zero tail still gets the one count that keeps it codable
    np.testing.assert_array_equal(counts_from_pmf(pmf * 4.0, 0.0), counts)


@pytest.mark.parametrize("pmf, tail", [
    (np.array([]), 0.5),
    (np.array([0.5, np.nan]), 0.1),
    (np.array([0.5, -0.1]), 0.1),
    (np.array([0.5, 0.5]), np.inf),
    (np.array([0.0, 0.0]), 0.0),
    (np.ones(MAX_TABLE_SIZE), 0.1),
])
def test_counts_reject_bad_pmf(pmf: np.ndarray, tail: float) -> None:
    with pytest.raises(ValueError):
        counts_from_pmf(pmf, tail)


# --- Gaussian tables ------------------------------------------------------------------------

def test_scale_table_is_log_spaced() -> None:
    scales = gaussian_scale_table()
    assert scales.shape == (64,) and scales.dtype == np.float64
    assert scales[0] == pytest.approx(0.11) and scales[-1] == pytest.approx(256.0)
    np.testing.assert_allclose(np.diff(np.log(scales)), math.log(256 / 0.11) / 63)
    with pytest.raises(ValueError):
        gaussian_scale_table(1.0, 0.5)
    with pytest.raises(ValueError):
        gaussian_scale_table(levels=1)


def test_gaussian_tables_validate_and_cover_the_tail() -> None:
    scales = gaussian_scale_table()
    tables = build_gaussian_tables(scales)
    tables.validate("gaussian")
    assert tables.num_tables == 64
    # The tail bound of a two-sided 1e-9 tail is about 6.109 standard deviations.
    from scipy.stats import norm

    bound = norm.isf(0.5e-9)
    radius = -tables.offsets.astype(np.int64)
    np.testing.assert_array_equal(radius, np.ceil(scales * bound))
    np.testing.assert_array_equal(tables.sizes, 2 * radius + 2)
    for t in (0, 20, 63):
        counts = tables.cdf_counts[t, :tables.sizes[t]].astype(np.int64)
        symbols = counts[:-1]
        # Unimodal around zero and symmetric up to one rounding count.
        assert symbols[radius[t]] >= symbols.max() - 1
        assert np.all(np.abs(symbols - symbols[::-1]) <= 1)
        assert counts[-1] <= 2  # the escape is rare


def test_gaussian_tables_match_the_normal_cdf() -> None:
    from scipy.stats import norm

    scale = 3.7
    tables = build_gaussian_tables(np.array([scale]))
    size = int(tables.sizes[0])
    v = np.arange(size - 1) + int(tables.offsets[0])
    p = norm.cdf((v + 0.5) / scale) - norm.cdf((v - 0.5) / scale)
    counts = tables.cdf_counts[0, :size - 1]
    np.testing.assert_allclose(counts / TOTAL, p, atol=3 / TOTAL, rtol=1e-3)


def test_gaussian_tables_are_deterministic() -> None:
    a = build_gaussian_tables(gaussian_scale_table())
    b = build_gaussian_tables(gaussian_scale_table())
    np.testing.assert_array_equal(a.cdf_counts, b.cdf_counts)
    np.testing.assert_array_equal(a.offsets, b.offsets)


def test_gaussian_tables_reject_bad_scales() -> None:
    for scales in (np.array([]), np.array([1.0, 0.0]), np.array([np.nan])):
        with pytest.raises(ValueError):
            build_gaussian_tables(scales)
    with pytest.raises(ValueError):
        build_gaussian_tables(np.array([1.0]), tail_mass=0.0)


# --- factorized tables ----------------------------------------------------------------------

def test_factorized_tables() -> None:
    pmfs = [np.array([0.2, 0.5, 0.29]), np.array([0.9, 0.09])]
    tables = build_factorized_tables(pmfs, [-1, 7])
    tables.validate("z")
    np.testing.assert_array_equal(tables.sizes, [4, 3])
    np.testing.assert_array_equal(tables.offsets, [-1, 7])
    # Default tail: the mass the pmf leaves out (0.01 in both channels).
    np.testing.assert_array_equal(tables.cdf_counts[0, :4], counts_from_pmf(pmfs[0], 0.01))
    np.testing.assert_array_equal(tables.cdf_counts[1, 3:], [0])
    explicit = build_factorized_tables(pmfs, [-1, 7], tail_masses=[0.5, 0.0])
    np.testing.assert_array_equal(explicit.cdf_counts[1, :3], counts_from_pmf(pmfs[1], 0.0))
    with pytest.raises(ValueError):
        build_factorized_tables(pmfs, [0])
    with pytest.raises(ValueError):
        build_factorized_tables(pmfs, [0, 1], tail_masses=[0.1])
    with pytest.raises(ValueError):
        build_factorized_tables(pmfs, [0, 1 << 31])


# --- CdfTables and validate -----------------------------------------------------------------

def _good() -> dict:
    counts = np.zeros((3, 5), dtype=np.int32)
    counts[0, :2] = [TOTAL - 1, 1]
    counts[1, :5] = counts_from_pmf(np.array([0.1, 0.2, 0.3, 0.3]), 0.1)
    counts[2, :3] = counts_from_pmf(np.array([0.5, 0.5]), 0.0)
    return {"cdf_counts": counts, "sizes": np.array([2, 5, 3], dtype=np.int32),
            "offsets": np.array([0, -2, 2**31 - 1], dtype=np.int32)}


def test_validate_accepts_good_tables() -> None:
    CdfTables(**_good()).validate("good")


def _break(field: str, value) -> dict:
    arrays = _good()
    arrays[field] = value
    return arrays


def _counts_with(t: int, s: int, value: int, fix: int | None = None) -> np.ndarray:
    counts = _good()["cdf_counts"].copy()
    counts[t, s] = value
    if fix is not None:
        counts[t, fix] -= value
    return counts


BAD_TABLES = {
    "counts dtype": _break("cdf_counts", _good()["cdf_counts"].astype(np.int64)),
    "sizes dtype": _break("sizes", _good()["sizes"].astype(np.uint32)),
    "offsets dtype": _break("offsets", _good()["offsets"].astype(np.float32)),
    "counts 1-D": _break("cdf_counts", _good()["cdf_counts"][0]),
    "no tables": {"cdf_counts": np.zeros((0, 5), np.int32), "sizes": np.zeros(0, np.int32),
                  "offsets": np.zeros(0, np.int32)},
    "sizes shape": _break("sizes", np.array([2, 5], dtype=np.int32)),
    "offsets shape": _break("offsets", np.zeros((3, 1), dtype=np.int32)),
    "width 1": {"cdf_counts": np.full((1, 1), TOTAL, np.int32),
                "sizes": np.array([1], np.int32), "offsets": np.array([0], np.int32)},
    "too wide": {"cdf_counts": np.zeros((1, MAX_TABLE_SIZE + 1), np.int32),
                 "sizes": np.array([2], np.int32), "offsets": np.array([0], np.int32)},
    "size below 2": _break("sizes", np.array([1, 5, 3], dtype=np.int32)),
    "size above width": _break("sizes", np.array([2, 6, 3], dtype=np.int32)),
    "zero count inside": _break("cdf_counts", _counts_with(2, 1, 0, fix=None)),
    "negative count inside": _break("cdf_counts", _counts_with(1, 4, -5)),
    "nonzero padding": _break("cdf_counts", _counts_with(0, 4, 1, fix=0)),
    "sum off by one": _break("cdf_counts", _counts_with(1, 0, _good()["cdf_counts"][1, 0] + 1)),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_validate_rejects(case: str) -> None:
    tables = CdfTables(**BAD_TABLES[case])
    with pytest.raises(ModelFileError) as info:
        tables.validate("cdf_y")
    message = str(info.value)
    assert message.startswith("cdf_y: ") and "\n" not in message


def test_zero_count_with_fixed_sum_is_rejected() -> None:
    counts = _good()["cdf_counts"].copy()
    counts[1, 0] += counts[1, 1]
    counts[1, 1] = 0  # sum still 2**24
    with pytest.raises(ModelFileError, match="count below 1"):
        CdfTables(counts, _good()["sizes"], _good()["offsets"]).validate("x")


def test_tables_are_read_only_copies() -> None:
    arrays = _good()
    tables = CdfTables(**arrays)
    arrays["cdf_counts"][1, 0] = 12345  # the caller's array, not the table's
    tables.validate("copy")
    with pytest.raises(ValueError):
        tables.cdf_counts[0, 0] = 1
    assert hash(tables) == hash(tables)  # identity hash, usable as a cache key


def test_from_counts() -> None:
    tables = CdfTables.from_counts([np.array([TOTAL - 1, 1]), np.array([1, 1, TOTAL - 2])],
                                   [5, -5])
    tables.validate("packed")
    assert tables.cdf_counts.shape == (2, 3) and tables.cdf_counts[0, 2] == 0
    with pytest.raises(ValueError):
        CdfTables.from_counts([], [])
