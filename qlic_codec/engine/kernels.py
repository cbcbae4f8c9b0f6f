"""Numba integer kernels, equal bit for bit to ``reference.py``.

Each public function validates dtypes, contiguity and shapes once, allocates the output (or
checks the one it is given: the kernels that make codes take ``out``), and
calls a private ``@njit`` kernel that trusts its input (no error branches inside). Kernels run
``parallel`` over output rows: every output element is computed by exactly one thread in
integer arithmetic, so the result does not depend on the thread count.

Convolutions are implicit GEMMs over rows of output pixels (``convolution``), and GDN /
inverse GDN a 1x1 convolution of ``|x|`` with ``gamma`` (``gdn``). Three multiply paths give
the same integers:

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
* ``amx`` (x86-64 hosts with AMX-INT8, on Linux): the ``vnni`` path's operands multiplied in
  AMX tiles (``amxtiles``), 16,384 products per instruction, for every layer whose output
  channels come in blocks of 32: convolutions and transposed convolutions (``tdpbusd``: a
  16x64 uint8 tile of pixels times a 16x64 int8 tile of the packed weights, each tap row's run
  padded to whole 64-byte rows with zero weights), 16-bit codes split into a signed high byte
  and an unsigned low one (``tdpbssd`` and ``tdpbusd``, the high sums shifted left by 8), GDN
  and inverse GDN (``tdpbuud``: |x| against unsigned gamma, the same split for 16-bit codes),
  and the RGB output layer as one 3x3 convolution into its four phases' channels
  (``convolution._deconv_merged``). The rest runs as on ``vnni``.
* ``portable`` (any machine): plain Numba loops over the same decomposition, vectorised by
  LLVM over the output channels with int32 accumulators.

``QLIC_KERNELS=portable`` (or ``avx2``, ``vnni``, ``amx``) forces a path; ``set_path`` switches at run time (tests,
benchmarks). Integer addition modulo ``2**32`` is associative, and the model loader proves
that no accumulator leaves int32, so the summation order cannot change a result.

Weights can be packed once with ``pack_conv_weights`` / ``pack_deconv_weights`` /
``pack_gdn_weights``; the convolution functions accept the packed object wherever they take
``w`` (or ``gamma``), and pack plain arrays on the fly.

This module is the kernels' interface: the network (``graph.py``), the tests and the
benchmarks use the names it gathers from the modules that hold them:

- ``cpu``: the multiply paths the host has, the one selected, the jit options;
- ``microkernels``: the LLVM IR micro-kernels of the ``avx2`` and ``vnni`` paths;
- ``amxtiles``: the AMX tile kernel of the ``amx`` path;
- ``packing``: a layer's weights in the layout of each path;
- ``convolution``: convolutions and transposed convolutions, plain or requantized;
- ``highword``: the requantizing epilogue in 32-bit lanes, from the products' high words,
  for layers whose every shift is at least 33 (every path);
- ``gdn``: GDN and inverse GDN;
- ``fused``: a transposed convolution and the inverse GDN after it, and the RGB output layer
  and the pixel head, each pair as one step;
- ``elementwise``: requantization, scale index, and the operand checks and buffers the others
  share;
- ``slicekernels``: the element-wise steps of a channel-conditional slice, fused.

Numba's cache checks only the source file of the function it compiled, not the files of what
that function calls or inlines: after editing one of these modules, delete the engine's
``__pycache__``, so that the kernels of the modules that use it are compiled again.
"""

from .convolution import _layer_path  # noqa: F401  (the path a layer runs on: tests check it)
from .convolution import conv2d, conv2d_requant, conv_transpose2d, conv_transpose2d_requant
from .cpu import PATHS, active_path, available_paths, set_path, use_path
from .elementwise import (requantize, requantize_clamped, requantize_pixels, scale_index,
                          scale_index_sum)
from .fused import conv_transpose2d_pixels, conv_transpose2d_requant_igdn, igdn_fuses
from .gdn import gdn, igdn
from .packing import PackedWeights, pack_conv_weights, pack_deconv_weights, pack_gdn_weights
from .slicekernels import reconstruct, slice_heads, slice_inputs, slice_residual

__all__ = ["PATHS", "PackedWeights", "active_path", "available_paths", "conv2d", "conv2d_requant",
           "conv_transpose2d", "conv_transpose2d_pixels", "conv_transpose2d_requant",
           "conv_transpose2d_requant_igdn", "gdn", "igdn", "igdn_fuses", "pack_conv_weights",
           "pack_deconv_weights", "pack_gdn_weights", "reconstruct", "requantize",
           "requantize_pixels", "scale_index", "scale_index_sum", "set_path", "slice_heads",
           "slice_residual", "use_path"]
