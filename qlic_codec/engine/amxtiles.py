"""The ``amx`` path's kernels: AMX tile multiplies, written in LLVM IR.

An AMX core holds eight tile registers of up to 16 rows of 64 bytes. ``tdpbusd`` adds to a
16x16 int32 tile ``C`` the products of a 16x64 uint8 tile ``A`` (16 pixels, 64 input bytes)
and a 16x64 int8 tile ``B`` (16 quads of input bytes, 16 output channels, four bytes each):
``C[m][n] += sum_k A[m][k] * B[k // 4][4 n + k % 4]``, 16,384 products in one instruction,
wrapping modulo ``2**32`` like the other paths. ``tdpbssd`` (int8 x int8), ``tdpbsud``
(int8 x uint8) and ``tdpbuud`` (uint8 x uint8) are the same with other signs.

``amx_block`` takes the ``vnni`` path's operands: inputs offset by 128 to unsigned bytes, one
tap row's ``(kx, ci)`` run contiguous per pixel, and weights packed as ``[tap row][block]
[quad][channel][4]``, whose rows of one 16-channel vector are exactly the rows of a ``B`` tile
(stride ``nv * 64`` bytes). A block of 32 pixels x 32 channels is four ``C`` tiles, loaded
from the row's accumulators (or zeroed), fed by two ``A`` and two ``B`` tiles per 64-byte
chunk of every tap row, and stored back. Its variants: ``amx_block_signed_first`` for the
signed high bytes of 16-bit codes, from zeroed tiles, and ``amx_block_unsigned`` (and
``_first``) for GDN's |x| against unsigned gamma.

``amx_merged`` / ``amx_merged_wide`` serve the RGB output layer: its four phases as one 3x3
convolution into 16 columns, ``(py, px, channel)`` (at most 4 channels), so that 32 pixels
of input, loaded as they are, fill two ``C`` tiles per byte plane.

The tile configuration belongs to the thread, and the kernels run on Numba's worker threads:
each unit of work a thread takes starts with ``amx_configure()`` (``ldtilecfg``) and ends with
``amx_release()`` (``tilerelease``), and the tile kernels run only between the two.

Numba compiles these only where the ``amx`` path runs: a CPU without AMX cannot select these
instructions, so nothing that another path runs may call them.
"""

from . import cpu  # noqa: F401  (first: the engine's start-up imports Numba)
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

TILE_ROWS = 16  # pixels of an A tile, quads of a B tile
TILE_BYTES = 64  # bytes of a tile row: 64 input bytes (A), 16 int32 channels (B, C)
PIXELS = 2 * TILE_ROWS  # pixels of one block (two A tiles)
CHANNELS = 2 * 16  # channels of one block (two B tiles)

# Tile numbers: the four accumulators, the two input tiles, the two weight tiles.
_C = ((0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1))  # (tile, pixel half, vector)
_A = (4, 5)
_B = (6, 7)


def _tile_config() -> bytearray:
    # The 64-byte ``ldtilecfg`` operand: palette 1, then per tile its bytes per row (u16,
    # from byte 16) and its rows (u8, from byte 48); all eight tiles are 16 x 64 bytes.
    cfg = bytearray(64)
    cfg[0] = 1
    for t in range(8):
        cfg[16 + 2 * t] = TILE_BYTES
        cfg[48 + t] = TILE_ROWS
    return cfg


def _declare(module, name, args):
    from llvmlite import ir
    return cgutils.get_or_insert_function(module, ir.FunctionType(ir.VoidType(), args), name)


@intrinsic
def amx_configure(typingctx):
    """Configures this thread's tiles as ``amx_block`` uses them (``ldtilecfg``)."""
    from llvmlite import ir

    def codegen(context, builder, signature, args):
        I8 = ir.IntType(8)
        cfg_type = ir.ArrayType(I8, 64)
        cfg = cgutils.alloca_once(builder, cfg_type)
        builder.store(ir.Constant(cfg_type, _tile_config()), cfg)
        ldtilecfg = _declare(builder.module, "llvm.x86.ldtilecfg", [I8.as_pointer()])
        builder.call(ldtilecfg, [builder.bitcast(cfg, I8.as_pointer())])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def amx_release(typingctx):
    """Releases this thread's tiles (``tilerelease``): the state saved on a context switch is
    small again."""

    def codegen(context, builder, signature, args):
        builder.call(_declare(builder.module, "llvm.x86.tilerelease", []), [])
        return context.get_dummy_value()

    return types.void(), codegen


