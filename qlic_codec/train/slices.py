"""A channel-conditional entropy model for ``y``: the hyperprior's mean and scale, refined
slice by slice from the slices decoded before, with latent residual prediction.

Minnen and Singh 2020, "Channel-wise autoregressive entropy models for learned image
compression" (arXiv:2007.08739), made light enough for a CPU decoder:

- The hyper-synthesis still predicts a mean and a log-scale for every channel. For slice
  ``i`` a small network reads that prediction for the slice's own channels and the decoded
  (un-gained) slices ``0..i-1``, and adds a correction to both. Its last layer starts at
  zero, so a model initialised from a plain hyperprior starts exactly where it was.
- Latent residual prediction (LRP): a second small network reads the same inputs plus the
  slice's own decoded values and predicts the rounding error, ``0.5 * tanh(.)`` in the
  gained domain (where the error lies in [-0.5, 0.5] at every quality level), so it is
  divided by the gain before it is added to the un-gained latent.
- Optionally a checkerboard inside each slice (He et al. 2021, arXiv:2103.15306): the anchor
  half of a slice is decoded first, and the other half's parameters also see the anchors.

All networks run at the latent resolution (1/256 of the pixels): a 3x3 convolution, then two
1x1 convolutions, with leaky ReLUs, so that the integer engine runs them with the kernels it
already has and only ``tanh`` needs a look-up table.
"""

import torch
from torch import nn

from .layers import conv, round_ste
from .model import LEAKY_SLOPE, MeanScaleHyperprior
from .priors import gaussian_likelihood


