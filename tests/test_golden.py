"""Golden bitstreams: the exact bytes and pixels of the tiny model must never drift.

A change here is a format or behaviour change: regenerate with ``QLIC_REGENERATE_GOLDEN=1``
only on purpose, and say so in the commit.
"""

import hashlib
import json
import os

import pytest

import qlic_codec
from conftest import GOLDEN, synthetic_photo


@pytest.fixture(params=["portable", "avx2", "vnni"])
def kernel_path(request):
    """Every kernel path must produce the golden bytes (the portable one on any machine)."""
    from qlic_codec.engine import kernels
    if request.param not in kernels.available_paths():
        pytest.skip(f"no {request.param} path on this host")
    with kernels.use_path(request.param):
        yield request.param


def test_golden_streams_and_pixels(kernel_path):
    if os.environ.get("QLIC_REGENERATE_GOLDEN") == "1":
        import sys
        sys.path.insert(0, str(GOLDEN))
        from generate import regenerate
        regenerate()
    expected_path = GOLDEN / "expected.json"
    if not expected_path.is_file():
        pytest.fail("missing tests/golden/expected.json; run with QLIC_REGENERATE_GOLDEN=1")
    expected = json.loads(expected_path.read_text())
    model = str(GOLDEN / "tiny-mse.qlicm")
    image = synthetic_photo(72, 80, seed=7)
    for key, want in expected.items():
        data = qlic_codec.encode(image, int(key[1:]), model)
        assert hashlib.sha256(data).hexdigest() == want["stream_sha256"], key
        pixels = qlic_codec.decode(data, model)
        assert hashlib.sha256(pixels.tobytes()).hexdigest() == want["pixels_sha256"], key
