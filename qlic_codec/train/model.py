"""The float model: a mean-scale hyperprior with gain units for variable rate.

Minnen, Balle, Toderici 2018, "Joint Autoregressive and Hierarchical Priors for Learned Image
Compression" (arXiv:1809.02736), without the autoregressive context model so that decoding
stays parallel; gain units from Cui et al. 2021, "Asymmetric Gained Deep Image Compression
With Continuous Rate Adaptation" (arXiv:2003.02012)::

            g_a          gain[q]                 h_a
      x ---------> y ----------> y_g            y ----> z --Q--> z_hat --[factorized]
                                  |                                 |
                                  Q (round)              h_s        v
                                  |                (mean, log_scale) * gain[q]
                                  v                                 |
                                y_g_hat  --[Gaussian(mean_g, scale_g)]
                                  |
                          / gain[q] --> y_hat --g_s--> x_hat

The hyper-analysis sees the un-gained ``y`` and the hyper-synthesis predicts un-gained mean
and log-scale, so one hyperprior serves every quality level; the per-level gain multiplies
``y``, the mean and the scale, and the integer engine folds it into per-channel fixed-point
multipliers. Symbols are ``round(y_g - mean_g)`` and the reconstruction is
``symbol + mean_g``, so the zero-mean entropy tables fit the symbols (the integer engine
carries the mean in fixed point with a few fractional bits).
"""

import numpy as np
import torch
from torch import nn

from .layers import SimplifiedGDN, conv, deconv, round_ste
from .priors import FactorizedPrior, gaussian_likelihood, SCALE_BOUND

# Trained rate-distortion trade-offs, one per quality level (1-based in the product).
# MSE: log-spaced from 0.0004 (about 0.1 bpp on photos) to 0.18 (about 1.7 bpp), ratio 2.39.
MSE_LAMBDAS = (0.0004, 0.00096, 0.0023, 0.0055, 0.0131, 0.0315, 0.0754, 0.1800)
MSSSIM_LAMBDAS = (2.40, 4.58, 8.73, 16.64, 31.73, 60.50, 115.37, 220.00)
LEAKY_SLOPE = 0.01


