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
from qlic_codec.errors import InvalidImageError, ResourceLimitError

__all__ = [
    "format_for_path",
    "load_image",
    "save_image",
]

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
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, got {max_pixels}")
    im = _open_and_decode(data, max_pixels)
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
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def save_image(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    """Encode an RGB array as an image file.

    PNG, BMP, TIFF and PPM are lossless; WebP is written lossless; JPEG at quality 95 with
    4:4:4 chroma.

    Args:
        rgb: A ``uint8`` array of shape ``(height, width, 3)``.
        fmt: A Pillow format name, one of those ``format_for_path`` returns.

    Returns:
        The encoded file's bytes.

    Raises:
        ValueError: ``rgb`` is not ``uint8 (H, W, 3)`` or ``fmt`` is not a supported format.
    """
    _check_rgb(rgb)
    fmt = fmt.upper()
    if fmt not in set(_FORMAT_BY_EXTENSION.values()):
        supported = ", ".join(sorted(set(_FORMAT_BY_EXTENSION.values())))
        raise ValueError(f"unsupported output format {fmt!r}; use one of {supported}")
    im = Image.fromarray(np.ascontiguousarray(rgb))
    buffer = io.BytesIO()
    im.save(buffer, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))
    return buffer.getvalue()


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


def _open_and_decode(data: bytes, max_pixels: int) -> Image.Image:
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
            ImageOps.exif_transpose(im, in_place=True)
    except Image.DecompressionBombError as exc:
        raise ResourceLimitError(f"image too large: {_one_line(exc)}") from exc
    except UnidentifiedImageError as exc:
        # Pillow's message names a BytesIO object; say what it means instead.
        raise InvalidImageError("not an image, or in a format Pillow cannot read") from exc
    except _PILLOW_DATA_ERRORS as exc:
        raise InvalidImageError(f"corrupt or truncated image: {_one_line(exc)}") from exc
    return im


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
