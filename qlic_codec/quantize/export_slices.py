"""The integer ``cc`` section (``engine.slices``) of a channel-conditional float model.

Quantized as the rest of the model: int8 weights per output channel with the input codes'
steps folded in, 8-bit activations with per-channel ranges (``cc.hyper``: the hyper mean and
log-scale; ``cc.ctx``: the decoded un-gained latent, 8-bit or, when the fine-tune trained it
so, 12-bit; the hidden layers of every slice network), fixed-point heads, and ``tanh`` as a
look-up table over the residual network's 8-bit output on ``[-LRP_RANGE, LRP_RANGE]``.
"""

import numpy as np

from .simulate import LRP_RANGE, MEAN_BITS, input_step, slice_inputs


def build_networks(b, model) -> tuple[list, dict]:
    """The slice networks as engine layers (``b``: the exporter's ``_Builder``, which stores
    their arrays) and their output units: ``({"params", "lrp"} per slice, units)``."""
    if getattr(model, "checkerboard", False):
        raise ValueError("the integer engine has no checkerboard inside slices")
    if b.act_max("cc.hyper") != 127:
        raise ValueError("the hyper codes that the slice networks read are 8-bit")
    networks, units = [], {}
    for i, ctx in enumerate(model.contexts):
        pair = {}
        for kind, seq, lrp in (("params", ctx.params, False), ("lrp", ctx.lrp, True)):
            prefix = f"cc.{i}.{'r' if lrp else 'p'}"  # the names ``simulate.networks`` gives
            pieces = slice_inputs(model, i, lrp)
            in_scale = input_step(b.quants, pieces)
            in_max = max(b.act_max(name) for name, _ in pieces)
            layers = b.transform(prefix, seq, in_scale, in_max)
            pair[kind] = layers
            units[prefix] = b.acc_scale[layers[-1]["name"]]
        networks.append(pair)
    return networks, units


def scale_slopes(model, units, step: float) -> list[np.ndarray]:
    """Per slice: index units per accumulator unit of the log-scale correction."""
    return [units[f"cc.{i}.p"][n:] / step for i, n in enumerate(model.slices)]


def build_heads(b, model, networks, units, gains, unit_p, slopes, scale_shift,
                mult_shift) -> tuple[dict, dict]:
    """The ``cc`` manifest section and its head arrays, for the quality levels of ``gains``
    ((levels, M): one row per level the model file holds)."""
    M = model.M
    fraction = 2.0**MEAN_BITS
    arrays = {}

    def put(name, pair):
        arrays[f"{name}.mult"], arrays[f"{name}.shift"] = pair

    hyper_step = input_step(b.quants, "cc.hyper")
    ctx_step = input_step(b.quants, "cc.ctx")
    put("cc.hyper", mult_shift(unit_p / hyper_step))
    put("cc.ctx", mult_shift(1.0 / (gains * fraction * ctx_step[None, :])))
    start = 0
    for i, n in enumerate(model.slices):
        part = slice(start, start + n)
        start += n
        unit_d = units[f"cc.{i}.p"]
        put(f"cc.{i}.mean", mult_shift(unit_d[None, :n] * gains[:, part] * fraction))
        mult = np.round(slopes[i] * 2.0**scale_shift)
        if np.abs(mult).max(initial=0) > 2**30:
            raise ValueError(f"slice {i}: log-scale correction too coarse for the scale index")
        arrays[f"cc.{i}.scale.mult"] = mult.astype(np.int64)
        put(f"cc.{i}.lrp", mult_shift(units[f"cc.{i}.r"] * 127.0 / LRP_RANGE))
    codes = np.arange(-127, 128) * (LRP_RANGE / 127.0)
    arrays["cc.lrp.lut"] = np.round(0.5 * np.tanh(codes) * fraction).astype(np.int32)
    section = {"slices": [int(n) for n in model.slices], "networks": networks}
    ctx_max = b.act_max("cc.ctx")
    if ctx_max != 127:  # 8-bit context codes keep the manifest (and id) of model format 2
        section["ctx_max"] = int(ctx_max)
    return section, arrays


def slope_limit(slopes) -> float:
    """The largest slope, for choosing the shared ``scale_shift``."""
    return max((float(np.abs(s).max(initial=0.0)) for s in slopes), default=0.0)


__all__ = ["build_networks", "build_heads", "scale_slopes", "slope_limit"]
