"""benchmarks/latent_weights.py: the pixel cost of a unit of latent error per channel and
level, on a small untrained model (the measurement, not its figures, is under test)."""


import numpy as np
import pytest

torch = pytest.importorskip("torch")
from conftest import bench_module, synthetic_photo  # noqa: E402
from qlic_codec.train.checkpoint import save_float_model  # noqa: E402
from qlic_codec.train.model import MeanScaleHyperprior  # noqa: E402

latent_weights = bench_module("latent_weights")


def _model():
    torch.manual_seed(0)
    return MeanScaleHyperprior(8, 12, 3).eval()


def _images():
    return [synthetic_photo(128, 128, seed=s) / 255.0 for s in (1, 2)]


def test_a_channel_whose_synthesis_weights_double_costs_four_times_as_much():
    model = _model()
    before = latent_weights.unit_distortion(model, _images())
    assert before.shape == (12,) and np.all(before > 0)
    with torch.no_grad():
        model.g_s[0].weight[3] *= 2  # the first transposed convolution reads channel 3 here
    after = latent_weights.unit_distortion(model, _images())
    assert after[3] / before[3] > 3.0  # the synthesis is not linear: about, not exactly, 4
    others = np.delete(np.arange(12), 3)
    # ... and the others about the same (channel 3 moved the point the synthesis runs at)
    assert np.allclose(after[others], before[others], rtol=0.02)


def test_table_divides_by_the_squared_gains_and_scales_by_lambda():
    J = np.array([1.0, 2.0, 4.0, 8.0])
    gains = np.array([[1.0, 1.0, 2.0, 2.0], [2.0, 2.0, 2.0, 2.0]])
    rows = latent_weights.table(J, gains, [10.0, 100.0])
    # level 1: J / gain^2 = 1, 2, 1, 2 (median 1.5); level 2: 0.25, 0.5, 1, 2 (median 0.75)
    assert rows[0]["lambda_x_median"] == pytest.approx(15.0)
    assert rows[1]["lambda_x_median"] == pytest.approx(75.0)
    assert rows[0]["spread"][0] == pytest.approx(1 / 1.5, rel=0.05)


def test_command_line(tmp_path, capsys):
    from PIL import Image
    ckpt = tmp_path / "m.pt"
    save_float_model(_model(), ckpt, {"lambdas": [0.01, 0.02, 0.04], "metric": "mse"})
    data = tmp_path / "photos"
    data.mkdir()
    for s in range(3):
        Image.fromarray(synthetic_photo(128, 128, seed=s)).save(data / f"{s}.png")
    latent_weights.main(["--float", str(ckpt), "--data", str(data), "--every", "1",
                         "--crop", "128"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("3 crops of 128x128") and len(lines) == 2 + 3
    with pytest.raises(SystemExit) as exc:
        latent_weights.main(["--float", str(tmp_path / "missing.pt"), "--data", str(data)])
    assert exc.value.code == 2