def _block_codegen(product, first=False, biased=False):
    """The code of ``amx_block`` with the tile product ``product`` (an LLVM intrinsic's name:
    ``tdpbusd`` for int8 weights, ``tdpbuud`` for uint8 ones); ``first`` starts from zeroed
    accumulator tiles (``tilezero``) instead of loading them, ``biased`` from the bias (two
    more arguments, the int32 bias array and the offset of the block's first channel in it,
    each tile row loaded from the same 64 bytes: a load of stride 0)."""

    def codegen(context, builder, signature, args):
        from llvmlite import ir

        x, xoff, xpix, rowlen, kh, chunks, w, woff, wtap, wrow, acc, aoff, apix = args[:13]
        tx, tw, ta = signature.args[0], signature.args[6], signature.args[10]
        I8, I64 = ir.IntType(8), ir.IntType(64)
        byte_ptr = I8.as_pointer()
        xptr = builder.bitcast(cgutils.create_struct_proxy(tx)(context, builder, value=x).data,
                               byte_ptr)
        wptr = builder.bitcast(cgutils.create_struct_proxy(tw)(context, builder, value=w).data,
                               byte_ptr)
        aptr = builder.bitcast(cgutils.create_struct_proxy(ta)(context, builder, value=acc).data,
                               byte_ptr)
        module = builder.module
        tileload = _declare(module, "llvm.x86.tileloadd64", [I8, byte_ptr, I64])
        tilestore = _declare(module, "llvm.x86.tilestored64", [I8, byte_ptr, I64])
        tdp = _declare(module, f"llvm.x86.{product}", [I8, I8, I8])

        def c(n):
            return ir.Constant(I64, n)

        def tile(n):
            return ir.Constant(I8, n)

        # The accumulators in bytes: pixel p, channel c at 4 * (aoff + p*apix + c).
        abase = builder.mul(aoff, c(4))
        astride = builder.mul(apix, c(4))
        c_ptrs = []
        for t, half, vec in _C:
            off = builder.add(abase, builder.add(builder.mul(astride, c(TILE_ROWS * half)),
                                                 c(TILE_BYTES * vec)))
            c_ptrs.append((t, builder.gep(aptr, [off])))
        tilezero = _declare(module, "llvm.x86.tilezero", [I8])
        if biased:
            tb = signature.args[13]
            bptr = builder.bitcast(
                cgutils.create_struct_proxy(tb)(context, builder, value=args[13]).data, byte_ptr)
            bbase = builder.mul(args[14], c(4))
        for (t, ptr), (_, half, vec) in zip(c_ptrs, _C):
            if first:
                builder.call(tilezero, [tile(t)])
            elif biased:
                bias_row = builder.gep(bptr, [builder.add(bbase, c(TILE_BYTES * vec))])
                builder.call(tileload, [tile(t), bias_row, c(0)])
            else:
                builder.call(tileload, [tile(t), ptr, astride])

        xhalf = builder.mul(xpix, c(TILE_ROWS))  # from the first A tile to the second
        wchunk = builder.mul(wrow, c(TILE_ROWS))  # 16 quads of weights
        with cgutils.for_range(builder, kh) as tap:
            xt = builder.add(xoff, builder.mul(tap.index, rowlen))
            wt = builder.add(woff, builder.mul(tap.index, wtap))
            with cgutils.for_range(builder, chunks) as chunk:
                xo = builder.add(xt, builder.mul(chunk.index, c(TILE_BYTES)))
                wo = builder.add(wt, builder.mul(chunk.index, wchunk))
                builder.call(tileload, [tile(_A[0]), builder.gep(xptr, [xo]), xpix])
                builder.call(tileload, [tile(_A[1]), builder.gep(xptr, [builder.add(xo, xhalf)]),
                                        xpix])
                builder.call(tileload, [tile(_B[0]), builder.gep(wptr, [wo]), wrow])
                builder.call(tileload, [tile(_B[1]),
                                        builder.gep(wptr, [builder.add(wo, c(TILE_BYTES))]),
                                        wrow])
                for t, half, vec in _C:
                    builder.call(tdp, [tile(t), tile(_A[half]), tile(_B[vec])])

        for t, ptr in c_ptrs:
            builder.call(tilestore, [tile(t), ptr, astride])
        return context.get_dummy_value()

    return codegen


