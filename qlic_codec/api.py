"""Encode and decode: the one place where image, network, entropy coder and container meet.

Example::

    >>> import numpy as np, qlic_codec
    >>> rgb = np.zeros((33, 47, 3), np.uint8)
    >>> data = qlic_codec.encode(rgb, quality=4)          # doctest: +SKIP
    >>> qlic_codec.decode(data).shape                      # doctest: +SKIP
    (33, 47, 3)
"""

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import container, modelfile, zoo
from .engine.graph import IntegerNetwork, ModelSpec
from .entropy import coder
from .entropy.tables import CdfTables
from .errors import (CorruptStreamError, InvalidArgumentError, InvalidImageError,
                     ModelFileError, ResourceLimitError)
from .padding import pad_to_multiple  # noqa: F401  (api.pad_to_multiple)

QUALITY_LEVELS = zoo.QUALITY_LEVELS
DEFAULT_QUALITY = zoo.DEFAULT_QUALITY
BLOCK = 64  # the analysis transform downsamples by 64 in all (g_a 16, h_a 4)


@dataclass
class LoadedModel:
    path: Path
    model_id: bytes
    metric: str
    network: IntegerNetwork
    z_tables: CdfTables
    y_tables: CdfTables


def _tables(arrays, key) -> CdfTables:
    try:
        t = CdfTables(arrays[f"entropy.{key}.cdf_counts"], arrays[f"entropy.{key}.sizes"],
                      arrays[f"entropy.{key}.offsets"])
    except KeyError as exc:
        raise ModelFileError(f"model has no entropy table {exc}") from None
    t.validate(f"entropy.{key}")
    return t


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int) -> LoadedModel:
    return _build_model(*modelfile.read(path), path)


def load_model_bytes(data: bytes, source: str = "model") -> LoadedModel:
    """Load and validate a model from the bytes of a ``.qlicm`` file (not cached)."""
    return _build_model(*modelfile.unpack(bytes(data), source), source)


def _build_model(manifest: dict, arrays: dict, mid: bytes, path: str) -> LoadedModel:
    # Everything is validated here, before any kernel runs.
    network = IntegerNetwork(ModelSpec(manifest, arrays))
    z_tables, y_tables = _tables(arrays, "z"), _tables(arrays, "y")
    if z_tables.num_tables != network.N or y_tables.num_tables != network.y_levels:
        raise ModelFileError(f"{path}: entropy tables do not match the network")
    metric = manifest.get("metric", "mse")
    if metric not in ("mse", "msssim"):
        raise ModelFileError(f"{path}: unknown metric '{metric}'")
    return LoadedModel(Path(path), mid, metric, network, z_tables, y_tables)


def load_model(model: str | None = None) -> LoadedModel:
    """Load and validate a model by name or path (cached while the file is unchanged)."""
    path = zoo.resolve(model)
    st = path.stat()
    return _load_cached(str(path), st.st_mtime_ns, st.st_size)


def _check_quality(quality: int, levels: int) -> int:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise InvalidArgumentError(f"quality must be an integer, got {quality!r}")
    if not 1 <= quality <= levels:
        raise InvalidArgumentError(f"quality {quality} is out of range 1..{levels} "
                                   "for this model")
    return int(quality) - 1


def _channel_indexes(shape) -> np.ndarray:
    return np.broadcast_to(np.arange(shape[-1], dtype=np.int32), shape).reshape(-1)


def encode(rgb: np.ndarray, quality: int = DEFAULT_QUALITY, model: str | None = None) -> bytes:
    """Compress an image.

    Args:
        rgb: uint8 array (H, W, 3), any size from 1x1.
        quality: level in ``QUALITY_LEVELS`` (higher is better and larger).
        model: bundled model name or model file path; None for the default.

    Returns:
        The ``.qlic`` bytes.
    """
    return _encode(rgb, quality, model, reconstruct=False)[0]


def encode_and_reconstruct(rgb: np.ndarray, quality: int = DEFAULT_QUALITY,
                           model: str | None = None) -> tuple[bytes, np.ndarray]:
    """``encode`` plus the pixels any decoder will produce from the stream (the encoder runs
    the same integer synthesis), e.g. to measure distortion without decoding."""
    return _encode(rgb, quality, model, reconstruct=True)


def _encode(rgb, quality, model, reconstruct):
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise InvalidImageError(f"expected a uint8 (H, W, 3) array, got "
                                f"{getattr(rgb, 'dtype', type(rgb))} {getattr(rgb, 'shape', '')}")
    m = load_model(model)
    level = _check_quality(quality, m.network.levels)
    height, width = rgb.shape[:2]
    if padded_pixels(height, width) > padded_limit(container.DEFAULT_MAX_PIXELS):
        raise ResourceLimitError(f"{width}x{height} pads to more than "
                                 f"{container.DEFAULT_MAX_PIXELS} pixels")
    # The analysis pads the image band by band, and the symbols replace y_g as h_s runs:
    # no padded copy of the image and no second latent tensor.
    y_g, z = m.network.analysis(np.ascontiguousarray(rgb), level)
    y_sym, index, mean_g = m.network.code_latents(y_g, z, level, means=reconstruct)
    z_stream = coder.encode_symbols(z.reshape(-1), _channel_indexes(z.shape), m.z_tables)
    y_stream = coder.encode_symbols(y_sym.reshape(-1), index.reshape(-1), m.y_tables)
    header = container.Header(width=width, height=height, quality=level + 1, metric=m.metric,
                              model_hash=m.model_id,
                              stream_lengths=(len(z_stream), len(y_stream)))
    data = container.pack(header, [z_stream, y_stream])
    if not reconstruct:
        return data, None
    return data, m.network.synthesis_of_symbols(y_sym, mean_g, z, level, size=(height, width))


