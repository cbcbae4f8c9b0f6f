"""Container format 3: the format 2 fields in fewer bytes (varint sizes, two streams, the
second one's length from the file's size, one checksum), read and written beside format 2."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qlic_codec import container
from qlic_codec.container import Header, header_size, pack, parse, read_header
from qlic_codec.errors import CorruptStreamError, QlicError, ResourceLimitError

HASH = bytes(range(1, 9))
SMALL = Header(width=3, height=2, level=56, quality_steps=16, metric="msssim", model_hash=HASH,
               stream_lengths=(2, 3), chunks=(("ICCP", b"icc1"),), version=3)
STREAMS = [b"zz", b"yyy"]

# The exact bytes of SMALL with STREAMS. If this test fails, the layout changed: that is a
# new format version, never just a new hex.
GOLDEN_HEX = (
    "514c4943"  # magic
    "03"  # format version
    "05"  # flags: metric 1 (msssim), one chunk (1 << 2)
    "10"  # quality steps (16)
    "38"  # quality sub-level (56: quality 4.5)
    "03"  # width, varint
    "02"  # height, varint
    "0102030405060708"  # model hash
    "02"  # first stream's length, varint
    "49434350"  # chunk 0 tag (ICCP)
    "04"  # chunk 0 length, varint
    "69636331"  # chunk 0 data
    "7a7a"  # stream 0
    "797979"  # stream 1: the rest before the CRC
)


def small_file() -> bytes:
    return pack(SMALL, STREAMS)


def forge(*, flags=0, steps=16, level=10, size=b"\x10\x08", z=b"\x02", chunks=b"",
          streams=b"abcde", crc=None, version=3) -> bytes:
    """Raw format 3 bytes with any field chosen freely and the CRC valid by default."""
    body = struct.pack("<4sBBBB", b"QLIC", version, flags, steps, level) + size + HASH + z
    body += chunks + streams
    return body + struct.pack("<I", zlib.crc32(body) if crc is None else crc)


def test_golden_bytes() -> None:
    data = small_file()
    assert data[:-4].hex() == GOLDEN_HEX
    assert data[-4:] == struct.pack("<I", zlib.crc32(data[:-4]))
    assert parse(data) == (SMALL, STREAMS)


@pytest.mark.parametrize("width, height, z_length", [
    (1, 1, 0), (127, 128, 127), (481, 321, 372), (16383, 16384, 2**14),
    (2**32 - 1, 1, 2**21 - 1), (1, 2**32 - 1, 2**21),
])
def test_round_trip_at_every_varint_width(width, height, z_length) -> None:
    header = Header(width=width, height=height, level=3, quality_steps=16, metric="mse",
                    model_hash=HASH, stream_lengths=(z_length, 5), version=3)
    streams = [b"\x01" * z_length, b"\x02" * 5]
    data = pack(header, streams)
    assert len(data) == header.header_size + z_length + 5 + 4
    assert parse(data, max_pixels=2**32) == (header, streams)
    assert header_size(data[:container.MAX_TABLES_SIZE]) == header.header_size
    assert read_header(data, max_pixels=2**32) == header


def test_sixteen_bytes_fewer_than_format_2_for_a_photo() -> None:
    fields = dict(width=768, height=512, level=48, quality_steps=16, metric="mse",
                  model_hash=HASH, stream_lengths=(872, 25848))
    v2, v3 = Header(**fields, version=2), Header(**fields, version=3)
    assert v2.header_size + 4 == 42 and v3.header_size + 4 == 26
    streams = [b"z" * 872, b"y" * 25848]
    assert len(pack(v2, streams)) - len(pack(v3, streams)) == 16


def test_chunks_round_trip_in_any_order() -> None:
    chunks = (("XMP ", b"<x/>"), ("ICCP", b"\x00" * 300), ("EXIF", b"MM\x00*"))
    header = Header(width=5, height=7, level=3, quality_steps=2, metric="mse", model_hash=HASH,
                    stream_lengths=(1, 0), chunks=chunks, version=3)
    assert parse(pack(header, [b"z", b""])) == (header, [b"z", b""])


def test_a_header_alone_says_its_size_and_fields() -> None:
    data = small_file()
    head = data[: SMALL.header_size]
    assert header_size(head) == SMALL.header_size
    got = read_header(head)
    # The second stream's length needs the whole file: the header alone leaves it at 0.
    assert got.stream_lengths == (2, 0)
    assert (got.width, got.height, got.quality, got.chunks) == (3, 2, 4.5, SMALL.chunks)


def test_format_3_needs_two_streams() -> None:
    with pytest.raises(ValueError, match="exactly 2 streams"):
        Header(width=1, height=1, level=0, quality_steps=1, metric="mse", model_hash=HASH,
               stream_lengths=(1,), version=3)
    with pytest.raises(ValueError, match="version"):
        Header(width=1, height=1, level=0, quality_steps=1, metric="mse", model_hash=HASH,
               stream_lengths=(1, 1), version=4)


@pytest.mark.parametrize("flags, message", [
    (0x10, "bits 4-7 must be zero"), (0x80, "bits 4-7 must be zero"),
    (0x02, "unknown metric code 2"), (0x03, "unknown metric code 3"),
])
def test_rejects_bad_flags(flags, message) -> None:
    with pytest.raises(CorruptStreamError, match=message):
        parse(forge(flags=flags))


def test_rejects_bad_quality_fields() -> None:
    with pytest.raises(CorruptStreamError, match="quality steps"):
        parse(forge(steps=0))
    with pytest.raises(CorruptStreamError, match="sub-level"):
        parse(forge(level=255))


@pytest.mark.parametrize("size, message", [
    (b"\x80\x00\x08", "shortest encoding"),  # 0 as two bytes
    (b"\x90\x80\x00\x08", "shortest encoding"),
    (b"\xff\xff\xff\xff\x7f\x08", "over 4294967295"),  # 2**35 - 1
    (b"\x80\x80\x80\x80\x80\x01\x08", "longer than 5 bytes"),
    (b"\x00\x08", "invalid image size 0x8"),
])
def test_rejects_bad_varints(size, message) -> None:
    with pytest.raises(CorruptStreamError, match=message):
        parse(forge(size=size))


def test_rejects_too_many_pixels() -> None:
    data = forge(size=b"\x80\x80\x04\x80\x80\x04")  # 65536 x 65536
    with pytest.raises(ResourceLimitError, match="over the limit"):
        parse(data)
    with pytest.raises(ResourceLimitError):
        read_header(data)
    assert parse(data, max_pixels=2**32)[0].width == 65536


@pytest.mark.parametrize("chunks, message", [
    (b"ABCD\x01x", "unknown metadata chunk"),
    (b"ICCP\x01ICCP\x01xy", "appears twice"),
    (b"EXIF\x81\x80\x80\x08", "over the limit"),  # 16 MiB + 1
])
def test_rejects_bad_chunks(chunks, message) -> None:
    n = chunks.count(b"ICCP") + chunks.count(b"EXIF") + chunks.count(b"ABCD")
    with pytest.raises(CorruptStreamError, match=message):
        parse(forge(flags=n << 2, chunks=chunks))


def test_a_first_stream_longer_than_the_file_is_truncation() -> None:
    with pytest.raises(CorruptStreamError, match="truncated"):
        parse(forge(z=b"\x06", streams=b"abcde"))
    assert parse(forge(z=b"\x05", streams=b"abcde"))[1] == [b"abcde", b""]


def test_a_first_stream_length_of_5_bytes_is_read_before_the_size_check() -> None:
    with pytest.raises(CorruptStreamError, match="truncated"):
        parse(forge(z=b"\x80\x80\x80\x80\x01"))  # 2**28 bytes claimed


def test_a_second_stream_over_4_gib_is_refused(monkeypatch) -> None:
    # As if the file were 4 GiB long: the limit, lowered, is what is under test.
    data = forge(size=b"\x01\x01", z=b"\x00", streams=b"abcde")
    assert parse(data)[1] == [b"", b"abcde"]
    monkeypatch.setattr(container, "_U32_MAX", 4)
    with pytest.raises(CorruptStreamError, match="the second stream is 5 bytes"):
        parse(data)


def test_a_trailing_byte_fails_the_checksum() -> None:
    with pytest.raises(CorruptStreamError, match="checksum"):
        parse(small_file() + b"\x00")


def test_truncation_at_every_offset() -> None:
    data = small_file()
    for cut in range(len(data)):
        with pytest.raises(CorruptStreamError):
            parse(data[:cut])


def test_read_header_truncation_at_every_header_offset() -> None:
    data = small_file()
    for cut in range(SMALL.header_size):
        with pytest.raises(CorruptStreamError):
            read_header(data[:cut])


def test_every_single_bit_flip_is_detected() -> None:
    data = small_file()
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(QlicError):
            parse(bytes(flipped))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_after_the_magic_raise_only_qlic_errors(tail: bytes) -> None:
    data = b"QLIC\x03" + tail
    for read in (parse, read_header, header_size):
        try:
            read(data)
        except QlicError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(small_file())), st.binary(min_size=1, max_size=8))
def test_overwritten_bytes_raise_only_qlic_errors(offset: int, patch: bytes) -> None:
    data = bytearray(small_file())
    data[offset: offset + len(patch)] = patch
    for read in (parse, read_header, header_size):
        try:
            read(bytes(data))
        except QlicError:
            pass


def test_qlic_writes_format_3_and_reads_both() -> None:
    header = Header(width=3, height=2, level=1, quality_steps=16, metric="mse",
                    model_hash=HASH, stream_lengths=(2, 3))
    assert header.version == container.FORMAT_VERSION == 3
    data = pack(header, STREAMS)
    assert data[4] == 3
    v2 = pack(Header(**{**header.__dict__, "version": 2}), STREAMS)
    assert parse(v2)[1] == parse(data)[1] == STREAMS
