"""A wider latent from a trained model: the weights of a model with ``M`` latent channels laid
into a freshly built model with more, so that the wider model starts as the trained one.

What depends on ``M`` (``train.model.MeanScaleHyperprior``): g_a's last layer (its outputs),
g_s's first layer and h_a's first layer (their inputs), h_s's hidden widths (``M`` and
``3M/2``) and its output (means then log-scales, ``2M``), and the gain vectors.

The old channels keep their weights. The new ones must not change what the trained model
computes, yet must be able to learn:
- the layers that read a new channel (g_s's and h_a's first layers, h_s's inner layers) get
  zero weights for it, so the output is the old model's;
- the layers that write a new channel keep the fresh model's random weights, so the new
  latents and hidden channels are not zero and their readers' weights get gradients (with
  both sides at zero the new channels would stay at zero);
- the new latents' predicted means start at 0 and their log-scales at the mean of the old
  channels' biases, and their gains at the mean of the old ones per level.

Only the rate changes at the start: the new latents are coded too, near zero, which costs a
little.
"""

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
    H, H2 = 3 * M // 2, 3 * M2 // 2
    out = {k: v for k, v in weights.items() if k.startswith("contexts.")}
    for name, new in fresh.items():
        if name.startswith("contexts."):
            continue
        old = weights[name]
        if old.shape == new.shape:
            out[name] = old.clone()
            continue
        w = new.clone()
        if name in ("g_a.6.weight", "g_a.6.bias"):  # new latents written: random weights
            w[:M] = old
        elif name == "g_s.0.weight":  # deconv (in=M, out=N): new inputs read nothing
            w.zero_()
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
            w[M2 + M:] = old[M:].mean()
        elif name == "log_gain":  # (levels, M)
            w[:, :M] = old
            w[:, M:] = old.mean(dim=1, keepdim=True)
        else:
            raise ValueError(f"no rule to widen '{name}' from {tuple(old.shape)} to "
                             f"{tuple(new.shape)}")
        out[name] = w
    return out

