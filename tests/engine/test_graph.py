"""The integer network: loads the tiny model, runs bit-exactly on both kernel sets, and
refuses every spec that breaks one of its validation rules."""

import copy

import numpy as np
import pytest

from conftest import synthetic_photo
from qlic_codec import modelfile
from qlic_codec.engine import fixedpoint, reference
from qlic_codec.engine.graph import TRANSFORMS, IntegerNetwork, ModelSpec
from qlic_codec.errors import ModelFileError


@pytest.fixture(scope="module")
def tiny_spec(tiny_model):
    manifest, arrays, _ = modelfile.read(tiny_model)
    return manifest, arrays


def fresh(tiny_spec):
    """A copy of the spec that a test may edit (arrays are replaced, never written to)."""
    manifest, arrays = tiny_spec
    return copy.deepcopy(manifest), dict(arrays)


def layer(manifest, name):
    transform = name.split(".")[0]
    return next(d for d in manifest["transforms"][transform] if d["name"] == name)


def test_tiny_model_loads(tiny_spec):
    net = IntegerNetwork(ModelSpec(*tiny_spec))
    # 8 trained levels on a grid of 16 sub-levels per quality: 7 * 16 + 1 rows of heads.
    assert (net.N, net.M, net.levels) == (16, 24, 113)
    assert tiny_spec[0]["quality_steps"] == 16
    assert set(net.layers) == set(TRANSFORMS)
    assert [d["op"] for d in net.layers["g_a"]] == ["conv", "gdn"] * 3 + ["conv"]
    assert [d["op"] for d in net.layers["g_s"]] == ["deconv", "igdn"] * 3 + ["deconv"]
    # Each transposed convolution runs with the inverse GDN after it as one step.
    assert [d["name"] for d in net.steps["g_s"]] == ["g_s.0+g_s.1", "g_s.2+g_s.3",
                                                    "g_s.4+g_s.5", "g_s.6"]
    assert net.steps["g_a"] == net.layers["g_a"] and net.steps["h_s"] == net.layers["h_s"]


# -------------------------------------------------------------------------------------------
# NumPy reference kernels == Numba kernels on the whole network


@pytest.fixture(scope="module")
def networks(tiny_spec):
    return IntegerNetwork(ModelSpec(*tiny_spec)), IntegerNetwork(ModelSpec(*tiny_spec),
                                                                 kernels=reference)


def assert_same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("level", [0, 56, 112])
def test_reference_and_numba_kernels_agree(networks, level):
    fast, slow = networks
    assert slow.k is reference and fast.k is not reference
    pixels = synthetic_photo(64, 128, seed=3)

    y_fast, z_fast = fast.analysis(pixels, level)
    y_slow, z_slow = slow.analysis(pixels, level)
    assert_same(y_fast, y_slow)
    assert_same(z_fast, z_slow)
    assert y_fast.shape == (4, 8, 24) and z_fast.shape == (1, 2, 16)
    assert y_fast.dtype == np.int32 and np.count_nonzero(y_fast) > y_fast.size // 4

    mean_fast, index_fast = fast.hyper_synthesis(z_fast, level)
    mean_slow, index_slow = slow.hyper_synthesis(z_fast, level)
    assert_same(mean_fast, mean_slow)
    assert_same(index_fast, index_slow)
    assert mean_fast.shape == index_fast.shape == (4, 8, 24)
    assert index_fast.min() >= 0 and index_fast.max() < fast.y_levels

    x_fast = fast.synthesis(y_fast, level)
    x_slow = slow.synthesis(y_fast, level)
    assert_same(x_fast, x_slow)
    assert x_fast.shape == (64, 128, 3) and x_fast.dtype == np.uint8
    assert np.ptp(x_fast) > 0


def _pixels_of_accumulators(net, y_g, level):
    """The specification of the synthesis: g_s's accumulators whole, then the pixel head."""
    cy, cys = net.clamps["y"], net.clamps["ys"]
    y = np.clip(y_g, -cy, cy).astype(np.int32)
    acc = net._run("g_s", net._head(y, "ys", level, -cys, cys).astype(np.int16))
    return reference.requantize(acc, net.heads["pixel.mult"], net.heads["pixel.shift"], 0, 0,
                                0, 255).astype(np.uint8)


