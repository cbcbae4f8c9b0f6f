"""Transforms in horizontal bands: the halo each layer needs, and banded runs equal to
whole-image runs bit for bit, on every multiply path, at 1 and 2 threads, and through the
API with the tiny model and a shipped one."""

from pathlib import Path

import numpy as np
import pytest

from conftest import synthetic_photo
from qlic_codec import api, modelfile
from qlic_codec.engine import bands, graph, reference
from qlic_codec.engine.graph import IntegerNetwork, ModelSpec

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "qlic-mse.qlicm"
SIZES = [(1, 1), (65, 130), (200, 77), (300, 260)]  # height, width
WHOLE = 10**6  # band rows that hold any test image in one band


# --- the halo of one layer, against the rows each output row reads ---------------------------

def _layer(op, k=5, stride=2):
    if op in ("gdn", "igdn"):
        return {"op": op, "gamma": np.zeros((4, 4), np.uint8)}
    return {"op": op, "stride": stride, "weight": np.zeros((4, k, k, 4), np.int8)}


def _reads(layer, o, rows):
    """Input rows inside the tensor that output row ``o`` reads (the references' formulas)."""
    if layer["op"] in ("gdn", "igdn"):
        return {o}
    k = layer["weight"].shape[1]
    p = k // 2
    if layer["op"] == "conv":
        found = {layer["stride"] * o - p + t for t in range(k)}
    else:  # out[2*i - p + t] += x[i] . w[t]
        found = {i for i in range(rows) for t in range(k) if 2 * i - p + t == o}
    return {r for r in found if 0 <= r < rows}


LAYERS = [_layer("conv", k, s) for k in (1, 3, 5) for s in (1, 2)] + [
    _layer("deconv"), _layer("gdn")]


@pytest.mark.parametrize("layer", LAYERS, ids=lambda x: f"{x['op']}{x.get('stride', '')}"
                         f"k{x['weight'].shape[1] if 'weight' in x else 1}")
def test_input_span_covers_every_row_read(layer):
    for rows in range(1, 11):
        out_rows = bands.output_rows(layer, rows)
        for lo in range(out_rows):
            for hi in range(lo + 1, out_rows + 1):
                a, b = bands.input_span(layer, lo, hi, rows)
                read = set().union(*(_reads(layer, o, rows) for o in range(lo, hi)))
                assert 0 <= a < b <= rows and read <= set(range(a, b))
                # The slice's output starts on a row of the whole output, at or before lo,
                # and reaches hi.
                first = bands.first_output_row(layer, a)
                assert first <= lo
                assert first + bands.output_rows(layer, b - a) >= hi


def test_band_height_follows_the_budget():
    net = IntegerNetwork(ModelSpec(*modelfile.read(SHIPPED)[:2]))
    g_s = net.layers["g_s"]
    assert bands.alignment(g_s) == 16 and bands.alignment(net.layers["g_a"]) == 1
    # A 768x512 photo's synthesis is one band; a 12032-pixel-wide one is cut into bands of a
    # multiple of 16 rows whose activations fit the budget.
    assert bands.band_height(g_s, 32, 48, net.M, 2) == 512
    wide = bands.band_height(g_s, 528, 752, net.M, 2)
    assert wide % 16 == 0 and 16 <= wide < 512
    assert bands.band_bytes(g_s, 528, 752, net.M, 2, 256, 256 + wide) <= bands.BAND_BYTES
    assert bands.band_height(g_s, 528, 752, net.M, 2, budget=1) == 16


# --- banded networks equal whole-image ones ---------------------------------------------------

@pytest.fixture(scope="module")
def tiny_net(tiny_model):
    return IntegerNetwork(ModelSpec(*modelfile.read(tiny_model)[:2]))



def _whole_and_banded(net, pixels, level, band_rows):
    """Every stage of the codec run whole and in bands of ``band_rows``: pairs of results."""
    pairs = []
    y_whole, z_whole = net.analysis(pixels, level, band_rows=WHOLE)
    y_band, z_band = net.analysis(pixels, level, band_rows=band_rows)
    pairs += [(y_whole, y_band), (z_whole, z_band)]
    mean_whole, index_whole = net.hyper_synthesis(z_whole, level, band_rows=WHOLE)
    mean_band, index_band = net.hyper_synthesis(z_whole, level, band_rows=band_rows)
    pairs += [(mean_whole, mean_band), (index_whole, index_band)]
    symbols = net.symbols(y_whole, mean_whole)
    coded = net.code_latents(y_whole.copy(), z_whole, level, means=True, band_rows=band_rows)
    pairs += [(symbols, coded[0]), (index_whole, coded[1]), (mean_whole, coded[2])]
    pixels_whole = net.synthesis(net.reconstruct(symbols, mean_whole), level, band_rows=WHOLE)
    pairs.append((pixels_whole, net.synthesis(net.reconstruct(symbols, mean_whole), level,
                                              band_rows=band_rows)))
    # The decoder of a large image: the means computed again band by band.
    pairs.append((pixels_whole, net.synthesis_of_symbols(symbols, None, z_whole, level,
                                                         band_rows=band_rows)))
    pairs.append((pixels_whole, net.synthesis_of_symbols(symbols, mean_whole, z_whole, level,
                                                         band_rows=band_rows)))
    # Cropped as the bands are written.
    height, width = pixels.shape[:2]
    pairs.append((pixels_whole[:height, :width], net.synthesis_of_symbols(
        symbols, None, z_whole, level, band_rows=band_rows, size=(height, width))))
    return pairs


