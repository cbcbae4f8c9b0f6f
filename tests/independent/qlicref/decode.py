"""Decoding, start to end (FORMAT.md section 3.10)."""

import numpy as np

from . import container, network
from .modelfile import FormatError, read_model
from .symbols import Tables, decode_values

BLOCK = 64


def decode_y(model, y_stream, index, mean_g):
    """The y-decoding step: symbols -> y_g_hat (h, w, M). The plain hyperprior reads every
    symbol with the table its scale index names; a channel-conditional model replaces this
    one function (its slices predict their means and scales from earlier slices)."""
    symbols = decode_values(y_stream, index.reshape(-1), Tables(model.arrays, "y"))
    return network.reconstruct(model, symbols.reshape(index.shape), mean_g)


def decode(stream: bytes, model_bytes: bytes) -> np.ndarray:
    """uint8 (H, W, 3) pixels of a ``.qlic`` stream made with the given model file."""
    model = read_model(model_bytes)
    s = container.parse(stream)
    m = model.manifest
    if s.model_id != model.model_id:
        raise FormatError("the stream was made with another model")
    if s.metric != m["metric"] or s.level >= m["levels"]:
        raise FormatError("metric or quality does not match the model")
    ph, pw = -(-s.height // BLOCK), -(-s.width // BLOCK)
    N = m["N"]
    z_index = np.broadcast_to(np.arange(N), (ph, pw, N)).reshape(-1)
    z = decode_values(s.z, z_index, Tables(model.arrays, "z")).reshape(ph, pw, N)
    mean_g, index = network.hyper_synthesis(model, z, s.level)
    y_g_hat = decode_y(model, s.y, index, mean_g)
    pixels = network.synthesis(model, y_g_hat, s.level)
    return np.ascontiguousarray(pixels[:s.height, :s.width])
