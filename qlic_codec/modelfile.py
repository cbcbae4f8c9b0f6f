"""The ``.qlicm`` model file: a JSON manifest and named integer arrays, sealed by SHA-256.

Layout (little-endian)::

    offset  size  field
    0       8     magic b"QLICMDL\\0"
    8       4     format version (u32), currently 3 (2 is read too)
    12      4     length J of the JSON header (u32)
    16      J     JSON: {"manifest": {...}, "arrays": {name: {"dtype", "shape", "offset"}}}
    16+J    pad   zeros up to a multiple of 8
    ...     P     array payload, each array C-ordered at its offset (8-aligned)
    end-32  32    SHA-256 of every byte before it

The trailing SHA-256 only guards the file's integrity. The model id written into every
``.qlic`` stream covers what decoding depends on and nothing else (``model_id``): the manifest
without its ``card`` and the arrays, so that editing the card keeps old streams decodable.
Nothing derived is stored, so nothing stored can disagree.

Reading validates the structure (magic, version, hash, dtypes, shapes, offsets inside the
payload, no overlap) before any array is built; the network validates the content, including
every manifest key (``engine/schema.py``). No pickle. ``docs/FORMAT.md`` section 1 is the
normative description of this layout.

Versions: format 1 changed meaning twice without a new number (the fixed-point means of
``mean_bits``, then the mean-removed input of the hyper-analysis, ``head.ha_in.offset``) and
let a reader ignore keys it did not know, so an older qlic could decode a newer model to
wrong pixels. Format 2 refuses unknown keys at every level and requires that offset.
Format 3 adds one key, ``cc.ctx_max`` (context codes of the channel-conditional model wider
than 8 bits); a format-2 file is a format-3 file without it, so this reader reads both, and
refuses a format-2 file that holds it and every other version. Files are written in format 3.
"""

import functools
import hashlib
import json
import struct
from pathlib import Path

import numpy as np

from .engine.graph import NAME_PATTERN
from .errors import ModelFileError

MAGIC = b"QLICMDL\0"
FORMAT_VERSION = 3
# Format 2 is format 3 without `cc.ctx_max`.
READABLE_VERSIONS = (2, 3)
MAX_JSON = 1 << 24
MAX_FILE = 1 << 30
_DTYPES = {"int8", "uint8", "int16", "int32", "int64"}
_PREFIX = struct.Struct("<8sII")


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def pack(manifest: dict, arrays: dict) -> bytes:
    """Serialise a model; arrays must be integer numpy arrays of the allowed dtypes."""
    entries, chunks, offset = {}, [], 0
    for name in sorted(arrays):
        a = np.asarray(arrays[name])  # not ascontiguousarray: it makes 0-d arrays 1-d
        if a.dtype.name not in _DTYPES:
            raise ValueError(f"array '{name}' has unsupported dtype {a.dtype}")
        data = a.astype(a.dtype.newbyteorder("<")).tobytes()
        entries[name] = {"dtype": a.dtype.name, "shape": list(a.shape), "offset": offset}
        chunks.append(data + b"\0" * (-len(data) % 8))
        offset += len(chunks[-1])
    header = json.dumps({"manifest": manifest, "arrays": entries}, sort_keys=True).encode()
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header
    head += b"\0" * (-len(head) % 8)
    body = head + b"".join(chunks)
    return body + hashlib.sha256(body).digest()


