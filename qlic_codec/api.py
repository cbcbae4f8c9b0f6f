"""Encode and decode: the one place where image, network, entropy coder and container meet.

Example::

    >>> import numpy as np, qlic_codec
    >>> rgb = np.zeros((33, 47, 3), np.uint8)
    >>> data = qlic_codec.encode(rgb, quality=4)          # doctest: +SKIP
    >>> qlic_codec.decode(data).shape                      # doctest: +SKIP
    (33, 47, 3)
"""

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import container, modelfile, rdoq, slicecoding, zoo
from . import quality as quality_grid
from .engine import bands
from .engine.graph import IntegerNetwork, ModelSpec
from .entropy import coder
from .entropy.tables import CdfTables
from .errors import (CorruptStreamError, InvalidArgumentError, InvalidImageError,
                     ModelFileError, ResourceLimitError, TargetNotMetWarning)
from .metadata import Metadata
from .padding import pad_to_multiple  # noqa: F401  (api.pad_to_multiple)

QUALITY_LEVELS = zoo.QUALITY_LEVELS  # the bundled models' integer levels
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
    quality_steps: int  # sub-levels per unit of quality: network.levels rows of heads

    @property
    def top_quality(self) -> int | float:
        """The highest quality number of the model (8 for the bundled ones)."""
        return quality_grid.to_quality(self.network.levels - 1, self.quality_steps)


ENTROPY_ARRAYS = tuple(f"entropy.{key}.{part}" for key in ("z", "y")
                       for part in ("cdf_counts", "sizes", "offsets"))


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
    # An array that nothing reads means the file was made for a reader that does more with
    # it than this one would: refused like an unknown manifest key.
    unread = sorted(set(arrays) - network.arrays_read - set(ENTROPY_ARRAYS))
    if unread:
        raise ModelFileError(f"{path}: model has an array this qlic does not use "
                             f"({unread[0][:60]!r}); it needs a newer qlic")
    metric = manifest["metric"]  # present and known: the network checked the manifest
    # Files exported before the sub-level grid have integer levels only.
    steps = manifest.get("quality_steps", 1)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 255 \
            or (network.levels - 1) % steps:
        raise ModelFileError(f"{path}: quality_steps {steps!r} does not divide the model's "
                             f"{network.levels} sub-levels into whole levels")
    return LoadedModel(Path(path), mid, metric, network, z_tables, y_tables, steps)


def load_model(model: str | None = None) -> LoadedModel:
    """Load and validate a model by name or path (cached while the file is unchanged)."""
    path = zoo.resolve(model)
    st = path.stat()
    return _load_cached(str(path), st.st_mtime_ns, st.st_size)


def _channel_indexes(shape) -> np.ndarray:
    return np.broadcast_to(np.arange(shape[-1], dtype=np.int32), shape).reshape(-1)


def encode(rgb: np.ndarray, quality: float | None = None, model: str | None = None, *,
           metadata: Metadata | None = None, target_size: int | None = None,
           target_bpp: float | None = None) -> bytes:
    """Compress an image.

    Args:
        rgb: uint8 array (H, W, 3), any size from 1x1.
        quality: a number from 1 to the model's top level (8 for the bundled models; higher
            is better and larger), e.g. 5 or 4.5; values between the model's sub-levels
            (sixteenths for the bundled models) are rounded to the nearest. None: the
            default (``DEFAULT_QUALITY``), or the target below.
        model: bundled model name or model file path; None for the default.
        metadata: ICC profile, EXIF and XMP to carry in the file (``Metadata``); None for
            none.
        target_size: instead of ``quality``, the file size in bytes to aim for (see
            ``encode_to_target``); a miss by more than 3% warns with
            ``TargetNotMetWarning`` and returns the nearest file the model can make.
        target_bpp: instead of ``quality``, the bits per pixel to aim for.

    Returns:
        The ``.qlic`` bytes.
    """
    if target_size is None and target_bpp is None:
        return _encode(rgb, quality, model, metadata, reconstruct=False)[0]
    if quality is not None:
        raise InvalidArgumentError("give a quality or a target size, not both")
    result = encode_to_target(rgb, target_size=target_size, target_bpp=target_bpp,
                              model=model, metadata=metadata)
    if not result.met:
        warnings.warn(TargetNotMetWarning(result.describe_miss()), stacklevel=2)
    return result.data


