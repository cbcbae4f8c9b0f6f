"""Quantized simulation of the float model: each step of the study switched on or off.

``SimulatedModel`` runs a float ``MeanScaleHyperprior`` in evaluation form with

- its weights replaced by their quantized values (``weights.fake_quantize``; GDN gamma as
  the engine stores it, uint8 per row),
- every tensor that the integer engine keeps as 8-bit codes replaced by its quantized value
  (``activations.ActQuant``), at the same places: each hidden layer output of the four
  transforms and the copy of ``y`` that enters the hyper-analysis,
- optionally the entropy coder's discretisation (``tables``): latents and means in fixed point
  with ``MEAN_BITS`` fractional bits, scales snapped to the 64-level table,

and returns what ``MeanScaleHyperprior.forward`` returns in evaluation, so
``train.loop.validate`` measures it. Rates are estimated from likelihoods, like the float model's.
"""

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..train.data import to_tensor
from ..train.priors import gaussian_likelihood
from . import activations, weights
from .calibrate import integer_layers, is_gdn

# Fractional bits of the fixed-point latent and mean. At low rates most symbols are zero and
# the reconstruction is the predicted mean, so its precision shows in PSNR: on the validation
# photos 4 bits cost 0.5 dB at quality 1, 8 bits 0.03 dB (the engine allows up to 8).
MEAN_BITS = 8
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64
# The latent residual prediction's 8-bit code spans [-4, 4] before ``tanh``: tanh(4) is within
# 0.07% of 1, and one code step (0.031) moves ``0.5 * tanh`` by at most 0.016 of a symbol.
LRP_RANGE = 4.0
TRANSFORMS = ("g_a", "h_a", "h_s", "g_s")


@dataclass
class Variant:
    """One row of the study. ``weights`` is (grouping, scheme) or None for float weights."""

    name: str
    weights: tuple | None = None
    clip: bool = False
    acts: str | None = None
    per_channel: bool = False
    mean_removed: bool = False
    tables: bool = False
    # Fold each input channel's activation step into the weights before rounding, as the
    # exporter does (only with per-channel uniform weights and activations).
    fold: bool = False
    extra: dict = field(default_factory=dict)


def _out_axis(module) -> int:
    return 1 if isinstance(module, nn.ConvTranspose2d) else 0


def code_step(range_: np.ndarray, bits: int = 8) -> np.ndarray:
    """Real value of one code of a uniform activation per channel (8 bits: codes -127..127).

    A channel that was constant (dead) in calibration still needs a usable step.
    """
    range_ = np.asarray(range_, dtype=np.float64)
    floor = max(1e-4, 1e-3 * float(range_.max()))
    return np.maximum(range_, floor) / activations.code_max(bits)


def networks(model) -> list[tuple[str, nn.Sequential]]:
    """``(prefix, network)`` of every network the engine runs as integer layers: the four
    transforms, and a channel-conditional model's parameter (``cc.i.p``) and residual
    (``cc.i.r``) networks of each slice."""
    nets = [(name, getattr(model, name)) for name in TRANSFORMS]
    for i, ctx in enumerate(getattr(model, "contexts", ())):
        nets += [(f"cc.{i}.p", ctx.params), (f"cc.{i}.r", ctx.lrp)]
    return nets


def slice_inputs(model, i: int, lrp: bool) -> list[tuple[str, np.ndarray]]:
    """What the first layer of slice ``i``'s network reads, in channel order: pieces
    ``(activation, channels)`` of the hyper mean and log-scale of the slice's channels, the
    decoded slices before it, and (the residual network) the slice itself."""
    M, sizes = model.M, model.slices
    a, n = sum(sizes[:i]), sizes[i]
    pieces = [("cc.hyper", np.arange(a, a + n)), ("cc.hyper", np.arange(M + a, M + a + n))]
    if a:
        pieces.append(("cc.ctx", np.arange(a)))
    if lrp:
        pieces.append(("cc.ctx", np.arange(a, a + n)))
    return pieces