def test_synthesis_ends_in_a_stride_1_convolution(tiny_spec):
    # The format allows g_s to end in a stride-1 convolution after its four transposed ones;
    # the pixel head then runs on that convolution's accumulators, cropped.
    manifest, arrays = fresh(tiny_spec)
    g_s = manifest["transforms"]["g_s"]
    last = g_s[-1]
    last["out"] = {"hi": 127, "leaky": True, "lo": -127}
    rng = np.random.default_rng(11)
    arrays["g_s.6.mult"] = np.full(3, 1 << 20, np.int32)
    arrays["g_s.6.shift"] = np.full(3, 24, np.int32)
    g_s.append({"in_max": 127, "name": "g_s.7", "op": "conv", "out": None, "pad_value": 0,
                "stride": 1})
    arrays["g_s.7.weight"] = rng.integers(-20, 21, (3, 3, 3, 3)).astype(np.int8)
    arrays["g_s.7.bias"] = rng.integers(-999, 1000, 3).astype(np.int32)
    fast = IntegerNetwork(ModelSpec(manifest, arrays))
    slow = IntegerNetwork(ModelSpec(manifest, arrays), kernels=reference)
    y_g, _ = fast.analysis(synthetic_photo(64, 128, seed=4), 40)
    want = _pixels_of_accumulators(slow, y_g, 40)
    for net in (fast, slow):
        assert_same(net.synthesis(y_g, 40), want)
        assert_same(net.synthesis(y_g, 40, size=(50, 101)), want[:50, :101])
        assert_same(net.synthesis(y_g, 40, band_rows=16, size=(61, 97)), want[:61, :97])


def test_synthesis_with_the_pixel_head_in_bands(networks):
    # The last step makes pixels, cropped as the bands are written: the same as the
    # accumulators made whole and requantized.
    fast, slow = networks
    y_g, _ = fast.analysis(synthetic_photo(64, 128, seed=6), 70)
    want = _pixels_of_accumulators(slow, y_g, 70)
    for net in (fast, slow):
        assert_same(net.synthesis(y_g, 70), want)
        for band_rows in (16, 32):
            assert_same(net.synthesis(y_g, 70, band_rows=band_rows, size=(47, 113)),
                        want[:47, :113])


def test_band_plans_follow_the_budget(networks, monkeypatch):
    # A network keeps its band plans per shape and budget: a smaller budget plans again.
    from qlic_codec.engine import bands
    fast, _ = networks
    layers = fast.layers["g_s"]
    whole = fast.band_height(layers, 32, 48, fast.M, 2)
    assert whole == bands.band_height(layers, 32, 48, fast.M, 2)
    monkeypatch.setattr(bands, "BAND_BYTES", 2**16)
    small = fast.band_height(layers, 32, 48, fast.M, 2)
    assert small == bands.band_height(layers, 32, 48, fast.M, 2) < whole
    # Another list, even one made and dropped in turn (whose id may come back), is planned
    # for itself.
    for part in (layers[:2], layers[:4], layers[:2]):
        assert fast.band_height(part, 32, 48, fast.M, 2) == bands.band_height(
            part, 32, 48, fast.M, 2)


def test_outputs_differ_between_levels(networks):
    fast, _ = networks
    pixels = synthetic_photo(64, 64, seed=5)
    y0, z0 = fast.analysis(pixels, 0)
    y7, z7 = fast.analysis(pixels, 112)
    assert np.array_equal(z0, z7)  # the hyperprior sees the un-gained latent
    assert np.abs(y7).sum() > np.abs(y0).sum()


def test_hyper_synthesis_clamps_stream_z(networks):
    fast, slow = networks
    z = np.full((1, 1, 16), 2**31 - 1, np.int32)
    z[..., ::2] = -(2**31)
    for a, b in zip(fast.hyper_synthesis(z, 3), slow.hyper_synthesis(z, 3)):
        assert_same(a, b)
    clamped = np.clip(z, -fast.clamps["z"], fast.clamps["z"])
    for a, b in zip(fast.hyper_synthesis(z, 3), fast.hyper_synthesis(clamped, 3)):
        assert_same(a, b)


# -------------------------------------------------------------------------------------------
# Validation: each rule rejects a modified spec


def _set(arrays, name, index, value):
    a = arrays[name].copy()
    a[index] = value
    arrays[name] = a


