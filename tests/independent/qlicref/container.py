"""The ``.qlic`` container, formats 2 and 3 (FORMAT.md sections 5 and 5.1)."""

import struct
import zlib
from dataclasses import dataclass

from .modelfile import FormatError

VERSIONS = (2, 3)
METRICS = ("mse", "msssim")
CHUNK_TAGS = (b"ICCP", b"EXIF", b"XMP ")
MAX_STREAMS = 8
MAX_CHUNK_SIZE = 16 * 2**20
PREFIX = struct.Struct("<4sBBBBBBII8s")  # magic .. model id: 26 bytes


@dataclass
class Stream:
    width: int
    height: int
    level: int  # the quality sub-level k: the row of the per-level heads
    quality_steps: int  # s: the quality is 1 + k / s
    metric: str
    model_id: bytes
    chunks: dict  # tag (4 bytes) -> data; decoding never reads them
    z: bytes
    y: bytes


def parse(data: bytes) -> Stream:
    if len(data) < 5 or data[:4] != b"QLIC":
        raise FormatError("not a qlic stream")
    if data[4] not in VERSIONS:
        raise FormatError(f"container format {data[4]} is not supported (this reads 2 and 3)")
    if data[4] == 3:
        return _parse_3(data)
    if len(data) < PREFIX.size:
        raise FormatError("truncated header")
    _, _, metric, steps, level, n, c, width, height, model_id = PREFIX.unpack_from(data)
    if metric >= len(METRICS) or steps < 1 or level > 254 or width < 1 or height < 1:
        raise FormatError("bad header field")
    # A decoder of this document reads exactly the two streams z and y.
    if not 1 <= n <= MAX_STREAMS or n != 2 or c > len(CHUNK_TAGS):
        raise FormatError("bad number of streams or chunks")
    table = PREFIX.size + 4 * n
    chunk_start = table + 8 * c
    if len(data) < chunk_start:
        raise FormatError("truncated header")
    lengths = struct.unpack_from(f"<{n}I", data, PREFIX.size)
    entries = [struct.unpack_from("<4sI", data, table + 8 * i) for i in range(c)]
    _check_chunks(entries)
    end = chunk_start + sum(length for _, length in entries)
    if len(data) < end + 4:
        raise FormatError("truncated header")
    if zlib.crc32(data[:end]) != struct.unpack_from("<I", data, end)[0]:
        raise FormatError("header CRC32 mismatch")
    start = end + 4
    if len(data) != start + sum(lengths) + 4:
        raise FormatError("the file size does not match the stream lengths")
    if zlib.crc32(data[:-4]) != struct.unpack_from("<I", data, len(data) - 4)[0]:
        raise FormatError("file CRC32 mismatch")
    chunks, at = {}, chunk_start
    for tag, length in entries:
        chunks[tag] = data[at:at + length]
        at += length
    z = data[start:start + lengths[0]]
    y = data[start + lengths[0]:start + lengths[0] + lengths[1]]
    return Stream(width, height, level, steps, METRICS[metric], model_id, chunks, z, y)


def _check_chunks(entries) -> None:
    """Known tags, each once, each at most 16 MiB (both formats)."""
    tags = [tag for tag, _ in entries]
    if any(t not in CHUNK_TAGS for t in tags) or len(set(tags)) != len(tags):
        raise FormatError(f"unknown or repeated metadata chunk in {tags}")
    if any(length > MAX_CHUNK_SIZE for _, length in entries):
        raise FormatError("metadata chunk over 16 MiB")


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """An unsigned LEB128 number of at most 5 bytes, in its shortest encoding, below 2**32."""
    value = 0
    for i in range(5):
        if at + i >= len(data):
            raise FormatError("truncated header")
        byte = data[at + i]
        value += (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if i > 0 and byte == 0:
                raise FormatError("varint not in its shortest encoding")
            if value >= 2**32:
                raise FormatError("varint above 2**32 - 1")
            return value, at + i + 1
    raise FormatError("varint longer than 5 bytes")


def _parse_3(data: bytes) -> Stream:
    if len(data) < 8:
        raise FormatError("truncated header")
    flags, steps, level = data[5], data[6], data[7]
    metric, c = flags & 3, (flags >> 2) & 3
    if flags >= 16 or metric >= len(METRICS) or steps < 1 or level > 254:
        raise FormatError("bad header field")
    width, at = _varint(data, 8)
    height, at = _varint(data, at)
    if width < 1 or height < 1:
        raise FormatError("bad header field")
    if len(data) < at + 8:
        raise FormatError("truncated header")
    model_id = data[at:at + 8]
    z_length, at = _varint(data, at + 8)
    entries = []
    for _ in range(c):
        if len(data) < at + 4:
            raise FormatError("truncated header")
        tag = data[at:at + 4]
        length, at = _varint(data, at + 4)
        entries.append((tag, length))
    _check_chunks(entries)
    start = at + sum(length for _, length in entries)
    if len(data) < start + z_length + 4:
        raise FormatError("the file is shorter than its header and first stream")
    if len(data) - start - z_length - 4 >= 2**32:
        raise FormatError("a y stream of 4 GiB or more")
    if zlib.crc32(data[:-4]) != struct.unpack_from("<I", data, len(data) - 4)[0]:
        raise FormatError("file CRC32 mismatch")
    chunks = {}
    for tag, length in entries:
        chunks[tag] = data[at:at + length]
        at += length
    z = data[start:start + z_length]
    y = data[start + z_length:len(data) - 4]
    return Stream(width, height, level, steps, METRICS[metric], model_id, chunks, z, y)
