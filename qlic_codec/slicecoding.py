"""The ``y`` stream of a channel-conditional model: one segment per slice, in slice order.

The encoder and the decoder walk the slices in the same order (``engine.slices.SliceState``):
each slice's means and tables depend on the slices before it, so the decoder reads a segment,
reconstructs the slice, and only then knows the next segment's tables.
"""

import numpy as np

from .entropy import coder


def encode_y(network, y_tables, y_g: np.ndarray, acc_p: np.ndarray | None, level: int,
             z: np.ndarray | None = None, rounding=None):
    """``(y stream, y_g_dec)``: the coded slices and the latent the synthesis reads, from
    h_s's accumulators ``acc_p`` kept whole, or (``acc_p`` None) from ``z``. ``rounding``
    (an ``rdoq.Rounding``, or None for the nearest symbols) chooses each slice's symbols
    before the next slice's tables are computed from them."""
    cc = network.cc
    state = cc.start(acc_p, level) if acc_p is not None else cc.start_from_z(z, level)
    segments = []
    for i, (a, n) in enumerate(zip(cc.starts, cc.sizes)):
        mean_g, index = state.parameters(i)
        latents = np.ascontiguousarray(y_g[..., a:a + n])
        symbols = network.symbols(latents, mean_g)
        if rounding is not None:
            rounding(symbols, latents, mean_g, index)
        segments.append((symbols.reshape(-1), index.reshape(-1)))
        state.finish(i, network.reconstruct(symbols, mean_g))
    return coder.encode_segments(segments, y_tables), state.y_g_dec


def decode_y(network, y_tables, y_stream: bytes, z: np.ndarray, level: int) -> np.ndarray:
    """The latent ``y_g_dec`` that the synthesis reads, from the ``y`` stream and the decoded
    ``z`` (h_s runs here, in bands)."""
    state = network.cc.start_from_z(z, level)
    return decode_slices(network, coder.SegmentDecoder(y_stream, y_tables), state)


def decode_slices(network, reader, state) -> np.ndarray:
    """``decode_y`` from its slice state on: each slice's networks, then its symbols from
    ``reader`` (a ``coder.SegmentDecoder``), then its residual."""
    for i in range(len(network.cc.sizes)):
        mean_g, index = state.parameters(i)
        symbols = reader.decode(index.reshape(-1)).reshape(index.shape)
        state.finish(i, network.reconstruct(symbols, mean_g))
    return state.y_g_dec
