"""Convolutions and transposed convolutions of int8 / int16 codes, plain or with the
requantization fused into their epilogue, on every multiply path.

Convolutions are output-stationary implicit GEMMs on NHWC without im2col: for a fixed tap row
``ky`` the ``(kx, ci)`` run of the input is contiguous, so each output pixel is, per tap row,
one dot product of length ``K*Cin`` with a packed weight run. The transposed 5x5 stride-2
convolution is four sub-pixel phase convolutions (3x3, 3x2, 2x3 and 2x2 taps, stride 1). The
loops over one phase of a row (``_phase_*``) also run GDN's 1x1 convolution of ``|x|``
(``gdn``). On the ``amx`` path 16-bit codes run as two byte planes (``_conv_amx_rows``,
``_deconv_amx16``), stride-1 convolutions in groups of rows taken as one run of the padded
input (``_conv_amx_rows``), and a transposed convolution into at most 4 channels (the RGB
output) as one 3x3 convolution into its four phases' channels (``_deconv_merged``).
"""

import numpy as np

from . import cpu  # first: the engine's start-up imports Numba
from numba import get_num_threads, njit, prange

from .amxtiles import CHANNELS as _AMX_CHANNELS
from .amxtiles import PIXELS as _AMX_PIXELS
from .amxtiles import TILE_ROWS as _AMX_QUADS
from .amxtiles import MERGED_COLUMNS as _MERGED_COLUMNS
from .amxtiles import MERGED_PIXELS as _MERGED_PIXELS
from .amxtiles import (amx_block, amx_block_biased, amx_block_signed_first, amx_configure,
                       amx_merged, amx_merged_wide, amx_release)
from .cpu import JIT_PARALLEL
from .highword import LANES as _LANES
from .highword import high_word_fits, requant_high_word
from .elementwise import (_CODES, _I32, _NO_REQUANT, _check_requant, _output, _padded,
                          _padded_bias, _padded_split, _require, _requantize_lane)
from .microkernels import (_VNNI_DOT3, _VNNI_DOT4, _mk_narrow, _mk_vnni_dot3, _mk_vnni_dot4,
                           _mk_vnni_narrow, _mk_vnni_wide, _mk_wide, _mk_wssd_dot3,
                           _mk_wssd_dot4, _mk_wssd_narrow, _mk_wssd_wide)
from .packing import PackedWeights, pack_conv_weights, pack_deconv_weights
from .reference import conv2d_shape, conv_transpose2d_shape

# Pixels the portable path handles at a time (``_phase_portable``).
_PORTABLE_PIX = 4


# ---------------------------------------------------------------------------------------------
# One phase of a convolution on a row of output pixels


@njit(inline="always")
def _phase_simd(xf, x0, rowlen, xpix, kh, wf, blocks, nv, pairs, acc, a0, apix, npix):
    # npix is a multiple of the micro-kernel's pixel count; tap row t starts at x0 + t*rowlen.
    for b in range(blocks):
        for t in range(kh):
            woff = (t * blocks + b) * pairs * nv * 16
            xo = x0 + t * rowlen
            ao = a0 + b * nv * 8
            if nv == 2:
                for p in range(0, npix, 6):
                    _mk_wide(xf, xo + p * xpix, xpix, wf, woff, acc, ao + p * apix, apix, pairs)
            else:
                for p in range(0, npix, 8):
                    _mk_narrow(xf, xo + p * xpix, xpix, wf, woff, acc, ao + p * apix, apix,
                               pairs)


@njit(inline="always")
def _phase_vnni_dot(xf, x0, rowlen, xpix, kh, wf, groups, nc, chunks, words, acc, a0, apix,
                    npix):
    # ``words``: int16 inputs and weights, 32 of them to a 64-byte chunk.
    wch = chunks * (32 if words else 64)
    wrow = groups * nc * wch
    for g in range(groups):
        woff = g * nc * wch
        if nc == 3:
            for p in range(0, npix, _VNNI_DOT3[0]):
                if words:
                    _mk_wssd_dot3(xf, x0 + p * xpix, xpix, rowlen, kh, wf, woff, wrow, wch,
                                  chunks, acc, a0 + p * apix + g * nc, apix)
                else:
                    _mk_vnni_dot3(xf, x0 + p * xpix, xpix, rowlen, kh, wf, woff, wrow, wch,
                                  chunks, acc, a0 + p * apix + g * nc, apix)
        else:
            for p in range(0, npix, _VNNI_DOT4[0]):
                if words:
                    _mk_wssd_dot4(xf, x0 + p * xpix, xpix, rowlen, kh, wf, woff, wrow, wch,
                                  chunks, acc, a0 + p * apix + g * nc, apix)
                else:
                    _mk_vnni_dot4(xf, x0 + p * xpix, xpix, rowlen, kh, wf, woff, wrow, wch,
                                  chunks, acc, a0 + p * apix + g * nc, apix)


@njit(inline="always")
def _phase_wssd(xf, x0, rowlen, xpix, kh, wf, blocks, nv, pairs, acc, a0, apix, npix):
    for b in range(blocks):
        for t in range(kh):
            woff = (t * blocks + b) * pairs * nv * 32
            xo = x0 + t * rowlen
            ao = a0 + b * nv * 16
            if nv == 4:
                for p in range(0, npix, 6):
                    _mk_wssd_wide(xf, xo + p * xpix, xpix, wf, woff, acc, ao + p * apix, apix,
                                  pairs)
            else:
                for p in range(0, npix, 12):
                    _mk_wssd_narrow(xf, xo + p * xpix, xpix, wf, woff, acc, ao + p * apix,
                                    apix, pairs)


# How _phase_vnni multiplies: uint8 x int8 in register blocks or as dot products (few output
# channels); int16 x int16 pairs in register blocks or as dot products.
_BYTES, _DOT, _WORDS, _DOT_WORDS = 0, 1, 2, 3