def _model_for(header: container.Header, model: str | None) -> LoadedModel:
    if model is not None:
        m = load_model(model)
        if m.model_id != header.model_hash:
            raise CorruptStreamError(f"stream was made with model {header.model_hash.hex()}, "
                                     f"not {m.model_id.hex()} ({model})")
        return m
    for path in zoo.bundled_paths():
        # Compare the stored id first: a damaged bundled model must not block the others.
        if modelfile.read_id(path) == header.model_hash:
            return load_model(str(path))
    raise ModelFileError(f"stream was made with model {header.model_hash.hex()}, which is not "
                         "bundled; pass it with --model")


def decode(data: bytes, model: str | None = None,
           max_pixels: int = container.DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decompress ``.qlic`` bytes to a uint8 (H, W, 3) array, bit-exact on every machine.

    Args:
        data: the whole stream.
        model: the model it was made with, if not a bundled one.
        max_pixels: refuse streams whose header claims more pixels.
    """
    header, (z_stream, y_stream) = _parse(data, max_pixels)
    m = _model_for(header, model)
    level = _check_quality_stream(header.quality, m.network.levels)
    if header.metric != m.metric:
        raise CorruptStreamError(f"header metric '{header.metric}' does not match the model")
    try:
        return _decode_streams(m, header, level, z_stream, y_stream)
    except MemoryError:
        # Within max_pixels, yet more than this machine has: a limit, not a crash.
        raise ResourceLimitError(f"not enough memory to decode a {header.width}x"
                                 f"{header.height} image; lower --max-pixels to refuse such "
                                 "files up front") from None


def _decode_streams(m: LoadedModel, header: container.Header, level: int,
                    z_stream: bytes, y_stream: bytes) -> np.ndarray:
    # The decoder's stages, in order; benchmarks/speed.py times each of them.
    z = decode_z_stream(m, header, z_stream)
    # An image that fits one band keeps the means of h_s; a larger one computes them again
    # band by band in the synthesis, so they never exist whole beside the symbols.
    one_band = m.network.synthesis_band_rows(z.shape) >= BLOCK * z.shape[0]
    mean_g, index = m.network.hyper_synthesis(z, level, means=one_band)
    y_sym = decode_y_stream(m, y_stream, index)
    del index
    return m.network.synthesis_of_symbols(y_sym, mean_g, z, level,
                                          size=(header.height, header.width))


def decode_z_stream(m: LoadedModel, header: container.Header, z_stream: bytes) -> np.ndarray:
    """Stage 1: the hyper-latent ``z`` (int32, (H/64, W/64, N)), one table per channel."""
    ph, pw = -(-header.height // BLOCK), -(-header.width // BLOCK)
    z_shape = (ph, pw, m.network.N)
    return coder.decode_symbols(z_stream, _channel_indexes(z_shape), m.z_tables).reshape(z_shape)


def decode_y_stream(m: LoadedModel, y_stream: bytes, index: np.ndarray) -> np.ndarray:
    """Stage 3 (after h_s): the symbols of ``y``, each with the table its scale index names."""
    return coder.decode_symbols(y_stream, index.reshape(-1), m.y_tables).reshape(index.shape)


def padded_pixels(height: int, width: int) -> int:
    """Pixels the network works on: the image padded to a multiple of ``BLOCK``. Memory
    follows this, not ``width * height`` (a 1 x 2**28 image pads to 64 x 2**28)."""
    return -(-height // BLOCK) * BLOCK * -(-width // BLOCK) * BLOCK


def padded_limit(max_pixels: int) -> int:
    """Largest padded area allowed for a pixel limit: ordinary images pad by a few percent, a
    thin one (1 x N) by up to 64x, so memory stays within about twice the nominal limit."""
    return 2 * max_pixels + BLOCK * BLOCK * 16


def _parse(data, max_pixels):
    header, streams = container.parse(bytes(data), max_pixels)
    if len(streams) != 2:
        raise CorruptStreamError(f"expected 2 entropy streams, found {len(streams)}")
    if padded_pixels(header.height, header.width) > padded_limit(max_pixels):
        raise ResourceLimitError(
            f"{header.width}x{header.height} pads to "
            f"{padded_pixels(header.height, header.width)} pixels, more than twice the limit "
            f"of {max_pixels}; raise it with --max-pixels if you trust this file")
    return header, streams


def _check_quality_stream(quality: int, levels: int) -> int:
    if not 1 <= quality <= levels:
        raise CorruptStreamError(f"quality {quality} is not a level of the model (1..{levels})")
    return quality - 1


def read_info(data: bytes) -> dict:
    """Header fields of a ``.qlic`` stream (validated, without decoding)."""
    header, _ = container.parse(bytes(data), max_pixels=2**62)
    return {"width": header.width, "height": header.height, "quality": header.quality,
            "metric": header.metric, "model_hash": header.model_hash.hex(),
            "bytes": len(data), "bpp": 8.0 * len(data) / (header.width * header.height),
            "stream_lengths": list(header.stream_lengths)}