def _block_signature(x, w, acc):
    i64 = types.int64
    return types.void(x, i64, i64, i64, i64, i64, w, i64, i64, i64, acc, i64, i64)


@intrinsic
def amx_block(typingctx, x, xoff, xpix, rowlen, kh, chunks, w, woff, wtap, wrow, acc, aoff,
              apix):
    """Adds to the int32 accumulators ``acc[aoff + p*apix + c]`` (p < 32, c < 32) the sums over
    tap rows ``t < kh`` and bytes ``k < 64 * chunks`` of ``x[xoff + t*rowlen + p*xpix + k] *
    w[woff + t*wtap + (k // 4)*wrow + 4*(c % 16) + (c // 16)*64 + k % 4]``: uint8 ``x``, int8
    ``w``, offsets in elements, ``kh >= 1``, ``chunks >= 1``. The tiles must be configured
    (``amx_configure``)."""
    return _block_signature(x, w, acc), _block_codegen("tdpbusd")


@intrinsic
def amx_block_biased(typingctx, x, xoff, xpix, rowlen, kh, chunks, w, woff, wtap, wrow, acc, aoff,
                     apix, bias, boff):
    """``amx_block`` that sets the accumulators to ``bias[boff + c]`` plus the sums, instead
    of adding the sums to them: the accumulators need no initialising pass."""
    i64 = types.int64
    sig = types.void(x, i64, i64, i64, i64, i64, w, i64, i64, i64, acc, i64, i64, bias, i64)
    return sig, _block_codegen("tdpbusd", biased=True)


@intrinsic
def amx_block_signed_first(typingctx, x, xoff, xpix, rowlen, kh, chunks, w, woff, wtap, wrow, acc,
                           aoff, apix):
    """``amx_block`` with int8 inputs ``x`` (``tdpbssd``: the high bytes of 16-bit codes),
    setting the accumulators to the sums instead of adding them (from zeroed tiles)."""
    return _block_signature(x, w, acc), _block_codegen("tdpbssd", True)


@intrinsic
def amx_block_unsigned_first(typingctx, x, xoff, xpix, rowlen, kh, chunks, w, woff, wtap, wrow,
                             acc, aoff, apix):
    """``amx_block_unsigned`` that sets the accumulators to the sums instead of adding them."""
    return _block_signature(x, w, acc), _block_codegen("tdpbuud", True)


@intrinsic
def amx_block_unsigned(typingctx, x, xoff, xpix, rowlen, kh, chunks, w, woff, wtap, wrow, acc,
                       aoff, apix):
    """``amx_block`` with uint8 weights ``w`` (``tdpbuud``): GDN's gamma as it is."""
    return _block_signature(x, w, acc), _block_codegen("tdpbuud")


# The RGB output layer: a transposed convolution into at most 4 channels as one 3x3
# convolution into the 16 columns of its four phases (``PackedWeights.merged``).
MERGED_COLUMNS = 16  # (py, px, channel) of the four phases, the rest zero
MERGED_PIXELS = 2 * TILE_ROWS  # pixels of one ``amx_merged`` block


