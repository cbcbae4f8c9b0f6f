"""Shared fuzzing harness for the decoder and the model loader.

Both targets take hostile bytes and must end in a ``QlicError`` (or a result), in bounded
time and memory. Random mutations nearly always die at a checksum, so every mutator here can
*re-seal* its output: recompute the ``.qlic`` header CRC32 and file CRC32, or the model
file's SHA-256, so that the mutated input reaches the entropy decoder, the network and the
model validator.

Used by ``fuzz_decode.py`` / ``fuzz_model.py`` (long campaigns, atheris or a plain loop) and
``test_fuzz_short.py`` (a short deterministic run in the test suite).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import struct
import sys
import time
import traceback
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from conftest import TINY_MODEL, synthetic_photo  # noqa: E402

from qlic_codec import api, container  # noqa: E402
from qlic_codec.metadata import Metadata  # noqa: E402
from qlic_codec.errors import QlicError  # noqa: E402

# The decoder under fuzzing refuses images above this many pixels, so that a mutated width
# or height costs at most a few hundred milliseconds (the real limit is tested separately).
FUZZ_MAX_PIXELS = 2**16

# (height, width, quality) of the seed streams: one block, several blocks, odd sizes.
SEED_IMAGES = ((1, 1, 1), (16, 24, 4.5), (64, 64, 8), (72, 80, 1), (33, 130, 6), (70, 64, 3))

_INTERESTING_U32 = (0, 1, 2, 3, 4, 7, 8, 63, 64, 65, 127, 128, 255, 256, 1023, 1024, 4095,
                    4096, 16000, 65535, 65536, 100000, 2**24, 2**28, 2**31 - 1, 2**31,
                    2**32 - 4, 2**32 - 1)
_INTERESTING_INT = (0, 1, -1, 2, -2, 7, 8, 16, 24, 30, 31, 32, 62, 63, 64, 127, 128, -127,
                    -128, 255, 256, 1024, 4096, 32767, 32768, -32768, 65535, 2**24, 2**31 - 1,
                    2**31, -(2**31), 2**32, 2**53, 2**54, 2**60, 2**63 - 1, 2**63, -(2**63),
                    2**64, 10**30)


# ------------------------------------------------------------------------------------------
# Seeds

def model_bytes(path: Path | str = TINY_MODEL) -> bytes:
    return Path(path).read_bytes()


# Metadata carried by some seeds, so that mutations reach the chunk rules.
SEED_METADATA = (None, Metadata(icc=b"\0\0\x02\x0cprofile", exif=b"MM\0*\0\0\0\x08\0\0"),
                 None, Metadata(xmp=b"<x:xmpmeta/>"), None, None)


def make_seed_streams(model_path: str = str(TINY_MODEL)) -> list[bytes]:
    """Real ``.qlic`` files: synthetic photos encoded with the tiny model, half of them as
    qlic writes them (container format 3), half moved into format 2, whose fixed layout
    ``reseal_qlic`` knows; both formats are read."""
    seeds = []
    for i, ((h, w, q), meta) in enumerate(zip(SEED_IMAGES, SEED_METADATA)):
        data = api.encode(synthetic_photo(h, w, seed=i), q, model_path, metadata=meta)
        if i % 2 == 0:
            header, streams = container.parse(data)
            data = container.pack(container.Header(**{**header.__dict__, "version": 2}),
                                  streams)
        seeds.append(data)
    return seeds


# ------------------------------------------------------------------------------------------
# Re-sealing

def reseal_qlic(data: bytes) -> bytes:
    """Recompute the header CRC32 and the file CRC32 wherever the layout allows it (format 3
    has the file CRC32 only)."""
    b = bytearray(data)
    if len(b) >= 12 and b[4] == 3:
        struct.pack_into("<I", b, len(b) - 4, zlib.crc32(bytes(b[:-4])))
        return bytes(b)
    layout = _qlic_layout(bytes(b))
    if layout is not None:
        hs = layout[1]
        struct.pack_into("<I", b, hs - 4, zlib.crc32(bytes(b[: hs - 4])))
        if len(b) >= hs + 4:
            struct.pack_into("<I", b, len(b) - 4, zlib.crc32(bytes(b[:-4])))
    return bytes(b)


def reseal_model(data: bytes) -> bytes:
    """Recompute the model file's trailing SHA-256."""
    if len(data) < 32:
        return data
    body = data[:-32]
    return body + hashlib.sha256(body).digest()


