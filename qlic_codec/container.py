"""The byte layout of a ``.qlic`` file: header, entropy streams and checksums.

All integers are little-endian and unsigned.

====================  ========  ====================================================
Field                 Size      Meaning
====================  ========  ====================================================
magic                 4         ``b"QLIC"``
format version        u8        ``FORMAT_VERSION`` (currently 1)
metric code           u8        0 = ``"mse"``, 1 = ``"msssim"``
quality               u8        quality level, 1..255
number of streams     u8        ``n``, 1..8 (qlic writes 2: ``z`` then ``y``)
width                 u32       image width in pixels, >= 1
height                u32       image height in pixels, >= 1
model hash            8         short id of the model file that encoded the image
stream lengths        n * u32   byte length of each entropy stream, in order
header CRC32          u32       ``zlib.crc32`` of every header byte above
streams               sum(len)  the entropy streams, concatenated in order
file CRC32            u32       ``zlib.crc32`` of every byte before it
====================  ========  ====================================================

The fixed prefix (magic to model hash) is ``PREFIX_SIZE`` = 24 bytes, so a header is
``24 + 4 * n + 4`` bytes long and never more than ``MAX_HEADER_SIZE`` = 60 bytes.

``parse`` checks the header, the stream lengths against the buffer size and both checksums
before it slices anything, so a hostile file cannot make qlic allocate memory in proportion
to the sizes it claims.

This module imports nothing from qlic except ``errors``.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Sequence

from qlic_codec.errors import CorruptStreamError, ResourceLimitError, UnsupportedError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_HEADER_SIZE",
    "MAX_STREAMS",
    "METRICS",
    "PREFIX_SIZE",
    "Header",
    "pack",
    "parse",
    "read_header",
]

MAGIC = b"QLIC"
FORMAT_VERSION = 1
# 2**28 pixels is a 16384 x 16384 image: far beyond normal photos. The transforms run in
# bands of bounded memory (``engine.bands``), so decoding needs memory in proportion to the
# pixels only for the latents and the decoded image: about 6 bytes per padded pixel plus
# some 300 MiB with the shipped models (``benchmarks/README.md``), about 2 GiB at this limit.
# So this limit is what bounds the decoder's memory; lower it (``--max-pixels``) on small
# machines. A file whose entropy streams are too short
# for the pixels it claims is refused before those buffers exist (``entropy.coder``).
DEFAULT_MAX_PIXELS = 2**28
MAX_STREAMS = 8
# The position of a name is its code in the file; append new metrics, never reorder.
METRICS: tuple[str, ...] = ("mse", "msssim")

_PREFIX = struct.Struct("<4sBBBBII8s")
_U32 = struct.Struct("<I")
PREFIX_SIZE = _PREFIX.size
MAX_HEADER_SIZE = PREFIX_SIZE + 4 * MAX_STREAMS + 4
_U32_MAX = 2**32 - 1


@dataclass(frozen=True)
class Header:
    """The header of a ``.qlic`` file.

    Args:
        width: Image width in pixels, 1..2**32-1.
        height: Image height in pixels, 1..2**32-1.
        quality: Quality level, 1..255.
        metric: The distortion metric the model was trained for, ``"mse"`` or ``"msssim"``.
        model_hash: Exactly 8 bytes identifying the model file.
        stream_lengths: Byte length of each entropy stream (1..8 streams).

    Raises:
        ValueError: If a field is out of range.
    """

    width: int
    height: int
    quality: int
    metric: str
    model_hash: bytes
    stream_lengths: tuple[int, ...]

    def __post_init__(self) -> None:
        # Validating here means every Header in memory can be packed.
        for name in ("width", "height"):
            value = getattr(self, name)
            if not _is_int(value) or not 1 <= value <= _U32_MAX:
                raise ValueError(f"{name} must be an int in 1..{_U32_MAX}, got {value!r}")
        if not _is_int(self.quality) or not 1 <= self.quality <= 255:
            raise ValueError(f"quality must be an int in 1..255, got {self.quality!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if not isinstance(self.model_hash, bytes) or len(self.model_hash) != 8:
            raise ValueError(f"model_hash must be exactly 8 bytes, got {self.model_hash!r}")
        lengths = self.stream_lengths
        if not isinstance(lengths, tuple) or not 1 <= len(lengths) <= MAX_STREAMS:
            raise ValueError(
                f"stream_lengths must be a tuple of 1..{MAX_STREAMS} ints, got {lengths!r}"
            )
        for length in lengths:
            if not _is_int(length) or not 0 <= length <= _U32_MAX:
                raise ValueError(
                    f"each of stream_lengths must be an int in 0..{_U32_MAX}, got {length!r}"
                )

    @property
    def header_size(self) -> int:
        """Size in bytes of this header, including its CRC."""
        return _header_size(len(self.stream_lengths))


def pack(header: Header, streams: Sequence[bytes]) -> bytes:
    """Serialize a header and its entropy streams into the bytes of a ``.qlic`` file.

    Args:
        header: The header; ``header.stream_lengths`` must match ``streams``.
        streams: The entropy streams, in order (``z`` then ``y`` for qlic).

    Returns:
        The complete file: header, header CRC, streams and file CRC.

    Raises:
        ValueError: If ``header`` is not a ``Header`` or ``streams`` does not match
            ``header.stream_lengths``.
    """
    if not isinstance(header, Header):
        raise ValueError(f"header must be a Header, got {type(header).__name__}")
    streams = list(streams)
    if len(streams) != len(header.stream_lengths):
        raise ValueError(
            f"header declares {len(header.stream_lengths)} streams, got {len(streams)}"
        )
    for index, (stream, length) in enumerate(zip(streams, header.stream_lengths)):
        if not isinstance(stream, (bytes, bytearray, memoryview)):
            raise ValueError(f"stream {index} must be bytes, got {type(stream).__name__}")
        if len(stream) != length:
            raise ValueError(
                f"stream {index} is {len(stream)} bytes but the header declares {length}"
            )
    head = bytearray(
        _PREFIX.pack(
            MAGIC,
            FORMAT_VERSION,
            METRICS.index(header.metric),
            header.quality,
            len(header.stream_lengths),
            header.width,
            header.height,
            header.model_hash,
        )
    )
    for length in header.stream_lengths:
        head += _U32.pack(length)
    head += _U32.pack(zlib.crc32(head))
    out = head
    for stream in streams:
        out += stream
    out += _U32.pack(zlib.crc32(out))
    return bytes(out)


def read_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Validate and decode the header of a ``.qlic`` file, ignoring what follows it.

    Only the first ``header_size`` bytes (at most ``MAX_HEADER_SIZE``) are read, so a caller
    such as ``qlic info`` may pass just the start of a file. The streams and the file CRC
    are not checked; use ``parse`` for that.

    Args:
        data: The file, or at least its first ``MAX_HEADER_SIZE`` bytes (less if the file
            is shorter).
        max_pixels: Refuse images with more than this many pixels.

    Returns:
        The decoded header.

    Raises:
        CorruptStreamError: If the data is not a qlic file, is truncated or is corrupt.
        UnsupportedError: If the file was written by a newer format version.
        ResourceLimitError: If ``width * height`` exceeds ``max_pixels``.
        ValueError: If ``max_pixels`` is not a positive int (a caller bug, not bad data).
    """
    header, _ = _read_header(memoryview(data).cast("B"), max_pixels)
    return header


