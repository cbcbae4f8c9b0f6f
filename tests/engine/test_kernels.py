"""Bit-exact equality of the Numba kernels with the NumPy reference, at 1 and 2 threads, on
every multiply path this host has (``portable`` everywhere, ``avx2`` on AVX2 hosts,
``vnni`` on AVX-512 VNNI hosts, ``amx`` on hosts with AMX tiles).

Operands respect the engine's contract: every conv accumulator fits int32 (the loader proves
``sum |w| * |x| + |bias| < 2**31``), requantization shifts are in 1..40 and multipliers in
``[0, 2**31)``, so that no int64 intermediate reaches ``2**62``.
"""

import hashlib
import itertools
import os
import subprocess
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pytest

from qlic_codec.engine import fixedpoint, kernels, reference

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
W_ABS = 128  # the largest |int8 weight|

# (H, W, Cin, Cout): odd sizes, 1x1, and one moderate layer.
CONV_SHAPES = [
    (1, 1, 1, 1),
    (1, 7, 3, 2),
    (2, 3, 5, 4),
    (5, 5, 1, 7),
    (7, 4, 8, 3),
    (3, 13, 16, 20),
    (13, 11, 20, 6),
    (17, 9, 32, 24),
    (3, 13, 16, 64),  # the VNNI path's 64-channel blocks, 13 = 2 blocks of 6 pixels + 1
    (2, 8, 12, 128),
]
# (x_mode, w_mode): random operands, then every pairing of the extreme codes.
MODES = [("random", "random"), ("min", "min"), ("min", "max"), ("max", "min"), ("max", "max")]
# (out dtype, lo, hi) of the fused requantization.
OUT_SPECS = [
    (np.int8, -127, 127),
    (np.int8, -128, 127),
    (np.int16, 0, 255),
    (np.int16, -32768, 32767),
    (np.int32, I32_MIN, I32_MAX),
    (np.int32, -1000, 5000),
]
LEAKY = [(0, 0), (655, 16)]  # (leaky_mult, leaky_shift): off, LeakyReLU(~0.01)
ELEMENT_SHAPES = [(1, 1, 1), (1, 5, 3), (4, 3, 7), (9, 13, 20), (6, 11, 1)]
# GDN over channels that fill the wide register blocks, and a run past a 64-byte chunk.
GDN_SHAPES = ELEMENT_SHAPES + [(3, 7, 64), (2, 9, 130)]


def _spec_id(spec) -> str:
    return f"{np.dtype(spec[0]).name}_{spec[1]}_{spec[2]}"


def _rng(*key) -> np.random.Generator:
    """A generator seeded from the test's parameters, stable across runs and processes."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(got, want)


def _fill(rng, shape, dtype, mode, limit=None) -> np.ndarray:
    """Random values of ``dtype`` with ``|v| <= limit``, or all the smallest / largest one."""
    info = np.iinfo(dtype)
    lo, hi = int(info.min), int(info.max)
    if limit is not None:
        lo, hi = max(lo, -limit), min(hi, limit)
    if mode == "min":
        return np.full(shape, lo, dtype)
    if mode == "max":
        return np.full(shape, hi, dtype)
    return rng.integers(lo, hi, shape, endpoint=True, dtype=np.int64).astype(dtype)


def _conv_operands(rng, h, wd, cin, cout, k, dtype, x_mode="random", w_mode="random"):
    """x (H, W, Cin), w (Cout, K, K, Cin) int8, bias int32 within the no-overflow contract.

    int16 codes are bounded so that ``K*K*Cin*128*|x| + 2**24 < 2**31``; with extreme operands
    the bias takes all the remaining headroom, so accumulators reach +-(2**31 - 1).
    """
    bound = k * k * cin * W_ABS
    limit = 128 if np.dtype(dtype) == np.int8 else min(32768, (I32_MAX - 2**24) // bound)
    x = _fill(rng, (h, wd, cin), dtype, x_mode, limit)
    w = _fill(rng, (cout, k, k, cin), np.int8, w_mode)
    if x_mode == w_mode == "random":
        bias = rng.integers(-(2**16), 2**16, cout, endpoint=True).astype(np.int32)
    else:
        sign = rng.choice(np.array([-1, 1]), cout)
        bias = (sign * (I32_MAX - bound * limit)).astype(np.int32)
    return x, w, bias


def _requant_tables(rng, c, scale, target):
    """Per-channel int32 mult in [0, 2**31) and shift in 1..40 mapping ``|acc| ~ scale`` to about
    ``target``; channel 0 gets a random shift, channel 1 the largest mult, channel 2 mult 0 and
    channel 3 mult 1, shift 1 (exact halves for every odd value)."""
    mult = rng.integers(0, 2**31, c, dtype=np.int64)
    if c > 1:
        mult[1] = I32_MAX
    if c > 2:
        mult[2] = 0
    ideal = np.log2(np.maximum(mult, 1) * max(float(scale), 1.0) / max(float(target), 1.0))
    shift = np.clip(np.round(ideal) + rng.integers(-2, 3, c), 1, 40)
    shift[0] = rng.integers(1, 41)
    if c > 3:
        mult[3], shift[3] = 1, 1
    return mult.astype(np.int32), shift.astype(np.int32)


def _ref_conv2d_requant(x, w, bias, stride, pad_value, mult, shift, leaky_mult, leaky_shift, lo,
                        hi, out_dtype):
    acc = reference.conv2d(x, w, bias, stride, pad_value)
    return reference.requantize(acc, mult, shift, leaky_mult, leaky_shift, lo, hi).astype(
        out_dtype)


def _ref_conv_transpose2d_requant(x, w, bias, mult, shift, leaky_mult, leaky_shift, lo, hi,
                                  out_dtype):
    acc = reference.conv_transpose2d(x, w, bias)
    return reference.requantize(acc, mult, shift, leaky_mult, leaky_shift, lo, hi).astype(
        out_dtype)


# The reference, with the fused kernels spelled as their specification.
REF = types.SimpleNamespace(
    **{name: getattr(reference, name) for name in dir(reference) if not name.startswith("_")},
    conv2d_requant=_ref_conv2d_requant,
    conv_transpose2d_requant=_ref_conv_transpose2d_requant,
)


def _gdn_operands(rng, shape, x_mode, gamma_mode):
    c = shape[2]
    x = _fill(rng, shape, np.int8, x_mode)
    gamma = _fill(rng, (c, c), np.uint8, gamma_mode)
    beta = rng.integers(1, 2**16, c, endpoint=True).astype(np.int32)
    return x, gamma, beta


def _norm_scale(x, gamma, beta) -> float:
    return float(np.mean(reference._norm(x, gamma, beta)))


def _suite(ops) -> list:
    """Outputs of every public kernel on fixed operands, through ``ops`` (kernels or REF)."""
    rng = np.random.default_rng(20240611)
    outs = []
    for (h, wd, cin, cout), dtype, (k, stride) in itertools.product(
            [(1, 1, 3, 2), (5, 7, 6, 5), (17, 9, 32, 24), (3, 8, 16, 64)], [np.int8, np.int16],
            [(1, 1), (3, 2), (5, 1), (5, 2)]):
        for x_mode, w_mode in MODES[:3]:
            x, w, bias = _conv_operands(rng, h, wd, cin, cout, k, dtype, x_mode, w_mode)
            outs.append(ops.conv2d(x, w, bias, stride, -128))
            mult, shift = _requant_tables(rng, cout, 2**14, 100)
            outs.append(ops.conv2d_requant(x, w, bias, stride, 0, mult, shift, 655, 16, -127,
                                           127, np.int8))
            if k == 5 and stride == 2:
                outs.append(ops.conv_transpose2d(x, w, bias))
                outs.append(ops.conv_transpose2d_requant(x, w, bias, mult, shift, 0, 0, 0, 255,
                                                         np.int16))
    acc = rng.integers(I32_MIN, I32_MAX, (9, 7, 12), endpoint=True).astype(np.int32)
    mult, shift = _requant_tables(rng, 12, 2**30, 100)
    outs.append(ops.requantize(acc, mult, shift, 655, 16, -128, 127))
    x, gamma, beta = _gdn_operands(rng, (9, 7, 12), "random", "random")
    outs.append(ops.gdn(x, gamma, beta, rng.integers(0, 2**40, 12), 16))
    mult, shift = _requant_tables(rng, 12, 2**6 * _norm_scale(x, gamma, beta), 100)
    outs.append(ops.igdn(x, gamma, beta, mult, shift))
    outs.append(ops.scale_index(rng.integers(-(2**20), 2**20, (9, 7, 12)).astype(np.int32),
                                rng.integers(0, 2**20, 12), rng.integers(0, 2**30, 12), 24, 64))
    return outs


def _digest(outs) -> str:
    h = hashlib.sha256()
    for a in outs:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# A fresh interpreter: Numba's thread pool size is fixed per process by NUMBA_NUM_THREADS.
_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import numba
import test_kernels
from qlic_codec.engine import kernels
assert numba.get_num_threads() == int(sys.argv[2]), numba.get_num_threads()
assert kernels.active_path() == sys.argv[3], (kernels.active_path(), sys.argv[3])
print(test_kernels._digest(test_kernels._suite(kernels)))
"""


@pytest.fixture
def path(kernel_path):
    """The multiply path of the convolution and GDN kernels (``conftest.kernel_path``)."""
    return kernel_path


# --- convolutions -----------------------------------------------------------------------------

