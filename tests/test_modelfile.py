"""The .qlicm container: exact round trip, and every structural rule rejects its file.

Every rule after the hash check can only be reached by a file whose trailing SHA-256 is
right, so the malformed files below are re-sealed (``reseal``) after they are edited.
"""

import functools
import hashlib
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY_MODEL
from qlic_codec import modelfile
from qlic_codec.errors import ModelFileError, QlicError

PREFIX = struct.Struct("<8sII")

MANIFEST = {"format": "qlic-model", "N": 4, "nested": {"list": [1, 2.5, None, True], "s": "é"}}


def reseal(data: bytes) -> bytes:
    """Replace the trailing SHA-256 so that the hash check passes and deeper checks run."""
    return data[:-32] + hashlib.sha256(data[:-32]).digest()


def build(header, payload: bytes = b"\0" * 32, version: int = modelfile.FORMAT_VERSION,
          json_len=None) -> bytes:
    """A sealed file from a header (dict, or raw JSON bytes) and a raw payload."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    head = PREFIX.pack(modelfile.MAGIC, version, len(raw) if json_len is None else json_len)
    head += raw
    head += b"\0" * (-len(head) % 8)
    return reseal(head + payload + b"\0" * 32)


def split(data: bytes):
    """(header dict, payload bytes) of a packed file."""
    _, _, json_len = PREFIX.unpack_from(data)
    header = json.loads(data[PREFIX.size : PREFIX.size + json_len])
    start = PREFIX.size + json_len
    start += -start % 8
    return header, data[start:-32]


def small_model() -> bytes:
    arrays = {"a": np.arange(6, dtype=np.int8).reshape(2, 3),
              "b": np.array([-(2**31), 2**31 - 1, 7], np.int32),
              "c": np.arange(5, dtype=np.int16)}
    return modelfile.pack(MANIFEST, arrays)


DELETE = object()


def with_entries(data: bytes, **changes) -> bytes:
    """Re-sealed ``data`` whose array entries are updated (``DELETE`` removes an entry)."""
    header, payload = split(data)
    for name, entry in changes.items():
        if entry is DELETE:
            del header["arrays"][name]
        else:
            header["arrays"][name] = entry
    return build(header, payload)


def rejects(data: bytes, match=None) -> str:
    with pytest.raises(ModelFileError, match=match) as info:
        modelfile.unpack(data, source="m.qlicm")
    message = str(info.value)
    assert "\n" not in message and message.startswith("m.qlicm: ")
    return message


# -------------------------------------------------------------------------------------------
# Round trip


ROUND_TRIP_ARRAYS = {
    "i8": np.array([-128, -1, 0, 1, 127], np.int8),
    "u8": np.arange(256, dtype=np.uint8).reshape(16, 16),
    "i16": np.array([[-(2**15), 2**15 - 1, 3]], np.int16),
    "i32": np.array([-(2**31), 2**31 - 1, 0], np.int32).reshape(3, 1, 1, 1),
    "i64": np.array([-(2**63), 2**63 - 1], np.int64),
    "scalar": np.array(-5, np.int32),
    "empty": np.zeros((0,), np.int64),
    "empty3": np.zeros((3, 0, 2), np.uint8),
    "odd": np.arange(7, dtype=np.int8),
    "big_endian": np.arange(5, dtype=">i4"),
    "strided": np.arange(24, dtype=np.int16).reshape(4, 6)[:, ::2],
}


def test_round_trip_every_dtype_and_shape(tmp_path):
    data = modelfile.pack(MANIFEST, ROUND_TRIP_ARRAYS)
    assert len(data) % 8 == 0
    manifest, arrays, mid = modelfile.unpack(data)
    assert manifest == MANIFEST
    assert set(arrays) == set(ROUND_TRIP_ARRAYS)
    for name, want in ROUND_TRIP_ARRAYS.items():
        got = arrays[name]
        assert got.dtype == want.dtype.newbyteorder("=") and got.dtype.isnative, name
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert got.flags.writeable and got.flags.c_contiguous, name
    assert modelfile.model_id(MANIFEST, ROUND_TRIP_ARRAYS) == mid and len(mid) == 8
    # The id is not stored: the trailing SHA-256 seals the file, the id names the model.
    assert mid not in data

    header, _ = split(data)
    assert all(e["offset"] % 8 == 0 for e in header["arrays"].values())

    path = tmp_path / "m.qlicm"
    assert modelfile.write(path, MANIFEST, ROUND_TRIP_ARRAYS) == mid
    assert path.read_bytes() == data
    manifest2, arrays2, mid2 = modelfile.read(path)
    assert manifest2 == MANIFEST and mid2 == mid
    assert all(np.array_equal(arrays2[k], arrays[k]) for k in arrays)


def test_pack_is_deterministic_and_order_independent():
    reordered = dict(reversed(list(ROUND_TRIP_ARRAYS.items())))
    manifest = dict(reversed(list(MANIFEST.items())))
    assert modelfile.pack(MANIFEST, ROUND_TRIP_ARRAYS) == modelfile.pack(manifest, reordered)


def test_empty_model_round_trips():
    manifest, arrays, _ = modelfile.unpack(modelfile.pack({}, {}))
    assert manifest == {} and arrays == {}


def _id(manifest, arrays):
    return modelfile.unpack(modelfile.pack(manifest, arrays))[2]


def test_model_id_changes_with_what_decoding_reads():
    w = np.zeros(3, np.int8)
    base = _id({"x": 1}, {"w": w})
    for manifest, arrays in (({"x": 1}, {"w": np.array([0, 0, 1], np.int8)}),
                             ({"x": 1}, {"w": w.astype(np.uint8)}),
                             ({"x": 1}, {"w": w.reshape(3, 1)}),
                             ({"x": 1}, {"v": w}),
                             ({"x": 1}, {"w": w, "u": np.zeros(0, np.int8)}),
                             ({"x": 2}, {"w": w}),
                             ({"x": 1, "y": None}, {"w": w})):
        assert _id(manifest, arrays) != base, (manifest, arrays)


def test_model_id_ignores_the_card():
    arrays = {"w": np.arange(4, dtype=np.int16)}
    plain = _id({"x": 1}, arrays)
    assert _id({"x": 1, "card": {"source": "a"}}, arrays) == plain
    assert _id({"x": 1, "card": {"source": "b", "notes": [1, 2.5]}}, arrays) == plain
    # Whereas the file's own seal covers the card.
    assert modelfile.pack({"x": 1, "card": {"source": "a"}}, arrays) != \
        modelfile.pack({"x": 1, "card": {"source": "b"}}, arrays)


def test_model_id_is_pinned():
    """The id's definition is part of the format (docs/FORMAT.md section 1.4): pinned."""
    manifest = {"N": 4, "card": {"x": "y"}, "f": 0.11, "s": "\u00e9", "t": [True, None]}
    arrays = {"b": np.array([1, -2], np.int16), "a": np.array(7, np.int64)}
    assert _id(manifest, arrays).hex() == "45af12499772b017"


