"""The fused element-wise steps of a channel-conditional slice (``engine.slicekernels``) are
bit-exact with their NumPy reference, at 1 and 2 threads, over the whole range the model
loader allows, and write into views of wider arrays as the decoder uses them."""

import itertools

import numpy as np
import pytest

from qlic_codec.engine import kernels, reference
from test_kernels import ELEMENT_SHAPES, I32_MAX, _assert_same, _fill, _requant_tables, _rng

CLAMPS = [127, 2**20, I32_MAX]


def _scale_tables(rng, n, levels, shift):
    mult = rng.choice([-1, 1], n) * np.floor(2.0 ** rng.uniform(0, 31, n)).astype(np.int64)
    mult2 = rng.choice([-1, 1], n) * np.floor(2.0 ** rng.uniform(0, 30, n)).astype(np.int64)
    offset = np.clip(rng.integers(0, levels, n) << shift, -(2**60), 2**60).astype(np.int64)
    return mult, mult2, offset


@pytest.mark.parametrize("levels,index_dtype", [(2, np.uint8), (64, np.uint8), (256, np.uint8),
                                                (300, np.uint16)])
def test_slice_heads(threads, levels, index_dtype):
    rng = _rng("slice_heads", levels)
    for shape, mode, shift, clamp in itertools.product(
            ELEMENT_SHAPES, ["random", "wide", "min", "max"], [1, 12, 40], CLAMPS):
        n = shape[2]
        fill = "random" if mode == "wide" else mode
        if mode == "random":
            acc_d = rng.integers(-(2**20), 2**20, shape[:2] + (2 * n,)).astype(np.int32)
            acc_scale = rng.integers(-(2**20), 2**20, shape).astype(np.int32)
        else:
            acc_d = _fill(rng, shape[:2] + (2 * n,), np.int32, fill)
            acc_scale = _fill(rng, shape, np.int32, fill)
        hyper_mean = rng.integers(-clamp, clamp, shape, endpoint=True).astype(np.int32)
        mean_mult, mean_shift = _requant_tables(rng, n, 2**20, clamp / 4)
        tables = _scale_tables(rng, n, levels, shift)
        want_mean, want_index = np.empty(shape, np.int32), np.empty(shape, np.int64)
        reference.slice_heads(acc_d, mean_mult, mean_shift, hyper_mean, clamp, acc_scale,
                              *tables, shift, levels, want_mean, want_index)
        mean, index = np.empty(shape, np.int32), np.empty(shape, index_dtype)
        kernels.slice_heads(acc_d, mean_mult, mean_shift, hyper_mean, clamp, acc_scale, *tables,
                            shift, levels, mean, index)
        _assert_same(mean, want_mean)
        _assert_same(index, want_index.astype(index_dtype))
        assert want_index.max() < levels  # the narrow type held every index
        # The two terms, spelled out: the fused pass is the two element-wise kernels.
        _assert_same(index.astype(np.int32), kernels.scale_index_sum(
            acc_scale, tables[0], np.ascontiguousarray(acc_d[..., n:]), *tables[1:], shift,
            levels))


