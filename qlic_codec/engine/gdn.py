"""GDN and inverse GDN of int8 / int16 codes, on every multiply path.

The norm ``beta + gamma . |x|`` of a pixel is a 1x1 convolution of ``|x|`` with ``gamma``, run
by the phase loops of ``convolution``; the epilogue here divides by it (GDN, rounding half
away from zero) or multiplies by it and requantizes (inverse GDN).
"""

import numpy as np

from .cpu import JIT_PARALLEL  # first: the engine's start-up imports Numba
from numba import njit, prange

from .amxtiles import PIXELS as _AMX_PIXELS
from .amxtiles import TILE_ROWS as _AMX_QUADS
from .amxtiles import (amx_block_unsigned, amx_block_unsigned_first, amx_configure,
                       amx_release)
from .convolution import (_BYTES, _init_acc, _layer_path, _phase_portable, _phase_simd,
                          _phase_vnni, _phase_wssd, _pixel_unit)
from .elementwise import (_CODES, _I32, _NO_REQUANT, _check_requant, _output, _padded_bias,
                          _require)
from .microkernels import _SUM_PIX, _mk_vnni_sum
from .packing import PackedWeights, pack_gdn_weights
from .reference import GDN_OUT_MAX


@njit(inline="always")
def _gdn_epilogue(acc, coutp, xr, inverse, gmult, gshift, imult, ishift, fast, omax, out_row):
    # Branch-free per channel so that LLVM vectorises it. GDN's rounded quotient
    # ``(2|num| + den) // (2 den)`` clamped to ``omax`` is, when ``2 den * 2**k`` fits int64
    # (``fast``, checked by the caller from the largest possible norm), a restoring division
    # over the bits below 2**(k+1): a quotient beyond them leaves every bit set, which the
    # clamp then brings to ``omax`` (k = 6 for 8-bit codes, 10 for the wider ones).
    wd, c = out_row.shape
    for ox in range(wd):
        norm = acc[ox * coutp: ox * coutp + c]
        xv = xr[ox]
        o = out_row[ox]
        if inverse:
            for i in range(np.uint64(c)):
                v = np.int64(xv[i]) * np.int64(norm[i])
                sh = np.int64(ishift[i])
                r = (v * np.int64(imult[i]) + (np.int64(1) << (sh - 1))) >> sh
                r = -omax if r < -omax else r
                o[i] = omax if r > omax else r
        elif fast and omax == 127:
            for i in range(c):
                num = np.int64(xv[i]) * gmult[i]
                den = np.int64(norm[i]) << gshift
                rem = 2 * abs(num) + den
                d = 2 * den
                q = np.int64(0)
                for bit in (64, 32, 16, 8, 4, 2, 1):
                    t = d * bit
                    ge = rem >= t
                    rem = rem - t if ge else rem
                    q = q + bit if ge else q
                o[i] = -q if num < 0 else q
        elif fast:
            for i in range(c):
                num = np.int64(xv[i]) * gmult[i]
                den = np.int64(norm[i]) << gshift
                rem = 2 * abs(num) + den
                d = 2 * den
                q = np.int64(0)
                for bit in (1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1):
                    t = d * bit
                    ge = rem >= t
                    rem = rem - t if ge else rem
                    q = q + bit if ge else q
                q = omax if q > omax else q
                o[i] = -q if num < 0 else q
        else:
            for i in range(c):
                num = np.int64(xv[i]) * np.int64(gmult[i])
                den = np.int64(norm[i]) << gshift
                q = (2 * abs(num) + den) // (2 * den)
                if num < 0:
                    q = -q
                o[i] = min(max(q, -omax), omax)


