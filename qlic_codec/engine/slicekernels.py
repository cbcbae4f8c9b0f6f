"""The element-wise steps of a channel-conditional slice (``docs/FORMAT.md`` 3.11), fused.

Around each slice's two networks the decoder turns accumulators into a mean and a table
index (steps 4 and 5), the symbols into latents (step 7, ``reconstruct``, also the plain
hyperprior's 3.8) and then into the decoded latent and its context codes (steps 8 to 10).
As numpy calls these were a dozen passes over the slice, each on one thread, with int64
temporaries between them: 12.8 ms of a 1920x1080 decode on two threads, where
the fused kernels take 5.6 ms (``benchmarks/README.md``, Speed). Here
each is one parallel pass over the rows that writes its results in place, with the same
integers as ``reference.slice_heads`` and ``reference.slice_residual``.
"""

import numpy as np

from .cpu import JIT_PARALLEL  # first: the engine's start-up imports Numba
from numba import njit, prange

from .elementwise import _check_requant, _requant_value, _requantize_lane, _require

_I32 = (np.dtype(np.int32),)
_I64 = (np.dtype(np.int64),)


@njit(**JIT_PARALLEL)
def _heads_kernel(acc_d, mean_mult, mean_shift, hyper_mean, clamp, acc_scale, scale_mult,
                  scale_mult2, scale_offset, scale_shift, levels, mean_out, index_out):
    rows, w, n = hyper_mean.shape
    half = np.int64(1) << (scale_shift - 1)
    for r in prange(rows):
        for x in range(w):
            for j in range(n):
                d = _requant_value(acc_d[r, x, j], mean_mult[j], mean_shift[j], 0, 0,
                                   -clamp, clamp)
                mean_out[r, x, j] = min(max(np.int64(hyper_mean[r, x, j]) + d, -clamp), clamp)
                v = (np.int64(acc_scale[r, x, j]) * scale_mult[j]
                     + np.int64(acc_d[r, x, n + j]) * scale_mult2[j] + scale_offset[j])
                index_out[r, x, j] = min(max((v + half) >> scale_shift, 0), levels - 1)


def slice_heads(acc_d, mean_mult, mean_shift, hyper_mean, clamp, acc_scale, scale_mult,
                scale_mult2, scale_offset, scale_shift, levels, mean_out, index_out):
    """``reference.slice_heads`` written into ``mean_out`` (int32) and ``index_out`` (any
    integer type that holds ``levels - 1``), both (rows, w, n); ``acc_d`` is (rows, w, 2n)."""
    hyper_mean = _require(hyper_mean, "hyper_mean", _I32, 3)
    acc_d = _require(acc_d, "acc_d", _I32, 3)
    acc_scale = _require(acc_scale, "acc_scale", _I32, 3)
    n = hyper_mean.shape[2]
    if acc_d.shape != hyper_mean.shape[:2] + (2 * n,) or acc_scale.shape != hyper_mean.shape \
            or mean_out.shape != hyper_mean.shape or index_out.shape != hyper_mean.shape:
        raise ValueError("slice heads: operands differ in shape")
    if mean_out.dtype != np.int32 or index_out.dtype.kind not in "iu":
        raise TypeError("slice heads: int32 means and integer indexes")
    if levels - 1 > np.iinfo(index_out.dtype).max:
        raise ValueError(f"slice heads: indexes up to {levels - 1} do not fit {index_out.dtype}")
    mean_mult, mean_shift = _check_requant(mean_mult, mean_shift, n)
    tables = [_require(t, name, _I64, 1) for t, name in ((scale_mult, "scale_mult"),
                                                         (scale_mult2, "scale_mult2"),
                                                         (scale_offset, "scale_offset"))]
    if any(t.shape[0] != n for t in tables):
        raise ValueError(f"scale index tables must have {n} entries")
    _heads_kernel(acc_d, mean_mult, mean_shift, hyper_mean, int(clamp), acc_scale, *tables,
                  int(scale_shift), int(levels), mean_out, index_out)


@njit(**JIT_PARALLEL)
def _residual_kernel(acc_r, lrp_mult, lrp_shift, y_g_hat, lut, clamp, ctx_mult, ctx_shift,
                     ctx_max, dec_out, ctx_out):
    rows, w, n = acc_r.shape
    for r in prange(rows):
        for x in range(w):
            for j in range(n):
                code = _requant_value(acc_r[r, x, j], lrp_mult[j], lrp_shift[j], 0, 0, -127, 127)
                d = min(max(np.int64(y_g_hat[r, x, j]) + lut[code + 127], -clamp), clamp)
                dec_out[r, x, j] = d
                ctx_out[r, x, j] = _requant_value(d, ctx_mult[j], ctx_shift[j], 0, 0, -ctx_max,
                                                  ctx_max)


