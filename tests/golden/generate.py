"""Regenerate the golden files (needs the training extra): ``QLIC_REGENERATE_GOLDEN=1 pytest
tests/test_golden.py`` calls this. The tiny model has random weights and large gains so that
its latents are non-trivial; it is a test fixture, not a codec."""

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_tiny_model(path: Path) -> None:
    import torch

    from qlic_codec.quantize.export import export
    from qlic_codec.train.model import MeanScaleHyperprior
    from conftest import synthetic_photo

    torch.manual_seed(1234)
    model = MeanScaleHyperprior(N=16, M=24, levels=8).eval()
    with torch.no_grad():
        model.log_gain.add_(3.0)
    images = [synthetic_photo(128, 128, seed) for seed in range(3)]
    export(model, images, path, {"metric": "mse", "source": "tiny random test model"},
           scale_max=32.0)


def expected_outputs(model_path: Path) -> dict:
    import hashlib

    import qlic_codec
    from conftest import synthetic_photo

    image = synthetic_photo(72, 80, seed=7)
    out = {}
    for quality in (1, 4, 8):
        data = qlic_codec.encode(image, quality, str(model_path))
        pixels = qlic_codec.decode(data, str(model_path))
        out[f"q{quality}"] = {"stream_sha256": hashlib.sha256(data).hexdigest(),
                              "bytes": len(data),
                              "pixels_sha256": hashlib.sha256(pixels.tobytes()).hexdigest()}
    return out


def regenerate() -> None:
    make_tiny_model(HERE / "tiny-mse.qlicm")
    expected = expected_outputs(HERE / "tiny-mse.qlicm")
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
