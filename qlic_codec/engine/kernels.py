"""Numba integer kernels: the portable path, equal bit for bit to ``reference.py``.

Each public function validates dtypes, contiguity and shapes once, allocates the output, and
calls a private ``@njit`` kernel that trusts its input (no error branches inside). Kernels run
``parallel`` over output rows: every output element is computed by exactly one thread in
integer arithmetic, so the result does not depend on the thread count.

Numba widens integer products to int64 (NBEP 1); the accumulators are narrowed to int32 on
purpose, which is safe because the model loader proves that no accumulator can overflow.
"""

import numpy as np
from numba import njit, prange

# The one place that sets jit options; no fastmath anywhere in the engine.
JIT = dict(cache=True, nogil=True)
JIT_PARALLEL = dict(cache=True, nogil=True, parallel=True)


def _require(arr: np.ndarray, name: str, dtypes, ndim: int) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype not in dtypes or arr.ndim != ndim:
        raise TypeError(f"{name}: expected a {ndim}-D array of {dtypes}, got "
                        f"{getattr(arr, 'dtype', type(arr))} {getattr(arr, 'shape', '')}")
    return np.ascontiguousarray(arr)


_CODES = (np.dtype(np.int8), np.dtype(np.int16))
_I32 = (np.dtype(np.int32),)


# ---------------------------------------------------------------------------------------------
# Convolution (stride 1 or 2, K x K, padding K//2)


@njit(inline="always")
def _conv_row(xp, w, bias, stride, oy, acc):
    # For a fixed ky the (kx, ci) run is contiguous in NHWC, and so is w[co, ky]: one dot
    # product of length K*Cin per (pixel, co, ky).
    wo, cout = acc.shape
    k, cin = w.shape[1], w.shape[3]
    run = k * cin
    for ox in range(wo):
        base = ox * stride * cin
        for co in range(cout):
            s = np.int32(bias[co])
            for ky in range(k):
                xr = xp[oy * stride + ky].reshape(-1)
                wr = w[co, ky].reshape(-1)
                for i in range(run):
                    s += np.int32(np.int32(xr[base + i]) * np.int32(wr[i]))
            acc[ox, co] = s


@njit(inline="always")
def _requant_value(v, mult, shift, leaky_mult, leaky_shift, lo, hi):
    v = np.int64(v)
    if leaky_shift > 0 and v < 0:
        v = (v * leaky_mult + (np.int64(1) << (leaky_shift - 1))) >> leaky_shift
    r = (v * np.int64(mult) + (np.int64(1) << (shift - 1))) >> shift
    return min(max(r, lo), hi)


@njit(**JIT_PARALLEL)
def _conv2d_kernel(xp, w, bias, stride, out):
    ho, wo, cout = out.shape
    for oy in prange(ho):
        _conv_row(xp, w, bias, stride, oy, out[oy])


@njit(**JIT_PARALLEL)
def _conv2d_requant_kernel(xp, w, bias, stride, mult, shift, leaky_mult, leaky_shift, lo, hi,
                           out):
    ho, wo, cout = out.shape
    for oy in prange(ho):
        acc = np.empty((wo, cout), np.int32)
        _conv_row(xp, w, bias, stride, oy, acc)
        for ox in range(wo):
            for co in range(cout):
                out[oy, ox, co] = _requant_value(acc[ox, co], mult[co], shift[co], leaky_mult,
                                                 leaky_shift, lo, hi)


def _pad_for_conv(x, k, stride, pad_value):
    h, wd, cin = x.shape
    p = k // 2
    xp = np.full((h + 2 * p + stride, wd + 2 * p + stride, cin), pad_value, x.dtype)
    xp[p : p + h, p : p + wd] = x
    return xp


