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


# File-name prefixes of the public photo sets in the training data (film scans, city
# architecture, scenes; see the data's SOURCES.md); the other photos are mostly wallpapers.
WIDE_PREFIXES = ("bsd68_", "urban100_", "sunhays_")


def image_paths(folder: Path) -> list[Path]:
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in {".png", ".jpg"})
    if not paths:
        raise FileNotFoundError(f"no images in {folder}")
    return paths


def load_folder(folder: Path) -> list[np.ndarray]:
    """Every image of a folder as uint8 HxWx3, in sorted file-name order."""
    return [np.asarray(Image.open(p).convert("RGB")) for p in image_paths(folder)]


def wide_share_weights(folder: Path, share: float) -> np.ndarray:
    """Sampling weights per image (in ``load_folder`` order) that draw ``share`` of the crops
    from the public sets (``WIDE_PREFIXES``) and the rest from the other photos, uniformly
    within each group. Uniform over images, the public sets would take 64% of the crops of
    today's training set, and the photos like ``val`` would pay for it."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"the share of the public sets must be in [0, 1], got {share}")
    wide = np.array([p.name.startswith(WIDE_PREFIXES) for p in image_paths(folder)])
    weights = np.where(wide, share / max(wide.sum(), 1), (1 - share) / max((~wide).sum(), 1))
    return weights / weights.sum()


class CropSampler:
    """Random crops with random horizontal and vertical flips from in-memory images.

    Args:
        images: uint8 HxWx3 arrays, each at least ``crop`` on both sides (smaller are skipped).
        crop: side of the square crops.
        seed: seed of the sampler's own generator, saved with checkpoints.
    """

    def __init__(self, images: list[np.ndarray], crop: int, seed: int = 0,
                 weights: np.ndarray | None = None) -> None:
        keep = [i for i, im in enumerate(images) if min(im.shape[:2]) >= crop]
        self.images = [images[i] for i in keep]
        if not self.images:
            raise ValueError(f"no training image is at least {crop} px on both sides")
        self.weights = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)[keep]
            self.weights = w / w.sum()
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> torch.Tensor:
        out = np.empty((size, self.crop, self.crop, 3), dtype=np.uint8)
        for i in range(size):
            im = self.images[self.rng.integers(len(self.images)) if self.weights is None
                             else self.rng.choice(len(self.images), p=self.weights)]
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
    # A read-only photo (as loaded) is copied: torch warns about tensors over read-only memory.
    return torch.from_numpy(np.require(image, requirements=("C", "W"))).permute(2, 0, 1)[
        None].float() / 255.0
