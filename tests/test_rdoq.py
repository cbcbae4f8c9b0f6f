"""The encoder's rate-distortion optimised rounding (``qlic_codec.rdoq``): the vectorised
rule equals its statement symbol by symbol in Python integers, moves only what it may, and
makes smaller files that decode to the symbols it chose."""

import numpy as np
import pytest

from conftest import synthetic_photo
from qlic_codec import api, rdoq
from qlic_codec.engine.rangedecoder import information_units
from qlic_codec.entropy.tables import build_gaussian_tables, gaussian_scale_table


def _tables():
    return build_gaussian_tables(gaussian_scale_table(0.11, 64.0, 24))


def _rule(k, y, m, t, tables, mean_bits, lam):
    """One symbol's choice, as the module docstring states it, in Python integers."""
    if k == 0:
        return k
    step = 1 if k > 0 else -1
    size, offset = int(tables.sizes[t]), int(tables.offsets[t])
    s, s2 = k - offset, k - step - offset
    if not (0 <= s < size - 1 and 0 <= s2 < size - 1):
        return k
    info = [int(information_units(np.array([c]))[0]) for c in
            (tables.cdf_counts[t, s], tables.cdf_counts[t, s2])]
    saved = info[0] - info[1]  # 2**-16 bit
    added = (1 << mean_bits) - 2 * ((abs(k) << mean_bits) - abs(y - m))  # 2**mean_bits * dD
    return k - step if saved * 2**mean_bits > lam * 2**16 * added else k


@pytest.mark.parametrize("mean_bits", [0, 4, 8])
def test_the_vectorised_rule_is_the_rule(mean_bits):
    tables = _tables()
    rng = np.random.default_rng(mean_bits)
    n = 3000
    index = rng.integers(0, tables.num_tables, n).astype(np.uint8)
    mean = rng.integers(-(40 << mean_bits), 40 << mean_bits, n).astype(np.int32)
    # Latents near their means (where moving pays) and far (escapes), with exact ties.
    spread = np.where(rng.random(n) < 0.9, 4, 200) << mean_bits
    y = (mean + rng.integers(-spread, spread + 1)).astype(np.int32)
    if mean_bits:
        tie = rng.random(n) < 0.05
        y[tie] = mean[tie] + (2 * rng.integers(-3, 3, tie.sum()) + 1) * (1 << (mean_bits - 1))

    class Net:
        pass
    from qlic_codec.engine.graph import IntegerNetwork
    net = Net()
    net.mean_bits = mean_bits
    nearest = IntegerNetwork.symbols(net, y, mean)
    for metric in ("mse", "msssim"):
        rounding = rdoq.Rounding(tables, mean_bits, metric)
        got = rounding(nearest.copy(), y, mean, index)
        assert np.array_equal(rounding.reference(nearest.copy(), y, mean, index), got)
        lam = rdoq.LAMBDA[metric]
        want = [_rule(int(k), int(a), int(b), int(t), tables, mean_bits, lam)
                for k, a, b, t in zip(nearest, y, mean, index)]
        assert got.tolist() == want
        moved = got != nearest
        # Integer latents (no fraction) are symbols: a step would add a whole unit of error,
        # worth more bits than any table saves.
        assert (moved.any() if mean_bits else not moved.any()) and (~moved).any()
        # Only one step, only toward the mean.
        assert np.all(np.abs(got[moved]) == np.abs(nearest[moved]) - 1)


def _latents(tables, seed, shape):
    """Nearest symbols, latents, means (8 fractional bits) and table indexes of ``shape``."""
    rng = np.random.default_rng(seed)
    index = rng.integers(0, tables.num_tables, shape).astype(np.uint8)
    mean = rng.integers(-3000, 3000, shape).astype(np.int32)
    y = (mean + rng.integers(-1500, 1500, shape)).astype(np.int32)
    k = ((y.astype(np.int64) - mean + 127) >> 8).astype(np.int32)
    return k, y, mean, index


def test_kernel_equals_reference_in_pieces_and_threads(monkeypatch, threads):
    """The compiled pass (``engine.roundkernel``) gives the numpy reference's symbols (the
    reference taken whole and a few latents at a time), on 1 and 2 threads, with uint8 and
    int32 indexes."""
    tables = _tables()
    k, y, mean, index = _latents(tables, 1, (37, 41, 24))
    rounding = rdoq.Rounding(tables, 8, "mse")
    whole = rounding.reference(k.copy(), y, mean, index)
    assert (whole != k).any()
    assert np.array_equal(rounding(k.copy(), y, mean, index), whole)
    assert np.array_equal(rounding(k.copy(), y, mean, index.astype(np.int32)), whole)
    monkeypatch.setattr(rdoq, "_PIECE", 17)
    assert np.array_equal(rounding.reference(k.copy(), y, mean, index), whole)


