"""The Pillow edge: image bytes <-> uint8 ``(H, W, 3)`` RGB arrays, and the mode policy.

Policy for inputs (``load_image``):

- Any format and mode Pillow reads. Multi-frame files (GIF, APNG, TIFF) give their first frame.
- Grayscale (``1``, ``L``), palette (``P``), CMYK, YCbCr, LAB and HSV images are converted to
  8-bit RGB with Pillow's own conversions (CMYK without colour management).
- 16-bit grayscale (``I;16*``, and ``I`` as Pillow opens some 16-bit files) is scaled to 8
  bits with rounding, ``(v * 255 + 32767) // 65535``, so that 65535 maps to 255 and an 8-bit
  value stored as ``v * 257`` comes back unchanged; ``I`` values outside 0..65535 are clipped.
  Pillow itself reduces 16-bit RGB(A) PNGs to their high byte when it opens them; that
  truncation (at most 1 below rounding) happens before qlic sees the pixels.
- ``F`` (32-bit float) is read on the 0..255 scale, as Pillow's own ``F -> L`` conversion
  does: rounded and clipped; NaN becomes 0.
- Alpha: a channel whose values are all 255 is dropped silently. Any other alpha channel is
  an error unless ``drop_alpha=True``, which discards it: colours are kept as stored, not
  composited onto a background. Palette and grayscale transparency (``tRNS``) count as alpha.
- The EXIF orientation is applied, so the array is the image as viewers display it.
- Metadata (``load_image_and_metadata``): the ICC profile, EXIF and XMP, as bytes, as Pillow
  reads them (``info["icc_profile"]``, ``info["exif"]``, ``info["xmp"]``: PNG, JPEG, WebP,
  and the ICC profile of TIFF and others). Since the pixels are already turned upright, an
  EXIF orientation other than 1 is reset to 1 in the EXIF that is kept (and Pillow drops
  ``tiff:Orientation`` from the XMP), so that a viewer does not turn the image a second
  time. EXIF without an orientation, or with orientation 1, is kept byte for byte.

Outputs (``save_image``) get the metadata back where the format has a place for it: PNG
(``iCCP``, ``eXIf``, an ``iTXt`` XMP packet), JPEG (APP2 ICC, APP1 EXIF and XMP) and WebP
(``ICCP``, ``EXIF``, ``XMP `` chunks). BMP, TIFF and PPM outputs are written without it.
- The pixel count is checked against ``max_pixels`` from the header, before any pixel is
  decoded. Pillow's decompression-bomb guard stays on as well, so the effective limit is the
  smaller of the two (Pillow refuses images above ``2 * Image.MAX_IMAGE_PIXELS``).

This module knows nothing of models or latents, and of bitstreams only the pixel limit
(``container.DEFAULT_MAX_PIXELS``).
"""

from __future__ import annotations

import io
import os
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from qlic_codec.container import DEFAULT_MAX_PIXELS
from qlic_codec.errors import InvalidArgumentError, InvalidImageError, ResourceLimitError
from qlic_codec.metadata import EXIF_PREFIX, Metadata

__all__ = [
    "format_for_path",
    "load_image",
    "load_image_and_metadata",
    "save_image",
]

# The EXIF tag that says how to turn the stored pixels for display; 1 is "as stored".
_ORIENTATION = 0x0112
# Where each output format keeps which metadata (see the module docstring).
_METADATA_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
_PNG_XMP_KEY = "XML:com.adobe.xmp"

# Pillow's plugins signal bad data with many exception types (a truncated file is an OSError,
# a broken chunk a SyntaxError, a bad header field a ValueError or struct.error, ...). All of
# them mean "this is not a readable image", not a bug in qlic.
_PILLOW_DATA_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
)

_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})

_FORMAT_BY_EXTENSION = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".ppm": "PPM",
}

# Decoded pixels are the codec's result; re-encoding them should lose as little as possible.
# JPEG cannot be lossless, so it gets a high quality and no chroma subsampling. PNG is
# lossless at any zlib level: level 3 writes a 768x512 photo 4.5x faster than zlib's default
# 6 (0.05 s against 0.24 s, a fifth of a whole `qlic decode`) for a file about 8% larger.
_SAVE_OPTIONS: dict[str, dict[str, object]] = {
    "PNG": {"compress_level": 3},
    "JPEG": {"quality": 95, "subsampling": 0},
    "WEBP": {"lossless": True},
}


