"""A wider latent from a trained model: the weights of a model with ``M`` latent channels laid
into a freshly built model with more, so that the wider model starts as the trained one.

What depends on ``M`` (``train.model.MeanScaleHyperprior``): g_a's last layer (its outputs),
g_s's first layer and h_a's first layer (their inputs), h_s's hidden widths (``M`` and
``3M/2``) and its output (means then log-scales, ``2M``), and the gain vectors.

The old channels keep their weights. The new ones must change neither what the trained model
reconstructs nor, much, its rate, yet must be able to learn:
- the new latents are written with g_a's fresh random weights scaled down
  (``NEW_LATENT_GAIN``): they round to their predicted mean, 0, so the synthesis, whose
  fresh random weights read them, reconstructs what the trained model did. Through the
  rounding's straight-through estimate the synthesis' weights pass gradients to g_a's new
  rows from the first step (with them at zero, nothing would reach g_a), and the synthesis'
  own new weights learn once the new latents leave 0;
- their gains start at the mean of the old ones per level, and their predicted scales at the
  smallest the likelihood uses (``priors.SCALE_BOUND``) at every level, so their zeros cost
  almost nothing to code;
- the other layers that read a new channel (h_a's first layer, h_s's inner layers) get zero
  weights for it, and those that write one keep their fresh random weights.

Training's noise makes the new latents cost a little until they are used.
"""

import math

from .priors import SCALE_BOUND

# New latents start this much smaller than a fresh layer makes them: inside the rounding to 0
# at the gains a trained model has (log-gains up to about 2.3 for the MSE model at quality 8;
# tests/train/test_widen.py checks e**3).
NEW_LATENT_GAIN = 1 / 64


def latent_channels(weights: dict) -> int:
    """The ``M`` of a model's weights."""
    return int(weights["g_a.6.weight"].shape[0])


def widen(weights: dict, fresh: dict) -> dict:
    """``fresh`` (the state dict of a newly built model with a larger ``M``) with ``weights``
    (a trained model's) laid in as described above. Tensors that do not depend on ``M`` are
    taken from ``weights`` whole. Slice networks (``contexts.*``) pass through as they are:
    they follow the split of ``y``, and the caller decides what to do with them."""
    M, M2 = latent_channels(weights), latent_channels(fresh)
    if M2 < M:
        raise ValueError(f"cannot narrow a model from M={M} to M={M2}")
    H = 3 * M // 2
    # The steps of z (levels x N) do not depend on M; a model without them gets the fresh
    # model's, which change nothing (train.model.MeanScaleHyperprior.z_step).
    own = {k for k in weights if not k.startswith("contexts.")} | (
        {"log_z_step"} & set(fresh))
    if own != {k for k in fresh if not k.startswith("contexts.")}:
        missing = sorted({k for k in fresh if not k.startswith("contexts.")} - own)
        raise ValueError(f"the checkpoint does not fit this model: missing {missing[:4]}, "
                         f"unexpected {sorted(own - set(fresh))[:4]}")
    out = {k: v for k, v in weights.items() if k.startswith("contexts.")}
    for name, new in fresh.items():
        if name.startswith("contexts."):
            continue
        old = weights.get(name, new)
        if old.shape == new.shape:
            out[name] = old.clone()
            continue
        w = new.clone()
        if name in ("g_a.6.weight", "g_a.6.bias"):  # conv (out=M): the new latents, small
            w[M:] *= NEW_LATENT_GAIN
            w[:M] = old
        elif name == "g_s.0.weight":  # deconv (in=M, out=N): reads the new latents, at 0
            w[:M] = old
        elif name == "h_a.0.weight":  # conv (out=N, in=M)
            w.zero_()
            w[:, :M] = old
        elif name == "h_s.0.weight":  # deconv (in=N, out=M): new hidden channels written
            w[:, :M] = old
        elif name == "h_s.0.bias":
            w[:M] = old
        elif name == "h_s.2.weight":  # deconv (in=M, out=3M/2)
            w[M:] = 0
            w[:M, :H] = old
        elif name == "h_s.2.bias":
            w[:H] = old
        elif name == "h_s.4.weight":  # conv (out=2M: means, then log-scales; in=3M/2)
            w.zero_()
            w[:M, :H] = old[:M]
            w[M2:M2 + M, :H] = old[M:]
        elif name == "h_s.4.bias":
            w.zero_()
            w[:M] = old[:M]
            w[M2:M2 + M] = old[M:]
            # The scale is the gain times exp(log-scale): at the largest gain the new
            # latents get, still the smallest scale.
            top_gain = float(weights["log_gain"].mean(dim=1).max())
            w[M2 + M:] = math.log(SCALE_BOUND) - top_gain
        elif name == "log_gain":  # (levels, M)
            w[:, :M] = old
            w[:, M:] = old.mean(dim=1, keepdim=True)
        else:
            raise ValueError(f"no rule to widen '{name}' from {tuple(old.shape)} to "
                             f"{tuple(new.shape)}")
        out[name] = w
    return out