def encode_and_reconstruct(rgb: np.ndarray, quality: float | None = None,
                           model: str | None = None, *, metadata: Metadata | None = None
                           ) -> tuple[bytes, np.ndarray]:
    """``encode`` plus the pixels any decoder will produce from the stream (the encoder runs
    the same integer synthesis), e.g. to measure distortion without decoding."""
    return _encode(rgb, quality, model, metadata, reconstruct=True)


@dataclass(frozen=True)
class TargetResult:
    """What ``encode_to_target`` made: the file, the quality it chose, the target in bytes,
    and whether the file is within 3% of it (``quality.TOLERANCE``)."""

    data: bytes
    quality: int | float
    target_bytes: int
    met: bool

    def describe_miss(self) -> str:
        """One line saying how far the nearest file is from the target."""
        side = "smallest" if len(self.data) > self.target_bytes else "largest"
        return (f"the target of {self.target_bytes} bytes is out of reach: the {side} file "
                f"this model makes is {len(self.data)} bytes (quality {self.quality})")


def encode_to_target(rgb: np.ndarray, *, target_size: int | None = None,
                     target_bpp: float | None = None, model: str | None = None,
                     metadata: Metadata | None = None) -> TargetResult:
    """Compress an image to the quality whose file is nearest a size (whole file, header and
    metadata included).

    The network's level-independent part (g_a, h_a, h_s and the ``z`` stream) runs once;
    each quality tried costs only the per-level heads and the entropy coding of ``y``. The
    search bisects the model's sub-level grid (``quality.search_size``): about 8 tries on
    the bundled models' 113 sub-levels.

    Args:
        rgb: uint8 array (H, W, 3).
        target_size: the file size in bytes; or
        target_bpp: bits per pixel (the target is ``target_bpp * W * H / 8`` bytes).
        model, metadata: as for ``encode``.

    Returns:
        A ``TargetResult``; ``met`` is false when no quality gives a file within 3% of the
        target, and the file is then the nearest one (quality 1 or the top quality).
    """
    if (target_size is None) == (target_bpp is None):
        raise InvalidArgumentError("give exactly one of target_size and target_bpp")
    analysis = _analyse(rgb, model)
    if target_size is not None:
        if isinstance(target_size, bool) or not isinstance(target_size, (int, np.integer)) \
                or target_size < 1:
            raise InvalidArgumentError(f"target_size must be a positive number of bytes, got "
                                       f"{target_size!r}")
        target = int(target_size)
    else:
        if isinstance(target_bpp, bool) or not isinstance(target_bpp, (int, float, np.number)) \
                or not 0 < target_bpp < float("inf"):
            raise InvalidArgumentError(f"target_bpp must be a positive number, got "
                                       f"{target_bpp!r}")
        target = max(1, round(float(target_bpp) * analysis.width * analysis.height / 8))
    chunks = _chunks(metadata)
    files: dict[int, bytes] = {}

    def size_of(level: int) -> int:
        files[level] = _code(analysis, level, chunks)[0]
        return len(files[level])

    found = quality_grid.search_size(size_of, analysis.model.network.levels, target)
    return TargetResult(files[found.level],
                        quality_grid.to_quality(found.level, analysis.model.quality_steps),
                        target, found.met)


@dataclass
class _Analysis:
    """What the encoder computes once for an image, whatever the quality: g_a's accumulators
    of ``y``, h_s's accumulators and the coded ``z`` (the hyperprior sees the un-gained
    ``y``, so none of them depends on the level)."""

    model: LoadedModel
    height: int
    width: int
    acc_y: np.ndarray
    acc_p: np.ndarray
    z_stream: bytes