def test_nan_and_infinity_are_not_json():
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        rejects(build(b'{"manifest": {"x": ' + constant + b'}, "arrays": {}}'),
                "malformed header")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.uint32, np.bool_])
def test_pack_refuses_other_dtypes(dtype):
    with pytest.raises(ValueError, match="unsupported dtype"):
        modelfile.pack({}, {"x": np.zeros(2, dtype)})


def test_committed_tiny_model_reads(tiny_model):
    manifest, arrays, mid = modelfile.read(tiny_model)
    assert manifest["format"] == "qlic-model" and len(mid) == 8
    assert arrays["g_a.0.weight"].dtype == np.int8


# -------------------------------------------------------------------------------------------
# Each rule


def test_bad_magic():
    data = bytearray(small_model())
    data[0:8] = b"QLICMDL1"
    rejects(reseal(bytes(data)), "bad magic")
    rejects(reseal(b"\x89PNG\r\n\x1a\n" + bytes(data[8:])), "bad magic")


@pytest.mark.parametrize("version", [0, 1, 4, 2**32 - 1])
def test_wrong_version(version):
    data = bytearray(small_model())
    struct.pack_into("<I", data, 8, version)
    message = rejects(reseal(bytes(data)), f"model format {version} is not supported")
    assert "re-export" in message and "upgrade" in message


