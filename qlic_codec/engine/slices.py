"""The channel-conditional entropy model of ``y`` in integers (the manifest's ``cc`` section).

The float model is ``train.slices``; ``quantize.export_slices`` makes this section from it.
``y`` is split into slices of channels, coded one after another. For slice ``i`` (channels
``a .. a + n - 1``, ``q`` the quality level)::

    acc_p (h_s accumulators, 2M) --cc.hyper--> int8 hyper codes (mean, log-scale), level-free
    support = [hyper codes of the slice's mean channels, of its log-scale channels,
               ctx codes of slices 0..i-1]          (int8; int16 with wide ctx codes)
    support --params net (3x3, 1x1, 1x1; 8-bit hidden codes)--> acc_d (2n)
        mean_g  = head.mean[q](acc_p) + cc.i.mean[q](acc_d[:n])                  (fixed point)
        index   = round((acc_p_scale * head.scale.mult + acc_d[n:] * cc.i.scale.mult
                         + head.scale.offset[q]) / 2**scale_shift), clamped       (table index)
    symbols  (coded with ``index``'s tables, as one segment of the ``y`` stream)
    y_g_hat = symbol * 2**mean_bits + mean_g
    [support, cc.ctx[q](y_g_hat)] --residual net--> acc_r (n) --cc.i.lrp--> int8 code r
    y_g_dec = y_g_hat + cc.lrp.lut[r + 127]        (0.5 * tanh of the code, fixed point)
    ctx codes of the slice = cc.ctx[q](y_g_dec)          (codes in -ctx_max .. ctx_max)

The context codes are 8-bit (``ctx_max`` 127, int8) or, from model format 3, up to 12-bit
(int16): at high rates the decoded slices carry more than 8 bits that the later slices can
use, and the networks that read them run at 1/256 of the pixels, so the slower int16
multiplies of their first layers cost little.

``y_g_dec`` of all slices is what the synthesis reads (through ``head.ys``). The networks are
ordinary ``conv`` layers of the engine (stride 1, zero padding, requantizing epilogues with
LeakyReLU), so every kernel path runs them.
"""

import numpy as np

from ..errors import ModelFileError
from . import bands
# graph imports this module only inside IntegerNetwork, so it is whole by then.
from .graph import _array, _check_range
from .reference import WIDE_CODE_MAX
from .slicekernels import copy_channels

# A model with more slices than this is refused: each slice is a sequential decoding step.
MAX_SLICES = 64
LUT_SIZE = 255


