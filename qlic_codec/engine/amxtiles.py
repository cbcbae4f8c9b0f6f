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

``amx_strip_first`` / ``amx_strip_add`` serve the RGB output layer: the weights of all its
taps as the ``A`` tiles (80 rows: 25 taps x 3 channels and 5 zero rows), 16 pixels as a ``B``
tile (their bytes in quads), so that five ``C`` tiles hold every product of 16 pixels, one
row per (tap, channel).

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


# The RGB output layer: every tap of a transposed convolution as rows of one product.
STRIP_TILES = 5  # C tiles of a strip: 80 rows, the 75 (tap, channel) pairs of 3 channels
STRIP_COLUMNS = 16 * STRIP_TILES
STRIP_PIXELS = 16  # pixels of a strip: the columns of its C tiles
_STRIP_A, _STRIP_B = 5, 6


def _strip_codegen(product, first):
    """The code of ``amx_strip_first`` / ``amx_strip_add``: tile product ``product``; ``first``
    starts from zeroed accumulators (``tilezero``) instead of loading them."""

    def codegen(context, builder, signature, args):
        from llvmlite import ir

        x, xoff, chunks, w, acc, aoff, astride = args
        tx, tw, ta = signature.args[0], signature.args[3], signature.args[4]
        I8, I64 = ir.IntType(8), ir.IntType(64)
        byte_ptr = I8.as_pointer()

        def data(t, v):
            return builder.bitcast(cgutils.create_struct_proxy(t)(context, builder, value=v).data,
                                   byte_ptr)

        xptr, wptr, aptr = data(tx, x), data(tw, w), data(ta, acc)
        module = builder.module
        tileload = _declare(module, "llvm.x86.tileloadd64", [I8, byte_ptr, I64])
        tilestore = _declare(module, "llvm.x86.tilestored64", [I8, byte_ptr, I64])
        tilezero = _declare(module, "llvm.x86.tilezero", [I8])
        tdp = _declare(module, f"llvm.x86.{product}", [I8, I8, I8])

        def c(n):
            return ir.Constant(I64, n)

        def tile(n):
            return ir.Constant(I8, n)

        tile_bytes = TILE_ROWS * TILE_BYTES
        cstride = builder.mul(astride, c(4))  # bytes from one row of products to the next
        abase = builder.mul(aoff, c(4))
        c_ptrs = [builder.gep(aptr, [builder.add(abase, builder.mul(cstride, c(16 * t)))])
                  for t in range(STRIP_TILES)]
        for t, ptr in enumerate(c_ptrs):
            if first:
                builder.call(tilezero, [tile(t)])
            else:
                builder.call(tileload, [tile(t), ptr, cstride])
        with cgutils.for_range(builder, chunks) as chunk:
            xo = builder.add(xoff, builder.mul(chunk.index, c(tile_bytes)))
            builder.call(tileload, [tile(_STRIP_B), builder.gep(xptr, [xo]), c(TILE_BYTES)])
            wo = builder.mul(chunk.index, c(STRIP_TILES * tile_bytes))
            for t in range(STRIP_TILES):
                wt = builder.add(wo, c(t * tile_bytes))
                builder.call(tileload, [tile(_STRIP_A), builder.gep(wptr, [wt]), c(TILE_BYTES)])
                builder.call(tdp, [tile(t), tile(_STRIP_A), tile(_STRIP_B)])
        for t, ptr in enumerate(c_ptrs):
            builder.call(tilestore, [tile(t), ptr, cstride])
        return context.get_dummy_value()

    return codegen


def _strip_signature(x, w, acc):
    i64 = types.int64
    return types.void(x, i64, i64, w, acc, i64, i64)


@intrinsic
def amx_strip_first(typingctx, x, xoff, chunks, w, acc, aoff, astride):
    """Sets ``acc[aoff + n*astride + j]`` (n < 80, j < 16) to the sums over bytes
    ``k < 64 * chunks`` of int8 weights ``w`` packed by ``PackedWeights.strip`` (row n, byte k)
    times int8 pixels in quads, ``x[xoff + (k // 64)*1024 + (k % 64 // 4)*64 + 4*j + k % 4]``
    (pixel j, byte k; ``tdpbssd``). The tiles must be configured (``amx_configure``)."""
    return _strip_signature(x, w, acc), _strip_codegen("tdpbssd", True)


@intrinsic
def amx_strip_add(typingctx, x, xoff, chunks, w, acc, aoff, astride):
    """Adds to ``acc`` what ``amx_strip_first`` sets, for uint8 pixels ``x`` (``tdpbsud``)."""
    return _strip_signature(x, w, acc), _strip_codegen("tdpbsud", False)
