"""Training and validation images: the whole set decoded once into memory, random crops."""

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DATA_ENV = "QLIC_DATA"


def default_data_root() -> Path:
    """``$QLIC_DATA`` if set, else the ``data`` folder of the shared tree beside the repo."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def load_folder(folder: Path) -> list[np.ndarray]:
    """Every image of a folder as uint8 HxWx3, in sorted file-name order."""
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in {".png", ".jpg"})
    if not paths:
        raise FileNotFoundError(f"no images in {folder}")
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


class CropSampler:
    """Random crops with random horizontal and vertical flips from in-memory images.

    Args:
        images: uint8 HxWx3 arrays, each at least ``crop`` on both sides (smaller are skipped).
        crop: side of the square crops.
        seed: seed of the sampler's own generator, saved with checkpoints.
    """

    def __init__(self, images: list[np.ndarray], crop: int, seed: int = 0) -> None:
        self.images = [im for im in images if min(im.shape[:2]) >= crop]
        if not self.images:
            raise ValueError(f"no training image is at least {crop} px on both sides")
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> torch.Tensor:
        out = np.empty((size, self.crop, self.crop, 3), dtype=np.uint8)
        for i in range(size):
            im = self.images[self.rng.integers(len(self.images))]
            top = self.rng.integers(im.shape[0] - self.crop + 1)
            left = self.rng.integers(im.shape[1] - self.crop + 1)
            patch = im[top : top + self.crop, left : left + self.crop]
            if self.rng.random() < 0.5:
                patch = patch[:, ::-1]
            if self.rng.random() < 0.5:
                patch = patch[::-1]
            out[i] = patch
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float (1, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
