"""Fixed-point arithmetic shared by the exporter and the loader.

Multipliers: a positive real factor ``r`` is represented as ``mult * 2**-shift`` with
``mult < max_mult`` and as many significant bits as fit; the engine applies it with round
half up (see ``reference.py``).

Overflow: an int32 accumulator of a convolution is ``bias + sum w * x``. For every output
channel the exporter and the loader check ``max|x| * sum|w| + |bias| < 2**31`` (for the
transposed convolution, ``sum|w|`` over the taps of the worst sub-pixel phase), so no
accumulator can wrap, whatever the input codes are. Products scaled by a multiplier are
evaluated in int64 and are bounded below ``2**62`` the same way.
"""

import numpy as np

INT32_LIMIT = 2**31
INT64_PRODUCT_LIMIT = 2**62


def multiplier_from_real(real, max_mult: int = 2**31 - 1, max_shift: int = 62):
    """Fixed-point ``(mult, shift)`` per element of ``real`` (>= 0) with ``mult <= max_mult``.

    Returns:
        (mult int64 array, shift int32 array); ``shift`` is in ``1..max_shift``.
    """
    real = np.asarray(real, dtype=np.float64)
    if np.any(real < 0) or not np.all(np.isfinite(real)):
        raise ValueError("multipliers must be finite and non-negative")
    mult = np.zeros(real.shape, np.int64)
    shift = np.ones(real.shape, np.int32)
    top = int(max_mult).bit_length() - 1  # mult in [2**top, 2**(top+1))
    for idx in np.ndindex(real.shape):
        r = float(real[idx])
        if r == 0.0:
            continue
        s = top - int(np.floor(np.log2(r)))
        s = min(max(s, 1), max_shift)
        m = int(round(r * 2.0**s))
        while m > max_mult and s > 1:
            s -= 1
            m = int(round(r * 2.0**s))
        if m > max_mult:
            raise ValueError(f"factor {r} too large for a fixed-point multiplier")
        mult[idx], shift[idx] = m, s
    return mult, shift


def _abs_tap_sums(w: np.ndarray) -> np.ndarray:
    """``sum|w|`` over the input channels of each (Cout, K, K) tap, int64. int8 weights are
    widened to int16 only (|-128| needs it): a model's load checks every layer this way, and
    int64 copies of the whole weights made it several times slower."""
    wide = np.int16 if w.dtype.itemsize == 1 and w.dtype.kind in "iu" else np.int64
    return np.abs(w.astype(wide)).sum(axis=3, dtype=np.int64)


def conv_weight_l1(w: np.ndarray) -> np.ndarray:
    """``sum|w|`` per output channel of a (Cout, K, K, Cin) convolution, int64."""
    return _abs_tap_sums(w).reshape(w.shape[0], -1).sum(axis=1)


def deconv_weight_l1(w: np.ndarray) -> np.ndarray:
    """Worst sub-pixel phase of ``sum|w|`` per output channel of a stride-2 transposed conv."""
    taps = _abs_tap_sums(w)
    phases = [taps[:, py::2, px::2].reshape(w.shape[0], -1).sum(axis=1)
              for py in range(2) for px in range(2)]
    return np.max(np.stack(phases), axis=0)


def accumulator_bound(in_max: int, weight_l1: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Largest possible ``|accumulator|`` per output channel (exact integers)."""
    return int(in_max) * weight_l1.astype(object) + np.abs(bias.astype(np.int64)).astype(object)


def max_input_for(weight_l1: np.ndarray, bias_max: int, margin: float = 0.98) -> int:
    """Largest input magnitude that keeps every accumulator below 2**31 (with a margin)."""
    worst = int(np.max(weight_l1)) if weight_l1.size else 1
    return max(1, int((INT32_LIMIT * margin - bias_max) // max(worst, 1)))
