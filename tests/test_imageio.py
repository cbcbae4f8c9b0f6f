"""Tests for qlic_codec.imageio: mode policy, alpha, orientation, limits, pad and crop."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from qlic_codec import imageio
from qlic_codec.errors import InvalidImageError, ResourceLimitError

RNG = np.random.default_rng(1234)


def encoded(im: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def random_rgb(height: int, width: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming the given size whose IDAT chunk is cut off after a few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    header = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    # Pillow's open() reads chunks up to the first IDAT; the pixels behind it are missing.
    idat = struct.pack(">I", 10**6) + b"IDAT" + zlib.compress(b"\x00" * 16)[:8]
    return b"\x89PNG\r\n\x1a\n" + header + idat


def check_rgb(rgb: np.ndarray, height: int, width: int) -> None:
    assert rgb.dtype == np.uint8
    assert rgb.shape == (height, width, 3)
    assert rgb.flags.c_contiguous


@pytest.mark.parametrize("size", [(1, 1), (333, 517), (2, 64)])
def test_rgb_png_round_trip_is_exact(size: tuple[int, int]) -> None:
    rgb = random_rgb(*size)
    out = imageio.load_image(imageio.save_image(rgb))
    check_rgb(out, *size)
    np.testing.assert_array_equal(out, rgb)


def test_grayscale_l_and_1_are_replicated() -> None:
    gray = RNG.integers(0, 256, size=(5, 7), dtype=np.uint8)
    out = imageio.load_image(encoded(Image.fromarray(gray)))
    check_rgb(out, 5, 7)
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))

    bits = Image.fromarray(gray > 127).convert("1")
    out = imageio.load_image(encoded(bits))
    np.testing.assert_array_equal(out[:, :, 0], np.where(gray > 127, 255, 0))


def test_la_trivial_alpha_is_dropped_and_real_alpha_refused() -> None:
    gray = RNG.integers(0, 256, size=(4, 6), dtype=np.uint8)
    opaque = np.full_like(gray, 255)
    la = Image.fromarray(np.stack([gray, opaque], axis=2), "LA")
    np.testing.assert_array_equal(imageio.load_image(encoded(la))[:, :, 1], gray)

    alpha = opaque.copy()
    alpha[0, 0] = 254
    la = Image.fromarray(np.stack([gray, alpha], axis=2), "LA")
    with pytest.raises(InvalidImageError, match="--drop-alpha"):
        imageio.load_image(encoded(la))
    np.testing.assert_array_equal(imageio.load_image(encoded(la), drop_alpha=True)[:, :, 2], gray)


def test_palette_without_transparency() -> None:
    rgb = random_rgb(6, 5)
    p = Image.fromarray(rgb).quantize(colors=16)
    expected = np.asarray(p.convert("RGB"))
    out = imageio.load_image(encoded(p))
    check_rgb(out, 6, 5)
    np.testing.assert_array_equal(out, expected)


def test_palette_with_transparency() -> None:
    indexes = np.arange(12, dtype=np.uint8).reshape(3, 4) % 4
    p = Image.fromarray(indexes, "P")
    p.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120] + [0] * 756)
    expected = np.asarray(p.convert("RGB"))

    # A transparent index that no pixel uses is trivial alpha.
    unused = encoded(p, transparency=7)
    np.testing.assert_array_equal(imageio.load_image(unused), expected)

    used = encoded(p, transparency=2)
    with pytest.raises(InvalidImageError, match="transparency"):
        imageio.load_image(used)
    np.testing.assert_array_equal(imageio.load_image(used, drop_alpha=True), expected)


def test_rgba_alpha_is_discarded_not_composited() -> None:
    rgb = random_rgb(4, 4)
    alpha = np.full((4, 4, 1), 255, np.uint8)
    trivial = Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA")
    np.testing.assert_array_equal(imageio.load_image(encoded(trivial)), rgb)

    alpha[1, 2] = 0
    real = Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA")
    with pytest.raises(InvalidImageError, match="--drop-alpha"):
        imageio.load_image(encoded(real))
    # The fully transparent pixel keeps its stored colour.
    np.testing.assert_array_equal(imageio.load_image(encoded(real), drop_alpha=True), rgb)


def test_16_bit_grayscale_is_rounded_to_8_bits() -> None:
    values = np.array([[0, 1, 128, 129], [257 * 7, 257 * 200 + 128, 65534, 65535]], np.uint16)
    im = Image.fromarray(values)
    assert im.mode.startswith("I;16")
    out = imageio.load_image(encoded(im))
    expected = (values.astype(np.int64) * 255 + 32767) // 65535
    np.testing.assert_array_equal(out[:, :, 0], expected)
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])
    # Rounding, not truncation of the low byte: 129/257 rounds up to 1, 257*200+128 stays 200.
    assert out[0, 3, 0] == 1 and out[1, 1, 0] == 200 and out[1, 0, 0] == 7


def test_32_bit_int_and_float_grayscale() -> None:
    values = np.array([[-5, 0, 65535, 70000]], np.int32)
    out = imageio.load_image(encoded(Image.fromarray(values, "I"), "TIFF"))
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 255, 255])

    floats = np.array([[-1.0, 0.4, 127.6, 300.0]], np.float32)
    out = imageio.load_image(encoded(Image.fromarray(floats, "F"), "TIFF"))
    np.testing.assert_array_equal(out[0, :, 1], [0, 0, 128, 255])


def test_cmyk_converts_like_pillow() -> None:
    cmyk = RNG.integers(0, 256, size=(3, 5, 4), dtype=np.uint8)
    im = Image.fromarray(cmyk, "CMYK")
    out = imageio.load_image(encoded(im, "TIFF"))
    check_rgb(out, 3, 5)
    np.testing.assert_array_equal(out, np.asarray(im.convert("RGB")))
    white = imageio.load_image(encoded(Image.new("CMYK", (1, 1), (0, 0, 0, 0)), "TIFF"))
    np.testing.assert_array_equal(white, [[[255, 255, 255]]])


@pytest.mark.parametrize(
    "orientation, to_display",
    [
        (1, lambda a: a),
        (2, lambda a: a[:, ::-1]),
        (3, lambda a: a[::-1, ::-1]),
        (4, lambda a: a[::-1]),
        (5, lambda a: a.swapaxes(0, 1)),
        (6, lambda a: np.rot90(a, -1)),
        (7, lambda a: a[::-1, ::-1].swapaxes(0, 1)),
        (8, lambda a: np.rot90(a, 1)),
    ],
)
def test_exif_orientation_is_applied(orientation: int, to_display) -> None:
    stored = random_rgb(2, 3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = imageio.load_image(encoded(Image.fromarray(stored), exif=exif.tobytes()))
    check_rgb(out, *to_display(stored).shape[:2])
    np.testing.assert_array_equal(out, to_display(stored))


def test_max_pixels_is_checked_before_decoding() -> None:
    rgb = random_rgb(10, 10)
    with pytest.raises(ResourceLimitError, match="100 pixels"):
        imageio.load_image(imageio.save_image(rgb), max_pixels=99)
    assert imageio.load_image(imageio.save_image(rgb), max_pixels=100).shape == (10, 10, 3)
    # A header with no pixel data behind it: decoding would fail as truncated, so a
    # ResourceLimitError proves the size was refused first.
    with pytest.raises(ResourceLimitError):
        imageio.load_image(png_header_only(1000, 1000), max_pixels=10**5)
    with pytest.raises(InvalidImageError):
        imageio.load_image(png_header_only(1000, 1000), max_pixels=10**7)


def test_pillow_bomb_guard_stays_on() -> None:
    # Above twice Image.MAX_IMAGE_PIXELS Pillow refuses at open, whatever max_pixels says.
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 10
    with pytest.raises(ResourceLimitError):
        imageio.load_image(png_header_only(side, side), max_pixels=2**40)


@pytest.mark.parametrize(
    "data", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40]
)
def test_garbage_is_an_invalid_image(data: bytes) -> None:
    with pytest.raises(InvalidImageError):
        imageio.load_image(data)


def test_truncated_image_is_an_invalid_image() -> None:
    data = imageio.save_image(random_rgb(64, 64))
    with pytest.raises(InvalidImageError, match="^[^\n]+$"):
        imageio.load_image(data[: len(data) // 2])


@pytest.mark.parametrize(
    "path, fmt",
    [("-", "PNG"), ("a.png", "PNG"), ("d/A.JPG", "JPEG"), ("x.jpeg", "JPEG"),
     ("x.webp", "WEBP"), ("x.bmp", "BMP"), ("x.tif", "TIFF"), ("x.tiff", "TIFF"),
     ("x.ppm", "PPM")],
)
def test_format_for_path(path: str, fmt: str) -> None:
    assert imageio.format_for_path(path) == fmt


@pytest.mark.parametrize("path", ["x.gif", "x", "x.qlic"])
def test_format_for_unknown_extension_is_refused(path: str) -> None:
    with pytest.raises(InvalidImageError, match="format"):
        imageio.format_for_path(path)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "TIFF", "PPM", "JPEG"])
def test_save_image_formats(fmt: str) -> None:
    rgb = random_rgb(9, 13)
    out = imageio.load_image(imageio.save_image(rgb, fmt))
    check_rgb(out, 9, 13)
    if fmt != "JPEG":
        np.testing.assert_array_equal(out, rgb)


def test_save_image_refuses_bad_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        imageio.save_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        imageio.save_image(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="format"):
        imageio.save_image(np.zeros((4, 4, 3), np.uint8), "GIF")


def test_postscript_is_not_opened():
    # EPS would run Ghostscript: it is refused as "not an image", whatever is installed.
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(InvalidImageError):
        imageio.load_image(eps)
