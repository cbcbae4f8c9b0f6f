"""ICC profiles, EXIF and XMP: read from the input image, carried in the .qlic file, written
back on decode; the EXIF orientation applied once. Real images made with Pillow, the real
command line and the tiny model."""

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageCms

import qlic_codec
import qlic_codec.pillow  # noqa: F401  (registers the format)
from conftest import synthetic_photo
from qlic_codec import container, imageio
from qlic_codec.cli import main as cli_main
from qlic_codec.errors import InvalidArgumentError
from qlic_codec.metadata import Metadata

ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
       b'22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" '
       b'dc:format="image/png"/></rdf:RDF></x:xmpmeta>')
ORIENTATION, MAKE = 0x0112, 0x010F


def exif_bytes(orientation=None, make="qlic test camera") -> bytes:
    exif = Image.Exif()
    exif[MAKE] = make
    if orientation is not None:
        exif[ORIENTATION] = orientation
    return exif.tobytes()


def image_file(fmt: str, rgb: np.ndarray, icc=ICC, exif=None, xmp=XMP) -> bytes:
    options = {"icc_profile": icc, "exif": exif if exif is not None else exif_bytes()}
    if fmt == "PNG":
        from PIL import PngImagePlugin
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp.decode())
        options["pnginfo"] = info
    else:
        options["xmp"] = xmp
    if fmt == "JPEG":
        options["quality"] = 95
    if fmt == "WEBP":
        options["lossless"] = True
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def tags(exif: bytes) -> Image.Exif:
    parsed = Image.Exif()
    parsed.load(exif)
    return parsed


# --- the Metadata value -------------------------------------------------------------------


def test_metadata_normalises_and_checks_its_fields():
    meta = Metadata(icc=bytearray(b"p"), exif=b"Exif\0\0MM\0*", xmp=b"")
    assert (meta.icc, meta.exif, meta.xmp) == (b"p", b"MM\0*", None)
    assert meta.to_chunks() == (("ICCP", b"p"), ("EXIF", b"MM\0*"))
    assert Metadata.from_chunks(meta.to_chunks()) == meta
    assert not Metadata() and meta and meta.sizes() == {"icc": 1, "exif": 4}
    with pytest.raises(InvalidArgumentError, match="icc must be bytes"):
        Metadata(icc="text")
    with pytest.raises(InvalidArgumentError, match="--strip"):
        Metadata(xmp=b"\0" * (container.MAX_CHUNK_SIZE + 1))


# --- imageio: read and write -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_imageio_reads_and_writes_the_three_blocks(fmt):
    rgb = synthetic_photo(24, 40, seed=1)
    _, meta = imageio.load_image_and_metadata(image_file(fmt, rgb))
    assert meta.icc == ICC and meta.xmp == XMP
    assert tags(meta.exif)[MAKE] == "qlic test camera"
    assert meta.exif == exif_bytes()[6:]  # no orientation: kept byte for byte, sans prefix
    written = imageio.save_image(rgb, fmt, meta)
    assert imageio.load_image_and_metadata(written)[1] == meta


def test_formats_without_a_place_for_metadata_are_written_without_it():
    rgb = synthetic_photo(8, 8)
    meta = Metadata(icc=ICC, exif=exif_bytes(), xmp=XMP)
    for fmt in ("BMP", "PPM", "TIFF"):
        assert imageio.save_image(rgb, fmt, meta) == imageio.save_image(rgb, fmt)


@pytest.mark.parametrize("orientation, turned", [(1, False), (3, False), (6, True), (8, True)])
def test_orientation_is_applied_to_the_pixels_and_reset_to_1(orientation, turned):
    rgb = synthetic_photo(20, 36, seed=2)
    data = image_file("JPEG", rgb, exif=exif_bytes(orientation))
    pixels, meta = imageio.load_image_and_metadata(data)
    assert pixels.shape == ((36, 20, 3) if turned else (20, 36, 3))
    kept = tags(meta.exif)
    assert kept[ORIENTATION] == 1 and kept[MAKE] == "qlic test camera"
    # Written back and read again, the picture is not turned a second time.
    again, _ = imageio.load_image_and_metadata(imageio.save_image(pixels, "PNG", meta))
    np.testing.assert_array_equal(again, pixels)


def test_metadata_too_large_to_carry_fails_in_one_line_unless_stripped(tiny_model, tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "WEBP", lossless=True,
                                  icc_profile=b"\0" * (container.MAX_CHUNK_SIZE + 1))
    (tmp_path / "big.webp").write_bytes(buffer.getvalue())
    result = run(["encode", tmp_path / "big.webp", "--model", tiny_model], code=1)
    assert result.stderr.count("\n") == 1 and "--strip" in result.stderr
    assert not (tmp_path / "big.qlic").exists()
    run(["encode", tmp_path / "big.webp", "--model", tiny_model, "--strip"])
    assert qlic_codec.read_info((tmp_path / "big.qlic").read_bytes())["metadata"] == {}


def test_jpeg_cannot_hold_more_than_64k_of_exif_in_one_line():
    meta = Metadata(exif=exif_bytes(make="x" * 70000))
    with pytest.raises(qlic_codec.InvalidImageError, match="metadata in JPEG"):
        imageio.save_image(synthetic_photo(8, 8), "JPEG", meta)


# --- the API ------------------------------------------------------------------------------


