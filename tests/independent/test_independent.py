"""The independent decoder (``qlicref``, written from docs/FORMAT.md, importing nothing from
``qlic_codec``) decodes qlic's streams to exactly qlic's pixels."""

import re
import time
from pathlib import Path

import numpy as np
import pytest

import qlic_codec
import qlicref
from conftest import TINY_MODEL, synthetic_photo
from container2 import as_format_2
from qlic_codec import modelfile, zoo
from qlic_codec.entropy import coder
from qlic_codec.entropy.tables import CdfTables
from qlicref.symbols import Tables, decode_values

PACKAGE = Path(qlicref.__file__).parent


def test_the_decoder_imports_nothing_of_qlic():
    for path in PACKAGE.glob("*.py"):
        imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", path.read_text(), re.M)
        assert not [m for m in imports if m.startswith("qlic")], path.name


@pytest.fixture(scope="module")
def tiny_bytes():
    return TINY_MODEL.read_bytes()


# (height, width): the smallest image, odd sizes, one block, several blocks.
SIZES = [(1, 1), (33, 47), (1, 130), (64, 64), (70, 130)]


@pytest.mark.parametrize("quality", [1, 8])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
def test_same_pixels_as_qlic(tiny_bytes, size, quality):
    image = synthetic_photo(*size, seed=size[0] + size[1])
    data = qlic_codec.encode(image, quality, str(TINY_MODEL))
    want = qlic_codec.decode(data, str(TINY_MODEL))
    start = time.perf_counter()
    got = qlicref.decode(as_format_2(data), tiny_bytes)
    assert time.perf_counter() - start < 20
    assert got.dtype == np.uint8 and got.shape == want.shape == image.shape
    np.testing.assert_array_equal(got, want)


def test_same_model_id_as_qlic(tiny_bytes):
    model = qlicref.read_model(tiny_bytes)
    assert model.model_id == modelfile.read(TINY_MODEL)[2]


def test_escapes_and_extreme_values(tiny_bytes):
    """Values far outside every table (up to the int32 limits) go through the escapes."""
    arrays = modelfile.read(TINY_MODEL)[1]
    tables = CdfTables(arrays["entropy.y.cdf_counts"], arrays["entropy.y.sizes"],
                       arrays["entropy.y.offsets"])
    rng = np.random.default_rng(5)
    n = 600
    indexes = rng.integers(0, tables.num_tables, n).astype(np.int32)
    values = rng.integers(-3, 4, n).astype(np.int64)
    values[::7] = rng.integers(-(2**31), 2**31, values[::7].size)
    values[::11] = rng.integers(-300, 300, values[::11].size)
    values[:4] = [-(2**31), 2**31 - 1, 0, 1]
    values = values.astype(np.int32)
    data = coder.encode_symbols(values, indexes, tables)
    got = decode_values(data, indexes, Tables(arrays, "y"))
    np.testing.assert_array_equal(got, values)


@pytest.mark.parametrize("edit", ["unknown key", "unknown out key", "version 1",
                                  "unknown array"])
def test_refuses_what_the_document_refuses(tiny_bytes, edit):
    manifest, arrays, _ = modelfile.unpack(tiny_bytes)
    if edit == "unknown key":
        manifest["dither"] = 1
    elif edit == "unknown out key":
        manifest["transforms"]["g_s"][0]["out"]["round"] = "even"
    elif edit == "unknown array":
        arrays = {**arrays, "head.dither.mult": np.ones(3, np.int32)}
    data = bytearray(modelfile.pack(manifest, arrays))
    if edit == "version 1":
        data[8] = 1
    with pytest.raises(qlicref.FormatError):
        qlicref.read_model(bytes(data))


# The shipped models (N=128, M=192, 12-bit activations): one small stream each. The decode
# here takes about a second; the limit leaves room for compiling qlic's kernels on a cold
# cache of a loaded machine.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(zoo.BUNDLED))
def test_shipped_models(name):
    path = zoo.resolve(name)
    image = synthetic_photo(48, 64, seed=11)
    data = qlic_codec.encode(image, 6, name)
    start = time.perf_counter()
    got = qlicref.decode(as_format_2(data), path.read_bytes())
    assert time.perf_counter() - start < 30
    np.testing.assert_array_equal(got, qlic_codec.decode(data, name))
