"""Decoding, start to end (FORMAT.md section 3.10)."""

import numpy as np

from . import container, network, slices
from .modelfile import FormatError, read_model
from .symbols import Tables, decode_values

BLOCK = 64


def decode_y(model, y_stream, acc_p, level):
    """The y-decoding step: the y stream -> the latent the synthesis reads (h, w, M). The
    plain hyperprior reads every symbol with the table its scale index names (FORMAT.md
    3.7-3.8); a channel-conditional model decodes slice by slice, each slice's means and
    tables predicted from the slices before it (3.11)."""
    if "cc" in model.manifest:
        return slices.decode_y(model, y_stream, acc_p, level)
    mean_g, index = network.hyper_synthesis(model, acc_p, level)
    symbols = decode_values(y_stream, index.reshape(-1), Tables(model.arrays, "y"))
    return network.reconstruct(model, symbols.reshape(index.shape), mean_g)


def decode(stream: bytes, model_bytes: bytes) -> np.ndarray:
    """uint8 (H, W, 3) pixels of a ``.qlic`` stream made with the given model file."""
    model = read_model(model_bytes)
    s = container.parse(stream)
    m = model.manifest
    if s.model_id != model.model_id:
        raise FormatError("the stream was made with another model")
    # The sub-level is a row of the model's heads, on the model's grid of quality steps.
    if s.metric != m["metric"] or s.level >= m["levels"] \
            or s.quality_steps != m.get("quality_steps", 1):
        raise FormatError("metric or quality does not match the model")
    ph, pw = -(-s.height // BLOCK), -(-s.width // BLOCK)
    N = m["N"]
    z_index = np.broadcast_to(np.arange(N), (ph, pw, N)).reshape(-1)
    z = decode_values(s.z, z_index, Tables(model.arrays, "z")).reshape(ph, pw, N)
    acc_p = network.hyper_accumulators(model, z)
    y_g = decode_y(model, s.y, acc_p, s.level)
    pixels = network.synthesis(model, y_g, s.level)
    return np.ascontiguousarray(pixels[:s.height, :s.width])
