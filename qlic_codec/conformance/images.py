"""The synthetic images the conformance streams are made from.

They are needed only to generate the streams again: the committed streams and the digests of
their decoded pixels are the reference, so a NumPy whose random numbers or sines differ in the
last bit changes nothing that ``verify`` checks. They are made here rather than borrowed from
the tests (which must not be imported by the package) or from photos (which must not be
copied into the repository).
"""

import numpy as np


def photo(height: int, width: int, seed: int, grain: float = 4.0) -> np.ndarray:
    """A deterministic, photo-like uint8 (height, width, 3) image: smooth colour fields, a
    vertical edge and Gaussian grain of standard deviation ``grain``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3))
    for c in range(3):
        for _ in range(4):
            fy, fx = rng.uniform(0.005, 0.08, 2)
            img[..., c] += np.sin(yy * fy + xx * fx + rng.uniform(0, 6.3))
    img += (xx > width * rng.uniform(0.3, 0.7))[..., None] * rng.uniform(-1.5, 1.5, 3)
    img = (img - img.min()) / max(np.ptp(img), 1e-9) * 220 + 18
    img += rng.normal(0, grain, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)
