"""Weight quantization schemes of the study (DESIGN section 4, step 1).

Every scheme maps a float weight to one of 2**bits values per group and returns the values
it stands for (``fake`` quantization): the study runs the float model with them. Groups are
the whole layer (``layer``) or one output channel (``channel``). Schemes:

- ``uniform``: symmetric grid ``k * step``, ``|k| <= 2**(bits-1) - 1``, step = range / 127;
- ``lloyd``: a non-linear codebook per group, Lloyd-Max (1-D k-means) on the group's weights,
  which puts levels where the weights are dense;
- ``log``: a companded grid, ``range * sign(u) * (2**(a |u|) - 1) / (2**a - 1)`` for ``u`` on a
  uniform grid in [-1, 1], finer near zero where most weights are.

``range`` is the group's largest magnitude, or a clip value (the clipping fine-tune sets one per
channel so that the quantization error is smallest).
"""

import numpy as np

GROUPINGS = ("layer", "channel")
SCHEMES = ("uniform", "lloyd", "log")
LOG_SHARPNESS = 4.0


def _groups(w: np.ndarray, grouping: str, out_axis: int) -> np.ndarray:
    """``w`` as (groups, values) with the output-channel axis first."""
    w = np.moveaxis(w, out_axis, 0)
    return w.reshape(1, -1) if grouping == "layer" else w.reshape(w.shape[0], -1)


def _ungroup(g: np.ndarray, shape, out_axis: int) -> np.ndarray:
    moved = list(shape)
    moved.insert(0, moved.pop(out_axis))
    return np.moveaxis(g.reshape(moved), 0, out_axis)


def uniform_levels(bits: int) -> np.ndarray:
    half = 2 ** (bits - 1) - 1
    return np.arange(-half, half + 1, dtype=np.float64) / half


def log_levels(bits: int, sharpness: float = LOG_SHARPNESS) -> np.ndarray:
    u = uniform_levels(bits)
    return np.sign(u) * (2.0 ** (sharpness * np.abs(u)) - 1) / (2.0**sharpness - 1)


def nearest(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The element of the sorted ``levels`` nearest to each value."""
    mid = (levels[1:] + levels[:-1]) / 2
    return levels[np.searchsorted(mid, values)]


def lloyd_levels(values: np.ndarray, count: int, iterations: int = 30) -> np.ndarray:
    """Lloyd-Max codebook of ``count`` levels for 1-D ``values`` (sorted result).

    Initialised at the quantiles; empty cells keep their level. Weight tensors are small
    (thousands to a few hundred thousand values), so plain iterations are cheap.
    """
    values = np.sort(values.astype(np.float64))
    if np.unique(values).size <= count:
        return np.unique(values)
    levels = np.quantile(values, (np.arange(count) + 0.5) / count)
    levels = np.unique(levels)
    for _ in range(iterations):
        mid = (levels[1:] + levels[:-1]) / 2
        cell = np.searchsorted(mid, values)
        sums = np.bincount(cell, weights=values, minlength=levels.size)
        counts = np.bincount(cell, minlength=levels.size)
        filled = counts > 0
        new = levels.copy()
        new[filled] = sums[filled] / counts[filled]
        if np.allclose(new, levels, rtol=0, atol=1e-12):
            break
        levels = np.sort(new)
    return levels


def fake_quantize(w: np.ndarray, grouping: str = "channel", scheme: str = "uniform",
                  bits: int = 8, out_axis: int = 0, clip=None) -> np.ndarray:
    """The values that ``w`` quantizes to under the scheme (same shape, float64).

    ``clip``: per-group range (array of one value per group) replacing the largest magnitude.
    """
    if grouping not in GROUPINGS or scheme not in SCHEMES:
        raise ValueError(f"unknown weight quantization {grouping}/{scheme}")
    w = np.asarray(w, dtype=np.float64)
    g = _groups(w, grouping, out_axis)
    rng = np.abs(g).max(axis=1) if clip is None else np.asarray(clip, dtype=np.float64)
    rng = np.where(rng > 0, rng, 1.0)
    out = np.empty_like(g)
    for i in range(g.shape[0]):
        row = np.clip(g[i], -rng[i], rng[i])
        if scheme == "lloyd":
            out[i] = nearest(row, lloyd_levels(row, 2**bits - 1))
        else:
            levels = uniform_levels(bits) if scheme == "uniform" else log_levels(bits)
            out[i] = nearest(row / rng[i], levels) * rng[i]
    return _ungroup(out, w.shape, out_axis)


def best_clip(w: np.ndarray, bits: int = 8, out_axis: int = 0,
              fractions=np.linspace(0.5, 1.0, 26)) -> np.ndarray:
    """Per output channel, the clip range (a fraction of its largest magnitude) that gives the
    smallest squared error of uniform quantization, clipping error included."""
    g = _groups(np.asarray(w, dtype=np.float64), "channel", out_axis)
    amax = np.abs(g).max(axis=1)
    best = amax.copy()
    best_err = np.full(g.shape[0], np.inf)
    levels = uniform_levels(bits)
    for f in fractions:
        r = np.where(amax > 0, amax * f, 1.0)
        q = nearest(np.clip(g / r[:, None], -1, 1).ravel(), levels).reshape(g.shape) * r[:, None]
        err = ((q - g) ** 2).sum(axis=1)
        better = err < best_err
        best[better], best_err[better] = r[better], err[better]
    return best
