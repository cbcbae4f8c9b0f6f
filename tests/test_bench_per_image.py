"""benchmarks/per_image.py: BD-rate photo by photo, by group and below / above a quality,
from rd.py's per-codec results files."""

import json
import math

import numpy as np
import pytest

pytest.importorskip("scipy")
from conftest import bench_module  # noqa: E402

per_image = bench_module("per_image")
bd_rate = bench_module("bdrate").bd_rate

PSNR = np.linspace(26.0, 38.0, 7)


def _results(codec, factors):
    """A results file whose photo ``name`` needs ``factor`` times the anchor's rate at every
    quality (a factor may be a function of the PSNR)."""
    points = []
    for name, factor in factors.items():
        for s, q in enumerate(PSNR):
            f = factor(q) if callable(factor) else factor
            points.append({"image": name, "setting": s, "bpp": 0.02 * 2 ** (q / 6) * f,
                           "psnr": float(q), "ms_ssim": 1 - 10 ** (-q / 20)})
    return {"codec": codec, "points": points}


def test_rows_per_photo_per_group_and_for_the_set():
    names = ["city_a.png", "city_b.png", "film_a.png"]
    anchor = _results("webp", {n: 1.0 for n in names})
    test = _results("qlic", {"city_a.png": 1.5, "city_b.png": 1.2, "film_a.png": 0.8})
    rows = {r["name"]: r["bd"]["webp"]["all"] for r in per_image.table(test, {"webp": anchor},
                                                                      "psnr", None)}
    assert rows["city_a.png"] == pytest.approx(50.0, abs=1e-6)
    assert rows["film_a.png"] == pytest.approx(-20.0, abs=1e-6)
    assert set(rows) == set(names) | {"city (2)", "film (1)", "all (3)"}
    # A group's row is the BD-rate of its mean curve, as rd.py averages a whole set.
    t = per_image.curves(test, "psnr")
    a = per_image.curves(anchor, "psnr")
    city = ["city_a.png", "city_b.png"]
    expect = bd_rate(*per_image.mean_curve(a, city, "psnr"),
                     *per_image.mean_curve(t, city, "psnr"))
    assert rows["city (2)"] == pytest.approx(expect, abs=1e-9)
    assert 20.0 < rows["city (2)"] < 50.0


def test_split_below_and_above_a_quality():
    anchor = _results("hevc444", {"x_1.png": 1.0})
    # Twice the rate above 32 dB, the same below (a step there: the parts show it; the
    # interpolation's slope at the 32 dB point feels the step a little).
    test = _results("qlic", {"x_1.png": lambda q: 2.0 if q > 32 else 1.0})
    row = per_image.table(test, {"hevc444": anchor}, "psnr", 32.0)[0]["bd"]["hevc444"]
    assert row["below"] == pytest.approx(0.0, abs=1.0)
    assert row["above"] > 50.0
    assert 0.0 < row["all"] < row["above"]


def test_ms_ssim_is_averaged_then_compared_in_db_as_rd_does():
    anchor = _results("webp", {"a_1.png": 1.0, "b_1.png": 1.0})
    test = _results("qlic", {"a_1.png": 0.5, "b_1.png": 0.5})
    row = per_image.table(test, {"webp": anchor}, "ms-ssim", None)[-1]
    assert row["bd"]["webp"]["all"] == pytest.approx(-50.0, abs=1e-6)
    # Two photos a setting apart in quality: the set's curve is the dB of the mean MS-SSIM,
    # not the mean of the dBs.
    t = per_image.curves(test, "ms-ssim")
    bpp, db = per_image.mean_curve({"a": t["a_1.png"], "b": {s: t["b_1.png"][s + 1]
                                                            for s in range(6)}}, ["a", "b"],
                                   "ms-ssim")
    ms = [(1 - 10 ** (-q / 20) + 1 - 10 ** (-r / 20)) / 2 for q, r in zip(PSNR, PSNR[1:])]
    assert db == pytest.approx([-10 * math.log10(1 - m) for m in ms], abs=1e-9)


def test_command_line(tmp_path, capsys):
    test, anchor = tmp_path / "qlic-mse.json", tmp_path / "webp.json"
    test.write_text(json.dumps(_results("qlic", {"a_1.png": 1.1, "b_1.png": 0.9})))
    anchor.write_text(json.dumps(_results("webp", {"a_1.png": 1.0, "b_1.png": 1.0})))
    assert per_image.main([str(test), str(anchor), "--split", "40"]) == 0
    out = capsys.readouterr().out
    assert "qlic-mse" in out and "webp below" in out
    line = next(s for s in out.splitlines() if s.startswith("a_1.png"))
    assert "+10.0%" in line and "n/a" in line  # nothing above 40 dB: no part to compare
    assert not math.isnan(per_image.table(json.loads(test.read_text()),
                                          {"webp": json.loads(anchor.read_text())},
                                          "psnr", None)[-1]["bd"]["webp"]["all"])


def _with_bytes(results, pixels):
    """``results`` with each point's file size for photos of ``pixels`` pixels."""
    out = {**results, "images": [{"name": n, "width": pixels, "height": 1}
                                 for n in {p["image"] for p in results["points"]}]}
    out["points"] = [{**p, "bytes": p["bpp"] * pixels / 8} for p in results["points"]]
    return out


def test_fewer_bytes_per_file_is_a_smaller_container():
    pixels = 100_000
    anchor = _results("float", {"a.png": 1.0})
    # The test codec: the anchor's rate plus 50 bytes of container per file.
    test = _with_bytes(_results("qlic", {"a.png": 1.0}), pixels)
    for p in test["points"]:
        p["bytes"] += 50
        p["bpp"] = p["bytes"] * 8 / pixels

    def bd(less):
        rows = per_image.table(test, {"float": anchor}, "psnr", None, less_bytes=less)
        return rows[-1]["bd"]["float"]["all"]
    assert bd(0) > 0.3
    assert bd(50) == pytest.approx(0.0, abs=1e-6)
    assert 0 < bd(25) < bd(0)


def test_taking_bytes_needs_file_sizes():
    test = _results("qlic", {"a.png": 1.0})
    with pytest.raises(ValueError, match="no file sizes"):
        per_image.table(test, {"float": test}, "psnr", None, less_bytes=10)
