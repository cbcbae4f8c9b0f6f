"""The micro-kernels of the ``avx2`` and ``vnni`` paths, written in LLVM IR.

Numba code cannot ask for ``vpmaddwd``, ``vpdpbusd`` or ``vpdpwssd``. These ``@intrinsic``
functions spell the inner loop of a register block (pixels x channel vectors of int32
accumulators, held in registers across the loop) in LLVM IR with them, one per block shape
and instruction set. Each is made by a factory and bound to a module-level name, where the
jitted kernels that call them (``convolution``, ``gdn``) find them. A jitted kernel is compiled
only when its path runs, so a host without VNNI never compiles a VNNI instruction.
"""

from . import cpu  # noqa: F401  (first: the engine's start-up imports Numba)
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


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
