"""The ``y`` stream of a channel-conditional model: one segment per slice, in slice order.

The encoder and the decoder walk the slices in the same order (``engine.slices.SliceState``):
each slice's means and tables depend on the slices before it, so the decoder reads a segment,
reconstructs the slice, and only then knows the next segment's tables.
"""

import numpy as np

from .entropy import coder


def encode_y(network, y_tables, y_g: np.ndarray, acc_p: np.ndarray, level: int):
    """``(y stream, y_g_dec)``: the coded slices and the latent the synthesis reads."""
    cc = network.cc
    state = cc.start(acc_p, level)
    segments = []
    for i, (a, n) in enumerate(zip(cc.starts, cc.sizes)):
        mean_g, index = state.parameters(i)
        symbols = network.symbols(np.ascontiguousarray(y_g[..., a:a + n]), mean_g)
        segments.append((symbols.reshape(-1), index.reshape(-1)))
        state.finish(i, network.reconstruct(symbols, mean_g))
    return coder.encode_segments(segments, y_tables), state.y_g_dec


def decode_y(network, y_tables, y_stream: bytes, acc_p: np.ndarray, level: int) -> np.ndarray:
    """The latent ``y_g_dec`` that the synthesis reads, from the ``y`` stream."""
    cc = network.cc
    state = cc.start(acc_p, level)
    reader = coder.SegmentDecoder(y_stream, y_tables)
    for i in range(len(cc.sizes)):
        mean_g, index = state.parameters(i)
        symbols = reader.decode(index.reshape(-1)).reshape(index.shape)
        state.finish(i, network.reconstruct(symbols, mean_g))
    return state.y_g_dec