def test_slice_inputs(threads):
    """What h_s predicts for each slice, from its accumulators (means, then log-scales), into
    rows of the slice's arrays: the rows around them are left as they were."""
    rng = _rng("slice_inputs")
    for (rows, w, m), mode, clamp in itertools.product(
            [(1, 1, 2), (3, 7, 48), (4, 33, 192)], ["random", "min", "max"], CLAMPS):
        acc = (rng.integers(-(2**20), 2**20, (rows, w, 2 * m)).astype(np.int32)
               if mode == "random" else _fill(rng, (rows, w, 2 * m), np.int32, mode))
        mean_mult, mean_shift = _requant_tables(rng, m, 2**20, clamp / 4)
        hyper_mult, hyper_shift = _requant_tables(rng, 2 * m, 2**20, 32)
        for a, n in {(0, m), (0, 1), (m - 1, 1), (m // 3, max(1, m // 3))}:
            got = [_fill(rng, (rows + 3, w, c), dt, "random", 99) for c, dt in
                   ((2 * n, np.int8), (n, np.int32), (n, np.int32))]
            want = [g.copy() for g in got]
            tables = (np.ascontiguousarray(mean_mult[a:a + n]),
                      np.ascontiguousarray(mean_shift[a:a + n]), clamp, hyper_mult, hyper_shift)
            reference.slice_inputs(acc, a, n, *tables, *want, 2)
            kernels.slice_inputs(acc, a, n, *tables, *got, 2)
            for g, x in zip(got, want):
                _assert_same(g, x)
    with pytest.raises(ValueError, match="channels"):
        kernels.slice_inputs(acc, m, 1, *tables, *got, 0)
    with pytest.raises(ValueError, match="does not take rows"):
        kernels.slice_inputs(acc, a, n, *tables, *got, 4)


@pytest.mark.parametrize("ctx_max,ctx_dtype", [(127, np.int8), (2047, np.int16)])
def test_slice_residual_into_a_slice_of_the_latent(threads, ctx_max, ctx_dtype):
    """The outputs are the slice's channels of (h, w, M) arrays, as ``SliceState`` has them:
    the channels around them are left as they were."""
    rng = _rng("slice_residual", ctx_max)
    for shape, mode, clamp in itertools.product(ELEMENT_SHAPES, ["random", "min", "max"],
                                                CLAMPS):
        n = shape[2]
        acc_r = (rng.integers(-(2**20), 2**20, shape).astype(np.int32) if mode == "random"
                 else _fill(rng, shape, np.int32, mode))
        y_g_hat = rng.integers(-clamp, clamp, shape, endpoint=True).astype(np.int32)
        lrp_mult, lrp_shift = _requant_tables(rng, n, 2**20, 64)
        ctx_mult, ctx_shift = _requant_tables(rng, n, clamp, ctx_max / 2)
        half = rng.integers(1, 2**12)
        lut = rng.integers(-half, half, 255, endpoint=True).astype(np.int64)
        want_dec, want_ctx = np.empty(shape, np.int32), np.empty(shape, np.int64)
        reference.slice_residual(acc_r, lrp_mult, lrp_shift, y_g_hat, lut, clamp, ctx_mult,
                                 ctx_shift, ctx_max, want_dec, want_ctx)
        a = int(rng.integers(0, 5))
        dec = np.full(shape[:2] + (a + n + 3,), 7, np.int32)
        ctx = np.full(shape[:2] + (a + n + 3,), -3, ctx_dtype)
        kernels.slice_residual(acc_r, lrp_mult, lrp_shift, y_g_hat, lut, clamp, ctx_mult,
                               ctx_shift, ctx_max, dec[..., a:a + n], ctx[..., a:a + n])
        _assert_same(dec[..., a:a + n], want_dec)
        _assert_same(ctx[..., a:a + n], want_ctx.astype(ctx_dtype))
        assert (dec[..., :a] == 7).all() and (dec[..., a + n:] == 7).all()
        assert (ctx[..., :a] == -3).all() and (ctx[..., a + n:] == -3).all()
        assert np.abs(want_ctx).max() <= ctx_max


def test_operands_are_checked():
    acc = np.zeros((2, 3, 4), np.int32)
    mult, shift = np.ones(4, np.int32), np.ones(4, np.int32)
    table = np.ones(4, np.int64)
    with pytest.raises(ValueError, match="differ in shape"):
        kernels.slice_heads(acc, mult, shift, acc, 127, acc, table, table, table, 1, 64,
                            np.empty_like(acc), np.empty(acc.shape, np.uint8))
    with pytest.raises(ValueError, match="do not fit"):
        kernels.slice_heads(np.zeros((2, 3, 8), np.int32), mult, shift, acc, 127, acc, table,
                            table, table, 1, 300, np.empty_like(acc),
                            np.empty(acc.shape, np.uint8))
    with pytest.raises(ValueError, match="do not fit"):
        kernels.slice_residual(acc, mult, shift, acc, np.zeros(255, np.int64), 127, mult, shift,
                               2047, np.empty_like(acc), np.empty(acc.shape, np.int8))
    with pytest.raises(TypeError):
        kernels.slice_residual(acc, mult, shift, acc, np.zeros(255, np.int64), 127, mult, shift,
                               127, np.empty(acc.shape, np.int64), np.empty(acc.shape, np.int8))


@pytest.mark.parametrize("mean_bits", [0, 1, 8])
def test_reconstruct(threads, mean_bits):
    """Latents from symbols: any int32 symbol a stream may hold, every mean the heads give,
    the clamp reached from both sides."""
    rng = _rng("reconstruct", mean_bits)
    for shape, mode, clamp in itertools.product(ELEMENT_SHAPES, ["random", "small", "min", "max"],
                                                CLAMPS):
        if mode == "small":  # the trained range: most symbols within a few steps of the mean
            symbols = rng.integers(-40, 41, shape).astype(np.int32)
        else:
            symbols = _fill(rng, shape, np.int32, mode)
        mean_g = rng.integers(-clamp, clamp, shape, endpoint=True).astype(np.int32)
        got = kernels.reconstruct(symbols, mean_g, mean_bits, clamp)
        _assert_same(got, reference.reconstruct(symbols, mean_g, mean_bits, clamp))
        if mode == "max" and clamp < I32_MAX:
            assert (got == clamp).all()
    # Any shape (the plain hyperprior's latent, a flat run longer than the chunks the
    # threads share), and views of wider arrays (a slice's channels), are read as they are.
    flat = rng.integers(-2**31, 2**31, 40_000).astype(np.int32)
    flat_means = rng.integers(-2**20, 2**20, 40_000).astype(np.int32)
    _assert_same(kernels.reconstruct(flat, flat_means, mean_bits, 2**24),
                 reference.reconstruct(flat, flat_means, mean_bits, 2**24))
    wide = rng.integers(-300, 300, (3, 5, 48)).astype(np.int32)
    means = rng.integers(-2**20, 2**20, (3, 5, 48)).astype(np.int32)
    _assert_same(kernels.reconstruct(wide[..., 8:32], means[..., 8:32], mean_bits, 2**20),
                 reference.reconstruct(wide[..., 8:32], means[..., 8:32], mean_bits, 2**20))


def test_reconstruct_refuses_what_it_cannot_compute():
    s = np.zeros((2, 2, 3), np.int32)
    with pytest.raises(TypeError):
        kernels.reconstruct(s.astype(np.int64), s, 8, 100)
    with pytest.raises(TypeError):
        kernels.reconstruct(s, s.astype(np.int16), 8, 100)
    with pytest.raises(ValueError):
        kernels.reconstruct(s, s[:, :1], 8, 100)
    with pytest.raises(ValueError):
        kernels.reconstruct(s, s, 9, 100)