def canonical_json(value) -> bytes:
    """The one JSON text of a value that the model id hashes: keys sorted by code point, no
    whitespace, non-ASCII escaped as ``\\uXXXX``, numbers as Python writes them (integers in
    decimal, floats in their shortest round-trip form); NaN and infinities refused."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def _item(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data


def model_id(manifest: dict, arrays: dict) -> bytes:
    """The 8-byte id of a model: what a stream names, covering exactly what decoding reads.

    ``SHA-256(item(canonical_json(manifest without "card")) || u64(number of arrays) ||
    for each array in increasing name order: item(name) || item(dtype name) || u64(ndim) ||
    u64(each dimension) || item(its little-endian C-order bytes))``, first 8 bytes, where
    ``item(b) = u64(len(b)) || b`` and ``u64`` is little-endian (docs/FORMAT.md section 1.4).
    """
    h = hashlib.sha256()
    try:
        h.update(_item(canonical_json({k: v for k, v in manifest.items() if k != "card"})))
    except (TypeError, ValueError) as exc:  # NaN from a hostile file, or not JSON at all
        raise ModelFileError(f"model manifest cannot be hashed: {exc}") from None
    h.update(struct.pack("<Q", len(arrays)))
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        h.update(_item(name.encode("utf-8")) + _item(a.dtype.name.encode("ascii")))
        h.update(struct.pack(f"<{a.ndim + 1}Q", a.ndim, *a.shape))
        h.update(_item(a.astype(a.dtype.newbyteorder("<")).tobytes()))
    return h.digest()[:8]


def format_version(data: bytes) -> int:
    """The format version a model file declares (``unpack`` checks it)."""
    return _PREFIX.unpack_from(data)[1]


def unpack(data: bytes, source: str = "model") -> tuple[dict, dict, bytes]:
    """Validate and parse a packed model.

    Returns:
        (manifest, arrays, model id). Raises ``ModelFileError`` with a one-line reason.
    """
    if len(data) < _PREFIX.size + 32:
        raise ModelFileError(f"{source}: too short to be a qlic model file")
    magic, version, json_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ModelFileError(f"{source}: not a qlic model file (bad magic)")
    if version not in READABLE_VERSIONS:
        raise ModelFileError(f"{source}: model format {version} is not supported by this qlic "
                             f"(format {FORMAT_VERSION}); re-export the model or upgrade qlic")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise ModelFileError(f"{source}: content hash mismatch (the file is corrupt)")
    if json_len > MAX_JSON or _PREFIX.size + json_len > len(data) - 32:
        raise ModelFileError(f"{source}: header length is out of range")
    try:
        # NaN and the infinities are not JSON (RFC 8259), though Python's parser takes them.
        header = json.loads(data[_PREFIX.size : _PREFIX.size + json_len],
                            parse_constant=_refuse_constant)
        manifest, entries = header["manifest"], header["arrays"]
        if not isinstance(manifest, dict) or not isinstance(entries, dict):
            raise TypeError("manifest and arrays must be objects")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelFileError(f"{source}: malformed header: {exc}") from None
    cc = manifest.get("cc")
    if version < 3 and isinstance(cc, dict) and "ctx_max" in cc:
        raise ModelFileError(f"{source}: model format {version} cannot hold 'cc.ctx_max' "
                             "(a format-3 key); the file is corrupt")
    start = _PREFIX.size + json_len
    start += -start % 8
    payload = memoryview(data)[start:-32]
    arrays, spans = {}, []
    for name, e in entries.items():
        if not NAME_PATTERN.fullmatch(name):
            raise ModelFileError(f"{source}: invalid array name {name[:40]!r}")
        try:
            dtype = np.dtype(e["dtype"]).newbyteorder("<") if e["dtype"] in _DTYPES else None
            shape = tuple(int(s) for s in e["shape"])
            offset = int(e["offset"])
        except (KeyError, TypeError, ValueError, OverflowError):
            raise ModelFileError(f"{source}: malformed entry for array '{name}'") from None
        if dtype is None:
            raise ModelFileError(f"{source}: array '{name}' has an unsupported dtype")
        if any(s < 0 for s in shape) or len(shape) > 4:
            raise ModelFileError(f"{source}: array '{name}' has an invalid shape")
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        # A dimension beyond the file size cannot fit either, even in an empty array (a zero
        # beside 2**62 would make numpy raise ValueError in reshape).
        if offset < 0 or offset % 8 or offset + nbytes > len(payload) or any(
                s > MAX_FILE for s in shape):
            raise ModelFileError(f"{source}: array '{name}' lies outside the payload")
        spans.append((offset, offset + nbytes, name))
        arrays[name] = np.frombuffer(payload[offset : offset + nbytes], dtype=dtype).reshape(
            shape).astype(dtype.newbyteorder("="))
    spans.sort()
    for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
        if begin < end:
            raise ModelFileError(f"{source}: arrays '{a}' and '{b}' overlap")
    return manifest, arrays, model_id(manifest, arrays)


def read(path) -> tuple[dict, dict, bytes]:
    """Read and validate a model file (see ``unpack``)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE:
            raise ModelFileError(f"{path}: larger than {MAX_FILE} bytes, not a qlic model")
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read model '{path}': {exc.strerror or exc}") from None
    return unpack(data, source=str(path))


def write(path, manifest: dict, arrays: dict) -> bytes:
    """Write a model file atomically (a crash never leaves half a model); returns its id."""
    from .fsio import atomic_write
    data = pack(manifest, arrays)
    atomic_write(str(path), data)
    return unpack(data, str(path))[2]


def read_id(path) -> bytes | None:
    """The model id of a model file (None if it cannot be read or is not a valid file).

    The id is not stored (it would be one more thing that could disagree), so this reads and
    hashes the whole file; the result is cached while the file's size and time are the same.
    """
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return _read_id_cached(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _read_id_cached(path: str, mtime_ns: int, size: int) -> bytes | None:
    try:
        return read(path)[2]
    except ModelFileError:
        return None
