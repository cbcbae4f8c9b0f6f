"""The channel-conditional entropy model in integers (``engine.slices``, ``slicecoding``):
bit-exact on every kernel path and thread count, refused when malformed, robust to hostile
streams, close to the quantized simulation it is exported from, and trainable by the
quantization-aware fine-tune."""

import copy
import dataclasses

import numpy as np
import pytest

import qlic_codec
from conftest import GOLDEN, synthetic_photo
from qlic_codec import api, modelfile, slicecoding
from qlic_codec.engine import reference
from qlic_codec.engine.graph import IntegerNetwork, ModelSpec
from qlic_codec.errors import CorruptStreamError, ModelFileError

TINY_CC = GOLDEN / "tiny-cc.qlicm"
# The same kind of model with 12-bit context codes (model format 3, ``cc.ctx_max`` 2047).
TINY_CC12 = GOLDEN / "tiny-cc12.qlicm"


@pytest.fixture(scope="module")
def spec():
    manifest, arrays, _ = modelfile.read(TINY_CC)
    return manifest, arrays


def test_tiny_model_has_slices_that_matter(spec):
    """The fixture is meaningful: four slices, and the slice networks change the means, the
    tables and (through the residual) the latent."""
    m = api.load_model(str(TINY_CC))
    net = m.network
    assert net.cc is not None and net.cc.sizes == [4, 4, 8, 8]
    y_g, z = net.analysis(synthetic_photo(64, 128, 3), 3)
    acc_p = net.hyper_accumulators(z)
    plain_mean, plain_index = net.hyper_synthesis(z, 3)
    state = net.cc.start(acc_p, 3)
    moved = {"mean": 0, "index": 0, "residual": 0}
    for i, (a, n) in enumerate(zip(net.cc.starts, net.cc.sizes)):
        mean, index = state.parameters(i)
        moved["mean"] += int(np.count_nonzero(mean != plain_mean[..., a:a + n]))
        moved["index"] += int(np.count_nonzero(index != plain_index[..., a:a + n]))
        y_hat = net.reconstruct(net.symbols(np.ascontiguousarray(y_g[..., a:a + n]), mean), mean)
        state.finish(i, y_hat)
        moved["residual"] += int(np.count_nonzero(state.y_g_dec[..., a:a + n] != y_hat))
    assert all(v > 0 for v in moved.values()), moved


@pytest.mark.parametrize("level", [0, 7])
def test_reference_and_numba_kernels_agree(spec, kernel_path, threads, level):
    fast = IntegerNetwork(ModelSpec(*spec))
    slow = IntegerNetwork(ModelSpec(*spec), kernels=reference)
    m = api.load_model(str(TINY_CC))
    y_g, z = fast.analysis(synthetic_photo(64, 128, seed=3), level)
    runs = {}
    for name, net in (("fast", fast), ("slow", slow)):
        acc_p = net.hyper_accumulators(z)
        stream, y_dec = slicecoding.encode_y(net, m.y_tables, y_g, acc_p, level)
        decoded = slicecoding.decode_y(net, m.y_tables, stream, z, level)
        runs[name] = (stream, y_dec, decoded, net.synthesis(decoded, level))
    assert runs["fast"][0] == runs["slow"][0]
    for a, b in zip(runs["fast"][1:], runs["slow"][1:]):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    # The decoder rebuilds exactly what the encoder reconstructed.
    np.testing.assert_array_equal(runs["fast"][1], runs["fast"][2])


@pytest.fixture(scope="module")
def spec12():
    manifest, arrays, _ = modelfile.read(TINY_CC12)
    return manifest, arrays


def _slice_run(net, y_g, z, level):
    """Encode and decode y slice by slice; the state's context codes after the last one."""
    tables = api.load_model(str(TINY_CC12)).y_tables
    stream, y_dec = slicecoding.encode_y(net, tables, y_g, net.hyper_accumulators(z), level)
    decoded = slicecoding.decode_y(net, tables, stream, z, level)
    state = net.cc.start(net.hyper_accumulators(z), level)
    for i, (a, n) in enumerate(zip(net.cc.starts, net.cc.sizes)):
        mean, _ = state.parameters(i)
        state.finish(i, net.reconstruct(net.symbols(np.ascontiguousarray(y_g[..., a:a + n]),
                                                    mean), mean))
    return stream, y_dec, decoded, state.ctx


