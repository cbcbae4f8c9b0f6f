"""The decoder's half of the network (FORMAT.md 3.6-3.9): h_s, the heads, g_s."""

import numpy as np

from . import layers
from .modelfile import FormatError


def run_transform(model, name, x):
    """Runs transform ``name`` on integer codes; returns the last layer's accumulators."""
    return run_layers(model, model.manifest["transforms"][name], x)


def run_layers(model, descriptions, x):
    """Runs a list of layer descriptions (a transform, or a slice network of FORMAT.md 3.11)
    on integer codes; returns the last layer's accumulators."""
    m, a = model.manifest, model.arrays
    leaky = tuple(m["leaky"])
    for i, d in enumerate(descriptions):
        last = i == len(descriptions) - 1
        op, n = d["op"], d["name"]
        if op == "conv":
            acc = layers.conv(x, a[f"{n}.weight"], a[f"{n}.bias"], d.get("stride", 2),
                              d.get("pad_value", 0))
        elif op == "deconv":
            acc = layers.deconv(x, a[f"{n}.weight"], a[f"{n}.bias"])
        elif op == "igdn":
            x = layers.igdn(x, a[f"{n}.gamma"], a[f"{n}.beta"], a[f"{n}.mult"], a[f"{n}.shift"],
                            d.get("out_max", 127))
            continue
        elif op == "gdn":
            x = layers.gdn(x, a[f"{n}.gamma"], a[f"{n}.beta"], a[f"{n}.mult"], d["shift"],
                           d.get("out_max", 127))
            continue
        else:
            raise FormatError(f"unknown op {op!r}")
        out = d.get("out")
        if out is None:
            if not last:
                raise FormatError(f"layer {n!r} has no 'out' but is not last")
            return acc
        x = layers.requantize(acc, a[f"{n}.mult"], a[f"{n}.shift"], out["lo"], out["hi"],
                              leaky if out.get("leaky", False) else None)
    raise FormatError("a layer list does not end with a convolution")


def head(model, key, acc, lo, hi, level=None):
    """A head (FORMAT.md 3.6): requantization by ``head.<key>.mult/shift`` (row ``level``
    for the per-level heads), no LeakyReLU."""
    mult, shift = model.arrays[f"head.{key}.mult"], model.arrays[f"head.{key}.shift"]
    if level is not None:
        mult, shift = mult[level], shift[level]
    return layers.requantize(acc, mult, shift, lo, hi)


def hyper_accumulators(model, z):
    """z (h, w, N) -> the accumulators of h_s (4h, 4w, 2M) (FORMAT.md 3.7 step 1)."""
    cz = model.manifest["clamps"]["z"]
    return run_transform(model, "h_s", np.clip(z, -cz, cz))


def hyper_synthesis(model, acc, level):
    """h_s accumulators -> (mean_g, scale index), each (h, w, M) (FORMAT.md 3.7 steps 2-3)."""
    m = model.manifest
    cy, M = m["clamps"]["y"], m["M"]
    mean_g = head(model, "mean", acc[..., :M], -cy, cy, level)
    a = model.arrays
    index = scale_index(model, [(acc[..., M:], a["head.scale.mult"])],
                        a["head.scale.offset"][level])
    return mean_g, index


def scale_index(model, terms, offset):
    """``clamp(round_shift(sum of acc * mult[c] over the terms + offset[c], scale_shift), 0,
    y_levels - 1)``: one term (FORMAT.md 3.7 step 3), or two for a channel-conditional
    slice, whose network corrects the log-scale (3.11)."""
    m = model.manifest
    v = offset.astype(np.int64)
    for acc, mult in terms:
        v = v + acc.astype(np.int64) * mult.astype(np.int64)
    return np.clip(layers.round_shift(v, m["scale_shift"]), 0, m["y_levels"] - 1)


def reconstruct(model, symbols, mean_g):
    """``y_g_hat = clamp(symbol * 2**mean_bits + mean_g, +-clamps.y)`` (FORMAT.md 3.8)."""
    cy = model.manifest["clamps"]["y"]
    return np.clip((symbols.astype(np.int64) << model.manifest["mean_bits"]) + mean_g, -cy, cy)


def synthesis(model, y_g_hat, level):
    """y_g_hat (h, w, M) -> uint8 pixels (16h, 16w, 3) (FORMAT.md 3.9)."""
    cys = model.manifest["clamps"]["ys"]
    codes = head(model, "ys", y_g_hat, -cys, cys, level)
    acc = run_transform(model, "g_s", codes)
    return head(model, "pixel", acc, 0, 255).astype(np.uint8)