def input_keys(model) -> dict:
    """For each integer layer ``network.i``: the 8-bit activation it reads (None for a
    transform's first layer, whose input has one step for every channel, except ``h_a``'s;
    a list of ``slice_inputs`` pieces for a slice network's first layer)."""
    keys = {}
    for prefix, seq in networks(model):
        for i, _ in enumerate(integer_layers(seq)):
            if i:
                keys[f"{prefix}.{i}"] = f"{prefix}.{i - 1}"
            elif prefix.startswith("cc."):
                _, index, kind = prefix.split(".")
                keys[f"{prefix}.{i}"] = slice_inputs(model, int(index), kind == "r")
            else:
                keys[f"{prefix}.{i}"] = "ha_in" if prefix == "h_a" else None
    return keys


def activation_keys(model) -> list[str]:
    """The names of the model's quantized activations (``g_a.0`` .. ``g_s.5``, ``ha_in``, and
    a channel-conditional model's ``cc.hyper``, ``cc.ctx`` and hidden slice activations)."""
    names = {k for k in input_keys(model).values() if isinstance(k, str)}
    if getattr(model, "contexts", None):
        names |= {"cc.hyper", "cc.ctx"}
    return sorted(names)


def input_step(quants: dict, key) -> np.ndarray:
    """Real value of one input code per input channel of a layer that reads ``key`` (an
    activation name or ``slice_inputs`` pieces)."""
    if isinstance(key, str):
        return code_step(quants[key].range, quants[key].bits)
    return np.concatenate([input_step(quants, name)[channels] for name, channels in key])


def quantize_weights(model, grouping: str, scheme: str, clip: bool = False,
                     quants: dict | None = None):
    """A copy of ``model`` whose convolution weights and GDN gammas are quantized values.

    With ``quants`` (the activation quantizers, uniform per channel) the shipped scheme
    (per channel, uniform) is quantized as the exporter does it: each input channel's code
    step is folded into the weights (and GDN gamma columns) before they are rounded, since
    the engine multiplies codes, not real values.
    """
    model = copy.deepcopy(model)
    keys = input_keys(model)
    with torch.no_grad():
        for prefix, seq in networks(model):
            for i, group in enumerate(integer_layers(seq)):
                module = group[0]
                key = keys[f"{prefix}.{i}"]
                fold = None
                if quants is not None and key is not None:
                    if (grouping, scheme) != ("channel", "uniform"):
                        raise ValueError("folded quantization is the per-channel uniform scheme")
                    fold = input_step(quants, key)
                if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                    w = module.weight.detach().double().numpy()
                    axis = _out_axis(module)
                    rng = weights.best_clip(w, out_axis=axis) if clip else None
                    if fold is not None:
                        q = fold_quantize(w, fold, axis)
                    else:
                        q = weights.fake_quantize(w, grouping, scheme, out_axis=axis,
                                                  clip=rng if grouping == "channel" else None)
                    module.weight.copy_(torch.from_numpy(q).float())
                elif is_gdn(module):
                    gamma = module.gamma.detach().double()
                    col = torch.ones(gamma.shape[1], dtype=torch.float64) if fold is None \
                        else torch.from_numpy(fold)
                    folded = gamma * col[None, :]
                    step = folded.max(dim=1, keepdim=True).values / 255.0
                    # As the exporter: a row's unit also keeps its beta within 2**24 units.
                    step = torch.maximum(step, module.beta.detach().double()[:, None] / 2.0**24)
                    step[step == 0] = 1.0
                    q = torch.round(folded / step).clamp(0, 255) * step / col[None, :]
                    # Store through the reparametrisation: gamma = raw**2 - pedestal.
                    raw = torch.sqrt(q + module._gamma_reparam.pedestal)
                    module.gamma_raw.copy_(raw.float())
    return model


def fold_quantize(w: np.ndarray, in_step: np.ndarray, out_axis: int) -> np.ndarray:
    """Per-output-channel int8 rounding of ``w`` with the input channels' code steps folded in
    (the exporter's ``_weight_codes`` on ``w * in_step``), returned in real units."""
    in_axis = 1 - out_axis
    shape = [1] * w.ndim
    shape[in_axis] = -1
    s = np.asarray(in_step, dtype=np.float64).reshape(shape)
    folded = w * s
    return weights.fake_quantize(folded, "channel", "uniform", out_axis=out_axis) / s