@njit(inline="always")
def _abs_row(x_row, npix, dtype):
    """|x| of one row of codes as a flat run of ``npix`` pixels (padding pixels zero), 64-byte
    aligned, with 64 spare zero bytes: what the GDN's 1x1 convolution reads. Built per row,
    in cache, rather than as a whole-image buffer."""
    wd, c = x_row.shape
    n = npix * c
    raw = np.empty(n + 128, dtype)  # 128 elements: room to align, and 64 spare bytes
    size = raw.itemsize
    skip = ((-raw.ctypes.data) % 64) // size
    buf = raw[skip: skip + n + 64 // size]
    for i in range(wd):
        for k in range(c):
            v = np.int32(x_row[i, k])  # widened first: -(-128) does not fit int8
            buf[i * c + k] = -v if v < 0 else v
    buf[wd * c:] = 0
    return buf


@njit(inline="always")
def _abs_row_16(x_row, npix):
    """``_abs_row`` into int16, and whether the row holds -32768, the one 16-bit code outside
    the contract: found here, in cache, rather than by a serial pass over the whole input.
    Its |x| (which wraps in int16) is stored as 32767, so that the refused row still computes
    within the norm's bounds before the caller raises."""
    buf = _abs_row(x_row, npix, np.int16)
    wd, c = x_row.shape
    low = 0
    for i in range(wd):  # a separate count, so that both loops stay vectorized
        for k in range(c):
            low += x_row[i, k] == -32768
    if low:
        for j in range(wd * c):
            if buf[j] < 0:
                buf[j] = 32767
    return buf, low > 0


@njit(**JIT_PARALLEL)
def _gdn_simd(x, npix, wf, blocks, nv, pairs, beta, coutp, inverse, gmult, gshift, imult,
              ishift, fast, omax, out, refused):
    h, wd, c = x.shape
    for oy in prange(h):
        af, refused[oy] = _abs_row_16(x[oy], npix)
        acc = np.empty(npix * coutp, np.int32)
        _init_acc(acc, beta, npix, coutp)
        _phase_simd(af, 0, 0, c, 1, wf, blocks, nv, pairs, acc, 0, coutp, npix)
        _gdn_epilogue(acc, coutp, x[oy], inverse, gmult, gshift, imult, ishift, fast, omax,
                      out[oy])


@njit(**JIT_PARALLEL)
def _gdn_portable(x, npix, wt, narrow, beta, coutp, inverse, gmult, gshift, imult, ishift, fast,
                  omax, out, refused):
    h, wd, c = x.shape
    for oy in prange(h):
        af, refused[oy] = _abs_row_16(x[oy], npix)
        acc = np.empty(npix * coutp, np.int32)
        _init_acc(acc, beta, npix, coutp)
        _phase_portable(af, 0, 0, c, wt, narrow, acc, 0, coutp, npix)
        _gdn_epilogue(acc, coutp, x[oy], inverse, gmult, gshift, imult, ishift, fast, omax,
                      out[oy])


@njit(**JIT_PARALLEL)
def _gdn_wssd(x, npix, wf, blocks, nv, pairs, beta, coutp, inverse, gmult, gshift, imult,
              ishift, fast, omax, out, refused):
    # 16-bit codes on the VNNI path: |x| as int16 pairs against int16 gamma (vpdpwssd). The
    # twin of _gdn_simd, kept apart like _gdn_vnni so that hosts without VNNI never compile a
    # kernel that holds VNNI instructions.
    h, wd, c = x.shape
    for oy in prange(h):
        af, refused[oy] = _abs_row_16(x[oy], npix)
        acc = np.empty(npix * coutp, np.int32)
        _init_acc(acc, beta, npix, coutp)
        _phase_wssd(af, 0, 0, c, 1, wf, blocks, nv, pairs, acc, 0, coutp, npix)
        _gdn_epilogue(acc, coutp, x[oy], inverse, gmult, gshift, imult, ishift, fast, omax,
                      out[oy])


@njit(**JIT_PARALLEL)
def _gdn_vnni(x, npix, wf, blocks, nv, quads, beta, coutp, inverse, gmult, gshift, imult,
              ishift, fast, omax, ones, out):
    # |x| as bytes (it is at most 128) against gamma - 128, so each pixel's accumulators start
    # at beta + 128 * sum|x| (wrapping like the sums).
    h, wd, c = x.shape
    chunks = ones.shape[0] // 64
    for oy in prange(h):
        af = _abs_row(x[oy], npix, np.uint8)
        total = np.zeros(npix, np.int32)
        for p in range(0, npix, _SUM_PIX):
            _mk_vnni_sum(af, p * c, c, 0, 1, ones, 0, 0, 0, chunks, total, p, 1)
        acc = np.empty(npix * coutp, np.int32)
        for p in range(npix):
            acc[p * coutp: (p + 1) * coutp] = beta + np.int32(128) * total[p]
        _phase_vnni(af, 0, 0, c, 1, wf, blocks, nv, quads, acc, 0, coutp, npix, _BYTES)
        _gdn_epilogue(acc, coutp, x[oy], inverse, gmult, gshift, imult, ishift, fast, omax,
                      out[oy])


@njit(inline="always")
def _split_row(x_row, npix):
    """|x| of one row of 16-bit codes as two runs of bytes, ``lo = |x| & 255`` and
    ``hi = |x| >> 8`` (``_abs_row``'s layout), and whether the row holds -32768 (its |x| taken
    as 32767, as ``_abs_row_16`` does)."""
    wd, c = x_row.shape
    n = npix * c
    lo_raw = np.empty(n + 128, np.uint8)
    hi_raw = np.empty(n + 128, np.uint8)
    lo = lo_raw[(-lo_raw.ctypes.data) % 64:][: n + 64]
    hi = hi_raw[(-hi_raw.ctypes.data) % 64:][: n + 64]
    xf = x_row.reshape(wd * c)
    # Branch-free, with unsigned indices (no negative-index wraparound), so that LLVM
    # vectorises it inside the parallel kernel.
    for j in range(np.uint64(wd * c)):
        v = np.int32(xf[j])
        v = max(v, -v)
        v = min(v, 32767)
        lo[j] = np.uint8(v & 255)
        hi[j] = np.uint8(v >> 8)
    lo[wd * c:] = 0
    hi[wd * c:] = 0
    low = 0
    for j in range(np.uint64(wd * c)):  # a separate count, as in _abs_row_16
        low += xf[j] == -32768
    return lo, hi, low > 0


@njit(inline="always")
def _gdn_tiles(xb, c, npix, wu, blocks, nv, quads, acc, coutp, first):
    # Adds the 1x1 convolution of the bytes ``xb`` with unsigned gamma to ``acc`` (``first``:
    # sets ``acc`` to it), block by block of 32 pixels x 32 channels (``tdpbuud``: uint8 x
    # uint8).
    chunks = quads // _AMX_QUADS
    wrow = nv * 64
    for b in range(blocks):
        for v in range(0, nv, 2):
            ao = b * nv * 16 + v * 16
            for p in range(0, npix, _AMX_PIXELS):
                if first:
                    amx_block_unsigned_first(xb, p * c, c, 0, 1, chunks, wu,
                                             b * quads * wrow + v * 64, 0, wrow, acc,
                                             ao + p * coutp, coutp)
                else:
                    amx_block_unsigned(xb, p * c, c, 0, 1, chunks, wu, b * quads * wrow + v * 64,
                                       0, wrow, acc, ao + p * coutp, coutp)


# Pixels of a row that ``_gdn_amx`` takes through the tiles and its epilogue at a time: their
# accumulators (32 KiB for 128 channels) stay in L1 from the tiles to the epilogue. A whole row
# at once (960 pixels of g_s.5 at 1920x1080) was 5-8% slower, 32 pixels no faster, 128 in
# between (a band of g_s.5, one thread, the two kernels taking turns in one process).
_GDN_AMX_CHUNK = 64


@njit(inline="always")
def _gdn_amx_row(xr, wide, npix, wu, blocks, nv, quads, beta, coutp, inverse, gmult, gshift,
                 imult, ishift, fast, omax, orow):
    # One row of ``_gdn_amx``: the codes ``xr`` (pixels, channels) to ``orow``; returns
    # whether the row holds -32768 (16-bit codes). Everything is allocated before the tiles
    # are configured: they hold state only between amx_configure and amx_release.
    wd, c = xr.shape
    acc = np.empty(_GDN_AMX_CHUNK * coutp, np.int32)
    refused = False
    if wide:
        lo, hi, refused = _split_row(xr, npix)
    else:
        lo = _abs_row(xr, npix, np.uint8)
        hi = lo
    for p0 in range(0, npix, _GDN_AMX_CHUNK):
        n = min(_GDN_AMX_CHUNK, npix - p0)  # a multiple of 32, as npix is
        amx_configure()
        if wide:
            _gdn_tiles(hi[p0 * c:], c, n, wu, blocks, nv, quads, acc, coutp, True)
            for p in range(n):
                a = np.uint64(p * coutp)
                for j in range(np.uint64(coutp)):
                    acc[a + j] = (acc[a + j] << 8) + beta[j]
        else:
            _init_acc(acc, beta, n, coutp)
        _gdn_tiles(lo[p0 * c:], c, n, wu, blocks, nv, quads, acc, coutp, False)
        amx_release()
        m = min(n, wd - p0)  # the row's pixels in this chunk
        if m > 0:
            _gdn_epilogue(acc, coutp, xr[p0: p0 + m], inverse, gmult, gshift, imult, ishift,
                          fast, omax, orow[p0: p0 + m])
    return refused


@njit(**JIT_PARALLEL)
def _gdn_amx(x, wide, npix, wu, blocks, nv, quads, beta, coutp, inverse, gmult, gshift, imult,
             ishift, fast, omax, out, refused):
    # The 1x1 convolution of |x| with gamma in AMX tiles. 8-bit codes' |x| (at most 128) is
    # one run of bytes. 16-bit codes' is split into a high and a low byte: the high bytes'
    # products start the accumulators, which are then shifted left by 8 and given beta, and
    # the low bytes' products are added: ``beta + (hi . gamma << 8) + lo . gamma``, exact
    # since the loader proves that the norm fits int32. (Adding the high products of each
    # block to the accumulators as they were made was measured 6x slower: the vector loads
    # wait on the tile stores.) A kernel of its own, so that only the amx path ever compiles
    # a tile instruction.
    for oy in prange(x.shape[0]):
        refused[oy] = _gdn_amx_row(x[oy], wide, npix, wu, blocks, nv, quads, beta, coutp,
                                   inverse, gmult, gshift, imult, ishift, fast, omax, out[oy])


def _ones(n):
    """A run of ``n`` int8 ones padded with zeros to whole 64-byte chunks."""
    ones = np.zeros(-(-n // 64) * 64, np.int8)
    ones[:n] = 1
    return ones


# Pixels of a VNNI GDN row are a multiple of the micro-kernel's 6 or 12 and of the 8 of the
# |x| sums, so that neither reads nor writes past the row's padding.
_GDN_VNNI_UNIT = 24


_WIDE_RANGE = "16-bit GDN input codes must be in [-32767, 32767]"


def _run_gdn(x, packed, beta, inverse, gmult, gshift, imult, ishift, omax, out):
    path = _layer_path(packed, x)
    h, wd, c = x.shape
    unit = _GDN_VNNI_UNIT if path == "vnni" else _pixel_unit(packed, path)
    npix = -(-wd // unit) * unit
    wide = x.dtype == np.int16
    out = _output(out, x.shape, np.int8 if omax == 127 else np.int16)
    fast = _fast_division(x.dtype, packed, beta, gshift, omax)
    refused = np.zeros(h, np.bool_)  # rows holding the code -32768 (``_abs_row_16``)
    if path == "amx":
        _gdn_amx(x, wide, npix, packed.gamma_tiles[0], packed.vblocks, packed.vnv, packed.quads[0],
                 _padded_bias(beta, packed.vcoutp), packed.vcoutp, inverse, gmult, gshift,
                 imult, ishift, fast, omax, out, refused)
    elif path == "vnni" and wide:
        _gdn_wssd(x, npix, packed.wssd[0], packed.vblocks, packed.vnv, packed.wpairs[0],
                  _padded_bias(beta, packed.vcoutp), packed.vcoutp, inverse, gmult, gshift,
                  imult, ishift, fast, omax, out, refused)
    elif path == "vnni":
        _gdn_vnni(x, npix, packed.vnni[0], packed.vblocks, packed.vnv, packed.quads[0],
                  _padded_bias(beta, packed.vcoutp), packed.vcoutp, inverse, gmult, gshift,
                  imult, ishift, fast, omax, _ones(c), out)
    elif path == "avx2":
        _gdn_simd(x, npix, packed.simd[0], packed.blocks, packed.nv, packed.pairs[0],
                  _padded_bias(beta, packed.coutp), packed.coutp, inverse, gmult, gshift,
                  imult, ishift, fast, omax, out, refused)
    else:
        _gdn_portable(x, npix, packed.portable[0], packed.narrow, beta, packed.cout, inverse,
                      gmult, gshift, imult, ishift, fast, omax, out, refused)
    if wide and refused.any():
        raise ValueError(_WIDE_RANGE)
    return out


def _fast_division(dtype, packed, beta, gshift, omax) -> bool:
    """Whether GDN's rounded division can run as ``_gdn_epilogue``'s restoring division on
    inputs of ``dtype``: from the largest norm any of them can produce (its top bit)."""
    in_max = 128 if np.dtype(dtype) == np.int8 else 32767  # int16: -32768 is refused
    norm_max = int(beta.max(initial=0)) + in_max * int(packed.gamma_l1_max)
    return (2 * (norm_max << max(gshift, 0))) * (64 if omax == 127 else 1024) < 2**62


def _check_gdn(x, gamma, beta):
    x = _require(x, "x", _CODES, 3)
    if isinstance(gamma, PackedWeights):
        if gamma.kind != "gdn":
            raise TypeError("gamma: packed convolution weights where GDN weights were expected")
        packed = gamma
        shape = gamma.shape
    else:
        gamma = _require(gamma, "gamma", (np.dtype(np.uint8),), 2)
        packed = None
        shape = gamma.shape
    beta = _require(beta, "beta", _I32, 1)
    c = x.shape[2]
    if shape != (c, c) or beta.shape != (c,):
        raise ValueError(f"GDN shapes do not match: x {x.shape}, gamma {shape}")
    packed = packed if packed is not None else pack_gdn_weights(gamma)
    if x.dtype == np.int16:
        # 16-bit codes are symmetric (|x| must fit int16: the kernels refuse -32768 as they
        # read it), and the int32 norm must not wrap whatever they are; 8-bit codes cannot
        # make it wrap with 8-bit gamma and int32 beta below 2**24 per the loader, and are
        # not checked here.
        if int(beta.max(initial=0)) + 32767 * int(packed.gamma_l1_max) >= 2**31:
            raise ValueError("GDN norm of 16-bit inputs could exceed int32")
    return x, packed, beta


def _check_out_max(out_max) -> int:
    out_max = int(out_max)
    if out_max not in GDN_OUT_MAX:
        raise ValueError(f"GDN output range must be one of {GDN_OUT_MAX}, got {out_max}")
    return out_max


def gdn(x, gamma, beta, mult, shift, out_max=127, out=None):
    """See ``reference.gdn``; ``mult`` int64 (C,), ``shift`` a Python int; ``gamma`` may be
    packed by ``pack_gdn_weights``; ``out``: the array to write the codes into, else a new
    one."""
    out_max = _check_out_max(out_max)
    x, packed, beta = _check_gdn(x, gamma, beta)
    mult = _require(mult, "mult", (np.dtype(np.int64),), 1)
    if mult.shape[0] != x.shape[2]:
        raise ValueError(f"GDN multipliers must have {x.shape[2]} entries")
    return _run_gdn(x, packed, beta, False, mult, int(shift), *_NO_REQUANT[:2], out_max, out)


def igdn(x, gamma, beta, mult, shift, out_max=127, out=None):
    """See ``reference.igdn``; ``gamma`` may be packed by ``pack_gdn_weights``; ``out`` as for
    ``gdn``."""
    out_max = _check_out_max(out_max)
    x, packed, beta = _check_gdn(x, gamma, beta)
    mult, shift = _check_requant(mult, shift, x.shape[2])
    return _run_gdn(x, packed, beta, True, np.zeros(1, np.int64), 0, mult, shift, out_max,
                    out)
