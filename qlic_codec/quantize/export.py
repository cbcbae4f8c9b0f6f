"""Turn a float model into an integer model file (8-bit weights and activations).

Post-training quantization with the choices of the study (``benchmarks/quant.py``,
DESIGN section 4):

- weights: symmetric, per output channel, int8 in [-127, 127];
- activations: symmetric int8 in [-127, 127] with a range per channel: the ranges learned by
  the quantization-aware fine-tune when the checkpoint carries them (``finetune
  --range-lr``), else the largest magnitude seen on 32 calibration crops (512 px) over every
  quality level; the
  channel's scale folds into the next layer's weights or GDN gamma and into this layer's
  per-channel multiplier, so per-channel ranges cost the engine nothing;
- mean-removed quantization of ``y`` where it enters the hyper-analysis: the per-channel
  calibration mean is subtracted in the accumulator domain and added back through the first
  hyper-analysis layer's bias;
- a convolution's output that a GDN reads, or a GDN's output, may be 12-bit (int16 codes up
  to +-2047) when the fine-tune trained it so (``finetune --wide-gdn-inputs --wide-bits 12``,
  ``--wide-tensors g_a.3 g_a.5``); the convolution after such a GDN reads 16-bit inputs;
- GDN gamma: uint8 per row, beta in the units of the row's normaliser;
- the latents ``y``/``mean`` are fixed point with ``MEAN_BITS`` fractional bits after the
  gain, ``z`` is an integer; ``y_hat`` enters the synthesis as int16 codes whose range is the
  largest the overflow proof allows.

Usage::

    python -m qlic_codec.quantize.export models/qlic-mse-float.pt -o models/qlic-mse.qlicm
"""

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..engine import fixedpoint, reference
from ..engine.graph import IntegerNetwork, ModelSpec
from ..engine.reference import WIDE_CODE_MAX
from ..entropy import tables as entropy_tables
from .. import modelfile
from ..train.checkpoint import load_float_model
from ..train.data import default_data_root
from ..train.model import LEAKY_SLOPE
from . import export_slices, simulate
from .activations import code_max
from .simulate import MEAN_BITS, SCALE_LEVELS, SCALE_MAX, SCALE_MIN
from .calibrate import (ACT_METHOD, CALIBRATION_IMAGES, calibrate, calibration_images,
                        integer_layers, is_gdn)
from .finetune import ranges_from_meta

ACT_MAX = 127
LEAKY_SHIFT = 16
GDN_SHIFT = 16
Y_CLAMP = 16383 << MEAN_BITS
# Sub-levels per unit of quality: -q 4.5 and the --target-size search pick a row of every
# per-level head. 16 steps put neighbouring sub-levels about 2% apart in rate, finer than the
# 3% a size target must land within; 113 rows of heads add about 0.7 MB to a model of 8 MB.
QUALITY_STEPS = 16


def _engine_layout(module) -> np.ndarray:
    """A convolution's weight as (Cout, K, K, Cin) float64, the engine's layout."""
    w = module.weight.detach().double()
    w = w.permute(1, 2, 3, 0) if isinstance(module, nn.ConvTranspose2d) else w.permute(0, 2, 3, 1)
    return w.numpy()


def _weight_codes(w: np.ndarray, min_scale=None):
    """int8 codes and per-output-channel scales of an engine-layout weight.

    ``min_scale`` (per channel) coarsens channels whose weights are so small that their bias
    would not fit in int32 accumulator units (dead channels of a trained model).
    """
    scale = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127.0
    if min_scale is not None:
        scale = np.maximum(scale, min_scale)
    scale[scale == 0] = 1.0
    codes = np.clip(np.round(w / scale[:, None, None, None]), -127, 127).astype(np.int8)
    return codes, scale


def _mult_shift(real, max_mult=2**31 - 1):
    mult, shift = fixedpoint.multiplier_from_real(real, max_mult)
    return mult.astype(np.int32), shift.astype(np.int32)