# ------------------------------------------------------------------------------------------
# Generic byte mutations

def mutate_bytes(data: bytes, rng: random.Random, lo: int = 0, hi: int | None = None) -> bytes:
    """One generic mutation inside ``data[lo:hi]`` (bit flips, bytes, truncation, splices)."""
    b = bytearray(data)
    hi = len(b) if hi is None else min(hi, len(b))
    if hi <= lo:
        return bytes(b) + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    pos = rng.randrange(lo, hi)
    kind = rng.randrange(10)
    if kind == 0:
        for _ in range(rng.randint(1, 4)):
            p = rng.randrange(lo, hi)
            b[p] ^= 1 << rng.randrange(8)
    elif kind == 1:
        b[pos] = rng.choice((0, 1, 0x7F, 0x80, 0xFE, 0xFF, rng.randrange(256)))
    elif kind == 2:
        n = rng.randint(1, 16)
        b[pos:pos + n] = bytes(rng.randrange(256) for _ in range(n))
    elif kind == 3:
        b = b[: rng.randrange(len(b) + 1)]
    elif kind == 4:
        del b[pos:pos + rng.randint(1, 16)]
    elif kind == 5:
        b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == 6:
        n = rng.randint(1, 64)
        b[pos:pos + n] = bytes([rng.choice((0, 0xFF))]) * n
    elif kind == 7 and pos + 4 <= len(b):
        struct.pack_into("<I", b, pos, rng.choice(_INTERESTING_U32))
    elif kind == 8:
        src = rng.randrange(len(b))
        chunk = b[src:src + rng.randint(1, 32)]
        b[pos:pos] = chunk
    else:
        b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    return bytes(b)


# ------------------------------------------------------------------------------------------
# .qlic mutations

# Offsets in the fixed prefix of a format-2 file (container.py's table).
_STREAMS_AT, _CHUNKS_AT = 8, 9


def _qlic_layout(b: bytes):
    """(n_streams, header_size, stream lengths) if the header layout is intact, else None;
    the header size counts the metadata chunks and the header CRC."""
    if len(b) < container.PREFIX_SIZE or b[4] != 2:
        return None  # format 3 has no fixed layout to edit (reseal_qlic: its file CRC only)
    n, c = b[_STREAMS_AT], b[_CHUNKS_AT]
    tables = container.PREFIX_SIZE + 4 * n + 8 * c
    if not 1 <= n <= container.MAX_STREAMS or c > container.MAX_CHUNKS or len(b) < tables:
        return None
    chunk_bytes = sum(struct.unpack_from("<I", b, container.PREFIX_SIZE + 4 * n + 8 * i + 4)[0]
                      for i in range(c))
    hs = tables + chunk_bytes + 4
    if len(b) < hs:
        return None
    return n, hs, list(struct.unpack_from(f"<{n}I", b, container.PREFIX_SIZE))


def mutate_qlic(data: bytes, rng: random.Random) -> bytes:
    """One structure-aware mutation of a ``.qlic`` file (not re-sealed)."""
    try:
        return _mutate_qlic(data, rng)
    except (IndexError, ValueError, OverflowError, struct.error):
        return mutate_bytes(data, rng)


