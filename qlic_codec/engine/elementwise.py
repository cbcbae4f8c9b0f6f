"""Element-wise kernels (requantization, scale index) and what the other kernel modules share:
operand checks, the check of requantization tables, 64-byte aligned buffers and the padded
input buffers that convolutions read.
"""

import math

import numpy as np

from .cpu import JIT_PARALLEL  # first: the engine's start-up imports Numba
from numba import njit, prange


# ---------------------------------------------------------------------------------------------
# Operand checks: each public kernel function validates once, its jitted kernel trusts


def _require(arr: np.ndarray, name: str, dtypes, ndim: int) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype not in dtypes or arr.ndim != ndim:
        raise TypeError(f"{name}: expected a {ndim}-D array of {dtypes}, got "
                        f"{getattr(arr, 'dtype', type(arr))} {getattr(arr, 'shape', '')}")
    return np.ascontiguousarray(arr)


_CODES = (np.dtype(np.int8), np.dtype(np.int16))
_I32 = (np.dtype(np.int32),)


def _check_requant(mult, shift, channels):
    mult = _require(mult, "mult", _I32, 1)
    shift = _require(shift, "shift", _I32, 1)
    if mult.shape[0] != channels or shift.shape[0] != channels:
        raise ValueError(f"requantization tables must have {channels} entries")
    low, high = shift_range(shift)
    if low < 1 or high > 62:
        raise ValueError("requantization shifts must be in 1..62")
    return mult, shift


# Shift tables seen, by their bytes: their least and greatest shift. A model's tables come
# back on every call (two reductions were a few microseconds each, for every layer of every
# decode); a process that sees many tables forgets them now and then.
_SHIFT_RANGES = {}
_SHIFT_TABLES = 4096


def shift_range(shift) -> tuple[int, int]:
    """The least and greatest value of a shift table (not empty)."""
    key = (shift.dtype.str, shift.tobytes())
    found = _SHIFT_RANGES.get(key)
    if found is None:
        found = (int(shift.min()), int(shift.max()))
        if len(_SHIFT_RANGES) >= _SHIFT_TABLES:
            _SHIFT_RANGES.clear()
        _SHIFT_RANGES[key] = found
    return found


_NO_REQUANT = (np.zeros(1, np.int32), np.ones(1, np.int32), 0, 0, 0, 0)


def _output(out, shape, dtype) -> np.ndarray:
    """A kernel's output array: ``out`` where the caller gives one (checked: the kernels write
    it whole, row by row, and trust its layout), else a new one."""
    if out is None:
        return np.empty(shape, dtype)
    if (not isinstance(out, np.ndarray) or out.shape != tuple(shape)
            or out.dtype != np.dtype(dtype) or not out.flags.c_contiguous
            or not out.flags.writeable):
        raise ValueError(f"out: expected a writeable C-contiguous {np.dtype(dtype)} array of "
                         f"shape {tuple(shape)}, got {getattr(out, 'dtype', type(out))} "
                         f"{getattr(out, 'shape', '')}")
    return out


# ---------------------------------------------------------------------------------------------
# Element-wise: requantization, scale index


@njit(inline="always")
def _requant_value(v, mult, shift, leaky_mult, leaky_shift, lo, hi):
    v = np.int64(v)
    if leaky_shift > 0 and v < 0:
        v = (v * leaky_mult + (np.int64(1) << (leaky_shift - 1))) >> leaky_shift
    r = (v * np.int64(mult) + (np.int64(1) << (shift - 1))) >> shift
    return min(max(r, lo), hi)


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
def _requantize_lane(v, mult, shift, lo64, hi64):
    # ``_requant_value`` without the LeakyReLU, branch-free (selects, not jumps) so that LLVM
    # vectorises the loops that call it: int32 x int32 -> int64 products, per-lane shifts.
    sh = np.int64(shift)
    r = (np.int64(v) * np.int64(mult) + (np.int64(1) << (sh - 1))) >> sh
    r = lo64 if r < lo64 else r
    return hi64 if r > hi64 else r


@njit(**JIT_PARALLEL)
def _requantize_clamped_kernel(acc, clamp, mult, shift, lo, hi, out):
    rows, c = acc.shape
    lo64, hi64, cl = np.int64(lo), np.int64(hi), np.int64(clamp)
    for r in prange(rows):
        a, o = acc[r], out[r]
        for j in range(np.uint64(c)):
            v = np.int64(a[j])
            v = -cl if v < -cl else v
            o[j] = _requantize_lane(cl if v > cl else v, mult[j], shift[j], lo64, hi64)


