"""The channel-conditional entropy model of y, the manifest's ``cc`` (FORMAT.md 2.6, 3.11).

``y``'s channels are split into slices decoded one after another; each slice's means and
tables come from the hyper-synthesis and the slices before it, so its segment of the y
stream can only be read once they are decoded.
"""

import numpy as np

from . import layers, network
from .modelfile import FormatError, _is_int
from .symbols import Tables, decode_segment, stream_decoder

MAX_SLICES = 64
LUT_SIZE = 255
CODE_MAX = 127
CTX_MAX_LIMIT = 2047


# ---------------------------------------------------------------------------------------------
# What a reader must refuse (FORMAT.md 2.6)

def _array(arrays, name, dtype, shape, lo, hi):
    a = arrays.get(name)
    if a is None or a.dtype != np.dtype(dtype) or a.shape != shape:
        raise FormatError(f"cc array {name!r} is missing or not {dtype} {shape}")
    if a.size and (a.min() < lo or a.max() > hi):
        raise FormatError(f"cc array {name!r} has values outside {lo}..{hi}")
    return a


def _check_network(arrays, descriptions, cin, cout, in_max, where):
    if not descriptions:
        raise FormatError(f"{where} is empty")
    channels = cin
    for j, d in enumerate(descriptions):
        name, last = d["name"], j == len(descriptions) - 1
        # A missing stride means 2 (FORMAT.md 2.2), which a slice network cannot have.
        if d["op"] != "conv" or d.get("stride", 2) != 1 or d.get("pad_value", 0) != 0:
            raise FormatError(f"{where}: layer {name!r} is not a stride-1 zero-padded conv")
        w = arrays.get(f"{name}.weight")
        needed = in_max if j == 0 else CODE_MAX
        if w is None or w.ndim != 4 or w.shape[3] != channels or d["in_max"] < needed:
            raise FormatError(f"{where}: layer {name!r} does not fit its input")
        out = d.get("out")
        if (out is None) != last:
            raise FormatError(f"{where}: only the last layer hands out accumulators")
        if out is not None and max(-out["lo"], out["hi"]) > CODE_MAX:
            raise FormatError(f"{where}: layer {name!r} has codes wider than 8 bits")
        channels = w.shape[0]
    if channels != cout:
        raise FormatError(f"{where} has {channels} output channels, expected {cout}")


def check(model) -> None:
    """Refuses a ``cc`` object or its arrays where FORMAT.md 2.6 says a reader must."""
    m, arrays = model.manifest, model.arrays
    cc, M, L = m["cc"], m["M"], m["levels"]
    sizes = cc["slices"]
    if not all(_is_int(n) for n in sizes) or not 1 <= len(sizes) <= MAX_SLICES \
            or min(sizes) < 1 or sum(sizes) != M:
        raise FormatError(f"cc slices {sizes!r:.60} do not split the {M} channels of y")
    if len(cc["networks"]) != len(sizes):
        raise FormatError("cc needs one pair of networks per slice")
    ctx_max = ctx_limit(m)
    if not CODE_MAX <= ctx_max <= CTX_MAX_LIMIT:
        raise FormatError(f"cc ctx_max {ctx_max} is outside {CODE_MAX}..{CTX_MAX_LIMIT}")
    mult, shift = (0, 2**31 - 1), (1, 62)
    for key, shape in (("hyper", (2 * M,)), ("ctx", (L, M))):
        _array(arrays, f"cc.{key}.mult", "int32", shape, *mult)
        _array(arrays, f"cc.{key}.shift", "int32", shape, *shift)
    for i, (a, n) in enumerate(zip(starts(sizes), sizes)):
        pair = cc["networks"][i]
        # Slice 0's params network reads hyper codes only; every other reads context codes.
        _check_network(arrays, pair["params"], 2 * n + a, 2 * n,
                       ctx_max if a else CODE_MAX, f"cc network {i} params")
        _check_network(arrays, pair["lrp"], 3 * n + a, n, ctx_max, f"cc network {i} lrp")
        for key, shape in (("mean", (L, n)), ("lrp", (n,))):
            _array(arrays, f"cc.{i}.{key}.mult", "int32", shape, *mult)
            _array(arrays, f"cc.{i}.{key}.shift", "int32", shape, *shift)
        _array(arrays, f"cc.{i}.scale.mult", "int64", (n,), -(2**30), 2**30)
    half = 2 ** max(m["mean_bits"] - 1, 0)
    _array(arrays, "cc.lrp.lut", "int32", (LUT_SIZE,), -half, half)