def _mutate_qlic(data: bytes, rng: random.Random) -> bytes:
    layout = _qlic_layout(data)
    if layout is None or rng.random() < 0.15:
        return mutate_bytes(data, rng)
    n, hs, lengths = layout
    b = bytearray(data)
    kind = rng.randrange(13)
    if kind == 0:  # width / height
        field = rng.choice((10, 14))
        v = rng.choice(_INTERESTING_U32 + (rng.randrange(1, 600),))
        struct.pack_into("<I", b, field, v)
    elif kind == 1:  # version, metric, quality steps and sub-level, stream and chunk counts
        field = rng.choice((4, 5, 6, 7, 8, 9))
        b[field] = rng.choice((0, 1, 2, 3, 7, 8, 9, 16, 112, 113, 255, rng.randrange(256)))
    elif kind == 2:  # model hash
        b[18 + rng.randrange(8)] ^= 1 << rng.randrange(8)
    elif kind == 12:  # a metadata chunk: known or not, repeated, lying about its length
        c = b[_CHUNKS_AT]
        tag = rng.choice((b"ICCP", b"EXIF", b"XMP ", b"ICC ", b"\0\0\0\0", b"exif"))
        body = bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 7, 64))))
        length = rng.choice((len(body), len(body), len(body) + 1, 2**24, 2**24 + 1, 2**32 - 1))
        table_end = container.PREFIX_SIZE + 4 * n + 8 * c
        b[hs - 4:hs - 4] = body
        b[table_end:table_end] = struct.pack("<4sI", tag, length)
        b[_CHUNKS_AT] = c + 1
    elif kind == 3:  # a stream length field, without moving bytes
        i = rng.randrange(n)
        v = rng.choice(_INTERESTING_U32 + (lengths[i] + rng.randint(-8, 8),)) % 2**32
        struct.pack_into("<I", b, container.PREFIX_SIZE + 4 * i, v)
    elif kind == 4 and n >= 2:  # move the z/y boundary (lengths stay consistent)
        i = rng.randrange(n - 1)
        d = rng.choice((-4, 4, -1, 1, -lengths[i], lengths[i + 1], rng.randint(-64, 64)))
        d = max(-lengths[i], min(d, lengths[i + 1]))
        struct.pack_into("<2I", b, container.PREFIX_SIZE + 4 * i, (lengths[i] + d) % 2**32,
                         (lengths[i + 1] - d) % 2**32)
    elif kind in (5, 6, 7, 8):  # stream bytes, in place: flips, zeros, 0xff, random runs
        end = len(b) - 4
        if end > hs:
            for _ in range(rng.randint(1, 3)):
                p = rng.randrange(hs, end)
                if kind == 5:
                    b[p] ^= 1 << rng.randrange(8)
                    continue
                m = min(rng.choice((1, 2, 4, 16, 256)), end - p)
                fill = {6: b"\0", 7: b"\xff"}.get(kind)
                b[p:p + m] = fill * m if fill else bytes(rng.randrange(256) for _ in range(m))
    elif kind in (9, 10):  # resize one stream and keep its length field right
        i = rng.randrange(n)
        start = hs + sum(lengths[:i])
        if start + lengths[i] <= len(b) - 4:
            stream = b[start:start + lengths[i]]
            if kind == 9:
                new = stream[: rng.choice((0, 4, len(stream) // 2, max(len(stream) - 4, 0),
                                           rng.randrange(len(stream) + 1)))]
            else:
                extra = rng.choice((4, 8, 64, 4096, rng.randint(1, 40)))
                filler = rng.choice((b"\0", b"\xff", None))
                new = stream + (filler * extra if filler else
                                bytes(rng.randrange(256) for _ in range(extra)))
            b[start:start + lengths[i]] = new
            struct.pack_into("<I", b, container.PREFIX_SIZE + 4 * i, len(new) % 2**32)
    else:  # add or drop a stream (its length field goes after the last stream length)
        at = container.PREFIX_SIZE + 4 * n
        if rng.random() < 0.5 and n < 255:
            b[_STREAMS_AT] = n + 1
            b[at:at] = struct.pack("<I", rng.choice((0, 4, 8)))
        elif n > 1:
            b[_STREAMS_AT] = n - 1
            del b[at - 4:at]
    return bytes(b)


def fuzz_qlic_input(seed: bytes, rng: random.Random, reseal_p: float = 0.8) -> bytes:
    """A fuzzed ``.qlic`` input: 1-3 stacked mutations, re-sealed with probability reseal_p."""
    data = seed
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        data = mutate_qlic(data, rng)
    return reseal_qlic(data) if rng.random() < reseal_p else data


# ------------------------------------------------------------------------------------------
# .qlicm mutations

_MODEL_PREFIX = struct.Struct("<8sII")


def _split_model(data: bytes):
    """(json dict, payload bytes) of an intact model file, else None."""
    if len(data) < _MODEL_PREFIX.size + 32:
        return None
    _, _, jlen = _MODEL_PREFIX.unpack_from(data)
    if _MODEL_PREFIX.size + jlen > len(data) - 32:
        return None
    try:
        header = json.loads(data[_MODEL_PREFIX.size:_MODEL_PREFIX.size + jlen])
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    start = _MODEL_PREFIX.size + jlen
    start += -start % 8
    if not isinstance(header, dict):
        return None
    return header, data[start:-32]


