"""The training run's loss log: training loss per level since the last entry, and the
validation sets' loss, bpp, PSNR and MS-SSIM per level, one CSV row each, so that
overfitting (training improving while a validation set does not) shows."""

import csv
from pathlib import Path

import numpy as np

FIELDS = ("step", "wall_seconds", "split", "level", "images", "loss", "bpp", "psnr", "ms_ssim")


class LossLog:
    """Appends to ``path`` (created with a header); survives restarts of the run."""

    def __init__(self, path: Path, levels: int) -> None:
        self.path = Path(path)
        self.levels = levels
        self._train = np.zeros((levels, 3))  # per level: count, loss sum, bpp sum

    def add_train(self, level, loss, bpp) -> None:
        """Per-image values of one batch (tensors or arrays of shape (B,))."""
        for lv, lo, b in zip(np.asarray(level).astype(int), np.asarray(loss), np.asarray(bpp)):
            self._train[lv] += (1, lo, b)

    def _write(self, rows) -> None:
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def flush_train(self, step: int, wall_seconds: float) -> None:
        """One row per level of the training loss since the last flush (noisy: random crops)."""
        rows = []
        for lv, (count, loss, bpp) in enumerate(self._train):
            if count:
                rows.append({"step": step, "wall_seconds": round(wall_seconds), "split": "train",
                             "level": lv + 1, "images": int(count),
                             "loss": f"{loss / count:.5f}", "bpp": f"{bpp / count:.5f}",
                             "psnr": "", "ms_ssim": ""})
        self._train[:] = 0
        self._write(rows)

    def add_validation(self, step: int, wall_seconds: float, split: str, images: int,
                       rows: list) -> None:
        """Rows of ``loop.validate`` (with ``loss``) for one validation set."""
        self._write({"step": step, "wall_seconds": round(wall_seconds), "split": split,
                     "level": r["level"], "images": images, "loss": f"{r['loss']:.5f}",
                     "bpp": f"{r['bpp']:.5f}", "psnr": f"{r['psnr']:.4f}",
                     "ms_ssim": f"{r['ms_ssim']:.5f}"} for r in rows)


def read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
