"""The ``.qlic`` container (FORMAT.md section 5)."""

import struct
import zlib
from dataclasses import dataclass

from .modelfile import FormatError

METRICS = ("mse", "msssim")


@dataclass
class Stream:
    width: int
    height: int
    level: int  # 0-based quality level
    metric: str
    model_id: bytes
    z: bytes
    y: bytes


def parse(data: bytes) -> Stream:
    if len(data) < 24 or data[:4] != b"QLIC":
        raise FormatError("not a qlic stream")
    _, version, metric, quality, n, width, height, model_id = struct.unpack_from(
        "<4sBBBBII8s", data)
    if version != 1:
        raise FormatError(f"container format {version} is not supported")
    if metric >= len(METRICS) or quality < 1 or n != 2 or width < 1 or height < 1:
        raise FormatError("bad header field")
    end = 24 + 4 * n
    if len(data) < end + 4:
        raise FormatError("truncated header")
    lengths = struct.unpack_from(f"<{n}I", data, 24)
    if zlib.crc32(data[:end]) != struct.unpack_from("<I", data, end)[0]:
        raise FormatError("header CRC32 mismatch")
    start = end + 4
    if len(data) != start + sum(lengths) + 4:
        raise FormatError("the file size does not match the stream lengths")
    if zlib.crc32(data[:-4]) != struct.unpack_from("<I", data, len(data) - 4)[0]:
        raise FormatError("file CRC32 mismatch")
    z = data[start:start + lengths[0]]
    y = data[start + lengths[0]:start + lengths[0] + lengths[1]]
    return Stream(width, height, quality - 1, METRICS[metric], model_id, z, y)
