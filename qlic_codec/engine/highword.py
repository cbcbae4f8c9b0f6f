"""Requantization in 32-bit lanes, from the high word of each product.

A requantizing epilogue computes ``clamp((acc * mult + 2**(shift - 1)) >> shift, lo, hi)``
per channel, with int32 ``acc`` and ``mult``: a 64-bit product, which in int64 lanes takes
eight values per vector and a 64-bit shift per lane. Where every shift is at least 33 (every
layer of the shipped models: 33 to 43), the same integers come from the product's high word
``H = (acc * mult) >> 32`` alone:

    (acc * mult + 2**(shift - 1)) >> shift == (H + 2**(shift - 33)) >> (shift - 32)

since ``acc * mult = H * 2**32 + L`` with ``0 <= L < 2**32``, and adding ``L / 2**32 < 1``
to an integer numerator never changes its floor division by a power of two. ``|acc * mult|
<= 2**62``, so ``|H| <= 2**30`` and ``H + 2**(shift - 33) <= 2**30 + 2**29`` fits int32.
LLVM computes the high words of 16 lanes with two widening multiplies (``vpmuldq`` on the
even and the odd lanes on AVX-512) and a shuffle, and the rest in 16 int32 lanes: measured
0.145 against 0.246 ns per value for a row of 960 x 128 codes on an Intel Xeon (AVX-512).

A LeakyReLU before the requantization (``v < 0`` becomes ``(v * lm + 2**(ls - 1)) >> ls``,
with ``0 <= lm <= 2**ls`` and ``1 <= ls <= 16``, what the model loader allows) also stays in
int32 lanes: with ``v = vh * 2**ls + vl`` (``vh = v >> ls``, ``0 <= vl < 2**ls``),

    (v * lm + 2**(ls - 1)) >> ls == vh * lm + ((vl * lm + 2**(ls - 1)) >> ls)

since ``vh * lm * 2**ls`` is a multiple of ``2**ls``. ``vl * lm + 2**(ls - 1) < 2**32`` is
computed unsigned; ``|vh * lm| <= 2**31`` and, for ``v < 0``, the sum lies in ``[v, 0]``. So
the slices' hidden layers and the hyper transforms' (all LeakyReLU) take this epilogue too,
where they took the int64 one.

``requant_high_word`` is written in LLVM IR because Numba's loop vectoriser sizes its
vectors by the widest type in the loop (the int64 product) and so never forms 16 lanes.
The IR is generic (no target intrinsics): it runs on every path, split into narrower
vectors where the CPU has them.
"""

import numpy as np

from . import cpu  # noqa: F401  (first: the engine's start-up imports Numba)
from numba import types
from numba.core import cgutils, errors
from numba.extending import intrinsic

from .elementwise import shift_range

LANES = 16  # values per call's step: channels of one pixel in whole vectors of 16


def high_word_fits(leaky_mult, leaky_shift, shift, cout, out_dtype, lo, hi) -> bool:
    """Whether a requantizing epilogue may run as ``requant_high_word``: no LeakyReLU or one
    of slope ``leaky_mult / 2**leaky_shift`` in [0, 1] with a shift of at most 16, every
    shift at least 33, channels in whole vectors of 16, codes of 8 or 16 bits out, and clamp
    bounds that are int32 values (the lanes clamp in int32; the int64 epilogue clamps
    wider bounds as the reference does)."""
    leaky = int(leaky_shift) == 0 or (1 <= int(leaky_shift) <= 16
                                      and 0 <= int(leaky_mult) <= 1 << int(leaky_shift))
    return (leaky and cout % LANES == 0 and len(shift) > 0
            and shift_range(shift)[0] >= 33
            and -(2**31) <= int(lo) and int(hi) <= 2**31 - 1
            and np.dtype(out_dtype) in (np.dtype(np.int8), np.dtype(np.int16)))


