"""Activation quantizers of the study (DESIGN section 4, steps 3 and 4).

An 8-bit activation is ``code -> level[code] * range + offset``: a codebook of 255 normalised
levels in [-1, 1], a range, and an offset (the channel mean when the quantization is
mean-removed, else zero). Ranges and codebooks are fitted on calibration samples:

- ``max``: uniform levels, range = largest magnitude (per tensor or per channel);
- ``mse``: uniform levels, the range (a fraction of the largest magnitude) with the smallest
  squared error on the samples, clipping included;
- ``mux``: a multiplexer over several companded codebooks (``|u| ** p`` on a uniform ``u``,
  finer near zero for larger ``p``) and ranges: per channel, the pair with the smallest
  squared error, so each channel's values fill its code range as fully as possible.
"""

from dataclasses import dataclass

import numpy as np
import torch

CODES = 255
POWERS = (1.0, 1.5, 2.0, 3.0)
FRACTIONS = tuple(np.linspace(0.3, 1.0, 29))
# The multiplexer's codebooks reach the calibrated maximum or slightly less: clipping harder
# was measured to ruin photos unlike the calibration set (2.6 dB lost on one).
MUX_FRACTIONS = (0.85, 1.0)
FIT_SAMPLES = 4096
METHODS = ("max", "mse", "mux")


def codebook(power: float) -> np.ndarray:
    u = np.linspace(-1.0, 1.0, CODES)
    return np.sign(u) * np.abs(u) ** power


def code_max(bits: int) -> int:
    """Largest code of a symmetric ``bits``-bit activation: 127 for 8 bits, 2047 for 12."""
    return 2 ** (bits - 1) - 1


def nearest_level(u, power: float, xp=np, bits: int = 8):
    """The codebook level nearest to each normalised value (numpy or torch arrays).

    The levels are ``(k / half) ** power`` for ``k = 0..half`` and their negatives, with
    ``half = code_max(bits)`` (127 for the engine's 8-bit codes), so the two candidates
    are found by inverting the power instead of searching the table.
    """
    half = code_max(bits)
    if power == 1.0:
        return xp.clip(xp.round(u * half), -half, half) / half
    a = xp.clip(xp.abs(u), 0.0, 1.0)
    k = xp.floor(a ** (1.0 / power) * half)
    lo = (k / half) ** power
    hi = (xp.clip(k + 1, 0, half) / half) ** power
    return xp.sign(u) * xp.where(a - lo <= hi - a, lo, hi)


@dataclass
class ActQuant:
    """Fitted quantizer of one activation tensor (per channel; a per-tensor fit repeats)."""

    range: np.ndarray  # (C,)
    power: np.ndarray  # (C,) codebook exponent, 1 = uniform
    offset: np.ndarray  # (C,)
    # Code width: 8, or 12 where the engine takes wider codes (what a GDN reads or writes,
    # the context codes of a channel-conditional model); 16 only in simulation, to measure
    # what wider codes for one tensor would recover.
    bits: int = 8

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        r = torch.as_tensor(self.range, dtype=x.dtype)[None, :, None, None]
        o = torch.as_tensor(self.offset, dtype=x.dtype)[None, :, None, None]
        u = (x - o) / r
        out = nearest_level(u, 1.0, torch, self.bits)
        for p in np.unique(self.power[self.power != 1.0]):
            mask = torch.as_tensor(self.power == p)[None, :, None, None]
            out = torch.where(mask, nearest_level(u, float(p), torch, self.bits), out)
        return out * r + o


def _sq_error(samples: np.ndarray, rng: np.ndarray, power: float) -> np.ndarray:
    u = samples / rng[:, None]
    return ((nearest_level(u, power) - u) ** 2 * rng[:, None] ** 2).sum(axis=1)


def fit(samples: np.ndarray, amax: np.ndarray, method: str, per_channel: bool,
        mean_removed: bool = False, means: np.ndarray | None = None) -> ActQuant:
    """Fit a quantizer to ``samples`` (C, S) with true per-channel maxima ``amax`` (C,).

    With ``mean_removed``, ``means`` (C,) are subtracted first (and the maxima of the centred
    values are taken from the samples, as the true extremes are not known around the mean).
    """
    if method not in METHODS:
        raise ValueError(f"unknown activation method {method!r}")
    C = samples.shape[0]
    if samples.shape[1] > FIT_SAMPLES:  # enough for a range; keeps the search fast
        samples = samples[:, :: -(-samples.shape[1] // FIT_SAMPLES)]
    offset = np.zeros(C)
    if mean_removed:
        offset = np.asarray(means, dtype=np.float64)
        samples = samples - offset[:, None]
        amax = np.abs(samples).max(axis=1)
    if not per_channel:
        samples = np.broadcast_to(samples.reshape(1, -1), (1, samples.size))
        amax = np.array([amax.max()])
    amax = np.maximum(amax, 1e-6)
    powers = (1.0,) if method != "mux" else POWERS
    fractions = {"max": (1.0,), "mux": MUX_FRACTIONS, "mse": FRACTIONS}[method]
    best_err = np.full(amax.shape, np.inf)
    best_rng, best_pow = amax.copy(), np.ones_like(amax)
    for p in powers:
        for f in fractions:
            rng = amax * f
            err = _sq_error(samples, rng, p)
            better = err < best_err
            best_err[better], best_rng[better], best_pow[better] = err[better], rng[better], p
    if not per_channel:
        best_rng, best_pow = np.repeat(best_rng, C), np.repeat(best_pow, C)
    return ActQuant(best_rng, best_pow, offset)


class SampleStore:
    """Per-channel maxima, means and a bounded random subsample of each activation tensor."""

    def __init__(self, per_call: int = 256, seed: int = 0) -> None:
        self.per_call = per_call
        self.rng = np.random.default_rng(seed)
        self.samples: dict[str, list[np.ndarray]] = {}
        self.amax: dict[str, np.ndarray] = {}
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}

    def see(self, name: str, x: torch.Tensor) -> None:
        v = x.detach().double().permute(1, 0, 2, 3).reshape(x.shape[1], -1).numpy()
        take = self.rng.choice(v.shape[1], size=min(self.per_call, v.shape[1]), replace=False)
        self.samples.setdefault(name, []).append(v[:, take])
        amax = np.abs(v).max(axis=1)
        self.amax[name] = np.maximum(self.amax.get(name, amax), amax)
        self.sums[name] = self.sums.get(name, 0) + v.sum(axis=1)
        self.counts[name] = self.counts.get(name, 0) + v.shape[1]

    def stats(self, name: str):
        """(samples (C, S), amax (C,), mean (C,)) of one tensor."""
        return (np.concatenate(self.samples[name], axis=1), self.amax[name],
                self.sums[name] / self.counts[name])
