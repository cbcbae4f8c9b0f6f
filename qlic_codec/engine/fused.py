"""Layers fused with what follows them: a transposed convolution and the inverse GDN after
it, and the RGB output layer and the pixel head.

The synthesis transform alternates requantized transposed convolutions and inverse GDNs. Run
one after the other, the convolution's output goes out to memory whole (16-bit codes, 134 MB
per 1920x1080 decode for ``g_s.4`` alone) and comes back for the GDN, which reads each pixel
alone. Fused, each row of codes is made into a buffer that stays in the core's cache, and
the inverse GDN of that row is written out instead. The integers are those
of the two steps: the same convolution row, the same requantized codes of the same type, the
same GDN of them.

Only the ``amx`` path fuses (both layers on the tiles: 8-bit convolution inputs, a GDN of 64
or 128 channels; ``igdn_fuses``); every other case runs the two kernels in turn.

The RGB output layer's accumulators (int32, 25 MB per 1920x1080 decode) are likewise never
written out on the ``amx`` path: its tile kernel requantizes each pair of output rows to uint8
pixels in cache (``conv_transpose2d_pixels``).
"""

import numpy as np

from .cpu import JIT_PARALLEL  # first: the engine's start-up imports Numba
from numba import njit, prange

from .amxtiles import amx_configure, amx_release
from .convolution import (_check_deconv, _epilogue, _layer_path, _merged_fits, _padded,
                          _phase_amx_biased, _phase_weights, _pixel_unit, _requant_mode,
                          _run_deconv, _vnni_biases, conv_transpose2d, conv_transpose2d_requant)
from .elementwise import _check_requant, _output, _padded_bias, requantize, requantize_pixels
from .gdn import _WIDE_RANGE, _check_gdn, _check_out_max, _gdn_amx_row, igdn
from .packing import PackedWeights
from .reference import conv_transpose2d_shape


@njit(**JIT_PARALLEL)
def _deconv_amx_igdn(xf, rowlen, cin, w00, w01, w10, w11, blocks, nv, quads3, quads2, npix,
                     bias, coutp, requant, mult, shift, leaky_mult, leaky_shift, lo, hi, codes,
                     gnpix, gamma, gblocks, gnv, gquads, beta, gcoutp, imult, ishift, omax, out,
                     refused):
    # ``_deconv_amx`` into one row of ``codes``' type at a time, and ``_gdn_amx_row`` of that
    # row into ``out``: the row (240 KiB for g_s.4 at 1920x1080) and its accumulators stay in
    # the core's L2 cache between the two.
    h = out.shape[0] // 2
    wo, cout = out.shape[1], out.shape[2]
    wide = codes.itemsize == 2
    unused = np.zeros(1, np.int64)  # the forward GDN's multipliers (and its ``fast``, False)
    for a in prange(h):
        acc = np.empty(2 * npix * coutp, np.int32)
        row = np.empty((wo, cout), codes.dtype)
        for py in range(2):
            amx_configure()
            # Each column phase makes its own half of every pixel's accumulators.
            for px in range(2):
                wf = _phase_weights(py, px, w00, w01, w10, w11)
                quads = quads3 if px == 0 else quads2
                _phase_amx_biased(xf, (a + py) * rowlen + px * cin, rowlen, cin, 3 - py, wf,
                                  blocks, nv, quads, acc, px * coutp, 2 * coutp, npix, bias[py])
            amx_release()
            _epilogue(acc, coutp, row, requant, mult, shift, leaky_mult, leaky_shift, lo, hi)
            refused[2 * a + py] = _gdn_amx_row(row, wide, gnpix, gamma, gblocks, gnv, gquads,
                                               beta, gcoutp, True, unused, 0, imult, ishift,
                                               False, omax, out[2 * a + py])


def _fuses(x, packed, gpacked, codes_dtype) -> bool:
    """Whether ``_deconv_amx_igdn`` runs the pair: both layers on the tiles, the convolution
    as 8-bit blocks (not the 16-bit split, nor the output layer's merged phases), the GDN on 64 or
    128 channels (``convolution._gdn_amx_fits``)."""
    if x.dtype != np.int8 or _layer_path(packed, x) != "amx" or _merged_fits(packed):
        return False
    return _layer_path(gpacked, np.empty((0, 0, 0), codes_dtype)) == "amx"


def igdn_fuses(x, w, gamma, codes_dtype) -> bool:
    """Whether ``conv_transpose2d_requant_igdn`` runs as one kernel on ``x`` with these
    packed weights (``pack_deconv_weights``, ``pack_gdn_weights``) on the active path; where
    it does not, it runs the two layers in turn."""
    return (isinstance(w, PackedWeights) and isinstance(gamma, PackedWeights)
            and isinstance(x, np.ndarray) and _fuses(x, w, gamma, np.dtype(codes_dtype)))


