"""The specification of every integer kernel: plain NumPy, int64 throughout, slow and obvious.

Each function here has a twin of the same name and signature in ``kernels.py``; tests assert
that the two are equal bit for bit. Tensors are NHWC without the batch axis: ``(H, W, C)``.
Weights are ``(Cout, K, K, Cin)``.

Rounding rule (the only one in the engine): a fixed-point product ``v * mult`` is scaled down
by ``2**shift`` with *round half up*, ``(v * mult + 2**(shift - 1)) >> shift``, where ``>>`` is
an arithmetic (flooring) shift. Divisions (GDN) round half away from zero.
"""

import numpy as np


def _rshift_round(v: np.ndarray, shift) -> np.ndarray:
    shift = np.asarray(shift, dtype=np.int64)
    return (v + (np.int64(1) << (shift - 1))) >> shift


def conv2d_shape(shape, stride, cout) -> tuple:
    """The output shape of ``conv2d`` on an input of ``shape`` (H, W, Cin)."""
    h, wd = shape[0], shape[1]
    return (-(-h // stride), -(-wd // stride), cout)


def conv_transpose2d_shape(shape, cout) -> tuple:
    """The output shape of ``conv_transpose2d`` on an input of ``shape`` (H, W, Cin)."""
    return (2 * shape[0], 2 * shape[1], cout)


def conv2d(x, w, bias, stride, pad_value):
    """Convolution, zero ('pad_value') padding of K//2, output ``ceil(H/stride)`` rows.

    Args:
        x: int8 or int16 codes (H, W, Cin).
        w: int8 weights (Cout, K, K, Cin).
        bias: int32 (Cout,).
        stride: 1 or 2.
        pad_value: code of the padding (0, or -128 for the first layer whose codes are
            ``pixel - 128``: padding a zero pixel).

    Returns:
        int32 accumulators (ceil(H/stride), ceil(W/stride), Cout).
    """
    h, wd, _ = x.shape
    cout, k = w.shape[0], w.shape[1]
    p = k // 2
    ho, wo, _ = conv2d_shape(x.shape, stride, cout)
    xp = np.full((h + 2 * p + stride, wd + 2 * p + stride, x.shape[2]), pad_value, np.int64)
    xp[p : p + h, p : p + wd] = x
    out = np.zeros((ho, wo, cout), np.int64) + bias.astype(np.int64)
    w64 = w.astype(np.int64)
    for ky in range(k):
        for kx in range(k):
            patch = xp[ky : ky + stride * ho : stride, kx : kx + stride * wo : stride]
            out += patch @ w64[:, ky, kx, :].T
    return out.astype(np.int32)


def conv_transpose2d(x, w, bias):
    """Transposed convolution, stride 2, K=5, padding 2, output padding 1: (2H, 2W, Cout).

    ``out[oy, ox] = bias + sum x[iy, ix] . w[:, ky, kx]`` over ``oy = 2*iy - 2 + ky`` and
    ``ox = 2*ix - 2 + kx``; ``w[co, ky, kx, ci]`` is PyTorch's ``weight[ci, co, ky, kx]``.
    """
    h, wd, _ = x.shape
    cout, k = w.shape[0], w.shape[1]
    full = np.zeros((2 * h + k, 2 * wd + k, cout), np.int64)
    x64, w64 = x.astype(np.int64), w.astype(np.int64)
    for ky in range(k):
        for kx in range(k):
            full[ky : ky + 2 * h : 2, kx : kx + 2 * wd : 2] += x64 @ w64[:, ky, kx, :].T
    p = k // 2
    return (full[p : p + 2 * h, p : p + 2 * wd] + bias.astype(np.int64)).astype(np.int32)


def requantize(acc, mult, shift, leaky_mult, leaky_shift, lo, hi):
    """Per-channel fixed-point rescale of int32 accumulators to the next layer's codes.

    ``v = acc``; if ``leaky_shift > 0`` negative values become ``round(v * leaky_mult /
    2**leaky_shift)`` (LeakyReLU); then ``clamp(round(v * mult[c] / 2**shift[c]), lo, hi)``.

    Returns:
        int32 array of the shape of ``acc`` (the caller narrows to int8/int16).
    """
    v = acc.astype(np.int64)
    if leaky_shift > 0:
        v = np.where(v < 0, _rshift_round(v * leaky_mult, leaky_shift), v)
    out = _rshift_round(v * mult.astype(np.int64), shift.astype(np.int64))
    return np.clip(out, lo, hi).astype(np.int32)


def requantize_clamped(acc, clamp, mult, shift, lo, hi, dtype):
    """``requantize(clip(acc, -clamp, clamp), mult, shift, 0, 0, lo, hi)`` as ``dtype`` (int8
    or int16, which must hold ``lo .. hi``): the codes the synthesis reads of ``y``."""
    v = np.clip(acc, -clamp, clamp).astype(np.int32)
    return requantize(v, mult, shift, 0, 0, lo, hi).astype(dtype)


def _norm(x, gamma, beta):
    return beta.astype(np.int64) + np.abs(x.astype(np.int64)) @ gamma.astype(np.int64).T


# The widest activation codes (12 bits, as int16): what a GDN reads, or writes for a
# convolution to read. The norm then stays below 2**27 and ``x * norm`` below 2**38, leaving
# the inverse GDN's multiplier 24 bits in int64.
WIDE_CODE_MAX = 2047
# The output ranges a GDN may write: 8-bit codes, or 9- to 12-bit ones as int16.
GDN_OUT_MAX = (127, 255, 511, 1023, WIDE_CODE_MAX)


def _out_dtype(out_max):
    if out_max not in GDN_OUT_MAX:
        raise ValueError(f"GDN output range must be one of {GDN_OUT_MAX}, got {out_max}")
    return np.int8 if out_max == 127 else np.int16


def gdn(x, gamma, beta, mult, shift, out_max=127):
    """Simplified GDN on codes: ``round(x * mult[c] / (norm[c] * 2**shift))`` clamped to
    ``+-out_max`` (int8 codes for 127, int16 for the wider ranges of ``GDN_OUT_MAX``).

    ``norm[c] = beta[c] + sum_j gamma[c, j] * |x[j]|`` (``gamma`` uint8, ``beta`` int32 >= 1);
    the quotient rounds half away from zero. ``x`` is int8 codes, or int16 codes in
    ``[-32767, 32767]`` (wider codes for the tensors a GDN reads) as long as the norm fits int32.
    """
    dtype = _out_dtype(out_max)
    num = x.astype(np.int64) * mult.astype(np.int64)
    den = _norm(x, gamma, beta) << np.int64(shift)
    q = (2 * np.abs(num) + den) // (2 * den)
    return np.clip(np.sign(num) * q, -out_max, out_max).astype(dtype)


def igdn(x, gamma, beta, mult, shift, out_max=127):
    """Inverse simplified GDN on codes: ``requantize(x * norm, mult, shift)`` to ``+-out_max``.

    ``x`` and ``out_max`` as for ``gdn``; ``x * norm * mult`` must stay below 2**62 (the
    loader's bound).
    """
    dtype = _out_dtype(out_max)
    v = x.astype(np.int64) * _norm(x, gamma, beta)
    out = _rshift_round(v * mult.astype(np.int64), shift.astype(np.int64))
    return np.clip(out, -out_max, out_max).astype(dtype)


def scale_index(acc, mult, offset, shift, levels):
    """Index of the entropy table for each latent: ``clamp(round((acc*mult[c] + offset[c]) /
    2**shift), 0, levels - 1)``, an affine map of the predicted log-scale."""
    v = acc.astype(np.int64) * mult.astype(np.int64) + offset.astype(np.int64)
    return np.clip(_rshift_round(v, shift), 0, levels - 1).astype(np.int32)


def scale_index_sum(acc, mult, acc2, mult2, offset, shift, levels):
    """``scale_index`` of a log-scale that is the sum of two predictions (a channel-conditional
    model adds its slice network's correction to the hyper-synthesis'): ``clamp(round((acc*mult[c]
    + acc2*mult2[c] + offset[c]) / 2**shift), 0, levels - 1)``. With ``|acc|, |acc2| < 2**31``,
    ``|mult| <= 2**31``, ``|mult2| <= 2**30`` and ``|offset| <= 2**60`` the sum fits in int64."""
    v = (acc.astype(np.int64) * mult.astype(np.int64) + acc2.astype(np.int64) *
         mult2.astype(np.int64) + offset.astype(np.int64))
    return np.clip(_rshift_round(v, shift), 0, levels - 1).astype(np.int32)


def reconstruct(symbols, mean_g, mean_bits, clamp):
    """Fixed-point latents from their symbols (FORMAT 3.8 and 3.11 step 7): ``clamp(symbol *
    2**mean_bits + mean_g, -clamp, clamp)``, int32, in int64 arithmetic (symbols may be any
    int32 a stream gives)."""
    v = (symbols.astype(np.int64) << mean_bits) + mean_g.astype(np.int64)
    return np.clip(v, -clamp, clamp).astype(np.int32)


def slice_inputs(acc, a, n, mean_mult, mean_shift, clamp, hyper_mult, hyper_shift, codes,
                 mean, scale, r0):
    """What h_s predicts for the slice of channels ``a .. a + n - 1`` (FORMAT 3.11 steps 1
    and 2), from its accumulators ``acc`` (rows, w, 2M: means, then log-scales), written into
    rows ``r0 ..`` of ``codes`` (int8: the hyper codes ``requantize(acc, hyper_mult,
    hyper_shift)`` of the slice's mean channels, then of its log-scale channels), ``mean``
    (``requantize(acc[..., a:a+n], mean_mult, mean_shift)`` clamped to ``+-clamp``) and
    ``scale`` (the log-scale accumulators as they are)."""
    m = acc.shape[-1] // 2
    rows = slice(r0, r0 + acc.shape[0])
    hyper = requantize(acc, hyper_mult, hyper_shift, 0, 0, -127, 127)
    codes[rows] = np.concatenate([hyper[..., a:a + n], hyper[..., m + a:m + a + n]], axis=-1)
    mean[rows] = requantize(acc[..., a:a + n], mean_mult, mean_shift, 0, 0, -clamp, clamp)
    scale[rows] = acc[..., m + a:m + a + n]


def slice_heads(acc_d, mean_mult, mean_shift, hyper_mean, clamp, acc_scale, scale_mult,
                scale_mult2, scale_offset, scale_shift, levels, mean_out, index_out):
    """A slice's mean and table index (FORMAT 3.11 steps 4 and 5) from its parameter
    network's accumulators ``acc_d`` (..., 2n), written into ``mean_out`` (int32) and
    ``index_out``: ``clamp(hyper_mean + requantize(acc_d[:n]))``, and ``scale_index_sum`` of
    h_s's scale accumulators with ``acc_d[n:]``."""
    n = hyper_mean.shape[-1]
    d_mean = requantize(acc_d[..., :n], mean_mult, mean_shift, 0, 0, -clamp, clamp)
    mean_out[...] = np.clip(hyper_mean.astype(np.int64) + d_mean, -clamp, clamp)
    index_out[...] = scale_index_sum(acc_scale, scale_mult, acc_d[..., n:], scale_mult2,
                                     scale_offset, scale_shift, levels)


def slice_residual(acc_r, lrp_mult, lrp_shift, y_g_hat, lut, clamp, ctx_mult, ctx_shift,
                   ctx_max, dec_out, ctx_out):
    """A slice's decoded latent and context codes (FORMAT 3.11 steps 8 to 10) from its
    residual network's accumulators, written into ``dec_out`` (int32) and ``ctx_out``: the
    int8 code ``r``, ``y_g_dec = clamp(y_g_hat + lut[r + 127])``, and ``requantize(y_g_dec)``
    into ``-ctx_max .. ctx_max``."""
    code = requantize(acc_r, lrp_mult, lrp_shift, 0, 0, -127, 127)
    dec = np.clip(y_g_hat.astype(np.int64) + lut.astype(np.int64)[code + 127], -clamp, clamp)
    dec_out[...] = dec
    ctx_out[...] = requantize(dec.astype(np.int32), ctx_mult, ctx_shift, 0, 0, -ctx_max,
                              ctx_max)
