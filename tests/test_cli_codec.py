"""The command line with the real codec: a real photo through `qlic encode` and `qlic decode`
as a subprocess, exactly as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import qlic_codec
from qlic_codec import modelfile
from conftest import synthetic_photo

ROOT = Path(__file__).resolve().parents[1]
VAL = ROOT.parent / "shared" / "data" / "val"


def small_photo() -> np.ndarray:
    """A 131x197 crop of a real validation photo (synthetic if the data set is absent)."""
    files = sorted(VAL.glob("*.png")) if VAL.is_dir() else []
    if not files:
        return synthetic_photo(131, 197, seed=2)
    return np.asarray(Image.open(files[0]).convert("RGB"))[200:331, 300:497].copy()


def qlic(*args, cwd):
    return subprocess.run([sys.executable, "-m", "qlic_codec.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_real_photo_through_the_cli(tiny_model, tmp_path):
    image = small_photo()
    Image.fromarray(image).save(tmp_path / "photo.png")
    enc = qlic("encode", "photo.png", "-o", "photo.qlic", "-q", "6", "--model", tiny_model,
               "--json", cwd=tmp_path)
    assert enc.returncode == 0, enc.stderr
    line = json.loads(enc.stdout.strip().splitlines()[-1])
    assert (line["width"], line["height"]) == (197, 131)
    dec = qlic("decode", "photo.qlic", "-o", "back.png", "--model", tiny_model, cwd=tmp_path)
    assert dec.returncode == 0, dec.stderr
    back = np.asarray(Image.open(tmp_path / "back.png"))
    data = (tmp_path / "photo.qlic").read_bytes()
    np.testing.assert_array_equal(back, qlic_codec.decode(data, tiny_model))
    _, recon = qlic_codec.api.encode_and_reconstruct(image, 6, tiny_model)
    np.testing.assert_array_equal(back, recon)


def test_cli_errors_with_the_real_codec(tiny_model, tmp_path):
    Image.fromarray(synthetic_photo(40, 40)).save(tmp_path / "a.png")
    (tmp_path / "junk.qlic").write_bytes(b"QLIC" + os.urandom(60))
    (tmp_path / "keep.png").write_bytes(b"precious")
    bad = qlic("decode", "junk.qlic", "-o", "keep.png", "--model", tiny_model, cwd=tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("qlic: error: junk.qlic:")
    assert (tmp_path / "keep.png").read_bytes() == b"precious"
    missing = qlic("encode", "a.png", "--model", str(tmp_path / "nope.qlicm"), cwd=tmp_path)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert not (tmp_path / "a.qlic").exists()
    notimg = qlic("encode", "junk.qlic", "-o", "x.qlic", "--model", tiny_model, cwd=tmp_path)
    assert notimg.returncode == 1 and not (tmp_path / "x.qlic").exists()


def test_info_does_not_load_numba(tiny_model, tmp_path):
    data = qlic_codec.encode(synthetic_photo(30, 30), 4, tiny_model)
    (tmp_path / "a.qlic").write_bytes(data)
    script = ("import sys; from qlic_codec.cli import main\n"
              "try:\n    main(['info', 'a.qlic'])\nexcept SystemExit:\n    pass\n"
              "print('numba' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False False", out.stderr


def test_decode_keeps_scipy_out_and_restores_the_import_system(tiny_model, tmp_path):
    # Numba would import SciPy (for BLAS the engine never calls); the engine refuses it
    # while Numba loads, then removes its import hook, so SciPy stays importable afterwards.
    pytest.importorskip("scipy")  # without SciPy there is nothing to keep out
    data = qlic_codec.encode(synthetic_photo(30, 30), 4, tiny_model)
    (tmp_path / "a.qlic").write_bytes(data)
    script = ("import sys; from qlic_codec.cli import main\n"
              "hooks = list(sys.meta_path)\n"
              f"try:\n    main(['decode', 'a.qlic', '-o', 'a.png', '--model', {str(tiny_model)!r}])\n"
              "except SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
              "print('scipy' in sys.modules, sys.meta_path == hooks)")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "False True", out.stderr
    assert (tmp_path / "a.png").is_file()


def test_decode_freezes_the_imports_once_and_info_does_not(tiny_model, tmp_path):
    # The command's imports leave the garbage collector's scans (gc.freeze), once: objects
    # made later are still collected. `qlic info` loads no engine and freezes nothing.
    data = qlic_codec.encode(synthetic_photo(30, 30), 4, tiny_model)
    (tmp_path / "a.qlic").write_bytes(data)
    script = ("import gc, sys; from qlic_codec.cli import main\n"
              "def run(args):\n"
              "    try:\n        main(args)\n"
              "    except SystemExit as exc:\n        assert exc.code in (0, None), exc.code\n"
              "run(['info', 'a.qlic']); print(gc.get_freeze_count())\n"
              f"run(['decode', 'a.qlic', '-o', 'a.png', '--model', {str(tiny_model)!r}])\n"
              "frozen = gc.get_freeze_count(); print(frozen > 10000)\n"
              f"run(['decode', 'a.qlic', '-o', 'b.png', '--model', {str(tiny_model)!r}])\n"
              # Not frozen again (the count only falls, as frozen objects are freed).
              "print(gc.get_freeze_count() <= frozen, gc.isenabled())")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-3:] == ["0", "True", "True True"], out.stderr


def test_info_describes_a_model_file_and_decode_refuses_one(tmp_path):
    """``qlic info`` on a ``.qlicm`` says what the model is (a model file shares the stream's
    first four bytes, so it used to read as a stream of format 77); ``qlic decode`` refuses
    it in one line and writes nothing."""
    from conftest import GOLDEN
    model = GOLDEN / "tiny-cc12.qlicm"
    out = qlic("info", str(model), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["kind"] == "model" and record["format"] == 3
    assert record["model_id"] == modelfile.read(model)[2].hex()
    assert (record["entropy_model"], record["slices"], record["context_bits"]) == (
        "channel-conditional", [4, 4, 8, 8], 12)
    assert (record["top_quality"], record["quality_steps"]) == (8, 16)
    plain = qlic("info", str(GOLDEN / "tiny-mse.qlicm"), cwd=tmp_path)
    assert plain.returncode == 0 and "hyperprior" in plain.stdout and "quality 1 to 8" in plain.stdout
    dec = qlic("decode", str(model), "-o", "x.png", cwd=tmp_path)
    assert dec.returncode == 1 and "model file" in dec.stderr and "Traceback" not in dec.stderr
    assert len(dec.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.png").exists()
