"""Distortion metrics in PyTorch: PSNR and MS-SSIM (Wang, Simoncelli, Bovik 2003)."""

import torch
import torch.nn.functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    channels = x.shape[1]
    wx = window.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    wy = window.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    return F.conv2d(F.conv2d(x, wx, groups=channels), wy, groups=channels)


def _ssim_parts(x, y, window, data_range):
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    sxx = _blur(x * x, window) - mu_x**2
    syy = _blur(y * y, window) - mu_y**2
    sxy = _blur(x * y, window) - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    ssim = ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)) * cs
    return ssim.flatten(2).mean(-1), cs.flatten(2).mean(-1)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """MS-SSIM per image of two (B, C, H, W) batches, averaged over channels.

    The same definition as ``pytorch_msssim.ms_ssim`` (valid-window Gaussian filter, average
    pooling between the five scales with its zero padding of odd sides, negative contrast terms
    clamped at zero); it agrees with pytorch_msssim 1.0.0 to float rounding (about 1e-7) at
    even and odd sizes. Images must be at least 161 pixels on each side for the five scales.
    """
    # Always in float32, even inside a bf16 autocast region: in bf16 the variance terms
    # (blur(x*x) - mu**2) lose most of their digits, contrast terms hit zero, and the gradient of
    # zero to the power 0.0448 is infinite (a bf16 MS-SSIM run went NaN within 50 steps).
    with torch.autocast(x.device.type, enabled=False):
        return _ms_ssim_fp32(x.float(), y.float(), data_range)


def _ms_ssim_fp32(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    window = _gaussian_window(device=x.device)
    levels = len(MS_SSIM_WEIGHTS)
    weights = torch.tensor(MS_SSIM_WEIGHTS, device=x.device)
    values = []
    for i in range(levels):
        ssim, cs = _ssim_parts(x, y, window, data_range)
        if i < levels - 1:
            values.append(torch.relu(cs))
            # As pytorch_msssim: an odd side is zero-padded by one on both ends, the zeros
            # counted in the average (ceil(n / 2) outputs).
            pad = (x.shape[2] % 2, x.shape[3] % 2)
            x = F.avg_pool2d(x, 2, padding=pad)
            y = F.avg_pool2d(y, 2, padding=pad)
    values.append(torch.relu(ssim))
    stack = torch.stack(values, dim=0)  # (levels, B, C)
    return torch.prod(stack ** weights[:, None, None], dim=0).mean(dim=1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image of two (B, C, H, W) batches."""
    mse = ((x.float() - y.float()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp(min=1e-12))