def _assert_pairs_equal(pairs):
    for whole, banded in pairs:
        assert whole.dtype == banded.dtype and whole.shape == banded.shape
        np.testing.assert_array_equal(whole, banded)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
def test_bands_equal_the_whole_image(tiny_net, kernel_path, threads, size):
    pixels = synthetic_photo(*size, seed=sum(size))
    for band_rows in (1, 3):
        _assert_pairs_equal(_whole_and_banded(tiny_net, pixels, 2, band_rows))


def test_bands_equal_the_whole_image_on_the_reference(tiny_model):
    net = IntegerNetwork(ModelSpec(*modelfile.read(tiny_model)[:2]), kernels=reference)
    _assert_pairs_equal(_whole_and_banded(net, synthetic_photo(70, 90, seed=5), 6, 2))


def test_a_join_in_place_is_the_concatenation(tiny_net, kernel_path):
    # The kept rows, then rows ``skip ..`` of the layer's output: with fewer kept rows than
    # dropped ones, more, as many, and none dropped.
    rng = np.random.default_rng(3)
    for layer in tiny_net.layers["g_s"][:-1] + tiny_net.layers["g_a"][:-1]:
        shape = (9, 7, layer["weight"].shape[3] if "weight" in layer else
                 layer["gamma"].shape[0])
        dtype = np.int8 if layer["op"] in ("gdn", "igdn") else np.int16
        x = rng.integers(-100, 100, shape).astype(dtype)
        whole = tiny_net._run_layer(layer, x)
        for k, skip in ((1, 3), (3, 1), (2, 2), (2, 0)):
            head = rng.integers(-100, 100, (k,) + whole.shape[1:]).astype(whole.dtype)
            rows = len(whole) - skip - 1
            got = tiny_net._run_layer_joined(layer, x, head, skip, rows)
            np.testing.assert_array_equal(got, np.concatenate([head, whole[skip: skip + rows]]))
            assert got.dtype == whole.dtype and got.flags.c_contiguous


def test_bands_join_in_place(tiny_net, monkeypatch):
    # Bands of one row keep rows for every layer with a halo: the joins happen in place.
    calls = []
    joined = tiny_net._run_layer_joined
    monkeypatch.setattr(tiny_net, "_run_layer_joined",
                        lambda *a: calls.append(a[0]["op"]) or joined(*a))
    pixels = synthetic_photo(65, 130, seed=2)
    whole = tiny_net.analysis(pixels, 2, band_rows=WHOLE)
    assert not calls
    banded = tiny_net.analysis(pixels, 2, band_rows=1)
    assert calls
    for a, b in zip(whole, banded):
        np.testing.assert_array_equal(a, b)


def test_synthesis_keeps_its_buffers_from_band_to_band(tiny_net, kernel_path, monkeypatch):
    # Each layer of g_s but the last writes every band into one buffer of the run; g_a and
    # h_s make new ones (their layers shrink band by band: kept, they would add to the peak).
    made = []
    real = graph._band_buffer

    def spy(slot, shape, dtype):
        buf = real(slot, shape, dtype)
        made.append((slot is not None, id(buf.base)))
        return buf

    monkeypatch.setattr(graph, "_band_buffer", spy)
    y, z = tiny_net.analysis(synthetic_photo(65, 130, seed=4), 2, band_rows=1)
    mean, _ = tiny_net.hyper_synthesis(z, 2, band_rows=1)
    assert made and not any(kept for kept, _ in made)
    y_hat = tiny_net.reconstruct(tiny_net.symbols(y, mean), mean)
    whole = tiny_net.synthesis(y_hat, 2, band_rows=WHOLE)
    made.clear()
    banded = tiny_net.synthesis(y_hat, 2, band_rows=1)
    np.testing.assert_array_equal(banded, whole)
    assert made and all(kept for kept, _ in made)
    # A buffer per layer, and one more where a later band needed more rows than the first.
    steps = len(tiny_net._synthesis_steps(whole.shape[1])) - 1
    assert len({buf for _, buf in made}) <= 2 * steps < len(made) // 4


# --- through the API: the same bytes and pixels with the smallest bands -----------------------

def _api_round_trip(monkeypatch, rgb, quality, model, budget):
    monkeypatch.setattr(bands, "BAND_BYTES", budget)
    data, reconstruction = api.encode_and_reconstruct(rgb, quality, model)
    return data, reconstruction, api.decode(data, model)


@pytest.mark.parametrize("size", [(1, 1), (200, 77)], ids=lambda s: f"{s[1]}x{s[0]}")
def test_api_with_the_smallest_bands(monkeypatch, tiny_model, size):
    rgb = synthetic_photo(*size, seed=7)
    data, recon, decoded = _api_round_trip(monkeypatch, rgb, 5, tiny_model, 2**40)
    assert api.encode(rgb, 5, tiny_model) == data
    small = _api_round_trip(monkeypatch, rgb, 5, tiny_model, 1)
    assert small[0] == data
    np.testing.assert_array_equal(small[1], recon)
    np.testing.assert_array_equal(small[2], decoded)
    np.testing.assert_array_equal(decoded, recon)


def test_shipped_model_with_the_smallest_bands(monkeypatch):
    rgb = synthetic_photo(40, 100, seed=11)
    whole = _api_round_trip(monkeypatch, rgb, 4, str(SHIPPED), 2**40)
    small = _api_round_trip(monkeypatch, rgb, 4, str(SHIPPED), 1)
    assert small[0] == whole[0]
    for a, b in zip(small[1:], whole[1:]):
        np.testing.assert_array_equal(a, b)
