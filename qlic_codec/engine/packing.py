"""Weights packed once per layer into the layouts the multiply paths read.

Each path reads a layer's weights in its own order (runs in the order of its register blocks,
padded to whole blocks, aligned to 64 bytes). ``pack_conv_weights`` / ``pack_deconv_weights``
/ ``pack_gdn_weights`` rearrange them once per layer (the model loader calls them); the
convolution and GDN functions accept the packed object wherever they take ``w`` (or
``gamma``), and pack plain arrays on the fly.
"""

import numpy as np

from .cpu import PATHS
from .elementwise import _aligned_copy, _require
from .microkernels import _NARROW, _VNNI_DOT3, _VNNI_DOT4, _VNNI_NARROW, _VNNI_WIDE, _WIDE

# Layers with fewer output channels are ``narrow`` (the 3-channel output layer): they run as
# dot products over each channel's run, not as register blocks over the channels.
_PORTABLE_NARROW = 8


class PackedWeights:
    """Weights of one layer in the multiply layouts, each packed once, when a kernel first
    asks for it (a process uses one path; packing all of them was a tenth of model loading).

    ``weight`` is the unpacked array as the reference takes it; ``kind`` is ``"conv"``,
    ``"deconv"`` or ``"gdn"``. ``portable``, ``simd`` and ``vnni`` hold one array per phase
    (one for a convolution, four for a transposed one): ``portable`` is int16
    ``(KH, KW*Cin, Cout)`` (``(KH, Cout, KW*Cin)`` if ``narrow``); ``simd`` is the flat int16
    ``(KH, blocks, pairs, 8*nv, 2)`` layout of the AVX2 micro-kernel, runs padded to an even
    length and channels to ``coutp`` with zeros; ``vnni`` (empty where the host has no VNNI or
    the layer cannot use it) and ``wssd`` are the VNNI layouts (see ``_pack_vnni``);
    ``tiles``, ``gamma_tiles`` and ``merged`` are the ``amx`` path's (``_pack_tiles``,
    ``_pack_vnni_all``, ``_pack_merged``).
    """

    # Lazily packed attributes and the method that sets each group of them.
    _LAZY = {"portable": "_pack_portable", "simd": "_pack_simd", "pairs": "_pack_simd",
             **{name: "_pack_vnni_all" for name in (
                 "vnni", "quads", "vsum", "vnp", "vnv", "vcoutp", "vblocks", "wssd", "wpairs",
                 "gamma_tiles")},
             "merged": "_pack_merged", "tiles": "_pack_tiles", "tquads": "_pack_tiles"}

    def __init__(self, weight, kind, phases, cout, cin, k):
        self.weight, self.kind, self.cout, self.cin, self.k = weight, kind, cout, cin, k
        self.phases = phases  # (KH, R, Cout) int16 runs
        self.narrow = cout < _PORTABLE_NARROW
        self.nv = _WIDE[1] if cout > 8 else _NARROW[1]
        self.np = _WIDE[0] if cout > 8 else _NARROW[0]
        blk = 8 * self.nv
        self.coutp = -(-cout // blk) * blk
        self.blocks = self.coutp // blk

    def __getattr__(self, name):
        # Only called for attributes not set yet: pack their layout now.
        method = PackedWeights._LAZY.get(name)
        if method is None:
            raise AttributeError(name)
        getattr(self, method)()
        try:
            return self.__dict__[name]
        except KeyError:  # e.g. ``quads`` of a layer that has no VNNI layout
            raise AttributeError(name) from None

    def _pack_portable(self):
        # Narrow layers (Cout < 8) keep each channel's run contiguous instead: the portable
        # kernel then vectorises over the run rather than over too few channels.
        self.portable = [np.ascontiguousarray(runs.transpose(0, 2, 1) if self.narrow else runs)
                         for runs in self.phases]

    def _pack_simd(self):
        blk = 8 * self.nv
        simd, pairs = [], []
        for runs in self.phases:
            kh, run, cout = runs.shape
            run2 = run + (run & 1)
            pad = np.zeros((kh, run2, self.coutp), np.int16)
            pad[:, :run, :cout] = runs
            packed = pad.reshape(kh, run2 // 2, 2, self.blocks, blk).transpose(0, 3, 1, 4, 2)
            simd.append(_aligned_copy(packed))
            pairs.append(run2 // 2)
        self.simd, self.pairs = simd, pairs

    def _pack_vnni_all(self):
        self.vnni, self.wssd = [], []
        if "vnni" in PATHS and not (self.narrow and self.kind == "gdn"):
            # GDN's gamma is unsigned (0..255): it goes in as gamma - 128, and the kernel adds
            # 128 * sum|x| per pixel back. For 16-bit inputs it goes in as it is (``wssd``).
            self._pack_vnni([runs - 128 for runs in self.phases] if self.kind == "gdn"
                            else self.phases)
            if self.kind == "gdn":
                self._pack_wssd(self.phases)
                # The amx path multiplies unsigned gamma as it is (``tdpbuud``): the same
                # layout, each byte gamma - 128 + 128.
                self.gamma_tiles = [_aligned_copy(p.view(np.uint8) ^ np.uint8(128))
                                    for p in self.vnni]

    def _pack_vnni(self, phases):
        # ``vsum`` (one int64 (Cout,) per phase) is what the +128 offset of the inputs adds.
        if self.narrow:
            self._pack_vnni_dot(phases)
            if self.kind != "gdn":
                self._pack_wssd_dot(phases)
            return
        self.vnp, self.vnv = _VNNI_WIDE if self.cout % 64 == 0 else _VNNI_NARROW
        blk = 16 * self.vnv
        self.vcoutp = -(-self.cout // blk) * blk
        self.vblocks = self.vcoutp // blk
        self.quads, self.vsum = [], []
        for runs in phases:
            run4 = -(-runs.shape[1] // 4) * 4
            self.vnni.append(self._quad_blocks(runs, run4))
            self.quads.append(run4 // 4)
            self.vsum.append(runs.astype(np.int64).sum(axis=(0, 1)))
        if self.kind != "gdn":
            self._pack_wssd(phases)

    def _pack_wssd(self, phases):
        # For 16-bit inputs: the blocks of ``_pack_vnni`` over pairs of int16 weights.
        blk = 16 * self.vnv
        self.wssd, self.wpairs = [], []
        for runs in phases:
            kh, run, cout = runs.shape
            run2 = run + (run & 1)
            pad = np.zeros((kh, run2, self.vcoutp), np.int16)
            pad[:, :run, :cout] = runs
            packed = pad.reshape(kh, run2 // 2, 2, self.vblocks, blk).transpose(0, 3, 1, 4, 2)
            self.wssd.append(_aligned_copy(packed))
            self.wpairs.append(run2 // 2)

    def _pack_vnni_dot(self, phases):
        # (KH, channels, run) with runs padded to 64-byte chunks: ``vnv`` channels per group,
        # ``vblocks`` groups, ``quads`` chunks per run.
        self.vnp, self.vnv = _VNNI_DOT3 if self.cout % 3 == 0 else _VNNI_DOT4
        self.vcoutp = -(-self.cout // self.vnv) * self.vnv
        self.vblocks = self.vcoutp // self.vnv
        self.quads, self.vsum = [], []
        for runs in phases:
            kh, run, cout = runs.shape
            run64 = -(-run // 64) * 64
            pad = np.zeros((kh, self.vcoutp, run64), np.int8)
            pad[:, :cout, :run] = runs.transpose(0, 2, 1)
            self.vnni.append(_aligned_copy(pad))
            self.quads.append(run64 // 64)
            self.vsum.append(runs.astype(np.int64).sum(axis=(0, 1)))

    def _pack_wssd_dot(self, phases):
        # For 16-bit inputs: the layout of ``_pack_vnni_dot`` in int16, runs padded to 32
        # elements (64 bytes); ``wpairs`` then counts those chunks.
        self.wssd, self.wpairs = [], []
        for runs in phases:
            kh, run, cout = runs.shape
            run32 = -(-run // 32) * 32
            pad = np.zeros((kh, self.vcoutp, run32), np.int16)
            pad[:, :cout, :run] = runs.transpose(0, 2, 1)
            self.wssd.append(_aligned_copy(pad))
            self.wpairs.append(run32 // 32)

    def _quad_blocks(self, runs, length):
        # The VNNI layout of one phase, [tap row][block][quad][channel][4], its runs padded
        # with zero weights to ``length`` (a multiple of 4) and its channels to ``vcoutp``.
        kh, run, cout = runs.shape
        blk = 16 * self.vnv
        pad = np.zeros((kh, length, self.vcoutp), np.int8)
        pad[:, :run, :cout] = runs
        return _aligned_copy(
            pad.reshape(kh, length // 4, 4, self.vblocks, blk).transpose(0, 3, 1, 4, 2))

    def _pack_tiles(self):
        # The amx path's weights: the ``vnni`` layout with each phase's run of a tap row
        # padded with zero weights to whole 64-byte rows of a tile (3x3 layers of 48..288
        # channels, the 5x5 layer of 3); the tile then also reads the bytes past the run, the
        # next pixels' inputs, which meet those zeros. Where the runs are whole rows already,
        # the ``vnni`` arrays themselves.
        self.tiles, self.tquads = [], []
        for runs, packed, quads in zip(self.phases, self.vnni, self.quads):
            if quads % 16 == 0:
                self.tiles.append(packed)
                self.tquads.append(quads)
                continue
            run64 = -(-runs.shape[1] // 64) * 64
            self.tiles.append(self._quad_blocks(runs, run64))
            self.tquads.append(run64 // 4)

    def _pack_merged(self):
        # The amx path's RGB output layer (``convolution._deconv_merged``): the four phases of
        # the transposed convolution as one 3x3 convolution over the input padded by one
        # pixel. Output pixel (2a + py, 2b + px) takes input pixel (a - 1 + dy, b - 1 + dx)
        # with tap (4 + py - 2*dy, 4 + px - 2*dx) where both are at most 4
        # (``_DECONV_TAPS``), so column (py*2 + px)*Cout + co of tap row dy holds those taps,
        # zero elsewhere. Each tap row's run of (dx, ci) bytes, padded with zero weights to
        # whole 64-byte chunks, is cut into the B tiles of ``amxtiles.amx_merged``:
        # [tap row][chunk][quad][column][4].
        from .amxtiles import MERGED_COLUMNS
        w = self.weight
        cout, k, _, cin = w.shape
        run64 = -(-3 * cin // 64) * 64
        m = np.zeros((3, run64, MERGED_COLUMNS), np.int8)
        for dy in range(3):
            for dx in range(3):
                for py in range(2):
                    for px in range(2):
                        ky, kx = 4 + py - 2 * dy, 4 + px - 2 * dx
                        if ky < k and kx < k:
                            n = (py * 2 + px) * cout
                            m[dy, dx * cin: (dx + 1) * cin, n: n + cout] = w[:, ky, kx].T
        self.merged = _aligned_copy(
            m.reshape(3, run64 // 64, 16, 4, MERGED_COLUMNS).transpose(0, 1, 2, 4, 3))

    @property
    def shape(self):
        return self.weight.shape


def _runs(w, taps_y, taps_x):
    """(Cout, K, K, Cin) -> (len(taps_y), len(taps_x)*Cin, Cout) int16 runs of the taps."""
    sub = w[:, list(taps_y)][:, :, list(taps_x)]
    cout, kh = sub.shape[0], sub.shape[1]
    return np.ascontiguousarray(sub.reshape(cout, kh, -1).transpose(1, 2, 0)).astype(np.int16)


# Taps of the transposed convolution per phase parity: output 2a+p reads padded input rows
# a+p+t (t = 0, 1, ...) with these kernel rows.
_DECONV_TAPS = ((4, 2, 0), (3, 1))


def pack_conv_weights(w) -> PackedWeights:
    """Pack int8 ``(Cout, K, K, Cin)`` convolution weights for ``conv2d``/``conv2d_requant``."""
    if isinstance(w, PackedWeights):
        return w
    w = _require(w, "w", (np.dtype(np.int8),), 4)
    if w.shape[1] != w.shape[2]:
        raise ValueError(f"convolution weights must be square, got {w.shape}")
    k = w.shape[1]
    return PackedWeights(w, "conv", [_runs(w, range(k), range(k))], w.shape[0], w.shape[3], k)


def pack_deconv_weights(w) -> PackedWeights:
    """Pack int8 ``(Cout, 5, 5, Cin)`` weights of the stride-2 transposed convolution as its
    four phases (py, px) = (0, 0), (0, 1), (1, 0), (1, 1)."""
    if isinstance(w, PackedWeights):
        return w
    w = _require(w, "w", (np.dtype(np.int8),), 4)
    if w.shape[1] != 5 or w.shape[2] != 5:
        raise ValueError(f"transposed convolution supports K=5 only, got {w.shape}")
    phases = [_runs(w, _DECONV_TAPS[py], _DECONV_TAPS[px]) for py in (0, 1) for px in (0, 1)]
    return PackedWeights(w, "deconv", phases, w.shape[0], w.shape[3], 5)


def pack_gdn_weights(gamma) -> PackedWeights:
    """Pack uint8 ``(C, C)`` GDN weights for ``gdn``/``igdn``."""
    if isinstance(gamma, PackedWeights):
        return gamma
    gamma = _require(gamma, "gamma", (np.dtype(np.uint8),), 2)
    c = gamma.shape[0]
    w = gamma.astype(np.int16).reshape(c, 1, 1, gamma.shape[1])
    packed = PackedWeights(gamma, "gdn", [_runs(w, (0,), (0,))], c, gamma.shape[1], 1)
    packed.gamma_l1_max = int(gamma.astype(np.int64).sum(axis=1).max(initial=0))
    return packed