@pytest.mark.parametrize("level", [0, 7])
def test_wide_context_codes_are_used_and_bit_exact(spec12, kernel_path, threads, level):
    """12-bit context codes: int16, beyond the 8-bit range where the latent is large, and
    every kernel path (whose slice networks then multiply int16 inputs) gives the reference
    kernels' stream, latent and context codes."""
    fast = IntegerNetwork(ModelSpec(*spec12))
    slow = IntegerNetwork(ModelSpec(*spec12), kernels=reference)
    assert fast.cc.ctx_max == 2047
    y_g, z = fast.analysis(synthetic_photo(64, 128, seed=3), level)
    runs = [_slice_run(net, y_g, z, level) for net in (fast, slow)]
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1:], runs[1][1:]):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(runs[0][1], runs[0][2])
    ctx = runs[0][3]
    assert ctx.dtype == np.int16 and 127 < np.abs(ctx).max() <= 2047


def test_wide_context_codes_round_trip_through_the_api():
    image = synthetic_photo(70, 131, seed=11)
    for quality in (1, 8):
        data, pixels = api.encode_and_reconstruct(image, quality, str(TINY_CC12))
        np.testing.assert_array_equal(qlic_codec.decode(data, str(TINY_CC12)), pixels)


def test_the_state_from_z_in_bands_is_the_state_from_whole_accumulators(spec, monkeypatch):
    """h_s handing its accumulators over a row at a time, in bands of a few rows, gives the
    slices what the whole accumulators give: the same stream and latent."""
    from qlic_codec.engine import bands, slices
    net = IntegerNetwork(ModelSpec(*spec))
    m = api.load_model(str(TINY_CC))
    y_g, z = net.analysis(synthetic_photo(200, 136, seed=5), 4)
    whole = slicecoding.encode_y(net, m.y_tables, y_g, net.hyper_accumulators(z), 4)
    monkeypatch.setattr(slices, "_ROW_ELEMENTS", 1)  # one latent row at a time
    monkeypatch.setattr(bands, "BAND_BYTES", 1)  # h_s in the smallest bands
    banded = slicecoding.encode_y(net, m.y_tables, y_g, None, 4, z)
    assert banded[0] == whole[0]
    np.testing.assert_array_equal(banded[1], whole[1])
    np.testing.assert_array_equal(slicecoding.decode_y(net, m.y_tables, whole[0], z, 4),
                                  whole[1])


def test_a_finished_slice_lets_go_of_what_h_s_predicted_for_it(spec):
    net = IntegerNetwork(ModelSpec(*spec))
    y_g, z = net.analysis(synthetic_photo(64, 128, seed=6), 2)
    state = net.cc.start_from_z(z, 2)
    mean, _ = state.parameters(0)
    state.finish(0, net.reconstruct(net.symbols(np.ascontiguousarray(y_g[..., :4]), mean), mean))
    assert state.parts[0] is None and all(p is not None for p in state.parts[1:])


def test_round_trip_is_deterministic_and_matches_the_encoders_reconstruction():
    image = synthetic_photo(70, 131, seed=11)
    for quality in (1, 8):
        data, pixels = api.encode_and_reconstruct(image, quality, str(TINY_CC))
        assert data == qlic_codec.encode(image, quality, str(TINY_CC))
        np.testing.assert_array_equal(qlic_codec.decode(data, str(TINY_CC)), pixels)
        assert pixels.shape == image.shape


