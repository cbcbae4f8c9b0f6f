"""Numba integer kernels, equal bit for bit to ``reference.py``.

Each public function validates dtypes, contiguity and shapes once, allocates the output, and
calls a private ``@njit`` kernel that trusts its input (no error branches inside). Kernels run
``parallel`` over output rows: every output element is computed by exactly one thread in
integer arithmetic, so the result does not depend on the thread count.

Convolutions are output-stationary implicit GEMMs on NHWC without im2col: for a fixed tap row
``ky`` the ``(kx, ci)`` run of the input is contiguous, so each output pixel is, per tap row,
one dot product of length ``K*Cin`` with a packed weight run. The transposed 5x5 stride-2
convolution is four sub-pixel phase convolutions (3x3, 3x2, 2x3 and 2x2 taps, stride 1), and
GDN / inverse GDN are a 1x1 convolution of ``|x|`` with ``gamma``. Two multiply paths give the
same integers:

* ``avx2`` (x86-64 hosts with AVX2): a register-blocked micro-kernel written in LLVM IR with
  ``vpmaddwd`` (pairs of int16 products summed into int32 lanes, 16 MACs per instruction).
  Activations are widened to int16, weights packed as ``[tap row][block of output channels]
  [input pair][channel][2]``; a block of pixels x 8-channel vectors is accumulated in
  registers. Every product is at most ``32768 * 128`` in magnitude, so a pair sum never
  saturates.
* ``vnni`` (x86-64 hosts with AVX-512 VNNI): the same blocking with ``vpdpbusd`` on zmm
  registers (four u8 x s8 products summed into each int32 lane, 64 MACs per instruction) for
  every convolution whose input is 8-bit. Activations are offset by 128 to unsigned bytes and
  ``128 * sum(w)`` is subtracted from the bias, so the sum is unchanged; int32 lanes wrap
  modulo ``2**32`` like the other paths. Weights are packed as ``[tap row][block of output
  channels][input quad][channel][4]``. GDN's unsigned ``gamma`` enters as ``gamma - 128``
  against ``|x|`` (0..128 as bytes), with ``128 * sum|x|`` added per pixel. Layers with
  16-bit inputs (``z`` into ``h_s``, ``y`` into ``g_s``, the 12-bit codes of GDN inputs and
  of some GDN outputs) use the same blocks over int16 pairs with ``vpdpwssd`` (32 MACs per
  instruction). Layers with few output channels (the RGB output) run as dot products over
  64-byte chunks of the input run instead, on bytes or on int16.
* ``portable`` (any machine): plain Numba loops over the same decomposition, vectorised by
  LLVM over the output channels with int32 accumulators.

``QLIC_KERNELS=portable`` forces the portable path; ``set_path`` switches at run time (tests,
benchmarks). Integer addition modulo ``2**32`` is associative, and the model loader proves
that no accumulator leaves int32, so the summation order cannot change a result.

Weights can be packed once with ``pack_conv_weights`` / ``pack_deconv_weights`` /
``pack_gdn_weights``; the convolution functions accept the packed object wherever they take
``w`` (or ``gamma``), and pack plain arrays on the fly.
"""

import contextlib
import os
import platform

import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..errors import UnsupportedError
from .reference import GDN_OUT_MAX

# The one place that sets jit options; no fastmath anywhere in the engine.
JIT = dict(cache=True, nogil=True)
JIT_PARALLEL = dict(cache=True, nogil=True, parallel=True)


def _require(arr: np.ndarray, name: str, dtypes, ndim: int) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype not in dtypes or arr.ndim != ndim:
        raise TypeError(f"{name}: expected a {ndim}-D array of {dtypes}, got "
                        f"{getattr(arr, 'dtype', type(arr))} {getattr(arr, 'shape', '')}")
    return np.ascontiguousarray(arr)


_CODES = (np.dtype(np.int8), np.dtype(np.int16))
_I32 = (np.dtype(np.int32),)


# ---------------------------------------------------------------------------------------------
# Path selection