def _check_conv(x, w, bias):
    x = _require(x, "x", _CODES, 3)
    w = _require(w, "w", (np.dtype(np.int8),), 4)
    bias = _require(bias, "bias", _I32, 1)
    if w.shape[3] != x.shape[2] or w.shape[1] != w.shape[2] or bias.shape[0] != w.shape[0]:
        raise ValueError(f"conv shapes do not match: x {x.shape}, w {w.shape}, bias {bias.shape}")
    return x, w, bias


def conv2d(x, w, bias, stride, pad_value):
    """See ``reference.conv2d``."""
    x, w, bias = _check_conv(x, w, bias)
    h, wd, _ = x.shape
    out = np.empty((-(-h // stride), -(-wd // stride), w.shape[0]), np.int32)
    _conv2d_kernel(_pad_for_conv(x, w.shape[1], stride, pad_value), w, bias, stride, out)
    return out


def conv2d_requant(x, w, bias, stride, pad_value, mult, shift, leaky_mult, leaky_shift, lo, hi,
                   out_dtype):
    """``requantize(conv2d(...), ...)`` fused: the int32 accumulators never leave the row."""
    x, w, bias = _check_conv(x, w, bias)
    mult, shift = _check_requant(mult, shift, w.shape[0])
    h, wd, _ = x.shape
    out = np.empty((-(-h // stride), -(-wd // stride), w.shape[0]), out_dtype)
    _conv2d_requant_kernel(_pad_for_conv(x, w.shape[1], stride, pad_value), w, bias, stride,
                           mult, shift, leaky_mult, leaky_shift, lo, hi, out)
    return out


# ---------------------------------------------------------------------------------------------
# Transposed convolution (K=5, stride 2): each output phase gathers 3 or 2 taps per axis.


@njit(inline="always")
def _deconv_row(xp, w, bias, oy, acc):
    # xp has a one-pixel zero border, so the input row of tap ky is (oy + 2 - ky)//2 + 1
    # without bounds checks; only taps with ky of the parity of oy contribute.
    wo, cout = acc.shape
    k, cin = w.shape[1], w.shape[3]
    py = oy & 1
    for ox in range(wo):
        px = ox & 1
        for co in range(cout):
            s = np.int32(bias[co])
            for ky in range(py, k, 2):
                iy = (oy + 2 - ky) // 2 + 1
                for kx in range(px, k, 2):
                    ix = (ox + 2 - kx) // 2 + 1
                    xr = xp[iy, ix]
                    wr = w[co, ky, kx]
                    for ci in range(cin):
                        s += np.int32(np.int32(xr[ci]) * np.int32(wr[ci]))
            acc[ox, co] = s


@njit(**JIT_PARALLEL)
def _deconv_kernel(xp, w, bias, out):
    ho, wo, cout = out.shape
    for oy in prange(ho):
        _deconv_row(xp, w, bias, oy, out[oy])


@njit(**JIT_PARALLEL)
def _deconv_requant_kernel(xp, w, bias, mult, shift, leaky_mult, leaky_shift, lo, hi, out):
    ho, wo, cout = out.shape
    for oy in prange(ho):
        acc = np.empty((wo, cout), np.int32)
        _deconv_row(xp, w, bias, oy, acc)
        for ox in range(wo):
            for co in range(cout):
                out[oy, ox, co] = _requant_value(acc[ox, co], mult[co], shift[co], leaky_mult,
                                                 leaky_shift, lo, hi)


def _pad_for_deconv(x):
    h, wd, cin = x.shape
    xp = np.zeros((h + 2, wd + 2, cin), x.dtype)
    xp[1 : 1 + h, 1 : 1 + wd] = x
    return xp


def _check_deconv(x, w, bias):
    x, w, bias = _check_conv(x, w, bias)
    if w.shape[1] != 5:
        raise ValueError(f"transposed convolution supports K=5 only, got {w.shape[1]}")
    return x, w, bias


def conv_transpose2d(x, w, bias):
    """See ``reference.conv_transpose2d``."""
    x, w, bias = _check_deconv(x, w, bias)
    out = np.empty((2 * x.shape[0], 2 * x.shape[1], w.shape[0]), np.int32)
    _deconv_kernel(_pad_for_deconv(x), w, bias, out)
    return out


def conv_transpose2d_requant(x, w, bias, mult, shift, leaky_mult, leaky_shift, lo, hi, out_dtype):
    """``requantize(conv_transpose2d(...), ...)`` fused."""
    x, w, bias = _check_deconv(x, w, bias)
    mult, shift = _check_requant(mult, shift, w.shape[0])
    out = np.empty((2 * x.shape[0], 2 * x.shape[1], w.shape[0]), out_dtype)
    _deconv_requant_kernel(_pad_for_deconv(x), w, bias, mult, shift, leaky_mult, leaky_shift,
                           lo, hi, out)
    return out


# ---------------------------------------------------------------------------------------------
# Element-wise: requantization, GDN / inverse GDN, scale index, codebooks


def _check_requant(mult, shift, channels):
    mult = _require(mult, "mult", _I32, 1)
    shift = _require(shift, "shift", _I32, 1)
    if mult.shape[0] != channels or shift.shape[0] != channels:
        raise ValueError(f"requantization tables must have {channels} entries")
    if shift.min() < 1 or shift.max() > 62:
        raise ValueError("requantization shifts must be in 1..62")
    return mult, shift


@njit(**JIT_PARALLEL)
def _requantize_kernel(acc, mult, shift, leaky_mult, leaky_shift, lo, hi, out):
    rows, c = acc.shape
    for r in prange(rows):
        for j in range(c):
            out[r, j] = _requant_value(acc[r, j], mult[j], shift[j], leaky_mult, leaky_shift,
                                       lo, hi)


def requantize(acc, mult, shift, leaky_mult, leaky_shift, lo, hi):
    """See ``reference.requantize``; ``acc`` is int32 (..., C), the result int32."""
    acc = _require(acc, "acc", _I32, acc.ndim if isinstance(acc, np.ndarray) else 3)
    mult, shift = _check_requant(mult, shift, acc.shape[-1])
    flat = acc.reshape(-1, acc.shape[-1])
    out = np.empty(flat.shape, np.int32)
    _requantize_kernel(flat, mult, shift, leaky_mult, leaky_shift, lo, hi, out)
    return out.reshape(acc.shape)


@njit(inline="always")
def _norm_pixel(xr, gamma, beta, norm):
    c = xr.shape[0]
    for i in range(c):
        s = np.int32(beta[i])
        for j in range(c):
            s += np.int32(np.int32(gamma[i, j]) * np.int32(abs(np.int32(xr[j]))))
        norm[i] = s


@njit(**JIT_PARALLEL)
def _gdn_kernel(x, gamma, beta, mult, shift, out):
    n, c = x.shape
    for p in prange(n):
        norm = np.empty(c, np.int32)
        _norm_pixel(x[p], gamma, beta, norm)
        for i in range(c):
            num = np.int64(x[p, i]) * np.int64(mult[i])
            den = np.int64(norm[i]) << shift
            q = (2 * abs(num) + den) // (2 * den)
            if num < 0:
                q = -q
            out[p, i] = min(max(q, -127), 127)


@njit(**JIT_PARALLEL)
def _igdn_kernel(x, gamma, beta, mult, shift, out):
    n, c = x.shape
    for p in prange(n):
        norm = np.empty(c, np.int32)
        _norm_pixel(x[p], gamma, beta, norm)
        for i in range(c):
            v = np.int64(x[p, i]) * np.int64(norm[i])
            r = (v * np.int64(mult[i]) + (np.int64(1) << (shift[i] - 1))) >> shift[i]
            out[p, i] = min(max(r, -127), 127)


def _check_gdn(x, gamma, beta):
    x = _require(x, "x", (np.dtype(np.int8),), 3)
    gamma = _require(gamma, "gamma", (np.dtype(np.uint8),), 2)
    beta = _require(beta, "beta", _I32, 1)
    c = x.shape[2]
    if gamma.shape != (c, c) or beta.shape != (c,):
        raise ValueError(f"GDN shapes do not match: x {x.shape}, gamma {gamma.shape}")
    return x, gamma, beta


def gdn(x, gamma, beta, mult, shift):
    """See ``reference.gdn``; ``mult`` int64 (C,), ``shift`` a Python int."""
    x, gamma, beta = _check_gdn(x, gamma, beta)
    mult = _require(mult, "mult", (np.dtype(np.int64),), 1)
    if mult.shape[0] != x.shape[2]:
        raise ValueError(f"GDN multipliers must have {x.shape[2]} entries")
    out = np.empty(x.shape, np.int8)
    _gdn_kernel(x.reshape(-1, x.shape[2]), gamma, beta, mult, int(shift),
                out.reshape(-1, x.shape[2]))
    return out


def igdn(x, gamma, beta, mult, shift):
    """See ``reference.igdn``."""
    x, gamma, beta = _check_gdn(x, gamma, beta)
    mult, shift = _check_requant(mult, shift, x.shape[2])
    out = np.empty(x.shape, np.int8)
    _igdn_kernel(x.reshape(-1, x.shape[2]), gamma, beta, mult, shift,
                 out.reshape(-1, x.shape[2]))
    return out


@njit(**JIT_PARALLEL)
def _scale_index_kernel(acc, mult, offset, shift, levels, out):
    n, c = acc.shape
    for p in prange(n):
        for j in range(c):
            v = np.int64(acc[p, j]) * np.int64(mult[j]) + np.int64(offset[j])
            r = (v + (np.int64(1) << (shift - 1))) >> shift
            out[p, j] = min(max(r, 0), levels - 1)


def scale_index(acc, mult, offset, shift, levels):
    """See ``reference.scale_index``; ``mult``/``offset`` int64 (C,)."""
    acc = _require(acc, "acc", _I32, 3)
    mult = _require(mult, "mult", (np.dtype(np.int64),), 1)
    offset = _require(offset, "offset", (np.dtype(np.int64),), 1)
    if mult.shape[0] != acc.shape[2] or offset.shape[0] != acc.shape[2]:
        raise ValueError(f"scale index tables must have {acc.shape[2]} entries")
    out = np.empty(acc.shape, np.int32)
    _scale_index_kernel(acc.reshape(-1, acc.shape[2]), mult, offset, int(shift), int(levels),
                        out.reshape(-1, acc.shape[2]))
    return out


@njit(**JIT_PARALLEL)
def _codebook_encode_kernel(values, thresholds, out):
    n = values.shape[0]
    for p in prange(n):
        v = values[p]
        lo, hi = 0, thresholds.shape[0]
        while lo < hi:  # count of thresholds <= v, by bisection
            mid = (lo + hi) >> 1
            if thresholds[mid] <= v:
                lo = mid + 1
            else:
                hi = mid
        out[p] = lo


def codebook_encode(values, thresholds):
    """See ``reference.codebook_encode``."""
    values = _require(values, "values", _I32, np.ndim(values))
    thresholds = _require(thresholds, "thresholds", _I32, 1)
    out = np.empty(values.shape, np.uint8)
    _codebook_encode_kernel(values.reshape(-1), thresholds, out.reshape(-1))
    return out


@njit(**JIT_PARALLEL)
def _codebook_decode_kernel(codes, lut, out):
    for p in prange(codes.shape[0]):
        out[p] = lut[codes[p]]


def codebook_decode(codes, lut):
    """See ``reference.codebook_decode``."""
    codes = _require(codes, "codes", (np.dtype(np.uint8),), np.ndim(codes))
    lut = _require(lut, "lut", (np.dtype(np.int16),), 1)
    if lut.shape[0] != 256:
        raise ValueError("a codebook has 256 entries")
    out = np.empty(codes.shape, np.int16)
    _codebook_decode_kernel(codes.reshape(-1), lut, out.reshape(-1))
    return out