class SliceModel:
    """The validated ``cc`` section of a model, run by an ``IntegerNetwork``."""

    def __init__(self, net, cc, arrays) -> None:
        self.net = net
        M, L = net.M, net.levels
        try:
            sizes = [int(s) for s in cc["slices"]]
            nets = list(cc["networks"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ModelFileError(f"model 'cc' section is malformed: {exc!r}") from None
        if not 1 <= len(sizes) <= MAX_SLICES or min(sizes) < 1 or sum(sizes) != M:
            raise ModelFileError(f"model 'cc' slices do not split the {M} channels of y")
        if len(nets) != len(sizes):
            raise ModelFileError("model 'cc' section needs one pair of networks per slice")
        self.sizes = sizes
        self.starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self.ctx_max = cc.get("ctx_max", 127)
        if not 127 <= self.ctx_max <= WIDE_CODE_MAX:
            raise ModelFileError(f"model 'cc' ctx_max must be in 127..{WIDE_CODE_MAX}")
        self.ctx_dtype = np.int8 if self.ctx_max == 127 else np.int16
        self.params, self.lrp = [], []
        try:
            for i, d in enumerate(nets):
                self.params.append([net._load_layer(arrays, x) for x in d["params"]])
                self.lrp.append([net._load_layer(arrays, x) for x in d["lrp"]])
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise ModelFileError(f"model 'cc' layer description is malformed: {exc!r}") from None
        for i, (a, n) in enumerate(zip(self.starts, sizes)):
            # Every network reads context codes, except slice 0's parameter network.
            self._check_network(self.params[i], 2 * n + a, 2 * n, self.ctx_max if a else 127)
            self._check_network(self.lrp[i], 3 * n + a, n, self.ctx_max)
        h = {}
        for key, shape in (("hyper", (2 * M,)), ("ctx", (L, M))):
            h[f"{key}.mult"] = _array(arrays, f"cc.{key}.mult", np.int32, shape)
            h[f"{key}.shift"] = _array(arrays, f"cc.{key}.shift", np.int32, shape)
        for i, n in enumerate(sizes):
            for key, shape in (("mean", (L, n)), ("lrp", (n,))):
                h[f"{i}.{key}.mult"] = _array(arrays, f"cc.{i}.{key}.mult", np.int32, shape)
                h[f"{i}.{key}.shift"] = _array(arrays, f"cc.{i}.{key}.shift", np.int32, shape)
            h[f"{i}.scale.mult"] = _array(arrays, f"cc.{i}.scale.mult", np.int64, (n,))
            # Keeps the two-term scale index within int64 (``reference.scale_index_sum``).
            _check_range(f"cc.{i}.scale.mult", h[f"{i}.scale.mult"], -(2**30), 2**30)
        for name, a in h.items():
            if name.endswith(".mult") and a.dtype == np.int32:
                _check_range(f"cc.{name}", a, 0, 2**31 - 1)
            elif name.endswith(".shift"):
                _check_range(f"cc.{name}", a, 1, 62)
        lut = _array(arrays, "cc.lrp.lut", np.int32, (LUT_SIZE,))
        # 0.5 * tanh is within half a symbol: the residual never moves a latent further.
        half = 1 << max(net.mean_bits - 1, 0)
        _check_range("cc.lrp.lut", lut, -half, half)
        h["lut"] = lut.astype(np.int64)
        self.heads = h

    @staticmethod
    def _check_network(layers, cin, cout, in_max):
        """A slice network: codes up to ``in_max`` in, stride-1 convolutions, int8 hidden
        codes, and the last layer's accumulators out."""
        if not layers:
            raise ModelFileError("model 'cc' has an empty slice network")
        channels = cin
        for j, layer in enumerate(layers):
            name = layer["name"]
            if layer["op"] != "conv" or layer["stride"] != 1 or layer["pad_value"] != 0:
                raise ModelFileError(f"layer '{name}': slice networks are stride-1 "
                                     "convolutions with zero padding")
            wcout, _, _, wcin = layer["weight"].shape
            if wcin != channels or layer["in_max"] < (in_max if j == 0 else 127):
                raise ModelFileError(f"layer '{name}' does not fit its input")
            final = j == len(layers) - 1
            if (layer["out"] is None) != final:
                raise ModelFileError(f"layer '{name}': only the last layer of a slice network "
                                     "hands out accumulators")
            if not final and layer["wide"]:
                raise ModelFileError(f"layer '{name}': slice networks have 8-bit codes")
            channels = wcout
        if channels != cout:
            raise ModelFileError(f"slice network ending with '{layers[-1]['name']}' has "
                                 f"{channels} channels, expected {cout}")

    # ---------------------------------------------------------------------------------------

    def start(self, acc_p: np.ndarray, level: int) -> "SliceState":
        """The state of coding ``y`` slice by slice from the hyper-synthesis' accumulators,
        whole (an encoder that tries several levels keeps them)."""
        state = SliceState(self, acc_p.shape[:2], level)
        bands.in_pieces(state.take_rows, _ROW_ELEMENTS)(0, acc_p)
        return state

    def start_from_z(self, z: np.ndarray, level: int) -> "SliceState":
        """The same state from ``z``: h_s runs in bands and hands its accumulators over a
        few rows at a time, so that they never exist whole (6 bytes per pixel)."""
        state = SliceState(self, (4 * z.shape[0], 4 * z.shape[1]), level)
        self.net.hyper_accumulator_rows(z, state.take_rows, _ROW_ELEMENTS)
        return state


# Accumulators turned into a slice state at a time (int32 elements): the int64 arithmetic of
# the heads on them stays a few MiB.
_ROW_ELEMENTS = 1 << 20


class SliceState:
    """One image's slices in coding order: ``parameters(i)`` gives the mean and table index
    of slice ``i`` from what is decoded so far, ``finish(i, y_g_hat)`` adds its residual and
    makes its context codes. Encoder and decoder run the same calls in the same order.

    What h_s predicts is kept per slice (its hyper codes, int8, its hyper mean and its scale
    accumulators, int32: 10 bytes per channel and latent position) and let go when the slice
    is finished, so it shrinks as ``y_g_dec`` fills (4 bytes per channel)."""

    def __init__(self, model: SliceModel, shape: tuple, level: int) -> None:
        self.model, self.level = model, level
        M = model.net.M
        h, w = shape
        # Per slice: [hyper codes of its means and of its log-scales (2n), hyper mean_g (n),
        # scale accumulators (n)], filled by ``take_rows``.
        self.parts = [[np.empty((h, w, 2 * n), np.int8), np.empty((h, w, n), np.int32),
                       np.empty((h, w, n), np.int32)] for n in model.sizes]
        # Not zeroed: every slice writes its channels of both, for every row, before a later
        # slice reads them (``finish``), and the slices cover the M channels. Zeroing them
        # was serial work, about 0.8 ms of a 1920x1080 decode where the memory came from the
        # heap (the command line's allocator policy keeps freed memory there).
        self.ctx = np.empty((h, w, M), model.ctx_dtype)
        self.y_g_dec = np.empty((h, w, M), np.int32)

    def take_rows(self, lo: int, acc: np.ndarray) -> None:
        """h_s's accumulators (rows, w, 2M) of latent rows ``lo ..``: their codes, means and
        scale accumulators go to each slice."""
        model, net, h = self.model, self.model.net, self.model.heads
        mean_mult = net.heads["mean.mult"][self.level]
        mean_shift = net.heads["mean.shift"][self.level]
        acc = np.ascontiguousarray(acc)
        for (codes, mean, scale), a, n in zip(self.parts, model.starts, model.sizes):
            net.k.slice_inputs(acc, a, n, np.ascontiguousarray(mean_mult[a:a + n]),
                               np.ascontiguousarray(mean_shift[a:a + n]), net.clamps["y"],
                               h["hyper.mult"], h["hyper.shift"], codes, mean, scale, lo)

    def _support_rows(self, i, lo, hi, own=None):
        """Rows ``lo .. hi - 1`` of slice ``i``'s support: its hyper codes, then the context
        codes of the slices before it (and ``own``, rows of the slice's own context codes,
        after them), gathered in parallel (``copy_channels``)."""
        a = self.model.starts[i]
        codes = self.parts[i][0][lo:hi]
        if not a and own is None:  # hyper codes alone stay int8, whatever the ctx width
            return codes
        parts = [(codes, codes.shape[2])]
        if a:
            parts.append((self.ctx[lo:hi], a))  # the first ``a`` channels, read in place
        if own is not None:
            parts.append((own, own.shape[2]))
        out = np.empty((hi - lo, codes.shape[1], sum(n for _, n in parts)),
                       np.result_type(*(p for p, _ in parts)))
        d0 = 0
        for part, n in parts:
            copy_channels(part, 0, n, out, 0, d0)
            d0 += n
        return out

    def _run_in_bands(self, layers, channels, in_bytes, read_rows, write_rows):
        """A slice network over all latent rows, in bands whose activations fit the engine's
        budget (``bands``): its activations never exist whole on a large image, and a small
        one runs as one band."""
        h, w = self.ctx.shape[:2]
        band = self.model.net.band_height(layers, h, w, channels, in_bytes)
        bands.run(self.model.net._run_layer, layers, h, read_rows,
                  bands.in_pieces(write_rows, _ROW_ELEMENTS), band)

    def parameters(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Slice ``i``'s fixed-point mean (int32) and entropy table index (the network's
        ``index_dtype``, uint8 for up to 256 tables), (h, w, n)."""
        model, net, h = self.model, self.model.net, self.model.heads
        a, n = model.starts[i], model.sizes[i]
        _, hyper_mean_g, acc_scale = self.parts[i]
        cy = net.clamps["y"]
        mean_g = np.empty(acc_scale.shape, np.int32)
        index = np.empty(acc_scale.shape, net.index_dtype)
        scale_mult = np.ascontiguousarray(net.heads["scale.mult"][a:a + n])
        scale_offset = np.ascontiguousarray(net.heads["scale.offset"][self.level, a:a + n])

        mean_mult = np.ascontiguousarray(h[f"{i}.mean.mult"][self.level])
        mean_shift = np.ascontiguousarray(h[f"{i}.mean.shift"][self.level])

        def heads(lo, acc_d):
            rows = slice(lo, lo + len(acc_d))
            net.k.slice_heads(acc_d, mean_mult, mean_shift, hyper_mean_g[rows], cy,
                              acc_scale[rows], scale_mult, h[f"{i}.scale.mult"], scale_offset,
                              net.scale_shift, net.y_levels, mean_g[rows], index[rows])

        self._run_in_bands(model.params[i], 2 * n + a,
                           self.ctx.itemsize if a else 1,
                           lambda lo, hi: self._support_rows(i, lo, hi), heads)
        return mean_g, index

    def finish(self, i: int, y_g_hat: np.ndarray) -> None:
        """Record slice ``i``'s reconstruction ``y_g_hat`` (int32, (h, w, n)): its latent
        residual is added, and its context codes are made for the slices after it. What h_s
        predicted for the slice is let go."""
        model, net, h = self.model, self.model.net, self.model.heads
        a, n = model.starts[i], model.sizes[i]
        part = slice(a, a + n)
        ctx_mult = np.ascontiguousarray(h["ctx.mult"][self.level, part])
        ctx_shift = np.ascontiguousarray(h["ctx.shift"][self.level, part])
        # The context codes of the slice's own reconstruction, which its residual network reads.
        own = net.k.requantize(y_g_hat, ctx_mult, ctx_shift, 0, 0, -model.ctx_max,
                               model.ctx_max).astype(model.ctx_dtype)
        cy = net.clamps["y"]

        def read(lo, hi):
            return self._support_rows(i, lo, hi, own[lo:hi])

        def residual(lo, acc_r):
            # The network reads the context codes of the slices before this one only, so
            # this slice's may be written as the bands go.
            rows = slice(lo, lo + len(acc_r))
            net.k.slice_residual(acc_r, h[f"{i}.lrp.mult"], h[f"{i}.lrp.shift"], y_g_hat[rows],
                                 h["lut"], cy, ctx_mult, ctx_shift, model.ctx_max,
                                 self.y_g_dec[rows, :, part], self.ctx[rows, :, part])

        self._run_in_bands(model.lrp[i], 3 * n + a, self.ctx.itemsize, read, residual)
        self.parts[i] = None