def _host_features() -> dict:
    """The host CPU's features, or nothing when Numba compiles for another CPU."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    from numba import config
    if config.CPU_NAME not in (None, "host"):
        return {}  # compiling for another CPU (e.g. a portable cache): no host features
    try:
        import llvmlite.binding as llvm
        return dict(llvm.get_host_cpu_features())
    except Exception:  # pragma: no cover - an llvmlite without feature queries
        return {}


def _host_paths() -> tuple:
    features = _host_features()
    paths = ["portable"]
    if features.get("avx2", False):
        paths.append("avx2")
        if all(features.get(f, False) for f in ("avx512f", "avx512bw", "avx512vnni")):
            paths.append("vnni")
    return tuple(paths)


PATHS = _host_paths()
_ALL_PATHS = ("portable", "avx2", "vnni")


def _initial_path() -> str:
    wanted = os.environ.get("QLIC_KERNELS", "").strip().lower()
    if wanted in ("", "auto"):
        return PATHS[-1]
    if wanted not in _ALL_PATHS:
        raise UnsupportedError(f"QLIC_KERNELS must be 'portable', 'avx2', 'vnni' or 'auto', "
                               f"got {wanted!r}")
    # A path the host lacks falls back to the fastest it has below it.
    return max((p for p in PATHS if _ALL_PATHS.index(p) <= _ALL_PATHS.index(wanted)),
               key=_ALL_PATHS.index)


_path = _initial_path()


def available_paths() -> tuple:
    """The multiply paths this host can run, slowest first."""
    return PATHS


def active_path() -> str:
    return _path


def set_path(name: str) -> None:
    """Select the multiply path of the convolution and GDN kernels (see ``available_paths``)."""
    global _path
    if name not in PATHS:
        raise ValueError(f"kernel path {name!r} is not available here (have {PATHS})")
    _path = name


@contextlib.contextmanager
def use_path(name: str):
    before = _path
    set_path(name)
    try:
        yield
    finally:
        set_path(before)


# ---------------------------------------------------------------------------------------------
# The register-blocked micro-kernel: NP pixels x NV vectors of int32 accumulators, over groups
# of input values (pairs or quads) broadcast against packed weights.

# Per instruction set: int32 lanes per vector, input values per group, weight elements per
# vector.
_ISA = {"avx2": (8, 2, 16),         # vpmaddwd (int16 pairs) then an add, ymm
        "vnni": (16, 4, 64),        # vpdpbusd (uint8 x int8 quads), zmm
        "vnni_words": (16, 2, 32)}  # vpdpwssd (int16 pairs), zmm


def _make_microkernel(n_pix: int, n_vec: int, isa: str = "avx2"):
    """``mk(x, xoff, xpix, w, woff, acc, aoff, apix, ngroups)`` adds to the int32 accumulators
    ``acc[aoff + p*apix + L*v : +L]`` (p < n_pix, v < n_vec, L lanes) the sums over
    ``r < ngroups`` of ``x[xoff + p*xpix + G*r + j] * w[woff + (r*n_vec + v)*L*G + G*lane + j]``
    (j < G), wrapping modulo ``2**32``; ``ngroups >= 1``. ``avx2`` and ``vnni_words``: int16
    ``x`` and ``w``, G = 2; ``vnni``: uint8 ``x``, int8 ``w``, G = 4 (see ``_ISA``)."""
    from llvmlite import ir

    lanes, group, vec_elems = _ISA[isa]

    @intrinsic
    def mk(typingctx, x, xoff, xpix, w, woff, acc, aoff, apix, ngroups):
        i64 = types.int64
        sig = types.void(x, i64, i64, w, i64, acc, i64, i64, i64)

        def codegen(context, builder, signature, args):
            x, xoff, xpix, w, woff, acc, aoff, apix, ngroups = args
            tx, tw, ta = signature.args[0], signature.args[3], signature.args[5]
            xptr = cgutils.create_struct_proxy(tx)(context, builder, value=x).data
            wptr = cgutils.create_struct_proxy(tw)(context, builder, value=w).data
            aptr = cgutils.create_struct_proxy(ta)(context, builder, value=acc).data
            I64, I32, I16 = ir.IntType(64), ir.IntType(32), ir.IntType(16)
            vacc = ir.VectorType(I32, lanes)

            def c(n):
                return ir.Constant(I64, n)

            if isa == "avx2":
                vw = ir.VectorType(I16, 16)
                pmadd = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(vacc, [vw, vw]), "llvm.x86.avx2.pmadd.wd")

                def step(a, xv, wv):
                    return builder.add(a, builder.call(pmadd, [builder.bitcast(xv, vw), wv]))
            else:
                # The classic all-int32 operand types; newer LLVMs upgrade the call to their
                # byte- or word-vector form.
                vw = vacc
                name = ("llvm.x86.avx512.vpdpbusd.512" if isa == "vnni"
                        else "llvm.x86.avx512.vpdpwssd.512")
                dp = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(vacc, [vacc, vacc, vacc]), name)

                def step(a, xv, wv):
                    return builder.call(dp, [a, xv, wv])

            acc_ptrs, init = [], []
            for p in range(n_pix):
                base = builder.add(aoff, builder.mul(apix, c(p)))
                for v in range(n_vec):
                    ptr = builder.bitcast(builder.gep(aptr, [builder.add(base, c(lanes * v))]),
                                          vacc.as_pointer())
                    acc_ptrs.append(ptr)
                    init.append(builder.load(ptr, align=4))
            pre = builder.block
            loop = builder.append_basic_block("mk.loop")
            done = builder.append_basic_block("mk.done")
            builder.branch(loop)
            builder.position_at_end(loop)
            r = builder.phi(I64)
            r.add_incoming(c(0), pre)
            phis = []
            for a in init:
                ph = builder.phi(vacc)
                ph.add_incoming(a, pre)
                phis.append(ph)
            xb = builder.add(xoff, builder.mul(r, c(group)))
            splat = ir.Constant(vacc, [0] * lanes)
            bcast = []
            for p in range(n_pix):
                ptr = builder.gep(xptr, [builder.add(xb, builder.mul(xpix, c(p)))])
                word = builder.load(builder.bitcast(ptr, I32.as_pointer()), align=1)
                vec = builder.insert_element(ir.Constant(vacc, ir.Undefined), word,
                                             ir.Constant(I32, 0))
                bcast.append(builder.shuffle_vector(vec, ir.Constant(vacc, ir.Undefined),
                                                    splat))
            wb = builder.add(woff, builder.mul(r, c(vec_elems * n_vec)))
            wvec = []
            for v in range(n_vec):
                ptr = builder.gep(wptr, [builder.add(wb, c(vec_elems * v))])
                wvec.append(builder.load(builder.bitcast(ptr, vw.as_pointer()), align=1))
            new = [step(phis[p * n_vec + v], bcast[p], wvec[v])
                   for p in range(n_pix) for v in range(n_vec)]
            r1 = builder.add(r, c(1))
            r.add_incoming(r1, builder.block)
            for ph, a in zip(phis, new):
                ph.add_incoming(a, builder.block)
            builder.cbranch(builder.icmp_signed("<", r1, ngroups), loop, done)
            builder.position_at_end(done)
            for ptr, a in zip(acc_ptrs, new):
                builder.store(a, ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return mk


# Register blocks (pixels x 8-channel vectors): 12 accumulators + weights + a broadcast fit
# the 16 ymm registers. Wide for Cout > 8, narrow for the 3-channel output layer.
_WIDE = (6, 2)
_NARROW = (8, 1)
_mk_wide = _make_microkernel(*_WIDE)
_mk_narrow = _make_microkernel(*_NARROW)
_PORTABLE_PIX = 4
_PORTABLE_NARROW = 8


# ---------------------------------------------------------------------------------------------
# AVX-512 VNNI kernels for layers with few output channels.


def _make_vnni_dot_kernel(n_pix: int, n_ch: int, words: bool = False):
    """For layers with few output channels: ``mk(x, xoff, xpix, rowlen, kh, w, woff, wrow, wch,
    nchunks, acc, aoff, apix)`` adds to ``acc[aoff + p*apix + c]`` (p < n_pix, c < n_ch) the dot
    product over tap rows ``t < kh`` and 64-byte chunks ``j < nchunks`` of the uint8 run
    ``x[xoff + t*rowlen + p*xpix + 64j : +64]`` with the int8 run
    ``w[woff + t*wrow + c*wch + 64j : +64]``: 16 lanes accumulate across the whole window and
    are summed once at the end, so no lane is wasted on missing channels. With ``words`` the
    runs are int16 (``x`` and ``w``, vpdpwssd) and a 64-byte chunk is 32 elements: offsets
    count elements, so ``32j`` instead of ``64j``."""
    from llvmlite import ir

    chunk = 32 if words else 64

    @intrinsic
    def mk(typingctx, x, xoff, xpix, rowlen, kh, w, woff, wrow, wch, nchunks, acc, aoff, apix):
        i64 = types.int64
        sig = types.void(x, i64, i64, i64, i64, w, i64, i64, i64, i64, acc, i64, i64)

        def codegen(context, builder, signature, args):
            (x, xoff, xpix, rowlen, kh, w, woff, wrow, wch, nchunks, acc, aoff,
             apix) = args
            tx, tw, ta = signature.args[0], signature.args[5], signature.args[10]
            xptr = cgutils.create_struct_proxy(tx)(context, builder, value=x).data
            wptr = cgutils.create_struct_proxy(tw)(context, builder, value=w).data
            aptr = cgutils.create_struct_proxy(ta)(context, builder, value=acc).data
            I64, I32 = ir.IntType(64), ir.IntType(32)
            v16 = ir.VectorType(I32, 16)

            def c(n):
                return ir.Constant(I64, n)

            dot = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v16, [v16, v16, v16]),
                "llvm.x86.avx512.vpdpwssd.512" if words else "llvm.x86.avx512.vpdpbusd.512")
            reduce_add = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(I32, [v16]), "llvm.vector.reduce.add.v16i32")
            n = n_pix * n_ch
            zero = ir.Constant(v16, [0] * 16)
            pre = builder.block
            outer = builder.append_basic_block("dot.rows")
            inner = builder.append_basic_block("dot.chunks")
            row_end = builder.append_basic_block("dot.row_end")
            done = builder.append_basic_block("dot.done")
            builder.branch(outer)

            builder.position_at_end(outer)
            t = builder.phi(I64)
            t.add_incoming(c(0), pre)
            outer_acc = []
            for _ in range(n):
                ph = builder.phi(v16)
                ph.add_incoming(zero, pre)
                outer_acc.append(ph)
            xt = builder.add(xoff, builder.mul(t, rowlen))
            wt = builder.add(woff, builder.mul(t, wrow))
            builder.branch(inner)

            builder.position_at_end(inner)
            j = builder.phi(I64)
            j.add_incoming(c(0), outer)
            inner_acc = []
            for a in outer_acc:
                ph = builder.phi(v16)
                ph.add_incoming(a, outer)
                inner_acc.append(ph)
            off = builder.mul(j, c(chunk))
            xs = []
            for p in range(n_pix):
                idx = builder.add(builder.add(xt, builder.mul(xpix, c(p))), off)
                ptr = builder.bitcast(builder.gep(xptr, [idx]), v16.as_pointer())
                xs.append(builder.load(ptr, align=1))
            ws = []
            for ch in range(n_ch):
                idx = builder.add(builder.add(wt, builder.mul(wch, c(ch))), off)
                ptr = builder.bitcast(builder.gep(wptr, [idx]), v16.as_pointer())
                ws.append(builder.load(ptr, align=1))
            new = [builder.call(dot, [inner_acc[p * n_ch + ch], xs[p], ws[ch]])
                   for p in range(n_pix) for ch in range(n_ch)]
            j1 = builder.add(j, c(1))
            j.add_incoming(j1, inner)
            for ph, a in zip(inner_acc, new):
                ph.add_incoming(a, inner)
            builder.cbranch(builder.icmp_signed("<", j1, nchunks), inner, row_end)

            builder.position_at_end(row_end)
            t1 = builder.add(t, c(1))
            t.add_incoming(t1, row_end)
            for ph, a in zip(outer_acc, new):
                ph.add_incoming(a, row_end)
            builder.cbranch(builder.icmp_signed("<", t1, kh), outer, done)

            builder.position_at_end(done)
            for p in range(n_pix):
                for ch in range(n_ch):
                    idx = builder.add(builder.add(aoff, builder.mul(apix, c(p))), c(ch))
                    ptr = builder.gep(aptr, [idx])
                    total = builder.call(reduce_add, [new[p * n_ch + ch]])
                    builder.store(builder.add(builder.load(ptr, align=4), total), ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return mk


# Few output channels: pixels x channels of 16-lane dot products (3 channels: the RGB output).
_VNNI_DOT3 = (6, 3)
_VNNI_DOT4 = (4, 4)
_mk_vnni_dot3 = _make_vnni_dot_kernel(*_VNNI_DOT3)
_mk_vnni_dot4 = _make_vnni_dot_kernel(*_VNNI_DOT4)
# The same over int16 inputs (a 12-bit inverse GDN before the output layer).
_mk_wssd_dot3 = _make_vnni_dot_kernel(*_VNNI_DOT3, words=True)
_mk_wssd_dot4 = _make_vnni_dot_kernel(*_VNNI_DOT4, words=True)
# One channel of ones: the per-pixel sums of |x| that GDN's offset weights need.
_SUM_PIX = 8
_mk_vnni_sum = _make_vnni_dot_kernel(_SUM_PIX, 1)


# 24 zmm accumulators + 4 weight vectors + a broadcast fit the 32 zmm registers: 6 pixels x
# 64 channels where the channels fill such blocks, else 12 pixels x 32 channels.
_VNNI_WIDE = (6, 4)
_VNNI_NARROW = (12, 2)
_mk_vnni_wide = _make_microkernel(*_VNNI_WIDE, "vnni")
_mk_vnni_narrow = _make_microkernel(*_VNNI_NARROW, "vnni")
# 16-bit inputs (z, y, 12-bit codes): the same blocks over pairs of int16 (vpdpwssd).
_mk_wssd_wide = _make_microkernel(*_VNNI_WIDE, "vnni_words")
_mk_wssd_narrow = _make_microkernel(*_VNNI_NARROW, "vnni_words")


# ---------------------------------------------------------------------------------------------
# Packed weights


class PackedWeights:
    """Weights of one layer in the multiply layouts, each packed once, when a kernel first
    asks for it (a process uses one path; packing all of them was a tenth of model loading).

    ``weight`` is the unpacked array as the reference takes it; ``kind`` is ``"conv"``,
    ``"deconv"`` or ``"gdn"``. ``portable``, ``simd`` and ``vnni`` hold one array per phase
    (one for a convolution, four for a transposed one): ``portable`` is int16
    ``(KH, KW*Cin, Cout)`` (``(KH, Cout, KW*Cin)`` if ``narrow``); ``simd`` is the flat int16
    ``(KH, blocks, pairs, 8*nv, 2)`` layout of the AVX2 micro-kernel, runs padded to an even
    length and channels to ``coutp`` with zeros; ``vnni`` (empty where the host has no VNNI or
    the layer cannot use it) and ``wssd`` are the VNNI layouts (see ``_pack_vnni``).
    """

    # Lazily packed attributes and the method that sets each group of them.
    _LAZY = {"portable": "_pack_portable", "simd": "_pack_simd", "pairs": "_pack_simd",
             **{name: "_pack_vnni_all" for name in (
                 "vnni", "quads", "vsum", "vnp", "vnv", "vcoutp", "vblocks", "wssd", "wpairs")}}

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
            kh, run, cout = runs.shape
            run4 = -(-run // 4) * 4
            pad = np.zeros((kh, run4, self.vcoutp), np.int8)
            pad[:, :run, :cout] = runs
            packed = pad.reshape(kh, run4 // 4, 4, self.vblocks, blk).transpose(0, 3, 1, 4, 2)
            self.vnni.append(_aligned_copy(packed))
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


# ---------------------------------------------------------------------------------------------
# One phase of a convolution on a row of output pixels


@njit(inline="always")
def _phase_simd(xf, x0, rowlen, xpix, kh, wf, blocks, nv, pairs, acc, a0, apix, npix):
    # npix is a multiple of the micro-kernel's pixel count; tap row t starts at x0 + t*rowlen.
    for b in range(blocks):
        for t in range(kh):
            woff = (t * blocks + b) * pairs * nv * 16
            xo = x0 + t * rowlen
            ao = a0 + b * nv * 8
            if nv == 2:
                for p in range(0, npix, 6):
                    _mk_wide(xf, xo + p * xpix, xpix, wf, woff, acc, ao + p * apix, apix, pairs)
            else:
                for p in range(0, npix, 8):
                    _mk_narrow(xf, xo + p * xpix, xpix, wf, woff, acc, ao + p * apix, apix,
                               pairs)


@njit(inline="always")
def _phase_vnni_dot(xf, x0, rowlen, xpix, kh, wf, groups, nc, chunks, words, acc, a0, apix,
                    npix):
    # ``words``: int16 inputs and weights, 32 of them to a 64-byte chunk.
    wch = chunks * (32 if words else 64)
    wrow = groups * nc * wch
    for g in range(groups):
        woff = g * nc * wch
        if nc == 3:
            for p in range(0, npix, _VNNI_DOT3[0]):
                if words:
                    _mk_wssd_dot3(xf, x0 + p * xpix, xpix, rowlen, kh, wf, woff, wrow, wch,
                                  chunks, acc, a0 + p * apix + g * nc, apix)
                else:
                    _mk_vnni_dot3(xf, x0 + p * xpix, xpix, rowlen, kh, wf, woff, wrow, wch,
                                  chunks, acc, a0 + p * apix + g * nc, apix)
        else:
            for p in range(0, npix, _VNNI_DOT4[0]):
                if words:
                    _mk_wssd_dot4(xf, x0 + p * xpix, xpix, rowlen, kh, wf, woff, wrow, wch,
                                  chunks, acc, a0 + p * apix + g * nc, apix)
                else:
                    _mk_vnni_dot4(xf, x0 + p * xpix, xpix, rowlen, kh, wf, woff, wrow, wch,
                                  chunks, acc, a0 + p * apix + g * nc, apix)


@njit(inline="always")
def _phase_wssd(xf, x0, rowlen, xpix, kh, wf, blocks, nv, pairs, acc, a0, apix, npix):
    for b in range(blocks):
        for t in range(kh):
            woff = (t * blocks + b) * pairs * nv * 32
            xo = x0 + t * rowlen
            ao = a0 + b * nv * 16
            if nv == 4:
                for p in range(0, npix, 6):
                    _mk_wssd_wide(xf, xo + p * xpix, xpix, wf, woff, acc, ao + p * apix, apix,
                                  pairs)
            else:
                for p in range(0, npix, 12):
                    _mk_wssd_narrow(xf, xo + p * xpix, xpix, wf, woff, acc, ao + p * apix,
                                    apix, pairs)


# How _phase_vnni multiplies: uint8 x int8 in register blocks or as dot products (few output
# channels); int16 x int16 pairs in register blocks or as dot products.
_BYTES, _DOT, _WORDS, _DOT_WORDS = 0, 1, 2, 3


@njit(inline="always")
def _phase_vnni(xf, x0, rowlen, xpix, kh, wf, blocks, nv, quads, acc, a0, apix, npix, mode):
    # As _phase_simd, on uint8 inputs and quads of int8 weights, or (``_WORDS``) on int16
    # inputs and pairs of int16 weights, ``quads`` then counting pairs.
    if mode == _DOT or mode == _DOT_WORDS:
        _phase_vnni_dot(xf, x0, rowlen, xpix, kh, wf, blocks, nv, quads, mode == _DOT_WORDS,
                        acc, a0, apix, npix)
        return
    if mode == _WORDS:
        _phase_wssd(xf, x0, rowlen, xpix, kh, wf, blocks, nv, quads, acc, a0, apix, npix)
        return
    for b in range(blocks):
        for t in range(kh):
            woff = (t * blocks + b) * quads * nv * 64
            xo = x0 + t * rowlen
            ao = a0 + b * nv * 16
            if nv == 4:
                for p in range(0, npix, 6):
                    _mk_vnni_wide(xf, xo + p * xpix, xpix, wf, woff, acc, ao + p * apix, apix,
                                  quads)
            else:
                for p in range(0, npix, 12):
                    _mk_vnni_narrow(xf, xo + p * xpix, xpix, wf, woff, acc, ao + p * apix,
                                    apix, quads)


@njit(inline="always")
def _phase_portable_narrow(xf, x0, rowlen, xpix, wt, acc, a0, apix, npix):
    # wt is (KH, Cout, run): one dot product per (pixel, channel), vectorised over the run.
    kh, c, run = wt.shape
    for t in range(kh):
        for p in range(npix):
            xb = x0 + t * rowlen + p * xpix
            xs = xf[xb: xb + run]
            ab = a0 + p * apix
            for co in range(c):
                wr = wt[t, co]
                sm = np.int32(0)
                for i in range(run):
                    sm += np.int32(xs[i]) * np.int32(wr[i])
                acc[ab + co] += np.int32(sm)


@njit(inline="always")
def _phase_portable(xf, x0, rowlen, xpix, wt, narrow, acc, a0, apix, npix):
    # Four pixels at a time: one input value per pixel broadcast against a contiguous run of
    # output channels; int32 accumulators (the stores truncate Numba's int64 arithmetic).
    if narrow:
        _phase_portable_narrow(xf, x0, rowlen, xpix, wt, acc, a0, apix, npix)
        return
    kh, run, c = wt.shape
    for t in range(kh):
        for p in range(0, npix, 4):
            xb = x0 + t * rowlen + p * xpix
            xs0 = xf[xb: xb + run]
            xs1 = xf[xb + xpix: xb + xpix + run]
            xs2 = xf[xb + 2 * xpix: xb + 2 * xpix + run]
            xs3 = xf[xb + 3 * xpix: xb + 3 * xpix + run]
            ab = a0 + p * apix
            r0 = acc[ab: ab + c]
            r1 = acc[ab + apix: ab + apix + c]
            r2 = acc[ab + 2 * apix: ab + 2 * apix + c]
            r3 = acc[ab + 3 * apix: ab + 3 * apix + c]
            wtt = wt[t]
            for i in range(run):
                v0 = np.int32(xs0[i])
                v1 = np.int32(xs1[i])
                v2 = np.int32(xs2[i])
                v3 = np.int32(xs3[i])
                wr = wtt[i]
                for co in range(c):
                    wv = np.int32(wr[co])
                    r0[co] += v0 * wv
                    r1[co] += v1 * wv
                    r2[co] += v2 * wv
                    r3[co] += v3 * wv


@njit(inline="always")
def _requant_value(v, mult, shift, leaky_mult, leaky_shift, lo, hi):
    v = np.int64(v)
    if leaky_shift > 0 and v < 0:
        v = (v * leaky_mult + (np.int64(1) << (leaky_shift - 1))) >> leaky_shift
    r = (v * np.int64(mult) + (np.int64(1) << (shift - 1))) >> shift
    return min(max(r, lo), hi)


@njit(inline="always")
def _init_acc(acc, bias, npix, coutp):
    for p in range(npix):
        acc[p * coutp: (p + 1) * coutp] = bias


@njit(inline="always")
def _epilogue(acc, coutp, out_row, requant, mult, shift, leaky_mult, leaky_shift, lo, hi):
    # Branch-free per channel (selects, not jumps), so that LLVM vectorises it: the products
    # are int32 x int32 -> int64 and the shifts per-lane 64-bit shifts.
    wo, cout = out_row.shape
    leaky = leaky_shift > 0
    lm = np.int64(np.int32(leaky_mult))
    ls = np.int64(leaky_shift if leaky else 1)
    lr = np.int64(1) << (ls - 1)
    lo64, hi64 = np.int64(lo), np.int64(hi)
    for ox in range(wo):
        a = acc[ox * coutp: ox * coutp + cout]
        o = out_row[ox]
        if requant:
            for co in range(cout):
                v = np.int64(a[co])
                lv = (v * lm + lr) >> ls
                v = lv if (leaky and v < 0) else v
                sh = np.int64(shift[co])
                r = (v * np.int64(mult[co]) + (np.int64(1) << (sh - 1))) >> sh
                r = lo64 if r < lo64 else r
                o[co] = hi64 if r > hi64 else r
        else:
            for co in range(cout):
                o[co] = a[co]


# ---------------------------------------------------------------------------------------------
# Convolution (stride 1 or 2, K x K, padding K//2)


@njit(**JIT_PARALLEL)
def _conv_simd(xf, rowlen, stride, cin, k, wf, blocks, nv, pairs, npix, bias, coutp, requant,
               mult, shift, leaky_mult, leaky_shift, lo, hi, out):
    ho = out.shape[0]
    for oy in prange(ho):
        acc = np.empty(npix * coutp, np.int32)
        _init_acc(acc, bias, npix, coutp)
        _phase_simd(xf, oy * stride * rowlen, rowlen, stride * cin, k, wf, blocks, nv, pairs,
                    acc, 0, coutp, npix)
        _epilogue(acc, coutp, out[oy], requant, mult, shift, leaky_mult, leaky_shift, lo, hi)


@njit(**JIT_PARALLEL)
def _conv_vnni(xf, rowlen, stride, cin, k, wf, blocks, nv, quads, mode, npix, bias, coutp,
               requant, mult, shift, leaky_mult, leaky_shift, lo, hi, out):
    ho = out.shape[0]
    for oy in prange(ho):
        acc = np.empty(npix * coutp, np.int32)
        _init_acc(acc, bias, npix, coutp)
        _phase_vnni(xf, oy * stride * rowlen, rowlen, stride * cin, k, wf, blocks, nv, quads,
                    acc, 0, coutp, npix, mode)
        _epilogue(acc, coutp, out[oy], requant, mult, shift, leaky_mult, leaky_shift, lo, hi)


@njit(**JIT_PARALLEL)
def _conv_portable(xf, rowlen, stride, cin, wt, narrow, npix, bias, coutp, requant, mult, shift,
                   leaky_mult, leaky_shift, lo, hi, out):
    ho = out.shape[0]
    for oy in prange(ho):
        acc = np.empty(npix * coutp, np.int32)
        _init_acc(acc, bias, npix, coutp)
        _phase_portable(xf, oy * stride * rowlen, rowlen, stride * cin, wt, narrow, acc, 0,
                        coutp, npix)
        _epilogue(acc, coutp, out[oy], requant, mult, shift, leaky_mult, leaky_shift, lo, hi)


def _layer_path(packed, x):
    # Narrow layers (the 3-channel output) run faster as dot products over the run (measured):
    # the micro-kernel would waste 5 of 8 lanes. VNNI multiplies bytes only.
    if _path == "vnni" and not packed.vnni:
        return "portable" if packed.narrow else "avx2"
    if _path == "vnni" and x.dtype != np.int8:  # vpdpwssd
        return "vnni"
    if packed.narrow and _path != "vnni":
        return "portable"
    return _path


def _pixel_unit(packed, path):
    if path == "vnni":
        return packed.vnp
    return packed.np if path == "avx2" else _PORTABLE_PIX


def _padded_bias(bias, coutp):
    b = np.zeros(coutp, np.int32)
    b[: bias.shape[0]] = bias
    return b


def _vnni_bias(bias, vsum, coutp):
    """The bias that cancels the +128 offset of the inputs, wrapped to int32 like the sums."""
    b = np.zeros(coutp, np.int64)
    b[: bias.shape[0]] = bias.astype(np.int64) - 128 * vsum
    return ((b + 2**31) % 2**32 - 2**31).astype(np.int32)


def _aligned(size, dtype, fill=0):
    """A flat array of ``size`` elements whose data starts on a 64-byte boundary (filled with
    ``fill``, or left uninitialised if it is None). Large numpy arrays start 16 bytes past
    one, so every 64-byte vector load from them would straddle two cache lines."""
    dtype = np.dtype(dtype)
    raw = (np.empty(size + 64 // dtype.itemsize, dtype) if fill is None else
           np.full(size + 64 // dtype.itemsize, fill, dtype))
    skip = (-raw.ctypes.data % 64) // dtype.itemsize
    return raw[skip: skip + size]


def _aligned_copy(a):
    """``a`` flattened into a 64-byte aligned array (packed weights are read in vectors)."""
    out = _aligned(a.size, a.dtype)
    out[:] = a.reshape(-1)
    return out


@njit(**JIT_PARALLEL)
def _pad_kernel(x, top, left, fill, flip, xp):
    # One pass per row: the border takes ``fill``, the inside ``x ^ flip`` (flip = 128 turns
    # int8 codes viewed as uint8 into codes + 128; 0 copies).
    h, wd, c = x.shape
    rows = xp.shape[0]
    for r in prange(rows):
        dst = xp[r]
        if r < top or r >= top + h:
            dst[:, :] = fill
        else:
            src = x[r - top]
            dst[:left, :] = fill
            for i in range(wd):
                d = dst[left + i]
                v = src[i]
                for k in range(c):
                    d[k] = v[k] ^ flip
            dst[left + wd:, :] = fill


def _padded(x, shape, top, left, fill, dtype):
    """``x`` (H, W, C) at rows ``top``.., columns ``left``.. of a 64-byte aligned buffer of
    ``shape`` and ``dtype`` whose other elements are ``fill``, with 64 spare bytes after it (a
    dot-product run is read in 64-byte chunks, past its end where its weights are zero).
    int8 ``x`` into a uint8 buffer is stored as unsigned codes + 128 (the VNNI inputs).
    Returns the flat buffer. Writing every element once, in parallel, is what makes this
    cheaper than filling the whole buffer and then copying ``x`` into it."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape))
    flat = _aligned(size + 64 // dtype.itemsize, dtype, None)
    flat[size:] = fill
    if dtype == np.uint8:
        src, flip = x.view(np.uint8), np.uint8(128)
    else:
        src, flip = x, dtype.type(0)
    _pad_kernel(src, top, left, dtype.type(fill), flip, flat[:size].reshape(shape))
    return flat


_NO_REQUANT = (np.zeros(1, np.int32), np.ones(1, np.int32), 0, 0, 0, 0)


def _run_conv(x, packed, bias, stride, pad_value, req, out):
    path = _layer_path(packed, x)
    h, wd, cin = x.shape
    k = packed.k
    p = k // 2
    wo = out.shape[1]
    unit = _pixel_unit(packed, path)
    npix = -(-wo // unit) * unit
    # Rows and columns for every tap of every (padded) output pixel, plus a spare row for the
    # end of a run read as a pair or a quad (its weights there are zero).
    rows = h + 2 * p + stride
    cols = max(wd + 2 * p + stride, (npix - 1) * stride + k + 1)
    requant = req is not None
    mult, shift, lm, ls, lo, hi = req if requant else _NO_REQUANT
    if path == "vnni" and x.dtype == np.int16:
        flat = _padded(x, (rows + 1, cols, cin), p, p, pad_value, np.int16)
        _conv_vnni(flat, cols * cin, stride, cin, k, packed.wssd[0], packed.vblocks,
                   packed.vnv, packed.wpairs[0], _DOT_WORDS if packed.narrow else _WORDS, npix,
                   _padded_bias(bias, packed.vcoutp), packed.vcoutp, requant, mult, shift, lm,
                   ls, lo, hi, out)
        return out
    if path == "vnni":
        flat = _padded(x, (rows + 1, cols, cin), p, p, (pad_value + 128) & 255, np.uint8)
        _conv_vnni(flat, cols * cin, stride, cin, k, packed.vnni[0], packed.vblocks,
                   packed.vnv, packed.quads[0], _DOT if packed.narrow else _BYTES, npix,
                   _vnni_bias(bias, packed.vsum[0], packed.vcoutp), packed.vcoutp, requant,
                   mult, shift, lm, ls, lo, hi, out)
        return out
    xf = _padded(x, (rows + 1, cols, cin), p, p, pad_value, np.int16)
    if path == "avx2":
        _conv_simd(xf, cols * cin, stride, cin, k, packed.simd[0], packed.blocks, packed.nv,
                   packed.pairs[0], npix, _padded_bias(bias, packed.coutp), packed.coutp,
                   requant, mult, shift, lm, ls, lo, hi, out)
    else:
        _conv_portable(xf, cols * cin, stride, cin, packed.portable[0], packed.narrow, npix, bias,
                       packed.cout, requant, mult, shift, lm, ls, lo, hi, out)
    return out


def _check_conv(x, w, bias, pack=pack_conv_weights):
    x = _require(x, "x", _CODES, 3)
    if isinstance(w, PackedWeights):
        if w.kind == "gdn":
            raise TypeError("w: GDN weights where convolution weights were expected")
        packed = w
    else:
        w = _require(w, "w", (np.dtype(np.int8),), 4)
        packed = None
    shape = w.shape
    bias = _require(bias, "bias", _I32, 1)
    if shape[3] != x.shape[2] or shape[1] != shape[2] or bias.shape[0] != shape[0]:
        raise ValueError(f"conv shapes do not match: x {x.shape}, w {shape}, bias {bias.shape}")
    return x, packed if packed is not None else pack(w), bias


def conv2d(x, w, bias, stride, pad_value):
    """See ``reference.conv2d``; ``w`` may be packed by ``pack_conv_weights``."""
    x, packed, bias = _check_conv(x, w, bias)
    if packed.kind != "conv":
        raise TypeError("w: packed for a transposed convolution")
    h, wd, _ = x.shape
    out = np.empty((-(-h // stride), -(-wd // stride), packed.cout), np.int32)
    return _run_conv(x, packed, bias, int(stride), int(pad_value), None, out)


def conv2d_requant(x, w, bias, stride, pad_value, mult, shift, leaky_mult, leaky_shift, lo, hi,
                   out_dtype):
    """``requantize(conv2d(...), ...)`` fused: the int32 accumulators never leave the row."""
    x, packed, bias = _check_conv(x, w, bias)
    if packed.kind != "conv":
        raise TypeError("w: packed for a transposed convolution")
    mult, shift = _check_requant(mult, shift, packed.cout)
    h, wd, _ = x.shape
    out = np.empty((-(-h // stride), -(-wd // stride), packed.cout), out_dtype)
    req = (mult, shift, int(leaky_mult), int(leaky_shift), int(lo), int(hi))
    return _run_conv(x, packed, bias, int(stride), int(pad_value), req, out)


# ---------------------------------------------------------------------------------------------
# Transposed convolution (K=5, stride 2) as four stride-1 phase convolutions. Output row
# 2a+py, column 2b+px reads padded input rows a+py+t and columns b+px+u (a one-pixel zero
# border), with the taps of ``_DECONV_TAPS``.


@njit(inline="always")
def _phase_weights(py, px, w00, w01, w10, w11):
    # The packed weights of output phase (py, px): 3 or 2 taps per axis.
    if py == 0:
        return w00 if px == 0 else w01
    return w10 if px == 0 else w11


@njit(**JIT_PARALLEL)
def _deconv_simd(xf, rowlen, cin, w00, w01, w10, w11, blocks, nv, pairs3, pairs2, npix, bias,
                 coutp, requant, mult, shift, leaky_mult, leaky_shift, lo, hi, out):
    h = out.shape[0] // 2
    for a in prange(h):
        acc = np.empty(2 * npix * coutp, np.int32)
        for py in range(2):
            _init_acc(acc, bias, 2 * npix, coutp)
            for px in range(2):
                wf = _phase_weights(py, px, w00, w01, w10, w11)
                pairs = pairs3 if px == 0 else pairs2
                _phase_simd(xf, (a + py) * rowlen + px * cin, rowlen, cin, 3 - py, wf, blocks,
                            nv, pairs, acc, px * coutp, 2 * coutp, npix)
            _epilogue(acc, coutp, out[2 * a + py], requant, mult, shift, leaky_mult,
                      leaky_shift, lo, hi)


@njit(**JIT_PARALLEL)
def _deconv_vnni(xf, rowlen, cin, w00, w01, w10, w11, blocks, nv, quads3, quads2, mode, npix,
                 bias, coutp, requant, mult, shift, leaky_mult, leaky_shift, lo, hi, out):
    # ``bias`` is (2, 2*coutp): per output row parity, the biases of the two column phases
    # interleaved as the accumulators are (each phase cancels its own weights' offset sum).
    h = out.shape[0] // 2
    for a in prange(h):
        acc = np.empty(2 * npix * coutp, np.int32)
        for py in range(2):
            _init_acc(acc, bias[py], npix, 2 * coutp)
            for px in range(2):
                wf = _phase_weights(py, px, w00, w01, w10, w11)
                quads = quads3 if px == 0 else quads2
                _phase_vnni(xf, (a + py) * rowlen + px * cin, rowlen, cin, 3 - py, wf, blocks,
                            nv, quads, acc, px * coutp, 2 * coutp, npix, mode)
            _epilogue(acc, coutp, out[2 * a + py], requant, mult, shift, leaky_mult,
                      leaky_shift, lo, hi)


@njit(**JIT_PARALLEL)
def _deconv_portable(xf, rowlen, cin, w00, w01, w10, w11, narrow, npix, bias, coutp, requant, mult,
                     shift, leaky_mult, leaky_shift, lo, hi, out):
    h = out.shape[0] // 2
    for a in prange(h):
        acc = np.empty(2 * npix * coutp, np.int32)
        for py in range(2):
            _init_acc(acc, bias, 2 * npix, coutp)
            for px in range(2):
                wt = _phase_weights(py, px, w00, w01, w10, w11)
                _phase_portable(xf, (a + py) * rowlen + px * cin, rowlen, cin, wt, narrow, acc,
                                px * coutp, 2 * coutp, npix)
            _epilogue(acc, coutp, out[2 * a + py], requant, mult, shift, leaky_mult,
                      leaky_shift, lo, hi)


def _run_deconv(x, packed, bias, req, out):
    path = _layer_path(packed, x)
    h, wd, cin = x.shape
    unit = _pixel_unit(packed, path)
    npix = -(-wd // unit) * unit
    cols = npix + 4
    requant = req is not None
    mult, shift, lm, ls, lo, hi = req if requant else _NO_REQUANT
    if path == "vnni" and x.dtype == np.int16:
        flat = _padded(x, (h + 3, cols, cin), 1, 1, 0, np.int16)
        bias2 = _padded_bias(bias, packed.vcoutp)
        rows = np.stack([np.concatenate([bias2, bias2])] * 2)
        _deconv_vnni(flat, cols * cin, cin, *packed.wssd, packed.vblocks, packed.vnv,
                     packed.wpairs[0], packed.wpairs[1],
                     _DOT_WORDS if packed.narrow else _WORDS, npix, rows,
                     packed.vcoutp, requant, mult, shift, lm, ls, lo, hi, out)
        return out
    if path == "vnni":
        flat = _padded(x, (h + 3, cols, cin), 1, 1, 128, np.uint8)
        cp = packed.vcoutp
        phase_bias = [_vnni_bias(bias, vs, cp) for vs in packed.vsum]  # (py, px) order
        rows = np.stack([np.concatenate(phase_bias[2 * py: 2 * py + 2]) for py in (0, 1)])
        _deconv_vnni(flat, cols * cin, cin, *packed.vnni, packed.vblocks, packed.vnv,
                     packed.quads[0], packed.quads[1], _DOT if packed.narrow else _BYTES, npix,
                     rows, cp, requant, mult, shift, lm, ls, lo, hi, out)
        return out
    xf = _padded(x, (h + 3, cols, cin), 1, 1, 0, np.int16)
    if path == "avx2":
        _deconv_simd(xf, cols * cin, cin, *packed.simd, packed.blocks, packed.nv,
                     packed.pairs[0], packed.pairs[1], npix, _padded_bias(bias, packed.coutp),
                     packed.coutp, requant, mult, shift, lm, ls, lo, hi, out)
    else:
        _deconv_portable(xf, cols * cin, cin, *packed.portable, packed.narrow, npix, bias,
                         packed.cout,
                         requant, mult, shift, lm, ls, lo, hi, out)
    return out


def _check_deconv(x, w, bias):
    x, packed, bias = _check_conv(x, w, bias, pack_deconv_weights)
    if packed.kind != "deconv":
        if packed.k != 5:
            raise ValueError(f"transposed convolution supports K=5 only, got {packed.k}")
        raise TypeError("w: packed for a convolution, not a transposed convolution")
    return x, packed, bias


def conv_transpose2d(x, w, bias):
    """See ``reference.conv_transpose2d``; ``w`` may be packed by ``pack_deconv_weights``."""
    x, packed, bias = _check_deconv(x, w, bias)
    out = np.empty((2 * x.shape[0], 2 * x.shape[1], packed.cout), np.int32)
    return _run_deconv(x, packed, bias, None, out)


def conv_transpose2d_requant(x, w, bias, mult, shift, leaky_mult, leaky_shift, lo, hi, out_dtype):
    """``requantize(conv_transpose2d(...), ...)`` fused."""
    x, packed, bias = _check_deconv(x, w, bias)
    mult, shift = _check_requant(mult, shift, packed.cout)
    out = np.empty((2 * x.shape[0], 2 * x.shape[1], packed.cout), out_dtype)
    req = (mult, shift, int(leaky_mult), int(leaky_shift), int(lo), int(hi))
    return _run_deconv(x, packed, bias, req, out)


# ---------------------------------------------------------------------------------------------
# GDN / inverse GDN: norm = beta + gamma . |x| per pixel is a 1x1 convolution of |x|.


@njit(inline="always")
def _gdn_epilogue(acc, coutp, xr, inverse, gmult, gshift, imult, ishift, fast, omax, out_row):
    # Branch-free per channel so that LLVM vectorises it. GDN's rounded quotient
    # ``(2|num| + den) // (2 den)`` clamped to ``omax`` is, when ``2 den * 2**k`` fits int64
    # (``fast``, checked by the caller from the largest possible norm), a restoring division
    # over the bits below 2**(k+1): a quotient beyond them leaves every bit set, which the
    # clamp then brings to ``omax`` (k = 6 for 8-bit codes, 10 for the wider ones).
    wd, c = out_row.shape
    for ox in range(wd):
        norm = acc[ox * coutp: ox * coutp + c]
        xv = xr[ox]
        o = out_row[ox]
        if inverse:
            for i in range(c):
                v = np.int64(xv[i]) * np.int64(norm[i])
                sh = np.int64(ishift[i])
                r = (v * np.int64(imult[i]) + (np.int64(1) << (sh - 1))) >> sh
                r = -omax if r < -omax else r
                o[i] = omax if r > omax else r
        elif fast and omax == 127:
            for i in range(c):
                num = np.int64(xv[i]) * gmult[i]
                den = np.int64(norm[i]) << gshift
                rem = 2 * abs(num) + den
                d = 2 * den
                q = np.int64(0)
                for bit in (64, 32, 16, 8, 4, 2, 1):
                    t = d * bit
                    ge = rem >= t
                    rem = rem - t if ge else rem
                    q = q + bit if ge else q
                o[i] = -q if num < 0 else q
        elif fast:
            for i in range(c):
                num = np.int64(xv[i]) * gmult[i]
                den = np.int64(norm[i]) << gshift
                rem = 2 * abs(num) + den
                d = 2 * den
                q = np.int64(0)
                for bit in (1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1):
                    t = d * bit
                    ge = rem >= t
                    rem = rem - t if ge else rem
                    q = q + bit if ge else q
                q = omax if q > omax else q
                o[i] = -q if num < 0 else q
        else:
            for i in range(c):
                num = np.int64(xv[i]) * np.int64(gmult[i])
                den = np.int64(norm[i]) << gshift
                q = (2 * abs(num) + den) // (2 * den)
                if num < 0:
                    q = -q
                o[i] = min(max(q, -omax), omax)


@njit(inline="always")
def _abs_row(x_row, npix, dtype):
    """|x| of one row of codes as a flat run of ``npix`` pixels (padding pixels zero), 64-byte
    aligned, with 64 spare zero bytes: what the GDN's 1x1 convolution reads. Built per row,
    in cache, rather than as a whole-image buffer."""
    wd, c = x_row.shape
    n = npix * c
    raw = np.empty(n + 128, dtype)  # 128 elements: room to align, and 64 spare bytes
    size = raw.itemsize
    skip = ((-raw.ctypes.data) % 64) // size
    buf = raw[skip: skip + n + 64 // size]
    for i in range(wd):
        for k in range(c):
            v = np.int32(x_row[i, k])  # widened first: -(-128) does not fit int8
            buf[i * c + k] = -v if v < 0 else v
    buf[wd * c:] = 0
    return buf


@njit(**JIT_PARALLEL)
def _gdn_simd(x, npix, wf, blocks, nv, pairs, beta, coutp, inverse, gmult, gshift, imult,
              ishift, fast, omax, out):
    h, wd, c = x.shape
    for oy in prange(h):
        af = _abs_row(x[oy], npix, np.int16)
        acc = np.empty(npix * coutp, np.int32)
        _init_acc(acc, beta, npix, coutp)
        _phase_simd(af, 0, 0, c, 1, wf, blocks, nv, pairs, acc, 0, coutp, npix)
        _gdn_epilogue(acc, coutp, x[oy], inverse, gmult, gshift, imult, ishift, fast, omax,
                      out[oy])


@njit(**JIT_PARALLEL)
def _gdn_portable(x, npix, wt, narrow, beta, coutp, inverse, gmult, gshift, imult, ishift, fast,
                  omax, out):
    h, wd, c = x.shape
    for oy in prange(h):
        af = _abs_row(x[oy], npix, np.int16)
        acc = np.empty(npix * coutp, np.int32)
        _init_acc(acc, beta, npix, coutp)
        _phase_portable(af, 0, 0, c, wt, narrow, acc, 0, coutp, npix)
        _gdn_epilogue(acc, coutp, x[oy], inverse, gmult, gshift, imult, ishift, fast, omax,
                      out[oy])


@njit(**JIT_PARALLEL)
def _gdn_wssd(x, npix, wf, blocks, nv, pairs, beta, coutp, inverse, gmult, gshift, imult,
              ishift, fast, omax, out):
    # 16-bit codes on the VNNI path: |x| as int16 pairs against int16 gamma (vpdpwssd). The
    # twin of _gdn_simd, kept apart like _gdn_vnni so that hosts without VNNI never compile a
    # kernel that holds VNNI instructions.
    h, wd, c = x.shape
    for oy in prange(h):
        af = _abs_row(x[oy], npix, np.int16)
        acc = np.empty(npix * coutp, np.int32)
        _init_acc(acc, beta, npix, coutp)
        _phase_wssd(af, 0, 0, c, 1, wf, blocks, nv, pairs, acc, 0, coutp, npix)
        _gdn_epilogue(acc, coutp, x[oy], inverse, gmult, gshift, imult, ishift, fast, omax,
                      out[oy])


@njit(**JIT_PARALLEL)
def _gdn_vnni(x, npix, wf, blocks, nv, quads, beta, coutp, inverse, gmult, gshift, imult,
              ishift, fast, omax, ones, out):
    # |x| as bytes (it is at most 128) against gamma - 128, so each pixel's accumulators start
    # at beta + 128 * sum|x| (wrapping like the sums).
    h, wd, c = x.shape
    chunks = ones.shape[0] // 64
    for oy in prange(h):
        af = _abs_row(x[oy], npix, np.uint8)
        total = np.zeros(npix, np.int32)
        for p in range(0, npix, _SUM_PIX):
            _mk_vnni_sum(af, p * c, c, 0, 1, ones, 0, 0, 0, chunks, total, p, 1)
        acc = np.empty(npix * coutp, np.int32)
        for p in range(npix):
            acc[p * coutp: (p + 1) * coutp] = beta + np.int32(128) * total[p]
        _phase_vnni(af, 0, 0, c, 1, wf, blocks, nv, quads, acc, 0, coutp, npix, _BYTES)
        _gdn_epilogue(acc, coutp, x[oy], inverse, gmult, gshift, imult, ishift, fast, omax,
                      out[oy])


def _ones(n):
    """A run of ``n`` int8 ones padded with zeros to whole 64-byte chunks."""
    ones = np.zeros(-(-n // 64) * 64, np.int8)
    ones[:n] = 1
    return ones


# Pixels of a VNNI GDN row are a multiple of the micro-kernel's 6 or 12 and of the 8 of the
# |x| sums, so that neither reads nor writes past the row's padding.
_GDN_VNNI_UNIT = 24


def _run_gdn(x, packed, beta, inverse, gmult, gshift, imult, ishift, omax):
    path = _layer_path(packed, x)
    h, wd, c = x.shape
    unit = _GDN_VNNI_UNIT if path == "vnni" else _pixel_unit(packed, path)
    npix = -(-wd // unit) * unit
    wide = x.dtype == np.int16
    out = np.empty(x.shape, np.int8 if omax == 127 else np.int16)
    # The largest norm any input can produce, for the fast GDN division (its top bit).
    norm_max = int(beta.max(initial=0)) + _gdn_input_max(x) * int(packed.gamma_l1_max)
    fast = (2 * (norm_max << max(gshift, 0))) * (64 if omax == 127 else 1024) < 2**62
    if path == "vnni" and wide:
        _gdn_wssd(x, npix, packed.wssd[0], packed.vblocks, packed.vnv, packed.wpairs[0],
                  _padded_bias(beta, packed.vcoutp), packed.vcoutp, inverse, gmult, gshift,
                  imult, ishift, fast, omax, out)
    elif path == "vnni":
        _gdn_vnni(x, npix, packed.vnni[0], packed.vblocks, packed.vnv, packed.quads[0],
                  _padded_bias(beta, packed.vcoutp), packed.vcoutp, inverse, gmult, gshift,
                  imult, ishift, fast, omax, _ones(c), out)
    elif path == "avx2":
        _gdn_simd(x, npix, packed.simd[0], packed.blocks, packed.nv, packed.pairs[0],
                  _padded_bias(beta, packed.coutp), packed.coutp, inverse, gmult, gshift,
                  imult, ishift, fast, omax, out)
    else:
        _gdn_portable(x, npix, packed.portable[0], packed.narrow, beta, packed.cout, inverse,
                      gmult, gshift, imult, ishift, fast, omax, out)
    return out


def _gdn_input_max(x) -> int:
    """The largest ``|x|`` that codes of ``x``'s type can have (int16: -32768 is refused)."""
    return 128 if x.dtype == np.int8 else 32767


def _check_gdn(x, gamma, beta):
    x = _require(x, "x", _CODES, 3)
    if isinstance(gamma, PackedWeights):
        if gamma.kind != "gdn":
            raise TypeError("gamma: packed convolution weights where GDN weights were expected")
        packed = gamma
        shape = gamma.shape
    else:
        gamma = _require(gamma, "gamma", (np.dtype(np.uint8),), 2)
        packed = None
        shape = gamma.shape
    beta = _require(beta, "beta", _I32, 1)
    c = x.shape[2]
    if shape != (c, c) or beta.shape != (c,):
        raise ValueError(f"GDN shapes do not match: x {x.shape}, gamma {shape}")
    packed = packed if packed is not None else pack_gdn_weights(gamma)
    if x.dtype == np.int16:
        # 16-bit codes are symmetric (|x| must fit int16), and the int32 norm must not wrap
        # whatever they are; 8-bit codes cannot make it wrap with 8-bit gamma and int32 beta
        # below 2**24 per the loader, and are not checked here.
        if x.size and int(x.min()) == -32768:
            raise ValueError("16-bit GDN input codes must be in [-32767, 32767]")
        if int(beta.max(initial=0)) + 32767 * int(packed.gamma_l1_max) >= 2**31:
            raise ValueError("GDN norm of 16-bit inputs could exceed int32")
    return x, packed, beta


def _check_out_max(out_max) -> int:
    out_max = int(out_max)
    if out_max not in GDN_OUT_MAX:
        raise ValueError(f"GDN output range must be one of {GDN_OUT_MAX}, got {out_max}")
    return out_max


def gdn(x, gamma, beta, mult, shift, out_max=127):
    """See ``reference.gdn``; ``mult`` int64 (C,), ``shift`` a Python int; ``gamma`` may be
    packed by ``pack_gdn_weights``."""
    out_max = _check_out_max(out_max)
    x, packed, beta = _check_gdn(x, gamma, beta)
    mult = _require(mult, "mult", (np.dtype(np.int64),), 1)
    if mult.shape[0] != x.shape[2]:
        raise ValueError(f"GDN multipliers must have {x.shape[2]} entries")
    return _run_gdn(x, packed, beta, False, mult, int(shift), *_NO_REQUANT[:2], out_max)


def igdn(x, gamma, beta, mult, shift, out_max=127):
    """See ``reference.igdn``; ``gamma`` may be packed by ``pack_gdn_weights``."""
    out_max = _check_out_max(out_max)
    x, packed, beta = _check_gdn(x, gamma, beta)
    mult, shift = _check_requant(mult, shift, x.shape[2])
    return _run_gdn(x, packed, beta, True, np.zeros(1, np.int64), 0, mult, shift, out_max)


# ---------------------------------------------------------------------------------------------
# Element-wise: requantization, GDN / inverse GDN, scale index, codebooks


def _check_requant(mult, shift, channels):
    mult = _require(mult, "mult", _I32, 1)
    shift = _require(shift, "shift", _I32, 1)
    if mult.shape[0] != channels or shift.shape[0] != channels:
        raise ValueError(f"requantization tables must have {channels} entries")
    if shift.min() < 1 or shift.max() > 62:
        raise ValueError("requantization shifts must be in 1..62")
    return mult, shift


@njit(**JIT_PARALLEL)
def _requantize_kernel(acc, mult, shift, leaky_mult, leaky_shift, lo, hi, out):
    rows, c = acc.shape
    for r in prange(rows):
        for j in range(c):
            out[r, j] = _requant_value(acc[r, j], mult[j], shift[j], leaky_mult, leaky_shift,
                                       lo, hi)


def requantize(acc, mult, shift, leaky_mult, leaky_shift, lo, hi):
    """See ``reference.requantize``; ``acc`` is int32 (..., C), the result int32."""
    acc = _require(acc, "acc", _I32, acc.ndim if isinstance(acc, np.ndarray) else 3)
    mult, shift = _check_requant(mult, shift, acc.shape[-1])
    flat = acc.reshape(-1, acc.shape[-1])
    out = np.empty(flat.shape, np.int32)
    _requantize_kernel(flat, mult, shift, leaky_mult, leaky_shift, lo, hi, out)
    return out.reshape(acc.shape)


@njit(**JIT_PARALLEL)
def _scale_index_kernel(acc, mult, offset, shift, levels, out):
    n, c = acc.shape
    for p in prange(n):
        for j in range(c):
            v = np.int64(acc[p, j]) * np.int64(mult[j]) + np.int64(offset[j])
            r = (v + (np.int64(1) << (shift - 1))) >> shift
            out[p, j] = min(max(r, 0), levels - 1)


def scale_index(acc, mult, offset, shift, levels):
    """See ``reference.scale_index``; ``mult``/``offset`` int64 (C,)."""
    acc = _require(acc, "acc", _I32, 3)
    mult = _require(mult, "mult", (np.dtype(np.int64),), 1)
    offset = _require(offset, "offset", (np.dtype(np.int64),), 1)
    if mult.shape[0] != acc.shape[2] or offset.shape[0] != acc.shape[2]:
        raise ValueError(f"scale index tables must have {acc.shape[2]} entries")
    out = np.empty(acc.shape, np.int32)
    _scale_index_kernel(acc.reshape(-1, acc.shape[2]), mult, offset, int(shift), int(levels),
                        out.reshape(-1, acc.shape[2]))
    return out


@njit(**JIT_PARALLEL)
def _codebook_encode_kernel(values, thresholds, out):
    n = values.shape[0]
    for p in prange(n):
        v = values[p]
        lo, hi = 0, thresholds.shape[0]
        while lo < hi:  # count of thresholds <= v, by bisection
            mid = (lo + hi) >> 1
            if thresholds[mid] <= v:
                lo = mid + 1
            else:
                hi = mid
        out[p] = lo


def codebook_encode(values, thresholds):
    """See ``reference.codebook_encode``."""
    values = _require(values, "values", _I32, np.ndim(values))
    thresholds = _require(thresholds, "thresholds", _I32, 1)
    out = np.empty(values.shape, np.uint8)
    _codebook_encode_kernel(values.reshape(-1), thresholds, out.reshape(-1))
    return out


@njit(**JIT_PARALLEL)
def _codebook_decode_kernel(codes, lut, out):
    for p in prange(codes.shape[0]):
        out[p] = lut[codes[p]]


def codebook_decode(codes, lut):
    """See ``reference.codebook_decode``."""
    codes = _require(codes, "codes", (np.dtype(np.uint8),), np.ndim(codes))
    lut = _require(lut, "lut", (np.dtype(np.int16),), 1)
    if lut.shape[0] != 256:
        raise ValueError("a codebook has 256 entries")
    out = np.empty(codes.shape, np.int16)
    _codebook_decode_kernel(codes.reshape(-1), lut, out.reshape(-1))
    return out
