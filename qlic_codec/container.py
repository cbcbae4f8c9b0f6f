"""The byte layout of a ``.qlic`` file: header, metadata chunks, entropy streams, checksums.

qlic writes format 3 (``FORMAT_VERSION``, the second table below) and reads formats 2 and 3.
Format 2, the first table, has the same fields in fixed-width integers. All integers are
little-endian and unsigned.

====================  ===========  ==================================================
Field                 Size         Meaning
====================  ===========  ==================================================
magic                 4            ``b"QLIC"``
format version        u8           2
metric code           u8           0 = ``"mse"``, 1 = ``"msssim"``
quality steps         u8           ``s``, sub-levels per unit of quality, 1..255
quality sub-level     u8           ``k``, 0..254: the quality is ``1 + k / s``
number of streams     u8           ``n``, 1..8 (qlic writes 2: ``z`` then ``y``)
number of chunks      u8           ``c``, 0..3 metadata chunks
width                 u32          image width in pixels, >= 1
height                u32          image height in pixels, >= 1
model hash            8            short id of the model file that encoded the image
stream lengths        n * u32      byte length of each entropy stream, in order
chunk table           c * (4 + 4)  each chunk's tag (4 ASCII bytes) and byte length (u32)
chunk data            sum(chunks)  the chunks' bytes, concatenated in table order
header CRC32          u32          ``zlib.crc32`` of every header byte above
streams               sum(len)     the entropy streams, concatenated in order
file CRC32            u32          ``zlib.crc32`` of every byte before it
====================  ===========  ==================================================

The fixed prefix (magic to model hash) is ``PREFIX_SIZE`` = 26 bytes. The tables after it
are at most ``MAX_TABLES_SIZE`` - 26 bytes, so the first ``MAX_TABLES_SIZE`` = 82 bytes of a
file always say how long its whole header is (``header_size``).

Format 3 says the same in 16 fewer bytes for a photo (26 bytes around the streams without
metadata, against 42). Its sizes are unsigned LEB128 numbers ("varints": 7 bits a
byte, low bits first, the top bit set on every byte but the last; at most 5 bytes, the
shortest encoding, at most ``2**32 - 1``), it always has two streams, the last one's length
is what the file's size leaves, and the file CRC32 is its only checksum:

====================  ===========  ==================================================
Field                 Size         Meaning
====================  ===========  ==================================================
magic                 4            ``b"QLIC"``
format version        u8           3
flags                 u8           bits 0-1 the metric code, bits 2-3 the number of
                                   chunks ``c`` (0..3), bits 4-7 zero
quality steps         u8           ``s``, 1..255
quality sub-level     u8           ``k``, 0..254
width                 varint       >= 1
height                varint       >= 1
model hash            8            as in format 2
first stream length   varint       the byte length of ``z``; ``y`` is the rest
chunk table           c * (4 + v)  each chunk's tag and its length as a varint
chunk data            sum(chunks)  the chunks' bytes, in table order
streams               ...          ``z`` then ``y``
file CRC32            u32          ``zlib.crc32`` of every byte before it
====================  ===========  ==================================================

Without a header checksum, ``read_header`` checks a format 3 header's structure only;
``parse`` checks the file CRC before it returns anything.

Metadata chunks, each at most ``MAX_CHUNK_SIZE`` (16 MiB) and each tag at most once:
``ICCP`` (an ICC colour profile), ``EXIF`` (EXIF as a TIFF structure, without JPEG's
``Exif\\0\\0`` prefix), ``XMP `` (an XMP packet, UTF-8). A reader refuses any other tag: a
chunk it does not know might change how the pixels are meant to be seen.

The quality is stored as a sub-level of the model's grid (``quality_steps`` sub-levels per
unit), so the header says the quality (e.g. 4.5 = sub-level 56 of 16 steps) without the
model; the decoder only uses ``k`` as a row index into the model's heads.

Format 1 (qlic 0.1) had one quality byte (an integer level) and no chunks; it is refused
with a message that names it.

``parse`` checks the header, every length against the buffer size and the checksums (format
2's two, format 3's one) before it returns anything, and slices nothing larger than the data
it was given, so a hostile file cannot make qlic allocate memory in proportion to the sizes
it claims.

This module imports nothing from qlic except ``errors``.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Sequence

from qlic_codec.errors import CorruptStreamError, ResourceLimitError, UnsupportedError

__all__ = [
    "CHUNK_TAGS",
    "DEFAULT_MAX_PIXELS",
    "FORMAT_VERSION",
    "FORMAT_VERSIONS",
    "MAGIC",
    "MAX_CHUNK_SIZE",
    "MAX_CHUNKS",
    "MAX_STREAMS",
    "MAX_TABLES_SIZE",
    "METRICS",
    "PREFIX_SIZE",
    "Header",
    "header_size",
    "pack",
    "parse",
    "read_header",
]

MAGIC = b"QLIC"
_MODEL_MAGIC = b"QLICMDL\0"  # modelfile.MAGIC, not imported: this module stands alone
FORMAT_VERSION = 3  # what ``pack`` writes unless a header says otherwise
# The formats this module reads and writes.
FORMAT_VERSIONS = (2, 3)
# 2**28 pixels is a 16384 x 16384 image: far beyond normal photos. The transforms run in
# bands of bounded memory (``engine.bands``), so decoding needs memory in proportion to the
# pixels only for the latents and the decoded image: about 6 bytes per padded pixel plus
# some 300 MiB with a plain hyperprior (the MS-SSIM model), about 2 GiB at this limit; the
# channel-conditional MSE model, which keeps what h_s predicts for each slice until the slice
# is decoded, needs about 18 bytes per pixel, about 5 GiB here (``benchmarks/README.md``). So this limit is what bounds the
# decoder's memory; lower it (``--max-pixels``) on small machines. A file whose entropy
# streams are too short for the pixels it claims is refused before those buffers exist
# (``entropy.coder``).
DEFAULT_MAX_PIXELS = 2**28
MAX_STREAMS = 8
# The position of a name is its code in the file; append new metrics, never reorder.
METRICS: tuple[str, ...] = ("mse", "msssim")
# Metadata chunks a reader understands, in the order qlic writes them.
CHUNK_TAGS: tuple[str, ...] = ("ICCP", "EXIF", "XMP ")
MAX_CHUNKS = len(CHUNK_TAGS)
# ICC profiles and EXIF blocks are kilobytes; XMP can carry thumbnails and edit histories but
# rarely more than a megabyte. 16 MiB bounds what a hostile header can make a reader hold.
MAX_CHUNK_SIZE = 16 * 2**20
# The qlic release that reads each older format, for the message that refuses it.
_READER_OF = {1: "qlic 0.1"}

_PREFIX = struct.Struct("<4sBBBBBBII8s")
_U32 = struct.Struct("<I")
_CHUNK_ENTRY = struct.Struct("<4sI")
PREFIX_SIZE = _PREFIX.size
MAX_TABLES_SIZE = PREFIX_SIZE + 4 * MAX_STREAMS + _CHUNK_ENTRY.size * MAX_CHUNKS
_U32_MAX = 2**32 - 1


@dataclass(frozen=True)
class Header:
    """The header of a ``.qlic`` file.

    Args:
        width: Image width in pixels, 1..2**32-1.
        height: Image height in pixels, 1..2**32-1.
        level: The quality sub-level, 0..254 (a row of the model's heads).
        quality_steps: Sub-levels per unit of quality, 1..255; the quality is
            ``1 + level / quality_steps``.
        metric: The distortion metric the model was trained for, ``"mse"`` or ``"msssim"``.
        model_hash: Exactly 8 bytes identifying the model file.
        stream_lengths: Byte length of each entropy stream (1..8 streams).
        chunks: Metadata chunks, ``(tag, data)`` pairs with tags from ``CHUNK_TAGS``, each
            at most once and at most ``MAX_CHUNK_SIZE`` bytes.
        version: The container format, one of ``FORMAT_VERSIONS`` (format 3: exactly two
            streams).

    Raises:
        ValueError: If a field is out of range.
    """

    width: int
    height: int
    level: int
    quality_steps: int
    metric: str
    model_hash: bytes
    stream_lengths: tuple[int, ...]
    chunks: tuple[tuple[str, bytes], ...] = ()
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        # Validating here means every Header in memory can be packed.
        if not _is_int(self.version) or self.version not in FORMAT_VERSIONS:
            raise ValueError(f"version must be one of {FORMAT_VERSIONS}, got {self.version!r}")
        if self.version == 3 and not _is_tuple_of(self.stream_lengths, 2):
            raise ValueError(f"format 3 has exactly 2 streams, got {self.stream_lengths!r}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if not _is_int(value) or not 1 <= value <= _U32_MAX:
                raise ValueError(f"{name} must be an int in 1..{_U32_MAX}, got {value!r}")
        if not _is_int(self.level) or not 0 <= self.level <= 254:
            raise ValueError(f"level must be an int in 0..254, got {self.level!r}")
        if not _is_int(self.quality_steps) or not 1 <= self.quality_steps <= 255:
            raise ValueError(
                f"quality_steps must be an int in 1..255, got {self.quality_steps!r}")
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
        if not isinstance(self.chunks, tuple):
            raise ValueError(f"chunks must be a tuple of (tag, bytes), got {self.chunks!r}")
        seen = set()
        for chunk in self.chunks:
            if not (isinstance(chunk, tuple) and len(chunk) == 2
                    and isinstance(chunk[1], bytes)):
                raise ValueError(f"each chunk must be a (tag, bytes) pair, got {chunk!r:.60}")
            tag, data = chunk
            if tag not in CHUNK_TAGS or tag in seen:
                raise ValueError(f"chunk tag {tag!r} is unknown or repeated; tags are "
                                 f"{CHUNK_TAGS}, each at most once")
            if len(data) > MAX_CHUNK_SIZE:
                raise ValueError(f"chunk {tag!r} is {len(data)} bytes, over the limit of "
                                 f"{MAX_CHUNK_SIZE}")
            seen.add(tag)

    @property
    def quality(self) -> int | float:
        """The quality as a number: an int on the integer levels (5), else a float (4.5)."""
        whole, part = divmod(self.level, self.quality_steps)
        return 1 + whole if part == 0 else 1 + self.level / self.quality_steps

    @property
    def header_size(self) -> int:
        """Size in bytes of this header, chunks and (format 2) its CRC included."""
        if self.version == 3:
            return len(_head_v3(self))
        return _tables_size(len(self.stream_lengths), len(self.chunks)) + sum(
            len(data) for _, data in self.chunks) + 4


def pack(header: Header, streams: Sequence[bytes]) -> bytes:
    """Serialize a header and its entropy streams into the bytes of a ``.qlic`` file.

    Args:
        header: The header (its chunks included); ``header.stream_lengths`` must match
            ``streams``.
        streams: The entropy streams, in order (``z`` then ``y`` for qlic).

    Returns:
        The complete file: header, chunks (format 2: and the header CRC), streams and file
        CRC.

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
    if header.version == 3:
        out = bytearray(_head_v3(header))
        for stream in streams:
            out += stream
        out += _U32.pack(zlib.crc32(out))
        return bytes(out)
    head = bytearray(
        _PREFIX.pack(
            MAGIC,
            2,
            METRICS.index(header.metric),
            header.quality_steps,
            header.level,
            len(header.stream_lengths),
            len(header.chunks),
            header.width,
            header.height,
            header.model_hash,
        )
    )
    for length in header.stream_lengths:
        head += _U32.pack(length)
    for tag, data in header.chunks:
        head += _CHUNK_ENTRY.pack(tag.encode("ascii"), len(data))
    for _, data in header.chunks:
        head += data
    head += _U32.pack(zlib.crc32(head))
    out = head
    for stream in streams:
        out += stream
    out += _U32.pack(zlib.crc32(out))
    return bytes(out)


def header_size(data: bytes) -> int:
    """The size of a file's whole header (chunks, and format 2's header CRC, included) from
    its first bytes.

    ``data`` needs at most the first ``MAX_TABLES_SIZE`` bytes of the file; a reader that
    wants only the header (``qlic info``, the Pillow plugin) reads that much, then the rest
    of the header. The counts, tags and lengths are validated on the way, but not a CRC.

    Raises:
        CorruptStreamError, UnsupportedError: As ``read_header``.
    """
    view = memoryview(data).cast("B")
    if _check_start(view) == 3:
        return _fields_v3(view)["size"]
    n_streams, n_chunks = _counts(view)
    return _tables_size(n_streams, n_chunks) + sum(
        length for _, length in _chunk_table(view, n_streams, n_chunks)) + 4


def read_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Validate and decode the header of a ``.qlic`` file, ignoring what follows it.

    Only the header's own bytes (``header_size``) are read, so a caller such as ``qlic
    info`` may pass just the start of a file. The streams and the file CRC are not checked;
    use ``parse`` for that. A format 3 header has no CRC of its own, and its second stream's
    length is what ``data`` leaves for it after the first stream and the file CRC (0 for a
    header alone).

    Args:
        data: The file, or at least its first ``header_size(data)`` bytes.
        max_pixels: Refuse images with more than this many pixels.

    Returns:
        The decoded header, metadata chunks included.

    Raises:
        CorruptStreamError: If the data is not a qlic file, is truncated or is corrupt, or
            has a metadata chunk that is unknown, repeated or over ``MAX_CHUNK_SIZE``.
        UnsupportedError: If the file is of another format version.
        ResourceLimitError: If ``width * height`` exceeds ``max_pixels``.
        ValueError: If ``max_pixels`` is not a positive int (a caller bug, not bad data).
    """
    header, _ = _read_header(memoryview(data).cast("B"), max_pixels)
    return header


def parse(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Header, list[bytes]]:
    """Validate a complete ``.qlic`` file and split it into its header and streams.

    Every check (header fields, pixel limit, chunk tags and sizes, format 2's header CRC and
    exact file size, the file CRC) runs before any buffer proportional to a claimed size is
    created.

    Args:
        data: The complete file.
        max_pixels: Refuse images with more than this many pixels.

    Returns:
        ``(header, streams)``, where ``streams[i]`` has ``header.stream_lengths[i]`` bytes.

    Raises:
        CorruptStreamError: If the data is not a qlic file, is truncated, has trailing
            bytes, fails a checksum or has a bad metadata chunk.
        UnsupportedError: If the file is of another format version.
        ResourceLimitError: If ``width * height`` exceeds ``max_pixels``.
        ValueError: If ``max_pixels`` is not a positive int (a caller bug, not bad data).
    """
    view = memoryview(data).cast("B")
    header, offset = _read_header(view, max_pixels)
    if header.version == 3:
        return _parse_v3(view, header, offset)
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


def _check_start(view: memoryview) -> int:
    """Magic and version: enough to know this is a file this reader understands. Returns
    the version."""
    size = len(view)
    # A short file whose first bytes are not the magic is "not a qlic file" (an empty file
    # or a stray text file), not a truncated one.
    if size == 0 or bytes(view[:4]) != MAGIC[: min(size, 4)]:
        raise CorruptStreamError("not a qlic file (bad magic)")
    # A model file shares the first four bytes; its fifth would read as format 77.
    if bytes(view[:8]) == _MODEL_MAGIC:
        raise CorruptStreamError("a qlic model file (.qlicm), not an image; pass it with "
                                 "--model")
    if size < 5:
        raise CorruptStreamError(f"truncated: expected at least {_PREFIX_V3_SIZE} bytes, got "
                                 f"{size}")
    version = view[4]
    known = " and ".join(str(v) for v in FORMAT_VERSIONS)
    if version > max(FORMAT_VERSIONS):
        raise UnsupportedError(
            f"written by a newer qlic (format {version}); upgrade qlic "
            f"(this one reads formats {known})"
        )
    if version in _READER_OF:
        raise UnsupportedError(
            f"this file is qlic format {version}; this qlic reads formats {known}: "
            f"decode it with {_READER_OF[version]}"
        )
    if version not in FORMAT_VERSIONS:
        raise CorruptStreamError(f"invalid format version {version}")
    least = _PREFIX_V3_SIZE if version == 3 else PREFIX_SIZE
    if size < least:
        raise CorruptStreamError(f"truncated: expected at least {least} bytes, got {size}")
    return version


def _counts(view: memoryview) -> tuple[int, int]:
    n_streams, n_chunks = view[8], view[9]
    if not 1 <= n_streams <= MAX_STREAMS:
        raise CorruptStreamError(
            f"invalid number of streams {n_streams} (must be 1..{MAX_STREAMS})"
        )
    if n_chunks > MAX_CHUNKS:
        raise CorruptStreamError(
            f"invalid number of metadata chunks {n_chunks} (must be 0..{MAX_CHUNKS})"
        )
    return n_streams, n_chunks


def _chunk_table(view: memoryview, n_streams: int, n_chunks: int) -> list[tuple[str, int]]:
    """The (tag, length) of each chunk, checked: known tags, once each, within the limit."""
    tables = _tables_size(n_streams, n_chunks)
    if len(view) < tables:
        raise CorruptStreamError(f"truncated: expected at least {tables} bytes, got {len(view)}")
    table = []
    for i in range(n_chunks):
        raw, length = _CHUNK_ENTRY.unpack_from(view, PREFIX_SIZE + 4 * n_streams + 8 * i)
        table.append(_checked_chunk(raw, length, table))
    return table


def _read_header(view: memoryview, max_pixels: int) -> tuple[Header, int]:
    """Validate the header at the start of ``view``; return it and the offset of stream 0."""
    if not _is_int(max_pixels) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    if _check_start(view) == 3:
        return _read_header_v3(view, max_pixels)
    _, _, metric_code, steps, level, n_streams, n_chunks, width, height, model_hash = (
        _PREFIX.unpack_from(view, 0)
    )
    _check_quality_fields(metric_code, steps, level)
    n_streams, n_chunks = _counts(view)
    _check_image_size(width, height, max_pixels)
    table = _chunk_table(view, n_streams, n_chunks)
    offset = _tables_size(n_streams, n_chunks)
    size = offset + sum(length for _, length in table) + 4
    if len(view) < size:
        raise CorruptStreamError(f"truncated: expected at least {size} bytes, got {len(view)}")
    lengths = struct.unpack_from(f"<{n_streams}I", view, PREFIX_SIZE)
    (stored,) = _U32.unpack_from(view, size - 4)
    if zlib.crc32(view[: size - 4]) != stored:
        raise CorruptStreamError("header checksum mismatch: the header is corrupt")
    chunks = []
    for tag, length in table:
        chunks.append((tag, bytes(view[offset : offset + length])))
        offset += length
    header = Header(
        width=width,
        height=height,
        level=level,
        quality_steps=steps,
        metric=METRICS[metric_code],
        model_hash=model_hash,
        stream_lengths=tuple(lengths),
        chunks=tuple(chunks),
        version=2,
    )
    return header, size


# Format 3: magic, version, flags, quality steps, sub-level; then varints and the model hash.
_PREFIX_V3_SIZE = 8
_VARINT_MAX_BYTES = 5


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _read_varint(view: memoryview, at: int, name: str) -> tuple[int, int]:
    """The varint at ``at`` and the offset after it; refused if truncated, longer than 5
    bytes, not the shortest encoding or above ``2**32 - 1``."""
    value = shift = 0
    for i in range(_VARINT_MAX_BYTES):
        if at + i >= len(view):
            raise CorruptStreamError(f"truncated: the {name} runs past the end of the data")
        byte = view[at + i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if i and byte == 0:
                raise CorruptStreamError(f"invalid {name}: not its shortest encoding")
            if value > _U32_MAX:
                raise CorruptStreamError(f"invalid {name}: {value} is over {_U32_MAX}")
            return value, at + i + 1
    raise CorruptStreamError(f"invalid {name}: longer than {_VARINT_MAX_BYTES} bytes")


def _head_v3(header: "Header") -> bytes:
    """The format 3 header of ``header``: everything before the streams."""
    flags = METRICS.index(header.metric) | len(header.chunks) << 2
    head = bytearray(struct.pack("<4sBBBB", MAGIC, 3, flags, header.quality_steps,
                                 header.level))
    head += _varint(header.width) + _varint(header.height) + header.model_hash
    head += _varint(header.stream_lengths[0])
    for tag, data in header.chunks:
        head += tag.encode("ascii") + _varint(len(data))
    for _, data in header.chunks:
        head += data
    return bytes(head)


def _fields_v3(view: memoryview) -> dict:
    """The fields of a format 3 header, checked but for the pixel limit, with ``size`` (the
    header's bytes, chunk data included) and ``chunk_table``."""
    flags, steps, level = view[5], view[6], view[7]
    metric_code, n_chunks = flags & 3, flags >> 2 & 3
    if flags >> 4:
        raise CorruptStreamError(f"invalid flags {flags:#04x}: bits 4-7 must be zero")
    _check_quality_fields(metric_code, steps, level)
    width, at = _read_varint(view, _PREFIX_V3_SIZE, "width")
    height, at = _read_varint(view, at, "height")
    if at + 8 > len(view):
        raise CorruptStreamError(f"truncated: expected at least {at + 8} bytes, got "
                                 f"{len(view)}")
    model_hash = bytes(view[at: at + 8])
    z_length, at = _read_varint(view, at + 8, "first stream length")
    table = []
    for _ in range(n_chunks):
        if at + 4 > len(view):
            raise CorruptStreamError(f"truncated: expected at least {at + 4} bytes, got "
                                     f"{len(view)}")
        raw = bytes(view[at: at + 4])
        length, at = _read_varint(view, at + 4, "chunk length")
        table.append(_checked_chunk(raw, length, table))
    size = at + sum(length for _, length in table)
    return {"metric_code": metric_code, "steps": steps, "level": level, "width": width,
            "height": height, "model_hash": model_hash, "z_length": z_length,
            "chunk_table": table, "tables_end": at, "size": size}


def _read_header_v3(view: memoryview, max_pixels: int) -> tuple["Header", int]:
    f = _fields_v3(view)
    width, height = f["width"], f["height"]
    _check_image_size(width, height, max_pixels)
    if len(view) < f["size"]:
        raise CorruptStreamError(f"truncated: expected at least {f['size']} bytes, got "
                                 f"{len(view)}")
    chunks, offset = [], f["tables_end"]
    for tag, length in f["chunk_table"]:
        chunks.append((tag, bytes(view[offset: offset + length])))
        offset += length
    # The second stream's length is known only from the whole file; the header read alone
    # (``qlic info``) reports what the data given leaves for it, at least 0.
    rest = max(len(view) - f["size"] - f["z_length"] - 4, 0)
    if rest > _U32_MAX:
        raise CorruptStreamError(f"the second stream is {rest} bytes, over the {_U32_MAX} a "
                                 "stream may have")
    header = Header(width=width, height=height, level=f["level"], quality_steps=f["steps"],
                    metric=METRICS[f["metric_code"]], model_hash=f["model_hash"],
                    stream_lengths=(f["z_length"], rest), chunks=tuple(chunks), version=3)
    return header, f["size"]


def _parse_v3(view: memoryview, header: "Header", offset: int) -> tuple["Header", list]:
    z_length = header.stream_lengths[0]
    if len(view) < offset + z_length + 4:
        raise CorruptStreamError(f"truncated: expected at least {offset + z_length + 4} "
                                 f"bytes, got {len(view)}")
    (stored,) = _U32.unpack_from(view, len(view) - 4)
    if zlib.crc32(view[: len(view) - 4]) != stored:
        raise CorruptStreamError("file checksum mismatch: the data is corrupt")
    z = bytes(view[offset: offset + z_length])
    y = bytes(view[offset + z_length: len(view) - 4])
    return header, [z, y]


def _checked_chunk(raw: bytes, length: int, table: list) -> tuple[str, int]:
    """A chunk table entry: a known tag, not seen before, within the size limit."""
    tag = raw.decode("latin-1")
    if tag not in CHUNK_TAGS:
        raise CorruptStreamError(f"unknown metadata chunk {raw!r} (this qlic reads "
                                 f"{', '.join(CHUNK_TAGS)})")
    if any(tag == seen for seen, _ in table):
        raise CorruptStreamError(f"metadata chunk {raw!r} appears twice")
    if length > MAX_CHUNK_SIZE:
        raise CorruptStreamError(f"metadata chunk {raw!r} claims {length} bytes, over "
                                 f"the limit of {MAX_CHUNK_SIZE}")
    return tag, length


def _is_tuple_of(value, count: int) -> bool:
    return isinstance(value, tuple) and len(value) == count


def _check_quality_fields(metric_code: int, steps: int, level: int) -> None:
    """The metric, quality steps and sub-level of a header (both formats)."""
    if metric_code >= len(METRICS):
        raise CorruptStreamError(f"unknown metric code {metric_code}")
    if steps < 1:
        raise CorruptStreamError(f"invalid quality steps {steps} (must be 1..255)")
    if level > 254:
        raise CorruptStreamError(f"invalid quality sub-level {level} (must be 0..254)")


def _check_image_size(width: int, height: int, max_pixels: int) -> None:
    """A header's image size: at least 1x1, at most ``max_pixels`` (both formats)."""
    if width < 1 or height < 1:
        raise CorruptStreamError(f"invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise ResourceLimitError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_pixels}; raise it with --max-pixels if you trust this file"
        )


def _tables_size(n_streams: int, n_chunks: int) -> int:
    return PREFIX_SIZE + 4 * n_streams + _CHUNK_ENTRY.size * n_chunks


def _is_int(value: object) -> bool:
    # bool is an int subclass, but True as a width is a bug, not a size.
    return isinstance(value, int) and not isinstance(value, bool)