def _drop(name):
    return lambda m, a: a.pop(name)


def _retype(name, dtype):
    return lambda m, a: a.__setitem__(name, a[name].astype(dtype))


def _reshape(name, shape):
    return lambda m, a: a.__setitem__(name, np.zeros(shape, a[name].dtype))


def _value(name, index, value):
    return lambda m, a: _set(a, name, index, value)


def _layer_key(name, key, value):
    return lambda m, a: layer(m, name).__setitem__(key, value)


def _del_layer_key(name, key):
    return lambda m, a: layer(m, name).pop(key)


def _manifest(path, value):
    def edit(m, a):
        *parents, last = path
        for p in parents:
            m = m[p]
        if value is _DELETE:
            del m[last]
        else:
            m[last] = value
    return edit


_DELETE = object()


def _all_weights_127_large_input(m, a):
    w = a["g_a.6.weight"]
    a["g_a.6.weight"] = np.full_like(w, 127)
    layer(m, "g_a.6")["in_max"] = 32768
    # 127 * 5*5*16 * 32768 = 1.66e9, plus this bias, passes 2**31.
    a["g_a.6.bias"] = np.full_like(a["g_a.6.bias"], 500_000_000)


def _gdn_other_width(m, a):
    c = 15
    a["g_a.3.gamma"] = np.eye(c, dtype=np.uint8)
    a["g_a.3.beta"] = np.ones(c, np.int32)
    a["g_a.3.mult"] = np.ones(c, np.int64)


def _conv_other_input(m, a):
    w = a["g_a.4.weight"]
    a["g_a.4.weight"] = np.zeros(w.shape[:3] + (w.shape[3] - 1,), np.int8)


def _conv_other_output(m, a):
    for suffix in ("weight", "bias"):
        a[f"g_a.6.{suffix}"] = a[f"g_a.6.{suffix}"][:-1].copy()


def _final_layer_requantizes(m, a):
    layer(m, "g_a.6")["out"] = {"lo": -127, "hi": 127, "leaky": False}
    a["g_a.6.mult"] = np.ones(24, np.int32)
    a["g_a.6.shift"] = np.ones(24, np.int32)


def _swap_layers(m, a):
    g_a = m["transforms"]["g_a"]
    g_a[0], g_a[1] = g_a[1], g_a[0]


def _last_layer_removed(m, a):
    m["transforms"]["g_a"].pop()