def gdn_inputs(model) -> list[str]:
    """The tensors that a convolution writes and a GDN reads (``g_a.0``, ``g_s.0``, ...)."""
    keys = []
    for name in ("g_a", "g_s"):
        groups = integer_layers(getattr(model, name))
        keys += [f"{name}.{i}" for i in range(len(groups) - 1) if is_gdn(groups[i + 1][0])]
    return keys


def _run(seq, x, quants: dict | None, prefix: str, store=None):
    groups = integer_layers(seq)
    for i, group in enumerate(groups):
        for module in group:
            x = module(x)
        if i < len(groups) - 1:
            key = f"{prefix}.{i}"
            if store is not None:
                store.see(key, x)
            if quants:
                x = quants[key](x)
    return x


def snap_scale(scale: torch.Tensor) -> torch.Tensor:
    step = math.log(SCALE_MAX / SCALE_MIN) / (SCALE_LEVELS - 1)
    index = torch.round((torch.log(scale) - math.log(SCALE_MIN)) / step).clamp(0, SCALE_LEVELS - 1)
    return SCALE_MIN * torch.exp(index * step)


def refuse_z_steps(model) -> None:
    """The integer engine codes ``z`` with one step; a model with learned steps per level
    (``--z-steps`` in training) has no integer form yet."""
    if getattr(model, "z_steps", False):
        raise ValueError("the model has learned steps of z per level (--z-steps), which the "
                         "integer engine and the model format do not have")


class SimulatedModel(nn.Module):
    def __init__(self, model, quants: dict | None = None, tables: bool = False) -> None:
        super().__init__()
        refuse_z_steps(model)
        self.model, self.quants, self.tables = model, quants, tables
        self.levels = model.levels

    @torch.no_grad()
    def forward(self, x, level, store=None):
        m, q = self.model, self.quants
        y = _run(m.g_a, x, q, "g_a", store)
        if store is not None:
            store.see("ha_in", y)
        y_in = q["ha_in"](y) if q else y
        z_hat = torch.round(_run(m.h_a, y_in, q, "h_a", store))
        z_lik = m.z_prior.likelihood(z_hat)
        mean, log_scale = _run(m.h_s, z_hat, q, "h_s", store).chunk(2, dim=1)
        gain = m.gains(level.to(x.dtype))[:, :, None, None]
        if hasattr(m, "entropy_y"):  # channel-conditional: slice by slice, quantized alike
            out = m.entropy_y(y, gain, mean, log_scale, SimulatedPoints(q, self.tables, store))
            if store is not None:
                store.see("cc.ctx", out["y_hat"])
            x_hat = _run(m.g_s, out["y_hat"], q, "g_s", store)
            return {"x_hat": x_hat, "likelihoods": {"y": out["y"], "z": z_lik}}
        y_g, mean_g, scale_g = y * gain, mean * gain, torch.exp(log_scale) * gain
        if self.tables:
            f = 2.0**MEAN_BITS
            y_g, mean_g = torch.round(y_g * f) / f, torch.round(mean_g * f) / f
            scale_g = snap_scale(scale_g.clamp(min=SCALE_MIN))
        if self.tables:  # the engine's symbols: halves of the fixed point toward the mean
            d = y_g - mean_g
            y_rec = torch.sign(d) * torch.ceil(torch.abs(d) - 0.5) + mean_g
        else:
            y_rec = torch.round(y_g - mean_g) + mean_g
        y_lik = gaussian_likelihood(y_rec, mean_g, scale_g)
        x_hat = _run(m.g_s, y_rec / gain, q, "g_s", store)
        return {"x_hat": x_hat, "likelihoods": {"y": y_lik, "z": z_lik}}


def fixed_point(x: torch.Tensor) -> torch.Tensor:
    """``x`` on the engine's fixed-point grid of ``MEAN_BITS`` fractional bits."""
    f = 2.0**MEAN_BITS
    return torch.round(x * f) / f


