"""benchmarks/training_curve.py reads a run's losses.csv: PSNR or MS-SSIM, per validation set."""

import math

from conftest import bench_module

training_curve = bench_module("training_curve")


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


def _write(path, rows):
    import csv
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_several_files_are_series_against_the_first_files_first_validation(capsys, tmp_path):
    """A second file (an annealed copy, say) is measured against the first file's first
    validation, not against its own first row; the plot has one panel per validation set."""
    first = _write(tmp_path / "a.csv", _rows())
    better = [dict(r, step=str(int(r["step"]) + 1000), psnr=str(float(r["psnr"]) + 1.0))
              for r in _rows()]
    second = _write(tmp_path / "b.csv", better)
    import importlib.util
    # matplotlib is in the bench extra, not in dev: plot only where it is installed.
    plot = tmp_path / "curve.png" if importlib.util.find_spec("matplotlib") else None
    training_curve.main([str(first), str(second), "--labels", "campaign", "anneal"]
                        + (["--plot", str(plot)] if plot else []))
    out = capsys.readouterr().out
    anneal = out[out.index("anneal"):].strip().splitlines()
    rows = {line.split("|")[1].strip(): [float(c.strip().rstrip("%"))
                                         for c in line.strip("|").split("|")[1:]]
            for line in anneal if line.startswith("| 1")}
    # Step 1000 of the second file is 1 dB above the reference, step 1500 1.5 dB.
    assert all(v < -10 for v in rows["1000"]) and all(v < w for v, w in zip(rows["1500"],
                                                                            rows["1000"]))
    assert plot is None or plot.stat().st_size > 0


def test_labels_must_match_the_files(tmp_path):
    import pytest
    path = _write(tmp_path / "a.csv", _rows())
    with pytest.raises(SystemExit) as exc:
        training_curve.main([str(path), str(path), "--labels", "one"])
    assert exc.value.code == 2