@njit(inline="always")
def _phase_vnni(xf, x0, rowlen, xpix, kh, wf, blocks, nv, quads, acc, a0, apix, npix, mode):
    # As _phase_simd, on uint8 inputs and quads of int8 weights, or (``_WORDS``) on int16
    # inputs and pairs of int16 weights, ``quads`` then counting pairs.
    if mode == _DOT or mode == _DOT_WORDS:
        _phase_vnni_dot(xf, x0, rowlen, xpix, kh, wf, blocks, nv, quads, mode == _DOT_WORDS,
                        acc, a0, apix, npix)
        return
    if mode == _WORDS:
        _phase_wssd(xf, x0, rowlen, xpix, kh, wf, blocks, nv, quads, acc, a0, apix, npix)
        return
    for b in range(blocks):
        for t in range(kh):
            woff = (t * blocks + b) * quads * nv * 64
            xo = x0 + t * rowlen
            ao = a0 + b * nv * 16
            if nv == 4:
                for p in range(0, npix, 6):
                    _mk_vnni_wide(xf, xo + p * xpix, xpix, wf, woff, acc, ao + p * apix, apix,
                                  quads)
            else:
                for p in range(0, npix, 12):
                    _mk_vnni_narrow(xf, xo + p * xpix, xpix, wf, woff, acc, ao + p * apix,
                                    apix, quads)


@njit(inline="always")
def _phase_amx_biased(xf, x0, rowlen, xpix, kh, wf, blocks, nv, quads, acc, a0, apix, npix,
                      bias):
    # _phase_amx for a phase that alone makes its accumulators: each block starts from the
    # bias (``bias[a0 + c]`` for channel c of the block) instead of from ``acc``, so that
    # the kernels need no pass to initialise them.
    chunks = quads // _AMX_QUADS
    wrow = nv * 64
    wtap = blocks * quads * wrow
    for b in range(blocks):
        wb = b * quads * wrow
        for v in range(0, nv, 2):
            ao = a0 + b * nv * 16 + v * 16
            for p in range(0, npix, _AMX_PIXELS):
                amx_block_biased(xf, x0 + p * xpix, xpix, rowlen, kh, chunks, wf, wb + v * 64,
                                 wtap, wrow, acc, ao + p * apix, apix, bias, ao)


@njit(inline="always")
def _phase_amx(xf, x0, rowlen, xpix, kh, wf, blocks, nv, quads, acc, a0, apix, npix,
               signed=False):
    # The operands of _phase_vnni's byte blocks, multiplied in AMX tiles: blocks of 32 pixels
    # x 32 channels (two of the ``nv`` 16-channel vectors) over every tap row at once.
    # ``quads`` is a multiple of 16 and ``npix`` of 32 (``_amx_fits``, ``_pixel_unit``).
    chunks = quads // _AMX_QUADS
    wrow = nv * 64
    wtap = blocks * quads * wrow
    for b in range(blocks):
        wb = b * quads * wrow
        for v in range(0, nv, 2):
            ao = a0 + b * nv * 16 + v * 16
            for p in range(0, npix, _AMX_PIXELS):
                if signed:  # int8 inputs: the high bytes of 16-bit codes, from zero
                    amx_block_signed_first(xf, x0 + p * xpix, xpix, rowlen, kh, chunks, wf,
                                           wb + v * 64, wtap, wrow, acc, ao + p * apix, apix)
                else:
                    amx_block(xf, x0 + p * xpix, xpix, rowlen, kh, chunks, wf, wb + v * 64,
                              wtap, wrow, acc, ao + p * apix, apix)


@njit(inline="always")
def _phase_portable_narrow(xf, x0, rowlen, xpix, wt, acc, a0, apix, npix):
    # wt is (KH, Cout, run): one dot product per (pixel, channel), vectorised over the run.
    kh, c, run = wt.shape
    for t in range(kh):
        for p in range(npix):
            xb = x0 + t * rowlen + p * xpix
            xs = xf[xb: xb + run]
            ab = a0 + p * apix
            for co in range(c):
                wr = wt[t, co]
                sm = np.int32(0)
                for i in range(run):
                    sm += np.int32(xs[i]) * np.int32(wr[i])
                acc[ab + co] += np.int32(sm)


@njit(inline="always")
def _phase_portable(xf, x0, rowlen, xpix, wt, narrow, acc, a0, apix, npix):
    # Four pixels at a time: one input value per pixel broadcast against a contiguous run of
    # output channels; int32 accumulators (the stores truncate Numba's int64 arithmetic).
    if narrow:
        _phase_portable_narrow(xf, x0, rowlen, xpix, wt, acc, a0, apix, npix)
        return
    kh, run, c = wt.shape
    for t in range(kh):
        for p in range(0, npix, 4):
            xb = x0 + t * rowlen + p * xpix
            xs0 = xf[xb: xb + run]
            xs1 = xf[xb + xpix: xb + xpix + run]
            xs2 = xf[xb + 2 * xpix: xb + 2 * xpix + run]
            xs3 = xf[xb + 3 * xpix: xb + 3 * xpix + run]
            ab = a0 + p * apix
            r0 = acc[ab: ab + c]
            r1 = acc[ab + apix: ab + apix + c]
            r2 = acc[ab + 2 * apix: ab + 2 * apix + c]
            r3 = acc[ab + 3 * apix: ab + 3 * apix + c]
            wtt = wt[t]
            for i in range(run):
                v0 = np.int32(xs0[i])
                v1 = np.int32(xs1[i])
                v2 = np.int32(xs2[i])
                v3 = np.int32(xs3[i])
                wr = wtt[i]
                for co in range(c):
                    wv = np.int32(wr[co])
                    r0[co] += v0 * wv
                    r1[co] += v1 * wv
                    r2[co] += v2 * wv
                    r3[co] += v3 * wv


@njit(inline="always")
def _init_acc(acc, bias, npix, coutp):
    for p in range(npix):
        acc[p * coutp: (p + 1) * coutp] = bias