class _Builder:
    """Layer by layer integer parameters. Activation scales are per channel: a channel's scale
    folds into the next layer's weights (input channel) or gamma (GDN column), and into this
    layer's per-channel requantization multiplier, so the engine needs nothing extra."""

    def __init__(self, model, quants):
        self.model, self.quants = model, quants
        self.arrays: dict[str, np.ndarray] = {}
        self.acc_scale: dict[str, np.ndarray] = {}  # real value of one accumulator unit

    def act_scale(self, name):
        """Per-channel real value of one code of an activation."""
        q = self.quants[name]
        if np.any(q.power != 1.0):
            raise ValueError(f"activation '{name}': only uniform codebooks can be exported")
        return simulate.code_step(q.range, q.bits)

    def act_max(self, name):
        """Largest code of an activation: 127, or 2047 for the 12-bit inputs of a GDN."""
        return code_max(self.quants[name].bits)

    def conv(self, name, module, leaky, in_scale, in_max, out_scale, pad_value=0, extra_bias=None,
             out_max=ACT_MAX):
        transposed = isinstance(module, nn.ConvTranspose2d)
        w = _engine_layout(module)
        w = w * np.broadcast_to(np.asarray(in_scale, np.float64), (w.shape[3],))
        bias_real = module.bias.detach().double().numpy()
        # Keep every bias within 2**29 accumulator units, so it can never wrap in int32.
        codes, unit = _weight_codes(w, np.abs(bias_real) / 2.0**29)
        bias = np.round(bias_real / unit).astype(np.int64)
        if extra_bias is not None:
            bias += extra_bias(codes)
        self.arrays[f"{name}.weight"] = codes
        self.arrays[f"{name}.bias"] = bias.astype(np.int32)
        layer = {"name": name, "op": "deconv" if transposed else "conv",
                 "stride": int(module.stride[0]), "pad_value": pad_value, "in_max": int(in_max)}
        if out_scale is None:
            layer["out"] = None
            self.acc_scale[name] = unit
        else:
            mult, shift = _mult_shift(unit / out_scale)
            self.arrays[f"{name}.mult"], self.arrays[f"{name}.shift"] = mult, shift
            layer["out"] = {"lo": -out_max, "hi": out_max, "leaky": bool(leaky)}
        return layer

    def gdn(self, name, module, in_scale, out_scale, in_max=ACT_MAX, out_max=ACT_MAX):
        gamma = module.gamma.detach().double().numpy() * in_scale[None, :]
        beta = module.beta.detach().double().numpy()
        # One unit of row c's integer normaliser: the finest that keeps gamma in uint8 and
        # beta within the engine's 2**24. A row whose gamma is tiny next to its beta (a channel
        # that barely normalises) would otherwise have its beta clipped, which once cost 89
        # codes on one output channel and 0.2 dB at the top quality.
        unit = np.maximum(gamma.max(axis=1) / 255.0, beta / 2.0**24)
        unit[unit == 0] = 1.0
        self.arrays[f"{name}.gamma"] = np.clip(np.round(gamma / unit[:, None]), 0, 255).astype(
            np.uint8)
        self.arrays[f"{name}.beta"] = np.clip(np.round(beta / unit), 1, 2**24).astype(np.int32)
        if module.inverse:
            norm_max = 2**24 + 255 * in_max * gamma.shape[0]
            limit = min(2**31 - 1, fixedpoint.INT64_PRODUCT_LIMIT // (in_max * norm_max))
            mult, shift = _mult_shift(in_scale * unit / out_scale, limit)
            self.arrays[f"{name}.mult"], self.arrays[f"{name}.shift"] = mult, shift
            return _gdn_layer({"name": name, "op": "igdn"}, out_max)
        mult = np.round(2.0**GDN_SHIFT * in_scale / (unit * out_scale)).astype(np.int64)
        if int(mult.max(initial=0)) * 2 * in_max > fixedpoint.INT64_PRODUCT_LIMIT:
            raise ValueError(f"layer '{name}': GDN multiplier too large for its input codes")
        self.arrays[f"{name}.mult"] = mult
        return _gdn_layer({"name": name, "op": "gdn", "shift": GDN_SHIFT}, out_max)

    def transform(self, prefix, seq, in_scale, in_max, first_pad=0, extra_bias=None):
        layers = []
        groups = integer_layers(seq)
        for i, group in enumerate(groups):
            name = f"{prefix}.{i}"
            module = group[0]
            last = i == len(groups) - 1
            out_scale = None if last else self.act_scale(name)
            out_max = None if last else self.act_max(name)
            # Wide codes: what a GDN reads or writes (a convolution reads a GDN's output as
            # 16-bit integers), up to 12 bits.
            if out_max is not None and out_max > ACT_MAX and not (
                    out_max <= WIDE_CODE_MAX and (is_gdn(module) or is_gdn(groups[i + 1][0]))):
                raise ValueError(f"activation '{name}': only what a GDN reads or writes may be "
                                 f"wider than 8 bits, up to 12")
            if is_gdn(module):
                layers.append(self.gdn(name, module, in_scale, out_scale, in_max,
                                       out_max or ACT_MAX))
            else:
                layers.append(self.conv(name, module, len(group) > 1, in_scale, in_max,
                                        out_scale, first_pad if i == 0 else 0,
                                        extra_bias if i == 0 else None, out_max or ACT_MAX))
            in_scale, in_max = out_scale, out_max
        return layers


def _gdn_layer(layer: dict, out_max: int) -> dict:
    # Files with 8-bit GDN outputs keep the layout that older engines read.
    return layer if out_max == ACT_MAX else {**layer, "out_max": int(out_max)}


def _int16_input_range(module, scale_for) -> int:
    """Largest int16 input range of a first layer whose accumulators provably fit in int32.

    ``scale_for(clamp)`` is the real value of one input code for that range; the bias in
    accumulator units grows as the code gets finer, so the range is searched downwards.
    """
    codes, w_scale = _weight_codes(_engine_layout(module))
    l1 = (fixedpoint.deconv_weight_l1 if isinstance(module, nn.ConvTranspose2d)
          else fixedpoint.conv_weight_l1)(codes)
    clamp = min(32767, fixedpoint.max_input_for(l1, 0, 0.9))
    bias = module.bias.detach().double().numpy()
    while clamp > 1:
        bias_int = np.abs(np.round(bias / (scale_for(clamp) * w_scale)))
        bound = fixedpoint.accumulator_bound(clamp, l1, bias_int.astype(np.int64))
        if max(bound) < 0.98 * fixedpoint.INT32_LIMIT:
            return int(clamp)
        clamp //= 2
    raise ValueError("no int16 input range satisfies the overflow bound")


def quality_grid(levels: int, steps: int) -> torch.Tensor:
    """0-based fractional levels of the sub-level grid: 0, 1/steps, ..., levels - 1.

    Every ``steps``-th entry is an integer level, whose gains (and so heads and bytes) are
    those of a model exported without a grid: ``(k * steps) / steps`` is exactly ``k``, and
    the gains are computed per entry (checked against the bundled models' checkpoints: the
    rows of the integer levels are bit for bit those of the export without a grid).
    """
    return torch.arange((levels - 1) * steps + 1, dtype=torch.float64) / steps


def build(model, amax: dict, quants: dict, card: dict,
          scale_max: float = SCALE_MAX,
          quality_steps: int = QUALITY_STEPS) -> tuple[dict, dict]:
    """Manifest and arrays of the integer model (see ``engine.graph``).

    ``amax``: ranges of the wide latents (``calibrate``); ``quants``: the fitted quantizer of
    every 8-bit activation (``simulate.fit_quants``); ``scale_max`` bounds the largest entropy
    table (small test models use a smaller one). ``quality_steps``: sub-levels per unit of
    quality; every per-level head gets a row per sub-level, with the float model's gains
    interpolated geometrically between the trained levels (``MeanScaleHyperprior.gains``).
    """
    simulate.refuse_z_steps(model)
    b = _Builder(model, quants)
    M, N = model.M, model.N
    if not 1 <= quality_steps or (model.levels - 1) * quality_steps + 1 > 255:
        raise ValueError(f"{model.levels} levels of {quality_steps} steps make more than the "
                         "255 sub-levels a .qlic header can name")
    gains = model.gains(quality_grid(model.levels, quality_steps)).detach().double().numpy()
    L = gains.shape[0]  # (L, M): one row per sub-level

    # g_a: codes are pixel - 128 at scale 1/255; the +128 folds into the bias, and padding
    # with code -128 is padding with a zero pixel, as in the float model.
    g_a = b.transform("g_a", model.g_a, np.full(3, 1 / 255.0), 128, first_pad=-128,
                      extra_bias=lambda codes: 128 * codes.astype(np.int64).reshape(
                          codes.shape[0], -1).sum(axis=1))
    unit_y = b.acc_scale[f"g_a.{len(g_a) - 1}"]
    heads = {}
    fraction = 2.0**MEAN_BITS
    heads["y"] = _mult_shift(unit_y[None, :] * gains * fraction)
    # The hyper-analysis reads y as 8-bit codes of ``y - offset``: mean-removed quantization
    # for channels whose mean is far from zero. The offset is subtracted from the
    # accumulators and added back through the first h_a layer's bias.
    y_scale = b.act_scale("ha_in")
    heads["ha_in"] = _mult_shift(unit_y / y_scale)
    y_offset = np.round(quants["ha_in"].offset / unit_y)
    if np.abs(y_offset).max() >= 2**30:
        raise ValueError("mean of y too large for its accumulator units")
    ha_in_offset = y_offset.astype(np.int32)
    mean_codes = y_offset * unit_y / y_scale  # the removed mean, in input codes

    h_a = b.transform("h_a", model.h_a, y_scale, ACT_MAX, extra_bias=lambda codes: np.round(
        (codes.astype(np.float64) * mean_codes).reshape(codes.shape[0], -1).sum(axis=1)
    ).astype(np.int64))
    heads["z"] = _mult_shift(b.acc_scale[f"h_a.{len(h_a) - 1}"])

    # h_s reads z as int16 integers (scale 1), clamped to what its overflow bound allows.
    z_clamp = _int16_input_range(integer_layers(model.h_s)[0][0], lambda clamp: 1.0)
    h_s = b.transform("h_s", model.h_s, np.ones(N), z_clamp)
    unit_p = b.acc_scale[f"h_s.{len(h_s) - 1}"]
    heads["mean"] = _mult_shift(unit_p[None, :M] * gains * fraction)
    step = math.log(scale_max / SCALE_MIN) / (SCALE_LEVELS - 1)
    slope = unit_p[M:] / step
    cc = getattr(model, "contexts", None)
    if cc:
        cc_networks, cc_units = export_slices.build_networks(b, model)
        cc_slopes = export_slices.scale_slopes(model, cc_units, step)
    # One shift for the hyper-synthesis' log-scale and the slices' corrections to it.
    steepest = max(slope.max(), export_slices.slope_limit(cc_slopes) if cc else 0.0)
    scale_shift = int(min(30, 29 - math.floor(math.log2(steepest))))
    offset = (np.log(gains) - math.log(SCALE_MIN)) / step

    # g_s reads y_hat = y_g / gain as int16 codes, as fine as the overflow bound allows.
    def y_hat_scale(clamp):
        return max(amax["y_hat"], 1e-4) / clamp

    ys_clamp = _int16_input_range(integer_layers(model.g_s)[0][0], y_hat_scale)
    ys_scale = y_hat_scale(ys_clamp)
    g_s = b.transform("g_s", model.g_s, np.full(M, ys_scale), ys_clamp)
    heads["ys"] = _mult_shift(1.0 / (gains * ys_scale * fraction))
    heads["pixel"] = _mult_shift(b.acc_scale[f"g_s.{len(g_s) - 1}"] * 255.0)

    cc_section = None
    if cc:
        cc_section, cc_arrays = export_slices.build_heads(
            b, model, cc_networks, cc_units, gains, unit_p, cc_slopes, scale_shift, _mult_shift)
    arrays = dict(b.arrays)
    if cc:
        arrays.update(cc_arrays)
    for key, (mult, shift) in heads.items():
        arrays[f"head.{key}.mult"], arrays[f"head.{key}.shift"] = mult, shift
    arrays["head.ha_in.offset"] = ha_in_offset
    arrays["head.scale.mult"] = np.round(slope * 2.0**scale_shift).astype(np.int64)
    arrays["head.scale.offset"] = np.round(offset * 2.0**scale_shift).astype(np.int64)

    y_tables = entropy_tables.build_gaussian_tables(
        entropy_tables.gaussian_scale_table(SCALE_MIN, scale_max, SCALE_LEVELS))
    pmfs, offsets, tails = model.z_prior.pmf_table()
    z_tables = entropy_tables.build_factorized_tables(pmfs, offsets, tails)
    for key, t in (("y", y_tables), ("z", z_tables)):
        arrays[f"entropy.{key}.cdf_counts"] = t.cdf_counts
        arrays[f"entropy.{key}.sizes"] = t.sizes
        arrays[f"entropy.{key}.offsets"] = t.offsets

    manifest = {
        "format": "qlic-model", "N": N, "M": M, "levels": L, "quality_steps": quality_steps,
        "metric": card.get("metric", "mse"),
        "leaky": [int(round(LEAKY_SLOPE * 2**LEAKY_SHIFT)), LEAKY_SHIFT],
        "mean_bits": MEAN_BITS,
        "clamps": {"y": Y_CLAMP, "z": int(z_clamp), "ys": int(ys_clamp)},
        "scale_shift": scale_shift, "y_levels": SCALE_LEVELS,
        "scale_table": {"min": SCALE_MIN, "max": scale_max, "levels": SCALE_LEVELS},
        "transforms": {"g_a": g_a, "h_a": h_a, "h_s": h_s, "g_s": g_s},
        "card": card,
    }
    if cc_section is not None:
        manifest["cc"] = cc_section
    return manifest, arrays


def export(model, images, path, card: dict, scale_max: float = SCALE_MAX,
           method: str = ACT_METHOD, mean_removed: bool = True,
           learned: dict | None = None, quality_steps: int = QUALITY_STEPS) -> bytes:
    """Calibrate on ``images``, build and write the model file; returns its id.

    ``method``/``mean_removed``: how the 8-bit activation ranges are fitted (see
    ``activations.fit``); the defaults are the study's choice (benchmarks/quant.py).
    ``learned``: per-tensor quantizers trained by the quantization-aware fine-tune
    (``finetune.ranges_from_meta``), used instead of fitted ones. ``quality_steps``: see
    ``build``.
    """
    amax = calibrate(model, images)
    if learned is not None:
        quants = learned
        card = {**card, "activations": {"method": "learned", "per_channel": True,
                                        "mean_removed_y": bool(np.any(quants["ha_in"].offset))}}
    else:
        quants = simulate.fit_quants(simulate.collect(model, images), method, per_channel=True,
                                     mean_removed=mean_removed)
        card = {**card, "activations": {"method": method, "per_channel": True,
                                        "mean_removed_y": bool(mean_removed)}}
    manifest, arrays = build(model, amax, quants, card, scale_max, quality_steps)
    # The loader's checks (overflow bound of every layer, ranges, shapes) run before the file
    # is written, so an export that would be refused fails here instead.
    IntegerNetwork(ModelSpec(manifest, arrays), kernels=reference)
    return modelfile.write(path, manifest, arrays)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m qlic_codec.quantize.export")
    p.add_argument("checkpoint", help="fp16 float model (models/*.pt)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--data", default=None)
    p.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES)
    p.add_argument("--quality-steps", type=int, default=QUALITY_STEPS,
                   help="sub-levels per unit of quality (fractional -q and --target-size); "
                        "1 gives the integer levels only")
    p.add_argument("--recalibrate", action="store_true",
                   help="fit activation ranges on the calibration crops even when the "
                        "checkpoint carries ranges learned by its fine-tune")
    args = p.parse_args(argv)
    model, meta = load_float_model(args.checkpoint)
    try:
        simulate.refuse_z_steps(model)  # before the calibration's minutes
    except ValueError as exc:
        p.error(str(exc))
    images = calibration_images(args.data or default_data_root(), args.calibration_images)
    ranges = meta.get("quantization_finetune", {}).get("activation_ranges")
    learned = None
    if ranges and not args.recalibrate:
        learned = ranges_from_meta(ranges)
    # The card names the learned ranges instead of carrying thousands of numbers.
    from ..train.card import card_meta
    card = {"source": Path(args.checkpoint).name, **card_meta(meta)}
    try:
        mid = export(model, images, args.output, card, learned=learned,
                     quality_steps=args.quality_steps)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {args.output} (id {mid.hex()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
