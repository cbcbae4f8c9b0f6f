"""The independent decoder decodes the conformance streams of the bundled models to the
committed pixel digests: qlic, its specification and the streams agree.

Only the streams below a megapixel: the independent decoder takes about 0.2 s per 64x64 block
with the shipped models, so a 1800x1200 stream (551 blocks) would take minutes.
"""

import hashlib
import json
from pathlib import Path

import pytest

import qlicref
from qlic_codec import zoo

FOLDER = Path(__file__).resolve().parents[2] / "conformance"


def _streams():
    manifest = FOLDER / "manifest.json"
    if not manifest.is_file():
        return []
    streams = json.loads(manifest.read_text())["streams"]
    return [s for s in streams if s["width"] * s["height"] < 10**6]


@pytest.fixture(scope="module")
def model_bytes():
    return {name: zoo.resolve(name).read_bytes() for name in zoo.BUNDLED}


def test_there_are_streams():
    assert len(_streams()) >= 10, ("missing conformance/; run python -m "
                                   "qlic_codec.conformance generate")


@pytest.mark.parametrize("stream", _streams(), ids=lambda s: s["file"])
def test_same_pixels_as_the_manifest(model_bytes, stream):
    data = (FOLDER / stream["file"]).read_bytes()
    rgb = qlicref.decode(data, model_bytes[stream["model"]])
    assert rgb.shape == (stream["height"], stream["width"], 3)
    raw = rgb.tobytes()
    assert hashlib.md5(raw).hexdigest() == stream["pixels_md5"]
    assert hashlib.sha256(raw).hexdigest() == stream["pixels_sha256"]