def test_files_are_written_in_format_3_and_format_2_is_read():
    data = small_model()
    assert struct.unpack_from("<I", data, 8)[0] == modelfile.FORMAT_VERSION == 3
    older = bytearray(data)
    struct.pack_into("<I", older, 8, 2)
    assert modelfile.unpack(reseal(bytes(older)))[2] == modelfile.unpack(data)[2]


def test_format_2_cannot_hold_the_format_3_key():
    """Format 2 is format 3 without ``cc.ctx_max``: a format-2 file holding it is refused,
    the same file in format 3 reaches the checks after the header."""
    header = {"manifest": {"cc": {"ctx_max": 2047}}, "arrays": {}}
    rejects(build(header, version=2), "format 2 cannot hold 'cc.ctx_max'")
    assert modelfile.unpack(build(header, version=3))[0]["cc"]["ctx_max"] == 2047


@pytest.mark.parametrize("where", [-33, -40, 16, 20])
def test_hash_mismatch(where):
    data = bytearray(small_model())
    data[where] ^= 0x01
    rejects(bytes(data), "hash mismatch")


def test_hash_itself_corrupt():
    data = bytearray(small_model())
    data[-1] ^= 0x80
    rejects(bytes(data), "hash mismatch")


@pytest.mark.parametrize("size", [0, 1, 8, 16, 47])
def test_too_short(size):
    rejects(small_model()[:size], "too short")