class MeanScaleHyperprior(nn.Module):
    """Variable-rate mean-scale hyperprior.

    Args:
        N: channels of the hidden layers.
        M: channels of the latent ``y``.
        levels: number of trained gain vectors (quality levels).
    """

    def __init__(self, N: int = 128, M: int = 192, levels: int = 8,
                 z_steps: bool = False) -> None:
        super().__init__()
        self.N, self.M, self.levels = N, M, levels
        self.g_a = nn.Sequential(
            conv(3, N), SimplifiedGDN(N),
            conv(N, N), SimplifiedGDN(N),
            conv(N, N), SimplifiedGDN(N),
            conv(N, M),
        )
        self.g_s = nn.Sequential(
            deconv(M, N), SimplifiedGDN(N, inverse=True),
            deconv(N, N), SimplifiedGDN(N, inverse=True),
            deconv(N, N), SimplifiedGDN(N, inverse=True),
            deconv(N, 3),
        )
        self.h_a = nn.Sequential(
            conv(M, N, 3, 1), nn.LeakyReLU(LEAKY_SLOPE),
            conv(N, N), nn.LeakyReLU(LEAKY_SLOPE),
            conv(N, N),
        )
        self.h_s = nn.Sequential(
            deconv(N, M), nn.LeakyReLU(LEAKY_SLOPE),
            deconv(M, M * 3 // 2), nn.LeakyReLU(LEAKY_SLOPE),
            conv(M * 3 // 2, M * 2, 3, 1),
        )
        self.z_prior = FactorizedPrior(N)
        # Log-gains, spread at init so that low levels start at a coarser effective step.
        init = torch.linspace(-1.0, 1.0, levels)[:, None].repeat(1, M)
        self.log_gain = nn.Parameter(init)
        # Per-level, per-channel quantization steps of ``z`` (log): ``z`` does not depend on
        # the level, so without them every level pays the same bits for it, a fifth of the
        # rate at the lowest level. They start at 1 (the model without them).
        self.z_steps = bool(z_steps)
        if self.z_steps:
            self.log_z_step = nn.Parameter(torch.zeros(levels, N))

    def _per_level(self, table: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Rows of a per-level table at (fractional) 0-based levels, interpolated linearly."""
        level = level.clamp(0, self.levels - 1)
        lo = level.floor().long().clamp(max=self.levels - 2)
        frac = (level - lo.to(level.dtype))[:, None]
        return (1 - frac) * table[lo] + frac * table[lo + 1]

    def gains(self, level: torch.Tensor) -> torch.Tensor:
        """Per-channel gains for (fractional) 0-based levels: geometric interpolation."""
        return torch.exp(self._per_level(self.log_gain, level))

    def z_step(self, level: torch.Tensor) -> torch.Tensor | None:
        """Quantization steps of ``z`` at (fractional) levels, (B, N, 1, 1); None without them."""
        if not self.z_steps:
            return None
        return torch.exp(self._per_level(self.log_z_step, level))[:, :, None, None]

    def hyper(self, y: torch.Tensor, train: bool, level: torch.Tensor | None = None):
        z = self.h_a(y).float()
        step = None if level is None else self.z_step(level)
        if step is None:
            z_hat = round_ste(z)
            z_noisy = z + torch.empty_like(z).uniform_(-0.5, 0.5) if train else z_hat
            z_lik = self.z_prior.likelihood(z_noisy)
        else:
            # The symbol is round(z / step) and the decoder's z is symbol * step; its
            # probability is the prior's mass over the symbol's interval of z.
            scaled = z / step
            symbols = round_ste(scaled)
            noisy = scaled + torch.empty_like(scaled).uniform_(-0.5, 0.5) if train else symbols
            z_lik = self.z_prior.likelihood(noisy, step)
            z_hat = symbols * step
        params = self.h_s(z_hat.to(y.dtype)).float()
        mean, log_scale = params.chunk(2, dim=1)
        return z_hat, z_lik, mean, log_scale

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> dict:
        """Run the model on a batch.

        Args:
            x: images in [0, 1], shape (B, 3, H, W), H and W multiples of 64.
            level: 0-based quality level of each image, shape (B,), may be fractional.

        Returns:
            dict with ``x_hat`` (B, 3, H, W) and ``likelihoods`` of ``y`` and ``z``.
        """
        y = self.g_a(x)
        gain = self.gains(level)[:, :, None, None]
        _, z_lik, mean, log_scale = self.hyper(y, self.training, level)
        y_g = y.float() * gain
        mean_g = mean * gain
        scale_g = torch.exp(log_scale) * gain
        if self.training:
            y_noisy = y_g + torch.empty_like(y_g).uniform_(-0.5, 0.5)
        else:
            y_noisy = torch.round(y_g - mean_g) + mean_g
        y_lik = gaussian_likelihood(y_noisy, mean_g, scale_g)
        y_hat = (round_ste(y_g - mean_g) + mean_g) / gain
        x_hat = self.g_s(y_hat.to(x.dtype))
        return {"x_hat": x_hat, "likelihoods": {"y": y_lik, "z": z_lik}}


def retarget_log_gains(log_gain: torch.Tensor, old_lambdas, new_lambdas) -> torch.Tensor:
    """Log-gain vectors for a new quality table, from those trained for ``old_lambdas``.

    Each new lambda is placed on the old levels' axis by its log (piecewise linear; beyond the
    ends, the end segment's slope), and its log-gains are interpolated (or extrapolated) there
    the same way. Log-gains move roughly linearly with log-lambda, so a shifted table starts
    close to what it will learn and fine-tuning only has to refine it.
    """
    old = np.log(np.asarray(old_lambdas, dtype=np.float64))
    new = np.log(np.asarray(new_lambdas, dtype=np.float64))
    if len(old) < 2 or np.any(np.diff(old) <= 0) or np.any(np.diff(new) <= 0):
        raise ValueError("quality tables need at least two strictly increasing lambdas")
    if log_gain.shape[0] != len(old):
        raise ValueError(f"{log_gain.shape[0]} gain vectors for {len(old)} lambdas")
    segment = np.clip(np.searchsorted(old, new) - 1, 0, len(old) - 2)
    position = segment + (new - old[segment]) / (old[segment + 1] - old[segment])
    lo = torch.as_tensor(segment)
    frac = torch.as_tensor(position - segment, dtype=log_gain.dtype)[:, None]
    return (1 - frac) * log_gain[lo] + frac * log_gain[lo + 1]


__all__ = ["MeanScaleHyperprior", "MSE_LAMBDAS", "retarget_log_gains", "MSSSIM_LAMBDAS", "LEAKY_SLOPE", "SCALE_BOUND"]
