"""Tests for the ``.qlic`` container: round trips, each validation rule, fuzzing, golden."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qlic_codec import container
from qlic_codec.container import (
    DEFAULT_MAX_PIXELS,
    FORMAT_VERSION,
    FORMAT_VERSIONS,
    MAX_CHUNK_SIZE,
    MAX_TABLES_SIZE,
    PREFIX_SIZE,
    Header,
    header_size,
    pack,
    parse,
    read_header,
)
from qlic_codec.errors import (
    CorruptStreamError,
    QlicError,
    ResourceLimitError,
    UnsupportedError,
)

HASH = bytes(range(1, 9))


def Header(**fields) -> container.Header:  # noqa: N802  (the class, in format 2)
    """This file tests format 2 (``test_container_v3.py`` the format qlic writes)."""
    return container.Header(**{"version": 2, **fields})

# The exact bytes of SMALL_HEADER packed with SMALL_STREAMS. If this test fails, the layout
# changed: bump FORMAT_VERSION and update the hex on purpose, never just the hex.
GOLDEN_HEX = (
    "514c4943"  # magic
    "02"  # format version
    "01"  # metric code (msssim)
    "10"  # quality steps (16)
    "38"  # quality sub-level (56: quality 4.5)
    "02"  # number of streams
    "01"  # number of metadata chunks
    "03000000"  # width
    "02000000"  # height
    "0102030405060708"  # model hash
    "02000000"  # stream 0 length
    "03000000"  # stream 1 length
    "49434350"  # chunk 0 tag (ICCP)
    "04000000"  # chunk 0 length
    "69636331"  # chunk 0 data
    "c2b7eb2e"  # header CRC32
    "7a7a"  # stream 0
    "797979"  # stream 1
    "c0f4eddd"  # file CRC32
)
SMALL_HEADER = Header(
    width=3, height=2, level=56, quality_steps=16, metric="msssim", model_hash=HASH,
    stream_lengths=(2, 3), chunks=(("ICCP", b"icc1"),)
)
SMALL_STREAMS = [b"zz", b"yyy"]
_FIELDS = dict(width=3, height=2, level=7, quality_steps=16, metric="mse", model_hash=HASH,
               stream_lengths=(1, 1))


def small_file() -> bytes:
    return pack(SMALL_HEADER, SMALL_STREAMS)


def forge(
    *,
    magic: bytes = b"QLIC",
    version: int = 2,
    metric_code: int = 0,
    steps: int = 16,
    level: int = 10,
    n_streams: int | None = None,
    width: int = 16,
    height: int = 8,
    model_hash: bytes = HASH,
    streams: tuple[bytes, ...] = (b"ab", b"cde"),
    lengths: tuple[int, ...] | None = None,
    chunks: tuple[tuple[bytes, bytes], ...] = (),
    chunk_lengths: tuple[int, ...] | None = None,
    header_crc: int | None = None,
    file_crc: int | None = None,
    trailing: bytes = b"",
) -> bytes:
    """Build raw container bytes with any field chosen freely and CRCs valid by default.

    Valid CRCs make sure each rule is reached on its own, not caught by a checksum first.
    ``chunks`` are (raw tag, data) pairs; ``chunk_lengths`` overrides their declared lengths.
    """
    lengths = tuple(len(s) for s in streams) if lengths is None else lengths
    n_streams = len(lengths) if n_streams is None else n_streams
    if chunk_lengths is None:
        chunk_lengths = tuple(len(data) for _, data in chunks)
    head = struct.pack(
        "<4sBBBBBBII8s", magic, version, metric_code, steps, level, n_streams, len(chunks),
        width, height, model_hash
    )
    head += struct.pack(f"<{len(lengths)}I", *lengths)
    for (tag, _), length in zip(chunks, chunk_lengths):
        head += struct.pack("<4sI", tag, length)
    head += b"".join(data for _, data in chunks)
    head += struct.pack("<I", zlib.crc32(head) if header_crc is None else header_crc)
    body = head + b"".join(streams)
    body += struct.pack("<I", zlib.crc32(body) if file_crc is None else file_crc)
    return body + trailing


# --- round trip -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header_kwargs, streams",
    [
        (dict(width=1, height=1, level=0, quality_steps=1, metric="mse"), [b"", b""]),
        (dict(width=768, height=512, level=254, quality_steps=255, metric="msssim"),
         [b"\x00" * 17, b"\xff" * 300]),
        (dict(width=65535, height=4096, level=128, quality_steps=16, metric="mse",
              chunks=(("XMP ", b"<x/>"), ("ICCP", b"\x00" * 300))), [b"only one"]),
        (dict(width=5, height=7, level=3, quality_steps=2, metric="mse",
              chunks=(("ICCP", b"i"), ("EXIF", b"MM\x00*"), ("XMP ", b""))),
         [bytes([i]) * i for i in range(8)]),
        (dict(width=2**32 - 1, height=1, level=9, quality_steps=1, metric="msssim"),
         [b"x", b""]),
    ],
)
def test_round_trip(header_kwargs: dict, streams: list[bytes]) -> None:
    header = Header(
        model_hash=b"\xaa" * 8, stream_lengths=tuple(len(s) for s in streams), **header_kwargs
    )
    data = pack(header, streams)
    assert len(data) == header.header_size + sum(map(len, streams)) + 4
    got_header, got_streams = parse(data, max_pixels=2**32)
    assert got_header == header
    assert got_streams == streams
    assert all(type(s) is bytes for s in got_streams)
    assert read_header(data, max_pixels=2**32) == header
    # read_header needs only the header bytes, as ``qlic info`` reads them, and the first
    # MAX_TABLES_SIZE bytes say how many those are.
    assert header_size(data[:MAX_TABLES_SIZE]) == header.header_size
    assert read_header(data[: header.header_size], max_pixels=2**32) == header


def test_parse_accepts_bytearray_and_memoryview() -> None:
    data = small_file()
    assert parse(bytearray(data)) == (SMALL_HEADER, SMALL_STREAMS)
    assert parse(memoryview(data)) == (SMALL_HEADER, SMALL_STREAMS)


def test_golden_bytes() -> None:
    assert small_file().hex() == GOLDEN_HEX
    assert parse(bytes.fromhex(GOLDEN_HEX)) == (SMALL_HEADER, SMALL_STREAMS)


def test_quality_is_the_sub_level_on_the_grid() -> None:
    assert SMALL_HEADER.quality == 4.5
    assert isinstance(Header(**{**_FIELDS, "level": 64}).quality, int)
    assert Header(**{**_FIELDS, "level": 64}).quality == 5
    assert Header(**{**_FIELDS, "level": 1}).quality == 1.0625
    assert Header(**{**_FIELDS, "level": 4, "quality_steps": 1}).quality == 5


def test_constants() -> None:
    assert PREFIX_SIZE == 26
    assert MAX_TABLES_SIZE == 82
    assert MAX_CHUNK_SIZE == 16 * 2**20
    assert container.CHUNK_TAGS == ("ICCP", "EXIF", "XMP ")
    assert DEFAULT_MAX_PIXELS == 2**28
    assert container.MAGIC == b"QLIC"


def test_forge_matches_pack() -> None:
    # The forging helper must agree with pack, or the rule tests below test nothing.
    assert forge(metric_code=1, level=56, width=3, height=2, streams=(b"zz", b"yyy"),
                 chunks=((b"ICCP", b"icc1"),)) == small_file()


# --- pack input validation --------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("width", 0),
        ("width", 2**32),
        ("width", True),
        ("height", -1),
        ("height", 2.0),
        ("level", -1),
        ("level", 255),
        ("level", 1.0),
        ("quality_steps", 0),
        ("quality_steps", 256),
        ("chunks", (("ICCP", b"a"), ("ICCP", b"b"))),
        ("chunks", (("ICC ", b"a"),)),
        ("chunks", (("EXIF", "text"),)),
        ("chunks", [("EXIF", b"a")]),
        ("metric", "psnr"),
        ("model_hash", b"1234567"),
        ("model_hash", b"123456789"),
        ("model_hash", "12345678"),
        ("stream_lengths", ()),
        ("stream_lengths", (0,) * 9),
        ("stream_lengths", [1, 2]),
        ("stream_lengths", (-1,)),
        ("stream_lengths", (2**32,)),
    ],
)
def test_header_rejects_bad_field(field: str, value: object) -> None:
    kwargs = dict(_FIELDS)
    kwargs[field] = value
    with pytest.raises(ValueError, match=field if field != "chunks" else "chunk"):
        Header(**kwargs)


def test_header_rejects_oversized_chunk() -> None:
    with pytest.raises(ValueError, match="over the limit"):
        Header(**{**_FIELDS, "chunks": (("XMP ", b"\0" * (MAX_CHUNK_SIZE + 1)),)})


def test_pack_rejects_wrong_stream_count() -> None:
    with pytest.raises(ValueError, match="declares 2 streams, got 1"):
        pack(SMALL_HEADER, [b"zz"])


def test_pack_rejects_wrong_stream_length() -> None:
    with pytest.raises(ValueError, match="stream 1 is 2 bytes but the header declares 3"):
        pack(SMALL_HEADER, [b"zz", b"yy"])


def test_pack_rejects_non_bytes_stream() -> None:
    with pytest.raises(ValueError, match="must be bytes"):
        pack(SMALL_HEADER, [b"zz", "yyy"])


def test_pack_rejects_non_header() -> None:
    with pytest.raises(ValueError, match="must be a Header"):
        pack({"width": 1}, [b""])  # type: ignore[arg-type]


def test_max_pixels_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        parse(small_file(), max_pixels=0)


# --- each parse rule rejects its file ---------------------------------------------------


def test_forged_valid_file_parses() -> None:
    header, streams = parse(forge())
    assert (header.width, header.height, header.level, header.metric) == (16, 8, 10, "mse")
    assert header.quality == 1 + 10 / 16 and header.chunks == ()
    assert streams == [b"ab", b"cde"]


def test_rejects_short_file() -> None:
    message = r"^truncated: expected at least 26 bytes, got 10$"
    with pytest.raises(CorruptStreamError, match=message):
        parse(forge()[:10])


def test_rejects_empty_file() -> None:
    with pytest.raises(CorruptStreamError, match="not a qlic file"):
        parse(b"")


def test_rejects_bad_magic() -> None:
    with pytest.raises(CorruptStreamError, match="not a qlic file"):
        parse(forge(magic=b"\x89PNG"))


def test_rejects_short_non_qlic_file_as_not_qlic() -> None:
    with pytest.raises(CorruptStreamError, match="not a qlic file"):
        parse(b"hello\n")


def test_rejects_newer_version() -> None:
    with pytest.raises(UnsupportedError, match=r"newer qlic \(format 4\); upgrade qlic "
                                               r"\(this one reads formats 2 and 3\)"):
        parse(forge(version=max(FORMAT_VERSIONS) + 1))


def test_rejects_format_1_naming_the_release_that_reads_it() -> None:
    # A real format-1 file: magic, version 1, msssim, quality 7, 2 streams, 3x2, hash, ...
    old = bytes.fromhex("514c4943010107020300000002000000010203040506070802000000030000"
                        "00d0a1c27a7a7a797979c0f4eddd")
    message = ("^this file is qlic format 1; this qlic reads formats 2 and 3: decode it "
               "with qlic 0.1$")
    for data in (old, old[:5]):
        with pytest.raises(UnsupportedError, match=message):
            parse(data)
        with pytest.raises(UnsupportedError, match=message):
            read_header(data)
        with pytest.raises(UnsupportedError, match=message):
            header_size(data)


def test_rejects_version_zero() -> None:
    with pytest.raises(CorruptStreamError, match="format version 0"):
        parse(forge(version=0))


def test_rejects_unknown_metric() -> None:
    with pytest.raises(CorruptStreamError, match="unknown metric code 2"):
        parse(forge(metric_code=2))


def test_rejects_quality_steps_zero() -> None:
    with pytest.raises(CorruptStreamError, match="quality steps 0"):
        parse(forge(steps=0))


def test_rejects_sub_level_255() -> None:
    with pytest.raises(CorruptStreamError, match="sub-level 255"):
        parse(forge(level=255))


# --- metadata chunks ------------------------------------------------------------------------


def test_chunks_round_trip_in_any_order() -> None:
    data = forge(chunks=((b"XMP ", b"<x/>"), (b"EXIF", b"II*\x00"), (b"ICCP", b"p")))
    header, streams = parse(data)
    assert header.chunks == (("XMP ", b"<x/>"), ("EXIF", b"II*\x00"), ("ICCP", b"p"))
    assert streams == [b"ab", b"cde"]
    assert read_header(data[: header.header_size]) == header


@pytest.mark.parametrize("tag", [b"ICC ", b"iccp", b"\x00\x00\x00\x00", b"XMP\x00", b"\xff\xfe\n\r"])
def test_rejects_unknown_chunk_tag(tag: bytes) -> None:
    with pytest.raises(CorruptStreamError, match="^unknown metadata chunk") as info:
        parse(forge(chunks=((tag, b"x"),)))
    assert "\n" not in str(info.value)


def test_rejects_duplicate_chunk() -> None:
    with pytest.raises(CorruptStreamError, match="'EXIF' appears twice"):
        parse(forge(chunks=((b"EXIF", b"a"), (b"EXIF", b"b"))))


def test_rejects_too_many_chunks() -> None:
    data = bytearray(forge())
    data[9] = 4
    with pytest.raises(CorruptStreamError, match="number of metadata chunks 4"):
        parse(bytes(data))


def test_oversized_chunk_refused_without_allocating() -> None:
    data = forge(chunks=((b"XMP ", b"x"),), chunk_lengths=(MAX_CHUNK_SIZE + 1,))
    tracemalloc.start()
    try:
        with pytest.raises(CorruptStreamError, match="claims 16777217 bytes, over the limit"):
            parse(data)
        with pytest.raises(CorruptStreamError, match="over the limit"):
            header_size(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000


def test_chunk_longer_than_the_file_is_truncation() -> None:
    data = forge(chunks=((b"ICCP", b"abc"),), chunk_lengths=(MAX_CHUNK_SIZE,))
    assert header_size(data) > len(data)
    with pytest.raises(CorruptStreamError, match="^truncated: expected at least"):
        parse(data)


def test_chunk_bytes_are_covered_by_the_header_crc() -> None:
    data = bytearray(forge(chunks=((b"EXIF", b"MM\x00*"),)))
    data[PREFIX_SIZE + 8 + 8] ^= 1  # the first byte of the chunk's data
    with pytest.raises(CorruptStreamError, match="header checksum"):
        read_header(bytes(data))


def test_rejects_zero_streams() -> None:
    with pytest.raises(CorruptStreamError, match="number of streams 0"):
        parse(forge(streams=(), n_streams=0))


def test_rejects_too_many_streams() -> None:
    with pytest.raises(CorruptStreamError, match="number of streams 9"):
        parse(forge(streams=(b"",) * 9))


@pytest.mark.parametrize("width, height", [(0, 8), (8, 0), (0, 0)])
def test_rejects_zero_size(width: int, height: int) -> None:
    with pytest.raises(CorruptStreamError, match=f"invalid image size {width}x{height}"):
        parse(forge(width=width, height=height))


def test_rejects_too_many_pixels() -> None:
    with pytest.raises(ResourceLimitError) as info:
        parse(forge(width=100, height=100), max_pixels=9999)
    message = str(info.value)
    assert "100x100" in message and "9999" in message and "--max-pixels" in message
    assert "\n" not in message
    # Exactly at the limit is fine.
    parse(forge(width=100, height=100), max_pixels=10000)


def test_huge_claim_refused_without_allocating() -> None:
    data = forge(width=100_000, height=100_000, lengths=(2**32 - 1, 2**32 - 1))
    assert len(data) < 50
    tracemalloc.start()
    try:
        with pytest.raises(ResourceLimitError, match="100000x100000"):
            parse(data)
        with pytest.raises(ResourceLimitError):
            read_header(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000


def test_huge_stream_lengths_refused_without_allocating() -> None:
    data = forge(lengths=(2**32 - 1, 2**32 - 1))
    tracemalloc.start()
    try:
        with pytest.raises(CorruptStreamError, match="truncated: expected 8589934632 bytes"):
            parse(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000


def test_rejects_truncated_header() -> None:
    data = forge(streams=(b"",) * 8)
    with pytest.raises(CorruptStreamError, match="truncated: expected at least 58 bytes, got 30"):
        parse(data[:30])


def test_rejects_header_crc() -> None:
    data = forge()
    good = zlib.crc32(data[: PREFIX_SIZE + 8])
    with pytest.raises(CorruptStreamError, match="header checksum"):
        parse(forge(header_crc=good ^ 1))
    with pytest.raises(CorruptStreamError, match="header checksum"):
        read_header(forge(header_crc=good ^ 1))


def test_rejects_truncated_streams() -> None:
    data = forge()
    with pytest.raises(CorruptStreamError, match=f"^truncated: expected {len(data)} bytes, got"):
        parse(data[:-1])


def test_rejects_trailing_bytes() -> None:
    data = forge(trailing=b"\x00")
    with pytest.raises(CorruptStreamError, match="1 unexpected trailing bytes"):
        parse(data)


def test_rejects_file_crc() -> None:
    good = zlib.crc32(forge()[:-4])
    with pytest.raises(CorruptStreamError, match="file checksum"):
        parse(forge(file_crc=good ^ 0x80000000))


def test_read_header_ignores_streams_and_file_crc() -> None:
    # qlic info must work on a file whose body is damaged but whose header is intact.
    header = read_header(forge(file_crc=0, trailing=b"junk"))
    assert header.stream_lengths == (2, 3)


def test_rule_order_pixels_before_header_crc() -> None:
    # The pixel cap is checked before the header CRC, so it wins even on a bad checksum.
    with pytest.raises(ResourceLimitError):
        parse(forge(width=100_000, height=100_000, header_crc=0))


# --- fuzzing ----------------------------------------------------------------------------


def test_truncation_at_every_offset() -> None:
    data = small_file()
    for cut in range(len(data)):
        with pytest.raises(CorruptStreamError):
            parse(data[:cut])


def test_read_header_truncation_at_every_header_offset() -> None:
    data = small_file()
    for cut in range(SMALL_HEADER.header_size):
        with pytest.raises(CorruptStreamError):
            read_header(data[:cut])


def test_every_single_bit_flip_is_detected() -> None:
    data = small_file()
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(QlicError):
            parse(bytes(flipped))


def test_error_messages_are_one_line() -> None:
    data = small_file()
    for cut in range(len(data)):
        try:
            parse(data[:cut])
        except QlicError as exc:
            assert "\n" not in str(exc) and str(exc)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_qlic_errors(data: bytes) -> None:
    try:
        parse(data)
    except QlicError:
        pass
    try:
        read_header(data)
    except QlicError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_after_valid_magic_raise_only_qlic_errors(tail: bytes) -> None:
    # Random bytes rarely start with the magic; this reaches the deeper rules.
    data = b"QLIC\x02" + tail
    try:
        parse(data)
    except QlicError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(small_file())), st.binary(min_size=1, max_size=8))
def test_overwritten_bytes_raise_only_qlic_errors(offset: int, patch: bytes) -> None:
    data = bytearray(small_file())
    data[offset : offset + len(patch)] = patch
    try:
        parse(bytes(data))
    except QlicError:
        pass


def test_module_imports_nothing_from_qlic_but_errors() -> None:
    source = Path(container.__file__).read_text()
    imports = [line for line in source.splitlines() if "qlic_codec" in line and "import" in line]
    assert len(imports) == 1 and imports[0].startswith("from qlic_codec.errors import ")
