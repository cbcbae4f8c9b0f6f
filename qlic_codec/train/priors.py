"""Entropy models in their training form: likelihoods of noisy latents, rate in bits.

``FactorizedPrior`` is the non-parametric density of Balle et al. 2018 (arXiv:1802.01436,
appendix 6.1) used for the hyper-latent ``z``; ``gaussian_likelihood`` is the conditional
model of ``y`` given the hyper-decoder's mean and scale.
"""

import math

import torch
from torch import nn
import torch.nn.functional as F

LIKELIHOOD_BOUND = 1e-9
SCALE_BOUND = 0.11


class FactorizedPrior(nn.Module):
    """A learned, per-channel, univariate cumulative density convolved with a unit box.

    Args:
        channels: number of channels of ``z``.
        filters: widths of the hidden layers of the per-channel density network.
        init_scale: rough initial spread of the density.
    """

    def __init__(self, channels: int, filters=(3, 3, 3), init_scale: float = 10.0) -> None:
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cdf(self, values: torch.Tensor) -> torch.Tensor:
        """Logit of the cumulative density; ``values`` has shape (C, 1, n)."""
        logits = values
        for i, matrix in enumerate(self.matrices):
            logits = torch.matmul(F.softplus(matrix), logits) + self.biases[i]
            if i < len(self.factors):
                logits = logits + torch.tanh(self.factors[i]) * torch.tanh(logits)
        return logits

    def likelihood(self, z: torch.Tensor, step: torch.Tensor | None = None) -> torch.Tensor:
        """Probability mass of the unit interval around each element of ``z`` (N, C, H, W).

        With ``step`` (broadcastable to ``z``), ``z`` counts steps: the mass of
        ``[(z - 1/2) * step, (z + 1/2) * step]``, the interval of the symbol ``z`` when the
        value is quantized with that step."""
        channels = z.shape[1]

        def flat(t):
            return t.permute(1, 0, 2, 3).reshape(channels, 1, -1).float()

        values = flat(z)
        if step is None:
            lower = self.logits_cdf(values - 0.5)
            upper = self.logits_cdf(values + 0.5)
        else:
            step = flat(step.expand_as(z))
            lower = self.logits_cdf((values - 0.5) * step)
            upper = self.logits_cdf((values + 0.5) * step)
        # Evaluate on the side of the median where the sigmoid is not saturated.
        sign = -torch.sign(lower + upper).detach()
        lik = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        lik = lik.reshape(channels, z.shape[0], z.shape[2], z.shape[3]).permute(1, 0, 2, 3)
        return torch.clamp(lik, min=LIKELIHOOD_BOUND)

    @torch.no_grad()
    def pmf_table(self, tail_mass: float = 1e-9, max_half_width: int = 1024):
        """Per-channel probability of every integer in a support that holds all but the tails.

        Returns:
            (pmfs, offsets, tails): list of float64 arrays, int offsets (value of the first
            entry), and the probability mass outside each support.
        """
        channels = self.matrices[0].shape[0]
        grid = torch.arange(-max_half_width, max_half_width + 1, dtype=torch.float64)
        values = grid.float().expand(channels, 1, -1)
        cdf = torch.sigmoid(self.logits_cdf(values - 0.5)).double()[:, 0]
        cdf_hi = torch.sigmoid(self.logits_cdf(values + 0.5)).double()[:, 0]
        pmfs, offsets, tails = [], [], []
        for c in range(channels):
            inside = torch.nonzero(
                (cdf_hi[c] > tail_mass / 2) & (cdf[c] < 1 - tail_mass / 2)
            ).flatten()
            lo, hi = int(inside.min()), int(inside.max())
            pmf = (cdf_hi[c, lo : hi + 1] - cdf[c, lo : hi + 1]).clamp(min=0).numpy()
            tail = float(max(cdf[c, lo] + 1 - cdf_hi[c, hi], 0.0))
            pmfs.append(pmf)
            offsets.append(int(grid[lo]))
            tails.append(tail)
        return pmfs, offsets, tails


def gaussian_likelihood(y: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mass of the unit interval around ``y`` under N(mean, scale), bounded below."""
    scale = torch.clamp(scale.float(), min=SCALE_BOUND)
    centred = torch.abs(y.float() - mean.float())
    # Use the lower tail, where the normal CDF is not rounded to 1.
    upper = torch.special.ndtr((0.5 - centred) / scale)
    lower = torch.special.ndtr((-0.5 - centred) / scale)
    return torch.clamp(upper - lower, min=LIKELIHOOD_BOUND)