def even_slices(M: int, count: int) -> tuple:
    if M % count:
        raise ValueError(f"{M} channels do not split into {count} even slices")
    return (M // count,) * count


def _subnet(cin: int, hidden: int, cout: int) -> nn.Sequential:
    net = nn.Sequential(
        conv(cin, hidden, 3, 1), nn.LeakyReLU(LEAKY_SLOPE),
        conv(hidden, hidden, 1, 1), nn.LeakyReLU(LEAKY_SLOPE),
        conv(hidden, cout, 1, 1),
    )
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


def checkerboard_anchor(height: int, width: int, device) -> torch.Tensor:
    """1 where ``(row + column)`` is even (decoded first), shape (1, 1, H, W)."""
    r = torch.arange(height, device=device)[:, None]
    c = torch.arange(width, device=device)[None, :]
    return ((r + c) % 2 == 0).float()[None, None]


class SliceContext(nn.Module):
    """The parameter and residual networks of one slice.

    Args:
        size: channels in this slice.
        before: channels of the slices decoded before it.
        hidden: width of the hidden layers.
        checkerboard: also condition the non-anchor half on the slice's anchors.
    """

    def __init__(self, size: int, before: int, hidden: int, checkerboard: bool) -> None:
        super().__init__()
        self.size, self.before, self.checkerboard = size, before, checkerboard
        support = 2 * size + before
        self.params = _subnet(support + (size if checkerboard else 0), hidden, 2 * size)
        self.lrp = _subnet(support + size, hidden, size)


class ChannelConditionalHyperprior(MeanScaleHyperprior):
    """The mean-scale hyperprior of ``MeanScaleHyperprior`` with a channel-conditional model
    of ``y``; the transforms and the hyperprior are the same modules, so a plain hyperprior's
    weights initialise it.

    Args:
        slices: channels per slice, summing to ``M`` (even, or uneven as in ELIC).
        hidden: width of the slice networks.
        checkerboard: a checkerboard split inside each slice.
    """

    def __init__(self, N: int = 128, M: int = 192, levels: int = 8, slices=(48, 48, 48, 48),
                 hidden: int = 64, checkerboard: bool = False, z_steps: bool = False) -> None:
        super().__init__(N, M, levels, z_steps)
        slices = tuple(int(s) for s in slices)
        if sum(slices) != M or min(slices) < 1:
            raise ValueError(f"slices {slices} do not add up to M={M}")
        self.slices, self.hidden, self.checkerboard = slices, int(hidden), bool(checkerboard)
        self.contexts = nn.ModuleList(
            SliceContext(s, sum(slices[:i]), hidden, checkerboard) for i, s in enumerate(slices))
        # Quantization points (``FloatPoints``); the quantization-aware fine-tune sets its own.
        self.points = None

    def _slice_params(self, ctx, support, yg, g, hyper_mean):
        """Mean and log-scale corrections for one slice, each (B, size, H, W)."""
        if not ctx.checkerboard:
            return ctx.params(support).chunk(2, dim=1)
        first = ctx.params(torch.cat([support, torch.zeros_like(yg)], 1))
        # The anchors' values as the decoder knows them when it reaches the other half.
        mask = checkerboard_anchor(*yg.shape[2:], yg.device).to(first.dtype)
        mean_g = (hyper_mean + first[:, : ctx.size]) * g
        anchors = (round_ste(yg - mean_g) + mean_g) / g * mask
        second = ctx.params(torch.cat([support, anchors.to(support.dtype)], 1))
        return (first * mask + second * (1 - mask)).chunk(2, dim=1)

    def entropy_y(self, y: torch.Tensor, gain: torch.Tensor, hyper_mean: torch.Tensor,
                  hyper_log_scale: torch.Tensor, points=None) -> dict:
        """Code ``y`` slice by slice: the decoded (un-gained) latent, the likelihoods of the
        gained latent, and the gained means and scales.

        ``points`` is where the integer engine quantizes (``FloatPoints`` when None, the float
        model); ``quantize.simulate`` and the quantization-aware fine-tune pass their own.
        """
        p = FLOAT_POINTS if points is None else points
        hyper = p.act("cc.hyper", torch.cat([hyper_mean, hyper_log_scale], 1))
        hq_mean, hq_log_scale = hyper.chunk(2, dim=1)
        y_g = y.float() * gain
        decoded, likelihoods, means, scales = [], [], [], []
        start = 0
        for i, ctx in enumerate(self.contexts):
            part = slice(start, start + ctx.size)
            start += ctx.size
            g, yg = gain[:, part], y_g[:, part]
            support = torch.cat([hq_mean[:, part], hq_log_scale[:, part], *decoded], 1)
            if ctx.checkerboard:
                d_mean, d_log_scale = self._slice_params(ctx, support, yg, g, hyper_mean[:, part])
            else:
                d_mean, d_log_scale = p.run(ctx.params, support, f"cc.{i}.p").float().chunk(2, 1)
            mean_g = (hyper_mean[:, part] + d_mean) * g
            scale_g = torch.exp(hyper_log_scale[:, part] + d_log_scale) * g
            y_noisy, y_rec, mean_g, scale_g = p.code(yg, mean_g, scale_g, self.training)
            likelihoods.append(gaussian_likelihood(y_noisy, mean_g, scale_g))
            means.append(mean_g)
            scales.append(scale_g)
            y_hat = p.act("cc.ctx", y_rec / g, part)
            r = p.run(ctx.lrp, torch.cat([support, y_hat.to(support.dtype)], 1), f"cc.{i}.r")
            residual = 0.5 * torch.tanh(p.lrp(r.float()))
            decoded.append(p.act("cc.ctx", y_rec / g + p.residual(residual) / g, part))
        return {"y_hat": torch.cat(decoded, 1), "y": torch.cat(likelihoods, 1),
                "mean": torch.cat(means, 1), "scale": torch.cat(scales, 1)}

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> dict:
        y = self.g_a(x)
        gain = self.gains(level)[:, :, None, None]
        _, z_lik, hyper_mean, hyper_log_scale = self.hyper(y, self.training, level)
        out = self.entropy_y(y, gain, hyper_mean, hyper_log_scale, self.points)
        x_hat = self.g_s(out["y_hat"].to(x.dtype))
        return {"x_hat": x_hat, "likelihoods": {"y": out["y"], "z": z_lik},
                "mean": out["mean"], "scale": out["scale"]}


class FloatPoints:
    """The places where the integer engine quantizes, as the float model sees them: nowhere.

    - ``act(name, x, part)``: an 8-bit activation (``cc.hyper``: the hyper-synthesis' mean and
      log-scale; ``cc.ctx``: a decoded un-gained slice, ``part`` its channels);
    - ``run(seq, x, prefix)``: a slice network, whose hidden layers are 8-bit in the engine;
    - ``lrp(r)``: the residual network's output before ``tanh`` (8 bits on a fixed range);
    - ``residual(t)``: ``0.5 * tanh`` of it, in the gained domain (fixed point);
    - ``code(y_g, mean_g, scale_g, train)``: what the likelihood sees (noisy in training) and
      the reconstruction, with the mean and scale as the coder uses them.
    """

    def act(self, name, x, part=None):
        return x

    def run(self, seq, x, prefix):
        return seq(x)

    def lrp(self, r):
        return r

    def residual(self, t):
        return t

    def code(self, y_g, mean_g, scale_g, train):
        y_rec = round_ste(y_g - mean_g) + mean_g
        if train:
            return y_g + torch.empty_like(y_g).uniform_(-0.5, 0.5), y_rec, mean_g, scale_g
        return y_rec.detach(), y_rec, mean_g, scale_g


FLOAT_POINTS = FloatPoints()


__all__ = ["ChannelConditionalHyperprior", "FloatPoints", "SliceContext", "even_slices",
           "checkerboard_anchor"]
