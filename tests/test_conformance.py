"""The conformance streams of the bundled models: every kernel path decodes them to the
committed digests, and ``qlic verify`` passes here and fails on damaged streams or manifests.

These tests only compare. New streams are made on purpose with
``python -m qlic_codec.conformance generate``, never by a test.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import qlic_codec
from qlic_codec import cli, conformance, threads, zoo

FOLDER = Path(__file__).resolve().parent.parent / "conformance"
REPO = FOLDER.parent
# `qlic verify` over every stream takes about 70 s on a busy 2-core machine (the portable
# path decodes a 1800x1200 stream in 5 s). To keep the suite near a minute, the command-line
# tests run it on the streams below this size, and test_streams_decode_on_every_path decodes
# the small ones and the high-quality large ones (the most symbols) on every path; the
# low-quality large ones are checked by `qlic verify` itself.
SMALL = 10**6


def _entries():
    if not (FOLDER / "manifest.json").is_file():
        pytest.fail("missing conformance/manifest.json; run python -m qlic_codec.conformance "
                    "generate")
    return conformance.read(FOLDER)


def test_the_streams_cover_what_they_must():
    entries = _entries()
    assert {e.model for e in entries} == set(zoo.BUNDLED)
    for model in zoo.BUNDLED:
        mine = [e for e in entries if e.model == model]
        sizes = {(e.width, e.height) for e in mine}
        assert (1, 1) in sizes and (128, 192) in sizes
        assert any(e.width * e.height > 2 * 10**6 for e in mine)
        assert any(not float(e.quality).is_integer() for e in mine)
    total = sum(p.stat().st_size for p in FOLDER.iterdir())
    assert total < 2 * 2**20


@pytest.mark.timeout(300)
def test_streams_decode_on_every_path(kernel_path):
    for entry in _entries():
        if entry.width * entry.height >= SMALL and entry.quality < 4:
            continue
        data = (FOLDER / entry.file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry.stream_sha256, entry.file
        raw = qlic_codec.decode(data, entry.model).tobytes()
        assert hashlib.md5(raw).hexdigest() == entry.pixels_md5, (entry.file, kernel_path)
        assert hashlib.sha256(raw).hexdigest() == entry.pixels_sha256, entry.file


@pytest.mark.timeout(300)
def test_streams_decode_in_small_bands(kernel_path, monkeypatch):
    # The band joins with every step of the shipped models' synthesis (a transposed
    # convolution and its inverse GDN as one step, the output layer with the pixel head,
    # cropped): bands of a few rows give the same pixels as the whole image.
    from qlic_codec.engine import bands
    monkeypatch.setattr(bands, "BAND_BYTES", 2**19)  # bands of 16 rows at 128x192
    for entry in _entries():
        if entry.width * entry.height < 5000 or entry.width * entry.height >= SMALL:
            continue
        raw = qlic_codec.decode((FOLDER / entry.file).read_bytes(), entry.model).tobytes()
        assert hashlib.md5(raw).hexdigest() == entry.pixels_md5, (entry.file, kernel_path)


def _copy(tmp_path, keep):
    """A copy of the conformance folder with the streams that ``keep`` accepts."""
    doc = json.loads((FOLDER / "manifest.json").read_text())
    doc["streams"] = [s for s in doc["streams"] if keep(s)]
    folder = tmp_path / "conformance"
    folder.mkdir()
    for stream in doc["streams"]:
        shutil.copyfile(FOLDER / stream["file"], folder / stream["file"])
    (folder / "manifest.json").write_text(json.dumps(doc))
    return folder, doc


def _small(stream):
    return stream["width"] * stream["height"] < SMALL


@pytest.mark.timeout(300)
def test_qlic_verify_passes_here(tmp_path):
    """The installed command, in its own process, as a packager runs it."""
    from qlic_codec.engine import kernels
    folder, doc = _copy(tmp_path, _small)
    env = {**os.environ, conformance.FOLDER_ENV: str(folder),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "qlic_codec.cli", "verify"], env=env,
                         capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    ok = [line for line in lines if line.startswith("OK ")]
    counts = {1, threads.limit()}
    assert len(ok) == len(doc["streams"]) * len(kernels.available_paths()) * len(counts)
    for path in kernels.available_paths():
        assert sum(f" {path} " in line for line in ok) == len(doc["streams"]) * len(counts)
    assert lines[-1].startswith("qlic verify: all match")


def _verify(folder, monkeypatch):
    monkeypatch.setenv(conformance.FOLDER_ENV, str(folder))
    return CliRunner().invoke(cli.main, ["verify"])


def _tiny(stream):
    return stream["width"] * stream["height"] < 2000 and stream["quality"] in (1, 8)


def test_damaged_stream_fails(tmp_path, monkeypatch):
    folder, doc = _copy(tmp_path, _tiny)
    target = folder / doc["streams"][0]["file"]
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x10
    target.write_bytes(bytes(data))
    result = _verify(folder, monkeypatch)
    assert result.exit_code == 1
    fails = [line for line in result.output.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1 and "stream damaged" in fails[0]
    assert "1 FAILED" in result.output.splitlines()[-1]


def test_wrong_digest_fails(tmp_path, monkeypatch):
    folder, doc = _copy(tmp_path, _tiny)
    doc["streams"][1]["pixels_md5"] = "0" * 32
    (folder / "manifest.json").write_text(json.dumps(doc))
    result = _verify(folder, monkeypatch)
    assert result.exit_code == 1
    fails = [line for line in result.output.splitlines() if line.startswith("FAIL")]
    assert fails and all(doc["streams"][1]["file"] in line and "pixels differ" in line
                         for line in fails)


@pytest.mark.parametrize("damage", ["no manifest", "not json", "missing stream",
                                    "other model id", "no model"])
def test_what_cannot_be_checked_fails_in_one_line(tmp_path, monkeypatch, damage):
    folder, doc = _copy(tmp_path, _tiny)
    if damage == "no manifest":
        (folder / "manifest.json").unlink()
    elif damage == "not json":
        (folder / "manifest.json").write_text('{"format": "qlic-conformance", "str')
    elif damage == "missing stream":
        (folder / doc["streams"][0]["file"]).unlink()
    elif damage == "other model id":
        doc["streams"][0]["model_id"] = "0123456789abcdef"
        (folder / "manifest.json").write_text(json.dumps(doc))
    else:
        monkeypatch.setattr(zoo, "model_dirs", lambda: [tmp_path / "nothing"])
    result = _verify(folder, monkeypatch)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    if damage == "missing stream":
        fails = [line for line in result.output.splitlines() if line.startswith("FAIL")]
        assert len(fails) == 1 and "missing" in fails[0]
    else:
        assert len(result.output.splitlines()) == 1
        assert result.output.startswith("qlic: error: ")


def test_verify_from_python(tmp_path):
    folder, doc = _copy(tmp_path, lambda s: s["width"] == 1 and s["height"] == 1)
    seen = []
    report = conformance.verify(folder, on_result=seen.append)
    assert report.ok and seen == report.results
    assert {r.path for r in report.results} == set(report.paths)
