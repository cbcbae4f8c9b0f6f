"""Clipping fine-tune with quantization in the loop (DESIGN section 4, step 2).

Starting from a trained float model, each convolution's weights are clipped per output
channel to the range with the smallest quantization error (``weights.best_clip``) and then
trained for a short while *as they will be quantized*: the forward pass sees the weights on
their int8 grid and every 8-bit activation on its per-channel grid, the backward pass goes
straight through the rounding (straight-through estimator). The network learns to be robust
to the noise that 8-bit quantization adds; the result is saved as an ordinary fp16 float
checkpoint (weights clipped), which ``quantize.export`` turns into the shipped model.

With ``--range-lr`` the activation ranges are trained as well (learned step size, see
``LearnedRange``), starting from the calibrated maxima; they travel in the checkpoint's
metadata and the exporter uses them. ``--float-control`` runs the same fine-tune (same crops,
levels and seed) without any quantization: its result is the float model that the int8
export is measured against, so that the gain of annealing at a low learning rate is not
mistaken for a property of quantization.

Usage::

    python -m qlic_codec.quantize.finetune models/qlic-mse-float.pt -o runs/qat/mse-qat.pt \\
        --steps 400 --range-lr 3e-3
    python -m qlic_codec.quantize.finetune models/qlic-mse-float.pt -o runs/qat/mse-ctl.pt \\
        --steps 400 --float-control
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import allocator
from ..train.checkpoint import load_float_model, save_float_model
from ..train.data import CropSampler, default_data_root, load_folder
from ..train.loop import rd_loss
from ..train.model import MSE_LAMBDAS, MSSSIM_LAMBDAS
from ..train.slices import FloatPoints
from . import simulate, weights
from .activations import code_max
from .calibrate import ACT_METHOD, CALIBRATION_IMAGES, calibration_images, integer_layers


def _straight_through(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return x + (q - x).detach()


class ClippedInt8Weight(nn.Module):
    """Parametrization: clip per output channel to ``clip``, then round onto the int8 grid
    that the exporter will use (straight through).

    The engine multiplies activation codes, so the exporter folds each input channel's code
    step into the weights before rounding them per output channel; ``in_step`` (a callable
    giving the current steps, shape (Cin,)) makes the fine-tune round on that same grid, so
    the network learns robustness to the rounding it will really get.
    """

    def __init__(self, clip: np.ndarray, out_axis: int, in_step=None, ndim: int = 4) -> None:
        super().__init__()
        shape = [1] * ndim
        shape[out_axis] = -1
        self.register_buffer("clip", torch.as_tensor(clip, dtype=torch.float32).reshape(shape))
        self.out_axis = out_axis
        # A plain callable, not a submodule: learned ranges must not become weight parameters.
        self._in_step = in_step

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        w = torch.maximum(torch.minimum(w, self.clip), -self.clip)
        step = torch.ones((), dtype=w.dtype)
        if self._in_step is not None:
            shape = [1] * w.ndim
            shape[1 - self.out_axis] = -1
            step = self._in_step().to(w.dtype).reshape(shape)
        folded = w * step
        dims = [d for d in range(w.ndim) if d != self.out_axis]
        unit = folded.detach().abs().amax(dim=dims, keepdim=True) / 127
        unit = torch.where(unit > 0, unit, torch.ones_like(unit))
        return _straight_through(w, torch.round(folded / unit) * unit / step)


def _code_step(quant):
    """Current code step per channel of an activation quantizer (``simulate.code_step``)."""
    if isinstance(quant, LearnedRange):
        r = torch.exp(quant.log_range.detach())
        return torch.clamp(r, min=max(1e-4, 1e-3 * float(r.max()))) / quant.half
    return torch.as_tensor(simulate.code_step(quant.range, quant.bits), dtype=torch.float32)


class LearnedRange(nn.Module):
    """A uniform activation quantizer whose per-channel ranges are trained.

    Learned step size (Esser et al. 2020, "Learned Step Size Quantization", arXiv:1902.08153)
    on the range ``r = exp(log_range)``: ``x -> round(clamp((x - o) / r) * h) / h * r + o``,
    ``h = code_max(bits)`` (127 for the engine's 8-bit codes), with the rounding straight
    through, so the gradient of ``r`` is the quantization error for
    values inside the range and the clipped excess for values outside it. The maximum seen in
    calibration is the starting point; the rate-distortion loss decides how much of each
    channel's tail is worth its resolution. Wider codes (``bits`` up to 16) show what they
    recover for a tensor; the exporter takes up to 12 bits, where a GDN reads them.
    """

    def __init__(self, quant, bits: int = 8) -> None:
        super().__init__()
        if np.any(quant.power != 1.0):
            raise ValueError("learned ranges are for uniform codes")
        self.bits, self.half = bits, code_max(bits)
        self.log_range = nn.Parameter(torch.log(torch.as_tensor(
            np.maximum(quant.range, 1e-6), dtype=torch.float32)))
        self.register_buffer("offset", torch.as_tensor(quant.offset, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = torch.exp(self.log_range)[None, :, None, None]
        o = self.offset[None, :, None, None]
        u = ((x - o) / r).clamp(-1.0, 1.0)
        return _straight_through(u, torch.round(u * self.half) / self.half) * r + o

    def export(self):
        """The fitted quantizer (``activations.ActQuant``) of the learned ranges."""
        from .activations import ActQuant
        r = torch.exp(self.log_range.detach()).double().numpy()
        return ActQuant(r, np.ones_like(r), self.offset.double().numpy(), self.bits)


def attach(model, quants: dict, learned: dict | None = None, wide=(),
           wide_bits: int = 16) -> list:
    """Put weight and activation quantization into ``model`` in place; returns the hooks.

    With ``learned`` (an empty dict to fill), activations use ``LearnedRange`` quantizers,
    stored there by tensor name so that their parameters can be trained and exported; the
    tensors named in ``wide`` get ``wide_bits``-bit codes.
    """
    hooks = []
    if learned is not None:
        for key, quant in quants.items():
            learned[key] = LearnedRange(quant, wide_bits if key in wide else 8)
        quants = learned
    keys = simulate.input_keys(model)
    for name, seq in simulate.networks(model):
        groups = integer_layers(seq)
        for i, group in enumerate(groups):
            conv = group[0] if isinstance(group[0], (nn.Conv2d, nn.ConvTranspose2d)) else None
            if conv is not None:
                axis = 1 if isinstance(conv, nn.ConvTranspose2d) else 0
                clip = weights.best_clip(conv.weight.detach().double().numpy(), out_axis=axis)
                key = keys[f"{name}.{i}"]
                in_step = None if key is None else (lambda k=key: _input_step(quants, k))
                parametrize.register_parametrization(
                    conv, "weight", ClippedInt8Weight(np.maximum(clip, 1e-8), axis, in_step))
            if i < len(groups) - 1:
                quant = quants[f"{name}.{i}"]
                hooks.append(group[-1].register_forward_hook(
                    lambda mod, inp, out, q=quant: _apply(q, out)))
    ha_in = quants["ha_in"]
    hooks.append(model.h_a.register_forward_pre_hook(
        lambda mod, args, q=ha_in: (_apply(q, args[0]),)))
    if getattr(model, "contexts", None):
        model.points = TrainingPoints(quants)
    return hooks


def _input_step(quants: dict, key) -> torch.Tensor:
    """Current code step per input channel of a layer reading ``key`` (a name or pieces)."""
    if isinstance(key, str):
        return _code_step(quants[key])
    return torch.cat([_code_step(quants[name])[torch.as_tensor(channels)]
                      for name, channels in key])


def _apply_part(quant, x: torch.Tensor, part) -> torch.Tensor:
    """``_apply`` with the quantizer of channels ``part`` only (a slice of ``y``)."""
    if part is None:
        return _apply(quant, x)
    if isinstance(quant, LearnedRange):
        r = torch.exp(quant.log_range[part])[None, :, None, None]
        o = quant.offset[part][None, :, None, None]
        u = ((x - o) / r).clamp(-1.0, 1.0)
        return _straight_through(u, torch.round(u * quant.half) / quant.half) * r + o
    q = quant
    sub = type(q)(q.range[part], q.power[part], q.offset[part], q.bits)
    return _straight_through(x, sub(x))


class TrainingPoints(FloatPoints):
    """The channel-conditional model's quantization points in the fine-tune: 8-bit
    activations (straight through), the residual network's 8-bit output; the slice networks'
    hidden layers are quantized by the hooks, the latents are noisy as in training."""

    def __init__(self, quants: dict) -> None:
        self.quants = quants

    def act(self, name, x, part=None):
        return _apply_part(self.quants[name], x, part)

    def lrp(self, r):
        return simulate.quantize_lrp(r)


def _apply(quant, x: torch.Tensor) -> torch.Tensor:
    if isinstance(quant, LearnedRange):  # its own straight-through rounding, ranges trained
        return quant(x)
    return _straight_through(x, quant(x))


def detach(model, hooks) -> None:
    """Remove the quantization; the float weights stay clipped to their ranges."""
    for h in hooks:
        h.remove()
    if getattr(model, "contexts", None):
        model.points = None
    for name, seq in simulate.networks(model):
        for module in seq:
            if parametrize.is_parametrized(module, "weight"):
                clip = module.parametrizations.weight[0].clip
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
                with torch.no_grad():
                    module.weight.copy_(torch.maximum(torch.minimum(module.weight, clip), -clip))


def finetune(model, meta: dict, data_root: Path, steps: int, batch: int, crop: int, lr: float,
             calibration: int = CALIBRATION_IMAGES, log=print, seed: int = 0,
             quantized: bool = True, range_lr: float = 0.0, wide=(),
             wide_bits: int = 16) -> dict:
    """Fine-tune ``model`` in place; ``quantized=False`` is the float control (see ``main``).

    With ``range_lr > 0`` the activation ranges are trained too (``LearnedRange``, Adam at that
    rate); the result's ``activation_ranges`` then holds them for the exporter. ``wide``
    names tensors to train with ``wide_bits``-bit codes (learned ranges only; the exporter
    takes up to 12 bits, on the tensors a GDN reads).
    """
    if wide and range_lr <= 0:
        raise ValueError("wider tensors need learned ranges (range_lr > 0)")
    if not 9 <= wide_bits <= 16:
        raise ValueError("wide_bits must be in 9..16")
    metric = meta.get("metric", "mse")
    lambdas = torch.tensor(meta.get("lambdas") or
                           (MSE_LAMBDAS if metric == "mse" else MSSSIM_LAMBDAS))
    hooks, learned = [], None
    if quantized:
        images = calibration_images(data_root, calibration)
        quants = simulate.fit_quants(simulate.collect(model, images), ACT_METHOD,
                                     per_channel=True, mean_removed=True)
        learned = {} if range_lr > 0 else None
        hooks = attach(model, quants, learned, wide, wide_bits)
    sampler = CropSampler(load_folder(Path(data_root) / "train"), crop, seed=seed)
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    if learned:
        groups.append({"params": [q.log_range for q in learned.values()], "lr": range_lr})
    opt = torch.optim.Adam(groups)
    model.train()
    start, window = time.monotonic(), []
    for step in range(1, steps + 1):
        x = sampler.batch(batch)
        level = torch.randint(0, len(lambdas), (batch,)).float()
        loss, bpp, dist = rd_loss(model, x, level, lambdas, metric)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(groups[0]["params"], 1.0)
        opt.step()
        window.append(loss.item())
        if step % 25 == 0 or step == steps:
            log(f"finetune step={step} loss={np.mean(window):.4f} "
                f"seconds={time.monotonic() - start:.0f}")
            window.clear()
    info = {"steps": steps, "batch": batch, "crop": crop, "lr": lr, "quantized": quantized}
    if wide:
        info["wide_activations"] = sorted(wide)
        info["wide_bits"] = wide_bits
    if quantized:
        detach(model, hooks)
        if learned:
            info["range_lr"] = range_lr
            info["activation_ranges"] = ranges_to_meta(
                {k: q.export() for k, q in learned.items()})
    model.eval()
    info["seconds"] = round(time.monotonic() - start)
    return info


def ranges_to_meta(quants: dict) -> dict:
    """Uniform per-channel quantizers as JSON-able lists (fp16 checkpoints keep them in meta)."""
    out = {}
    for k, q in quants.items():
        out[k] = {"range": q.range.tolist(), "offset": q.offset.tolist()}
        if q.bits != 8:
            out[k]["bits"] = q.bits
    return out


def ranges_from_meta(ranges: dict) -> dict:
    """The quantizers of ``ranges_to_meta``'s lists (what ``export`` takes as ``learned``)."""
    from .activations import ActQuant
    out = {}
    for k, v in ranges.items():
        r = np.asarray(v["range"], dtype=np.float64)
        out[k] = ActQuant(r, np.ones_like(r), np.asarray(v["offset"], dtype=np.float64),
                          int(v.get("bits", 8)))
    return out


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
    p.add_argument("--range-lr", type=float, default=0.0,
                   help="also train the activation ranges at this learning rate (learned step "
                        "size); the exporter then uses them instead of calibrated maxima")
    p.add_argument("--wide-gdn-inputs", action="store_true",
                   help="the convolution outputs that a GDN reads get wider codes (needs "
                        "--range-lr; the exporter takes up to 12 bits)")
    p.add_argument("--wide-bits", type=int, default=16, help="code width of --wide-gdn-inputs")
    p.add_argument("--wide-in", nargs="+", choices=["g_a", "g_s"], default=["g_a", "g_s"],
                   help="the transforms whose GDN inputs --wide-gdn-inputs widens")
    p.add_argument("--wide-tensors", nargs="+", default=[], metavar="NAME",
                   help="more tensors with --wide-bits codes, by name (e.g. g_a.3 g_a.5: GDN "
                        "outputs that the next convolution then reads as 16-bit integers)")
    p.add_argument("--float-control", action="store_true",
                   help="the same fine-tune (steps, crops, levels, seed) without quantization: "
                        "the float model that the int8 export of the quantized fine-tune is "
                        "measured against, so that the comparison does not credit the "
                        "annealing at a low learning rate to quantization")
    args = p.parse_args(argv)
    allocator.keep_freed_memory()  # as in training: the same arrays every step
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # before the model is built, as the documented fine-tunes ran
    model, meta = load_float_model(args.checkpoint)
    try:
        simulate.refuse_z_steps(model)
    except ValueError as exc:
        p.error(str(exc))
    crop = args.crop or (128 if meta.get("metric", "mse") == "mse" else 192)
    wide = [k for k in simulate.gdn_inputs(model) if k.split(".")[0] in
            args.wide_in] if args.wide_gdn_inputs else []
    known = set(simulate.activation_keys(model))
    unknown = [k for k in args.wide_tensors if k not in known]
    if unknown:
        p.error(f"--wide-tensors: no activation named {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})")
    wide += [k for k in args.wide_tensors if k not in wide]
    info = finetune(model, meta, Path(args.data) if args.data else default_data_root(),
                    args.steps, args.batch, crop, args.lr, quantized=not args.float_control,
                    range_lr=args.range_lr, wide=wide, wide_bits=args.wide_bits)
    key = "float_control_finetune" if args.float_control else "quantization_finetune"
    meta = {**meta, key: {"from": Path(args.checkpoint).name, **info}}
    save_float_model(model, Path(args.output), meta)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