@pytest.mark.parametrize("pad_value", [0, -128])
@pytest.mark.parametrize("dtype", [np.int8, np.int16], ids=["int8", "int16"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_conv2d(path, threads, k, stride, dtype, pad_value):
    rng = _rng("conv2d", k, stride, np.dtype(dtype).name, pad_value)
    for (h, wd, cin, cout), (x_mode, w_mode) in itertools.product(CONV_SHAPES, MODES):
        x, w, bias = _conv_operands(rng, h, wd, cin, cout, k, dtype, x_mode, w_mode)
        want = reference.conv2d(x, w, bias, stride, pad_value)
        assert want.shape == (-(-h // stride), -(-wd // stride), cout)
        _assert_same(kernels.conv2d(x, w, bias, stride, pad_value), want)


def test_conv2d_reaches_int32_extremes(path, threads):
    # All -128 codes, weights and padding, and the bias taking the remaining headroom.
    x, w, bias = _conv_operands(_rng("edge"), 3, 3, 4, 2, 3, np.int8, "min", "min")
    bias[:] = [I32_MAX - 9 * 4 * W_ABS**2, -I32_MAX]
    out = kernels.conv2d(x, w, bias, 1, -128)
    _assert_same(out, reference.conv2d(x, w, bias, 1, -128))
    assert (out[..., 0] == I32_MAX).all() and (out[..., 1] == -I32_MAX + 9 * 4 * W_ABS**2).all()


def test_wide_conv_reaches_int32_extremes(path, threads):
    # The same on a layer wide enough for every path's register blocks: the VNNI path offsets
    # the -128 codes to 0 and folds 128 * sum(w) into the bias, wrapping modulo 2**32.
    x, w, bias = _conv_operands(_rng("edge wide"), 3, 7, 4, 64, 3, np.int8, "min", "min")
    top = I32_MAX - 9 * 4 * W_ABS**2
    bias[:] = np.where(np.arange(64) % 2 == 0, top, -I32_MAX)
    out = kernels.conv2d(x, w, bias, 1, -128)
    _assert_same(out, reference.conv2d(x, w, bias, 1, -128))
    assert (out[..., 0::2] == I32_MAX).all()
    out = kernels.conv_transpose2d(x, w.repeat(2, axis=1).repeat(2, axis=2)[:, :5, :5], bias)
    _assert_same(out, reference.conv_transpose2d(
        x, w.repeat(2, axis=1).repeat(2, axis=2)[:, :5, :5], bias))


@pytest.mark.parametrize("dtype", [np.int8, np.int16], ids=["int8", "int16"])
def test_conv_transpose2d(path, threads, dtype):
    rng = _rng("deconv", np.dtype(dtype).name)
    for (h, wd, cin, cout), (x_mode, w_mode) in itertools.product(CONV_SHAPES, MODES):
        x, w, bias = _conv_operands(rng, h, wd, cin, cout, 5, dtype, x_mode, w_mode)
        want = reference.conv_transpose2d(x, w, bias)
        assert want.shape == (2 * h, 2 * wd, cout)
        _assert_same(kernels.conv_transpose2d(x, w, bias), want)


# Layers that the amx path runs on tiles (channels in blocks of 32): (H, W, Cin, Cout, K).
# Widths leave partial 32-pixel blocks; 192 channels are three 64-channel blocks, 96 three
# blocks of 32. The last three have runs that are not whole 64-byte rows (3x3 of 48 and 72
# channels, 5x5 of 3), padded with zero weights.
AMX_SHAPES = [(3, 1, 64, 32, 1), (2, 33, 128, 64, 5), (3, 65, 64, 192, 1), (2, 40, 128, 128, 5),
              (4, 7, 64, 96, 5), (3, 9, 48, 64, 3), (2, 20, 72, 32, 3), (4, 5, 3, 32, 5)]


def _check_amx_conv(path, rng, i, shape, dtype, stride, leaky):
    """A convolution of ``shape`` (h, w, cin, cout, k), the ``i``-th of a list (its operand
    modes and padding code), against the reference, plain and requantized, on a layer that
    the amx path runs on its tiles; returns its operands and packed weights."""
    h, wd, cin, cout, k = shape
    x_mode, w_mode = MODES[i % len(MODES)]
    pad_value = (0, -128)[i % 2]
    x, w, bias = _conv_operands(rng, h, wd, cin, cout, k, dtype, x_mode, w_mode)
    packed = kernels.pack_conv_weights(w)
    if path == "amx":
        assert kernels._layer_path(packed, x) == "amx"
    want = reference.conv2d(x, w, bias, stride, pad_value)
    _assert_same(kernels.conv2d(x, packed, bias, stride, pad_value), want)
    mult, shift = _requant_tables(rng, cout, np.abs(want).mean(), 30)
    args = (x, packed, bias, stride, pad_value, mult, shift, *leaky, -127, 127, np.int8)
    _assert_same(kernels.conv2d_requant(*args), _ref_conv2d_requant(x, w, *args[2:]))
    return x, w, bias, packed


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
@pytest.mark.parametrize("stride", [1, 2])
def test_layers_that_fill_amx_tiles(path, threads, stride, dtype):
    # On the amx path these run on the tiles (16-bit codes as a high and a low byte); every
    # other path runs them too, as a check of its wide blocks.
    rng = _rng("amx", stride, np.dtype(dtype).name)
    for i, (h, wd, cin, cout, k) in enumerate(AMX_SHAPES):
        x, w, bias, _ = _check_amx_conv(path, rng, i, (h, wd, cin, cout, k), dtype, stride,
                                        LEAKY[i % 2])
        if k == 5 and stride == 1:
            packed = kernels.pack_deconv_weights(w)
            if path == "amx":
                assert kernels._layer_path(packed, x) == "amx"
            want = reference.conv_transpose2d(x, w, bias)
            _assert_same(kernels.conv_transpose2d(x, packed, bias), want)
            mult, shift = _requant_tables(rng, cout, np.abs(want).mean(), 1000)
            args = (x, packed, bias, mult, shift, *LEAKY[i % 2], -2047, 2047, np.int16)
            _assert_same(kernels.conv_transpose2d_requant(*args),
                         _ref_conv_transpose2d_requant(x, w, *args[2:]))


# Stride-1 layers that the amx path runs in groups of rows taken as one run of the padded
# input (``convolution._conv_amx_rows``): groups of one to a few rows (the budget shrunk), a
# last group shorter than the others, 1-pixel-wide rows, runs of a few pixels' bytes (3
# channels: a 64-byte chunk spans 21 pixels past the row) and runs of several chunks.
GROUP_SHAPES = [(11, 7, 64, 64, 3), (9, 1, 48, 32, 3), (13, 5, 3, 32, 5), (6, 30, 72, 96, 1),
                (17, 3, 128, 32, 3)]


@pytest.mark.parametrize("group_pixels", [40, 1024])
@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_stride_1_layers_in_groups_of_rows(path, threads, dtype, group_pixels, monkeypatch):
    from qlic_codec.engine import convolution
    monkeypatch.setattr(convolution, "_GROUP_PIXELS", group_pixels)
    rng = _rng("groups", np.dtype(dtype).name, group_pixels)
    several = 0  # shapes that run as more than one group
    for i, (h, wd, cin, cout, k) in enumerate(GROUP_SHAPES):
        packed = _check_amx_conv(path, rng, i, (h, wd, cin, cout, k), dtype, 1, (0, 0))[3]
        several += convolution._row_groups(h, wd + k - 1, packed.vcoutp) < h
    assert several >= (4 if group_pixels == 40 else 0)
    for h, wd in ((0, 5), (5, 0)):  # no rows, no columns
        x, w, bias = _conv_operands(rng, h, wd, 64, 32, 3, dtype, "random", "random")
        _assert_same(kernels.conv2d(x, w, bias, 1, 0), reference.conv2d(x, w, bias, 1, 0))


@pytest.mark.parametrize("cout", [3, 4, 5])
def test_output_layer_on_12_bit_codes(path, threads, cout):
    # The RGB output layer reading a 12-bit inverse GDN: 128 channels, runs of several 64-byte
    # chunks, widths that leave a partial block of pixels, extreme codes at both ends. On the
    # VNNI path this is the int16 dot-product kernel (vpdpwssd), not the portable fallback.
    rng = _rng("output layer", cout)
    for (h, wd), x_mode in itertools.product([(3, 13), (2, 1), (1, 26)],
                                             ["random", "min", "max"]):
        x = _fill(rng, (h, wd, 128), np.int16, x_mode, 2047)
        w = _fill(rng, (cout, 5, 5, 128), np.int8, "random")
        bias = rng.integers(-(2**20), 2**20, cout, endpoint=True).astype(np.int32)
        packed = kernels.pack_deconv_weights(w)
        if path == "amx":  # 4 phases of up to 4 channels fill the tiles' 16 columns; 5 do not
            assert kernels._layer_path(packed, x) == ("amx" if cout <= 4 else "vnni")
        elif path == "vnni":
            assert kernels._layer_path(packed, x) == "vnni"
        _assert_same(kernels.conv_transpose2d(x, packed, bias),
                     reference.conv_transpose2d(x, w, bias))
        _assert_same(kernels.conv2d(x, w, bias, 1, 0), reference.conv2d(x, w, bias, 1, 0))


# Output layers that the amx path runs as one 3x3 convolution into their four phases'
# channels: heights across groups of 16 input rows (and their rows above and below), widths
# that leave a partial block of 32 pixels, runs of 3 * Cin bytes that are not whole chunks.
MERGED_SHAPES = [(9, 17, 128), (17, 5, 64), (1, 1, 128), (18, 33, 48), (2, 16, 192),
                 (3, 40, 16), (33, 3, 8)]


@pytest.mark.parametrize("cout", [1, 2, 3, 4])
def test_output_layer_as_merged_phases(path, threads, cout):
    rng = _rng("merged", cout)
    cases = itertools.product(MERGED_SHAPES, [np.int16, np.int8], MODES)
    for i, ((h, wd, cin), dtype, (x_mode, w_mode)) in enumerate(cases):
        x, w, bias = _conv_operands(rng, h, wd, cin, cout, 5, dtype, x_mode, w_mode)
        packed = kernels.pack_deconv_weights(w)
        if path == "amx":
            assert kernels._layer_path(packed, x) == "amx"
        want = reference.conv_transpose2d(x, w, bias)
        _assert_same(kernels.conv_transpose2d(x, packed, bias), want)
        mult, shift = _requant_tables(rng, cout, np.abs(want).mean(), 30)
        args = (x, packed, bias, mult, shift, *LEAKY[i % 2], -127, 127, np.int8)
        _assert_same(kernels.conv_transpose2d_requant(*args),
                     _ref_conv_transpose2d_requant(x, w, *args[2:]))


@pytest.mark.parametrize("cout", [1, 3, 4, 5])
def test_output_layer_with_the_pixel_head(path, threads, cout):
    # The RGB output layer requantized to uint8 pixels and cropped to a width, in one step on
    # the amx path's merged phases (up to 4 channels); the same pixels on every path.
    rng = _rng("pixels", cout)
    cases = itertools.product(MERGED_SHAPES, [np.int16, np.int8])
    for i, ((h, wd, cin), dtype) in enumerate(cases):
        x_mode, w_mode = MODES[i % len(MODES)]
        x, w, bias = _conv_operands(rng, h, wd, cin, cout, 5, dtype, x_mode, w_mode)
        packed = kernels.pack_deconv_weights(w)
        acc = reference.conv_transpose2d(x, w, bias)
        mult, shift = _requant_tables(rng, cout, np.abs(acc).mean(), 128)
        for width in sorted({1, 2 * wd - 1, 2 * wd} - {0}):
            want = reference.requantize(acc[:, :width], mult, shift, 0, 0, 0, 255)
            got = kernels.conv_transpose2d_pixels(x, packed, bias, mult, shift, width)
            assert got.dtype == np.uint8 and got.shape == (2 * h, width, cout)
            _assert_same(got.astype(np.int32), want)
    with pytest.raises(ValueError, match="width"):
        kernels.conv_transpose2d_pixels(x, packed, bias, mult, shift, 2 * wd + 1)


def test_output_layer_merged_on_extreme_codes(path, threads):
    # Every 16-bit code, -32768 and 32767 included, so that the high bytes reach -128 and
    # 127: small weights keep the sums inside int32.
    rng = _rng("merged extreme")
    for x_mode in ("random", "min", "max"):
        x = _fill(rng, (9, 19, 64), np.int16, x_mode)
        w = rng.integers(-2, 3, (3, 5, 5, 64)).astype(np.int8)
        bias = rng.integers(-(2**20), 2**20, 3).astype(np.int32)
        packed = kernels.pack_deconv_weights(w)
        if path == "amx":
            assert kernels._layer_path(packed, x) == "amx"
        _assert_same(kernels.conv_transpose2d(x, packed, bias),
                     reference.conv_transpose2d(x, w, bias))


def test_pad_value_must_be_a_code(path):
    x, w, bias = np.zeros((2, 3, 4), np.int16), np.ones((4, 3, 3, 4), np.int8), np.zeros(4, np.int32)
    with pytest.raises(ValueError, match="pad_value"):
        kernels.conv2d(x, w, bias, 1, 40000)
    with pytest.raises(ValueError, match="pad_value"):
        kernels.conv2d(x.astype(np.int8), w, bias, 1, 200)


@pytest.mark.parametrize("leaky", LEAKY, ids=["linear", "leaky"])
@pytest.mark.parametrize("out_spec", OUT_SPECS, ids=_spec_id)
def test_conv2d_requant(path, threads, out_spec, leaky):
    out_dtype, lo, hi = out_spec
    rng = _rng("conv2d_requant", _spec_id(out_spec), leaky)
    cases = itertools.product([(1, 1), (1, 2), (3, 1), (3, 2), (5, 1), (5, 2)],
                              [np.int8, np.int16], CONV_SHAPES)
    for i, ((k, stride), dtype, (h, wd, cin, cout)) in enumerate(cases):
        x_mode, w_mode = MODES[i % len(MODES)]
        pad_value = (0, -128)[i // len(MODES) % 2]
        x, w, bias = _conv_operands(rng, h, wd, cin, cout, k, dtype, x_mode, w_mode)
        scale = np.abs(reference.conv2d(x, w, bias, stride, pad_value)).mean()
        mult, shift = _requant_tables(rng, cout, scale, (hi - lo) / 4)
        args = (x, w, bias, stride, pad_value, mult, shift, *leaky, lo, hi, out_dtype)
        _assert_same(kernels.conv2d_requant(*args), _ref_conv2d_requant(*args))


@pytest.mark.parametrize("leaky", LEAKY, ids=["linear", "leaky"])
@pytest.mark.parametrize("out_spec", OUT_SPECS, ids=_spec_id)
def test_conv_transpose2d_requant(path, threads, out_spec, leaky):
    out_dtype, lo, hi = out_spec
    rng = _rng("deconv_requant", _spec_id(out_spec), leaky)
    for i, (dtype, (h, wd, cin, cout)) in enumerate(
            itertools.product([np.int8, np.int16], CONV_SHAPES)):
        x_mode, w_mode = MODES[i % len(MODES)]
        x, w, bias = _conv_operands(rng, h, wd, cin, cout, 5, dtype, x_mode, w_mode)
        scale = np.abs(reference.conv_transpose2d(x, w, bias)).mean()
        mult, shift = _requant_tables(rng, cout, scale, (hi - lo) / 4)
        args = (x, w, bias, mult, shift, *leaky, lo, hi, out_dtype)
        _assert_same(kernels.conv_transpose2d_requant(*args), _ref_conv_transpose2d_requant(*args))


def test_packed_weights(path, threads):
    # Layers wider than one register block, odd widths, and weights packed once and reused.
    rng = _rng("packed", threads)
    for (h, wd, cin, cout), dtype in itertools.product(
            [(1, 1, 48, 40), (6, 13, 64, 40), (3, 5, 33, 9), (4, 7, 96, 3), (3, 9, 32, 192)],
            [np.int8, np.int16]):
        for k, stride in [(5, 2), (3, 1), (1, 1)]:
            x, w, bias = _conv_operands(rng, h, wd, cin, cout, k, dtype)
            packed = kernels.pack_conv_weights(w)
            want = reference.conv2d(x, w, bias, stride, -128)
            _assert_same(kernels.conv2d(x, packed, bias, stride, -128), want)
            mult, shift = _requant_tables(rng, cout, np.abs(want).mean(), 64)
            args = (bias, stride, -128, mult, shift, 655, 16, -127, 127, np.int8)
            _assert_same(kernels.conv2d_requant(x, packed, *args),
                         _ref_conv2d_requant(x, w, *args))
        x, w, bias = _conv_operands(rng, h, wd, cin, cout, 5, dtype)
        packed = kernels.pack_deconv_weights(w)
        want = reference.conv_transpose2d(x, w, bias)
        _assert_same(kernels.conv_transpose2d(x, packed, bias), want)
        mult, shift = _requant_tables(rng, cout, np.abs(want).mean(), 64)
        args = (bias, mult, shift, 0, 0, -127, 127, np.int8)
        _assert_same(kernels.conv_transpose2d_requant(x, packed, *args),
                     _ref_conv_transpose2d_requant(x, w, *args))
    x, gamma, beta = _gdn_operands(rng, (3, 7, 40), "random", "random")
    packed = kernels.pack_gdn_weights(gamma)
    mult = np.floor(2.0 ** rng.uniform(0, 44, 40)).astype(np.int64)
    _assert_same(kernels.gdn(x, packed, beta, mult, 16), reference.gdn(x, gamma, beta, mult, 16))
    mult, shift = _requant_tables(rng, 40, 64 * _norm_scale(x, gamma, beta), 64)
    _assert_same(kernels.igdn(x, packed, beta, mult, shift),
                 reference.igdn(x, gamma, beta, mult, shift))


def test_packed_weights_with_another_bias(path, threads):
    # The VNNI and AMX paths keep each packed layer's offset-cancelling bias for the bias it
    # was made from: a call with another bias (or the same array changed in place) gets its
    # own.
    rng = _rng("packed bias")
    x, w, bias = _conv_operands(rng, 4, 9, 64, 32, 5, np.int8)
    for pack, conv, ref in ((kernels.pack_conv_weights,
                             lambda p, b: kernels.conv2d(x, p, b, 2, -128),
                             lambda b: reference.conv2d(x, w, b, 2, -128)),
                            (kernels.pack_deconv_weights,
                             lambda p, b: kernels.conv_transpose2d(x, p, b),
                             lambda b: reference.conv_transpose2d(x, w, b))):
        packed = pack(w)
        other = bias + 1000
        for b in (bias, other, None, other, bias):
            if b is None:
                other -= 7  # in place: the next call sees the same array, changed
                continue
            _assert_same(conv(packed, b), ref(b))


def test_packed_weights_of_the_wrong_kind():
    rng = _rng("packed kind")
    x, w, bias = _conv_operands(rng, 3, 3, 4, 2, 5, np.int8)
    with pytest.raises(TypeError):
        kernels.conv2d(x, kernels.pack_deconv_weights(w), bias, 1, 0)
    with pytest.raises(TypeError):
        kernels.conv_transpose2d(x, kernels.pack_conv_weights(w), bias)
    with pytest.raises(TypeError):
        kernels.gdn(x, kernels.pack_conv_weights(w), np.ones(4, np.int32), np.ones(4, np.int64), 1)
    with pytest.raises(ValueError):
        kernels.set_path("no-such-path")


# --- element-wise -----------------------------------------------------------------------------

@pytest.mark.parametrize("leaky", LEAKY, ids=["linear", "leaky"])
def test_requantize(threads, leaky):
    rng = _rng("requantize", leaky)
    shapes = ELEMENT_SHAPES + [(7,), (3, 5), (2, 3, 4, 6)]
    for shape, (lo, hi), mode in itertools.product(
            shapes, [(-127, 127), (0, 255), (-32768, 32767), (I32_MIN, I32_MAX)],
            ["random", "small", "min", "max"]):
        if mode == "small":
            acc = rng.integers(-(2**16), 2**16, shape).astype(np.int32)
        else:
            acc = _fill(rng, shape, np.int32, mode)
        c = shape[-1]
        mult, shift = _requant_tables(rng, c, 2**16 if mode == "small" else 2**30, (hi - lo) / 4)
        want = reference.requantize(acc, mult, shift, *leaky, lo, hi)
        _assert_same(kernels.requantize(acc, mult, shift, *leaky, lo, hi), want)


def test_requantize_clamped(threads):
    # The synthesis' codes of y: clipped to +-clamp first, then requantized and narrowed.
    rng = _rng("requantize clamped")
    hit = 0
    for shape, (lo, hi, dtype), mode in itertools.product(
            [(1, 1, 1), (3, 5, 16), (2, 7, 192)],
            [(-32767, 32767, np.int16), (-127, 127, np.int8), (-5, 9, np.int16)],
            ["random", "small", "min", "max"]):
        if mode == "small":
            acc = rng.integers(-(2**20), 2**20, shape).astype(np.int32)
        else:
            acc = _fill(rng, shape, np.int32, mode)
        clamp = int(rng.integers(1, 2**22))
        mult, shift = _requant_tables(rng, shape[-1], 2**16, (hi - lo) / 4)
        want = reference.requantize_clamped(acc, clamp, mult, shift, lo, hi, dtype)
        _assert_same(kernels.requantize_clamped(acc, clamp, mult, shift, lo, hi, dtype), want)
        hit += np.count_nonzero(np.abs(acc) > clamp)
    assert hit > 0  # the clip mattered
    with pytest.raises(ValueError, match="codes"):
        kernels.requantize_clamped(acc, 5, mult, shift, -32768, 32768, np.int16)


def test_requantize_pixels(threads):
    # The fused pixel head: requantize to 0..255 as uint8, columns past the width dropped.
    rng = _rng("pixels")
    inside = 0
    for (rows, w, width), mode in itertools.product([(1, 1, 1), (3, 17, 17), (4, 33, 20)],
                                                    ["random", "small", "min", "max"]):
        if mode == "small":
            acc = rng.integers(-(2**16), 2**16, (rows, w, 3)).astype(np.int32)
        else:
            acc = _fill(rng, (rows, w, 3), np.int32, mode)
        mult, shift = _requant_tables(rng, 3, 2**16 if mode == "small" else 2**30, 64)
        want = reference.requantize(acc, mult, shift, 0, 0, 0, 255)[:, :width].astype(np.uint8)
        out = np.full((rows, width, 3), 7, np.uint8)
        assert kernels.requantize_pixels(acc, mult, shift, out) is out
        _assert_same(out, want)
        inside += np.count_nonzero((want > 0) & (want < 255))
    assert inside > 0  # not every value clamped
    with pytest.raises(ValueError, match="out"):
        kernels.requantize_pixels(acc, mult, shift, np.empty((rows, w + 1, 3), np.uint8))


def test_copy_channels(threads):
    # The slices' gathers: a run of channels into rows and channels of a wider array, int8
    # into int8 / int16, int32 codes into int8, int32 into int32; the rest of ``dst`` kept.
    from qlic_codec.engine.slicekernels import copy_channels
    rng = _rng("copy channels")
    for (rows, w, cs, cd), (st, dt) in itertools.product(
            [(1, 1, 1, 1), (3, 7, 48, 72), (5, 33, 384, 48)],
            [(np.int8, np.int8), (np.int8, np.int16), (np.int32, np.int8), (np.int32, np.int32)]):
        src = _fill(rng, (rows, w, cs), st, "random", 127)
        dst = _fill(rng, (rows + 3, w, cd), dt, "random", 127)
        n = min(cs, cd) // 2 or 1
        c0, d0, r0 = cs - n, cd - n, min(2, 3)
        want = dst.copy()
        want[r0:r0 + rows, :, d0:d0 + n] = src[:, :, c0:c0 + n]
        assert copy_channels(src, c0, n, dst, r0, d0) is dst
        _assert_same(dst, want)
    with pytest.raises(ValueError, match="does not fit"):
        copy_channels(src, 0, cs + 1, dst, 0, 0)
    with pytest.raises(ValueError, match="contiguous"):
        copy_channels(src[:, ::2], 0, 1, dst, 0, 0)


@pytest.mark.parametrize("leaky", LEAKY + [(1, 1), (3, 2)], ids=["linear", "leaky", "l1", "l2"])
def test_requantize_rounding_ties(threads, leaky):
    # mult 1, shift 1..3 (and leaky 1/2, 3/4): every residue of the shift, exact halves included.
    acc = np.arange(-64, 64, dtype=np.int32).reshape(-1, 1).repeat(3, axis=1)
    mult = np.ones(3, np.int32)
    shift = np.array([1, 2, 3], np.int32)
    want = reference.requantize(acc, mult, shift, *leaky, -127, 127)
    _assert_same(kernels.requantize(acc, mult, shift, *leaky, -127, 127), want)
    np.testing.assert_array_equal(want[:, 0][acc[:, 0] >= 0], (acc[:, 0][acc[:, 0] >= 0] + 1) >> 1)


@pytest.mark.parametrize("shift", [0, 1, 16, 30])
def test_gdn(path, threads, shift):
    rng = _rng("gdn", shift)
    for shape, x_mode, gamma_mode in itertools.product(
            GDN_SHAPES, ["random", "min", "max"], ["random", "min", "max"]):
        x, gamma, beta = _gdn_operands(rng, shape, x_mode, gamma_mode)
        c = shape[2]
        # Log-uniform multipliers: quotients from 0 through clamped.
        mult = np.floor(2.0 ** rng.uniform(0, 44, c)).astype(np.int64)
        want = reference.gdn(x, gamma, beta, mult, shift)
        _assert_same(kernels.gdn(x, gamma, beta, mult, shift), want)


def test_gdn_rounding_ties(path, threads):
    # norm = 1: x * mult / 2 is an exact half for odd x, which rounds away from zero.
    x = np.arange(-128, 128, dtype=np.int8).reshape(16, 16, 1)
    gamma, beta, mult = np.zeros((1, 1), np.uint8), np.ones(1, np.int32), np.ones(1, np.int64)
    want = reference.gdn(x, gamma, beta, mult, 1)
    _assert_same(kernels.gdn(x, gamma, beta, mult, 1), want)
    assert want[0, 1, 0] == -64 and want[8, 1, 0] == 1 and want[8, 3, 0] == 2


def test_igdn(path, threads):
    rng = _rng("igdn")
    for shape, x_mode, gamma_mode in itertools.product(
            GDN_SHAPES, ["random", "min", "max"], ["random", "min", "max"]):
        x, gamma, beta = _gdn_operands(rng, shape, x_mode, gamma_mode)
        scale = 64 * _norm_scale(x, gamma, beta)
        mult, shift = _requant_tables(rng, shape[2], scale, 64)
        want = reference.igdn(x, gamma, beta, mult, shift)
        _assert_same(kernels.igdn(x, gamma, beta, mult, shift), want)


def test_kernels_write_into_a_given_output(path, threads):
    # Rows of a larger buffer, as the bands give them: the same codes as a new output, the
    # rows around untouched, and the given array returned.
    rng = _rng("out", threads)
    x, w, bias = _conv_operands(rng, 6, 9, 16, 20, 5, np.int8, "random", "random")
    mult, shift = _requant_tables(rng, 20, np.abs(reference.conv2d(x, w, bias, 1, 0)).mean(), 32)
    gx, gamma, beta = _gdn_operands(rng, (6, 9, 16), "random", "random")
    gmult = np.floor(2.0 ** rng.uniform(0, 30, 16)).astype(np.int64)
    imult, ishift = _requant_tables(rng, 16, 64 * _norm_scale(gx, gamma, beta), 64)
    calls = [
        (kernels.conv2d_requant, (x, w, bias, 2, 0, mult, shift, 0, 0, -127, 127, np.int8)),
        (kernels.conv_transpose2d_requant, (x, w, bias, mult, shift, 0, 0, -127, 127,
                                            np.int16)),
        (kernels.gdn, (gx, gamma, beta, gmult, 5)),
        (kernels.igdn, (gx, gamma, beta, imult, ishift, 2047)),
    ]
    for fn, args in calls:
        want = fn(*args)
        buf = np.full((len(want) + 3,) + want.shape[1:], 77, want.dtype)
        got = fn(*args, out=buf[2: 2 + len(want)])
        assert got.base is buf or got.base is buf.base
        _assert_same(got, want)
        assert (buf[:2] == 77).all() and (buf[2 + len(want):] == 77).all()
        for bad in (np.empty(want.shape, np.int32 if want.dtype != np.int32 else np.int8),
                    np.empty((len(want) + 1,) + want.shape[1:], want.dtype),
                    np.empty(want.shape[::-1], want.dtype).transpose(2, 1, 0)):
            with pytest.raises(ValueError, match="out"):
                fn(*args, out=bad)


def _gdn16_operands(rng, shape, x_mode, gamma_mode):
    """16-bit GDN inputs: full range (-32768 excluded), its extremes, or 12-bit codes."""
    c = shape[2]
    if x_mode == "12bit":
        x = _fill(rng, shape, np.int16, "random", 2047)
    else:
        x = _fill(rng, shape, np.int16, x_mode, 32767)
    gamma = _fill(rng, (c, c), np.uint8, gamma_mode)
    beta = rng.integers(1, 2**16, c, endpoint=True).astype(np.int32)
    return x, gamma, beta


GDN16_CASES = list(itertools.product(GDN_SHAPES + [(5, 30, 128)], ["random", "min", "max", "12bit"],
                                     ["random", "max"]))


@pytest.mark.parametrize("shift", [0, 16, 30])
def test_gdn_16_bit_inputs(path, threads, shift):
    rng = _rng("gdn16", shift)
    for shape, x_mode, gamma_mode in GDN16_CASES:
        x, gamma, beta = _gdn16_operands(rng, shape, x_mode, gamma_mode)
        mult = np.floor(2.0 ** rng.uniform(0, 44, shape[2])).astype(np.int64)
        want = reference.gdn(x, gamma, beta, mult, shift)
        _assert_same(kernels.gdn(x, gamma, beta, mult, shift), want)


def test_igdn_16_bit_inputs(path, threads):
    rng = _rng("igdn16")
    for shape, x_mode, gamma_mode in GDN16_CASES:
        x, gamma, beta = _gdn16_operands(rng, shape, x_mode, gamma_mode)
        c = shape[2]
        # Multipliers below 2**16 keep x * norm * mult below 2**62 (|x| < 2**15, norm < 2**31),
        # the bound the loader proves for every model; shifts map the products to about 64.
        mult = rng.integers(0, 2**16, c, dtype=np.int64)
        scale = max(1.0, float(np.mean(np.abs(x.astype(np.int64))))) * _norm_scale(x, gamma, beta)
        ideal = np.log2(np.maximum(mult, 1) * scale / 64)
        shift = np.clip(np.round(ideal) + rng.integers(-2, 3, c), 1, 62).astype(np.int32)
        want = reference.igdn(x, gamma, beta, mult.astype(np.int32), shift)
        got = kernels.igdn(x, gamma, beta, mult.astype(np.int32), shift)
        _assert_same(got, want)
        if x_mode == "12bit" and c > 8:  # not all clamped: the test sees real quotients
            assert np.count_nonzero(np.abs(want) < 127) > want.size // 4


@pytest.mark.parametrize("out_max", [255, 2047])
def test_gdn_wide_outputs(path, threads, out_max):
    # 9- to 12-bit output codes (int16) for a convolution to read, from 8- and 16-bit inputs:
    # multipliers from quotients near zero through clamped, so the wider restoring division
    # meets every bit and the clamp.
    rng = _rng("gdn wide out", out_max)
    for shape, x_mode, gamma_mode in GDN16_CASES:
        x, gamma, beta = _gdn16_operands(rng, shape, x_mode, gamma_mode)
        for x_in in (x, np.clip(x, -128, 127).astype(np.int8)):
            # 2 * |x * mult| within int64 (the loader's bound), for 16- and 8-bit inputs.
            top = 44 if x_in.dtype == np.int16 else 52
            mult = np.floor(2.0 ** rng.uniform(0, top, shape[2])).astype(np.int64)
            for shift in (0, 16):
                want = reference.gdn(x_in, gamma, beta, mult, shift, out_max)
                assert want.dtype == np.int16
                _assert_same(kernels.gdn(x_in, gamma, beta, mult, shift, out_max), want)
    x = _fill(rng, (6, 30, 64), np.int16, "random", 2047)
    gamma, beta = _fill(rng, (64, 64), np.uint8, "random"), np.full(64, 2**16, np.int32)
    want = reference.gdn(x, gamma, beta, np.full(64, 2**20, np.int64), 0, out_max)
    assert 127 < np.abs(want).max() <= out_max  # the wider codes are really used


@pytest.mark.parametrize("out_max", [255, 2047])
def test_igdn_wide_outputs(path, threads, out_max):
    rng = _rng("igdn wide out", out_max)
    for shape, x_mode, gamma_mode in GDN16_CASES:
        x, gamma, beta = _gdn16_operands(rng, shape, x_mode, gamma_mode)
        c = shape[2]
        mult = rng.integers(0, 2**16, c, dtype=np.int64)
        scale = max(1.0, float(np.mean(np.abs(x.astype(np.int64))))) * _norm_scale(x, gamma, beta)
        ideal = np.log2(np.maximum(mult, 1) * scale / (out_max // 2))
        shift = np.clip(np.round(ideal) + rng.integers(-2, 3, c), 1, 62).astype(np.int32)
        want = reference.igdn(x, gamma, beta, mult.astype(np.int32), shift, out_max)
        _assert_same(kernels.igdn(x, gamma, beta, mult.astype(np.int32), shift, out_max), want)
        if x_mode == "12bit" and c > 8:
            assert np.count_nonzero((np.abs(want) > 127) & (np.abs(want) < out_max)) > 0


@pytest.mark.parametrize("out_max", [0, 126, 128, 4095, 32767])
def test_gdn_output_range_must_be_a_code_width(out_max):
    x, gamma, beta = np.ones((2, 3, 4), np.int8), np.ones((4, 4), np.uint8), np.ones(4, np.int32)
    for module in (reference, kernels):
        with pytest.raises(ValueError, match="output range"):
            module.gdn(x, gamma, beta, np.ones(4, np.int64), 1, out_max)
        with pytest.raises(ValueError, match="output range"):
            module.igdn(x, gamma, beta, np.ones(4, np.int32), np.ones(4, np.int32), out_max)


def test_gdn_16_bit_inputs_out_of_contract_are_refused(path, threads):
    # The kernels find -32768 as they read their rows: one such code anywhere is refused.
    gamma, beta = np.ones((4, 4), np.uint8), np.ones(4, np.int32)
    for row in (0, 4):
        x = np.ones((5, 3, 4), np.int16)
        x[row, 2, 3] = -32768
        with pytest.raises(ValueError, match="-32767, 32767"):
            kernels.gdn(x, gamma, beta, np.ones(4, np.int64), 1)
        with pytest.raises(ValueError, match="-32767, 32767"):
            kernels.igdn(x, gamma, beta, np.ones(4, np.int32), np.ones(4, np.int32))
    x[4, 2, 3] = -32767
    kernels.gdn(x, gamma, beta, np.ones(4, np.int64), 1)


# GDNs whose gamma fills AMX tiles (64 or 128 channels): widths that leave a partial block of
# 32 pixels, and a width of one.
AMX_GDN_SHAPES = [(3, 7, 64), (2, 33, 128), (4, 1, 128), (2, 70, 64)]


@pytest.mark.parametrize("inverse", [False, True], ids=["gdn", "igdn"])
def test_gdn_on_amx_tiles(path, threads, inverse):
    # On the amx path these run on the tiles: 8-bit inputs as one byte, 16-bit ones as a high
    # and a low byte (full range, its extremes, 12-bit codes), with 8- and 12-bit outputs.
    # Every other path runs them too.
    rng = _rng("amx gdn", inverse)
    for shape, x_mode, gamma_mode in itertools.product(
            AMX_GDN_SHAPES, ["random", "min", "max", "12bit"], ["random", "max"]):
        x, gamma, beta = _gdn16_operands(rng, shape, x_mode, gamma_mode)
        c = shape[2]
        packed = kernels.pack_gdn_weights(gamma)
        for x_in in (x, np.clip(x, -128, 127).astype(np.int8)):
            if path == "amx":
                assert kernels._layer_path(packed, x_in) == "amx"
            for out_max in (127, 2047):
                if inverse:
                    mult = rng.integers(0, 2**16, c, dtype=np.int64).astype(np.int32)
                    shift = rng.integers(20, 40, c).astype(np.int32)
                    want = reference.igdn(x_in, gamma, beta, mult, shift, out_max)
                    got = kernels.igdn(x_in, packed, beta, mult, shift, out_max)
                else:
                    mult = np.floor(2.0 ** rng.uniform(0, 44, c)).astype(np.int64)
                    want = reference.gdn(x_in, gamma, beta, mult, 16, out_max)
                    got = kernels.gdn(x_in, packed, beta, mult, 16, out_max)
                _assert_same(got, want)
    # A code of -32768 in a row run on the tiles is refused as on the other paths.
    x = np.ones((3, 40, 128), np.int16)
    x[2, 39, 127] = -32768
    with pytest.raises(ValueError, match="-32767, 32767"):
        kernels.igdn(x, np.ones((128, 128), np.uint8), np.ones(128, np.int32),
                     np.ones(128, np.int32), np.ones(128, np.int32))


# A transposed convolution and the inverse GDN after it: (H, W, Cin, C). Widths leave partial
# 32-pixel blocks of the convolution's input and of the GDN's wider rows (rows of 80 and 140
# pixels: several blocks and GDN chunks); the last two do not fuse on the amx path (a GDN of
# 32 or 96 channels is not on the tiles).
FUSED_SHAPES = [(2, 7, 64, 64), (3, 20, 128, 128), (2, 40, 64, 64), (1, 70, 128, 128),
                (1, 1, 64, 32), (2, 33, 32, 96)]


@pytest.mark.parametrize("codes", [np.int8, np.int16], ids=["8-bit", "12-bit"])
def test_transposed_convolution_fused_with_inverse_gdn(path, threads, codes):
    # The codes between the two layers, 8- or 12-bit, never exist whole where the pair is
    # fused (the amx path, 8-bit convolution inputs); every path gives the two layers' codes.
    rng = _rng("fused", np.dtype(codes).name)
    limit = 127 if codes == np.int8 else 2047
    for i, (h, wd, cin, c) in enumerate(FUSED_SHAPES):
        x_mode, w_mode = MODES[i % len(MODES)]
        for x_dtype in (np.int8, np.int16):
            x, w, bias = _conv_operands(rng, h, wd, cin, c, 5, x_dtype, x_mode, w_mode)
            packed = kernels.pack_deconv_weights(w)
            acc = reference.conv_transpose2d(x, w, bias)
            mult, shift = _requant_tables(rng, c, np.abs(acc).mean(), limit // 2)
            leaky = LEAKY[i % 2]
            codes_want = reference.requantize(acc, mult, shift, *leaky, -limit, limit).astype(codes)
            gamma = _fill(rng, (c, c), np.uint8, ("random", "max")[i % 2])
            beta = rng.integers(1, 2**16, c, endpoint=True).astype(np.int32)
            gpacked = kernels.pack_gdn_weights(gamma)
            # The tile GDN takes runs of whole 64-byte rows: 64 or 128 channels.
            assert kernels.igdn_fuses(x, packed, gpacked, codes) == (
                path == "amx" and x_dtype == np.int8 and c % 64 == 0)
            for out_max in (127, 2047):
                gmult = rng.integers(0, 2**16, c, dtype=np.int64).astype(np.int32)
                gshift = rng.integers(20, 40, c).astype(np.int32)
                want = reference.igdn(codes_want, gamma, beta, gmult, gshift, out_max)
                args = (x, packed, bias, mult, shift, *leaky, -limit, limit, codes, gpacked,
                        beta, gmult, gshift, out_max)
                _assert_same(kernels.conv_transpose2d_requant_igdn(*args), want)
                out = np.full(want.shape, 99, want.dtype)
                assert kernels.conv_transpose2d_requant_igdn(*args, out=out) is out
                _assert_same(out, want)


def _high_word_tables(rng, c, scale, target):
    """``_requant_tables`` with every shift in 33..62 (channel 0: 33, channel 1: 62) and mults
    of both signs, the extremes included: what ``highword.high_word_fits`` admits."""
    mult = rng.integers(-(2**31), 2**31, c, dtype=np.int64)
    mult[:4] = [I32_MAX, -(2**31), -1, 0][: min(c, 4)]
    ideal = np.log2(np.maximum(np.abs(mult), 1) * max(float(scale), 1.0) / max(float(target), 1.0))
    shift = np.clip(np.round(ideal) + rng.integers(-2, 3, c), 33, 62)
    shift[0] = 33
    if c > 1:
        shift[1] = 62
    return mult.astype(np.int32), shift.astype(np.int32)


@pytest.mark.parametrize("out_spec", [(np.int8, -127, 127), (np.int16, -2047, 2047)],
                         ids=["int8", "int16"])
def test_requantization_from_high_words(path, threads, out_spec):
    # Layers whose every shift is at least 33 (all of the shipped models') requantize in
    # 32-bit lanes from the products' high words, with or without a LeakyReLU; one shift of
    # 32, a slope beyond what the loader allows or channels not in vectors of 16 keep the
    # int64 lanes. The same codes either way, on every path.
    from qlic_codec.engine import convolution, highword
    out_dtype, lo, hi = out_spec
    rng = _rng("high words", np.dtype(out_dtype).name)
    shapes = [(3, 7, 16, 16), (4, 33, 64, 32), (2, 5, 24, 48), (3, 4, 32, 24)]
    for i, ((h, wd, cin, cout), (x_mode, w_mode)) in enumerate(
            itertools.product(shapes, MODES)):
        x, w, bias = _conv_operands(rng, h, wd, cin, cout, (3, 5)[i % 2], np.int8, x_mode,
                                    w_mode)
        scale = np.abs(reference.conv2d(x, w, bias, 1, 0)).mean()
        mult, shift = _high_word_tables(rng, cout, scale, hi / 4)
        fits = cout % 16 == 0
        assert highword.high_word_fits(0, 0, shift, cout, out_dtype, lo, hi) == fits
        assert highword.high_word_fits(*LEAKY[1], shift, cout, out_dtype, lo, hi) == fits
        # Clamp bounds beyond int32 (the codes then wrap to the output type, as in the
        # reference), and slopes the loader refuses, keep the int64 lanes.
        assert not highword.high_word_fits(0, 0, shift, cout, out_dtype, -(2**40), 2**40)
        assert not highword.high_word_fits(5, 2, shift, cout, out_dtype, lo, hi)
        assert not highword.high_word_fits(1, 17, shift, cout, out_dtype, lo, hi)
        for leaky in ((0, 0), LEAKY[1]):
            req = (mult, shift, *leaky, lo, hi)
            assert convolution._requant_mode(req, np.empty((0, cout), out_dtype)) == (
                convolution._HIGH_WORD if fits else convolution._INT64)
        narrow = shift.copy()
        narrow[-1] = 32
        for sh, leaky, bounds in ((shift, (0, 0), (lo, hi)), (narrow, (0, 0), (lo, hi)),
                                  (shift, LEAKY[1], (lo, hi)), (shift, (0, 0), (-(2**40), 2**40))):
            args = (x, w, bias, 1, 0, mult, sh, *leaky, *bounds, out_dtype)
            _assert_same(kernels.conv2d_requant(*args), _ref_conv2d_requant(*args))
            if w.shape[1] == 5:
                args = (x, w, bias, mult, sh, *leaky, *bounds, out_dtype)
                _assert_same(kernels.conv_transpose2d_requant(*args),
                             _ref_conv_transpose2d_requant(*args))
    # The transposed convolution fused with its inverse GDN (one kernel on amx).
    for h, wd, c in [(3, 9, 64), (2, 33, 128)]:
        x, w, bias = _conv_operands(rng, h, wd, c, c, 5, np.int8, "random", "random")
        acc = reference.conv_transpose2d(x, w, bias)
        mult, shift = _high_word_tables(rng, c, np.abs(acc).mean(), hi / 4)
        codes = reference.requantize(acc, mult, shift, 0, 0, lo, hi).astype(out_dtype)
        gamma = _fill(rng, (c, c), np.uint8, "random")
        beta = rng.integers(1, 2**16, c, endpoint=True).astype(np.int32)
        gmult = rng.integers(0, 2**16, c, dtype=np.int64).astype(np.int32)
        gshift = rng.integers(20, 40, c).astype(np.int32)
        want = reference.igdn(codes, gamma, beta, gmult, gshift, 2047)
        _assert_same(kernels.conv_transpose2d_requant_igdn(
            x, w, bias, mult, shift, 0, 0, lo, hi, out_dtype, kernels.pack_gdn_weights(gamma),
            beta, gmult, gshift, 2047), want)


@pytest.mark.parametrize("leaky", [(0, 0), (655, 16), (0, 16), (2**16, 16), (1, 1), (2, 1),
                                   (3, 2), (2**15 - 1, 16)],
                         ids=["linear", "0.01", "zero", "one", "half", "one-1", "3/4", "odd"])
def test_high_words_of_extreme_products(leaky):
    # ``requant_high_word`` against the reference on the products' extremes: accumulators
    # and mults at both ends of int32 (|acc * mult| up to 2**62), shifts 33 and 62, exact
    # halves, every output clamped and not; and before them LeakyReLUs of every slope the
    # loader allows at the ends of its shifts (0 and 1 included), on every residue of the
    # LeakyReLU's shift (the accumulators' low bits) and at int32's ends.
    from numba import njit
    from qlic_codec.engine import convolution

    @njit
    def epilogue(acc, coutp, out, mult, shift, lo, hi, lm, ls):
        convolution._epilogue(acc, coutp, out, convolution._HIGH_WORD, mult, shift, lm, ls, lo,
                              hi)

    rng = _rng("extreme high words")
    edges = np.array([-(2**31), -(2**31) + 1, -(2**30), -1, 0, 1, 2**30, I32_MAX], np.int64)
    c = 32
    residues = -np.arange(1, 2**16 + 1, dtype=np.int64)  # every residue mod 2**16 of v < 0
    acc = np.concatenate([np.repeat(edges, c), residues, -residues - 2**20,
                          rng.integers(-(2**31), 2**31, 24 * c)]).astype(np.int32)
    pixels = acc.size // c
    for mult_edges, shift_edges, (lo, hi) in itertools.product(
            ([-(2**31), I32_MAX, -1, 1, 0, 2**30], [2**16 + 1, -(2**16) - 1]),
            ([33, 62, 34, 61], [40, 48]), [(-127, 127), (-32768, 32767), (-2047, 2047)]):
        mult = np.resize(np.array(mult_edges, np.int64), c)
        mult[len(mult_edges):] = rng.integers(-(2**31), 2**31, c - len(mult_edges))
        shift = np.resize(np.array(shift_edges, np.int64), c)
        mult, shift = mult.astype(np.int32), shift.astype(np.int32)
        dtype = np.int8 if hi == 127 else np.int16
        out = np.empty((pixels, c), dtype)
        epilogue(acc, c, out, mult, shift, lo, hi, *leaky)
        want = reference.requantize(acc.reshape(pixels, c), mult, shift, *leaky, lo, hi)
        _assert_same(out, want.astype(dtype))


def test_fused_pair_refuses_bad_operands():
    x = np.zeros((2, 3, 64), np.int8)
    w, bias = np.zeros((32, 5, 5, 64), np.int8), np.zeros(32, np.int32)
    ones = np.ones(32, np.int32)
    gamma, beta = np.ones((32, 32), np.uint8), np.ones(32, np.int32)
    args = (x, w, bias, ones, ones, 0, 0, -127, 127)
    with pytest.raises(TypeError, match="codes_dtype"):
        kernels.conv_transpose2d_requant_igdn(*args, np.int32, gamma, beta, ones, ones)
    with pytest.raises(ValueError, match="GDN shapes"):
        kernels.conv_transpose2d_requant_igdn(*args, np.int8, gamma[:16, :16], beta[:16],
                                              ones, ones)
    with pytest.raises(ValueError, match="out:"):
        kernels.conv_transpose2d_requant_igdn(*args, np.int8, gamma, beta, ones, ones, 127,
                                              out=np.zeros((4, 6, 32), np.int16))


def test_gdn_16_bit_norm_bound_is_refused():
    x = np.ones((2, 3, 300), np.int16)
    with pytest.raises(ValueError, match="exceed int32"):
        kernels.igdn(x, np.full((300, 300), 255, np.uint8), np.ones(300, np.int32),
                     np.ones(300, np.int32), np.ones(300, np.int32))


@pytest.mark.parametrize("levels", [1, 64, 256])
def test_scale_index(threads, levels):
    rng = _rng("scale_index", levels)
    for shape, mode, shift in itertools.product(ELEMENT_SHAPES, ["random", "wide", "min", "max"],
                                                [1, 12, 40]):
        c = shape[2]
        if mode == "random":
            acc = rng.integers(-(2**20), 2**20, shape).astype(np.int32)
        else:
            acc = _fill(rng, shape, np.int32, "random" if mode == "wide" else mode)
        mult = rng.choice([-1, 1], c) * np.floor(2.0 ** rng.uniform(0, 30, c)).astype(np.int64)
        # An offset near the middle of the table, so that indices span it.
        offset = np.clip(rng.integers(0, levels, c) << shift, -(2**60), 2**60).astype(np.int64)
        want = reference.scale_index(acc, mult, offset, shift, levels)
        _assert_same(kernels.scale_index(acc, mult, offset, shift, levels), want)


@pytest.mark.parametrize("levels", [2, 64])
def test_scale_index_sum(threads, levels):
    """The two-term index of a channel-conditional model, up to the int64 bounds its loader
    allows (|acc| < 2**31, |mult| <= 2**31, |mult2| <= 2**30, |offset| <= 2**60)."""
    rng = _rng("scale_index_sum", levels)
    for shape, mode, shift in itertools.product(ELEMENT_SHAPES, ["random", "wide", "min", "max"],
                                                [1, 12, 40]):
        c = shape[2]
        if mode == "random":
            acc = rng.integers(-(2**20), 2**20, shape).astype(np.int32)
            acc2 = rng.integers(-(2**20), 2**20, shape).astype(np.int32)
        else:
            fill = "random" if mode == "wide" else mode
            acc, acc2 = _fill(rng, shape, np.int32, fill), _fill(rng, shape, np.int32, fill)
        mult = rng.choice([-1, 1], c) * np.floor(2.0 ** rng.uniform(0, 31, c)).astype(np.int64)
        mult2 = rng.choice([-1, 1], c) * np.floor(2.0 ** rng.uniform(0, 30, c)).astype(np.int64)
        offset = np.clip(rng.integers(0, levels, c) << shift, -(2**60), 2**60).astype(np.int64)
        want = reference.scale_index_sum(acc, mult, acc2, mult2, offset, shift, levels)
        _assert_same(kernels.scale_index_sum(acc, mult, acc2, mult2, offset, shift, levels), want)
        # With a zero second term it is the one-term index.
        zero = np.zeros_like(acc2)
        _assert_same(kernels.scale_index_sum(acc, mult, zero, mult2, offset, shift, levels),
                     reference.scale_index(acc, mult, offset, shift, levels))


# --- the shipped layers: 128 and 192 channels, 12-bit and 16-bit codes ------------------------

# Every integer layer of models/qlic-mse.qlicm (and qlic-msssim.qlicm, the same shapes), as the
# graph runs it: (op, Cin, Cout, K, stride, input code bound, output). Input bound 128 is the
# first layer's pixel codes (padded with -128), 127 an 8-bit code, 2047 a 12-bit code, 32767
# the int16 latents z and y_hat. Output: ("codes", lo/hi bound, leaky) for a fused
# requantization, "acc" for int32 accumulators, or the GDN's output bound. Only 8x9 pixels: the
# channel counts and code widths are what the smaller cases above do not reach.
SHIPPED_LAYERS = {
    "g_a.0": ("conv", 3, 128, 5, 2, 128, ("codes", 2047, False)),
    "g_a.1": ("gdn", 128, 128, 1, 1, 2047, 127),
    "g_a.2": ("conv", 128, 128, 5, 2, 127, ("codes", 2047, False)),
    "g_a.3": ("gdn", 128, 128, 1, 1, 2047, 2047),
    "g_a.4": ("conv", 128, 128, 5, 2, 2047, ("codes", 2047, False)),
    "g_a.6": ("conv", 128, 192, 5, 2, 2047, "acc"),
    "h_a.0": ("conv", 192, 128, 3, 1, 127, ("codes", 127, True)),
    "h_s.0": ("deconv", 128, 192, 5, 2, 32767, ("codes", 127, True)),
    "h_s.1": ("deconv", 192, 288, 5, 2, 127, ("codes", 127, True)),
    "h_s.2": ("conv", 288, 384, 3, 1, 127, "acc"),
    "g_s.0": ("deconv", 192, 128, 5, 2, 32767, ("codes", 2047, False)),
    "g_s.1": ("igdn", 128, 128, 1, 1, 2047, 127),
    "g_s.2": ("deconv", 128, 128, 5, 2, 127, ("codes", 2047, False)),
    "g_s.5": ("igdn", 128, 128, 1, 1, 2047, 2047),
    "g_s.6": ("deconv", 128, 3, 5, 2, 2047, "acc"),
}
SHIPPED_HW = (8, 9)
MODEL_LEAKY = (655, 16)  # the shipped models' LeakyReLU multiplier and shift


def _shipped_weights(rng, op, cin, cout, k, in_max):
    """int8 weights as large as the loader's overflow proof allows for ``in_max`` (the full
    int8 range where it fits), and a bias that fills what is left of the int32 headroom in
    half of the channels, so that extreme codes drive accumulators to +-(2**31 - 1)."""
    taps = 9 if op == "deconv" else k * k  # a transposed conv's worst phase: 3x3 of 5x5
    w_max = min(128, (I32_MAX - 2**20) // (in_max * taps * cin))
    w = rng.integers(-w_max, min(w_max, 127), (cout, k, k, cin), endpoint=True).astype(np.int8)
    l1 = (fixedpoint.deconv_weight_l1 if op == "deconv" else fixedpoint.conv_weight_l1)(w)
    headroom = I32_MAX - in_max * l1
    assert np.all(headroom > 2**20), "the operands must respect the loader's proof"
    bias = rng.integers(-(2**20), 2**20, cout, endpoint=True)
    full = np.arange(cout) % 2 == 1
    bias[full] = rng.choice(np.array([-1, 1]), int(full.sum())) * headroom[full]
    return w, bias.astype(np.int32)


def _shipped_codes(rng, shape, in_max, mode):
    """Input codes of the layer: random within +-in_max, or all at one end of the range."""
    dtype = np.int8 if in_max <= 128 else np.int16
    if mode == "random":
        return _fill(rng, shape, dtype, "random", in_max)
    lo = -128 if in_max == 128 else -in_max
    return np.full(shape, lo if mode == "min" else min(in_max, np.iinfo(dtype).max), dtype)


def _check_shipped_conv(rng, op, cin, cout, k, stride, in_max, out):
    pad_value = -128 if in_max == 128 else 0
    w, bias = _shipped_weights(rng, op, cin, cout, k, in_max)
    packed = (kernels.pack_deconv_weights if op == "deconv" else kernels.pack_conv_weights)(w)
    args = () if op == "deconv" else (stride, pad_value)
    kernel = kernels.conv_transpose2d if op == "deconv" else kernels.conv2d
    fused = kernels.conv_transpose2d_requant if op == "deconv" else kernels.conv2d_requant
    ref = REF.conv_transpose2d if op == "deconv" else REF.conv2d
    ref_fused = REF.conv_transpose2d_requant if op == "deconv" else REF.conv2d_requant
    for mode in ("random", "min", "max"):
        x = _shipped_codes(rng, (*SHIPPED_HW, cin), in_max, mode)
        acc = ref(x, w, bias, *args)
        # The graph runs packed weights; the unpacked ones must give the same integers.
        for weights in (packed, w):
            _assert_same(kernel(x, weights, bias, *args), acc)
        if out == "acc":
            continue
        _, bound, leaky = out
        mult, shift = _requant_tables(rng, cout, np.abs(acc).mean(), bound / 4)
        req = (mult, shift, *(MODEL_LEAKY if leaky else (0, 0)), -bound, bound,
               np.int16 if bound > 127 else np.int8)
        want = ref_fused(x, w, bias, *args, *req)
        _assert_same(fused(x, packed, bias, *args, *req), want)
        if mode == "random":  # codes inside the range (beyond 8 bits where it is wider)
            floor = 127 if bound > 127 else 0
            assert np.count_nonzero((np.abs(want) > floor) & (np.abs(want) < bound)) > 0


def _check_shipped_gdn(rng, op, c, in_max, out_max):
    gamma = _fill(rng, (c, c), np.uint8, "random")
    beta = rng.integers(1, 2**24, c, endpoint=True).astype(np.int32)
    packed = kernels.pack_gdn_weights(gamma)
    for mode, gamma_in in (("random", gamma), ("min", gamma), ("max", np.full_like(gamma, 255))):
        x = _shipped_codes(rng, (*SHIPPED_HW, c), in_max, mode)
        norm = float(np.mean(reference._norm(x, gamma_in, beta)))
        mean_x = max(1.0, float(np.mean(np.abs(x.astype(np.int64)))))
        target = out_max / 4
        if op == "gdn":
            # |quotient| = |x| * mult / (norm * 2**shift) ~ out_max / 4, spread over 2**+-4,
            # within the loader's bound 2 * |x * mult| < 2**62.
            shift = 16
            ideal = target * norm * 2**shift / mean_x * 2.0 ** rng.uniform(-4, 4, c)
            mult = np.clip(ideal, 0, 2**62 // (2 * in_max)).astype(np.int64)
            want = reference.gdn(x, gamma_in, beta, mult, shift, out_max)
            got = kernels.gdn(x, gamma_in if mode == "max" else packed, beta, mult, shift,
                              out_max)
        else:
            # |x| * norm * mult / 2**shift ~ out_max / 4, with x * norm * mult < 2**62.
            mult = rng.integers(2**12, 2**16, c, endpoint=True)
            ideal = np.log2(mult * mean_x * norm / target)
            shift = np.clip(np.round(ideal) + rng.integers(-2, 3, c), 1, 62).astype(np.int32)
            mult = mult.astype(np.int32)
            want = reference.igdn(x, gamma_in, beta, mult, shift, out_max)
            got = kernels.igdn(x, gamma_in if mode == "max" else packed, beta, mult, shift,
                               out_max)
        _assert_same(got, want)
        if mode == "random":  # real quotients: neither all zero nor all clamped
            inside = (np.abs(want) > 0) & (np.abs(want) < out_max)
            assert np.count_nonzero(inside) > want.size // 4


@pytest.mark.parametrize("layer", list(SHIPPED_LAYERS))
def test_shipped_layers(path, threads, layer):
    """Each layer of the shipped models at its real channel counts and code widths (12-bit
    activations as int16, the int16 latents z and y_hat), on every multiply path and at 1 and
    2 threads, against the NumPy reference: random codes and both ends of the code range, with
    weights and biases as large as the loader's overflow proof allows."""
    op, cin, cout, k, stride, in_max, out = SHIPPED_LAYERS[layer]
    rng = _rng("shipped", layer)
    if op in ("gdn", "igdn"):
        _check_shipped_gdn(rng, op, cin, in_max, out)
    else:
        _check_shipped_conv(rng, op, cin, cout, k, stride, in_max, out)


# --- thread counts in fresh processes ---------------------------------------------------------

@pytest.mark.parametrize("path_name", ["portable", "avx2", "vnni", "amx"])
def test_thread_count_does_not_change_results(path_name):
    # QLIC_KERNELS selects the path at import; "portable" must win over a faster host path.
    if path_name not in kernels.available_paths():
        pytest.skip(f"no {path_name} path on this host")
    want = _digest(_suite(REF))
    here = Path(__file__).resolve().parent
    got = {}
    for n in (1, 2):
        env = dict(os.environ, NUMBA_NUM_THREADS=str(n), QLIC_KERNELS=path_name)
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(here), str(n), path_name],
                              env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        got[n] = proc.stdout.strip().splitlines()[-1]
    assert got[1] == got[2] == want


# --- validation -------------------------------------------------------------------------------

def _valid():
    rng = _rng("valid")
    x, w, bias = _conv_operands(rng, 4, 5, 3, 2, 3, np.int8)
    w5 = _fill(rng, (2, 5, 5, 3), np.int8, "random")
    mult, shift = np.ones(2, np.int32), np.ones(2, np.int32)
    xg, gamma, beta = _gdn_operands(rng, (2, 2, 3), "random", "random")
    return types.SimpleNamespace(x=x, w=w, w5=w5, bias=bias, mult=mult, shift=shift, xg=xg,
                                 gamma=gamma, beta=beta, acc=np.zeros((2, 2, 2), np.int32))


_BAD_CALLS = {
    "conv2d x float": (TypeError, lambda v: kernels.conv2d(v.x.astype(np.float32), v.w, v.bias,
                                                           1, 0)),
    "conv2d x int32": (TypeError, lambda v: kernels.conv2d(v.x.astype(np.int32), v.w, v.bias,
                                                           1, 0)),
    "conv2d x 2-D": (TypeError, lambda v: kernels.conv2d(v.x[0], v.w, v.bias, 1, 0)),
    "conv2d x list": (TypeError, lambda v: kernels.conv2d(v.x.tolist(), v.w, v.bias, 1, 0)),
    "conv2d w int16": (TypeError, lambda v: kernels.conv2d(v.x, v.w.astype(np.int16), v.bias,
                                                           1, 0)),
    "conv2d bias int64": (TypeError, lambda v: kernels.conv2d(v.x, v.w, v.bias.astype(np.int64),
                                                              1, 0)),
    "conv2d cin": (ValueError, lambda v: kernels.conv2d(v.x[..., :2], v.w, v.bias, 1, 0)),
    "conv2d bias len": (ValueError, lambda v: kernels.conv2d(v.x, v.w, v.bias[:1], 1, 0)),
    "conv2d non-square": (ValueError, lambda v: kernels.conv2d(v.x, v.w5[:, :3], v.bias, 1, 0)),
    "deconv K=3": (ValueError, lambda v: kernels.conv_transpose2d(v.x, v.w, v.bias)),
    "deconv cin": (ValueError, lambda v: kernels.conv_transpose2d(v.x[..., :1], v.w5, v.bias)),
    "requant mult len": (ValueError, lambda v: kernels.conv2d_requant(
        v.x, v.w, v.bias, 1, 0, v.mult[:1], v.shift, 0, 0, -127, 127, np.int8)),
    "requant mult int64": (TypeError, lambda v: kernels.conv2d_requant(
        v.x, v.w, v.bias, 1, 0, v.mult.astype(np.int64), v.shift, 0, 0, -127, 127, np.int8)),
    "requant shift 0": (ValueError, lambda v: kernels.conv_transpose2d_requant(
        v.x, v.w5, v.bias, v.mult, v.shift * 0, 0, 0, -127, 127, np.int8)),
    "requant shift 63": (ValueError, lambda v: kernels.requantize(
        v.acc, v.mult, v.shift * 63, 0, 0, -127, 127)),
    "requantize acc int64": (TypeError, lambda v: kernels.requantize(
        v.acc.astype(np.int64), v.mult, v.shift, 0, 0, -127, 127)),
    "requantize acc list": (TypeError, lambda v: kernels.requantize(
        v.acc.tolist(), v.mult, v.shift, 0, 0, -127, 127)),
    "requantize channels": (ValueError, lambda v: kernels.requantize(
        v.acc[..., :1], v.mult, v.shift, 0, 0, -127, 127)),
    "gdn x int32": (TypeError, lambda v: kernels.gdn(
        v.xg.astype(np.int32), v.gamma, v.beta, np.ones(3, np.int64), 16)),
    "gdn gamma int8": (TypeError, lambda v: kernels.gdn(
        v.xg, v.gamma.astype(np.int8), v.beta, np.ones(3, np.int64), 16)),
    "gdn gamma shape": (ValueError, lambda v: kernels.gdn(
        v.xg, v.gamma[:2], v.beta, np.ones(3, np.int64), 16)),
    "gdn beta len": (ValueError, lambda v: kernels.gdn(
        v.xg, v.gamma, v.beta[:2], np.ones(3, np.int64), 16)),
    "gdn mult int32": (TypeError, lambda v: kernels.gdn(
        v.xg, v.gamma, v.beta, np.ones(3, np.int32), 16)),
    "gdn mult len": (ValueError, lambda v: kernels.gdn(
        v.xg, v.gamma, v.beta, np.ones(2, np.int64), 16)),
    "igdn mult int64": (TypeError, lambda v: kernels.igdn(
        v.xg, v.gamma, v.beta, np.ones(3, np.int64), np.ones(3, np.int32))),
    "igdn shift len": (ValueError, lambda v: kernels.igdn(
        v.xg, v.gamma, v.beta, np.ones(3, np.int32), np.ones(2, np.int32))),
    "scale_index acc int64": (TypeError, lambda v: kernels.scale_index(
        v.acc.astype(np.int64), np.ones(2, np.int64), np.zeros(2, np.int64), 8, 64)),
    "scale_index acc 2-D": (TypeError, lambda v: kernels.scale_index(
        v.acc[0], np.ones(2, np.int64), np.zeros(2, np.int64), 8, 64)),
    "scale_index mult len": (ValueError, lambda v: kernels.scale_index(
        v.acc, np.ones(1, np.int64), np.zeros(2, np.int64), 8, 64)),
    "scale_index offset len": (ValueError, lambda v: kernels.scale_index(
        v.acc, np.ones(2, np.int64), np.zeros(1, np.int64), 8, 64)),
    "scale_index mult float": (TypeError, lambda v: kernels.scale_index(
        v.acc, np.ones(2), np.zeros(2, np.int64), 8, 64)),
}


def test_shift_table_changed_in_place_is_checked_again():
    # Shift tables are checked once per content (``elementwise.shift_range``): a table that
    # passed and is then changed in place is refused.
    v = _valid()
    shift = v.shift.copy()
    kernels.conv2d_requant(v.x, v.w, v.bias, 1, 0, v.mult, shift, 0, 0, -127, 127, np.int8)
    shift[0] = 0
    with pytest.raises(ValueError, match="1..62"):
        kernels.conv2d_requant(v.x, v.w, v.bias, 1, 0, v.mult, shift, 0, 0, -127, 127, np.int8)


@pytest.mark.parametrize("case", list(_BAD_CALLS))
def test_wrappers_reject_bad_operands(case):
    error, call = _BAD_CALLS[case]
    with pytest.raises(error):
        call(_valid())