def test_refusals(monkeypatch):
    tables = _tables()
    k, y, mean, index = _latents(tables, 2, (7, 9, 5))
    bad = index.astype(np.int32)
    rounding = rdoq.Rounding(tables, 8, "mse")
    for symbol in (0, 1):  # a zero symbol is never moved, but its index is checked too
        k[3, 4, 2] = symbol
        for value in (tables.num_tables, -1):
            bad[3, 4, 2] = value
            for rule in (rounding, rounding.reference):
                with pytest.raises(ValueError, match="outside the model's tables"):
                    rule(k.copy(), y, mean, bad)
    with pytest.raises(TypeError, match="at most 32 bits"):
        rdoq.Rounding(tables, 8, "mse")(k.copy(), y.astype(np.int64), mean, index)
    with pytest.raises(ValueError, match="C-contiguous"):
        rdoq.Rounding(tables, 8, "mse")(k[:, ::2], y[:, ::2], mean[:, ::2], index[:, ::2])
    with pytest.raises(ValueError, match="differ in size"):
        rdoq.Rounding(tables, 8, "mse")(k, y[:3], mean, index)


@pytest.mark.parametrize("model", ["mse", "msssim"])
def test_files_get_smaller_and_decode_to_the_chosen_symbols(monkeypatch, model):
    """Against the nearest symbols, on the bundled models: fewer bytes at every quality
    tried, the pixels a decoder gives are the encoder's own reconstruction, and the
    quality lost is small."""
    rgb = synthetic_photo(96, 128, seed=3)
    for quality in (1, 4, 8):
        data, pixels = api.encode_and_reconstruct(rgb, quality=quality, model=model)
        assert np.array_equal(api.decode(data), pixels)
        with monkeypatch.context() as patch:
            patch.setitem(rdoq.LAMBDA, model, None)  # the nearest symbols
            plain, plain_pixels = api.encode_and_reconstruct(rgb, quality=quality, model=model)
            assert np.array_equal(api.decode(plain), plain_pixels)
        assert len(data) < len(plain)

        def psnr(x):
            return 10 * np.log10(255**2 / np.mean((x.astype(float) - rgb) ** 2))
        assert psnr(pixels) > psnr(plain_pixels) - 0.5


def test_the_tables_information_is_the_decoders():
    tables = _tables()
    info = rdoq.Rounding(tables, 8, "mse").table.info
    for t in (0, 7, tables.num_tables - 1):
        size = int(tables.sizes[t])
        assert np.array_equal(info[t, :size], information_units(tables.cdf_counts[t, :size]))
        assert not info[t, size:].any()


def test_the_plain_hyperprior_path(tiny_model, monkeypatch):
    """On a model without slices (the tiny one, whose tables are too flat for the shipped
    lambda to move anything: lambda 0 moves every symbol that saves a bit), every encode path
    codes the same chosen symbols, in bands or whole, and decoders give the encoder's
    reconstruction."""
    rgb = synthetic_photo(150, 130, seed=7)
    monkeypatch.setitem(rdoq.LAMBDA, "mse", None)
    nearest = api.encode(rgb, quality=3, model=tiny_model)
    monkeypatch.setitem(rdoq.LAMBDA, "mse", 0)
    data, pixels = api.encode_and_reconstruct(rgb, quality=3, model=tiny_model)
    assert len(data) < len(nearest)
    assert api.encode(rgb, quality=3, model=tiny_model) == data
    assert np.array_equal(api.decode(data, model=tiny_model), pixels)
    target = api.encode_to_target(rgb, target_size=len(data), model=tiny_model)
    assert target.data == data
    m = api.load_model(tiny_model)
    net = m.network
    padded = np.pad(rgb, ((0, 42), (0, 62), (0, 0)), mode="edge")
    results = []
    for band_rows in (None, 1):
        y_g, z = net.analysis(padded, 2)
        symbols, _, _ = net.code_latents(y_g, z, 2, band_rows=band_rows,
                                         rounding=api._rounding(m))
        results.append(symbols.copy())
    assert np.array_equal(results[0], results[1])


def test_escapes_are_never_chosen_nor_left():
    """A symbol at the escape, or one whose step would land on it or outside the table,
    stays; one inside moves (lambda 0: any bit saved is worth it)."""
    tables = _tables()
    t = 5
    size, offset = int(tables.sizes[t]), int(tables.offsets[t])
    top = offset + size - 2  # the largest value inside the table
    k = np.array([top + 1, top + 5, offset - 1, top, offset + 1 if offset < 0 else 2],
                 np.int32)
    index = np.full(k.shape, t, np.uint8)
    mean = np.zeros(k.shape, np.int32)
    y = (k.astype(np.int64) << 8).astype(np.int32)  # exactly on the symbols: no error saved
    rounding = rdoq.Rounding(tables, 8, "mse")
    rounding.lam = 0
    got = rounding(k.copy(), y, mean, index)
    assert got[:3].tolist() == k[:3].tolist()
    assert got[3] == top - 1 and abs(got[4]) == abs(k[4]) - 1