def quantize_lrp(r: torch.Tensor) -> torch.Tensor:
    """The residual network's output as the engine's 8-bit code on ``[-LRP_RANGE,
    LRP_RANGE]`` (``tanh`` is flat beyond it), rounded straight through."""
    step = LRP_RANGE / 127.0
    q = torch.round(r.clamp(-LRP_RANGE, LRP_RANGE) / step) * step
    return r + (q - r).detach()


class SimulatedPoints:
    """The channel-conditional model's quantization points (``train.slices.FloatPoints``)
    as the integer engine has them: 8-bit activations from ``quants`` (None: float), and with
    ``tables`` the coder's fixed point, scale table and symbol rounding."""

    def __init__(self, quants: dict | None, tables: bool, store=None) -> None:
        self.quants, self.tables, self.store = quants, tables, store

    def act(self, name, x, part=None):
        if name == "cc.hyper" and self.store is not None:
            self.store.see(name, x)
        if not self.quants:
            return x
        q = self.quants[name]
        # A quantizer left out (``benchmarks/quant.py``'s ablation) is any other callable.
        if part is not None and isinstance(q, activations.ActQuant):
            q = activations.ActQuant(q.range[part], q.power[part], q.offset[part], q.bits)
        return q(x)

    def run(self, seq, x, prefix):
        return _run(seq, x, self.quants, prefix, self.store)

    def lrp(self, r):
        return quantize_lrp(r) if self.quants else r

    def residual(self, t):
        return fixed_point(t) if self.tables else t

    def code(self, y_g, mean_g, scale_g, train):
        if not self.tables:
            y_rec = torch.round(y_g - mean_g) + mean_g
            return y_rec, y_rec, mean_g, scale_g
        y_g, mean_g = fixed_point(y_g), fixed_point(mean_g)
        scale_g = snap_scale(scale_g.clamp(min=SCALE_MIN))
        d = y_g - mean_g  # the engine's symbols: halves of the fixed point toward the mean
        y_rec = torch.sign(d) * torch.ceil(torch.abs(d) - 0.5) + mean_g
        return y_rec, y_rec, mean_g, scale_g


def collect(model, images, levels=None) -> activations.SampleStore:
    """Samples of every 8-bit activation of ``model`` over ``images`` and quality levels."""
    store = activations.SampleStore()
    sim = SimulatedModel(model)
    levels = range(model.levels) if levels is None else levels
    for image in images:
        x = to_tensor(image)
        for level in levels:
            sim(x, torch.tensor([float(level)]), store)
    return store


def fit_quants(store, method: str, per_channel: bool, mean_removed: bool = False) -> dict:
    """One fitted quantizer per activation; mean removal applies to ``ha_in`` (the analysis
    transform's output, DESIGN section 4 step 4)."""
    quants = {}
    for name in store.samples:
        samples, amax, mean = store.stats(name)
        quants[name] = activations.fit(samples, amax, method, per_channel,
                                       mean_removed and name == "ha_in", mean)
    return quants


def build(model, variant: Variant, calibration_images) -> SimulatedModel:
    """The simulated model of one study row."""
    quants = None
    if variant.acts is not None:
        # Ranges are fitted with the weights quantized plainly: folding needs the ranges.
        source = model if variant.weights is None else quantize_weights(
            model, *variant.weights, clip=variant.clip)
        store = collect(source, calibration_images)
        quants = fit_quants(store, variant.acts, variant.per_channel, variant.mean_removed)
    if variant.weights is not None:
        fold = quants if variant.fold and quants is not None else None
        model = quantize_weights(model, *variant.weights, clip=variant.clip, quants=fold)
    return SimulatedModel(model, quants, variant.tables)


def tensor_summary(quants: dict) -> dict:
    """How the multiplexer spread codebooks over channels, per activation tensor."""
    out = {}
    for name, q in quants.items():
        powers, counts = np.unique(q.power, return_counts=True)
        out[name] = {f"p={p:g}": int(c) for p, c in zip(powers, counts)}
    return out
