"""Bjontegaard delta rate (BD-rate) between two rate-distortion curves.

``bd_rate(anchor_rate, anchor_metric, test_rate, test_metric)`` is the average relative
difference in rate of the test curve against the anchor at equal quality, in percent:
negative means the test codec needs fewer bits for the same quality.

Each curve is turned into log-rate as a function of the quality metric, interpolated, and
integrated over the interval of quality both curves cover; the mean difference of the two
integrals is the average log-rate ratio, and ``100 * (exp(mean) - 1)`` the BD-rate.

Two interpolations:

- ``"pchip"`` (default): piecewise cubic Hermite (monotone) interpolation through the points,
  as in the VCEG/JVET reference spreadsheets since VCEG-AL22 (Bjontegaard 2008); it follows
  the points exactly and does not oscillate.
- ``"poly"``: a least-squares cubic polynomial (Bjontegaard, VCEG-M33, 2001), which needs
  four points or more.

The value is ``nan`` when the curves do not overlap in quality or have too few points.
"""

import math

import numpy as np


def _clean(rate, metric):
    """Points with a finite positive rate and finite metric, sorted by metric, with points
    of equal metric merged (their log-rates averaged) so the metric is strictly increasing."""
    rate = np.asarray(rate, dtype=np.float64).ravel()
    metric = np.asarray(metric, dtype=np.float64).ravel()
    if rate.shape != metric.shape:
        raise ValueError("rate and metric need the same number of points")
    keep = np.isfinite(rate) & np.isfinite(metric) & (rate > 0)
    log_rate, metric = np.log(rate[keep]), metric[keep]
    order = np.argsort(metric, kind="stable")
    log_rate, metric = log_rate[order], metric[order]
    xs, index = np.unique(metric, return_inverse=True)
    ys = np.bincount(index, weights=log_rate) / np.bincount(index)
    return xs, ys


def _integral(xs, ys, lo, hi, method):
    if method == "pchip":
        from scipy.interpolate import PchipInterpolator
        return float(PchipInterpolator(xs, ys).integrate(lo, hi))
    if method == "poly":
        poly = np.polyint(np.polyfit(xs, ys, 3))
        return float(np.polyval(poly, hi) - np.polyval(poly, lo))
    raise ValueError(f"unknown BD-rate method '{method}' (pchip or poly)")


def bd_rate(anchor_rate, anchor_metric, test_rate, test_metric, method: str = "pchip",
            within: tuple | None = None) -> float:
    """BD-rate of ``test`` against ``anchor`` in percent (negative: ``test`` needs fewer bits).

    Args:
        anchor_rate, test_rate: rates (bpp, bytes, any unit shared by both), one per point.
        anchor_metric, test_metric: the quality of each point, higher is better (PSNR in dB,
            MS-SSIM in dB, ...).
        method: ``"pchip"`` or ``"poly"``.
        within: ``(lo, hi)``: only that part of the quality interval the curves share (either
            bound may be None), to see where along the curve the rates differ.
    """
    xa, ya = _clean(anchor_rate, anchor_metric)
    xt, yt = _clean(test_rate, test_metric)
    need = 4 if method == "poly" else 2
    if len(xa) < need or len(xt) < need:
        return math.nan
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    if within is not None:
        lo = lo if within[0] is None else max(lo, within[0])
        hi = hi if within[1] is None else min(hi, within[1])
    if not hi > lo:
        return math.nan
    mean_diff = (_integral(xt, yt, lo, hi, method) - _integral(xa, ya, lo, hi, method)) / (hi - lo)
    return 100.0 * math.expm1(mean_diff)


def overlap(anchor_metric, test_metric):
    """The quality interval both curves cover, ``(lo, hi)``, or None."""
    a = np.asarray(anchor_metric, dtype=np.float64)
    t = np.asarray(test_metric, dtype=np.float64)
    a, t = a[np.isfinite(a)], t[np.isfinite(t)]
    if not len(a) or not len(t):
        return None
    lo, hi = max(a.min(), t.min()), min(a.max(), t.max())
    return (float(lo), float(hi)) if hi > lo else None