def slice_residual(acc_r, lrp_mult, lrp_shift, y_g_hat, lut, clamp, ctx_mult, ctx_shift,
                   ctx_max, dec_out, ctx_out):
    """``reference.slice_residual`` written into ``dec_out`` (int32) and ``ctx_out`` (int8
    or int16), both (rows, w, n) and possibly views into wider arrays (a slice's channels of
    the whole latent)."""
    acc_r = _require(acc_r, "acc_r", _I32, 3)
    y_g_hat = _require(y_g_hat, "y_g_hat", _I32, 3)
    lut = _require(lut, "lut", _I64, 1)
    n = acc_r.shape[2]
    if y_g_hat.shape != acc_r.shape or dec_out.shape != acc_r.shape \
            or ctx_out.shape != acc_r.shape:
        raise ValueError("slice residual: operands differ in shape")
    if lut.shape[0] != 255:
        raise ValueError("slice residual: the residual table has 255 entries")
    if dec_out.dtype != np.int32 or ctx_out.dtype not in (np.int8, np.int16):
        raise TypeError("slice residual: int32 latents and int8 or int16 context codes")
    if not 127 <= ctx_max <= np.iinfo(ctx_out.dtype).max:
        raise ValueError(f"slice residual: context codes up to {ctx_max} do not fit "
                         f"{ctx_out.dtype}")
    lrp_mult, lrp_shift = _check_requant(lrp_mult, lrp_shift, n)
    ctx_mult, ctx_shift = _check_requant(ctx_mult, ctx_shift, n)
    _residual_kernel(acc_r, lrp_mult, lrp_shift, y_g_hat, lut, int(clamp), ctx_mult, ctx_shift,
                     int(ctx_max), dec_out, ctx_out)


_RECONSTRUCT_CHUNK = 1 << 14  # latents a thread takes at a time