def load_image(
    data: bytes, *, drop_alpha: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode an image file's bytes to 8-bit RGB, following the module's mode policy.

    Args:
        data: The whole image file, in any format Pillow reads.
        drop_alpha: Discard a non-trivial alpha channel instead of refusing the image.
        max_pixels: The largest ``width * height`` accepted; checked before decoding pixels.

    Returns:
        A C-contiguous ``uint8`` array of shape ``(height, width, 3)``, in display orientation.

    Raises:
        InvalidImageError: Not an image, truncated or corrupt, an unsupported mode, or an alpha
            channel with values below 255 while ``drop_alpha`` is False.
        ResourceLimitError: The image has more than ``max_pixels`` pixels, or trips Pillow's
            decompression-bomb guard.

    Example:
        >>> rgb = load_image(save_image(np.zeros((2, 3, 3), np.uint8)))
        >>> rgb.shape, rgb.dtype
        ((2, 3, 3), dtype('uint8'))
    """
    return _load(data, drop_alpha, max_pixels, with_metadata=False)[0]


def load_image_and_metadata(
    data: bytes, *, drop_alpha: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, Metadata]:
    """``load_image``, and the image's ICC profile, EXIF and XMP (see the module docstring).

    Raises:
        As ``load_image``; and InvalidArgumentError if a metadata block is larger than a
        ``.qlic`` file carries (16 MiB).

    Example:
        >>> rgb, meta = load_image_and_metadata(save_image(np.zeros((2, 3, 3), np.uint8)))
        >>> meta
        Metadata(icc=None, exif=None, xmp=None)
    """
    return _load(data, drop_alpha, max_pixels, with_metadata=True)


def _load(data: bytes, drop_alpha: bool, max_pixels: int,
          with_metadata: bool) -> tuple[np.ndarray, Metadata]:
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, got {max_pixels}")
    im, metadata = _open_and_decode(data, max_pixels, with_metadata)
    try:
        rgb, alpha = _to_rgb_and_alpha(im)
    except _PILLOW_DATA_ERRORS as exc:
        raise InvalidImageError(
            f"cannot convert image mode {im.mode!r} to RGB: {_one_line(exc)}"
        ) from exc
    if alpha is not None and not drop_alpha and bool((alpha != 255).any()):
        raise InvalidImageError(
            "image has transparency (alpha values below 255); pass --drop-alpha "
            "(drop_alpha=True) to discard the alpha channel"
        )
    return np.ascontiguousarray(rgb, dtype=np.uint8), metadata


def save_image(rgb: np.ndarray, fmt: str = "PNG", metadata: Metadata | None = None) -> bytes:
    """Encode an RGB array as an image file.

    PNG, BMP, TIFF and PPM are lossless; WebP is written lossless; JPEG at quality 95 with
    4:4:4 chroma.

    Args:
        rgb: A ``uint8`` array of shape ``(height, width, 3)``.
        fmt: A Pillow format name, one of those ``format_for_path`` returns.
        metadata: ICC profile, EXIF and XMP to embed, in PNG, JPEG and WebP (other formats
            are written without them).

    Returns:
        The encoded file's bytes.

    Raises:
        ValueError: ``rgb`` is not ``uint8 (H, W, 3)`` or ``fmt`` is not a supported format.
        InvalidImageError: The format cannot hold the metadata (JPEG's EXIF and XMP
            segments hold at most 64 KiB each).
    """
    _check_rgb(rgb)
    fmt = fmt.upper()
    if fmt not in set(_FORMAT_BY_EXTENSION.values()):
        supported = ", ".join(sorted(set(_FORMAT_BY_EXTENSION.values())))
        raise ValueError(f"unsupported output format {fmt!r}; use one of {supported}")
    im = Image.fromarray(np.ascontiguousarray(rgb))
    buffer = io.BytesIO()
    options = dict(_SAVE_OPTIONS.get(fmt, {}))
    if metadata and fmt in _METADATA_FORMATS:
        options.update(_metadata_options(metadata, fmt))
    try:
        im.save(buffer, format=fmt, **options)
    except (ValueError, OSError, struct.error) as exc:
        if not metadata:
            raise
        raise InvalidImageError(f"cannot write the image's metadata in {fmt}: "
                                f"{_one_line(exc)}; choose another format") from exc
    return buffer.getvalue()


def _metadata_options(metadata: Metadata, fmt: str) -> dict[str, object]:
    """Pillow's save arguments for the metadata of one output format."""
    if not isinstance(metadata, Metadata):
        raise ValueError(f"metadata must be a Metadata, got {type(metadata).__name__}")
    options: dict[str, object] = {}
    if metadata.icc is not None:
        options["icc_profile"] = metadata.icc
    if metadata.exif is not None:
        # Pillow's form: JPEG needs the prefix, PNG and WebP take it off again.
        options["exif"] = EXIF_PREFIX + metadata.exif
    if metadata.xmp is not None:
        if fmt == "PNG":  # Pillow writes PNG's XMP only as a text chunk of this key
            from PIL import PngImagePlugin
            info = PngImagePlugin.PngInfo()
            info.add_itxt(_PNG_XMP_KEY, metadata.xmp.decode("utf-8", "replace"))
            options["pnginfo"] = info
        else:
            options["xmp"] = metadata.xmp
    return options


def _read_metadata(im: Image.Image, orientation: object) -> Metadata:
    """The metadata of an opened image whose EXIF orientation (``orientation``, read before
    ``exif_transpose``) has been applied to its pixels."""
    icc, exif, xmp = (im.info.get(key) for key in ("icc_profile", "exif", "xmp"))
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if isinstance(exif, bytes) and orientation not in (None, 1):
        # Pillow removed the tag when it turned the pixels; say "as stored" explicitly, so
        # that a reader which assumes another default does not turn the image.
        tags = Image.Exif()
        tags.load(exif)
        tags[_ORIENTATION] = 1
        exif = tags.tobytes()
    return Metadata(icc=icc if isinstance(icc, bytes) else None,
                    exif=exif if isinstance(exif, bytes) else None,
                    xmp=xmp if isinstance(xmp, bytes) else None)


def format_for_path(path: str) -> str:
    """Choose the output image format from a path's extension (case-insensitive).

    Args:
        path: An output path, or ``"-"`` for standard output (PNG).

    Returns:
        A Pillow format name: ``"PNG"``, ``"JPEG"``, ``"WEBP"``, ``"BMP"``, ``"TIFF"`` or
        ``"PPM"``.

    Raises:
        InvalidImageError: The extension is missing or not one of the supported ones.
    """
    if path == "-":
        return "PNG"
    extension = os.path.splitext(path)[1].lower()
    try:
        return _FORMAT_BY_EXTENSION[extension]
    except KeyError:
        supported = ", ".join(_FORMAT_BY_EXTENSION)
        shown = repr(extension) if extension else "no extension"
        raise InvalidImageError(
            f"cannot choose an image format for {path!r} ({shown}); use one of {supported}"
        ) from None


# Formats whose readers run an external interpreter (EPS runs Ghostscript) are not opened:
# qlic reads files from strangers.
_UNSAFE_FORMATS = frozenset({"EPS"})


def _readable_formats() -> list[str]:
    Image.init()
    return [name for name in Image.OPEN if name not in _UNSAFE_FORMATS]


def _open_and_decode(data: bytes, max_pixels: int,
                     with_metadata: bool) -> tuple[Image.Image, Metadata]:
    # Image.open only parses the header; the size check runs before load() touches pixels.
    try:
        with warnings.catch_warnings():
            # Pillow warns between MAX_IMAGE_PIXELS and twice that; qlic has its own limit,
            # and a warning on stderr would break the CLI's one-line output.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=_readable_formats())
            width, height = im.size
            if width * height > max_pixels:
                raise ResourceLimitError(
                    f"image is {width}x{height} = {width * height} pixels, above the limit "
                    f"of {max_pixels}"
                )
            if width < 1 or height < 1:
                raise InvalidImageError(f"image has an empty size {width}x{height}")
            im.load()
            orientation = im.getexif().get(_ORIENTATION)
            ImageOps.exif_transpose(im, in_place=True)
            metadata = _read_metadata(im, orientation) if with_metadata else Metadata()
    except InvalidArgumentError:
        raise  # metadata too large to carry: its own message, not "corrupt"
    except Image.DecompressionBombError as exc:
        raise ResourceLimitError(f"image too large: {_one_line(exc)}") from exc
    except UnidentifiedImageError as exc:
        # Pillow's message names a BytesIO object; say what it means instead.
        raise InvalidImageError("not an image, or in a format Pillow cannot read") from exc
    except _PILLOW_DATA_ERRORS as exc:
        raise InvalidImageError(f"corrupt or truncated image: {_one_line(exc)}") from exc
    return im, metadata


def _to_rgb_and_alpha(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    # Returns (uint8 (H, W, 3), uint8 (H, W) alpha or None when the image has none).
    mode = im.mode
    if mode in _WIDE_GRAY_MODES:
        values = np.asarray(im).astype(np.int64)
        alpha = _transparency_mask(values, im.info.get("transparency"))
        values = np.clip(values, 0, 65535)
        gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2), alpha
    if mode == "F":
        values = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0)
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2), None
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"))
        return rgba[:, :, :3], rgba[:, :, 3]
    if mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im), None


def _transparency_mask(values: np.ndarray, transparency: object) -> np.ndarray | None:
    # A grayscale tRNS chunk names one transparent sample value.
    if not isinstance(transparency, int):
        return None
    return np.where(values == transparency, 0, 255).astype(np.uint8)


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or (
        rgb.shape[2] != 3
    ):
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise ValueError(f"expected a uint8 array of shape (H, W, 3), got {dtype} {shape}")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"expected a non-empty image, got shape {rgb.shape}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