REJECTIONS = {
    # Missing or mistyped arrays.
    "missing bias": (_drop("g_a.0.bias"), "missing array 'g_a.0.bias'"),
    "missing weight": (_drop("g_s.2.weight"), "layer 'g_s.2' has no 4-D weight"),
    "missing mult": (_drop("h_a.0.mult"), "missing array 'h_a.0.mult'"),
    "missing gamma": (_drop("g_a.1.gamma"), "layer 'g_a.1' has no 2-D gamma"),
    "missing beta": (_drop("g_s.1.beta"), "missing array 'g_s.1.beta'"),
    "missing head": (_drop("head.mean.shift"), "missing array 'head.mean.shift'"),
    "missing scale offset": (_drop("head.scale.offset"), "'head.scale.offset'"),
    "bias int64": (_retype("g_a.2.bias", np.int64), "'g_a.2.bias' has dtype int64"),
    "weight int16": (_retype("h_s.0.weight", np.int16), "'h_s.0.weight' has dtype int16"),
    "weight uint8": (_retype("h_s.0.weight", np.uint8), "'h_s.0.weight' has dtype uint8"),
    "gamma int8": (_retype("g_a.1.gamma", np.int8), "'g_a.1.gamma' has dtype int8"),
    "gdn mult int32": (_retype("g_a.1.mult", np.int32), "'g_a.1.mult' has dtype int32"),
    "head mult int64": (_retype("head.y.mult", np.int64), "'head.y.mult' has dtype int64"),
    "weight 3-D": (_reshape("g_a.2.weight", (16, 5, 5)), "layer 'g_a.2' has no 4-D weight"),
    "bias shape": (_reshape("g_a.2.bias", (17,)), "'g_a.2.bias' has shape"),
    "mult shape": (_reshape("g_a.2.mult", (16, 1)), "'g_a.2.mult' has shape"),
    "gamma shape": (_reshape("g_a.1.gamma", (16, 15)), "'g_a.1.gamma' has shape"),
    "gamma 1-D": (_reshape("g_a.1.gamma", (16,)), "layer 'g_a.1' has no 2-D gamma"),
    "head levels": (_reshape("head.y.mult", (7, 24)), "'head.y.mult' has shape"),
    "head channels": (_reshape("head.ha_in.shift", (23,)), "'head.ha_in.shift' has shape"),
    "kernel 4x4": (_reshape("g_a.2.weight", (16, 4, 4, 16)), "unsupported kernel"),
    "kernel 5x3": (_reshape("g_a.2.weight", (16, 5, 3, 16)), "unsupported kernel"),
    "deconv 3x3": (_reshape("g_s.2.weight", (16, 3, 3, 16)), "must be 5x5/2"),
    # Overflow bounds of the int32 accumulators.
    "bias near int32 max": (_value("g_a.2.bias", 0, 2**31 - 1000), "'g_a.2' could overflow"),
    "bias near int32 min": (_value("h_s.2.bias", 5, -(2**31) + 1), "'h_s.2' could overflow"),
    "weights 127, big input": (_all_weights_127_large_input, "'g_a.6' could overflow"),
    # Multipliers and shifts.
    "mult negative": (_value("g_a.0.mult", 0, -1), "'g_a.0.mult' has values outside"),
    "shift 0": (_value("g_a.0.shift", 3, 0), "'g_a.0.shift' has values outside 1..62"),
    "shift 63": (_value("h_s.0.shift", 3, 63), "'h_s.0.shift' has values outside 1..62"),
    "head mult negative": (_value("head.pixel.mult", 1, -5), "'head.pixel.mult'"),
    "head shift 0": (_value("head.y.shift", (7, 0), 0), "'head.y.shift' has values outside"),
    "head shift 63": (_value("head.z.shift", 0, 63), "'head.z.shift' has values outside"),
    "scale mult": (_value("head.scale.mult", 0, 2**31 + 1), "'head.scale.mult'"),
    "scale offset": (_value("head.scale.offset", (0, 0), 2**60 + 1), "'head.scale.offset'"),
    "gdn mult": (_value("g_a.1.mult", 0, 2**54 + 1), "'g_a.1.mult' has values outside"),
    "gdn mult negative": (_value("g_a.3.mult", 2, -1), "'g_a.3.mult' has values outside"),
    "gdn shift": (_layer_key("g_a.1", "shift", 31), "'g_a.1' has an invalid shift"),
    "igdn mult": (_value("g_s.1.mult", 0, 2**31 - 1), "'g_s.1' has a multiplier too large for its input"),
    "igdn shift": (_value("g_s.3.shift", 0, 0), "'g_s.3.shift' has values outside"),
    "gdn beta 0": (_value("g_a.1.beta", 4, 0), "'g_a.1.beta' has values outside 1.."),
    "igdn beta 0": (_value("g_s.5.beta", 0, 0), "'g_s.5.beta' has values outside 1.."),
    "gdn beta huge": (_value("g_a.5.beta", 0, 2**24 + 1), "'g_a.5.beta' has values outside"),
    # Layer descriptions.
    "unknown op": (_layer_key("g_a.1", "op", "relu"), "layer 'g_a.1' has unknown op 'relu'"),
    "stride 3": (_layer_key("g_a.2", "stride", 3), "'g_a.2' has an unsupported kernel or stride"),
    "deconv stride 1": (_layer_key("g_s.0", "stride", 1), "'g_s.0': transposed convolution"),
    "pad value": (_layer_key("g_a.2", "pad_value", 1), "'g_a.2' has an invalid padding"),
    "in_max 0": (_layer_key("g_a.2", "in_max", 0), "'g_a.2' has an invalid padding or input"),
    "in_max big": (_layer_key("g_a.2", "in_max", 32769), "'g_a.2' has an invalid padding"),
    "out lo >= hi": (lambda m, a: layer(m, "g_a.0")["out"].update(lo=5, hi=5),
                     "'g_a.0' has an invalid output range"),
    "out hi 128": (lambda m, a: layer(m, "h_a.0")["out"].update(hi=128),
                   "'h_a.0': codes wider than 8 bits must go to a GDN"),
    "out lo -128": (lambda m, a: layer(m, "h_a.0")["out"].update(lo=-128),
                    "'h_a.0': codes wider than 8 bits must go to a GDN"),
    "out hi 2048": (lambda m, a: layer(m, "g_s.0")["out"].update(hi=2048),
                    "'g_s.0' has an invalid output range"),
    "gdn out_max 128": (_layer_key("g_a.1", "out_max", 128), "'g_a.1' has an invalid output range"),
    "igdn out_max 4095": (_layer_key("g_s.3", "out_max", 4095), "'g_s.3' has an invalid output"),
    "gdn out_max text": (_layer_key("g_a.3", "out_max", "wide"), "layer description is malformed"),
    # A GDN's 12-bit output into a convolution that declares 8-bit inputs.
    "gdn wide into 8-bit conv": (_layer_key("g_a.1", "out_max", 2047), "'g_a.2' does not fit"),
    "layer without op": (_del_layer_key("g_a.1", "op"), "model layer without a name or op"),
    "layer not an object": (_manifest(("transforms", "h_a", 1), 7), "without a name or op"),
    # Chaining of the layers.
    "gdn width": (_gdn_other_width, "layer 'g_a.3' does not fit its input"),
    "conv input channels": (_conv_other_input, "layer 'g_a.4' does not fit its input"),
    "transform output channels": (_conv_other_output, "'g_a' ends with 23 channels, expected"),
    "in_max below input": (_layer_key("g_a.2", "in_max", 100), "'g_a.2' does not fit its input"),
    "z clamp above in_max": (_layer_key("h_s.0", "in_max", 1000), "'h_s.0' does not fit"),
    "final layer requantizes": (_final_layer_requantizes, "only the last layer of a transform"),
    "inner layer hands out": (_layer_key("h_a.0", "out", None), "only the last layer"),
    "starts with gdn": (_swap_layers, "'g_a' must start with a convolution"),
    "ends with gdn": (_last_layer_removed, "layer 'g_a.5' does not fit its input"),
    "empty transform": (_manifest(("transforms", "h_s"), []), "'h_s' must start with a conv"),
    "first pad zero": (_layer_key("g_a.0", "pad_value", 0), "must pad with the zero-pixel"),
    # The manifest itself.
    "no N": (_manifest(("N",), _DELETE), "manifest is incomplete or malformed"),
    "no levels": (_manifest(("levels",), _DELETE), "incomplete or malformed"),
    "no leaky": (_manifest(("leaky",), _DELETE), "incomplete or malformed"),
    "no clamps": (_manifest(("clamps",), _DELETE), "incomplete or malformed"),
    "no ys clamp": (_manifest(("clamps", "ys"), _DELETE), "incomplete or malformed"),
    "no scale_shift": (_manifest(("scale_shift",), _DELETE), "incomplete or malformed"),
    "no y_levels": (_manifest(("y_levels",), _DELETE), "incomplete or malformed"),
    "no transforms": (_manifest(("transforms",), _DELETE), "incomplete or malformed"),
    "no g_s": (_manifest(("transforms", "g_s"), _DELETE), "incomplete or malformed"),
    "N not a number": (_manifest(("N",), "sixteen"), "incomplete or malformed"),
    "leaky of 3": (_manifest(("leaky",), [1, 2, 3]), "incomplete or malformed"),
    "levels 0": (_manifest(("levels",), 0), "out-of-range sizes"),
    "levels 256": (_manifest(("levels",), 256), "out-of-range sizes"),
    "M 0": (_manifest(("M",), 0), "out-of-range sizes"),
    "leaky shift 0": (_manifest(("leaky",), [655, 0]), "invalid LeakyReLU slope"),
    "leaky mult": (_manifest(("leaky",), [2**16 + 1, 16]), "invalid LeakyReLU slope"),
    "leaky slope above 1": (_manifest(("leaky",), [65535, 1]), "invalid LeakyReLU slope"),
    "scale_shift 31": (_manifest(("scale_shift",), 31), "invalid scale-index mapping"),
    "y_levels 1": (_manifest(("y_levels",), 1), "invalid scale-index mapping"),
    "no mean_bits": (_manifest(("mean_bits",), _DELETE), "incomplete or malformed"),
    "mean_bits 9": (_manifest(("mean_bits",), 9), "invalid number of mean fraction bits"),
    "mean_bits -1": (_manifest(("mean_bits",), -1), "invalid number of mean fraction bits"),
    "clamp y 0": (_manifest(("clamps", "y"), 0), "clamp 'y' is out of range"),
    "clamp z 32768": (_manifest(("clamps", "z"), 32768), "clamp 'z' is out of range"),
    "clamp ys -1": (_manifest(("clamps", "ys"), -1), "clamp 'ys' is out of range"),
    "clamp not a number": (_manifest(("clamps", "y"), None), "incomplete or malformed"),
    # Format 2: every key is known, at every level, and of its type.
    "unknown top-level key": (_manifest(("dither",), 1), "unknown key 'dither'"),
    "unknown clamp": (_manifest(("clamps", "w"), 5), "unknown key 'w' in 'clamps'"),
    "unknown scale_table key": (_manifest(("scale_table", "kind"), "log"),
                                "unknown key 'kind' in 'scale_table'"),
    "unknown transform": (_manifest(("transforms", "h_x"), []),
                          "unknown key 'h_x' in 'transforms'"),
    "unknown conv key": (_layer_key("g_a.2", "dilation", 2),
                         "unknown key 'dilation' in layer 'g_a.2'"),
    "unknown gdn key": (_layer_key("g_a.1", "squared", True),
                        "unknown key 'squared' in layer 'g_a.1'"),
    "igdn with a shift": (_layer_key("g_s.1", "shift", 3), "unknown key 'shift' in layer 'g_s.1'"),
    "unknown out key": (lambda m, a: layer(m, "g_a.0")["out"].update(round="even"),
                        "unknown key 'round' in the 'out' of layer 'g_a.0'"),
    "no format": (_manifest(("format",), _DELETE), "missing key 'format'"),
    "other format": (_manifest(("format",), "qlic-video"), "'format' is 'qlic-video'"),
    "no metric": (_manifest(("metric",), _DELETE), "missing key 'metric'"),
    "unknown metric": (_manifest(("metric",), "lpips"), "unknown metric 'lpips'"),
    "N a float": (_manifest(("N",), 16.0), "'N' must be an integer"),
    "N a bool": (_manifest(("M",), True), "'M' must be an integer"),
    "stride a string": (_layer_key("g_a.2", "stride", "2"), "'stride' in layer 'g_a.2' must be"),
    "leaky out a number": (lambda m, a: layer(m, "h_a.0")["out"].update(leaky=1),
                           "'leaky' in the 'out' of layer 'h_a.0' must be true or false"),
    "leaky of floats": (_manifest(("leaky",), [655.0, 16]), "'leaky' must be a list of two"),
    "quality_steps 0": (_manifest(("quality_steps",), 0), "'quality_steps' must be at least 1"),
    "quality_steps float": (_manifest(("quality_steps",), 2.5), "'quality_steps' must be an"),
    "cc not an object": (_manifest(("cc",), [1]), "'cc' must be an object"),
    "cc slices not a list": (_manifest(("cc",), {"slices": 4, "networks": []}),
                             "'slices' in 'cc' must be a list"),
    "cc unknown key": (_manifest(("cc",), {"slices": [24], "networks": [], "order": 1}),
                       "unknown key 'order' in 'cc'"),
    "cc without networks": (_manifest(("cc",), {"slices": [24]}), "missing key 'networks'"),
    "card not an object": (_manifest(("card",), "notes"), "'card' must be an object"),
    "no ha_in offset": (_drop("head.ha_in.offset"), "missing array 'head.ha_in.offset'"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_validation_rejects(tiny_spec, case):
    edit, match = REJECTIONS[case]
    manifest, arrays = fresh(tiny_spec)
    edit(manifest, arrays)
    with pytest.raises(ModelFileError, match=match) as info:
        IntegerNetwork(ModelSpec(manifest, arrays))
    assert "\n" not in str(info.value)


MALFORMED_LAYERS = {
    "conv without in_max": _del_layer_key("g_a.2", "in_max"),
    "gdn without shift": _del_layer_key("g_a.1", "shift"),
    "out without lo": lambda m, a: layer(m, "g_a.0")["out"].pop("lo"),
    "out not an object": _layer_key("g_a.0", "out", [1, 2]),
    "in_max not a number": _layer_key("g_a.2", "in_max", "big"),
    "stride null": _layer_key("g_a.2", "stride", None),
    "N infinite": _manifest(("N",), float("inf")),
    "in_max infinite": _layer_key("g_a.2", "in_max", float("inf")),
}


@pytest.mark.parametrize("case", list(MALFORMED_LAYERS))
def test_malformed_layer_descriptions_are_model_errors(tiny_spec, case):
    manifest, arrays = fresh(tiny_spec)
    MALFORMED_LAYERS[case](manifest, arrays)
    with pytest.raises(ModelFileError, match="malformed"):
        IntegerNetwork(ModelSpec(manifest, arrays))


def test_overflow_bound_is_exact(tiny_spec):
    """A bias that puts the worst accumulator at 2**31 - 1 passes; one more is refused."""
    manifest, arrays = fresh(tiny_spec)
    d = layer(manifest, "g_a.2")
    l1 = fixedpoint.conv_weight_l1(arrays["g_a.2.weight"])
    room = 2**31 - 1 - d["in_max"] * int(l1[0])
    _set(arrays, "g_a.2.bias", 0, room)
    IntegerNetwork(ModelSpec(manifest, arrays))
    _set(arrays, "g_a.2.bias", 0, room + 1)
    with pytest.raises(ModelFileError, match="could overflow"):
        IntegerNetwork(ModelSpec(manifest, arrays))
    _set(arrays, "g_a.2.bias", 0, -room)
    IntegerNetwork(ModelSpec(manifest, arrays))


def test_unchanged_copy_still_loads(tiny_spec):
    manifest, arrays = fresh(tiny_spec)
    IntegerNetwork(ModelSpec(manifest, arrays))
    # Extra, unused arrays (the entropy tables) are fine; the card is free-form; optional
    # keys may be there or not.
    arrays["unused"] = np.zeros(3, np.int8)
    manifest["card"] = {"anything": [1, {"nested": None}], "metric": "whatever"}
    manifest["quality_steps"] = 4
    del manifest["scale_table"]
    IntegerNetwork(ModelSpec(manifest, arrays))


def test_wide_gdn_input_bounds_match_the_kernels():
    """A GDN that reads 12-bit codes is accepted only if the kernels' own int16 check passes
    too, so a hostile file fails at load time with ModelFileError, never inside a decode."""
    from qlic_codec.engine import kernels
    from qlic_codec.engine.graph import IntegerNetwork
    for c, ok in ((128, True), (300, False)):
        gamma = np.full((c, c), 255, np.uint8)
        layer = {"name": "g_s.1", "op": "igdn", "gamma": gamma,
                 "mult": np.ones(c, np.int32)}
        x = np.ones((1, 2, c), np.int16)
        args = (gamma, np.full(c, 2**24, np.int32), np.ones(c, np.int32),
                np.ones(c, np.int32))
        if ok:
            IntegerNetwork._check_gdn_bounds(layer, 2047)
            kernels.igdn(x, *args)
        else:
            with pytest.raises(ModelFileError, match="int32 norm"):
                IntegerNetwork._check_gdn_bounds(layer, 2047)
            with pytest.raises(ValueError, match="exceed int32"):
                kernels.igdn(x, *args)


def test_symbols_round_to_nearest_with_ties_toward_zero(networks):
    """The encoder's symbols are the nearest integers to ``y_g - mean_g``; an exact half goes
    to the symbol nearer the mean (same error, fewer bits), on both sides of it."""
    net = networks[0]
    one = 1 << net.mean_bits
    diff = np.arange(-5 * one, 5 * one + 1, dtype=np.int64)
    mean = np.full(diff.shape, 37 * one + 3, np.int32)
    y = (mean + diff).astype(np.int32)
    got = net.symbols(y, mean)
    exact = diff / one
    nearest = np.floor(np.abs(exact) + 0.5) * np.sign(exact)
    ties = np.abs(exact) % 1 == 0.5
    want = np.where(ties, np.trunc(exact), nearest).astype(np.int32)
    assert ties.sum() == 10 and got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    # Symbol + mean is the reconstruction, within half a step of the latent.
    rec = net.reconstruct(got, mean)
    assert np.abs(rec.astype(np.int64) - y).max() <= one // 2