def parse(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Header, list[bytes]]:
    """Validate a complete ``.qlic`` file and split it into its header and streams.

    Every check (header fields, pixel limit, header CRC, exact file size, file CRC) runs
    before any buffer proportional to a claimed size is created.

    Args:
        data: The complete file.
        max_pixels: Refuse images with more than this many pixels.

    Returns:
        ``(header, streams)``, where ``streams[i]`` has ``header.stream_lengths[i]`` bytes.

    Raises:
        CorruptStreamError: If the data is not a qlic file, is truncated, has trailing
            bytes or fails a checksum.
        UnsupportedError: If the file was written by a newer format version.
        ResourceLimitError: If ``width * height`` exceeds ``max_pixels``.
        ValueError: If ``max_pixels`` is not a positive int (a caller bug, not bad data).
    """
    view = memoryview(data).cast("B")
    header, offset = _read_header(view, max_pixels)
    expected = offset + sum(header.stream_lengths) + 4
    if len(view) < expected:
        raise CorruptStreamError(f"truncated: expected {expected} bytes, got {len(view)}")
    if len(view) > expected:
        raise CorruptStreamError(
            f"{len(view) - expected} unexpected trailing bytes: expected {expected} bytes, "
            f"got {len(view)}"
        )
    (stored,) = _U32.unpack_from(view, expected - 4)
    if zlib.crc32(view[: expected - 4]) != stored:
        raise CorruptStreamError("file checksum mismatch: the data is corrupt")
    streams = []
    for length in header.stream_lengths:
        streams.append(bytes(view[offset : offset + length]))
        offset += length
    return header, streams


