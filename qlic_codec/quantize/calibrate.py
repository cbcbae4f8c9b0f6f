"""Activation ranges of the float model, gathered layer by layer on calibration images."""

import numpy as np
import torch
from torch import nn

from ..train.layers import SimplifiedGDN


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
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        y = run_transform(model.g_a, x, tracker, "g_a")
        tracker.see("y", y)
        z = run_transform(model.h_a, y, tracker, "h_a")
        z_hat = torch.round(z)
        tracker.see("z", z_hat)
        mean = run_transform(model.h_s, z_hat, tracker, "h_s")[:, : model.M]
        for level in levels:
            gain = model.gains(torch.tensor([float(level)]))[:, :, None, None]
            y_hat = (torch.round((y - mean) * gain) + mean * gain) / gain
            tracker.see("y_hat", y_hat)
            run_transform(model.g_s, y_hat, tracker, "g_s")
    return tracker.amax


def is_gdn(module) -> bool:
    return isinstance(module, SimplifiedGDN)