@njit(inline="always")
def _leaky_terms(leaky_mult, leaky_shift):
    # The LeakyReLU's multiplier, shift and rounding term as int64 (shift 1 where it is off,
    # so that the branch-free lanes below shift by a valid amount either way).
    leaky = leaky_shift > 0
    ls = np.int64(leaky_shift if leaky else 1)
    return leaky, np.int64(np.int32(leaky_mult)), ls, np.int64(1) << (ls - 1)


@njit(inline="always")
def _requant_lane(v, mult, shift, leaky, lm, ls, lr, lo64, hi64):
    # One code of the int64 requantization (``elementwise._requant_value``), branch-free
    # (selects, not jumps), so that LLVM vectorises the loops that call it: the products
    # are int32 x int32 -> int64 and the shifts per-lane 64-bit shifts.
    lv = (v * lm + lr) >> ls
    return _requantize_lane(lv if (leaky and v < 0) else v, mult, shift, lo64, hi64)


@njit(inline="always")
def _epilogue(acc, coutp, out_row, requant, mult, shift, leaky_mult, leaky_shift, lo, hi):
    # ``requant``: 0 copies the accumulators, 1 requantizes in int64 lanes, 2 from the
    # products' high words in int32 lanes (``highword``; the caller checked that it fits).
    wo, cout = out_row.shape
    if requant == _HIGH_WORD:
        flat = out_row.reshape(wo * cout)
        for ox in range(wo):
            requant_high_word(acc, ox * coutp, flat, ox * cout, cout // _LANES, mult, shift,
                              lo, hi, leaky_mult, leaky_shift)
        return
    leaky, lm, ls, lr = _leaky_terms(leaky_mult, leaky_shift)
    lo64, hi64 = np.int64(lo), np.int64(hi)
    for ox in range(wo):
        a = acc[ox * coutp: ox * coutp + cout]
        o = out_row[ox]
        if requant:
            for co in range(np.uint64(cout)):
                o[co] = _requant_lane(np.int64(a[co]), mult[co], shift[co], leaky, lm, ls, lr,
                                      lo64, hi64)
        else:
            for co in range(cout):
                o[co] = a[co]


# ---------------------------------------------------------------------------------------------
# Convolution (stride 1 or 2, K x K, padding K//2)


@njit(**JIT_PARALLEL)
def _conv_simd(xf, rowlen, stride, cin, k, wf, blocks, nv, pairs, npix, bias, coutp, requant,
               mult, shift, leaky_mult, leaky_shift, lo, hi, out):
    ho = out.shape[0]
    for oy in prange(ho):
        acc = np.empty(npix * coutp, np.int32)
        _init_acc(acc, bias, npix, coutp)
        _phase_simd(xf, oy * stride * rowlen, rowlen, stride * cin, k, wf, blocks, nv, pairs,
                    acc, 0, coutp, npix)
        _epilogue(acc, coutp, out[oy], requant, mult, shift, leaky_mult, leaky_shift, lo, hi)


@njit(**JIT_PARALLEL)
def _conv_vnni(xf, rowlen, stride, cin, k, wf, blocks, nv, quads, mode, npix, bias, coutp,
               requant, mult, shift, leaky_mult, leaky_shift, lo, hi, out):
    ho = out.shape[0]
    for oy in prange(ho):
        acc = np.empty(npix * coutp, np.int32)
        _init_acc(acc, bias, npix, coutp)
        _phase_vnni(xf, oy * stride * rowlen, rowlen, stride * cin, k, wf, blocks, nv, quads,
                    acc, 0, coutp, npix, mode)
        _epilogue(acc, coutp, out[oy], requant, mult, shift, leaky_mult, leaky_shift, lo, hi)


@njit(inline="always")
def _shift_high(acc, bias, npix, coutp):
    # Accumulators of the high bytes' products made the sums of whole 16-bit codes' products
    # so far: shifted left by 8, and given the bias (int32 wrapping, as every sum).
    for p in range(npix):
        a = np.uint64(p * coutp)
        for j in range(np.uint64(coutp)):
            acc[a + j] = (acc[a + j] << 8) + bias[j]


# Output pixels a group of rows of ``_conv_amx_rows`` makes at a time, at most: the rows are
# one run of the padded input, whose accumulators (256 KiB at most, ``_row_groups``) stay in
# L2 from the tiles to the epilogue.
_GROUP_PIXELS = 1024
_GROUP_BYTES = 256 << 10


