"""Image metadata that a ``.qlic`` file carries: the ICC profile, EXIF and XMP.

qlic does not interpret them (it does not colour-manage or read EXIF fields); it keeps them
from the input image to the decoded one, as bytes, in the container's metadata chunks. The
Pillow edge (``imageio``) reads and writes them; this module only maps them to and from the
chunks and checks their size. It imports nothing from qlic but ``container`` and ``errors``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .container import MAX_CHUNK_SIZE
from .errors import InvalidArgumentError

__all__ = ["EXIF_PREFIX", "Metadata"]

# JPEG's APP1 segment and Pillow's ``info["exif"]`` put this before the TIFF structure; PNG's
# eXIf chunk, WebP's EXIF chunk and the .qlic EXIF chunk do not.
EXIF_PREFIX = b"Exif\x00\x00"

# Field name -> container chunk tag, in the order the chunks are written.
_TAGS = {"icc": "ICCP", "exif": "EXIF", "xmp": "XMP "}


@dataclass(frozen=True)
class Metadata:
    """What an image says about itself beyond its pixels; each field is bytes or None.

    Args:
        icc: An ICC colour profile, as embedded in PNG, JPEG or WebP files.
        exif: EXIF as a TIFF structure (``b"II*\\0..."`` or ``b"MM\\0*..."``); a leading
            ``b"Exif\\0\\0"`` (JPEG's and Pillow's form) is removed.
        xmp: An XMP packet (UTF-8 XML).

    Raises:
        InvalidArgumentError: A field that is not bytes, or larger than a ``.qlic`` file
            carries (``container.MAX_CHUNK_SIZE``).

    Example:
        >>> Metadata(exif=b"Exif\\x00\\x00MM\\x00*").exif
        b'MM\\x00*'
        >>> Metadata.from_chunks(Metadata(icc=b"profile").to_chunks())
        Metadata(icc=b'profile', exif=None, xmp=None)
    """

    icc: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if isinstance(value, (bytearray, memoryview)):
                value = bytes(value)
            if not isinstance(value, bytes):
                raise InvalidArgumentError(
                    f"metadata {field.name} must be bytes or None, got {type(value).__name__}")
            if field.name == "exif" and value.startswith(EXIF_PREFIX):
                value = value[len(EXIF_PREFIX):]
            if len(value) > MAX_CHUNK_SIZE:
                raise InvalidArgumentError(
                    f"the {field.name.upper()} metadata is {len(value)} bytes, more than the "
                    f"{MAX_CHUNK_SIZE} a .qlic file carries; strip it (--strip)")
            # Empty metadata says nothing: it is left out rather than stored as a chunk.
            object.__setattr__(self, field.name, value or None)

    def __bool__(self) -> bool:
        return any(getattr(self, field.name) is not None for field in fields(self))

    def to_chunks(self) -> tuple[tuple[str, bytes], ...]:
        """The container chunks, in the order qlic writes them (``container.CHUNK_TAGS``)."""
        return tuple((tag, getattr(self, name)) for name, tag in _TAGS.items()
                     if getattr(self, name) is not None)

    @classmethod
    def from_chunks(cls, chunks: tuple[tuple[str, bytes], ...]) -> "Metadata":
        """The metadata of a parsed header's chunks (``container.Header.chunks``)."""
        by_tag = dict(chunks)
        return cls(**{name: by_tag.get(tag) for name, tag in _TAGS.items()})

    def sizes(self) -> dict[str, int]:
        """Bytes of each field present, e.g. ``{"icc": 3144, "exif": 220}``."""
        return {name: len(getattr(self, name)) for name in _TAGS
                if getattr(self, name) is not None}
