"""The integer layers (FORMAT.md section 3): exact int64 arithmetic on (H, W, C) arrays.

Written for clarity over speed, but vectorised (im2col and one matrix product per layer) so
that a small image decodes in seconds.
"""

import numpy as np


def round_shift(v, shift):
    """``(v + 2**(shift-1)) >> shift``: round half up, arithmetic shift (FORMAT.md 3.1)."""
    shift = np.asarray(shift, np.int64)
    return (v + (np.int64(1) << (shift - 1))) >> shift


def requantize(acc, mult, shift, lo, hi, leaky=None):
    """FORMAT.md 3.2; ``leaky`` is (leaky_mult, leaky_shift) or None."""
    v = np.asarray(acc, np.int64)
    if leaky is not None:
        v = np.where(v < 0, round_shift(v * leaky[0], leaky[1]), v)
    return np.clip(round_shift(v * np.asarray(mult, np.int64), shift), lo, hi)


def conv(x, weight, bias, stride, pad_value):
    """FORMAT.md 3.3: K x K convolution, K//2 rows and columns of ``pad_value`` around the
    input, output ``ceil(H / stride) x ceil(W / stride)``."""
    h, w, cin = x.shape
    cout, k = weight.shape[0], weight.shape[1]
    p = k // 2
    ho, wo = -(-h // stride), -(-w // stride)
    padded = np.full((h + 2 * p, w + 2 * p, cin), pad_value, np.int64)
    padded[p:p + h, p:p + w] = x
    # cols[oy, ox, ky, kx, ci] = padded[oy*stride + ky, ox*stride + kx, ci]
    cols = np.empty((ho, wo, k, k, cin), np.int64)
    for ky in range(k):
        for kx in range(k):
            cols[:, :, ky, kx] = padded[ky:ky + stride * (ho - 1) + 1:stride,
                                        kx:kx + stride * (wo - 1) + 1:stride]
    out = cols.reshape(ho * wo, -1) @ weight.reshape(cout, -1).astype(np.int64).T
    return out.reshape(ho, wo, cout) + bias.astype(np.int64)


def deconv(x, weight, bias):
    """FORMAT.md 3.4: 5x5 stride-2 transposed convolution, output (2H, 2W):
    ``out[oy, ox] = bias + sum x[iy, ix] . weight[:, ky, kx]`` over ``oy = 2 iy - 2 + ky``,
    ``ox = 2 ix - 2 + kx``."""
    h, w, cin = x.shape
    cout, k = weight.shape[0], weight.shape[1]
    # Every input pixel's contribution to its 5x5 block of outputs, then scattered.
    contrib = x.reshape(h * w, cin).astype(np.int64) @ \
        weight.transpose(3, 1, 2, 0).reshape(cin, -1).astype(np.int64)
    contrib = contrib.reshape(h, w, k, k, cout)
    full = np.zeros((2 * h + k, 2 * w + k, cout), np.int64)
    for ky in range(k):
        for kx in range(k):
            full[ky:ky + 2 * h:2, kx:kx + 2 * w:2] += contrib[:, :, ky, kx]
    return full[2:2 + 2 * h, 2:2 + 2 * w] + bias.astype(np.int64)


def norm(x, gamma, beta):
    """``beta[c] + sum_j gamma[c, j] |x[j]|`` (FORMAT.md 3.5)."""
    return beta.astype(np.int64) + np.abs(x.astype(np.int64)) @ gamma.astype(np.int64).T


def gdn(x, gamma, beta, mult, shift, out_max):
    """FORMAT.md 3.5 (the encoder's layer; a decoder never runs it)."""
    num = x.astype(np.int64) * mult.astype(np.int64)
    den = norm(x, gamma, beta) << np.int64(shift)
    q = (2 * np.abs(num) + den) // (2 * den)
    return np.clip(np.sign(num) * q, -out_max, out_max)


def igdn(x, gamma, beta, mult, shift, out_max):
    """FORMAT.md 3.5: ``x * norm``, requantized to +-out_max."""
    v = x.astype(np.int64) * norm(x, gamma, beta)
    return requantize(v, mult, shift, -out_max, out_max)