@njit(**JIT_PARALLEL)
def _conv_amx_rows(xf, xlo, rowlen, stride, cin, k, wf, blocks, nv, quads, group, run, bias,
                   coutp, requant, mult, shift, leaky_mult, leaky_shift, lo, hi, out):
    # _conv_vnni's byte blocks on AMX tiles (a kernel of its own, so that only the amx path
    # ever compiles a tile instruction), in groups of ``group`` output rows taken as one run
    # of ``run`` pixels a row. For a stride-1 layer a group is one run of pixels of the padded
    # input: output pixel (y, x) is flat pixel y * cols + x of the padded rows (``run`` =
    # ``cols`` = ``rowlen // cin``), and its tap row t reads flat pixel y * cols + x + t *
    # cols, so a group's pixels are a block run like one row's, whose pixels in the padding
    # columns are made too and dropped. A narrow layer (the slices' and h_s's, 48 pixels wide
    # at 768x512) then wastes a pixel or two per row in its blocks of 32, where a row at a
    # time rounds every row up to whole blocks. A strided layer takes one row per group
    # (``run``: its output width in whole blocks). 8-bit codes (``xf``, offset to unsigned
    # bytes, ``bias`` cancelling the offset) or 16-bit ones: ``xf`` their signed high bytes
    # and ``xlo`` the unsigned low ones, the sums (sum of hi * w) * 256 + sum of lo * w, the
    # high bytes' tile products from zeroed tiles, shifted left by 8 and given the bias,
    # then the low bytes' added.
    ho = out.shape[0]
    wide = xlo.size > 0
    for g in prange(-(-ho // group)):
        y0 = g * group
        rows = min(ho, y0 + group) - y0
        npix = -(-(rows * run) // _AMX_PIXELS) * _AMX_PIXELS
        x0 = y0 * stride * rowlen
        acc = np.empty(npix * coutp, np.int32)
        amx_configure()
        if wide:
            _phase_amx(xf, x0, rowlen, stride * cin, k, wf, blocks, nv, quads, acc, 0, coutp,
                       npix, True)
            _shift_high(acc, bias, npix, coutp)
            _phase_amx(xlo, x0, rowlen, stride * cin, k, wf, blocks, nv, quads, acc, 0, coutp,
                       npix)
        else:
            _phase_amx_biased(xf, x0, rowlen, stride * cin, k, wf, blocks, nv, quads, acc, 0,
                              coutp, npix, bias)
        amx_release()
        for r in range(rows):
            _epilogue(acc[r * run * coutp:], coutp, out[y0 + r], requant, mult, shift,
                      leaky_mult, leaky_shift, lo, hi)


def _row_groups(rows, cols, coutp):
    """Output rows per group of ``_conv_amx_rows``: as many as keep a group within
    ``_GROUP_PIXELS`` pixels and ``_GROUP_BYTES`` of accumulators (at least one row), in a
    number of groups that the threads share evenly where there are rows enough."""
    if rows == 0:
        return 1
    most = max(1, min(_GROUP_PIXELS, _GROUP_BYTES // (4 * coutp)) // cols)
    threads = get_num_threads()
    groups = -(-rows // most)
    groups = min(rows, -(-groups // threads) * threads)
    return -(-rows // groups)


@njit(**JIT_PARALLEL)
def _conv_portable(xf, rowlen, stride, cin, wt, narrow, npix, bias, coutp, requant, mult, shift,
                   leaky_mult, leaky_shift, lo, hi, out):
    ho = out.shape[0]
    for oy in prange(ho):
        acc = np.empty(npix * coutp, np.int32)
        _init_acc(acc, bias, npix, coutp)
        _phase_portable(xf, oy * stride * rowlen, rowlen, stride * cin, wt, narrow, acc, 0,
                        coutp, npix)
        _epilogue(acc, coutp, out[oy], requant, mult, shift, leaky_mult, leaky_shift, lo, hi)


# ``_epilogue``'s modes: the accumulators copied, requantized in int64 lanes, or from the
# products' high words.
_COPY, _INT64, _HIGH_WORD = 0, 1, 2


def _requant_mode(req, out) -> int:
    """``_epilogue``'s mode for the requantization ``req`` (None: none) into ``out``."""
    if req is None:
        return _COPY
    _, shift, leaky_mult, leaky_shift, lo, hi = req
    fits = high_word_fits(leaky_mult, leaky_shift, shift, out.shape[-1], out.dtype, lo, hi)
    return _HIGH_WORD if fits else _INT64


def _amx_fits(packed) -> bool:
    """Whether a layer runs on AMX tiles: blocks of channel vectors in pairs (every layer of
    32, 64, 96, ... output channels); each phase's run of a tap row is padded to whole 64-byte
    rows with zero weights (``PackedWeights.tiles``). 8-bit inputs are one byte, 16-bit ones
    two (``_conv_amx_rows``)."""
    return (packed.kind != "gdn" and not packed.narrow
            and bool(packed.vnni) and (16 * packed.vnv) % _AMX_CHANNELS == 0)


def _gdn_amx_fits(packed) -> bool:
    """Whether a GDN's gamma fills AMX tiles: channels in blocks of 32 and runs of whole
    64-byte rows (64 or 128 channels; 8- and 16-bit inputs alike)."""
    return (packed.kind == "gdn" and not packed.narrow and bool(packed.vnni)
            and (16 * packed.vnv) % _AMX_CHANNELS == 0 and packed.quads[0] % _AMX_QUADS == 0)


def _merged_fits(packed) -> bool:
    """Whether a transposed convolution runs as ``_deconv_merged`` on the tiles: at most 4
    output channels (the four phases' channels fill 16 columns)."""
    return packed.kind == "deconv" and 4 * packed.cout <= _MERGED_COLUMNS


def _layer_path(packed, x):
    # Narrow layers (the 3-channel output) run faster as dot products over the run (measured):
    # the micro-kernel would waste 5 of 8 lanes. VNNI multiplies bytes only. AMX takes the
    # layers whose blocks fill its tiles; the vnni path runs the rest.
    path = cpu.active_path()
    if path == "amx":
        if _amx_fits(packed) or _gdn_amx_fits(packed) or _merged_fits(packed):
            return "amx"
        path = "vnni"
    if path == "vnni" and not packed.vnni:
        return "portable" if packed.narrow else "avx2"
    if path == "vnni" and x.dtype != np.int8:  # vpdpwssd
        return "vnni"
    if packed.narrow and path != "vnni":
        return "portable"
    return path


def _pixel_unit(packed, path):
    if path == "amx":
        return _AMX_PIXELS
    if path == "vnni":
        return packed.vnp
    return packed.np if path == "avx2" else _PORTABLE_PIX


def _vnni_biases(packed, bias):
    """Per phase of ``packed``, the bias that cancels the +128 offset of the inputs, wrapped
    to int32 like the sums; kept on ``packed`` with the bias it was made from, since a
    model's layers run with the same bias on every call."""
    key = bias.tobytes()
    cached = getattr(packed, "_vnni_bias_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    biases = [_vnni_bias_of(bias, vsum, packed.vcoutp) for vsum in packed.vsum]
    packed._vnni_bias_cache = (key, biases)
    return biases


def _vnni_bias_of(bias, vsum, coutp):
    """The bias that cancels the +128 offset of the inputs, wrapped to int32 like the sums."""
    b = np.zeros(coutp, np.int64)
    b[: bias.shape[0]] = bias.astype(np.int64) - 128 * vsum
    return ((b + 2**31) % 2**32 - 2**31).astype(np.int32)


# ``_conv_amx_rows``' low bytes of 8-bit codes: none.
_NO_LOW_BYTES = np.zeros(0, np.uint8)

# The codes of each input type (``np.iinfo`` costs microseconds a call).
_CODE_RANGE = {np.dtype(t): (int(np.iinfo(t).min), int(np.iinfo(t).max))
               for t in (np.int8, np.int16)}


def _run_conv(x, packed, bias, stride, pad_value, req, out):
    low, high = _CODE_RANGE[x.dtype]
    if not low <= pad_value <= high:
        # The paths would wrap it differently (bytes, two bytes, int16); the reference pads
        # with the exact value, which codes of this type cannot be.
        raise ValueError(f"pad_value {pad_value} is not a code of the input's type {x.dtype}")
    path = _layer_path(packed, x)
    h, wd, cin = x.shape
    k = packed.k
    p = k // 2
    wo = out.shape[1]
    unit = _pixel_unit(packed, path)
    npix = -(-wo // unit) * unit
    # Rows and columns for every tap of every (padded) output pixel, plus a spare row for the
    # end of a run read as a pair or a quad (its weights there are zero).
    rows = h + 2 * p + stride
    cols = max(wd + 2 * p + stride, (npix - 1) * stride + k + 1)
    requant = _requant_mode(req, out)
    mult, shift, lm, ls, lo, hi = req if requant else _NO_REQUANT
    if path == "amx":
        group, run, shape = 1, npix, (rows + 1, cols, cin)
        if stride == 1:
            # Groups of rows as runs of the padded input: the columns are just the padded
            # input's, and the rows below it cover a last group's whole blocks. The last byte
            # the last group reads: its last block's last pixel, at its last tap row, plus the
            # run of that row (whole 64-byte chunks); the buffer has 64 bytes more.
            cols = run = wd + 2 * p
            group = _row_groups(h, cols, packed.vcoutp)
            y0 = (h - 1) // group * group
            last = y0 * cols + -(-((h - y0) * cols) // _AMX_PIXELS) * _AMX_PIXELS - 1
            end = (last + (k - 1) * cols) * cin + 4 * packed.tquads[0]
            shape = (max(h + 2 * p, -(-(end - 64) // (cols * cin))), cols, cin)
        if x.dtype == np.int16:
            xlo, xf = _padded_split(x, shape, p, p, pad_value)
            vbias = _padded_bias(bias, packed.vcoutp)
        else:
            xlo = _NO_LOW_BYTES
            xf = _padded(x, shape, p, p, (pad_value + 128) & 255, np.uint8)
            vbias = _vnni_biases(packed, bias)[0]
        _conv_amx_rows(xf, xlo, cols * cin, stride, cin, k, packed.tiles[0], packed.vblocks,
                       packed.vnv, packed.tquads[0], group, run, vbias, packed.vcoutp, requant,
                       mult, shift, lm, ls, lo, hi, out)
        return out
    if path == "vnni" and x.dtype == np.int16:
        flat = _padded(x, (rows + 1, cols, cin), p, p, pad_value, np.int16)
        _conv_vnni(flat, cols * cin, stride, cin, k, packed.wssd[0], packed.vblocks,
                   packed.vnv, packed.wpairs[0], _DOT_WORDS if packed.narrow else _WORDS, npix,
                   _padded_bias(bias, packed.vcoutp), packed.vcoutp, requant, mult, shift, lm,
                   ls, lo, hi, out)
        return out
    if path == "vnni":
        flat = _padded(x, (rows + 1, cols, cin), p, p, (pad_value + 128) & 255, np.uint8)
        vbias = _vnni_biases(packed, bias)[0]
        _conv_vnni(flat, cols * cin, stride, cin, k, packed.vnni[0], packed.vblocks,
                   packed.vnv, packed.quads[0], _DOT if packed.narrow else _BYTES, npix, vbias,
                   packed.vcoutp, requant, mult, shift, lm, ls, lo, hi, out)
        return out
    xf = _padded(x, (rows + 1, cols, cin), p, p, pad_value, np.int16)
    if path == "avx2":
        _conv_simd(xf, cols * cin, stride, cin, k, packed.simd[0], packed.blocks, packed.nv,
                   packed.pairs[0], npix, _padded_bias(bias, packed.coutp), packed.coutp,
                   requant, mult, shift, lm, ls, lo, hi, out)
    else:
        _conv_portable(xf, cols * cin, stride, cin, packed.portable[0], packed.narrow, npix, bias,
                       packed.cout, requant, mult, shift, lm, ls, lo, hi, out)
    return out


def _check_conv(x, w, bias, pack=pack_conv_weights):
    x = _require(x, "x", _CODES, 3)
    if isinstance(w, PackedWeights):
        if w.kind == "gdn":
            raise TypeError("w: GDN weights where convolution weights were expected")
        packed = w
    else:
        w = _require(w, "w", (np.dtype(np.int8),), 4)
        packed = None
    shape = w.shape
    bias = _require(bias, "bias", _I32, 1)
    if shape[3] != x.shape[2] or shape[1] != shape[2] or bias.shape[0] != shape[0]:
        raise ValueError(f"conv shapes do not match: x {x.shape}, w {shape}, bias {bias.shape}")
    return x, packed if packed is not None else pack(w), bias


def conv2d(x, w, bias, stride, pad_value):
    """See ``reference.conv2d``; ``w`` may be packed by ``pack_conv_weights``."""
    x, packed, bias = _check_conv(x, w, bias)
    if packed.kind != "conv":
        raise TypeError("w: packed for a transposed convolution")
    out = np.empty(conv2d_shape(x.shape, stride, packed.cout), np.int32)
    return _run_conv(x, packed, bias, int(stride), int(pad_value), None, out)


def conv2d_requant(x, w, bias, stride, pad_value, mult, shift, leaky_mult, leaky_shift, lo, hi,
                   out_dtype, out=None):
    """``requantize(conv2d(...), ...)`` fused: the int32 accumulators never leave the row.
    ``out``: the array to write the codes into (rows of a larger buffer, say), else a new one."""
    x, packed, bias = _check_conv(x, w, bias)
    if packed.kind != "conv":
        raise TypeError("w: packed for a transposed convolution")
    mult, shift = _check_requant(mult, shift, packed.cout)
    out = _output(out, conv2d_shape(x.shape, stride, packed.cout), out_dtype)
    req = (mult, shift, int(leaky_mult), int(leaky_shift), int(lo), int(hi))
    return _run_conv(x, packed, bias, int(stride), int(pad_value), req, out)


# ---------------------------------------------------------------------------------------------
# Transposed convolution (K=5, stride 2) as four stride-1 phase convolutions. Output row
# 2a+py, column 2b+px reads padded input rows a+py+t and columns b+px+u (a one-pixel zero
# border), with the taps of ``packing._DECONV_TAPS``.


@njit(inline="always")
def _phase_weights(py, px, w00, w01, w10, w11):
    # The packed weights of output phase (py, px): 3 or 2 taps per axis.
    if py == 0:
        return w00 if px == 0 else w01
    return w10 if px == 0 else w11


@njit(**JIT_PARALLEL)
def _deconv_simd(xf, rowlen, cin, w00, w01, w10, w11, blocks, nv, pairs3, pairs2, npix, bias,
                 coutp, requant, mult, shift, leaky_mult, leaky_shift, lo, hi, out):
    h = out.shape[0] // 2
    for a in prange(h):
        acc = np.empty(2 * npix * coutp, np.int32)
        for py in range(2):
            _init_acc(acc, bias, 2 * npix, coutp)
            for px in range(2):
                wf = _phase_weights(py, px, w00, w01, w10, w11)
                pairs = pairs3 if px == 0 else pairs2
                _phase_simd(xf, (a + py) * rowlen + px * cin, rowlen, cin, 3 - py, wf, blocks,
                            nv, pairs, acc, px * coutp, 2 * coutp, npix)
            _epilogue(acc, coutp, out[2 * a + py], requant, mult, shift, leaky_mult,
                      leaky_shift, lo, hi)


@njit(**JIT_PARALLEL)
def _deconv_vnni(xf, rowlen, cin, w00, w01, w10, w11, blocks, nv, quads3, quads2, mode, npix,
                 bias, coutp, requant, mult, shift, leaky_mult, leaky_shift, lo, hi, out):
    # ``bias`` is (2, 2*coutp): per output row parity, the biases of the two column phases
    # interleaved as the accumulators are (each phase cancels its own weights' offset sum).
    h = out.shape[0] // 2
    for a in prange(h):
        acc = np.empty(2 * npix * coutp, np.int32)
        for py in range(2):
            _init_acc(acc, bias[py], npix, 2 * coutp)
            for px in range(2):
                wf = _phase_weights(py, px, w00, w01, w10, w11)
                quads = quads3 if px == 0 else quads2
                _phase_vnni(xf, (a + py) * rowlen + px * cin, rowlen, cin, 3 - py, wf, blocks,
                            nv, quads, acc, px * coutp, 2 * coutp, npix, mode)
            _epilogue(acc, coutp, out[2 * a + py], requant, mult, shift, leaky_mult,
                      leaky_shift, lo, hi)


@njit(**JIT_PARALLEL)
def _deconv_amx(xf, rowlen, cin, w00, w01, w10, w11, blocks, nv, quads3, quads2, npix, bias,
                coutp, requant, mult, shift, leaky_mult, leaky_shift, lo, hi, out):
    # _deconv_vnni's byte blocks on AMX (see _conv_amx_rows).
    h = out.shape[0] // 2
    for a in prange(h):
        acc = np.empty(2 * npix * coutp, np.int32)
        amx_configure()
        for py in range(2):
            # Each column phase makes its own half of every pixel's accumulators.
            for px in range(2):
                wf = _phase_weights(py, px, w00, w01, w10, w11)
                quads = quads3 if px == 0 else quads2
                _phase_amx_biased(xf, (a + py) * rowlen + px * cin, rowlen, cin, 3 - py, wf,
                                  blocks, nv, quads, acc, px * coutp, 2 * coutp, npix, bias[py])
            _epilogue(acc, coutp, out[2 * a + py], requant, mult, shift, leaky_mult,
                      leaky_shift, lo, hi)
        amx_release()


@njit(**JIT_PARALLEL)
def _deconv_amx16(xlo, xhi, rowlen, cin, w00, w01, w10, w11, blocks, nv, quads3, quads2, npix,
                  bias, coutp, requant, mult, shift, leaky_mult, leaky_shift, lo, hi, out):
    # _deconv_amx on 16-bit codes, as _conv_amx_rows splits them; ``bias`` is (2 * coutp,), the
    # layer's bias for both column phases.
    h = out.shape[0] // 2
    for a in prange(h):
        acc = np.empty(2 * npix * coutp, np.int32)
        amx_configure()
        for py in range(2):
            for px in range(2):
                wf = _phase_weights(py, px, w00, w01, w10, w11)
                quads = quads3 if px == 0 else quads2
                _phase_amx(xhi, (a + py) * rowlen + px * cin, rowlen, cin, 3 - py, wf, blocks,
                           nv, quads, acc, px * coutp, 2 * coutp, npix, True)
            _shift_high(acc, bias, npix, 2 * coutp)
            for px in range(2):
                wf = _phase_weights(py, px, w00, w01, w10, w11)
                quads = quads3 if px == 0 else quads2
                _phase_amx(xlo, (a + py) * rowlen + px * cin, rowlen, cin, 3 - py, wf, blocks,
                           nv, quads, acc, px * coutp, 2 * coutp, npix)
            _epilogue(acc, coutp, out[2 * a + py], requant, mult, shift, leaky_mult,
                      leaky_shift, lo, hi)
        amx_release()


# Rows of input a thread takes at a time in ``_deconv_merged``: each group also splits the
# rows above and below it, so larger groups read less of the input twice.
_MERGED_ROWS = 16


@njit(inline="always")
def _split_row(x_row, wide, hi, lo, start):
    # One row of codes into the tile operands at ``start``: 16-bit codes as their signed high
    # and unsigned low bytes, 8-bit ones as they are (into ``hi``). Unsigned indices, so that
    # LLVM vectorises the loop inside a parallel kernel.
    xf = x_row.reshape(x_row.size)
    s = np.uint64(start)
    if wide:
        for e in range(np.uint64(xf.size)):
            v = np.int32(xf[e])
            hi[s + e] = np.int8(v >> 8)
            lo[s + e] = np.uint8(v & 255)
    else:
        for e in range(np.uint64(xf.size)):
            hi[s + e] = np.int8(xf[e])


@njit(inline="always")
def _merged_values(acc, low, wide, npix, bias, requant, mult, shift, leaky_mult, leaky_shift,
                   lo, hi, q):
    # The tile sums made whole, ``(high << 8) + low + bias`` wrapping in int32 like every
    # sum, and requantized, column by column of the 16 (``_epilogue``'s integers, with each
    # column's multiplier and shift: constant vectors, so LLVM vectorises it).
    leaky, lm, ls, lr = _leaky_terms(leaky_mult, leaky_shift)
    lo64, hi64 = np.int64(lo), np.int64(hi)
    for b in range(np.uint64(npix)):
        base = b * np.uint64(_MERGED_COLUMNS)
        for n in range(_MERGED_COLUMNS):
            i = base + np.uint64(n)
            v = np.int64(acc[i])
            if wide:
                v = np.int64(np.int32(v << 8)) + np.int64(acc[np.uint64(low) + i])
            v = np.int64(np.int32(v + np.int64(bias[n])))
            if requant:
                q[i] = _requant_lane(v, mult[n], shift[n], leaky, lm, ls, lr, lo64, hi64)
            else:
                q[i] = v


@njit(inline="always")
def _merged_rows(q, cout, out, a):
    # Output rows 2a and 2a + 1 from the columns (py, px, co): pixel 2b + px of row 2a + py
    # is column (py*2 + px)*cout + co of input pixel b, cropped to the output's width.
    run = np.uint64(2 * cout)
    kept = np.uint64(out.shape[1] * cout)
    for py in range(2):
        o = out[2 * a + py].reshape(out.shape[1] * cout)
        n0 = np.uint64(py) * run
        whole = kept // run
        for b in range(whole):
            for j in range(run):
                o[b * run + j] = q[b * np.uint64(_MERGED_COLUMNS) + n0 + j]
        for j in range(kept - whole * run):
            o[whole * run + j] = q[whole * np.uint64(_MERGED_COLUMNS) + n0 + j]


@njit(**JIT_PARALLEL)
def _deconv_merged(x, wide, npix, wm, chunks, bias, requant, mult, shift, leaky_mult,
                   leaky_shift, lo, hi, out):
    # The transposed convolution of a layer with at most 4 output channels (the RGB output)
    # on AMX tiles, as one 3x3 convolution of the input padded by one pixel into 16 columns,
    # the four phases' channels (``PackedWeights._pack_merged``). Each input row, split into
    # byte planes (``_split_row``), goes into a ring of three padded rows in cache, with a
    # fourth of zeros for the rows past the edges; ``amx_merged`` multiplies them as they lie,
    # 32 pixels x 16 columns per call, and each input row makes output rows 2a and 2a + 1.
    h, _, cin = x.shape
    cout = out.shape[2]
    rowb = (npix + 2) * cin  # a padded row: one zero pixel on the left, zeros past the input
    low = npix * _MERGED_COLUMNS  # the low bytes' sums, after the high bytes'
    for g in prange(-(-h // _MERGED_ROWS)):
        a0 = g * _MERGED_ROWS
        a1 = min(h, a0 + _MERGED_ROWS)
        hi_raw = np.zeros(4 * rowb + 128, np.int8)
        lo_raw = np.zeros(4 * rowb + 128, np.uint8)
        xh = hi_raw[(-hi_raw.ctypes.data) % 64:][: 4 * rowb + 64]
        xl = lo_raw[(-lo_raw.ctypes.data) % 64:][: 4 * rowb + 64]
        acc = np.empty(2 * low, np.int32)
        q = np.empty(low, out.dtype)
        for iy in range(max(a0 - 1, 0), a0 + 1):
            _split_row(x[iy], wide, xh, xl, (iy % 3) * rowb + cin)
        amx_configure()
        for a in range(a0, a1):
            if a + 1 < h:
                _split_row(x[a + 1], wide, xh, xl, ((a + 1) % 3) * rowb + cin)
            r0 = (a - 1) % 3 * rowb if a >= 1 else 3 * rowb
            r1 = a % 3 * rowb
            r2 = (a + 1) % 3 * rowb if a + 1 < h else 3 * rowb
            for p in range(0, npix, _MERGED_PIXELS):
                o = p * cin
                if wide:
                    amx_merged_wide(xh, xl, r0 + o, r1 + o, r2 + o, cin, chunks, wm, acc,
                                    p * _MERGED_COLUMNS, low + p * _MERGED_COLUMNS)
                else:
                    amx_merged(xh, xl, r0 + o, r1 + o, r2 + o, cin, chunks, wm, acc,
                               p * _MERGED_COLUMNS, low + p * _MERGED_COLUMNS)
            _merged_values(acc, low, wide, npix, bias, requant, mult, shift, leaky_mult,
                           leaky_shift, lo, hi, q)
            _merged_rows(q, cout, out, a)
        amx_release()


def _merged_tables(bias, mult, shift, cout):
    """``_deconv_merged``'s per-column operands: the bias, multiplier and shift of each of
    the 16 columns (py, px, co), as int32 (columns past 4 * cout: 0, 0 and 1, values never
    kept)."""
    col = np.arange(_MERGED_COLUMNS)
    used = col < 4 * cout
    chan = np.where(used, col % cout, 0)

    def spread(table, unused):
        return np.where(used, np.asarray(table, np.int32)[chan], unused).astype(np.int32)

    return spread(bias, 0), spread(mult, 0), spread(shift, 1)


@njit(**JIT_PARALLEL)
def _deconv_portable(xf, rowlen, cin, w00, w01, w10, w11, narrow, npix, bias, coutp, requant, mult,
                     shift, leaky_mult, leaky_shift, lo, hi, out):
    h = out.shape[0] // 2
    for a in prange(h):
        acc = np.empty(2 * npix * coutp, np.int32)
        for py in range(2):
            _init_acc(acc, bias, 2 * npix, coutp)
            for px in range(2):
                wt = _phase_weights(py, px, w00, w01, w10, w11)
                _phase_portable(xf, (a + py) * rowlen + px * cin, rowlen, cin, wt, narrow, acc,
                                px * coutp, 2 * coutp, npix)
            _epilogue(acc, coutp, out[2 * a + py], requant, mult, shift, leaky_mult,
                      leaky_shift, lo, hi)


def _run_deconv(x, packed, bias, req, out):
    path = _layer_path(packed, x)
    h, wd, cin = x.shape
    unit = _pixel_unit(packed, path)
    npix = -(-wd // unit) * unit
    cols = npix + 4
    requant = _requant_mode(req, out)
    mult, shift, lm, ls, lo, hi = req if requant else _NO_REQUANT
    if path == "amx" and _merged_fits(packed):
        npix = -(-wd // _MERGED_PIXELS) * _MERGED_PIXELS
        cout = packed.cout
        bias16, mult16, shift16 = _merged_tables(
            bias, *((mult, shift) if requant else (np.zeros(cout), np.ones(cout))), cout)
        _deconv_merged(x, x.dtype == np.int16, npix, packed.merged, -(-3 * cin // 64), bias16,
                       requant, mult16, shift16, lm, ls, lo, hi, out)
        return out
    if path == "amx" and x.dtype == np.int16:
        xlo, xhi = _padded_split(x, (h + 3, cols, cin), 1, 1, 0)
        bias2 = _padded_bias(bias, packed.vcoutp)
        _deconv_amx16(xlo, xhi, cols * cin, cin, *packed.tiles, packed.vblocks, packed.vnv,
                      packed.tquads[0], packed.tquads[1], npix, np.concatenate([bias2, bias2]),
                      packed.vcoutp, requant, mult, shift, lm, ls, lo, hi, out)
        return out
    if path == "vnni" and x.dtype == np.int16:
        flat = _padded(x, (h + 3, cols, cin), 1, 1, 0, np.int16)
        bias2 = _padded_bias(bias, packed.vcoutp)
        rows = np.stack([np.concatenate([bias2, bias2])] * 2)
        _deconv_vnni(flat, cols * cin, cin, *packed.wssd, packed.vblocks, packed.vnv,
                     packed.wpairs[0], packed.wpairs[1],
                     _DOT_WORDS if packed.narrow else _WORDS, npix, rows,
                     packed.vcoutp, requant, mult, shift, lm, ls, lo, hi, out)
        return out
    if path in ("vnni", "amx"):
        flat = _padded(x, (h + 3, cols, cin), 1, 1, 128, np.uint8)
        cp = packed.vcoutp
        phase_bias = _vnni_biases(packed, bias)  # (py, px) order
        rows = np.stack([np.concatenate(phase_bias[2 * py: 2 * py + 2]) for py in (0, 1)])
        if path == "amx":
            _deconv_amx(flat, cols * cin, cin, *packed.tiles, packed.vblocks, packed.vnv,
                        packed.tquads[0], packed.tquads[1], npix, rows, cp, requant, mult, shift,
                        lm, ls, lo, hi, out)
            return out
        _deconv_vnni(flat, cols * cin, cin, *packed.vnni, packed.vblocks, packed.vnv,
                     packed.quads[0], packed.quads[1], _DOT if packed.narrow else _BYTES, npix,
                     rows, cp, requant, mult, shift, lm, ls, lo, hi, out)
        return out
    xf = _padded(x, (h + 3, cols, cin), 1, 1, 0, np.int16)
    if path == "avx2":
        _deconv_simd(xf, cols * cin, cin, *packed.simd, packed.blocks, packed.nv,
                     packed.pairs[0], packed.pairs[1], npix, _padded_bias(bias, packed.coutp),
                     packed.coutp, requant, mult, shift, lm, ls, lo, hi, out)
    else:
        _deconv_portable(xf, cols * cin, cin, *packed.portable, packed.narrow, npix, bias,
                         packed.cout,
                         requant, mult, shift, lm, ls, lo, hi, out)
    return out


def _check_deconv(x, w, bias):
    x, packed, bias = _check_conv(x, w, bias, pack_deconv_weights)
    if packed.kind != "deconv":
        if packed.k != 5:
            raise ValueError(f"transposed convolution supports K=5 only, got {packed.k}")
        raise TypeError("w: packed for a convolution, not a transposed convolution")
    return x, packed, bias


def conv_transpose2d(x, w, bias):
    """See ``reference.conv_transpose2d``; ``w`` may be packed by ``pack_deconv_weights``."""
    x, packed, bias = _check_deconv(x, w, bias)
    out = np.empty(conv_transpose2d_shape(x.shape, packed.cout), np.int32)
    return _run_deconv(x, packed, bias, None, out)


def conv_transpose2d_requant(x, w, bias, mult, shift, leaky_mult, leaky_shift, lo, hi, out_dtype,
                             out=None):
    """``requantize(conv_transpose2d(...), ...)`` fused; ``out`` as for ``conv2d_requant``."""
    x, packed, bias = _check_deconv(x, w, bias)
    mult, shift = _check_requant(mult, shift, packed.cout)
    out = _output(out, conv_transpose2d_shape(x.shape, packed.cout), out_dtype)
    req = (mult, shift, int(leaky_mult), int(leaky_shift), int(lo), int(hi))
    return _run_deconv(x, packed, bias, req, out)
