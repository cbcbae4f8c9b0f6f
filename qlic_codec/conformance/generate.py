"""Write the conformance streams of the bundled models: ``python -m qlic_codec.conformance
generate``.

Regenerating is deliberate, like the golden files: ``verify`` and the tests only compare with
what is committed, and new streams are a new reference that every earlier decoder must meet.
Run it only when a bundled model or the format changes, and say why in the commit.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from . import manifest
from .images import photo

# (width, height, qualities): the smallest image, odd sizes (a single row too), a multiple
# of 64, and one above 2 megapixels at a low and a high quality (few, to keep the folder
# small). 4.5 and 7.5 lie between the trained levels, on the sub-level grid.
CASES = [(1, 1, (1, 8)), (47, 33, (1, 4.5, 8)), (130, 1, (4.5,)), (128, 192, (4, 8)),
         (1800, 1200, (1, 7.5))]
MODELS = ("mse", "msssim")


def stream_name(model: str, width: int, height: int, quality: int | float) -> str:
    return f"{model}-{width}x{height}-q{quality}.qlic"


def pixel_digests(rgb: np.ndarray) -> dict:
    """MD5 and SHA-256 of decoded pixels, as the manifest stores them."""
    raw = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return {"pixels_md5": hashlib.md5(raw).hexdigest(),
            "pixels_sha256": hashlib.sha256(raw).hexdigest()}


def generate(where: Path) -> list[dict]:
    """Encode every case with every bundled model into ``where`` and write its manifest;
    other ``.qlic`` files there are removed, so the folder holds exactly what it lists."""
    from .. import api, fsio

    where.mkdir(parents=True, exist_ok=True)
    entries = []
    for model in MODELS:
        model_id = api.load_model(model).model_id.hex()
        for seed, (width, height, qualities) in enumerate(CASES):
            rgb = photo(height, width, seed)
            for quality in qualities:
                data = api.encode(rgb, quality, model)
                name = stream_name(model, width, height, quality)
                fsio.atomic_write(str(where / name), data)
                entries.append({"file": name, "model": model, "model_id": model_id,
                                "width": width, "height": height, "quality": quality,
                                "bytes": len(data),
                                "stream_sha256": hashlib.sha256(data).hexdigest(),
                                **pixel_digests(api.decode(data, model)),
                                "image": {"generator": "qlic_codec.conformance.images.photo",
                                          "seed": seed}})
    listed = {entry["file"] for entry in entries}
    for stale in where.glob("*.qlic"):
        if stale.name not in listed:
            stale.unlink()
    manifest.write(where, entries)
    return entries
