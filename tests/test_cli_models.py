"""The command line with the bundled models (``models/qlic-mse.qlicm``, ``qlic-msssim.qlicm``),
as a user runs it: ``python -m qlic_codec.cli`` in a subprocess, a small synthetic photo.

``tests/test_cli.py`` checks the command's contract against a fake codec whose quality levels
are hard-coded; these tests check that the real command, the real models and the real quality
table work together: encode at two levels, decode without naming the model (the stream's
model hash finds the bundled file), sizes and PSNR that make sense for those levels, and
``qlic info`` naming the level, the metric and the model.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_photo
from qlic_codec import modelfile, zoo

HEIGHT, WIDTH = 64, 96
LOW, HIGH = 2, 7
# Measured on this photo (synthetic_photo(64, 96, 5)): quality 2 is 0.25-0.26 bpp at 29.2 dB
# (mse) and 29.7 dB (msssim), quality 7 1.28-1.42 bpp at 35.1 and 33.5 dB. The bounds leave
# room for another model of the same design, not for a broken one.
BOUNDS = {LOW: {"bpp": (0.1, 0.6), "psnr": 27.0}, HIGH: {"bpp": (0.8, 3.0), "psnr": 32.0}}


def qlic(*args, cwd):
    return subprocess.run([sys.executable, "-m", "qlic_codec.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module", params=["mse", "msssim"])
def bundled(request):
    """A bundled model name and its file; skipped when the models are not in this tree."""
    try:
        path = zoo.resolve(request.param)
    except Exception as exc:  # noqa: BLE001 - a missing model is a skip, whatever the reason
        pytest.skip(f"bundled model {request.param!r} not available: {exc}")
    return request.param, path


def test_encode_decode_info_with_a_bundled_model(bundled, tmp_path: Path):
    name, model_path = bundled
    photo = synthetic_photo(HEIGHT, WIDTH, 5)
    Image.fromarray(photo).save(tmp_path / "photo.png")

    records = {}
    for quality in (LOW, HIGH):
        enc = qlic("encode", "photo.png", "-o", f"q{quality}.qlic", "-q", str(quality),
                   "--model", name, "--json", cwd=tmp_path)
        assert enc.returncode == 0, enc.stderr
        assert enc.stderr == ""
        record = json.loads(enc.stdout.strip().splitlines()[-1])
        assert (record["width"], record["height"], record["quality"]) == (WIDTH, HEIGHT, quality)
        assert record["bytes"] == (tmp_path / f"q{quality}.qlic").stat().st_size
        records[quality] = record

    # No --model: the decoder finds the bundled model from the stream's model hash.
    dec = qlic("decode", f"q{LOW}.qlic", f"q{HIGH}.qlic", cwd=tmp_path)
    assert dec.returncode == 0, dec.stderr
    quality_of = {}
    for quality in (LOW, HIGH):
        back = np.asarray(Image.open(tmp_path / f"q{quality}.png"))
        assert back.shape == (HEIGHT, WIDTH, 3) and back.dtype == np.uint8
        bpp = 8 * records[quality]["bytes"] / (WIDTH * HEIGHT)
        lo, hi = BOUNDS[quality]["bpp"]
        assert lo < bpp < hi, (name, quality, bpp)
        assert records[quality]["bpp"] == pytest.approx(bpp, abs=1e-5)
        quality_of[quality] = psnr(photo, back)
        assert quality_of[quality] > BOUNDS[quality]["psnr"], (name, quality, quality_of)
    # A higher level spends more bits for a better picture.
    assert records[HIGH]["bytes"] > 2 * records[LOW]["bytes"]
    assert quality_of[HIGH] > quality_of[LOW] + 2, quality_of

    model_id = modelfile.read_id(model_path).hex()
    info = qlic("info", f"q{LOW}.qlic", f"q{HIGH}.qlic", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    lines = info.stdout.splitlines()
    assert len(lines) == 2
    for quality, line in zip((LOW, HIGH), lines):
        assert line.startswith(f"q{quality}.qlic: {WIDTH}x{HEIGHT}, quality {quality} ({name}), "
                               f"{records[quality]['bytes']} bytes, "), line
        assert f", model {model_id}, " in line, line
    info = qlic("info", "--json", f"q{HIGH}.qlic", cwd=tmp_path)
    fields = json.loads(info.stdout)
    assert (fields["quality"], fields["metric"], fields["model_hash"]) == (HIGH, name, model_id)
    assert (fields["width"], fields["height"]) == (WIDTH, HEIGHT)


def test_decoding_with_the_other_model_is_refused(tmp_path: Path):
    """A stream names its model: decoding it with the other bundled model fails in one line."""
    try:
        other = zoo.resolve("msssim")
        zoo.resolve("mse")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"bundled models not available: {exc}")
    Image.fromarray(synthetic_photo(HEIGHT, WIDTH, 6)).save(tmp_path / "photo.png")
    enc = qlic("encode", "photo.png", "--model", "mse", "-q", "1", cwd=tmp_path)
    assert enc.returncode == 0, enc.stderr
    dec = qlic("decode", "photo.qlic", "-o", "back.png", "--model", "msssim", cwd=tmp_path)
    assert dec.returncode == 1
    assert dec.stderr.count("\n") == 1 and dec.stderr.startswith("qlic: error: photo.qlic: ")
    assert modelfile.read_id(other).hex() in dec.stderr
    assert not (tmp_path / "back.png").exists()
