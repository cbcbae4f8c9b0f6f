"""Golden bitstreams: the exact bytes and pixels of the tiny model must never drift.

This test only compares. A change here is a format or behaviour change: regenerate the files
on purpose with ``python tests/golden/generate.py`` (never from a test, so a test run cannot
rewrite what it checks), and say so in the commit.
"""

import hashlib
import json
import os

import pytest

import qlic_codec
from conftest import GOLDEN, synthetic_photo


REGENERATE = "python tests/golden/generate.py"


GOLDEN_SETS = {"hyperprior": ("tiny-mse.qlicm", "expected.json"),
               "channel-conditional": ("tiny-cc.qlicm", "expected-cc.json"),
               "channel-conditional, 12-bit context": ("tiny-cc12.qlicm",
                                                       "expected-cc12.json")}


def _golden_files(kind="hyperprior"):
    """The committed golden model and expectations; a missing one fails with the command."""
    if os.environ.get("QLIC_REGENERATE_GOLDEN"):
        pytest.fail(f"QLIC_REGENERATE_GOLDEN no longer regenerates anything; run {REGENERATE} "
                    "(then this test compares against what it wrote)")
    model_name, expected_name = GOLDEN_SETS[kind]
    model, expected = GOLDEN / model_name, GOLDEN / expected_name
    missing = [p.name for p in (model, expected) if not p.is_file()]
    if missing:
        pytest.fail(f"missing tests/golden/{' and '.join(missing)}; run {REGENERATE}")
    return str(model), json.loads(expected.read_text())


@pytest.mark.parametrize("kind", sorted(GOLDEN_SETS))
def test_golden_streams_and_pixels(kernel_path, kind):
    model, expected = _golden_files(kind)
    assert sorted(expected) == ["q1", "q4", "q4.5", "q8"]
    image = synthetic_photo(72, 80, seed=7)
    for key, want in expected.items():
        data = qlic_codec.encode(image, float(key[1:]), model)
        assert len(data) == want["bytes"], key
        assert hashlib.sha256(data).hexdigest() == want["stream_sha256"], key
        pixels = qlic_codec.decode(data, model)
        assert hashlib.sha256(pixels.tobytes()).hexdigest() == want["pixels_sha256"], key