def requantize_clamped(acc, clamp, mult, shift, lo, hi, dtype):
    """See ``reference.requantize_clamped``: one pass over ``acc`` (int32 (..., C)) in
    parallel, where the clip, the requantization and the narrowing were three serial copies
    and a kernel (about 1.6 ms of each 1920x1080 decode on two threads)."""
    acc = _require(acc, "acc", _I32, acc.ndim if isinstance(acc, np.ndarray) else 3)
    mult, shift = _check_requant(mult, shift, acc.shape[-1])
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype) if dtype in _CODES else None
    if info is None or not info.min <= lo <= hi <= info.max or not 0 <= clamp < 2**31:
        raise ValueError(f"requantize_clamped: codes {lo}..{hi} of {dtype}, clamp {clamp}")
    flat = acc.reshape(-1, acc.shape[-1])
    out = np.empty(flat.shape, dtype)
    _requantize_clamped_kernel(flat, int(clamp), mult, shift, int(lo), int(hi), out)
    return out.reshape(acc.shape)


@njit(**JIT_PARALLEL)
def _pixels_kernel(acc, width, m0, m1, m2, s0, s1, s2, out):
    # The three channels unrolled, each with its own multiplier and shift, over a flat run of
    # each row with unsigned indices: LLVM vectorises it (interleaved groups of three), where
    # the generic ``_requantize_kernel`` runs one pixel's three channels at a time.
    rows = out.shape[0]
    r0 = np.int64(1) << (s0 - 1)
    r1 = np.int64(1) << (s1 - 1)
    r2 = np.int64(1) << (s2 - 1)
    for r in prange(rows):
        a = acc[r].reshape(acc.shape[1] * 3)
        o = out[r].reshape(out.shape[1] * 3)
        for x in range(np.uint64(width)):
            i = x * np.uint64(3)
            v0 = (np.int64(a[i]) * m0 + r0) >> s0
            v1 = (np.int64(a[i + 1]) * m1 + r1) >> s1
            v2 = (np.int64(a[i + 2]) * m2 + r2) >> s2
            o[i] = min(max(v0, 0), 255)
            o[i + 1] = min(max(v1, 0), 255)
            o[i + 2] = min(max(v2, 0), 255)


def requantize_pixels(acc, mult, shift, out):
    """``requantize(acc, mult, shift, 0, 0, 0, 255)`` of the RGB output's accumulators, as
    uint8 pixels written into ``out`` (rows, width, 3); ``acc`` is int32 (rows, W, 3) with
    ``W >= width``, its columns past ``width`` ignored (the crop of a padded image)."""
    acc = _require(acc, "acc", _I32, 3)
    mult, shift = _check_requant(mult, shift, 3)
    if not (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3
            and out.flags.c_contiguous):
        raise ValueError("out: a C-contiguous uint8 (rows, width, 3) array is required")
    if acc.shape[2] != 3 or out.shape[2] != 3 or out.shape[0] != acc.shape[0] \
            or out.shape[1] > acc.shape[1]:
        raise ValueError(f"out {out.shape} does not fit the accumulators {acc.shape}")
    m = [np.int64(v) for v in mult]
    s = [np.int64(v) for v in shift]
    _pixels_kernel(acc, out.shape[1], *m, *s, out)
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
def _scale_index_sum_kernel(acc, mult, acc2, mult2, offset, shift, levels, out):
    n, c = acc.shape
    for p in prange(n):
        for j in range(c):
            v = (np.int64(acc[p, j]) * np.int64(mult[j]) + np.int64(acc2[p, j]) *
                 np.int64(mult2[j]) + np.int64(offset[j]))
            r = (v + (np.int64(1) << (shift - 1))) >> shift
            out[p, j] = min(max(r, 0), levels - 1)


def scale_index_sum(acc, mult, acc2, mult2, offset, shift, levels):
    """See ``reference.scale_index_sum``; ``mult``/``mult2``/``offset`` int64 (C,)."""
    acc = _require(acc, "acc", _I32, 3)
    acc2 = _require(acc2, "acc2", _I32, 3)
    if acc2.shape != acc.shape:
        raise ValueError(f"accumulators {acc.shape} and {acc2.shape} differ in shape")
    tables = [_require(a, name, (np.dtype(np.int64),), 1)
              for a, name in ((mult, "mult"), (mult2, "mult2"), (offset, "offset"))]
    if any(t.shape[0] != acc.shape[2] for t in tables):
        raise ValueError(f"scale index tables must have {acc.shape[2]} entries")
    out = np.empty(acc.shape, np.int32)
    c = acc.shape[2]
    _scale_index_sum_kernel(acc.reshape(-1, c), tables[0], acc2.reshape(-1, c), tables[1],
                            tables[2], int(shift), int(levels), out.reshape(-1, c))
    return out