def _checked(rgb, model) -> tuple[LoadedModel, int, int]:
    """The model, height and width of an image to encode, or the error that refuses it."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 \
            or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise InvalidImageError(f"expected a uint8 (H, W, 3) array, got "
                                f"{getattr(rgb, 'dtype', type(rgb))} {getattr(rgb, 'shape', '')}")
    m = load_model(model)
    height, width = rgb.shape[:2]
    if padded_pixels(height, width) > padded_limit(container.DEFAULT_MAX_PIXELS):
        raise ResourceLimitError(f"{width}x{height} pads to more than "
                                 f"{container.DEFAULT_MAX_PIXELS} pixels")
    return m, height, width


def _analyse(rgb, model) -> _Analysis:
    m, height, width = _checked(rgb, model)
    acc_y, z = m.network.analysis_accumulators(np.ascontiguousarray(rgb))
    z_stream = coder.encode_symbols(z.reshape(-1), _channel_indexes(z.shape), m.z_tables)
    return _Analysis(m, height, width, acc_y, m.network.hyper_accumulators(z), z_stream)


def _code(a: _Analysis, level: int, chunks, reconstruct: bool = False):
    """The file of one quality sub-level (and its decoded pixels when ``reconstruct``), from
    the accumulators that a size target's search keeps for all its tries."""
    net = a.model.network
    y_g = net.y_head(a.acc_y, level)
    if net.cc is not None:  # channel-conditional: slice by slice (``slicecoding``)
        y_stream, y_g_dec = slicecoding.encode_y(net, a.model.y_tables, y_g, a.acc_p, level,
                                                 rounding=_rounding(a.model))
    else:
        mean_g, index = net.hyper_heads(a.acc_p, level)
        y_sym = _rounding(a.model)(net.symbols(y_g, mean_g), y_g, mean_g, index)
        y_stream = coder.encode_symbols(y_sym.reshape(-1), index.reshape(-1),
                                        a.model.y_tables)
    data = _pack(a.model, a.height, a.width, level, chunks, a.z_stream, y_stream)
    if not reconstruct:
        return data, None
    if net.cc is None:
        y_g_dec = net.reconstruct(y_sym, mean_g)
    return data, net.synthesis(y_g_dec, level, size=(a.height, a.width))


def _rounding(m: LoadedModel) -> rdoq.Rounding:
    """The encoder's choice of symbols for the model (``rdoq``)."""
    return rdoq.Rounding(m.y_tables, m.network.mean_bits, m.metric)


def _pack(m: LoadedModel, height, width, level, chunks, z_stream, y_stream) -> bytes:
    header = container.Header(width=width, height=height, level=level,
                              quality_steps=m.quality_steps, metric=m.metric,
                              model_hash=m.model_id,
                              stream_lengths=(len(z_stream), len(y_stream)), chunks=chunks)
    return container.pack(header, [z_stream, y_stream])


def _encode(rgb, quality, model, metadata, reconstruct):
    """One quality: the transforms run in bands and nothing level-free is kept whole, so
    memory grows with the image's width (``_analyse``/``_code`` keep accumulators for a
    size target's search)."""
    chunks = _chunks(metadata)
    m, height, width = _checked(rgb, model)
    net = m.network
    level = quality_grid.to_level(DEFAULT_QUALITY if quality is None else quality,
                                  net.levels, m.quality_steps)
    # The analysis pads the image band by band, and the symbols replace y_g as h_s runs:
    # no padded copy of the image and no second latent tensor.
    y_g, z = net.analysis(np.ascontiguousarray(rgb), level)
    z_stream = coder.encode_symbols(z.reshape(-1), _channel_indexes(z.shape), m.z_tables)
    if net.cc is not None:  # slice by slice, h_s handing its accumulators over in bands
        y_stream, y_g_dec = slicecoding.encode_y(net, m.y_tables, y_g, None, level, z,
                                                 rounding=_rounding(m))
    else:
        y_sym, index, mean_g = net.code_latents(y_g, z, level, means=reconstruct,
                                                rounding=_rounding(m))
        y_stream = coder.encode_symbols(y_sym.reshape(-1), index.reshape(-1), m.y_tables)
        del index
    data = _pack(m, height, width, level, chunks, z_stream, y_stream)
    if not reconstruct:
        return data, None
    if net.cc is not None:
        return data, net.synthesis(y_g_dec, level, size=(height, width))
    return data, net.synthesis_of_symbols(y_sym, mean_g, z, level, size=(height, width))


def _chunks(metadata) -> tuple:
    if metadata is None:
        return ()
    if not isinstance(metadata, Metadata):
        raise InvalidArgumentError(f"metadata must be a qlic_codec.Metadata, got "
                                   f"{type(metadata).__name__}")
    return metadata.to_chunks()


def _model_for(header: container.Header, model: str | None) -> LoadedModel:
    if model is not None:
        m = load_model(model)
        if m.model_id != header.model_hash:
            raise CorruptStreamError(f"stream was made with model {header.model_hash.hex()}, "
                                     f"not {m.model_id.hex()} ({model})")
        return m
    for path in zoo.bundled_paths():
        # The id of each file (cached): a damaged or unreadable bundled model has none, so it
        # cannot block the others.
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
    return decode_with_metadata(data, model, max_pixels)[0]


