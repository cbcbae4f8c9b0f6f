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
    MAX_HEADER_SIZE,
    PREFIX_SIZE,
    Header,
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

# The exact bytes of SMALL_HEADER packed with SMALL_STREAMS. If this test fails, the layout
# changed: bump FORMAT_VERSION and update the hex on purpose, never just the hex.
GOLDEN_HEX = (
    "514c4943"  # magic
    "01"  # format version
    "01"  # metric code (msssim)
    "07"  # quality
    "02"  # number of streams
    "03000000"  # width
    "02000000"  # height
    "0102030405060708"  # model hash
    "02000000"  # stream 0 length
    "03000000"  # stream 1 length
    "d0a1c27a"  # header CRC32
    "7a7a"  # stream 0
    "797979"  # stream 1
    "c0f4eddd"  # file CRC32
)
SMALL_HEADER = Header(
    width=3, height=2, quality=7, metric="msssim", model_hash=HASH, stream_lengths=(2, 3)
)
SMALL_STREAMS = [b"zz", b"yyy"]


def small_file() -> bytes:
    return pack(SMALL_HEADER, SMALL_STREAMS)


def forge(
    *,
    magic: bytes = b"QLIC",
    version: int = FORMAT_VERSION,
    metric_code: int = 0,
    quality: int = 10,
    n_streams: int | None = None,
    width: int = 16,
    height: int = 8,
    model_hash: bytes = HASH,
    streams: tuple[bytes, ...] = (b"ab", b"cde"),
    lengths: tuple[int, ...] | None = None,
    header_crc: int | None = None,
    file_crc: int | None = None,
    trailing: bytes = b"",
) -> bytes:
    """Build raw container bytes with any field chosen freely and CRCs valid by default.

    Valid CRCs make sure each rule is reached on its own, not caught by a checksum first.
    """
    lengths = tuple(len(s) for s in streams) if lengths is None else lengths
    n_streams = len(lengths) if n_streams is None else n_streams
    head = struct.pack(
        "<4sBBBBII8s", magic, version, metric_code, quality, n_streams, width, height, model_hash
    )
    head += struct.pack(f"<{len(lengths)}I", *lengths)
    head += struct.pack("<I", zlib.crc32(head) if header_crc is None else header_crc)
    body = head + b"".join(streams)
    body += struct.pack("<I", zlib.crc32(body) if file_crc is None else file_crc)
    return body + trailing


# --- round trip -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header_kwargs, streams",
    [
        (dict(width=1, height=1, quality=1, metric="mse"), [b"", b""]),
        (dict(width=768, height=512, quality=255, metric="msssim"), [b"\x00" * 17, b"\xff" * 300]),
        (dict(width=65535, height=4096, quality=128, metric="mse"), [b"only one"]),
        (dict(width=5, height=7, quality=3, metric="mse"), [bytes([i]) * i for i in range(8)]),
        (dict(width=2**32 - 1, height=1, quality=9, metric="msssim"), [b"x", b""]),
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
    # read_header needs only the header bytes, as ``qlic info`` reads them.
    assert read_header(data[: header.header_size], max_pixels=2**32) == header
    assert read_header(data[:MAX_HEADER_SIZE], max_pixels=2**32) == header


def test_parse_accepts_bytearray_and_memoryview() -> None:
    data = small_file()
    assert parse(bytearray(data)) == (SMALL_HEADER, SMALL_STREAMS)
    assert parse(memoryview(data)) == (SMALL_HEADER, SMALL_STREAMS)


def test_golden_bytes() -> None:
    assert small_file().hex() == GOLDEN_HEX
    assert parse(bytes.fromhex(GOLDEN_HEX)) == (SMALL_HEADER, SMALL_STREAMS)


def test_constants() -> None:
    assert PREFIX_SIZE == 24
    assert MAX_HEADER_SIZE == 60
    assert DEFAULT_MAX_PIXELS == 2**28
    assert container.MAGIC == b"QLIC"


def test_forge_matches_pack() -> None:
    # The forging helper must agree with pack, or the rule tests below test nothing.
    assert forge(metric_code=1, quality=7, width=3, height=2, streams=(b"zz", b"yyy")) == (
        small_file()
    )


# --- pack input validation --------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("width", 0),
        ("width", 2**32),
        ("width", True),
        ("height", -1),
        ("height", 2.0),
        ("quality", 0),
        ("quality", 256),
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
    kwargs = dict(
        width=3, height=2, quality=7, metric="mse", model_hash=HASH, stream_lengths=(1, 1)
    )
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        Header(**kwargs)


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
    assert (header.width, header.height, header.quality, header.metric) == (16, 8, 10, "mse")
    assert streams == [b"ab", b"cde"]


def test_rejects_short_file() -> None:
    message = r"^truncated: expected at least 24 bytes, got 10$"
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
    with pytest.raises(UnsupportedError, match=r"newer qlic \(format 2\); upgrade qlic"):
        parse(forge(version=FORMAT_VERSION + 1))


def test_rejects_version_zero() -> None:
    with pytest.raises(CorruptStreamError, match="format version 0"):
        parse(forge(version=0))


def test_rejects_unknown_metric() -> None:
    with pytest.raises(CorruptStreamError, match="unknown metric code 2"):
        parse(forge(metric_code=2))


def test_rejects_quality_zero() -> None:
    with pytest.raises(CorruptStreamError, match="quality 0"):
        parse(forge(quality=0))


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
        with pytest.raises(CorruptStreamError, match="truncated: expected 8589934630 bytes"):
            parse(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000


def test_rejects_truncated_header() -> None:
    data = forge(streams=(b"",) * 8)
    with pytest.raises(CorruptStreamError, match="truncated: expected at least 60 bytes, got 30"):
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
    data = b"QLIC\x01" + tail
    try:
        parse(data)
    except QlicError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=44), st.binary(min_size=1, max_size=8))
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