@intrinsic
def requant_high_word(typingctx, acc, aoff, out, ooff, nvec, mult, shift, lo, hi, leaky_mult,
                      leaky_shift):
    """``out[ooff + j] = clamp((v * mult[j] + 2**(shift[j] - 1)) >> shift[j], lo, hi)`` for
    ``j < 16 * nvec``, computed from the products' high words (module doc), where ``v`` is
    ``acc[aoff + j]``, or for ``leaky_shift > 0`` and a negative one its LeakyReLU: int32
    ``acc``, ``mult`` and ``shift`` (every shift in 33..62), int8 or int16 ``out``, the slope
    as ``high_word_fits`` allows."""
    i64, i32 = types.int64, types.int32
    for name, arg in (("acc", acc), ("mult", mult), ("shift", shift)):
        if not isinstance(arg, types.Array) or arg.dtype != i32:
            raise errors.TypingError(f"requant_high_word: {name} must be an int32 array")
    # ``out`` of any integer type compiles (the epilogues that hold this call are compiled
    # for every output type, int32 accumulators and uint8 pixels included); only int8 and
    # int16 reach it (``high_word_fits``).
    if not isinstance(out, types.Array) or not isinstance(out.dtype, types.Integer):
        raise errors.TypingError("requant_high_word: out must be an integer array")
    sig = types.void(acc, i64, out, i64, i64, mult, shift, i64, i64, i64, i64)

    def codegen(context, builder, signature, args):
        from llvmlite import ir

        acc, aoff, out, ooff, nvec, mult, shift, lo, hi, leaky_mult, leaky_shift = args
        t_acc, t_out, t_mult, t_shift = (signature.args[i] for i in (0, 2, 5, 6))

        def data(t, v):
            return cgutils.create_struct_proxy(t)(context, builder, value=v).data

        aptr, optr = data(t_acc, acc), data(t_out, out)
        mptr, sptr = data(t_mult, mult), data(t_shift, shift)
        I64, I32 = ir.IntType(64), ir.IntType(32)
        out_type = context.get_data_type(t_out.dtype)
        v32, v64 = ir.VectorType(I32, LANES), ir.VectorType(I64, LANES)
        v_out = ir.VectorType(out_type, LANES)

        def splat(value):
            vec = ir.Constant(v32, ir.Undefined)
            for i in range(LANES):
                vec = builder.insert_element(vec, value, ir.Constant(I32, i))
            return vec

        vlo = splat(builder.trunc(lo, I32))  # int32 values (``high_word_fits``)
        vhi = splat(builder.trunc(hi, I32))
        word = ir.Constant(v64, [32] * LANES)
        c32 = ir.Constant(v32, [32] * LANES)
        c33 = ir.Constant(v32, [33] * LANES)
        one = ir.Constant(v32, [1] * LANES)

        # The LeakyReLU's terms (module doc): off where its shift is 0, when a shift of 1
        # keeps the lanes' arithmetic defined and the select below keeps ``v``.
        leaky = builder.icmp_signed(">", leaky_shift, ir.Constant(I64, 0))
        ls = builder.select(leaky, builder.trunc(leaky_shift, I32), ir.Constant(I32, 1))
        vls, vlm = splat(ls), splat(builder.trunc(leaky_mult, I32))
        low_bits = builder.sub(builder.shl(one, vls), one)
        half = builder.shl(one, builder.sub(vls, one))
        vleaky = splat(builder.zext(leaky, I32))
        zero = ir.Constant(v32, [0] * LANES)

        def load(ptr, off):
            return builder.load(builder.bitcast(builder.gep(ptr, [off]), v32.as_pointer()),
                                align=4)

        with cgutils.for_range(builder, nvec) as loop:
            j = builder.mul(loop.index, ir.Constant(I64, LANES))
            a, m, s = load(aptr, builder.add(aoff, j)), load(mptr, j), load(sptr, j)
            tail = builder.lshr(builder.add(builder.mul(builder.and_(a, low_bits), vlm), half),
                                vls)
            relu = builder.add(builder.mul(builder.ashr(a, vls), vlm), tail)
            negative = builder.and_(builder.zext(builder.icmp_signed("<", a, zero), v32),
                                    vleaky)
            a = builder.select(builder.icmp_signed("!=", negative, zero), relu, a)
            product = builder.mul(builder.sext(a, v64), builder.sext(m, v64))
            high = builder.trunc(builder.ashr(product, word), v32)
            rounding = builder.shl(one, builder.sub(s, c33))
            v = builder.ashr(builder.add(high, rounding), builder.sub(s, c32))
            v = builder.select(builder.icmp_signed("<", v, vlo), vlo, v)
            v = builder.select(builder.icmp_signed(">", v, vhi), vhi, v)
            dst = builder.bitcast(builder.gep(optr, [builder.add(ooff, j)]), v_out.as_pointer())
            if out_type.width < 32:
                v = builder.trunc(v, v_out)
            elif out_type.width > 32:
                v = builder.sext(v, v_out)
            builder.store(v, dst, align=1)
        return context.get_dummy_value()

    return sig, codegen
