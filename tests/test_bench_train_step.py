"""benchmarks/train_step.py: a training step timed under each allocator policy, on a small
untrained model and synthetic photos (the measurement, not its figures, is under test)."""

import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from conftest import bench_module, synthetic_photo  # noqa: E402
from qlic_codec.train.checkpoint import save_float_model  # noqa: E402
from qlic_codec.train.model import MSE_LAMBDAS, MeanScaleHyperprior  # noqa: E402

train_step = bench_module("train_step")


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    model = MeanScaleHyperprior(8, 12, len(MSE_LAMBDAS))
    checkpoint = tmp_path / "tiny.pt"
    save_float_model(model, checkpoint, {"metric": "mse", "lambdas": list(MSE_LAMBDAS)})
    (tmp_path / "data" / "train").mkdir(parents=True)
    for seed in (1, 2):
        Image.fromarray(synthetic_photo(96, 96, seed=seed)).save(
            tmp_path / "data" / "train" / f"p{seed}.png")
    return checkpoint, tmp_path / "data"


def test_steps_are_timed_and_the_model_trains(setup):
    checkpoint, data = setup
    # In this process only without the policy: it cannot be undone here.
    got = train_step.time_steps(str(checkpoint), str(data), "mse", 64, 2, 2, 1, 1, keep=False)
    assert got["keep"] is False and got["applied"] is False
    assert len(got["seconds"]) == 2 and all(s > 0 for s in got["seconds"])


def test_each_policy_runs_in_its_own_process(setup, capsys):
    checkpoint, data = setup
    assert train_step.main(["--float", str(checkpoint), "--data", str(data), "--crop", "64",
                            "--batch", "2", "--steps", "1", "--warmup", "0",
                            "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "the C library's default" in out and "training's policy" in out
    assert "kept against default:" in out
