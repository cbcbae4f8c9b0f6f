"""BD-rate against cases that can be checked by hand."""

import math

import numpy as np
import pytest

from conftest import bench_module

_bdrate = bench_module("bdrate")
bd_rate, overlap = _bdrate.bd_rate, _bdrate.overlap

try:
    import scipy  # noqa: F401  (pchip needs it; it is in the bench extra)
    HAS_SCIPY = True
except ImportError:
    HAS_SCIPY = False
needs_scipy = pytest.mark.skipif(not HAS_SCIPY, reason="scipy is not installed")
METHODS = [pytest.param("pchip", marks=needs_scipy), "poly"]
# A codec whose rate doubles every 6 dB: log(rate) = psnr * ln(2) / 6 + c.
PSNR = np.array([28.0, 31.0, 34.0, 37.0, 40.0])
RATE = 0.05 * 2.0 ** (PSNR / 6.0)


@pytest.mark.parametrize("method", METHODS)
def test_identical_curves_are_zero(method):
    assert bd_rate(RATE, PSNR, RATE, PSNR, method) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_half_rate_everywhere_is_minus_50(method):
    assert bd_rate(RATE, PSNR, RATE / 2, PSNR, method) == pytest.approx(-50.0, abs=1e-9)
    assert bd_rate(RATE, PSNR, RATE * 2, PSNR, method) == pytest.approx(100.0, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_curve_shifted_up_6db_needs_half_the_rate(method):
    # The same rates buy 6 dB more: at equal PSNR the test curve needs 2**-1 of the rate.
    assert bd_rate(RATE, PSNR, RATE, PSNR + 6.0, method) == pytest.approx(-50.0, abs=1e-9)
    # 2 dB better: 2**(-2/6) of the rate.
    expected = 100 * (2 ** (-2 / 6) - 1)
    assert bd_rate(RATE, PSNR, RATE, PSNR + 2.0, method) == pytest.approx(expected, abs=1e-9)


@needs_scipy
def test_shifted_curve_with_different_points_pchip():
    # Test points at other PSNRs on the same line shifted by 3 dB: still exactly 2**-0.5,
    # since pchip reproduces a straight line exactly.
    psnr_t = np.array([29.5, 33.0, 35.5, 41.0])
    rate_t = 0.05 * 2.0 ** ((psnr_t - 3.0) / 6.0)
    expected = 100 * (2 ** -0.5 - 1)
    assert bd_rate(RATE, PSNR, rate_t, psnr_t) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_swapping_anchor_and_test_inverts_the_ratio(method):
    rate_t = RATE * np.array([0.7, 0.8, 0.75, 0.9, 1.1])
    psnr_t = PSNR + np.array([0.3, -0.2, 0.1, 0.0, 0.4])
    ab = bd_rate(RATE, PSNR, rate_t, psnr_t, method) / 100
    ba = bd_rate(rate_t, psnr_t, RATE, PSNR, method) / 100
    assert (1 + ab) * (1 + ba) == pytest.approx(1.0, abs=1e-12)
    assert ab < 0


@needs_scipy
def test_point_order_and_rate_unit_do_not_matter():
    perm = [3, 0, 4, 1, 2]
    rate_t, psnr_t = RATE * np.array([0.7, 0.8, 0.75, 0.9, 1.1]), PSNR + 0.5
    ref = bd_rate(RATE, PSNR, rate_t, psnr_t)
    assert bd_rate(RATE[perm] * 1000, PSNR[perm], rate_t[perm] * 1000, psnr_t[perm]) \
        == pytest.approx(ref, abs=1e-9)


@needs_scipy
def test_smooth_curve_pchip_and_poly_agree():
    # A concave log-rate curve: the two interpolations differ only slightly.
    psnr = np.linspace(28, 40, 7)
    rate = np.exp(0.02 * (psnr - 20) ** 1.5)
    rate_t = rate * np.exp(-0.1 - 0.01 * (psnr - 28))
    a, b = bd_rate(rate, psnr, rate_t, psnr, "pchip"), bd_rate(rate, psnr, rate_t, psnr, "poly")
    # mean of -0.1 - 0.01 * (psnr - 28) over [28, 40] is -0.16
    assert a == pytest.approx(100 * math.expm1(-0.16), abs=1e-6)
    assert b == pytest.approx(100 * math.expm1(-0.16), abs=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_partial_overlap(method):
    # The test curve covers 34..46 dB, the anchor 28..40: only 34..40 is compared.
    psnr_t = np.array([34.0, 37.0, 40.0, 43.0, 46.0])
    rate_t = 0.05 * 2.0 ** (psnr_t / 6.0) / 2
    assert overlap(PSNR, psnr_t) == (34.0, 40.0)
    assert bd_rate(RATE, PSNR, rate_t, psnr_t, method) == pytest.approx(-50.0, abs=1e-9)


@needs_scipy
def test_within_a_part_of_the_interval():
    # Rate ratio exp(-0.1 - 0.01 (psnr - 28)): its log falls linearly with the quality, so the
    # BD-rate over a part of the interval is that part's mean, and parts combine by length.
    psnr = np.linspace(28, 40, 13)
    rate = 0.05 * 2.0 ** (psnr / 6.0)
    rate_t = rate * np.exp(-0.1 - 0.01 * (psnr - 28))
    low = bd_rate(rate, psnr, rate_t, psnr, within=(None, 32.0))
    high = bd_rate(rate, psnr, rate_t, psnr, within=(32.0, None))
    assert low == pytest.approx(100 * math.expm1(-0.12), abs=1e-6)   # mean over 28..32
    assert high == pytest.approx(100 * math.expm1(-0.18), abs=1e-6)  # mean over 32..40
    whole = bd_rate(rate, psnr, rate_t, psnr)
    assert math.log1p(whole / 100) == pytest.approx(
        (4 * math.log1p(low / 100) + 8 * math.log1p(high / 100)) / 12, abs=1e-9)
    # Bounds beyond the shared interval are clipped to it; an empty part is nan.
    assert bd_rate(rate, psnr, rate_t, psnr, within=(0.0, 99.0)) == pytest.approx(whole)
    assert math.isnan(bd_rate(rate, psnr, rate_t, psnr, within=(41.0, None)))


@pytest.mark.parametrize("method", METHODS)
def test_no_overlap_or_too_few_points_is_nan(method):
    assert math.isnan(bd_rate(RATE, PSNR, RATE, PSNR + 20, method))
    assert math.isnan(bd_rate(RATE, PSNR, RATE[:1], PSNR[:1], method))
    assert overlap(PSNR, PSNR + 20) is None


@needs_scipy
def test_non_finite_points_are_dropped():
    rate = np.append(RATE, 5.0)
    psnr = np.append(PSNR, np.inf)  # a lossless point
    assert bd_rate(rate, psnr, RATE / 2, PSNR) == pytest.approx(-50.0, abs=1e-9)


def test_unknown_method():
    with pytest.raises(ValueError):
        bd_rate(RATE, PSNR, RATE, PSNR, "linear")