def decode_with_metadata(data: bytes, model: str | None = None,
                         max_pixels: int = container.DEFAULT_MAX_PIXELS
                         ) -> tuple[np.ndarray, Metadata]:
    """``decode``, and the ICC profile, EXIF and XMP the file carries (``Metadata``, whose
    fields are None where the file has none)."""
    header, (z_stream, y_stream) = _parse(data, max_pixels)
    m = _model_for(header, model)
    level = _check_quality_stream(header, m)
    if header.metric != m.metric:
        raise CorruptStreamError(f"header metric '{header.metric}' does not match the model")
    try:
        pixels = _decode_streams(m, header, level, z_stream, y_stream)
    except MemoryError:
        # Within max_pixels, yet more than this machine has: a limit, not a crash.
        raise ResourceLimitError(f"not enough memory to decode a {header.width}x"
                                 f"{header.height} image; lower --max-pixels to refuse such "
                                 "files up front") from None
    return pixels, Metadata.from_chunks(header.chunks)


def _decode_streams(m: LoadedModel, header: container.Header, level: int,
                    z_stream: bytes, y_stream: bytes) -> np.ndarray:
    # The decoder's stages, in order; benchmarks/speed.py times each of them.
    z = decode_z_stream(m, header, z_stream)
    if m.network.cc is not None:
        y_g_dec = slicecoding.decode_y(m.network, m.y_tables, y_stream, z, level)
        return m.network.synthesis(y_g_dec, level, size=(header.height, header.width))
    # The means of h_s are kept while they are small beside a band's budget (a quarter of it:
    # images up to about 8 megapixels, at 3 bytes per pixel); a larger image computes them
    # again band by band in the synthesis, so they never exist whole beside the symbols.
    # Keeping them saves that second h_s: 10% of a 1920x1080 decode.
    means_bytes = 4 * m.network.M * 16 * z.shape[0] * z.shape[1]
    one_band = m.network.synthesis_band_rows(z.shape) >= BLOCK * z.shape[0]
    keep = one_band or means_bytes <= bands.BAND_BYTES // 4
    mean_g, index = m.network.hyper_synthesis(z, level, means=keep)
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


def _check_quality_stream(header: container.Header, m: LoadedModel) -> int:
    if header.quality_steps != m.quality_steps or header.level >= m.network.levels:
        raise CorruptStreamError(
            f"quality sub-level {header.level} of {header.quality_steps} steps is not a "
            f"level of the model ({m.network.levels} sub-levels of {m.quality_steps} steps)")
    return header.level


def read_info(data: bytes) -> dict:
    """Header fields of a ``.qlic`` stream (validated, without decoding), or, for a ``.qlicm``
    model file, ``read_model_info``.

    ``quality`` is a number (5, or 4.5 between levels); ``metadata`` maps each metadata
    field the file carries (``icc``, ``exif``, ``xmp``) to its size in bytes.
    """
    data = bytes(data)
    if data.startswith(modelfile.MAGIC):
        return read_model_info(data)
    header, _ = container.parse(data, max_pixels=2**62)
    return {"width": header.width, "height": header.height, "quality": header.quality,
            "metric": header.metric, "model_hash": header.model_hash.hex(),
            "bytes": len(data), "bpp": 8.0 * len(data) / (header.width * header.height),
            "stream_lengths": list(header.stream_lengths),
            "metadata": Metadata.from_chunks(header.chunks).sizes()}


def read_model_info(data: bytes) -> dict:
    """What a ``.qlicm`` model file holds: its format, id (what streams name), metric, quality
    levels, widths and entropy model (``kind`` is ``"model"``). The file's structure and seal
    are checked; its layers are checked when the model is loaded, not here."""
    data = bytes(data)
    manifest, _, mid = modelfile.unpack(data, "model file")
    info = {"kind": "model", "format": modelfile.format_version(data),
            "model_id": mid.hex(), "metric": manifest.get("metric"),
            "levels": manifest.get("levels"), "quality_steps": manifest.get("quality_steps", 1),
            "top_quality": None,
            "N": manifest.get("N"), "M": manifest.get("M"), "bytes": len(data)}
    levels, steps = info["levels"], info["quality_steps"]
    if isinstance(levels, int) and isinstance(steps, int) and levels >= 1 and steps >= 1:
        info["top_quality"] = quality_grid.to_quality(levels - 1, steps)
    cc = manifest.get("cc")
    if isinstance(cc, dict):
        ctx_max = cc.get("ctx_max", 127)
        info.update(entropy_model="channel-conditional", slices=cc.get("slices"),
                    context_bits=ctx_max.bit_length() + 1 if isinstance(ctx_max, int) else None)
    else:
        info["entropy_model"] = "hyperprior"
    return info