def test_truncated_at_several_offsets():
    data = small_model()
    for size in (48, 49, 64, len(data) // 2, len(data) - 33, len(data) - 8, len(data) - 1):
        rejects(data[:size])
    # A truncated body with a fresh hash gets past the hash check to the structure.
    body = data[:-32]
    for size in (16, 17, 24, 40, len(body) // 2, len(body) - 8):
        rejects(reseal(body[:size] + b"\0" * 32))


def test_truncated_and_resealed_reaches_structure_checks():
    data = small_model()
    _, _, json_len = PREFIX.unpack_from(data)
    body = data[:-32]
    # Cut inside the JSON header: its length now runs past the end.
    rejects(reseal(body[: PREFIX.size + json_len // 2] + b"\0" * 32), "header length")
    # Cut inside the payload: the last array no longer fits.
    rejects(reseal(body[:-8] + b"\0" * 32), "outside the payload")


@pytest.mark.parametrize("json_len", ["past_end", "max_plus_one", "u32_max"])
def test_json_length_out_of_range(json_len):
    data = bytearray(small_model())
    value = {"past_end": len(data) - 32 - PREFIX.size + 1, "max_plus_one": modelfile.MAX_JSON + 1,
             "u32_max": 2**32 - 1}[json_len]
    struct.pack_into("<I", data, 12, value)
    rejects(reseal(bytes(data)), "header length is out of range")


@pytest.mark.parametrize("raw", [
    b"{not json",
    b"",
    b"[1, 2]",
    b'"manifest"',
    b"null",
    b'{"manifest": {}}',
    b'{"arrays": {}}',
    b'{"manifest": [], "arrays": {}}',
    b'{"manifest": {}, "arrays": []}',
    b'{"manifest": {}, "arrays": {}}\xff\xfe',
    b"\xff\xfe\x00{}",
    b"[" * 50_000 + b"]" * 50_000,
], ids=lambda raw: repr(raw[:12]))
def test_malformed_json(raw):
    rejects(build(raw), "malformed header")


def test_json_length_shorter_than_header_is_malformed():
    data = small_model()
    header, payload = split(data)
    raw = json.dumps(header).encode()
    rejects(build(raw, payload, json_len=len(raw) - 1), "malformed header")


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint16", "bool", "<i4", "object", "",
                                   7, None])
def test_unsupported_dtype(dtype):
    data = with_entries(small_model(), c={"dtype": dtype, "shape": [5], "offset": 40})
    rejects(data, "array 'c' has an unsupported dtype")


@pytest.mark.parametrize("entry", [
    {"shape": [5], "offset": 0},
    {"dtype": "int8", "offset": 0},
    {"dtype": "int8", "shape": [5]},
    {"dtype": "int8", "shape": 5, "offset": 0},
    {"dtype": "int8", "shape": ["x"], "offset": 0},
    {"dtype": "int8", "shape": [None], "offset": 0},
    {"dtype": "int8", "shape": [1], "offset": "zero"},
    {"dtype": "int8", "shape": [1e999], "offset": 0},
    {"dtype": "int8", "shape": [1], "offset": 1e999},
    {"dtype": "int8", "shape": [1], "offset": float("nan")},
    {"dtype": ["int8"], "shape": [1], "offset": 0},
    "int8",
    [1, 2],
    None,
], ids=str)
def test_malformed_entry(entry):
    header, payload = split(small_model())
    header["arrays"]["c"] = entry
    raw = json.dumps(header).encode()
    if b"NaN" in raw or b"Infinity" in raw:
        rejects(build(raw, payload), "malformed header")  # not JSON (RFC 8259)
        if b"NaN" in raw:
            return
        # A number too large for a double is JSON, and Python reads it as an infinity.
        raw = raw.replace(b"Infinity", b"1e999")
    rejects(build(raw, payload), "'c'")


@pytest.mark.parametrize("shape", [[-1], [2, -3], [-1, -1], [1, 1, 1, 1, 1]])
def test_invalid_shape(shape):
    rejects(with_entries(small_model(), c={"dtype": "int8", "shape": shape, "offset": 0}),
            "array 'c' has an invalid shape")


def test_offset_outside_payload():
    data = small_model()
    _, payload = split(data)
    size = len(payload)
    for entry in ({"dtype": "int8", "shape": [1], "offset": size},
                  {"dtype": "int8", "shape": [9], "offset": size - 8},
                  {"dtype": "int64", "shape": [size // 8 + 1], "offset": 0},
                  {"dtype": "int8", "shape": [1], "offset": -8},
                  {"dtype": "int8", "shape": [2**40, 2**40], "offset": 0},
                  {"dtype": "int8", "shape": [1], "offset": 2**70}):
        rejects(with_entries(data, c=entry), "array 'c' lies outside the payload")
    # An array in the last aligned slot of the payload is fine.
    _, arrays, _ = modelfile.unpack(
        with_entries(data, c={"dtype": "uint8", "shape": [1], "offset": size - 8}))
    assert arrays["c"].shape == (1,)


@pytest.mark.parametrize("offset", [1, 4, 7, 12])
def test_misaligned_offset(offset):
    data = with_entries(small_model(), a=DELETE, b=DELETE,
                        c={"dtype": "int8", "shape": [1], "offset": offset})
    rejects(data, "array 'c'")


def test_overlapping_arrays():
    data = small_model()
    header, _ = split(data)
    a = header["arrays"]["a"]
    rejects(with_entries(data, c={"dtype": "int8", "shape": [6], "offset": a["offset"]}),
            "overlap")
    # One array lying across the start of the next one.
    first, second = sorted(header["arrays"].values(), key=lambda e: e["offset"])[:2]
    span = second["offset"] - first["offset"] + 1
    rejects(with_entries(data, c=DELETE, a={"dtype": "int8", "shape": [span],
                                         "offset": first["offset"]}), "overlap")
    # Adjacent arrays that merely touch are fine.
    touching = {"dtype": "int8", "shape": [second["offset"] - first["offset"]],
                "offset": first["offset"]}
    modelfile.unpack(with_entries(data, c=touching, a=DELETE))


def test_read_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="cannot read model") as info:
        modelfile.read(tmp_path / "nope.qlicm")
    assert "\n" not in str(info.value)
    with pytest.raises(ModelFileError):
        modelfile.read(tmp_path)  # a directory
    assert issubclass(ModelFileError, QlicError)


def test_read_corrupt_file_names_it(tmp_path):
    path = tmp_path / "bad.qlicm"
    path.write_bytes(b"QLICMDL\0" + b"\0" * 100)
    with pytest.raises(ModelFileError, match="bad.qlicm"):
        modelfile.read(path)


# -------------------------------------------------------------------------------------------
# Fuzzing: any input gives a model or a ModelFileError, nothing else


def _unpack_or_model_error(data: bytes) -> None:
    try:
        manifest, arrays, mid = modelfile.unpack(data)
    except ModelFileError:
        return
    assert isinstance(manifest, dict) and isinstance(arrays, dict) and len(mid) == 8


@functools.lru_cache(maxsize=1)
def _tiny_bytes() -> bytes:
    return TINY_MODEL.read_bytes()


FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.binary(max_size=600), st.booleans())
def test_arbitrary_bytes(data, sealed_prefix):
    if sealed_prefix:  # a plausible prefix and a right hash, so the header parser runs
        data = build(data, b"")
    _unpack_or_model_error(data)
    with pytest.raises(ModelFileError):
        modelfile.unpack(data[:47])


MUTATION = st.tuples(st.sampled_from(["set", "insert", "delete", "truncate"]),
                     st.floats(0, 1, exclude_max=True), st.integers(0, 255))


def _mutate(data: bytes, mutations, header_bias: bool) -> bytes:
    out = bytearray(data)
    _, _, json_len = PREFIX.unpack_from(data)
    for kind, where, value in mutations:
        # Most interesting bytes are in the prefix and the JSON header.
        span = PREFIX.size + json_len if header_bias else len(out)
        pos = int(where * max(1, min(span, len(out))))
        if kind == "set" and pos < len(out):
            out[pos] = value
        elif kind == "insert":
            out[pos:pos] = bytes([value])
        elif kind == "delete" and pos < len(out):
            del out[pos]
        elif kind == "truncate":
            del out[pos:]
    return bytes(out)


@FUZZ
@given(st.lists(MUTATION, min_size=1, max_size=4), st.booleans(), st.booleans(),
       st.booleans())
def test_mutated_model_files(mutations, tiny, header_bias, seal):
    data = _mutate(_tiny_bytes() if tiny else small_model(), mutations, header_bias)
    _unpack_or_model_error(reseal(data) if seal and len(data) >= 32 else data)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6)
    | st.sampled_from(["int8", "uint8", "int16", "int32", "int64", "float32"]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8)
ENTRY = st.fixed_dictionaries(
    {}, optional={"dtype": st.sampled_from(["int8", "uint8", "int16", "int32", "int64"])
                  | JSON_VALUES,
                  "shape": st.lists(st.integers(-2, 9), max_size=5) | JSON_VALUES,
                  "offset": st.integers(-16, 80).map(lambda v: v - v % 4) | JSON_VALUES})


@FUZZ
@given(st.dictionaries(st.text(max_size=3), ENTRY | JSON_VALUES, max_size=4),
       st.integers(0, 12))
def test_fuzzed_headers(entries, payload_words):
    _unpack_or_model_error(build({"manifest": {}, "arrays": entries}, b"\0" * 8 * payload_words))


@pytest.mark.parametrize("name", ["head.extra.mult", "g_a.0.mult", "cc.0.scale.mult"])
def test_an_array_that_nothing_reads_is_refused(name):
    """An array the manifest does not call for (a head this qlic does not know, an epilogue
    for the last g_a layer, which hands out accumulators, a slice head in a plain model)
    means the file was made for another reader: refused, as an unknown manifest key is."""
    import numpy as np

    from conftest import TINY_MODEL
    from qlic_codec import api, modelfile
    from qlic_codec.errors import ModelFileError
    manifest, arrays, _ = modelfile.read(TINY_MODEL)
    api.load_model_bytes(modelfile.pack(manifest, arrays))  # as it is: accepted
    layer = manifest["transforms"]["g_a"][-1]["name"]
    arrays = {**arrays, name.replace("g_a.0", layer): np.zeros(3, np.int32)}
    with pytest.raises(ModelFileError, match="array this qlic does not use"):
        api.load_model_bytes(modelfile.pack(manifest, arrays))
