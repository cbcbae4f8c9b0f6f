"""The independent decoder reads container formats 2 and 3 (FORMAT.md sections 5 and 5.1)
and refuses what the document refuses, format 1 included.

``test_qlic_writes_what_the_document_says`` reads qlic's own container (format 3: fractional
quality, metadata chunks); the other tests make their files with ``container2``.
"""

import struct
import zlib

import numpy as np
import pytest

import qlic_codec
import qlicref
from conftest import GOLDEN, TINY_MODEL, synthetic_photo
from container2 import as_format_2, pack, pack3, varint
from qlicref import container

ICC, EXIF, XMP = b"an icc profile", b"MM\x00*\x00\x00\x00\x08\x00\x00", b"<x:xmpmeta/>"


@pytest.fixture(scope="module")
def tiny():
    """A format-2 file of the tiny model, its parts and qlic's pixels."""
    data = qlic_codec.encode(synthetic_photo(33, 47, seed=2), 3, str(TINY_MODEL))
    pixels = qlic_codec.decode(data, str(TINY_MODEL))
    data = as_format_2(data)
    return data, container.parse(data), pixels, TINY_MODEL.read_bytes()


def _repack(s, packer=pack, **changes):
    """``s``'s streams in a new file (format 2, or 3 with ``packer=pack3``), with changes."""
    fields = dict(metric=0, steps=s.quality_steps, level=s.level, chunks=())
    fields.update(changes)
    return packer(s.width, s.height, s.model_id, [s.z, s.y], **fields)


def test_chunks_are_carried_and_do_not_change_the_pixels(tiny):
    data, s, pixels, model = tiny
    # Another order than qlic's: a reader accepts any.
    chunks = ((b"XMP ", XMP), (b"ICCP", ICC), (b"EXIF", EXIF))
    with_chunks = _repack(s, chunks=chunks)
    assert container.parse(with_chunks).chunks == dict(chunks)
    np.testing.assert_array_equal(qlicref.decode(with_chunks, model), pixels)


def _levels():
    return qlicref.read_model(TINY_MODEL.read_bytes()).manifest["levels"]


def _flip(data, at):
    out = bytearray(data)
    out[at] ^= 0x10
    return bytes(out)


REFUSED = {
    "format 1": lambda d, s: d[:4] + b"\x01" + d[5:],
    "format 2 bytes called format 3": lambda d, s: d[:4] + b"\x03" + d[5:],
    "format 4": lambda d, s: d[:4] + b"\x04" + d[5:],
    "metric code 2": lambda d, s: _repack(s, metric=2),
    "0 quality steps": lambda d, s: _repack(s, steps=0),
    "sub-level 255": lambda d, s: _repack(s, level=255),
    "steps not the model's": lambda d, s: _repack(s, steps=s.quality_steps + 1),
    "sub-level not a row of the heads": lambda d, s: _repack(s, level=_levels()),
    "unknown chunk": lambda d, s: _repack(s, chunks=((b"TEXT", b"hello"),)),
    "repeated chunk": lambda d, s: _repack(s, chunks=((b"EXIF", EXIF), (b"EXIF", EXIF))),
    "four chunks": lambda d, s: _repack(s, chunks=((b"ICCP", ICC), (b"EXIF", EXIF),
                                                   (b"XMP ", XMP), (b"ICCP", ICC))),
    "header CRC": lambda d, s: _flip(d, 12),
    "chunk data under the header CRC": lambda d, s: _flip(
        _repack(s, chunks=((b"ICCP", ICC),)), 26 + 8 + 8 + 2),
    "file CRC": lambda d, s: _flip(d, len(d) - 6),
    "trailing byte": lambda d, s: d + b"\x00",
    "truncated": lambda d, s: d[:-1],
    "stream not whole words": lambda d, s: pack(s.width, s.height, s.model_id,
                                                [s.z, s.y + b"\x00"], level=s.level),
}


@pytest.mark.parametrize("edit", REFUSED)
def test_refuses_what_the_document_refuses(tiny, edit):
    data, s, _, model = tiny
    # FormatError, and a stream of partial words, are ValueErrors.
    with pytest.raises(ValueError):
        qlicref.decode(REFUSED[edit](data, s), model)


