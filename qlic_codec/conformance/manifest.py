"""Where the conformance streams live, and their manifest, checked before anything is decoded.

The folder is ``$QLIC_CONFORMANCE_DIR`` when set, otherwise ``conformance/`` beside
``models/`` in the source tree this package runs from (as ``zoo`` finds the models).
``manifest.json`` lists every stream: its file, the bundled model that made it (name and model
id), the image size and quality, the stream's SHA-256, and the MD5 and SHA-256 of the decoded
pixels (uint8 RGB, row-major, ``rgb.tobytes()``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .. import fsio, zoo
from ..errors import QlicError

FOLDER_ENV = "QLIC_CONFORMANCE_DIR"
MANIFEST = "manifest.json"
FORMAT = "qlic-conformance"
VERSION = 1
# A plain file name in the folder: a manifest must not point anywhere else.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.qlic")
_HEX = {"model_id": 16, "stream_sha256": 64, "pixels_md5": 32, "pixels_sha256": 64}


class ConformanceError(QlicError):
    """The conformance folder cannot be checked: its manifest, a stream or a model is missing
    or is not the one the manifest names."""


@dataclass(frozen=True)
class Entry:
    """One conformance stream as the manifest lists it."""

    file: str
    model: str
    model_id: str
    width: int
    height: int
    quality: int | float
    stream_sha256: str
    pixels_md5: str
    pixels_sha256: str


def folder() -> Path:
    """The conformance folder: ``$QLIC_CONFORMANCE_DIR``, else the source tree's."""
    if os.environ.get(FOLDER_ENV):
        return Path(os.environ[FOLDER_ENV])
    return Path(__file__).resolve().parent.parent.parent / "conformance"


def read(where: Path) -> list[Entry]:
    """The entries of ``where/manifest.json``, every field checked.

    Raises:
        ConformanceError: the manifest is missing, is not JSON, or breaks the schema.
    """
    path = where / MANIFEST
    hint = f"set {FOLDER_ENV} to a folder holding the conformance streams"
    if not path.is_file():
        raise ConformanceError(f"no conformance manifest {path}; {hint}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConformanceError(f"{path} is damaged: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConformanceError(f"{path} is not a qlic conformance manifest")
    if doc.get("version") != VERSION:
        raise ConformanceError(f"{path} is version {doc.get('version')!r}; this qlic reads "
                               f"version {VERSION}")
    streams = doc.get("streams")
    if not isinstance(streams, list) or not streams:
        raise ConformanceError(f"{path} lists no streams")
    entries = [_entry(item, f"{path} stream {i}") for i, item in enumerate(streams)]
    names = [e.file for e in entries]
    if len(set(names)) != len(names):
        raise ConformanceError(f"{path} lists a stream twice")
    return entries


def _entry(item: object, where: str) -> Entry:
    if not isinstance(item, dict):
        raise ConformanceError(f"{where} is not an object")
    fields = {}
    for name in Entry.__dataclass_fields__:
        if name not in item:
            raise ConformanceError(f"{where} has no '{name}'")
        fields[name] = item[name]
    if not isinstance(fields["file"], str) or not _FILE_NAME.fullmatch(fields["file"]):
        raise ConformanceError(f"{where}: file {fields['file']!r} is not a .qlic file name")
    if fields["model"] not in zoo.BUNDLED:
        raise ConformanceError(f"{where}: model {fields['model']!r} is not a bundled model "
                               f"({', '.join(zoo.BUNDLED)})")
    for name, length in _HEX.items():
        value = fields[name]
        if not isinstance(value, str) or not re.fullmatch(f"[0-9a-f]{{{length}}}", value):
            raise ConformanceError(f"{where}: {name} {value!r} is not {length} hex digits")
    for name in ("width", "height"):
        if type(fields[name]) is not int or fields[name] < 1:
            raise ConformanceError(f"{where}: {name} {fields[name]!r} is not a positive integer")
    if type(fields["quality"]) not in (int, float):
        raise ConformanceError(f"{where}: quality {fields['quality']!r} is not a number")
    return Entry(**fields)


def write(where: Path, entries: list[dict]) -> None:
    """Write ``where/manifest.json`` (the generator's side of ``read``)."""
    doc = {"format": FORMAT, "version": VERSION,
           "pixels": "uint8 RGB, row-major (height, width, 3)", "streams": entries}
    fsio.atomic_write(str(where / MANIFEST), (json.dumps(doc, indent=1) + "\n").encode())