def conv_transpose2d_requant_igdn(x, w, bias, mult, shift, leaky_mult, leaky_shift, lo, hi,
                                  codes_dtype, gamma, beta, gdn_mult, gdn_shift, out_max=127,
                                  out=None):
    """``igdn(conv_transpose2d_requant(x, w, bias, mult, shift, leaky_mult, leaky_shift, lo,
    hi, codes_dtype), gamma, beta, gdn_mult, gdn_shift, out_max)``, without the codes between
    them ever existing whole; ``out`` as for ``igdn``."""
    x, packed, bias = _check_deconv(x, w, bias)
    mult, shift = _check_requant(mult, shift, packed.cout)
    codes_dtype = np.dtype(codes_dtype)
    if codes_dtype not in (np.int8, np.int16):
        raise TypeError(f"codes_dtype must be int8 or int16, got {codes_dtype}")
    shape = conv_transpose2d_shape(x.shape, packed.cout)
    out_max = _check_out_max(out_max)
    # The GDN's operands are checked against codes of the convolution's output shape and type
    # (a one-pixel stand-in: the checks read only the channels and the type).
    _, gpacked, beta = _check_gdn(np.zeros((1, 1, shape[2]), codes_dtype), gamma, beta)
    gdn_mult, gdn_shift = _check_requant(gdn_mult, gdn_shift, shape[2])
    if not _fuses(x, packed, gpacked, codes_dtype):
        codes = conv_transpose2d_requant(x, packed, bias, mult, shift, leaky_mult, leaky_shift,
                                         lo, hi, codes_dtype)
        return igdn(codes, gpacked, beta, gdn_mult, gdn_shift, out_max, out=out)
    out = _output(out, shape, np.int8 if out_max == 127 else np.int16)
    h, wd, cin = x.shape
    npix = -(-wd // _pixel_unit(packed, "amx")) * _pixel_unit(packed, "amx")
    cols = npix + 4
    flat = _padded(x, (h + 3, cols, cin), 1, 1, 128, np.uint8)
    cp = packed.vcoutp
    phase_bias = _vnni_biases(packed, bias)  # (py, px) order
    rows = np.stack([np.concatenate(phase_bias[2 * py: 2 * py + 2]) for py in (0, 1)])
    gunit = _pixel_unit(gpacked, "amx")
    gnpix = -(-shape[1] // gunit) * gunit
    refused = np.zeros(shape[0], np.bool_)
    req = (mult, shift, int(leaky_mult), int(leaky_shift), int(lo), int(hi))
    requant = _requant_mode(req, np.empty((0, shape[2]), codes_dtype))
    _deconv_amx_igdn(flat, cols * cin, cin, *packed.tiles, packed.vblocks, packed.vnv,
                     packed.tquads[0], packed.tquads[1], npix, rows, cp, requant, mult, shift,
                     int(leaky_mult), int(leaky_shift), int(lo), int(hi),
                     np.empty(0, codes_dtype), gnpix, gpacked.gamma_tiles[0], gpacked.vblocks,
                     gpacked.vnv, gpacked.quads[0], _padded_bias(beta, gpacked.vcoutp),
                     gpacked.vcoutp, gdn_mult, gdn_shift, out_max, out, refused)
    if refused.any():
        raise ValueError(_WIDE_RANGE)
    return out


def conv_transpose2d_pixels(x, w, bias, mult, shift, width):
    """The RGB output layer and the pixel head: ``requantize(conv_transpose2d(x, w, bias),
    mult, shift, 0, 0, 0, 255)`` as uint8, of the first ``width`` columns (the crop of a
    padded image). On the amx path the layer's tile kernel requantizes each row in cache
    (``convolution._deconv_merged``); elsewhere the accumulators are made whole first."""
    x, packed, bias = _check_deconv(x, w, bias)
    mult, shift = _check_requant(mult, shift, packed.cout)
    h, wd = 2 * x.shape[0], 2 * x.shape[1]
    width = int(width)
    if not 1 <= width <= wd:
        raise ValueError(f"width must be 1 .. {wd}, got {width}")
    out = np.empty((h, width, packed.cout), np.uint8)
    if _layer_path(packed, x) == "amx" and _merged_fits(packed):
        return _run_deconv(x, packed, bias, (mult, shift, 0, 0, 0, 255), out)
    acc = conv_transpose2d(x, packed, bias)
    if packed.cout == 3:
        return requantize_pixels(acc, mult, shift, out)
    out[:] = requantize(np.ascontiguousarray(acc[:, :width]), mult, shift, 0, 0, 0, 255)
    return out
