"""The independent decoder decodes channel-conditional models' streams (FORMAT.md 2.6, 3.11)
to exactly qlic's pixels, and refuses the ``cc`` sections the document refuses."""

import numpy as np
import pytest

import qlic_codec
import qlicref
from conftest import GOLDEN, synthetic_photo
from container2 import as_format_2
from qlic_codec import modelfile

TINY_CC = GOLDEN / "tiny-cc.qlicm"
TINY_CC12 = GOLDEN / "tiny-cc12.qlicm"  # 12-bit context codes (model format 3)


@pytest.fixture(scope="module")
def cc_bytes():
    return TINY_CC.read_bytes()


def _same_pixels(model_path, model_bytes, image, quality):
    data = qlic_codec.encode(image, quality, str(model_path))
    want = qlic_codec.decode(data, str(model_path))
    got = qlicref.decode(as_format_2(data), model_bytes)
    assert got.dtype == np.uint8 and got.shape == want.shape == image.shape
    np.testing.assert_array_equal(got, want)


# (height, width): the smallest image, odd sizes, one block, several blocks.
SIZES = [(1, 1), (33, 47), (64, 64), (70, 130)]


@pytest.mark.parametrize("quality", [1, 8])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
def test_same_pixels_as_qlic(cc_bytes, size, quality):
    image = synthetic_photo(*size, seed=size[0] + size[1])
    _same_pixels(TINY_CC, cc_bytes, image, quality)


@pytest.mark.parametrize("quality", [1, 4.5, 8])
def test_wide_context_codes_same_pixels_as_qlic(quality):
    model_bytes = TINY_CC12.read_bytes()
    assert qlicref.read_model(model_bytes).manifest["cc"]["ctx_max"] == 2047
    _same_pixels(TINY_CC12, model_bytes, synthetic_photo(70, 130, seed=4), quality)


def test_other_slices_same_pixels_as_qlic(tmp_path):
    """Three uneven slices of 12 channels (the golden model has four of 24): the slice count
    and sizes come from the file, not from a fixed layout."""
    pytest.importorskip("torch")
    from conftest import tiny_cc_float_model
    from qlic_codec.quantize.export import export
    model = tiny_cc_float_model()
    path = tmp_path / "cc-3.qlicm"
    export(model, [synthetic_photo(64, 64, s) for s in range(2)], path, {"metric": "mse"},
           scale_max=32.0)
    model_bytes = path.read_bytes()
    assert qlicref.read_model(model_bytes).manifest["cc"]["slices"] == [2, 4, 6]
    for quality in (1, 2):
        _same_pixels(path, model_bytes, synthetic_photo(47, 90, seed=quality), quality)


def _set(path, value):
    """An edit of the manifest: the key at ``path`` (a tuple of keys and indexes)."""
    def edit(m, a):
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


def _drop(path):
    def edit(m, a):
        node = m
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return edit


def _array(name, change):
    def edit(m, a):
        a[name] = change(a[name].copy())
    return edit


def _first_layer(key, value):
    return _set(("cc", "networks", 0, "params", 0, key), value)


EDITS = {
    "unknown key in cc": _set(("cc", "order"), "reversed"),
    "unknown key in a network": _set(("cc", "networks", 0, "mask"), []),
    "slices do not sum to M": _set(("cc", "slices"), [4, 4, 8, 7]),
    "a slice of 0 channels": _set(("cc", "slices"), [0, 8, 8, 8]),
    "one network short": lambda m, a: m["cc"]["networks"].pop(),
    "stride left out (2)": _drop(("cc", "networks", 0, "params", 0, "stride")),
    "padding of -128": _first_layer("pad_value", -128),
    "in_max below 127": _first_layer("in_max", 100),
    "wide hidden codes": _first_layer("out", {"lo": -255, "hi": 255, "leaky": True}),
    "hidden layer without out": _first_layer("out", None),
    "transposed convolution": _first_layer("op", "deconv"),
    "lut beyond half a symbol": _array("cc.lrp.lut", lambda x: x + 200),
    "lut of 256 entries": _array("cc.lrp.lut", lambda x: np.append(x, 0).astype(np.int32)),
    "scale mult above 2**30": _array("cc.1.scale.mult", lambda x: x * 0 + 2**30 + 1),
    "ctx shift of 0": _array("cc.ctx.shift", lambda x: x * 0),
    "hyper mult of int64": _array("cc.hyper.mult", lambda x: x.astype(np.int64)),
    "mean mult of one level": _array("cc.2.mean.mult", lambda x: x[:1]),
}


@pytest.mark.parametrize("edit", EDITS)
def test_refuses_what_the_document_refuses(cc_bytes, edit):
    manifest, arrays, _ = modelfile.unpack(cc_bytes)
    arrays = dict(arrays)
    EDITS[edit](manifest, arrays)
    with pytest.raises(qlicref.FormatError):
        qlicref.read_model(modelfile.pack(manifest, arrays))


WIDE_EDITS = {
    "ctx_max below 127": _set(("cc", "ctx_max"), 100),
    "ctx_max above 2047": _set(("cc", "ctx_max"), 2048),
    "ctx_max not an integer": _set(("cc", "ctx_max"), 2047.0),
    "a context-reading layer declares 8-bit input": _set(
        ("cc", "networks", 1, "params", 0, "in_max"), 127),
    "the residual network declares 8-bit input": _set(
        ("cc", "networks", 0, "lrp", 0, "in_max"), 127),
}


@pytest.mark.parametrize("edit", WIDE_EDITS)
def test_refuses_what_the_document_refuses_of_wide_context_codes(edit):
    manifest, arrays, _ = modelfile.read(TINY_CC12)
    arrays = dict(arrays)
    WIDE_EDITS[edit](manifest, arrays)
    with pytest.raises(qlicref.FormatError):
        qlicref.read_model(modelfile.pack(manifest, arrays))


def test_format_2_cannot_hold_ctx_max():
    import hashlib
    import struct
    data = bytearray(TINY_CC12.read_bytes())
    struct.pack_into("<I", data, 8, 2)
    body = bytes(data[:-32])
    with pytest.raises(qlicref.FormatError, match="format-2"):
        qlicref.read_model(body + hashlib.sha256(body).digest())


def test_reads_the_golden_model_and_its_id(cc_bytes):
    model = qlicref.read_model(cc_bytes)
    assert model.manifest["cc"]["slices"] == [4, 4, 8, 8]
    assert model.model_id == modelfile.read(TINY_CC)[2]
