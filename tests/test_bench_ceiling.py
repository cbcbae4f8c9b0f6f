"""benchmarks/ceiling.py: the quality of the unquantized autoencoder against the top level,
on a small untrained model (the measurement, not its figures, is under test)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from conftest import bench_module, synthetic_photo  # noqa: E402
from qlic_codec.train.checkpoint import save_float_model  # noqa: E402
from qlic_codec.train.metrics import psnr  # noqa: E402
from qlic_codec.train.model import MeanScaleHyperprior  # noqa: E402

ceiling = bench_module("ceiling")


def _model():
    torch.manual_seed(0)
    return MeanScaleHyperprior(8, 12, 3).eval()


def _psnr_of(model, image, run):
    x = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        x_hat = run(model, x).clamp(0, 1)
    return psnr(torch.round(x_hat * 255) / 255, x).item()


def test_ceiling_is_the_unrounded_autoencoder_and_top_the_forward_pass():
    model = _model()
    images = [synthetic_photo(64, 128, seed=s) for s in (1, 2)]
    row = ceiling.ceiling_rows(model, images, 2)
    assert row["images"] == 2
    expect_ceiling = np.mean([_psnr_of(model, im, lambda m, x: m.g_s(m.g_a(x))) for im in images])
    expect_top = np.mean([_psnr_of(model, im, lambda m, x: m(x, torch.tensor([2.0]))["x_hat"])
                          for im in images])
    assert row["ceiling"] == pytest.approx(expect_ceiling, abs=1e-9)
    assert row["top"] == pytest.approx(expect_top, abs=1e-9)


def test_the_top_level_meets_the_ceiling_as_its_step_vanishes_and_only_it_moves():
    model = _model()
    with torch.no_grad():  # a latent large enough that its rounding shows in the pixels
        model.g_a[-1].weight *= 20
        model.g_s[-1].bias.fill_(0.5)
    images = [synthetic_photo(64, 64, seed=3)]
    base = ceiling.ceiling_rows(model, images, 2)
    rows = {}
    for shift in (-4.0, 10.0):  # a step 55x coarser, and 22,000x finer
        with torch.no_grad():
            model.log_gain[2] += shift
        rows[shift] = ceiling.ceiling_rows(model, images, 2)
        with torch.no_grad():
            model.log_gain[2] -= shift
    assert rows[-4.0]["ceiling"] == rows[10.0]["ceiling"] == base["ceiling"]
    assert rows[10.0]["top"] == pytest.approx(base["ceiling"], abs=1e-4)
    assert abs(rows[-4.0]["top"] - base["ceiling"]) > 0.005


def test_command_line(tmp_path, capsys):
    from PIL import Image
    ckpt = tmp_path / "m.pt"
    save_float_model(_model(), ckpt, {"lambdas": [0.01, 0.02, 0.04], "metric": "mse",
                                      "steps": 1234})
    for name in ("val", "wide"):
        (tmp_path / name).mkdir()
        Image.fromarray(synthetic_photo(64, 96, seed=len(name))).save(tmp_path / name / "a.png")
    out = tmp_path / "rows.json"
    assert ceiling.main([str(ckpt), "--labels", "tiny", "--data", str(tmp_path), "--sets",
                         "val", "wide", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "tiny" in text and "1,234" in text
    rows = json.loads(out.read_text())
    assert [(r["model"], r["set"], r["steps"]) for r in rows] == [("tiny", "val", 1234),
                                                                  ("tiny", "wide", 1234)]
    assert all(np.isfinite(r["ceiling"]) and np.isfinite(r["top"]) for r in rows)


def test_labels_must_match_the_checkpoints(tmp_path):
    with pytest.raises(SystemExit):
        ceiling.main(["a.pt", "b.pt", "--labels", "one", "--data", str(tmp_path)])


def test_a_latent_fitted_to_the_synthesis_does_at_least_as_well_as_the_analysis():
    model = _model()
    images = [synthetic_photo(128, 96, seed=4)]
    row = ceiling.fitted_latent_rows(model, images, 30, 64)
    assert row["images"] == 1
    # The crop's ceiling is the unrounded autoencoder on the centre 64x64.
    x = images[0][32:96, 16:80]
    assert row["crop_ceiling"] == pytest.approx(
        _psnr_of(model, x, lambda m, t: m.g_s(m.g_a(t))), abs=1e-9)
    assert row["fitted"] > row["crop_ceiling"]