def test_api_carries_metadata_and_read_info_reports_it(tiny_model):
    rgb = synthetic_photo(30, 50, seed=4)
    meta = Metadata(icc=ICC, exif=exif_bytes(), xmp=XMP)
    data = qlic_codec.encode(rgb, 4.5, tiny_model, metadata=meta)
    pixels, back = qlic_codec.decode_with_metadata(data, tiny_model)
    assert back == meta
    plain = qlic_codec.encode(rgb, 4.5, tiny_model)
    np.testing.assert_array_equal(pixels, qlic_codec.decode(plain, tiny_model))
    assert qlic_codec.decode_with_metadata(plain, tiny_model)[1] == Metadata()
    info = qlic_codec.read_info(data)
    assert info["metadata"] == {"icc": len(ICC), "exif": len(meta.exif), "xmp": len(XMP)}
    assert qlic_codec.read_info(plain)["metadata"] == {}
    # The streams are the same; only the header grows: each chunk by its tag, its length
    # (a varint) and its data.
    def varint_size(n):
        return 1 + (n >= 2**7) + (n >= 2**14) + (n >= 2**21) + (n >= 2**28)
    assert len(data) - len(plain) == sum(4 + varint_size(n) + n
                                         for n in info["metadata"].values())


# --- the command line ---------------------------------------------------------------------


def run(args, code=0):
    result = CliRunner().invoke(cli_main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


@pytest.mark.parametrize("fmt, ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")])
def test_cli_round_trip_keeps_metadata_and_strip_drops_it(tiny_model, tmp_path, fmt, ext):
    rgb = synthetic_photo(40, 24, seed=6)
    src = tmp_path / f"in.{ext}"
    src.write_bytes(image_file(fmt, rgb, exif=exif_bytes(6)))
    run(["encode", src, "-o", tmp_path / "a.qlic", "--model", tiny_model])
    info = json.loads(run(["info", tmp_path / "a.qlic", "--json"]).stdout)
    assert set(info["metadata"]) == {"icc", "exif", "xmp"}
    assert "metadata icc " in run(["info", tmp_path / "a.qlic"]).stdout
    run(["decode", tmp_path / "a.qlic", "-o", tmp_path / f"out.{ext}", "--model", tiny_model])
    with Image.open(tmp_path / f"out.{ext}") as out:
        assert out.size == (40, 24)  # turned upright once, by qlic encode
        assert out.info["icc_profile"] == ICC and out.info["xmp"] == XMP
        assert out.getexif()[ORIENTATION] == 1
        assert out.getexif()[MAKE] == "qlic test camera"
    run(["encode", src, "-o", tmp_path / "s.qlic", "--model", tiny_model, "--strip"])
    assert json.loads(run(["info", tmp_path / "s.qlic", "--json"]).stdout)["metadata"] == {}
    run(["decode", tmp_path / "s.qlic", "-o", tmp_path / f"s.{ext}", "--model", tiny_model])
    with Image.open(tmp_path / f"s.{ext}") as out:
        assert "icc_profile" not in out.info or not out.info["icc_profile"]
        assert not out.getexif()


def test_cli_strip_gives_the_bytes_of_an_image_without_metadata(tiny_model, tmp_path):
    rgb = synthetic_photo(16, 16, seed=8)
    (tmp_path / "with.png").write_bytes(image_file("PNG", rgb))
    Image.fromarray(rgb).save(tmp_path / "without.png")
    run(["encode", tmp_path / "with.png", "--strip", "--model", tiny_model])
    run(["encode", tmp_path / "without.png", "--model", tiny_model])
    assert (tmp_path / "with.qlic").read_bytes() == (tmp_path / "without.qlic").read_bytes()


# --- the Pillow plugin --------------------------------------------------------------------


@pytest.fixture
def tiny_as_default(monkeypatch, tmp_path, tiny_model):
    import shutil
    shutil.copy(tiny_model, tmp_path / "qlic-mse.qlicm")
    monkeypatch.setenv("QLIC_MODEL_DIR", str(tmp_path))


def test_pillow_plugin_exposes_and_writes_metadata(tiny_model, tiny_as_default, tmp_path):
    rgb = synthetic_photo(20, 30, seed=9)
    with Image.open(io.BytesIO(image_file("JPEG", rgb))) as jpeg:
        jpeg.save(tmp_path / "a.qlic", quality=4.5, model=tiny_model)  # carries im.info
    with Image.open(tmp_path / "a.qlic") as im:
        assert im.info["quality"] == 4.5
        assert im.info["icc_profile"] == ICC and im.info["xmp"] == XMP
        assert im.info["exif"].startswith(b"Exif\0\0")
        assert im.getexif()[MAKE] == "qlic test camera"
        assert not im._qlic_loaded  # all of it from the header
        im.save(tmp_path / "b.png")
    with Image.open(tmp_path / "b.png") as png:
        assert png.info["icc_profile"] == ICC
    # The save call's own arguments win over the image's; an Image.Exif is accepted.
    exif = Image.Exif()
    exif[MAKE] = "other"
    Image.fromarray(rgb).save(tmp_path / "c.qlic", model=tiny_model, exif=exif,
                              icc_profile=b"profile")
    with Image.open(tmp_path / "c.qlic") as im:
        assert im.getexif()[MAKE] == "other" and im.info["icc_profile"] == b"profile"
        assert "xmp" not in im.info