def _merged_codegen(wide):
    """The code of ``amx_merged`` (``wide``: also the low bytes, ``amx_merged_wide``)."""

    def codegen(context, builder, signature, args):
        from llvmlite import ir

        xhi, xlo, row0, row1, row2, xpix, chunks, w, acc, aoff, loff = args
        types_ = signature.args
        I8, I64 = ir.IntType(8), ir.IntType(64)
        byte_ptr = I8.as_pointer()

        def data(t, v):
            return builder.bitcast(cgutils.create_struct_proxy(t)(context, builder, value=v).data,
                                   byte_ptr)

        hptr, lptr = data(types_[0], xhi), data(types_[1], xlo)
        wptr, aptr = data(types_[7], w), data(types_[8], acc)
        module = builder.module
        tileload = _declare(module, "llvm.x86.tileloadd64", [I8, byte_ptr, I64])
        tilestore = _declare(module, "llvm.x86.tilestored64", [I8, byte_ptr, I64])
        tilezero = _declare(module, "llvm.x86.tilezero", [I8])
        signed = _declare(module, "llvm.x86.tdpbssd", [I8, I8, I8])
        unsigned = _declare(module, "llvm.x86.tdpbusd", [I8, I8, I8])

        def c(n):
            return ir.Constant(I64, n)

        def tile(n):
            return ir.Constant(I8, n)

        # Tiles 0, 1: the high bytes' sums of pixels 0-15 and 16-31; 2, 3: the low bytes';
        # 4, 5, 6: inputs; 7: the weights, loaded once for all four products.
        for t in range(4 if wide else 2):
            builder.call(tilezero, [tile(t)])
        half = builder.mul(xpix, c(TILE_ROWS))
        tile_bytes = TILE_ROWS * TILE_BYTES
        for tap, row in enumerate((row0, row1, row2)):
            with cgutils.for_range(builder, chunks) as chunk:
                xo = builder.add(row, builder.mul(chunk.index, c(TILE_BYTES)))
                wo = builder.mul(builder.add(builder.mul(c(tap), chunks), chunk.index),
                                 c(tile_bytes))
                builder.call(tileload, [tile(7), builder.gep(wptr, [wo]), c(TILE_BYTES)])
                builder.call(tileload, [tile(4), builder.gep(hptr, [xo]), xpix])
                builder.call(tileload, [tile(5), builder.gep(hptr, [builder.add(xo, half)]),
                                        xpix])
                if wide:
                    builder.call(tileload, [tile(6), builder.gep(lptr, [xo]), xpix])
                builder.call(signed, [tile(0), tile(4), tile(7)])
                builder.call(signed, [tile(1), tile(5), tile(7)])
                if wide:
                    builder.call(unsigned, [tile(2), tile(6), tile(7)])
                    builder.call(tileload, [tile(4), builder.gep(lptr, [builder.add(xo, half)]),
                                            xpix])
                    builder.call(unsigned, [tile(3), tile(4), tile(7)])
        stores = [(0, aoff), (1, aoff)] + ([(2, loff), (3, loff)] if wide else [])
        for t, off in stores:
            ptr = builder.gep(aptr, [builder.add(builder.mul(off, c(4)), c(tile_bytes * (t % 2)))])
            builder.call(tilestore, [tile(t), ptr, c(TILE_BYTES)])
        return context.get_dummy_value()

    return codegen


def _merged_signature(xhi, xlo, w, acc):
    i64 = types.int64
    return types.void(xhi, xlo, i64, i64, i64, i64, i64, w, acc, i64, i64)


@intrinsic
def amx_merged(typingctx, xhi, xlo, row0, row1, row2, xpix, chunks, w, acc, aoff, loff):
    """Sets ``acc[aoff + 16*p + n]`` (p < 32 pixels, n < 16 columns) to the sums over tap rows
    ``t < 3`` and bytes ``k < 64 * chunks`` of ``xhi[row_t + p*xpix + k] * w[(t*chunks +
    k // 64)*1024 + (k % 64 // 4)*64 + 4*n + k % 4]``: int8 ``xhi`` and ``w``
    (``tdpbssd``), offsets in elements. ``xlo`` is not read. The tiles must be configured
    (``amx_configure``)."""
    return _merged_signature(xhi, xlo, w, acc), _merged_codegen(False)


@intrinsic
def amx_merged_wide(typingctx, xhi, xlo, row0, row1, row2, xpix, chunks, w, acc, aoff, loff):
    """``amx_merged`` of the high bytes ``xhi`` of 16-bit codes into ``acc[aoff + ...]``, and
    of their unsigned low bytes ``xlo`` (``tdpbusd``) into ``acc[loff + ...]``, on the same
    weights."""
    return _merged_signature(xhi, xlo, w, acc), _merged_codegen(True)
