"""The quantization study's building blocks: weight schemes, activation fits, the simulation,
the clipping fine-tune, and the engine against the simulation it is exported from."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import synthetic_photo  # noqa: E402
from qlic_codec import container  # noqa: E402
from qlic_codec.quantize import activations, simulate, weights  # noqa: E402


def _laplace(shape, seed=0):
    return np.random.default_rng(seed).laplace(0, 0.05, shape)


@pytest.mark.parametrize("grouping", weights.GROUPINGS)
@pytest.mark.parametrize("scheme", weights.SCHEMES)
def test_weight_schemes_use_at_most_255_levels_per_group(grouping, scheme):
    w = _laplace((6, 4, 3, 3))
    q = weights.fake_quantize(w, grouping, scheme)
    groups = [q] if grouping == "layer" else list(q)
    for g in groups:
        assert np.unique(g).size <= 255
    # Quantization error is small against the weights' spread.
    assert np.sqrt(np.mean((q - w) ** 2)) < 0.05 * np.abs(w).max()


def test_per_channel_beats_per_layer_on_unequal_channels():
    w = _laplace((8, 16, 3, 3))
    w[0] *= 20  # one loud channel forces a coarse per-layer step
    err = {g: np.mean((weights.fake_quantize(w, g, "uniform") - w) ** 2)
           for g in weights.GROUPINGS}
    assert err["channel"] < err["layer"]


def test_lloyd_beats_uniform_on_heavy_tails():
    w = np.random.default_rng(1).standard_t(2, size=(1, 4000)) * 0.01
    err = {s: np.mean((weights.fake_quantize(w, "layer", s, bits=4) - w) ** 2)
           for s in ("uniform", "lloyd")}
    assert err["lloyd"] < err["uniform"]


def test_transposed_weights_group_by_their_output_axis():
    w = _laplace((4, 6, 5, 5))  # ConvTranspose2d: (Cin, Cout, K, K)
    w[:, 2] *= 50
    q = weights.fake_quantize(w, "channel", "uniform", out_axis=1)
    # The quiet output channels keep a fine grid although channel 2 is loud.
    assert np.abs(q[:, 0] - w[:, 0]).max() <= np.abs(w[:, 0]).max() / 254 + 1e-12


def test_best_clip_never_worse_than_the_maximum():
    w = np.random.default_rng(2).standard_t(3, size=(5, 200))
    clip = weights.best_clip(w, bits=4)
    for c in range(5):
        full = weights.fake_quantize(w[c:c + 1], "channel", "uniform", bits=4)
        clipped = weights.fake_quantize(w[c:c + 1], "channel", "uniform", bits=4,
                                        clip=clip[c:c + 1])
        assert np.sum((clipped - w[c]) ** 2) <= np.sum((full - w[c]) ** 2) + 1e-12


@pytest.mark.parametrize("power", activations.POWERS)
def test_nearest_level_matches_a_table_search(power):
    levels = activations.codebook(power)
    u = np.random.default_rng(3).normal(0, 0.6, 5000)
    mids = (levels[1:] + levels[:-1]) / 2
    expected = levels[np.searchsorted(mids, u)]
    assert np.allclose(activations.nearest_level(u, power), expected, atol=1e-12)
    got = activations.nearest_level(torch.from_numpy(u), power, torch).numpy()
    assert np.allclose(got, expected, atol=1e-12)


def test_activation_fits():
    rng = np.random.default_rng(4)
    samples = np.stack([rng.laplace(0, s, 3000) for s in (0.1, 1.0, 10.0)]) + 5.0
    amax = np.abs(samples).max(axis=1)
    per_tensor = activations.fit(samples, amax, "max", per_channel=False)
    assert np.all(per_tensor.range == amax.max())
    per_channel = activations.fit(samples, amax, "max", per_channel=True)
    assert np.allclose(per_channel.range, amax)
    centred = activations.fit(samples, amax, "max", True, mean_removed=True,
                              means=samples.mean(axis=1))
    assert np.all(centred.range < per_channel.range)
    mux = activations.fit(samples, amax, "mux", per_channel=True)
    x = torch.from_numpy(samples.T.reshape(1, 3000, 3, 1).transpose(0, 2, 1, 3).copy())

    def err(q):
        return float(((q(x) - x) ** 2).mean())
    # The multiplexer picks per channel, so it is never worse than the uniform full range
    # that is among its choices.
    assert err(mux) <= err(per_channel) * 1.0001
    with pytest.raises(ValueError):
        activations.fit(samples, amax, "median", True)


# --- the integer engine against the simulation it was exported from ----------------------------

# Bounds of _assert_engine_matches_simulation, measured on the tiny models of these tests
# (4 photos x 2 levels each): y symbols that differ, at most 3 of 192 (1.6%); pixels off by
# one code, at most 1.5%. The bounds leave a margin of about 3x.
MAX_Y_SYMBOLS_OFF = 0.05
MAX_PIXELS_OFF_BY_ONE = 0.05


def _simulated_symbols(sim, photo, quality):
    """Pixels (uint8 codes as int16), z and y symbols of the simulation, NHWC like the engine.

    The simulation returns only pictures and likelihoods, so the symbols are read where its
    forward pass hands them to the likelihood functions."""
    from qlic_codec.train.data import to_tensor
    seen = {}
    gaussian = simulate.gaussian_likelihood
    z_prior = sim.model.z_prior
    z_likelihood = z_prior.likelihood

    def see_y(y_rec, mean_g, scale_g):
        seen["y"] = torch.round(y_rec - mean_g)
        return gaussian(y_rec, mean_g, scale_g)

    def see_z(z_hat):
        seen["z"] = z_hat
        return z_likelihood(z_hat)

    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        patch.setattr(simulate, "gaussian_likelihood", see_y)
        patch.setattr(z_prior, "likelihood", see_z)
        out = sim(to_tensor(photo), torch.tensor([quality - 1.0]))
    assert set(seen) == {"y", "z"}, "the simulation no longer computes its likelihoods so"

    def nhwc(t):
        return t[0].permute(1, 2, 0).numpy().astype(np.int64)
    pixels = torch.round(out["x_hat"].clamp(0, 1) * 255)
    return nhwc(pixels), nhwc(seen["z"]), nhwc(seen["y"])


def _engine_symbols(path, photo, quality):
    """Pixels, z and y symbols of the integer codec with the nearest symbols (what
    ``api.encode`` codes before its rounding rule, ``rdoq``, which the simulation has not)."""
    from qlic_codec import api, quality as quality_grid, rdoq
    assert photo.shape[0] % 64 == 0 and photo.shape[1] % 64 == 0  # no padding to undo
    m = api.load_model(str(path))
    level = quality_grid.to_level(quality, m.network.levels, m.quality_steps)
    y_g, z = m.network.analysis(photo, level)
    mean_g, _ = m.network.hyper_synthesis(z, level)
    saved = dict(rdoq.LAMBDA)
    try:
        rdoq.LAMBDA[m.metric] = None
        _, pixels = api.encode_and_reconstruct(photo, quality, str(path))
    finally:
        rdoq.LAMBDA.update(saved)
    return pixels.astype(np.int64), z.astype(np.int64), m.network.symbols(y_g, mean_g)


def _assert_engine_matches_simulation(sim, path, qualities=(1, 1.5, 2)):
    """The integer codec against the quantized simulation it was exported from, on one photo.

    Asserted: every pixel within 1 code (uint8) of the simulation's; the z symbols identical;
    every y symbol within 1 of the simulation's, and at most MAX_Y_SYMBOLS_OFF of them
    different; at most MAX_PIXELS_OFF_BY_ONE of the pixels off by one.

    Why not identical: the engine computes every layer in exact integers, rescaling with
    fixed-point multipliers of about 31 significant bits and rounding halves up (GDN quotients
    half away from zero); the simulation computes the same layers in float32 on dequantized
    codes and rounds with ``torch.round`` (halves to even). Where a value lies within float32
    error, or within the multiplier's relative error, of a boundary between two codes, the two
    pick neighbouring codes. A flipped code inside the network moves the fixed-point latent
    ``y * gain`` or the predicted mean by a fraction of a symbol step, and a latent that lies
    near the middle between two symbols is then coded as the neighbouring symbol (measured:
    up to 3 of 192 y symbols; the z symbols never differed). Each side reconstructs from its
    own symbols, so the pictures differ slightly, and the final rounding to 8-bit pixels gives
    neighbouring codes where the two straddle a half (measured: never more than one code).
    """
    photo = synthetic_photo(64, 64, 9)
    for quality in qualities:
        x_sim, z_sim, y_sim = _simulated_symbols(sim, photo, quality)
        pixels, z, y = _engine_symbols(path, photo, quality)
        off = np.abs(pixels - x_sim)
        assert off.max() <= 1, (quality, int(off.max()))
        assert np.mean(off == 1) <= MAX_PIXELS_OFF_BY_ONE, (quality, float(np.mean(off == 1)))
        np.testing.assert_array_equal(z, z_sim)
        assert y.shape == y_sim.shape
        assert np.abs(y - y_sim).max() <= 1, quality
        assert np.mean(y != y_sim) <= MAX_Y_SYMBOLS_OFF, (quality, float(np.mean(y != y_sim)))


@pytest.fixture(scope="module")
def tiny_float():
    from qlic_codec.train.model import MeanScaleHyperprior
    torch.manual_seed(5)
    model = MeanScaleHyperprior(N=8, M=12, levels=2).eval()
    with torch.no_grad():
        model.log_gain.add_(2.0)
    return model


def test_simulation_without_quantization_is_the_float_model(tiny_float):
    from conftest import synthetic_photo
    from qlic_codec.train.data import to_tensor
    x = to_tensor(synthetic_photo(64, 64, 1))
    level = torch.tensor([1.0])
    with torch.no_grad():
        a, b = tiny_float(x, level), simulate.SimulatedModel(tiny_float)(x, level)
    assert torch.equal(a["x_hat"], b["x_hat"])
    for key in ("y", "z"):
        assert torch.equal(a["likelihoods"][key], b["likelihoods"][key])


def test_engine_matches_its_simulation(tiny_float, tmp_path):
    """The exported integer model and the quantized simulation it was fitted with give the
    same pictures within one code per pixel, the same z symbols and y symbols within one
    (why not identical: ``_assert_engine_matches_simulation``)."""
    from qlic_codec.quantize.export import export

    images = [synthetic_photo(128, 128, s) for s in range(3)]
    path = tmp_path / "t.qlicm"
    export(tiny_float, images, path, {"metric": "mse"}, scale_max=32.0)
    variant = simulate.Variant("shipped", ("channel", "uniform"), acts="max",
                               per_channel=True, mean_removed=True, tables=True, fold=True)
    sim = simulate.build(tiny_float, variant, images)
    _assert_engine_matches_simulation(sim, path)


def test_the_sub_level_grid_keeps_the_integer_levels_bit_exact(tiny_float, tmp_path):
    """A model exported with 16 sub-levels per quality makes, at integer qualities, the
    streams (after the header) and pixels of the same model exported with integer levels
    only, and its rows between them interpolate: sizes grow along the grid."""
    from qlic_codec import api
    from qlic_codec.quantize.export import export

    images = [synthetic_photo(128, 128, s) for s in range(3)]
    grid, plain = tmp_path / "grid.qlicm", tmp_path / "plain.qlicm"
    export(tiny_float, images, grid, {"metric": "mse"}, scale_max=32.0, quality_steps=16)
    export(tiny_float, images, plain, {"metric": "mse"}, scale_max=32.0, quality_steps=1)
    m = api.load_model(str(grid))
    assert (m.network.levels, m.quality_steps, m.top_quality) == (17, 16, 2)
    assert api.load_model(str(plain)).network.levels == 2
    photo = synthetic_photo(64, 96, 3)
    for quality in (1, 2):
        with_grid, pixels = api.encode_and_reconstruct(photo, quality, str(grid))
        without, pixels_plain = api.encode_and_reconstruct(photo, quality, str(plain))
        header = container.read_header(with_grid).header_size
        assert header == container.read_header(without).header_size
        assert with_grid[header:-4] == without[header:-4]
        np.testing.assert_array_equal(pixels, pixels_plain)
    sizes = [len(api.encode(photo, 1 + k / 16, str(grid))) for k in range(17)]
    assert sizes[0] < sizes[8] < sizes[16], sizes
    assert len(set(sizes)) > 8, sizes  # the sub-levels are distinct rows, not copies

def test_gdn_row_with_negligible_gamma_keeps_its_beta(tiny_float, tmp_path):
    """A GDN row whose gamma is tiny next to its beta (a channel that barely normalises) must
    keep its beta: with gamma setting the row's unit, beta overflowed the engine's 2**24 and
    was clipped, which once cost 89 codes on one channel and 0.2 dB at the top quality. The
    codec then matches its simulation within one code per pixel, as in
    ``_assert_engine_matches_simulation``."""
    import copy

    from qlic_codec.quantize.calibrate import integer_layers, is_gdn
    from qlic_codec.quantize.export import export

    model = copy.deepcopy(tiny_float)
    for transform in (model.g_a, model.g_s):
        gdn = next(g[0] for g in integer_layers(transform) if is_gdn(g[0]))
        with torch.no_grad():
            gdn.gamma_raw[0] = gdn._gamma_reparam.init(torch.full_like(gdn.gamma[0], 1e-9))
    images = [synthetic_photo(128, 128, s) for s in range(3)]
    path = tmp_path / "t.qlicm"
    export(model, images, path, {"metric": "mse"}, scale_max=32.0)
    variant = simulate.Variant("shipped", ("channel", "uniform"), acts="max",
                               per_channel=True, mean_removed=True, tables=True, fold=True)
    sim = simulate.build(model, variant, images)
    _assert_engine_matches_simulation(sim, path, qualities=(2,))


def test_finetune_clips_weights_and_keeps_the_architecture(tiny_float, tmp_path):
    import copy
    from conftest import synthetic_photo
    from qlic_codec.quantize import finetune
    images = [synthetic_photo(128, 128, s) for s in range(3)]
    model = copy.deepcopy(tiny_float)
    keys = set(model.state_dict())
    quants = simulate.fit_quants(simulate.collect(model, images), "max", True, True)
    hooks = finetune.attach(model, quants)
    x = torch.from_numpy(np.stack(images)[:, :64, :64]).permute(0, 3, 1, 2).float() / 255
    out = model(x, torch.tensor([0.0, 1.0, 0.0]))
    loss = out["x_hat"].square().mean() + sum(-torch.log2(v).mean()
                                              for v in out["likelihoods"].values())
    loss.backward()
    conv = model.g_a[0]
    assert conv.parametrizations.weight.original.grad is not None
    clip = conv.parametrizations.weight[0].clip.clone()
    finetune.detach(model, hooks)
    assert set(model.state_dict()) == keys
    assert torch.all(model.g_a[0].weight.abs() <= clip + 1e-7)


def test_float_control_finetune_trains_without_quantization(tiny_float, tmp_path):
    """The float reference of the int8 export: the same fine-tune, no clipping, no grids."""
    import copy
    from PIL import Image
    from conftest import synthetic_photo
    from qlic_codec.quantize import finetune
    (tmp_path / "train").mkdir()
    for s in range(2):
        Image.fromarray(synthetic_photo(96, 96, s)).save(tmp_path / "train" / f"{s}.png")
    model = copy.deepcopy(tiny_float)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    info = finetune.finetune(model, {"metric": "mse"}, tmp_path, steps=3, batch=2, crop=64,
                             lr=1e-3, log=lambda s: None, quantized=False)
    assert info["quantized"] is False and info["steps"] == 3
    assert set(model.state_dict()) == set(before)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in model.modules())
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("g_a.0.") for k in changed)


def test_learned_range_gradient_is_quantization_error_inside_and_excess_outside():
    from qlic_codec.quantize import finetune
    quant = activations.ActQuant(np.array([1.0, 2.0]), np.ones(2), np.array([0.0, 0.5]))
    q = finetune.LearnedRange(quant)
    x = torch.tensor([[0.3013, 1.7], [3.0, 0.0]]).reshape(1, 2, 2, 1).requires_grad_(True)
    out = q(x)
    # Forward: the codes of the fixed quantizer (clipped to the range).
    ref = torch.as_tensor(activations.ActQuant(quant.range, quant.power, quant.offset)(
        x.detach().clamp(torch.tensor([-1.0, -1.5]).reshape(1, 2, 1, 1),
                         torch.tensor([1.0, 2.5]).reshape(1, 2, 1, 1))))
    assert torch.allclose(out, ref, atol=1e-6)
    out.sum().backward()
    # d out / d r = q - u inside the range and sign(u) when clipped; d r / d log r = r.
    u = np.array([[0.3013, 1.0], [1.0, -0.25]])  # channel 0: r=1; channel 1: (x-0.5)/2
    qv = np.round(u * 127) / 127
    inside = np.array([[True, False], [False, True]])
    expect = np.where(inside, qv - u, np.sign(u)) * np.array([[1.0], [2.0]])
    assert np.allclose(q.log_range.grad.numpy(), expect.sum(axis=1), atol=1e-5)
    # Values pass straight through inside the range, not outside it.
    assert np.allclose(x.grad.numpy().reshape(2, 2), inside.astype(float))
    back = q.export()
    assert np.allclose(back.range, [1.0, 2.0]) and np.allclose(back.offset, [0.0, 0.5])


def test_learned_ranges_travel_through_the_checkpoint_meta_to_the_export(tiny_float, tmp_path):
    import copy
    from PIL import Image
    from conftest import synthetic_photo
    from qlic_codec.quantize import export, finetune
    (tmp_path / "train").mkdir()
    for s in range(2):
        Image.fromarray(synthetic_photo(128, 128, s)).save(tmp_path / "train" / f"{s}.png")
    model = copy.deepcopy(tiny_float)
    info = finetune.finetune(model, {"metric": "mse"}, tmp_path, steps=2, batch=2, crop=64,
                             lr=1e-4, calibration=2, log=lambda s: None, range_lr=0.05)
    ranges = finetune.ranges_from_meta(info["activation_ranges"])
    assert set(ranges) >= {"ha_in", "g_a.0", "g_s.0"}
    # The exporter uses the ranges it is given instead of fitting its own: given the fitted
    # ones it writes the same file as without any, given the learned ones a different file.
    images = export.calibration_images(tmp_path, 2)
    fitted = simulate.fit_quants(simulate.collect(model, images), "max", True, True)
    from qlic_codec import modelfile
    files = {}
    for name, learned in (("none", None), ("fitted", fitted), ("learned", ranges)):
        export.export(model, images, tmp_path / f"{name}.qlicm", {"metric": "mse"},
                      scale_max=32.0, learned=learned)
        files[name] = modelfile.read(tmp_path / f"{name}.qlicm")
    assert files["learned"][0]["card"]["activations"]["method"] == "learned"
    assert all(np.array_equal(a, files["fitted"][1][k]) for k, a in files["none"][1].items())
    assert not np.array_equal(files["learned"][1]["g_a.0.mult"], files["none"][1]["g_a.0.mult"])


def _wide_finetune(tiny_float, tmp_path, bits, extra=()):
    """A 2-step fine-tune with learned ranges whose GDN inputs (and the tensors of ``extra``)
    have ``bits``-bit codes, on two generated training photos in ``tmp_path/train``; returns
    (model, info, wide keys)."""
    import copy
    from PIL import Image
    from conftest import synthetic_photo
    from qlic_codec.quantize import finetune
    (tmp_path / "train").mkdir(exist_ok=True)
    for s in range(2):
        Image.fromarray(synthetic_photo(128, 128, s)).save(tmp_path / "train" / f"{s}.png")
    model = copy.deepcopy(tiny_float)
    wide = simulate.gdn_inputs(model) + list(extra)
    info = finetune.finetune(model, {"metric": "mse"}, tmp_path, steps=2, batch=2, crop=64,
                             lr=1e-4, calibration=2, log=lambda s: None, range_lr=0.05,
                             wide=wide, wide_bits=bits)
    return model, info, wide


def test_wide_gdn_inputs_are_16_bit_in_simulation_and_refused_by_the_exporter(tiny_float,
                                                                            tmp_path):
    """The 16-bit study: the tensors a GDN reads train on 16-bit grids, their codes survive
    the checkpoint meta, and the exporter (at most 12 bits) refuses them in one line."""
    from qlic_codec.quantize import export, finetune
    assert simulate.gdn_inputs(tiny_float) == ["g_a.0", "g_a.2", "g_a.4",
                                               "g_s.0", "g_s.2", "g_s.4"]
    quant = activations.ActQuant(np.array([1.0]), np.ones(1), np.zeros(1), bits=16)
    x = torch.tensor([0.123456789, -0.3, 2.0]).reshape(1, 1, 3, 1)
    assert torch.allclose(quant(x).flatten(), torch.tensor(
        [round(0.123456789 * 32767) / 32767, round(-0.3 * 32767) / 32767, 1.0]))
    assert abs(float(finetune.LearnedRange(quant, 16)(x).detach().flatten()[0]) - 0.123456789) < 2e-5
    assert abs(float(finetune.LearnedRange(quant, 8)(x).detach().flatten()[0]) - 0.123456789) > 1e-3
    model, info, wide = _wide_finetune(tiny_float, tmp_path, 16)
    ranges = finetune.ranges_from_meta(info["activation_ranges"])
    assert {k for k, q in ranges.items() if q.bits == 16} == set(wide)
    assert info["wide_activations"] == sorted(wide)
    with pytest.raises(ValueError, match="wider than 8 bits, up to 12"):
        export.export(model, export.calibration_images(tmp_path, 2), tmp_path / "w.qlicm",
                      {"metric": "mse"}, scale_max=32.0, learned=ranges)
    assert not (tmp_path / "w.qlicm").exists()
    _, info, _ = _wide_finetune(tiny_float, tmp_path, 12)
    assert info["wide_bits"] == 12 and {v.get("bits", 8) for v in
                                        info["activation_ranges"].values()} == {8, 12}
    with pytest.raises(ValueError, match="learned ranges"):
        finetune.finetune(model, {"metric": "mse"}, tmp_path, steps=1, batch=2, crop=64,
                          lr=1e-4, calibration=2, log=lambda s: None, wide=wide)


def test_12_bit_gdn_inputs_export_and_the_engine_matches_its_simulation(tiny_float, tmp_path):
    """A fine-tune with 12-bit GDN inputs exports to int16 codes on exactly those tensors, and
    the integer codec reconstructs what the simulation of that fine-tune does."""
    from qlic_codec import modelfile
    from qlic_codec.quantize import export, finetune
    model, info, wide = _wide_finetune(tiny_float, tmp_path, 12)
    quants = finetune.ranges_from_meta(info["activation_ranges"])
    path = tmp_path / "w.qlicm"
    export.export(model, export.calibration_images(tmp_path, 2), path, {"metric": "mse"},
                  scale_max=32.0, learned=quants)
    manifest = modelfile.read(path)[0]
    his = {layer["name"]: (layer.get("out") or {}).get("hi")
           for t in ("g_a", "g_s") for layer in manifest["transforms"][t]}
    assert {name for name, hi in his.items() if hi == 2047} == set(wide)
    assert {hi for name, hi in his.items() if name not in wide} <= {127, None}
    sim = simulate.SimulatedModel(simulate.quantize_weights(model, "channel", "uniform",
                                                            quants=quants), quants, True)
    _assert_engine_matches_simulation(sim, path)


def test_12_bit_gdn_outputs_export_and_the_engine_matches_its_simulation(tiny_float, tmp_path):
    """GDN and inverse-GDN outputs trained on 12 bits export as GDN layers that write int16
    codes, the convolutions after them read those, and the codec still reconstructs what the
    simulation does; an 8-bit GDN output keeps the layer description older engines read."""
    from qlic_codec import modelfile
    from qlic_codec.quantize import export, finetune
    # Two GDN outputs and two inverse-GDN ones, the last of which the RGB output layer reads.
    outputs = ["g_a.1", "g_a.5", "g_s.3", "g_s.5"]
    model, info, wide = _wide_finetune(tiny_float, tmp_path, 12, outputs)
    quants = finetune.ranges_from_meta(info["activation_ranges"])
    assert {k for k, q in quants.items() if q.bits == 12} == set(wide)
    path = tmp_path / "w.qlicm"
    export.export(model, export.calibration_images(tmp_path, 2), path, {"metric": "mse"},
                  scale_max=32.0, learned=quants)
    manifest = modelfile.read(path)[0]
    layers = {layer["name"]: layer for t in ("g_a", "g_s") for layer in manifest["transforms"][t]}
    gdns = {name for name, layer in layers.items() if layer["op"] in ("gdn", "igdn")}
    assert {name for name in gdns if layers[name].get("out_max") == 2047} == set(outputs)
    assert all("out_max" not in layers[name] for name in gdns - set(outputs))
    for name in outputs:  # the convolution after a wide GDN output accepts 12-bit inputs
        t, i = name.split(".")
        assert layers[f"{t}.{int(i) + 1}"]["in_max"] >= 2047
    sim = simulate.SimulatedModel(simulate.quantize_weights(model, "channel", "uniform",
                                                            quants=quants), quants, True)
    _assert_engine_matches_simulation(sim, path)


@pytest.mark.parametrize("transposed", [False, True])
def test_finetune_rounds_weights_on_the_exporters_folded_grid(transposed):
    """The fine-tune must train on the grid that the exporter rounds to: per output channel,
    with each input channel's activation step folded in. Input steps that differ by orders
    of magnitude make the two grids far apart if either one ignores them."""
    from qlic_codec.quantize.export import _weight_codes
    from qlic_codec.quantize.finetune import ClippedInt8Weight

    rng = np.random.default_rng(3)
    cin, cout = 6, 4
    shape = (cin, cout, 5, 5) if transposed else (cout, cin, 5, 5)
    w = rng.normal(size=shape)
    in_step = 10.0 ** rng.uniform(-4, -1, size=cin)
    out_axis = 1 if transposed else 0
    param = ClippedInt8Weight(np.full(cout, 1e9), out_axis,
                              lambda: torch.as_tensor(in_step))
    q = param(torch.as_tensor(w)).detach().double().numpy()
    # The exporter's layout is (Cout, K, K, Cin), with the input steps multiplied in.
    engine = np.transpose(w, (1, 2, 3, 0) if transposed else (0, 2, 3, 1)) * in_step
    codes, unit = _weight_codes(engine)
    expect = codes.astype(np.float64) * unit[:, None, None, None] / in_step
    expect = np.transpose(expect, (3, 0, 1, 2) if transposed else (0, 3, 1, 2))
    np.testing.assert_allclose(q, expect, rtol=1e-9, atol=0)
    # ... and the simulation's folded rounding is the same grid.
    from qlic_codec.quantize.simulate import fold_quantize
    np.testing.assert_allclose(fold_quantize(w, in_step, out_axis), expect, rtol=1e-9, atol=0)


def test_regrid_gives_a_model_of_levels_the_grid_an_export_would_give(tiny_float, tmp_path):
    """``quantize.regrid`` derives the sub-levels' heads from the levels' own: the integer
    levels keep theirs bit for bit, and the sub-levels are those of an export with the grid
    (rescales within a relative 1e-6, scale-index offsets within one unit)."""
    from qlic_codec import modelfile
    from qlic_codec.quantize import export, regrid
    images = [synthetic_photo(128, 128, s) for s in range(2)]
    export.export(tiny_float, images, tmp_path / "plain.qlicm", {"metric": "mse"},
                  scale_max=32.0, quality_steps=1)
    export.export(tiny_float, images, tmp_path / "grid.qlicm", {"metric": "mse"},
                  scale_max=32.0, quality_steps=4)
    regrid.main([str(tmp_path / "plain.qlicm"), "-o", str(tmp_path / "regrid.qlicm"),
                 "--quality-steps", "4"])
    _, plain_arrays, _ = modelfile.read(tmp_path / "plain.qlicm")
    grid_manifest, grid, _ = modelfile.read(tmp_path / "grid.qlicm")
    re_manifest, re, _ = modelfile.read(tmp_path / "regrid.qlicm")
    assert re_manifest["levels"] == grid_manifest["levels"] == 5
    assert re_manifest["quality_steps"] == 4
    for key in ("y", "mean", "ys"):
        mult, shift = re[f"head.{key}.mult"], re[f"head.{key}.shift"]
        np.testing.assert_array_equal(mult[::4], plain_arrays[f"head.{key}.mult"])
        np.testing.assert_array_equal(shift[::4], plain_arrays[f"head.{key}.shift"])
        real = mult / 2.0**shift
        want = grid[f"head.{key}.mult"] / 2.0**grid[f"head.{key}.shift"]
        assert np.allclose(real, want, rtol=1e-6, atol=0), key
    offset = re["head.scale.offset"]
    np.testing.assert_array_equal(offset[::4], plain_arrays["head.scale.offset"])
    assert np.abs(offset - grid["head.scale.offset"]).max() <= 1
    # Everything else is the plain export's.
    for name, a in plain_arrays.items():
        if not name.startswith(("head.y.", "head.mean.", "head.ys.", "head.scale.offset")):
            np.testing.assert_array_equal(re[name], a)
    with pytest.raises(SystemExit, match="already has a sub-level grid"):
        regrid.main([str(tmp_path / "grid.qlicm"), "-o", str(tmp_path / "again.qlicm")])
