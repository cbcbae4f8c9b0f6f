"""Activation ranges of the float model, gathered layer by layer on calibration images, and
those images: the calibration that the exporter and the fine-tune both start from."""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..train.data import load_folder, to_tensor
from ..train.layers import SimplifiedGDN

# Per-channel ranges at the calibrated maximum: ranges clipped to the smallest squared error
# on calibration samples lost up to 2.6 dB on a validation photo unlike them (benchmarks/quant.py).
ACT_METHOD = "max"
CALIBRATION_IMAGES, CALIBRATION_SIZE = 32, 512


def integer_layers(seq: nn.Sequential) -> list[list[nn.Module]]:
    """Group modules into the engine's layers: a convolution with its LeakyReLU, or a GDN."""
    groups = []
    for module in seq:
        if isinstance(module, nn.LeakyReLU):
            groups[-1].append(module)
        else:
            groups.append([module])
    return groups


class RangeTracker:
    """Running maximum of ``|x|`` per named tensor."""

    def __init__(self) -> None:
        self.amax: dict[str, float] = {}

    def see(self, name: str, x: torch.Tensor) -> None:
        value = float(x.detach().abs().max())
        self.amax[name] = max(self.amax.get(name, 0.0), value)


def run_transform(seq, x, tracker: RangeTracker, prefix: str):
    """Run a transform group by group, recording each group's output range."""
    for i, group in enumerate(integer_layers(seq)):
        for module in group:
            x = module(x)
        tracker.see(f"{prefix}.{i}", x)
    return x


@torch.no_grad()
def calibrate(model, images: list[np.ndarray], levels=None) -> dict[str, float]:
    """Ranges of every engine tensor over ``images`` (uint8 HxWx3, sides multiples of 64)
    at every quality level: ``g_a.i``/``h_a.i``/``h_s.i``/``g_s.i`` are group outputs, ``y``,
    ``z`` and ``y_hat`` the latents as the integer engine sees them."""
    tracker = RangeTracker()
    levels = range(model.levels) if levels is None else levels
    for image in images:
        x = to_tensor(image)
        y = run_transform(model.g_a, x, tracker, "g_a")
        tracker.see("y", y)
        z = run_transform(model.h_a, y, tracker, "h_a")
        z_hat = torch.round(z)
        tracker.see("z", z_hat)
        params = run_transform(model.h_s, z_hat, tracker, "h_s")
        mean = params[:, : model.M]
        for level in levels:
            gain = model.gains(torch.tensor([float(level)]))[:, :, None, None]
            if hasattr(model, "entropy_y"):  # channel-conditional: with its residuals
                y_hat = model.entropy_y(y, gain, *params.chunk(2, dim=1))["y_hat"]
            else:
                y_hat = (torch.round((y - mean) * gain) + mean * gain) / gain
            tracker.see("y_hat", y_hat)
            run_transform(model.g_s, y_hat, tracker, "g_s")
    return tracker.amax


def is_gdn(module) -> bool:
    return isinstance(module, SimplifiedGDN)


def calibration_images(data_root, count: int = CALIBRATION_IMAGES, size: int = CALIBRATION_SIZE,
                       seed: int = 0):
    """Centre crops (multiples of 64) of the first ``count`` training photos."""
    images = load_folder(Path(data_root) / "train")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(images), size=min(count, len(images)), replace=False)
    out = []
    for i in sorted(picks):
        im = images[i]
        h, w = (min(size, im.shape[0]) // 64) * 64, (min(size, im.shape[1]) // 64) * 64
        top, left = (im.shape[0] - h) // 2, (im.shape[1] - w) // 2
        out.append(np.ascontiguousarray(im[top : top + h, left : left + w]))
    return out