def ctx_limit(m):
    """The largest context code: ``cc.ctx_max``, 127 when absent (FORMAT.md 2.6)."""
    return m["cc"].get("ctx_max", CODE_MAX)


def starts(sizes):
    """The first channel of each slice."""
    return [sum(sizes[:i]) for i in range(len(sizes))]


# ---------------------------------------------------------------------------------------------
# Decoding y (FORMAT.md 3.11)

def _codes(model, key, acc, level, channels, limit=CODE_MAX):
    """A code head of ``cc``: ``requantize`` by ``cc.<key>`` to -limit..limit."""
    mult, shift = model.arrays[f"cc.{key}.mult"], model.arrays[f"cc.{key}.shift"]
    if level is not None:
        mult, shift = mult[level], shift[level]
    return layers.requantize(acc, mult[channels], shift[channels], -limit, limit)


def decode_y(model, y_stream: bytes, acc_p: np.ndarray, level: int) -> np.ndarray:
    """The latent the synthesis reads, ``y_g_dec`` (h, w, M), from the h_s accumulators
    ``acc_p`` (h, w, 2M) and the y stream, slice by slice."""
    m, arrays = model.manifest, model.arrays
    M, cy = m["M"], m["clamps"]["y"]
    sizes, ctx_max = m["cc"]["slices"], ctx_limit(m)
    tables = Tables(arrays, "y")
    decoder = stream_decoder(y_stream)
    # Step 1: the level-free hyper codes, and the hyper-synthesis' means of every channel.
    hyper = _codes(model, "hyper", acc_p, None, slice(None))
    hyper_mean = network.head(model, "mean", acc_p[..., :M], -cy, cy, level)
    ctx = np.zeros(acc_p.shape[:2] + (M,), np.int64)
    y_g_dec = np.zeros(acc_p.shape[:2] + (M,), np.int64)
    for i, (a, n) in enumerate(zip(starts(sizes), sizes)):
        own = slice(a, a + n)
        nets = m["cc"]["networks"][i]
        # Step 2: mean codes, log-scale codes, then the context codes of slices 0..i-1.
        support = np.concatenate(
            [hyper[..., a:a + n], hyper[..., M + a:M + a + n], ctx[..., :a]], axis=2)
        acc_d = network.run_layers(model, nets["params"], support)
        # Step 3: the mean, the hyper mean plus the slice network's correction.
        d_mean = layers.requantize(acc_d[..., :n], arrays[f"cc.{i}.mean.mult"][level],
                                           arrays[f"cc.{i}.mean.shift"][level], -cy, cy)
        mean_g = np.clip(hyper_mean[..., own] + d_mean, -cy, cy)
        # Step 4: the table index, with the slice's log-scale correction as a second term.
        index = network.scale_index(
            model, [(acc_p[..., M + a:M + a + n], arrays["head.scale.mult"][own]),
                    (acc_d[..., n:], arrays[f"cc.{i}.scale.mult"])],
            arrays["head.scale.offset"][level, own])
        # Step 5: the slice's segment of the y stream, and its reconstruction.
        symbols = decode_segment(decoder, index.reshape(-1), tables).reshape(index.shape)
        y_g_hat = network.reconstruct(model, symbols, mean_g)
        # Step 6: the latent residual, from the support and the slice's own context codes.
        acc_r = network.run_layers(
            model, nets["lrp"],
            np.concatenate([support, _codes(model, "ctx", y_g_hat, level, own, ctx_max)],
                           axis=2))
        r = _codes(model, f"{i}.lrp", acc_r, None, slice(None))
        dec = np.clip(y_g_hat + arrays["cc.lrp.lut"][r + CODE_MAX].astype(np.int64), -cy, cy)
        y_g_dec[..., own] = dec
        # Step 7: the context codes the later slices read.
        ctx[..., own] = _codes(model, "ctx", dec, level, own, ctx_max)
    return y_g_dec

