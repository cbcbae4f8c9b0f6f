"""Clipping fine-tune with quantization in the loop (DESIGN section 4, step 2).

Starting from a trained float model, each convolution's weights are clipped per output
channel to the range with the smallest quantization error (``weights.best_clip``) and then
trained for a short while *as they will be quantized*: the forward pass sees the weights on
their int8 grid and every 8-bit activation on its fitted per-channel grid, the backward pass
goes straight through the rounding (straight-through estimator). The network learns to be
robust to the noise that 8-bit quantization adds; the result is saved as an ordinary fp16
float checkpoint (weights clipped), which ``quantize.export`` turns into the shipped model.

Usage::

    python -m qlic_codec.quantize.finetune models/qlic-mse-float.pt -o runs/qat/mse-qat.pt \\
        --steps 400
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..train.checkpoint import load_float_model, save_float_model
from ..train.data import CropSampler, default_data_root, load_folder
from ..train.loop import rd_loss
from ..train.model import MSE_LAMBDAS, MSSSIM_LAMBDAS
from . import simulate, weights
from .calibrate import integer_layers
from .export import ACT_METHOD, CALIBRATION_IMAGES, calibration_images


def _straight_through(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return x + (q - x).detach()


class ClippedInt8Weight(nn.Module):
    """Parametrization: clip per output channel to ``clip``, then round onto the int8 grid
    (straight through)."""

    def __init__(self, clip: np.ndarray, out_axis: int, ndim: int = 4) -> None:
        super().__init__()
        shape = [1] * ndim
        shape[out_axis] = -1
        self.register_buffer("clip", torch.as_tensor(clip, dtype=torch.float32).reshape(shape))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        w = torch.maximum(torch.minimum(w, self.clip), -self.clip)
        step = self.clip / 127
        return _straight_through(w, torch.round(w / step) * step)


def attach(model, quants: dict) -> list:
    """Put weight and activation quantization into ``model`` in place; returns the hooks."""
    hooks = []
    for name in simulate.TRANSFORMS:
        groups = integer_layers(getattr(model, name))
        for i, group in enumerate(groups):
            conv = group[0] if isinstance(group[0], (nn.Conv2d, nn.ConvTranspose2d)) else None
            if conv is not None:
                axis = 1 if isinstance(conv, nn.ConvTranspose2d) else 0
                clip = weights.best_clip(conv.weight.detach().double().numpy(), out_axis=axis)
                parametrize.register_parametrization(
                    conv, "weight", ClippedInt8Weight(np.maximum(clip, 1e-8), axis))
            if i < len(groups) - 1:
                quant = quants[f"{name}.{i}"]
                hooks.append(group[-1].register_forward_hook(
                    lambda mod, inp, out, q=quant: _straight_through(out, q(out))))
    ha_in = quants["ha_in"]
    hooks.append(model.h_a.register_forward_pre_hook(
        lambda mod, args, q=ha_in: (_straight_through(args[0], q(args[0])),)))
    return hooks


def detach(model, hooks) -> None:
    """Remove the quantization; the float weights stay clipped to their ranges."""
    for h in hooks:
        h.remove()
    for name in simulate.TRANSFORMS:
        for module in getattr(model, name):
            if parametrize.is_parametrized(module, "weight"):
                clip = module.parametrizations.weight[0].clip
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
                with torch.no_grad():
                    module.weight.copy_(torch.maximum(torch.minimum(module.weight, clip), -clip))


def finetune(model, meta: dict, data_root: Path, steps: int, batch: int, crop: int, lr: float,
             calibration: int = CALIBRATION_IMAGES, log=print, seed: int = 0,
             quantized: bool = True) -> dict:
    """Fine-tune ``model`` in place; ``quantized=False`` is the float control (see ``main``)."""
    metric = meta.get("metric", "mse")
    lambdas = torch.tensor(meta.get("lambdas") or
                           (MSE_LAMBDAS if metric == "mse" else MSSSIM_LAMBDAS))
    hooks = []
    if quantized:
        images = calibration_images(data_root, calibration)
        quants = simulate.fit_quants(simulate.collect(model, images), ACT_METHOD,
                                     per_channel=True, mean_removed=True)
        hooks = attach(model, quants)
    sampler = CropSampler(load_folder(Path(data_root) / "train"), crop, seed=seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    start, window = time.monotonic(), []
    for step in range(1, steps + 1):
        x = sampler.batch(batch)
        level = torch.randint(0, len(lambdas), (batch,)).float()
        loss, bpp, dist = rd_loss(model, x, level, lambdas, metric)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        window.append(loss.item())
        if step % 25 == 0 or step == steps:
            log(f"finetune step={step} loss={np.mean(window):.4f} "
                f"seconds={time.monotonic() - start:.0f}")
            window.clear()
    if quantized:
        detach(model, hooks)
    model.eval()
    return {"steps": steps, "batch": batch, "crop": crop, "lr": lr, "quantized": quantized,
            "seconds": round(time.monotonic() - start)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m qlic_codec.quantize.finetune")
    p.add_argument("checkpoint", help="fp16 float model (models/*.pt)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--data", default=None)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=None,
                   help="default 128 for MSE models, 192 for MS-SSIM ones")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--float-control", action="store_true",
                   help="the same fine-tune (steps, crops, levels, seed) without quantization: "
                        "the float model that the int8 export of the quantized fine-tune is "
                        "measured against, so that the comparison does not credit the "
                        "annealing at a low learning rate to quantization")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, meta = load_float_model(args.checkpoint)
    crop = args.crop or (128 if meta.get("metric", "mse") == "mse" else 192)
    info = finetune(model, meta, Path(args.data) if args.data else default_data_root(),
                    args.steps, args.batch, crop, args.lr, quantized=not args.float_control)
    key = "float_control_finetune" if args.float_control else "quantization_finetune"
    meta = {**meta, key: {"from": Path(args.checkpoint).name, **info}}
    save_float_model(model, Path(args.output), meta)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