def _join_model(prefix: bytes, header_json: bytes, payload: bytes) -> bytes:
    magic, version, _ = _MODEL_PREFIX.unpack_from(prefix)
    head = _MODEL_PREFIX.pack(magic, version, len(header_json)) + header_json
    head += b"\0" * (-len(head) % 8)
    body = head + payload
    return body + b"\0" * 32  # the hash slot; reseal_model fills it


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9)
    if kind < 3:
        return rng.choice(_INTERESTING_INT)
    if kind == 3:
        return rng.choice((0.5, -0.0, 1e308, float("inf"), float("nan")))
    if kind == 4:
        return rng.choice(("", "conv", "deconv", "gdn", "igdn", "int8", "float32", "x" * 50))
    if kind == 5:
        return rng.choice((None, True, False))
    if kind == 6 and depth < 3:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7 and depth < 3:
        return {rng.choice(("lo", "hi", "leaky", "name")): _random_value(rng, depth + 1)}
    return [[[[[]]]]] if rng.random() < 0.5 else {}


def _paths(obj, prefix=()):
    """Every (path, value) leaf and container of a JSON value."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _set_path(obj, path, value, delete=False):
    for k in path[:-1]:
        obj = obj[k]
    if delete:
        if isinstance(obj, dict):
            del obj[path[-1]]
        else:
            obj.pop(path[-1])
    else:
        obj[path[-1]] = value


def _mutate_json(header: dict, rng: random.Random) -> dict:
    header = json.loads(json.dumps(header))
    paths = [p for p, _ in _paths(header) if p]
    # Bias towards the manifest and the array table, where the validator lives.
    path = rng.choice(paths)
    kind = rng.randrange(10)
    value = dict(_paths(header))[path]
    if kind < 4 and isinstance(value, (int, float)) and not isinstance(value, bool):
        new = rng.choice((value + rng.choice((-1, 1)), value * 2, -value, value // 2,
                          rng.choice(_INTERESTING_INT)))
        _set_path(header, path, new)
    elif kind < 6:
        _set_path(header, path, _random_value(rng))
    elif kind == 6:
        _set_path(header, path, None, delete=True)
    elif kind == 7 and isinstance(value, list) and value:  # reorder / duplicate an element
        value.insert(rng.randrange(len(value) + 1), value[rng.randrange(len(value))])
        _set_path(header, path, value)
    elif kind == 8:  # an array entry: dtype, shape or offset
        arrays = header.get("arrays")
        if isinstance(arrays, dict) and arrays:
            name = rng.choice(sorted(arrays))
            e = arrays[name]
            if isinstance(e, dict):
                field = rng.choice(("dtype", "shape", "offset"))
                if field == "dtype":
                    e[field] = rng.choice(("int8", "uint8", "int16", "int32", "int64", "float64",
                                           "object", "<i4", "S4"))
                elif field == "shape" and isinstance(e.get("shape"), list):
                    s = list(e["shape"])
                    r = rng.randrange(4)
                    if r == 0 and s:
                        s[rng.randrange(len(s))] = rng.choice((0, 1, -1, 2**31, 2**63, 10**30))
                    elif r == 1:
                        s.append(rng.choice((1, 2)))
                        if rng.random() < 0.3:  # an empty array with absurd dimensions
                            s = [0] + [rng.choice((2**31, 2**62, 2**63))] * (len(s) - 1)
                    elif r == 2 and s:
                        s.pop()
                    else:
                        s = s[::-1]
                    e["shape"] = s
                else:
                    e["offset"] = rng.choice((0, 8, -8, 4, 2**40, 2**64,
                                              int(e.get("offset", 0) or 0) + 8))
    else:  # a layer description: swap two layers or transforms
        t = header.get("manifest", {}).get("transforms") if isinstance(
            header.get("manifest"), dict) else None
        if isinstance(t, dict) and t:
            a, c = rng.choice(sorted(t)), rng.choice(sorted(t))
            t[a], t[c] = t[c], t[a]
    return header


def _mutate_payload(header: dict, payload: bytes, rng: random.Random) -> bytes:
    """Overwrite some elements of one array with extremes (overflow bound, tables)."""
    arrays = header.get("arrays")
    if not isinstance(arrays, dict):
        return mutate_bytes(payload, rng)
    names = sorted(n for n, e in arrays.items() if isinstance(e, dict))
    if not names:
        return mutate_bytes(payload, rng)
    name = rng.choice(names)
    e = arrays[name]
    try:
        dtype = np.dtype(e["dtype"]).newbyteorder("<")
        count = int(np.prod(e["shape"]))
        off = int(e["offset"])
    except (KeyError, TypeError, ValueError, OverflowError):
        return mutate_bytes(payload, rng)
    if count <= 0 or off < 0 or off + count * dtype.itemsize > len(payload):
        return mutate_bytes(payload, rng)
    a = np.frombuffer(payload, dtype=dtype, count=count, offset=off).copy()
    info = np.iinfo(dtype)
    kind = rng.randrange(6)
    idx = rng.sample(range(count), min(count, rng.choice((1, 1, 2, 8, count))))
    if kind == 0:
        a[idx] = info.max
    elif kind == 1:
        a[idx] = info.min
    elif kind == 2:
        a[idx] = rng.choice((0, 1, -1 if info.min < 0 else 2))
    elif kind == 3:  # shift every value: keeps sums of tables wrong by a little
        a = (a.astype(np.int64) + rng.choice((-1, 1))).clip(info.min, info.max).astype(dtype)
    elif kind == 4:
        a[idx] = [rng.randint(int(info.min), int(info.max)) for _ in idx]
    else:  # move mass between two counts (keeps a CDF row's sum: exercises the coder)
        if count >= 2:
            i, j = rng.randrange(count), rng.randrange(count)
            d = rng.choice((1, int(a[i]) if a[i] > 0 else 1, 1000))
            a[i] = np.clip(int(a[i]) - d, info.min, info.max)
            a[j] = np.clip(int(a[j]) + d, info.min, info.max)
    return payload[:off] + a.astype(dtype).tobytes() + payload[off + count * dtype.itemsize:]


def mutate_model(data: bytes, rng: random.Random) -> bytes:
    """One structure-aware mutation of a model file (hash slot left stale)."""
    try:
        return _mutate_model(data, rng)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError,
            struct.error, RecursionError):
        # A mutator meeting an input that earlier mutations bent out of shape.
        return mutate_bytes(data, rng)


def _mutate_model(data: bytes, rng: random.Random) -> bytes:
    split = _split_model(data)
    r = rng.random()
    if split is None or r < 0.12:
        return mutate_bytes(data, rng)
    header, payload = split
    if r < 0.55:
        new_header = _mutate_json(header, rng)
        text = json.dumps(new_header, sort_keys=True).encode()
        if rng.random() < 0.05:
            text = mutate_bytes(text, rng)  # broken JSON, bad UTF-8
        return _join_model(data, text, payload)
    if r < 0.9:
        text = data[_MODEL_PREFIX.size:_MODEL_PREFIX.size + _MODEL_PREFIX.unpack_from(data)[2]]
        return _join_model(data, text, _mutate_payload(header, payload, rng))
    # the prefix (magic, version, JSON length) or the file size
    b = bytearray(data)
    if rng.random() < 0.5:
        struct.pack_into("<I", b, rng.choice((8, 12)), rng.choice(_INTERESTING_U32))
        return bytes(b)
    return bytes(b[: rng.randrange(len(b) + 1)])


def fuzz_model_input(seed: bytes, rng: random.Random, reseal_p: float = 0.85) -> bytes:
    data = seed
    for _ in range(rng.choice((1, 1, 1, 2))):
        data = mutate_model(data, rng)
    return reseal_model(data) if rng.random() < reseal_p else data


# ------------------------------------------------------------------------------------------
# Targets: each returns an outcome label; anything but a QlicError escapes

def _label(exc: QlicError) -> str:
    text = str(exc).removeprefix("fuzzed model: ")
    words = re.sub(r"\d+", "N", text).split()
    return f"{type(exc).__name__}: {' '.join(words[:6])}"


def check_decode(data: bytes, model_path: str = str(TINY_MODEL),
                 max_pixels: int = FUZZ_MAX_PIXELS) -> str:
    try:
        rgb = api.decode(data, model=model_path, max_pixels=max_pixels)
    except QlicError as exc:
        return _label(exc)
    h = container.read_header(data, max_pixels)
    assert rgb.shape == (h.height, h.width, 3) and rgb.dtype == np.uint8, rgb.shape
    return "decoded"


class ModelProbe:
    """Loads hostile model bytes; a model that loads is then run (encode and decode)."""

    def __init__(self) -> None:
        self.image = synthetic_photo(16, 20, seed=3)
        self.streams = {}

    def __call__(self, data: bytes) -> str:
        try:
            m = api.load_model_bytes(data, "fuzzed model")
        except QlicError as exc:
            return _label(exc)
        # The loader accepted it: every kernel must now run without a crash. The hash no
        # longer matches the seed streams, so run the decode stages directly.
        level = len(data) % m.network.levels
        try:
            stream = _encode_with(m, self.image, level)
            header, (zs, ys) = container.parse(stream)
            rgb = api._decode_streams(m, header, level, zs, ys)
        except QlicError as exc:
            return "loaded, then " + _label(exc)
        assert rgb.shape == self.image.shape
        return "loaded and ran"


def _encode_with(m, rgb, level) -> bytes:
    from qlic_codec.entropy import coder
    padded = api.pad_to_multiple(rgb, api.BLOCK)
    y_g, z = m.network.analysis(padded, level)
    mean_g, index = m.network.hyper_synthesis(z, level)
    zs = coder.encode_symbols(z.reshape(-1).astype(np.int32), api._channel_indexes(z.shape),
                              m.z_tables)
    y_sym = m.network.symbols(y_g, mean_g)
    ys = coder.encode_symbols(y_sym.reshape(-1), index.reshape(-1), m.y_tables)
    header = container.Header(width=rgb.shape[1], height=rgb.shape[0], level=level,
                              quality_steps=m.quality_steps, metric=m.metric,
                              model_hash=m.model_id,
                              stream_lengths=(len(zs), len(ys)))
    return container.pack(header, [zs, ys])


# ------------------------------------------------------------------------------------------
# A plain campaign loop (used without atheris, and by the short test)

class Campaign:
    """Counts inputs and outcomes; saves any input that raised something else."""

    def __init__(self, findings_dir: Path | None = None, report_every: int = 0) -> None:
        self.findings_dir = findings_dir
        self.report_every = report_every
        self.outcomes: Counter[str] = Counter()
        self.findings: list[tuple[str, str]] = []
        self.count = 0
        self.start = time.monotonic()
        self.slowest = (0.0, "")

    def run(self, target, data: bytes, tag: str) -> None:
        self.count += 1
        t0 = time.monotonic()
        try:
            outcome = target(data)
        except Exception as exc:  # noqa: BLE001 - anything but a QlicError is a finding
            outcome = f"FINDING {type(exc).__name__}"
            self._save(data, tag, exc)
        dt = time.monotonic() - t0
        if dt > self.slowest[0]:
            self.slowest = (dt, outcome)
        self.outcomes[outcome] += 1
        if self.report_every and self.count % self.report_every == 0:
            self.report(final=False)

    def _save(self, data: bytes, tag: str, exc: BaseException) -> None:
        name = f"{tag}-{type(exc).__name__}-{hashlib.sha1(data).hexdigest()[:12]}"
        tb = "".join(traceback.format_exception(exc)[-6:])
        self.findings.append((name, tb))
        if self.findings_dir is not None:
            self.findings_dir.mkdir(parents=True, exist_ok=True)
            (self.findings_dir / name).write_bytes(data)
            (self.findings_dir / (name + ".txt")).write_text(tb)
        print(f"FINDING {name}\n{tb}", flush=True)

    def report(self, final: bool = True) -> None:
        secs = time.monotonic() - self.start
        print(f"{'DONE' if final else 'progress'}: {self.count} inputs in {secs:.0f} s "
              f"({self.count / max(secs, 1e-9):.0f}/s), {len(self.findings)} findings, "
              f"slowest input {self.slowest[0]:.2f} s ({self.slowest[1]})", flush=True)
        if final:
            for outcome, n in self.outcomes.most_common(40):
                print(f"  {n:9d}  {outcome}")
            for name, _ in self.findings:
                print(f"  finding: {name}")