def _read_header(view: memoryview, max_pixels: int) -> tuple[Header, int]:
    """Validate the header at the start of ``view``; return it and the offset of stream 0."""
    if not _is_int(max_pixels) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    size = len(view)
    # A short file whose first bytes are not the magic is "not a qlic file" (an empty file
    # or a stray text file), not a truncated one.
    if size == 0 or bytes(view[:4]) != MAGIC[: min(size, 4)]:
        raise CorruptStreamError("not a qlic file (bad magic)")
    if size < PREFIX_SIZE:
        raise CorruptStreamError(f"truncated: expected at least {PREFIX_SIZE} bytes, got {size}")
    _, version, metric_code, quality, n_streams, width, height, model_hash = (
        _PREFIX.unpack_from(view, 0)
    )
    if version > FORMAT_VERSION:
        raise UnsupportedError(
            f"written by a newer qlic (format {version}); upgrade qlic "
            f"(this one reads format {FORMAT_VERSION})"
        )
    if version < 1:
        raise CorruptStreamError(f"invalid format version {version}")
    if metric_code >= len(METRICS):
        raise CorruptStreamError(f"unknown metric code {metric_code}")
    if quality < 1:
        raise CorruptStreamError(f"invalid quality {quality} (must be 1..255)")
    if not 1 <= n_streams <= MAX_STREAMS:
        raise CorruptStreamError(
            f"invalid number of streams {n_streams} (must be 1..{MAX_STREAMS})"
        )
    if width < 1 or height < 1:
        raise CorruptStreamError(f"invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise ResourceLimitError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels}; raise it with --max-pixels if you trust this file"
        )
    header_size = _header_size(n_streams)
    if size < header_size:
        raise CorruptStreamError(
            f"truncated: expected at least {header_size} bytes, got {size}"
        )
    lengths = struct.unpack_from(f"<{n_streams}I", view, PREFIX_SIZE)
    (stored,) = _U32.unpack_from(view, header_size - 4)
    if zlib.crc32(view[: header_size - 4]) != stored:
        raise CorruptStreamError("header checksum mismatch: the header is corrupt")
    header = Header(
        width=width,
        height=height,
        quality=quality,
        metric=METRICS[metric_code],
        model_hash=model_hash,
        stream_lengths=tuple(lengths),
    )
    return header, header_size


def _header_size(n_streams: int) -> int:
    return PREFIX_SIZE + 4 * n_streams + 4


def _is_int(value: object) -> bool:
    # bool is an int subclass, but True as a width is a bug, not a size.
    return isinstance(value, int) and not isinstance(value, bool)
