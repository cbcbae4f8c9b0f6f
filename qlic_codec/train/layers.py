"""Differentiable building blocks of the float model: simplified GDN and rounding."""

import torch
from torch import nn
import torch.nn.functional as F


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


class _LowerBoundSquare(nn.Module):
    """Keep a parameter non-negative as ``max(p, bound)**2 - pedestal`` (Balle et al. 2016).

    Squaring makes small values easy to reach; the pedestal keeps the gradient well defined
    near zero.
    """

    pedestal = 2.0**-18

    def __init__(self, minimum: float = 0.0) -> None:
        super().__init__()
        self.bound = (minimum + self.pedestal) ** 0.5

    def init(self, value: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.clamp(value + self.pedestal, min=self.pedestal))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.clamp(raw, min=self.bound) ** 2 - self.pedestal


class SimplifiedGDN(nn.Module):
    """Simplified GDN ``x / (beta + gamma @ |x|)`` or its inverse ``x * (beta + gamma @ |x|)``.

    Johnston et al. 2019, "Computationally efficient neural image compression"
    (arXiv:1912.08771). No square and no square root: the integer engine computes the
    normaliser as a 1x1 convolution of ``|x|`` followed by one fixed-point divide or multiply.
    """

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self._beta_reparam = _LowerBoundSquare(1e-6)
        self._gamma_reparam = _LowerBoundSquare(0.0)
        self.beta_raw = nn.Parameter(self._beta_reparam.init(torch.ones(channels)))
        self.gamma_raw = nn.Parameter(self._gamma_reparam.init(0.1 * torch.eye(channels)))

    @property
    def beta(self) -> torch.Tensor:
        return self._beta_reparam(self.beta_raw)

    @property
    def gamma(self) -> torch.Tensor:
        return self._gamma_reparam(self.gamma_raw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gamma = self.gamma.to(x.dtype)[:, :, None, None]
        norm = F.conv2d(torch.abs(x), gamma, self.beta.to(x.dtype))
        return x * norm if self.inverse else x / norm


def conv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2)


def deconv(cin: int, cout: int, kernel: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    # padding k//2 with output_padding s-1 makes the output exactly s times the input size,
    # which the integer engine reproduces as four sub-pixel phase convolutions.
    return nn.ConvTranspose2d(
        cin, cout, kernel, stride=stride, padding=kernel // 2, output_padding=stride - 1
    )
