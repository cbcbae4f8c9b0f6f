"""benchmarks/z_steps.py: the steps of z learned with every other weight frozen, on a small
untrained model (the measurement, not its figures, is under test)."""

import pytest

torch = pytest.importorskip("torch")
from conftest import bench_module, synthetic_photo  # noqa: E402
from qlic_codec.train.checkpoint import save_float_model  # noqa: E402
from qlic_codec.train.slices import ChannelConditionalHyperprior  # noqa: E402

z_steps = bench_module("z_steps")


def _model():
    torch.manual_seed(0)
    return ChannelConditionalHyperprior(8, 12, 3, slices=(4, 4, 4), hidden=6).eval()


def test_only_the_steps_train():
    base = _model()
    model = z_steps.with_z_steps(base)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["log_z_step"]
    assert float(model.log_z_step.detach().abs().sum()) == 0


def test_command_line(tmp_path, capsys):
    from PIL import Image
    ckpt = tmp_path / "m.pt"
    base = _model()
    save_float_model(base, ckpt, {"lambdas": [0.01, 0.02, 0.04], "metric": "mse"})
    for name in ("train", "val"):
        (tmp_path / name).mkdir()
        for s in range(2):
            Image.fromarray(synthetic_photo(192, 192, seed=s)).save(tmp_path / name / f"{s}.png")
    z_steps.main([str(ckpt), "--data", str(tmp_path), "--steps", "3", "--batch", "2",
                  "--crop", "64", "--sets", "val", "--lr", "0.1"])
    out = capsys.readouterr().out
    assert "val: PSNR BD-rate" in out
    assert out.count("  level ") == 3
    # The weights were not touched: a second run from the same file starts from them.
    again, _ = z_steps.load_float_model(ckpt)
    assert not getattr(again, "z_steps", False)


def test_a_model_with_steps_is_refused(tmp_path):
    model = z_steps.with_z_steps(_model())
    save_float_model(model, tmp_path / "m.pt", {"lambdas": [0.01, 0.02, 0.04]})
    with pytest.raises(SystemExit):
        z_steps.main([str(tmp_path / "m.pt"), "--data", str(tmp_path)])
