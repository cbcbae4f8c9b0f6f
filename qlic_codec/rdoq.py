"""Rate-distortion optimised rounding of the latents: the encoder's choice of symbols.

Rounding each latent to its nearest symbol gives the least error in the latent, not the best
file. A symbol one step nearer its mean is more probable under its table, and can save more
bits than the error it adds is worth. For every latent whose nearest symbol ``k`` (``r`` the
latent minus its mean, in symbol units) is not 0, the encoder weighs the step toward the mean,
``k' = k - sign(k)``:

    bits saved    dR = info(t, k) - info(t, k')          (-log2 of each symbol's probability
                                                           in the latent's table t)
    error added   dD = (r - k')**2 - (r - k)**2 = 1 - 2 * (|k| - |r|)

and codes ``k'`` when ``dR > LAMBDA * dD``. Both symbols must lie inside the table (an escape
is never chosen nor left). The rule is greedy: it does not follow what a changed symbol does
to the tables of the slices after it, which the encoder computes from the symbols it chose,
as the decoder will.

The rule runs as one compiled parallel pass (``engine.roundkernel``); ``Rounding.reference``
states it as numpy passes, for the tests. Everything is in integers, so the same image gives
the same file on every machine and thread count: ``info`` in units of ``2**-16`` bit
(``engine.rangedecoder.information_units``, the decoder's own count), the latents in the
fixed point of ``mean_bits``, ``LAMBDA`` in bits per squared latent unit. Decoders are
unaffected: they read whatever symbols the stream holds.

``LAMBDA`` per metric was chosen on training photos (``benchmarks/README.md``, "Rounding the
latents").
"""

from __future__ import annotations

import numpy as np

from .entropy import coder
from .entropy.tables import CdfTables

# Bits per squared latent unit, by the metric a model was trained for; None rounds to the
# nearest symbols (``benchmarks/rd.py --rounding nearest`` measures what the rule gains).
LAMBDA = {"mse": 28, "msssim": 48}
_INFO_BITS = 16
# Latents weighed at a time by the numpy reference: its int64 temporaries (about 90 bytes a
# latent) stay a few MiB on any image.
_PIECE = 1 << 16


class Rounding:
    """The rounding rule of one model: ``rounding(symbols, y_g, mean_g, index)`` moves the
    symbols worth it one step toward their means, in place, and returns them."""

    def __init__(self, tables: CdfTables, mean_bits: int, metric: str) -> None:
        # The decoder's own layout: its sizes, offsets and each symbol's information.
        self.table = coder.decoder_tables(tables)
        self.mean_bits = int(mean_bits)
        lam = LAMBDA.get(metric, LAMBDA["mse"])
        self.lam = None if lam is None else lam << _INFO_BITS

    def __call__(self, symbols: np.ndarray, y_g: np.ndarray, mean_g: np.ndarray,
                 index: np.ndarray) -> np.ndarray:
        flat = self._flat(symbols, y_g, mean_g, index)
        if self.lam is not None:
            # Imported here: importing rdoq (through api) must not load Numba, which
            # `qlic info` never needs (tests/test_cli_codec.py).
            from .engine import roundkernel
            roundkernel.round_toward_means(*flat, self.table, self.mean_bits, self.lam)
        return symbols

    def reference(self, symbols: np.ndarray, y_g: np.ndarray, mean_g: np.ndarray,
                  index: np.ndarray) -> np.ndarray:
        """The same rule as plain numpy passes, a piece of the latents at a time: what the
        compiled kernel (``engine.roundkernel``) is tested against."""
        flat = self._flat(symbols, y_g, mean_g, index)
        if self.lam is not None:
            if flat[3].size and (flat[3].min() < 0 or flat[3].max() >= self.table.sizes.size):
                raise ValueError("a table index is outside the model's tables")
            for a in range(0, flat[0].size, _PIECE):
                self._piece(*(f[a: a + _PIECE] for f in flat))
        return symbols

    @staticmethod
    def _flat(symbols, y_g, mean_g, index):
        if not symbols.flags.c_contiguous:
            raise ValueError("symbols must be C-contiguous: they are changed in place")
        flat = [np.ascontiguousarray(a).reshape(-1) for a in (symbols, y_g, mean_g, index)]
        if any(f.size != flat[0].size for f in flat):
            raise ValueError("symbols, latents, means and indexes differ in size")
        return flat

    def _piece(self, k, y_g, mean_g, index):
        tab, mb = self.table, self.mean_bits
        t = index.astype(np.intp)
        k64 = k.astype(np.int64)
        step = np.sign(k64)
        s = k64 - tab.offsets[t]
        s2 = s - step
        last = tab.sizes[t] - 1  # the escape symbol
        ok = (step != 0) & (s >= 0) & (s < last) & (s2 >= 0) & (s2 < last)
        s = np.where(ok, s, 0)
        s2 = np.where(ok, s2, 0)
        saved = tab.info[t, s] - tab.info[t, s2]
        # 2**mean_bits * dD: |k| * 2**mb - |y_g - mean_g| is the rounding error, within half
        # a symbol.
        error = (np.abs(k64) << mb) - np.abs(y_g.astype(np.int64) - mean_g)
        added = (np.int64(1) << mb) - 2 * error
        take = ok & ((saved << mb) > self.lam * added)
        k[take] -= step[take].astype(k.dtype)