# ---------------------------------------------------------------------------------------------
# Buffers: 64-byte aligned, and the padded inputs of the convolutions


def _padded_bias(bias, coutp):
    b = np.zeros(coutp, np.int32)
    b[: bias.shape[0]] = bias
    return b


def _aligned(size, dtype, fill=0):
    """A flat array of ``size`` elements whose data starts on a 64-byte boundary (filled with
    ``fill``, or left uninitialised if it is None). Large numpy arrays start 16 bytes past
    one, so every 64-byte vector load from them would straddle two cache lines."""
    dtype = np.dtype(dtype)
    raw = (np.empty(size + 64 // dtype.itemsize, dtype) if fill is None else
           np.full(size + 64 // dtype.itemsize, fill, dtype))
    skip = (-raw.ctypes.data % 64) // dtype.itemsize
    return raw[skip: skip + size]


def _aligned_copy(a):
    """``a`` flattened into a 64-byte aligned array (packed weights are read in vectors)."""
    out = _aligned(a.size, a.dtype)
    out[:] = a.reshape(-1)
    return out


@njit(**JIT_PARALLEL)
def _pad_kernel(x, top, left, fill, flip, xp):
    # One pass per row: the border takes ``fill``, the inside ``x ^ flip`` (flip = 128 turns
    # int8 codes viewed as uint8 into codes + 128; 0 copies).
    h, wd, c = x.shape
    rows = xp.shape[0]
    for r in prange(rows):
        dst = xp[r]
        if r < top or r >= top + h:
            dst[:, :] = fill
        else:
            src = x[r - top]
            dst[:left, :] = fill
            for i in range(wd):
                d = dst[left + i]
                v = src[i]
                for k in range(c):
                    d[k] = v[k] ^ flip
            dst[left + wd:, :] = fill


@njit(**JIT_PARALLEL)
def _pad_split_kernel(x, top, left, fill, lo, hi):
    # ``_pad_kernel`` for 16-bit codes into two planes: the low bytes (uint8) and the high
    # bytes (int8) of every code, ``x = 256 * hi + lo``.
    h, wd, c = x.shape
    rows, cols = lo.shape[0], lo.shape[1]
    flo, fhi = np.uint8(fill & 255), np.int8(fill >> 8)
    for r in prange(rows):
        dlo, dhi = lo[r].reshape(cols * c), hi[r].reshape(cols * c)
        if r < top or r >= top + h:
            dlo[:] = flo
            dhi[:] = fhi
        else:
            src = x[r - top].reshape(wd * c)
            a, b = np.uint64(left * c), np.uint64((left + wd) * c)
            dlo[:a] = flo
            dhi[:a] = fhi
            for i in range(np.uint64(wd * c)):  # unsigned: vectorised (no wraparound)
                v = np.int32(src[i])
                dlo[a + i] = np.uint8(v & 255)
                dhi[a + i] = np.int8(v >> 8)
            dlo[b:] = flo
            dhi[b:] = fhi


def _padded_split(x, shape, top, left, fill):
    """``_padded`` of 16-bit codes as two flat buffers, their low bytes (uint8) and their high
    bytes (int8), each 64-byte aligned with 64 spare zero bytes: the amx path's operands."""
    size = math.prod(shape)
    lo = _aligned(size + 64, np.uint8, None)
    hi = _aligned(size + 64, np.int8, None)
    lo[size:] = 0
    hi[size:] = 0
    _pad_split_kernel(x, top, left, int(fill), lo[:size].reshape(shape), hi[:size].reshape(shape))
    return lo, hi


def _padded(x, shape, top, left, fill, dtype):
    """``x`` (H, W, C) at rows ``top``.., columns ``left``.. of a 64-byte aligned buffer of
    ``shape`` and ``dtype`` whose other elements are ``fill``, with 64 spare bytes after it (a
    dot-product run is read in 64-byte chunks, past its end where its weights are zero).
    int8 ``x`` into a uint8 buffer is stored as unsigned codes + 128 (the VNNI inputs).
    Returns the flat buffer. Writing every element once, in parallel, is what makes this
    cheaper than filling the whole buffer and then copying ``x`` into it."""
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    flat = _aligned(size + 64 // dtype.itemsize, dtype, None)
    flat[size:] = fill
    if dtype == np.uint8:
        src, flip = x.view(np.uint8), np.uint8(128)
    else:
        src, flip = x, dtype.type(0)
    _pad_kernel(src, top, left, dtype.type(fill), flip, flat[:size].reshape(shape))
    return flat