def test_refuses_a_chunk_over_16_mib(tiny):
    data, s, _, model = tiny
    bad = bytearray(_repack(s, chunks=((b"ICCP", ICC),)))
    # Only the claimed length: a reader refuses it before reading that much.
    struct.pack_into("<I", bad, 26 + 8 + 4, 16 * 2**20 + 1)
    end = 26 + 8 + 8 + len(ICC)
    struct.pack_into("<I", bad, end, zlib.crc32(bytes(bad[:end])))
    with pytest.raises(qlicref.FormatError, match="16 MiB"):
        container.parse(bytes(bad))


def test_qlic_writes_what_the_document_says():
    """qlic's container itself (format 3): a fractional quality is a sub-level of the
    model's grid, and the metadata travels in chunks that do not change the pixels."""
    image = synthetic_photo(47, 70, seed=4)
    meta = qlic_codec.Metadata(icc=ICC, exif=EXIF, xmp=XMP)
    model_bytes = TINY_MODEL.read_bytes()
    steps = qlicref.read_model(model_bytes).manifest.get("quality_steps", 1)
    assert steps > 1, "the tiny model has a grid of sub-levels"
    for quality, level in ((1, 0), (4.5, round(3.5 * steps)), (8, 7 * steps)):
        data = qlic_codec.encode(image, quality, str(TINY_MODEL), metadata=meta)
        assert data[4] == 3
        s = container.parse(data)
        assert (s.quality_steps, s.level) == (steps, level)
        assert s.chunks == {b"ICCP": ICC, b"EXIF": EXIF, b"XMP ": XMP}
        want = qlic_codec.decode(data, str(TINY_MODEL))
        np.testing.assert_array_equal(qlicref.decode(data, model_bytes), want)
    cc = GOLDEN / "tiny-cc.qlicm"
    data = qlic_codec.encode(image, 2, str(cc), metadata=meta)
    assert data[4] == 3
    np.testing.assert_array_equal(qlicref.decode(data, cc.read_bytes()),
                                  qlic_codec.decode(data, str(cc)))


def _repack3(s, **changes):
    return _repack(s, pack3, **changes)


def test_format_3_reads_as_format_2(tiny):
    data, s, pixels, model = tiny
    chunks = ((b"EXIF", EXIF), (b"ICCP", ICC))
    again = _repack3(s, chunks=chunks)
    assert container.parse(again).chunks == dict(chunks)
    np.testing.assert_array_equal(qlicref.decode(again, model), pixels)
    # 10 bytes fewer, and 3 for each of the width, height and z length under 128 (2 for
    # those under 16,384), and 3 more for each chunk (its length a small varint).
    saved = 10 + sum(4 - len(varint(v)) for v in (s.width, s.height, len(s.z)))
    assert len(_repack3(s)) == len(_repack(s)) - saved
    assert len(again) == len(_repack(s, chunks=chunks)) - saved - 3 * len(chunks)


REFUSED_3 = {
    "flag bit 4": lambda s: _repack3(s, flags=0x10),
    "metric code 2": lambda s: _repack3(s, flags=0x02),
    "0 quality steps": lambda s: _repack3(s, steps=0),
    "sub-level 255": lambda s: _repack3(s, level=255),
    "width 0": lambda s: _repack3(s, size=b"\x00" + varint(s.height)),
    "a varint not at its shortest": lambda s: _repack3(s, size=varint(s.width)[:-1] + bytes(
        [varint(s.width)[-1] | 0x80, 0]) + varint(s.height)),
    "a varint of 6 bytes": lambda s: _repack3(s, size=b"\x81\x80\x80\x80\x80\x00" + varint(
        s.height)),
    "a varint over 2**32 - 1": lambda s: _repack3(s, size=b"\xff\xff\xff\xff\x1f" + varint(
        s.height)),
    "unknown chunk": lambda s: _repack3(s, chunks=((b"TEXT", b"hello"),)),
    "repeated chunk": lambda s: _repack3(s, chunks=((b"EXIF", EXIF), (b"EXIF", EXIF))),
    "file CRC": lambda s: _flip(_repack3(s), 9),
    "truncated": lambda s: _repack3(s)[:-1],
    "trailing byte": lambda s: _repack3(s) + b"\x00",
}


@pytest.mark.parametrize("edit", REFUSED_3)
def test_refuses_what_the_document_refuses_in_format_3(tiny, edit):
    _, s, _, model = tiny
    with pytest.raises(ValueError):
        qlicref.decode(REFUSED_3[edit](s), model)
