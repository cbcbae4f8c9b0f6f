"""End-to-end behaviour of the Python API with the tiny golden model."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qlic_codec
from qlic_codec import api
from conftest import synthetic_photo

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("size", [(1, 1), (1, 70), (65, 1), (64, 64), (33, 47), (333, 517)])
def test_round_trip_any_size(tiny_model, size):
    image = synthetic_photo(*size, seed=sum(size))
    data, recon = api.encode_and_reconstruct(image, 5, tiny_model)
    decoded = qlic_codec.decode(data, tiny_model)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    # The decoder reproduces the encoder's own reconstruction exactly.
    np.testing.assert_array_equal(decoded, recon)
    info = qlic_codec.read_info(data)
    assert (info["height"], info["width"], info["quality"]) == (*size, 5)


def test_same_input_same_bytes_twice(tiny_model):
    image = synthetic_photo(90, 130, seed=3)
    first = qlic_codec.encode(image, 3, tiny_model)
    assert qlic_codec.encode(image, 3, tiny_model) == first
    np.testing.assert_array_equal(qlic_codec.decode(first, tiny_model),
                                  qlic_codec.decode(first, tiny_model))


def test_quality_orders_size(tiny_model):
    image = synthetic_photo(128, 128, seed=4)
    sizes = [len(qlic_codec.encode(image, q, tiny_model)) for q in (1, 8)]
    assert sizes[0] < sizes[1]


_THREAD_SCRIPT = """
import hashlib, sys
import numpy as np
sys.path.insert(0, {tests!r})
import qlic_codec
from conftest import synthetic_photo
image = synthetic_photo(150, 170, seed=11)
data = qlic_codec.encode(image, 6, {model!r})
pixels = qlic_codec.decode(data, {model!r})
print(hashlib.sha256(data).hexdigest(), hashlib.sha256(pixels.tobytes()).hexdigest())
print("torch" in sys.modules)
between = qlic_codec.encode(image, 4.5, {model!r}, metadata=qlic_codec.Metadata(icc=b"p"))
sized = qlic_codec.encode(image, model={model!r}, target_size=len(between) - 100)
print(hashlib.sha256(between).hexdigest(), hashlib.sha256(sized).hexdigest(),
      hashlib.sha256(qlic_codec.decode(between, {model!r}).tobytes()).hexdigest())
"""


def _run_isolated(tiny_model, threads):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
    script = _THREAD_SCRIPT.format(tests=str(ROOT / "tests"), model=tiny_model)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    return out.stdout.split("\n")


def test_thread_count_does_not_change_bytes_or_pixels(tiny_model):
    one, two = _run_isolated(tiny_model, 1), _run_isolated(tiny_model, 2)
    assert one[0] == two[0]
    assert one[2] == two[2]  # a fractional quality, a size target, metadata
    image = synthetic_photo(150, 170, seed=11)
    data = qlic_codec.encode(image, 6, tiny_model)
    assert one[0].split()[0] == hashlib.sha256(data).hexdigest()


def test_codec_path_never_imports_torch(tiny_model):
    assert _run_isolated(tiny_model, 1)[1] == "False"


_NO_PILLOW_SCRIPT = """
import sys
import numpy as np
import qlic_codec
data = open({stream!r}, "rb").read()
pixels = qlic_codec.decode(data, {model!r})
print(pixels.shape, "PIL" in sys.modules)
again = qlic_codec.encode(np.ascontiguousarray(pixels[:, :77]), 4, {model!r})
print(qlic_codec.read_info(again)["width"], "PIL" in sys.modules)
"""


def test_codec_path_never_imports_pillow(tiny_model, tmp_path):
    # Pillow is the image-file edge (imageio); a stream to an array, and an array to a stream,
    # need NumPy only. 70 x 90 and 70 x 77 are not multiples of 64: both pad, and crop.
    stream = tmp_path / "a.qlic"
    stream.write_bytes(qlic_codec.encode(synthetic_photo(70, 90, seed=5), 4, tiny_model))
    script = _NO_PILLOW_SCRIPT.format(stream=str(stream), model=tiny_model)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, check=True)
    assert out.stdout.splitlines()[-2:] == ["(70, 90, 3) False", "77 False"]


def test_bad_arguments(tiny_model):
    image = synthetic_photo(8, 8)
    with pytest.raises(ValueError):
        qlic_codec.encode(image, 0, tiny_model)
    with pytest.raises(ValueError):
        qlic_codec.encode(image, 9, tiny_model)
    # A level the model lacks is a codec error (one line and exit 1 in the CLI), not a bug.
    with pytest.raises(qlic_codec.InvalidArgumentError):
        qlic_codec.encode(image, 9, tiny_model)
    with pytest.raises(qlic_codec.InvalidImageError):
        qlic_codec.encode(image.astype(np.float32), 4, tiny_model)
    with pytest.raises(qlic_codec.InvalidImageError):
        qlic_codec.encode(image[..., :2], 4, tiny_model)
    with pytest.raises(qlic_codec.ModelFileError):
        qlic_codec.encode(image, 4, str(ROOT / "no-such-model.qlicm"))


def test_corrupt_streams_raise_qlic_errors_only(tiny_model):
    data = bytearray(qlic_codec.encode(synthetic_photo(70, 90, seed=5), 4, tiny_model))
    rng = np.random.default_rng(0)
    for _ in range(60):
        mutated = bytearray(data)
        pos = int(rng.integers(len(mutated)))
        mutated[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(qlic_codec.QlicError):
            qlic_codec.decode(bytes(mutated), tiny_model)
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(qlic_codec.QlicError):
            qlic_codec.decode(bytes(data[:cut]), tiny_model)


def test_stream_from_another_model_is_refused(tiny_model, tmp_path):
    data = qlic_codec.encode(synthetic_photo(20, 20), 4, tiny_model)
    other = tmp_path / "other.qlicm"
    from qlic_codec import modelfile
    manifest, arrays, _ = modelfile.unpack(Path(tiny_model).read_bytes())
    # One weight changed: another model, another id.
    weight = arrays["g_s.6.weight"].copy()
    weight[0, 0, 0, 0] ^= 1
    arrays["g_s.6.weight"] = weight
    modelfile.write(other, manifest, arrays)
    with pytest.raises(qlic_codec.QlicError, match="made with model"):
        qlic_codec.decode(data, str(other))


def test_editing_the_card_keeps_streams_decodable(tiny_model, tmp_path):
    """The model id covers what decoding reads, not the card (documentation)."""
    from qlic_codec import modelfile
    image = synthetic_photo(30, 41, seed=2)
    data = qlic_codec.encode(image, 5, tiny_model)
    manifest, arrays, mid = modelfile.unpack(Path(tiny_model).read_bytes())
    manifest["card"] = {"source": "the same weights, described again", "notes": [1, 2.5]}
    edited = tmp_path / "edited.qlicm"
    assert modelfile.write(edited, manifest, arrays) == mid
    assert edited.read_bytes() != Path(tiny_model).read_bytes()
    np.testing.assert_array_equal(qlic_codec.decode(data, str(edited)),
                                  qlic_codec.decode(data, tiny_model))
    assert qlic_codec.encode(image, 5, str(edited)) == data
