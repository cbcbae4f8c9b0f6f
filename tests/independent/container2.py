"""Container formats 2 and 3 written by the tests from FORMAT.md sections 5 and 5.1, to
make files the independent decoder must read or refuse.

``as_format_2`` moves a file of another format into the same header in format 2 (from
format 1, quality ``q`` is sub-level ``q - 1`` of a grid of one step), so that the tests of
format 2's rules hold whatever qlic writes. A format-2 file passes through unchanged.
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


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def pack3(width, height, model_id, streams, *, metric=0, steps=1, level=0, chunks=(),
          flags=None, size=None):
    """The bytes of a format 3 ``.qlic`` file (two streams); ``flags`` and ``size`` (the
    width and height as raw bytes) override what the fields give."""
    flags = metric | len(chunks) << 2 if flags is None else flags
    body = struct.pack("<4sBBBB", b"QLIC", 3, flags, steps, level)
    body += (varint(width) + varint(height) if size is None else size) + model_id
    body += varint(len(streams[0]))
    body += b"".join(tag + varint(len(data)) for tag, data in chunks)
    body += b"".join(data for _, data in chunks) + streams[0] + streams[1]
    return body + struct.pack("<I", zlib.crc32(body))


def as_format_2(data: bytes) -> bytes:
    if data[4] == 3:
        from qlicref import container
        s = container.parse(data)
        return pack(s.width, s.height, s.model_id, [s.z, s.y], metric=("mse", "msssim").index(
            s.metric), steps=s.quality_steps, level=s.level, chunks=tuple(s.chunks.items()))
    if data[4] != 1:
        return data
    _, _, metric, quality, n, width, height, model_id = struct.unpack_from("<4sBBBBII8s", data)
    lengths = struct.unpack_from(f"<{n}I", data, 24)
    at, streams = 24 + 4 * n + 4, []
    for length in lengths:
        streams.append(data[at:at + length])
        at += length
    return pack(width, height, model_id, streams, metric=metric, level=quality - 1)