def _corrupt(data: bytes, seed: int) -> bytes:
    from qlic_codec import container
    header, (z_stream, y_stream) = container.parse(data, 2**30)
    rng = np.random.default_rng(seed)
    y = bytearray(y_stream)
    for _ in range(3):
        y[int(rng.integers(len(y)))] ^= 1 << int(rng.integers(8))
    if seed % 2:
        y = y[: len(y) // 2 // 4 * 4]
    new = dataclasses.replace(header, stream_lengths=(len(z_stream), len(y)))
    return container.pack(new, [z_stream, bytes(y)])


@pytest.mark.parametrize("seed", range(6))
def test_damaged_y_stream_decodes_or_fails_cleanly(seed):
    """A y stream with flipped bits (and, every other time, cut short) either decodes to an
    image of the right size or fails with CorruptStreamError, never anything else."""
    data = qlic_codec.encode(synthetic_photo(64, 64, seed=2), 4, str(TINY_CC))
    bad = _corrupt(data, seed)
    try:
        pixels = qlic_codec.decode(bad, str(TINY_CC))
    except CorruptStreamError:
        return
    assert pixels.shape == (64, 64, 3)


# --- validation ----------------------------------------------------------------------------

def _edited(spec, edit):
    manifest, arrays = copy.deepcopy(spec[0]), dict(spec[1])
    edit(manifest, arrays)
    return ModelSpec(manifest, arrays)


def _set_slices(sizes):
    def edit(m, a):
        m["cc"]["slices"] = sizes
    return edit


def _array(name, value):
    def edit(m, a):
        a[name] = value(a[name].copy())
    return edit


def _layer(slice_index, kind, j, key, value):
    def edit(m, a):
        m["cc"]["networks"][slice_index][kind][j][key] = value
    return edit


def _drop_network(m, a):
    m["cc"]["networks"].pop()


def _fill(value):
    def f(x):
        x[...] = value
        return x
    return f


@pytest.mark.parametrize("edit,match", [
    (_set_slices([4, 4, 8, 7]), "do not split"),
    (_set_slices([24] * 0), "do not split"),
    (_set_slices("4,4"), "malformed|do not split"),
    (_drop_network, "one pair of networks"),
    (_array("cc.lrp.lut", _fill(1000)), "outside"),
    (_array("cc.0.scale.mult", _fill(2**31)), "outside"),
    (_array("cc.1.mean.shift", _fill(0)), "outside"),
    (_array("cc.ctx.mult", lambda x: x[:1]), "shape"),
    (_array("cc.hyper.mult", lambda x: x.astype(np.int64)), "dtype"),
    (_layer(0, "params", 0, "stride", 2), "stride-1|does not fit|unsupported"),
    (_layer(1, "lrp", 0, "pad_value", -128), "zero padding"),
    (_layer(2, "params", 0, "in_max", 100), "does not fit"),
], ids=lambda v: getattr(v, "__name__", None) if callable(v) else None)
def test_malformed_cc_sections_are_refused(spec, edit, match):
    with pytest.raises(ModelFileError, match=match):
        IntegerNetwork(_edited(spec, edit), kernels=reference)


def _set_ctx_max(value):
    def edit(m, a):
        m["cc"]["ctx_max"] = value
    return edit


@pytest.mark.parametrize("edit,match", [
    (_set_ctx_max(126), "ctx_max must be in 127..2047"),
    (_set_ctx_max(4095), "ctx_max must be in 127..2047"),
    (_set_ctx_max(True), "malformed"),
    # A network that reads context codes must declare their range; slice 0's parameter
    # network reads hyper codes only.
    (_layer(1, "params", 0, "in_max", 127), "does not fit"),
    (_layer(0, "lrp", 0, "in_max", 2046), "does not fit"),
], ids=["ctx_max-126", "ctx_max-4095", "ctx_max-bool", "params-in_max", "lrp-in_max"])
def test_malformed_wide_context_sections_are_refused(spec12, edit, match):
    with pytest.raises(ModelFileError, match=match):
        IntegerNetwork(_edited(spec12, edit), kernels=reference)


def test_only_the_networks_that_read_context_codes_declare_their_range(spec12):
    """The exporter gives slice 0's parameter network (hyper codes only) an 8-bit input and
    every other network the context codes' 12-bit one, and the loader takes exactly that."""
    first = [(i, kind, pair[kind][0]["in_max"])
             for i, pair in enumerate(spec12[0]["cc"]["networks"]) for kind in ("params", "lrp")]
    assert first[0] == (0, "params", 127)
    assert all(in_max == 2047 for _, _, in_max in first[1:])
    assert IntegerNetwork(ModelSpec(*spec12), kernels=reference).cc.ctx_max == 2047


def test_missing_cc_array_is_refused(spec):
    def drop(m, a):
        del a["cc.2.lrp.mult"]
    with pytest.raises(ModelFileError, match="missing array 'cc.2.lrp.mult'"):
        IntegerNetwork(_edited(spec, drop), kernels=reference)


# --- against the float model and its simulation --------------------------------------------

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_cc_float():
    from conftest import tiny_cc_float_model
    return tiny_cc_float_model()


def test_simulation_without_quantization_is_the_float_model(tiny_cc_float):
    from qlic_codec.quantize import simulate
    from qlic_codec.train.data import to_tensor
    x = to_tensor(synthetic_photo(64, 64, 1))
    level = torch.tensor([1.0])
    with torch.no_grad():
        a = tiny_cc_float(x, level)
        b = simulate.SimulatedModel(tiny_cc_float)(x, level)
    assert torch.equal(a["x_hat"], b["x_hat"])
    for key in ("y", "z"):
        assert torch.equal(a["likelihoods"][key], b["likelihoods"][key])


def _simulated(sim, photo, quality):
    """Pixels and y symbols of the simulation, NHWC (symbols read where the slices hand them
    to the likelihood)."""
    from qlic_codec.train import slices
    from qlic_codec.train.data import to_tensor
    seen, latent = [], {}
    gaussian = slices.gaussian_likelihood
    entropy_y = sim.model.entropy_y

    def see(y_rec, mean_g, scale_g):
        seen.append(torch.round(y_rec - mean_g))
        return gaussian(y_rec, mean_g, scale_g)

    def keep(y, gain, *args):
        out = entropy_y(y, gain, *args)
        latent["y_g_dec"] = out["y_hat"] * gain  # the decoded latent, gained like the engine's
        return out

    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        patch.setattr(slices, "gaussian_likelihood", see)
        patch.setattr(sim.model, "entropy_y", keep)
        out = sim(to_tensor(photo), torch.tensor([quality - 1.0]))

    def nhwc(t):
        return t[0].permute(1, 2, 0).numpy()
    symbols = nhwc(torch.cat(seen, 1)).astype(np.int64)
    pixels = nhwc(torch.round(out["x_hat"].clamp(0, 1) * 255)).astype(np.int64)
    return pixels, symbols, nhwc(latent["y_g_dec"]).astype(np.float64)


def _engine(path, photo, quality):
    from qlic_codec import quality as quality_grid
    m = api.load_model(str(path))
    net = m.network
    level = quality_grid.to_level(quality, net.levels, m.quality_steps)
    y_g, z = net.analysis(photo, level)
    state = net.cc.start(net.hyper_accumulators(z), level)
    symbols = []
    for i, (a, n) in enumerate(zip(net.cc.starts, net.cc.sizes)):
        mean, _ = state.parameters(i)
        s = net.symbols(np.ascontiguousarray(y_g[..., a:a + n]), mean)
        symbols.append(s)
        state.finish(i, net.reconstruct(s, mean))
    pixels = net.synthesis(state.y_g_dec, level)
    _, coded = api.encode_and_reconstruct(photo, quality, str(path))
    np.testing.assert_array_equal(pixels, coded)
    y_g_dec = state.y_g_dec / 2.0**net.mean_bits
    return pixels.astype(np.int64), np.concatenate(symbols, axis=2).astype(np.int64), y_g_dec


@pytest.mark.parametrize("ctx_bits", [8, 12])
def test_engine_matches_its_simulation(tiny_cc_float, tmp_path, ctx_bits):
    """As for the plain hyperprior (``test_quantize._assert_engine_matches_simulation``): the
    same pictures within one code per pixel, y symbols within one and rarely different. The
    slices add one more way for a code to flip (a neighbouring context code changes the next
    slice's mean by a fraction of a step), so the share allowed is the same. The decoded
    latents, latent residuals included, are compared too: the residuals barely move pixels
    in a tiny random model."""
    from qlic_codec.quantize import simulate
    from qlic_codec.quantize.export import export
    images = [synthetic_photo(128, 128, s) for s in range(3)]
    path = tmp_path / "cc.qlicm"
    variant = simulate.Variant("shipped", ("channel", "uniform"), acts="max", per_channel=True,
                               mean_removed=True, tables=True, fold=True)
    sim = simulate.build(tiny_cc_float, variant, images)
    if ctx_bits == 8:
        export(tiny_cc_float, images, path, {"metric": "mse"}, scale_max=32.0)
    else:
        # The simulation's quantizers with 12-bit context codes (as the fine-tune trains
        # them), the weights folded again with their finer steps, and the export of the same.
        from qlic_codec.quantize.activations import ActQuant
        quants = dict(sim.quants)
        q = quants["cc.ctx"]
        quants["cc.ctx"] = ActQuant(q.range, q.power, q.offset, 12)
        weights = simulate.quantize_weights(tiny_cc_float, *variant.weights, quants=quants)
        sim = simulate.SimulatedModel(weights, quants, tables=True)
        export(tiny_cc_float, images, path, {"metric": "mse"}, scale_max=32.0, learned=quants)
        assert modelfile.read(path)[0]["cc"]["ctx_max"] == 2047
    photo = synthetic_photo(64, 64, 9)
    for quality in (1, 2):
        x_sim, y_sim, dec_sim = _simulated(sim, photo, quality)
        x, y, dec = _engine(path, photo, quality)
        # The decoded latents (residuals included, in symbols), where both coded the same
        # symbols: measured within 0.05 everywhere and 0.02 for 95% (a sign error in the
        # residual table gives 0.3).
        gap = np.abs(dec - dec_sim)[y == y_sim]
        assert gap.max() <= 0.1 and np.percentile(gap, 95) <= 0.04, (quality, gap.max())
        off = np.abs(x - x_sim)
        assert off.max() <= 1, (quality, int(off.max()))
        assert np.mean(off == 1) <= 0.05, (quality, float(np.mean(off == 1)))
        assert y.shape == y_sim.shape
        assert np.abs(y - y_sim).max() <= 1, quality
        assert np.mean(y != y_sim) <= 0.05, (quality, float(np.mean(y != y_sim)))


def test_finetune_trains_the_slice_networks_and_their_ranges(tiny_cc_float, tmp_path):
    from PIL import Image
    from qlic_codec.quantize import export, finetune
    (tmp_path / "train").mkdir()
    for s in range(2):
        Image.fromarray(synthetic_photo(128, 128, s)).save(tmp_path / "train" / f"{s}.png")
    model = copy.deepcopy(tiny_cc_float)
    before = model.contexts[1].params[0].weight.detach().clone()
    info = finetune.finetune(model, {"metric": "mse", "lambdas": [0.01, 0.1]}, tmp_path,
                             steps=2, batch=2, crop=64, lr=1e-3, calibration=2,
                             log=lambda s: None, range_lr=0.05)
    assert model.points is None  # the quantization points are gone with the hooks
    ranges = finetune.ranges_from_meta(info["activation_ranges"])
    assert {"cc.hyper", "cc.ctx", "cc.0.p.0", "cc.2.r.1"} <= set(ranges)
    assert not torch.equal(before, model.contexts[1].params[0].weight)
    images = export.calibration_images(tmp_path, 2)
    export.export(model, images, tmp_path / "ft.qlicm", {"metric": "mse"}, scale_max=32.0,
                  learned=ranges)
    data = qlic_codec.encode(synthetic_photo(64, 64, 4), 2, str(tmp_path / "ft.qlicm"))
    assert qlic_codec.decode(data, str(tmp_path / "ft.qlicm")).shape == (64, 64, 3)


def test_banded_stages_of_the_slice_path_match_whole_ones():
    """What the slices read and what the synthesis writes, in the smallest bands: h_s's
    accumulators kept whole, and the cropped pixels of the decoded latent."""
    net = api.load_model(str(TINY_CC)).network
    image = synthetic_photo(130, 77, seed=5)
    acc_y, z = net.analysis_accumulators(image, band_rows=1)
    whole_y, whole_z = net.analysis_accumulators(image, band_rows=10**6)
    np.testing.assert_array_equal(acc_y, whole_y)
    np.testing.assert_array_equal(z, whole_z)
    acc_p = net.hyper_accumulators(z, band_rows=1)
    np.testing.assert_array_equal(acc_p, net.hyper_accumulators(z, band_rows=10**6))
    y_g = net.y_head(acc_y, 40)
    _, y_dec = slicecoding.encode_y(net, api.load_model(str(TINY_CC)).y_tables, y_g, acc_p, 40)
    whole = net.synthesis(y_dec, 40, band_rows=10**6)
    for rows in (16, 48):
        banded = net.synthesis(y_dec, 40, band_rows=rows, size=image.shape[:2])
        np.testing.assert_array_equal(banded, whole[:130, :77])
