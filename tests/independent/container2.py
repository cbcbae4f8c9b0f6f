"""Container format 2 written by the tests from FORMAT.md section 5, to make files the
independent decoder must read or refuse.

qlic writes format 1 until its format-2 container is merged; ``as_format_2`` moves such a
file's streams into the same header in format 2 (quality ``q`` is sub-level ``q - 1`` of a
grid of one step), so that the pixel tests hold before and after. A format-2 file passes
through unchanged.
"""

import struct
import zlib


def pack(width, height, model_id, streams, *, metric=0, steps=1, level=0, chunks=(),
         version=2):
    """The bytes of a ``.qlic`` file; ``chunks`` are ``(tag, data)`` pairs, tags 4 bytes."""
    head = struct.pack("<4sBBBBBBII8s", b"QLIC", version, metric, steps, level, len(streams),
                       len(chunks), width, height, model_id)
    head += b"".join(struct.pack("<I", len(s)) for s in streams)
    head += b"".join(struct.pack("<4sI", tag, len(data)) for tag, data in chunks)
    head += b"".join(data for _, data in chunks)
    body = head + struct.pack("<I", zlib.crc32(head)) + b"".join(streams)
    return body + struct.pack("<I", zlib.crc32(body))


def as_format_2(data: bytes) -> bytes:
    if data[4] != 1:
        return data
    _, _, metric, quality, n, width, height, model_id = struct.unpack_from("<4sBBBBII8s", data)
    lengths = struct.unpack_from(f"<{n}I", data, 24)
    at, streams = 24 + 4 * n + 4, []
    for length in lengths:
        streams.append(data[at:at + length])
        at += length
    return pack(width, height, model_id, streams, metric=metric, level=quality - 1)
