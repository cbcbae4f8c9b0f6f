"""`qlic batch encode|decode` on a Dask cluster: one LocalCluster of two worker processes for
the module, reached by its scheduler address as a remote one would be; the real codec with
the tiny model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

import qlic_codec
from conftest import synthetic_photo
from qlic_codec import cli


def qlic(*args: str, exit_code: int) -> Result:
    result = CliRunner().invoke(cli.main, list(args))
    assert result.exit_code == exit_code, (result.exit_code, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    return result


def records(result: Result) -> dict[str, dict]:
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return {Path(r["input"]).name: r for r in lines}


@pytest.fixture(scope="module")
def scheduler() -> str:
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def photos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "photos"
    for i, name in enumerate(["a.png", "trip/b.png", "trip/day1/c.jpg"]):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic_photo(40 + 8 * i, 48, seed=i)).save(root / name)
    (root / "trip" / "notes.txt").write_text("not an image")
    return root


def test_encode_resume_and_decode_on_a_cluster(photos, scheduler, tiny_model, tmp_path):
    result = qlic("batch", "encode", "photos", "-o", "out", "-q", "3", "--model", tiny_model,
                  "--scheduler", scheduler, exit_code=0)
    # The workers run in another folder: the paths they get, and the lines show, are absolute.
    assert result.stderr == f"qlic: note: {photos}/trip/notes.txt: skipped, not an image\n"
    done = records(result)
    assert sorted(done) == ["a.png", "b.png", "c.jpg"]
    assert {r["status"] for r in done.values()} == {"done"}
    assert done["c.jpg"]["output"] == str(tmp_path / "out" / "trip" / "day1" / "c.qlic")
    for record in done.values():
        rgb = np.asarray(Image.open(record["input"]).convert("RGB"))
        assert Path(record["output"]).read_bytes() == qlic_codec.encode(rgb, 3, tiny_model)

    # Run again: every output exists, nothing is redone.
    again = qlic("batch", "encode", "photos", "-o", "out", "-q", "3", "--model", tiny_model,
                 "--scheduler", scheduler, "--quiet", exit_code=0)
    assert again.stderr == ""
    assert {r["status"] for r in records(again).values()} == {"skipped"}

    back = qlic("batch", "decode", "out", "-o", "png", "--model", tiny_model,
                "--scheduler", scheduler, exit_code=0)
    assert {r["status"] for r in records(back).values()} == {"done"}
    for record in records(back).values():
        expected = qlic_codec.decode(Path(record["input"]).read_bytes(), tiny_model)
        np.testing.assert_array_equal(np.asarray(Image.open(record["output"])), expected)
    assert sorted(p.relative_to(tmp_path / "png").as_posix()
                  for p in (tmp_path / "png").rglob("*.png")) == [
        "a.png", "trip/b.png", "trip/day1/c.png"]


def test_a_failed_file_exits_1_with_one_line(photos, scheduler, tiny_model, tmp_path):
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    result = qlic("batch", "encode", "photos", "-o", "out", "--model", tiny_model,
                  "--scheduler", scheduler, "--quiet", "--threads", "1", exit_code=1)
    lines = records(result)
    assert lines["broken.png"]["status"] == "failed"
    assert sum(r["status"] == "done" for r in lines.values()) == 3
    assert result.stderr.splitlines() == [
        f"qlic: error: {photos}/broken.png: {lines['broken.png']['error']}"]
    assert not (tmp_path / "out" / "broken.qlic").exists()


def test_usage_errors_are_one_line_and_exit_2(photos, monkeypatch):
    result = qlic("batch", "encode", "photos", "-o", "out", "--scheduler", "tcp://localhost",
                  exit_code=2)
    assert result.stderr.splitlines() == [
        "qlic: error: --scheduler 'tcp://localhost': missing port number in address "
        "'localhost'"]
    (photos / "a.jpg").write_bytes((photos / "a.png").read_bytes())
    result = qlic("batch", "encode", "photos", "-o", "out", exit_code=2)
    assert result.stderr.splitlines() == [
        f"qlic: error: two inputs would write the same output {Path.cwd()}/out/a.qlic"]
    # Without Dask (the distributed extra not installed).
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    result = qlic("batch", "decode", "photos", "-o", "out", exit_code=2)
    assert result.stderr.splitlines() == [
        'qlic: error: qlic batch needs Dask: pip install "qlic[distributed]"']
    assert not Path("out").exists()


def test_size_target_and_strip_on_a_cluster(photos, scheduler, tiny_model, tmp_path):
    """--target-size as with qlic encode (each line says the quality chosen and whether the
    file is within 3%), --strip drops the ICC profile, and -q with a target is a usage
    error."""
    icc = b"\x00fake icc profile" * 8
    Image.fromarray(synthetic_photo(64, 80, seed=9)).save(photos / "a.png", icc_profile=icc)
    whole = len(qlic_codec.encode(synthetic_photo(64, 80, seed=9), 6, tiny_model))
    result = qlic("batch", "encode", "photos/a.png", "-o", "out", "--target-size", str(whole),
                  "--strip", "--model", tiny_model, "--scheduler", scheduler, exit_code=0)
    line = records(result)["a.png"]
    assert line["status"] == "done" and line["target_bytes"] == whole
    assert line["target_met"] and abs(line["bytes"] - whole) <= 0.03 * whole
    info = qlic_codec.read_info((tmp_path / "out" / "a.qlic").read_bytes())
    assert info["quality"] == line["quality"]
    kept = qlic("batch", "encode", "photos/a.png", "-o", "kept", "-q", "4", "--model",
                tiny_model, "--scheduler", scheduler, exit_code=0)
    assert records(kept)["a.png"]["status"] == "done"
    _, meta = qlic_codec.decode_with_metadata((tmp_path / "kept" / "a.qlic").read_bytes(),
                                              model=tiny_model)
    assert meta.icc == icc
    _, meta = qlic_codec.decode_with_metadata((tmp_path / "out" / "a.qlic").read_bytes(),
                                              model=tiny_model)
    assert meta.icc is None
    error = qlic("batch", "encode", "photos", "-o", "x", "-q", "4", "--target-bpp", "1",
                 exit_code=2)
    assert "exclude each other" in error.stderr
