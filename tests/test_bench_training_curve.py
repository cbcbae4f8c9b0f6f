"""benchmarks/training_curve.py reads a run's losses.csv: PSNR or MS-SSIM, per validation set."""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import training_curve  # noqa: E402


def _rows():
    rows = []
    for step, shift in ((0, 0.0), (500, 0.5)):  # step 500: 0.5 dB better at every rate
        for split in ("train", "val", "val-wide"):
            for level in range(1, 5):
                psnr = 25.0 + 2 * level + shift
                ms = 1 - 10 ** (-(10.0 + level + shift) / 10)
                rows.append({"step": str(step), "split": split, "level": str(level),
                             "bpp": str(0.1 * 2 ** level), "psnr": str(psnr),
                             "ms_ssim": str(ms)})
    return rows


def test_curves_take_psnr_or_msssim_in_decibels_and_skip_training_rows():
    psnr = training_curve.curves(_rows(), "psnr")
    ms = training_curve.curves(_rows(), "ms_ssim")
    assert sorted(psnr) == sorted(ms) == ["val", "val-wide"]
    assert psnr["val"][1][1][0] == (0.2, 27.5)
    step, points = ms["val-wide"][1]
    assert step == 500 and math.isclose(points[0][1], 11.5)


def test_a_better_step_has_a_negative_bd_rate(capsys, tmp_path):
    import csv
    path, rows = tmp_path / "losses.csv", _rows()
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for metric in ("psnr", "ms-ssim"):
        training_curve.main([str(path), "--metric", metric])
        last = capsys.readouterr().out.strip().splitlines()[-1]
        cells = [c.strip() for c in last.strip("|").split("|")]
        assert cells[0] == "500" and all(float(c.rstrip("%")) < -5 for c in cells[1:])