@njit(**JIT_PARALLEL)
def _reconstruct_kernel(symbols, mean_g, mean_bits, clamp, out):
    n = symbols.size
    for c in prange(-(-n // _RECONSTRUCT_CHUNK)):
        for i in range(c * _RECONSTRUCT_CHUNK, min(n, (c + 1) * _RECONSTRUCT_CHUNK)):
            v = (np.int64(symbols[i]) << mean_bits) + np.int64(mean_g[i])
            out[i] = min(max(v, -clamp), clamp)


def reconstruct(symbols, mean_g, mean_bits, clamp):
    """See ``reference.reconstruct``; arrays of any shape, the same for both. One parallel
    pass (as numpy, four passes with int64 temporaries, it was a serial 2.9 ms of a
    1920x1080 decode on one thread)."""
    for name, a in (("symbols", symbols), ("mean_g", mean_g)):
        if not isinstance(a, np.ndarray) or a.dtype != np.int32:
            raise TypeError(f"{name}: expected an int32 array, got "
                            f"{getattr(a, 'dtype', type(a))}")
    if symbols.shape != mean_g.shape:
        raise ValueError(f"symbols {symbols.shape} and means {mean_g.shape} differ in shape")
    mean_bits, clamp = int(mean_bits), int(clamp)
    if not 0 <= mean_bits <= 8 or not 0 <= clamp < 2**31:
        raise ValueError(f"mean_bits {mean_bits} or clamp {clamp} out of range")
    out = np.empty(symbols.shape, np.int32)
    _reconstruct_kernel(np.ascontiguousarray(symbols).reshape(-1),
                        np.ascontiguousarray(mean_g).reshape(-1), np.int64(mean_bits),
                        np.int64(clamp), out.reshape(-1))
    return out


@njit(**JIT_PARALLEL)
def _slice_inputs_kernel(acc, a, n, mean_mult, mean_shift, clamp, hyper_mult, hyper_shift,
                         codes, mean, scale, r0):
    rows, w, c2 = acc.shape
    # Unsigned indices over flat rows (no negative-index wraparound), as ``copy_channels``.
    ua, un, uc2 = np.uint64(a), np.uint64(n), np.uint64(c2)
    um = uc2 // np.uint64(2)
    lo_m, hi_m = np.int64(-clamp), np.int64(clamp)
    lo_c, hi_c = np.int64(-127), np.int64(127)
    hm_mean, hs_mean = hyper_mult[a:a + n], hyper_shift[a:a + n]
    hm_scale, hs_scale = hyper_mult[c2 // 2 + a:c2 // 2 + a + n], \
        hyper_shift[c2 // 2 + a:c2 // 2 + a + n]
    for r in prange(rows):
        src = acc[r].reshape(w * c2)
        co = codes[r0 + r].reshape(w * 2 * n)
        me = mean[r0 + r].reshape(w * n)
        sc = scale[r0 + r].reshape(w * n)
        for x in range(np.uint64(w)):
            s0 = x * uc2 + ua
            s1 = s0 + um
            o = x * un
            oc = o + o
            for j in range(un):
                v = src[s0 + j]
                me[o + j] = _requantize_lane(v, mean_mult[j], mean_shift[j], lo_m, hi_m)
                co[oc + j] = _requantize_lane(v, hm_mean[j], hs_mean[j], lo_c, hi_c)
            for j in range(un):
                u = src[s1 + j]
                co[oc + un + j] = _requantize_lane(u, hm_scale[j], hs_scale[j], lo_c, hi_c)
                sc[o + j] = u


def slice_inputs(acc, a, n, mean_mult, mean_shift, clamp, hyper_mult, hyper_shift, codes,
                 mean, scale, r0):
    """``reference.slice_inputs`` written into rows ``r0 ..`` of ``codes`` (int8, (R, w,
    2n)), ``mean`` and ``scale`` (int32, (R, w, n)): one parallel pass per slice over h_s's
    accumulators ``acc`` (rows, w, 2M), where two requantizations of the whole, a copy of
    its means and four gathers per slice ran."""
    acc = _require(acc, "acc", _I32, 3)
    rows, w, c2 = acc.shape
    m = c2 // 2
    if c2 % 2 or not (0 <= a and 1 <= n and a + n <= m):
        raise ValueError(f"slice inputs: channels {a}..{a + n - 1} of {acc.shape}")
    for arr, dtype, c in ((codes, np.int8, 2 * n), (mean, np.int32, n), (scale, np.int32, n)):
        if not (isinstance(arr, np.ndarray) and arr.dtype == dtype and arr.ndim == 3
                and arr.flags.c_contiguous and arr.shape[1:] == (w, c)
                and 0 <= r0 <= r0 + rows <= arr.shape[0]):
            raise ValueError(f"slice inputs: {getattr(arr, 'shape', arr)} does not take rows "
                             f"{r0}..{r0 + rows - 1} of ({w}, {c}) {np.dtype(dtype)}")
    mean_mult, mean_shift = _check_requant(mean_mult, mean_shift, n)
    hyper_mult, hyper_shift = _check_requant(hyper_mult, hyper_shift, c2)
    if not 0 <= clamp < 2**31:
        raise ValueError(f"slice inputs: clamp {clamp}")
    if rows and w:
        _slice_inputs_kernel(acc, int(a), int(n), mean_mult, mean_shift, int(clamp),
                             hyper_mult, hyper_shift, codes, mean, scale, int(r0))


@njit(**JIT_PARALLEL)
def _copy_channels_kernel(src, c0, n, dst, r0, d0):
    rows, w, cs = src.shape
    cd = dst.shape[2]
    for r in prange(rows):
        s = src[r].reshape(w * cs)
        d = dst[r0 + r].reshape(w * cd)
        # Unsigned indices: no negative-index wraparound, so that the copy is vectorised.
        for x in range(np.uint64(w)):
            so = x * np.uint64(cs) + np.uint64(c0)
            do = x * np.uint64(cd) + np.uint64(d0)
            for c in range(np.uint64(n)):
                d[do + c] = s[so + c]


def copy_channels(src, c0, n, dst, r0, d0):
    """``dst[r0:r0 + rows, :, d0:d0 + n] = src[:, :, c0:c0 + n]`` for C-contiguous ``src``
    (rows, W, Cs) and ``dst`` (R, W, Cd), in parallel over the rows: the slices' gathers of
    channels (what h_s predicts for each slice, the support of its networks), which as numpy
    slice assignments and concatenations ran on one thread. ``dst``'s type must hold every
    value of ``src``'s, or the values themselves must fit (codes requantized into int32
    going to int8): the caller's contract, as for a numpy assignment."""
    if not (src.flags.c_contiguous and dst.flags.c_contiguous) or src.ndim != 3 or dst.ndim != 3:
        raise ValueError("copy_channels needs C-contiguous 3-D arrays")
    rows, w, cs = src.shape
    if (w != dst.shape[1] or not 0 <= c0 <= c0 + n <= cs or not 0 <= d0 <= d0 + n <= dst.shape[2]
            or not 0 <= r0 <= r0 + rows <= dst.shape[0]):
        raise ValueError(f"copy_channels: {src.shape} [{c0}:{c0 + n}] does not fit {dst.shape} "
                         f"at row {r0}, channel {d0}")
    if rows and w and n:
        _copy_channels_kernel(src, c0, n, dst, r0, d0)
    return dst
