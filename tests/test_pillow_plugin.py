"""The Pillow plugin, with real Pillow objects and the tiny golden model."""

import io

import numpy as np
import pytest
from PIL import Image

import qlic_codec
import qlic_codec.pillow  # noqa: F401  (registers the format)
from conftest import synthetic_photo


@pytest.fixture(scope="module")
def qlic_file(tmp_path_factory, tiny_model):
    rgb = synthetic_photo(70, 90, seed=3)
    path = tmp_path_factory.mktemp("pil") / "photo.qlic"
    path.write_bytes(qlic_codec.encode(rgb, quality=3, model=tiny_model))
    return path, rgb


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model):
    import shutil
    folder = tmp_path_factory.mktemp("models")
    shutil.copy(tiny_model, folder / "qlic-mse.qlicm")
    return folder


@pytest.fixture(autouse=True)
def tiny_as_default(monkeypatch, model_dir):
    """``Image.open`` finds a stream's model among the bundled ones: make the tiny model one."""
    monkeypatch.setenv("QLIC_MODEL_DIR", str(model_dir))


def test_open_is_lazy_and_load_gives_the_decoder_pixels(qlic_file, tiny_model):
    path, _ = qlic_file
    im = Image.open(path)
    assert im.format == "QLIC" and im.mode == "RGB" and im.size == (90, 70)
    assert im.info["quality"] == 3
    assert not im._qlic_loaded  # nothing decoded yet
    expected = qlic_codec.decode(path.read_bytes(), model=tiny_model)
    assert np.array_equal(np.asarray(im), expected)
    im.close()


def test_thumbnail_convert_and_save_as_png(qlic_file, tmp_path):
    path, _ = qlic_file
    with Image.open(path) as im:
        im.thumbnail((45, 45))
        assert im.size == (45, 35)
        gray = im.convert("L")
        gray.save(tmp_path / "thumb.png")
    with Image.open(tmp_path / "thumb.png") as back:
        assert back.size == (45, 35) and back.mode == "L"


def test_save_writes_a_stream_the_codec_reads(tmp_path, tiny_model):
    rgb = synthetic_photo(64, 80, seed=5)
    Image.fromarray(rgb).save(tmp_path / "a.qlic", quality=2, model=tiny_model)
    data = (tmp_path / "a.qlic").read_bytes()
    assert qlic_codec.read_info(data)["quality"] == 2
    assert data == qlic_codec.encode(rgb, quality=2, model=tiny_model)
    buffer = io.BytesIO()
    Image.fromarray(rgb[..., 0]).save(buffer, format="QLIC", model=tiny_model)  # greyscale
    with Image.open(io.BytesIO(buffer.getvalue())) as im:
        assert im.size == (80, 64) and im.info["quality"] == 4


def test_alpha_and_bad_quality_are_refused_without_writing(tmp_path, tiny_model):
    rgba = Image.new("RGBA", (8, 8), (1, 2, 3, 4))
    with pytest.raises(OSError, match="RGBA"):
        rgba.save(tmp_path / "x.qlic")
    with pytest.raises(OSError, match="quality"):
        Image.new("RGB", (8, 8)).save(io.BytesIO(), format="QLIC", quality=99, model=tiny_model)


def test_a_damaged_file_fails_on_open_or_load_with_oserror(qlic_file, tmp_path):
    path, _ = qlic_file
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "bad.qlic").write_bytes(bytes(data))
    with Image.open(tmp_path / "bad.qlic") as im:
        with pytest.raises(OSError, match="checksum"):
            im.load()
    (tmp_path / "junk.qlic").write_bytes(b"QLIC" + b"\0" * 10)
    with pytest.raises(OSError):  # Pillow's UnidentifiedImageError is an OSError
        Image.open(tmp_path / "junk.qlic")
