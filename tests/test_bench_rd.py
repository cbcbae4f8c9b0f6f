"""The rate-distortion benchmark's per-codec results (benchmarks/rd.py): one JSON file per codec
and model, under the data set's name, with every per-image point and the averaged curve."""

import json

import pytest
from PIL import Image

from conftest import bench_module, synthetic_photo

pytest.importorskip("torch")  # MS-SSIM is computed with the training metrics


def _rd():
    return bench_module("rd")


def test_rd_writes_one_file_per_codec(tiny_model, tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    for seed in range(3):
        Image.fromarray(synthetic_photo(176, 192, seed)).save(data / f"p{seed}.png")
    rd = _rd()
    out = tmp_path / "out"
    args = ["--data", str(data), "--model", tiny_model, "--codecs", "qlic", "jpeg",
            "--limit", "2", "--levels", "1", "8", "--out", str(out)]
    assert rd.main(args) == 0
    # Two of three photos and two of eight levels: a partial run, kept apart.
    folder = out / "photos.partial"
    assert sorted(p.name for p in folder.iterdir()) == ["jpeg.json", "qlic-tiny-mse.json"]
    qlic = json.loads((folder / "qlic-tiny-mse.json").read_text())
    assert qlic["codec"] == "qlic" and qlic["dataset"] == "photos"
    assert qlic["command"].startswith("python benchmarks/rd.py --data ")
    assert [i["name"] for i in qlic["images"]] == ["p0.png", "p1.png"]
    assert sorted((p["image"], p["setting"]) for p in qlic["points"]) == [
        ("p0.png", 1), ("p0.png", 8), ("p1.png", 1), ("p1.png", 8)]
    for p in qlic["points"]:
        assert p["bytes"] > 0 and p["bpp"] > 0 and p["psnr"] > 0 and 0 < p["ms_ssim"] <= 1
    assert [row["setting"] for row in qlic["curve"]] == [1, 8]
    assert all(row["images"] == 2 for row in qlic["curve"])
    mean = sum(p["bpp"] for p in qlic["points"] if p["setting"] == 8) / 2
    assert qlic["curve"][1]["bpp"] == pytest.approx(mean)
    jpeg = json.loads((folder / "jpeg.json").read_text())
    assert len(jpeg["points"]) == 2 * len(rd.JPEG_Q) and jpeg["codec"] == "jpeg"

    # The whole folder at every level: written under the data set's own name.
    assert rd.main(["--data", str(data), "--model", tiny_model, "--codecs", "qlic",
                    "--out", str(out)]) == 0
    whole = json.loads((out / "photos" / "qlic-tiny-mse.json").read_text())
    assert len(whole["points"]) == 3 * 8


def test_rd_nearest_symbols_are_a_partial_run_with_more_bytes(tmp_path):
    """``--rounding nearest`` measures the codec without the encoder's rounding rule: its
    files are larger (the bundled MSE model: the tiny one's tables are too flat for the rule
    to move anything), and a whole run so made never takes the committed results' place."""
    from qlic_codec import rdoq
    data = tmp_path / "photos"
    data.mkdir()
    Image.fromarray(synthetic_photo(176, 192, 4)).save(data / "p.png")
    rd = _rd()
    sizes = {}
    for rounding in ("rd", "nearest"):
        out = tmp_path / rounding
        saved = dict(rdoq.LAMBDA)
        try:
            assert rd.main(["--data", str(data), "--model", "mse", "--codecs", "qlic",
                            "--out", str(out), "--rounding", rounding]) == 0
        finally:
            rdoq.LAMBDA.update(saved)
        folder = out / ("photos" if rounding == "rd" else "photos.partial")
        qlic = json.loads((folder / "qlic-mse.json").read_text())
        sizes[rounding] = sum(p["bytes"] for p in qlic["points"])
        assert json.loads((out / "rd.json").read_text())["meta"]["codecs"]["qlic"][
            "rounding"] == rounding
    assert sizes["rd"] < sizes["nearest"]
