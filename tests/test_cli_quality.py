"""``qlic encode -q 4.5``, ``--target-size`` and ``--target-bpp`` through the real command
line and the tiny model: what they write, report and refuse."""

import json

import pytest
from click.testing import CliRunner
from PIL import Image

import qlic_codec
from conftest import synthetic_photo
from qlic_codec.cli import main as cli_main


def run(args, code=0):
    result = CliRunner().invoke(cli_main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


@pytest.fixture
def photo(tmp_path):
    rgb = synthetic_photo(80, 120, seed=12)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    return rgb, tmp_path / "p.png"


def test_fractional_quality_is_written_and_reported(tiny_model, photo, tmp_path):
    rgb, src = photo
    out = run(["encode", src, "-o", tmp_path / "a.qlic", "-q", "4.5", "--model", tiny_model,
               "--json"])
    record = json.loads(out.stdout)
    assert record["quality"] == 4.5 and "target_bytes" not in record
    assert (tmp_path / "a.qlic").read_bytes() == qlic_codec.encode(rgb, 4.5, tiny_model)
    assert ", quality 4.5 (mse), " in run(["info", tmp_path / "a.qlic"]).stdout
    # Off the grid: the quality used is reported, not the one asked for.
    record = json.loads(run(["encode", src, "-o", tmp_path / "b.qlic", "-q", "4.53",
                             "--model", tiny_model, "--json"]).stdout)
    assert record["quality"] == 4.5
    record = json.loads(run(["encode", src, "-o", tmp_path / "c.qlic", "-q", "5.0",
                             "--model", tiny_model, "--json"]).stdout)
    assert record["quality"] == 5 and isinstance(record["quality"], int)


@pytest.mark.parametrize("option", ["--target-size", "--target-bpp"])
def test_targets_land_within_three_percent(tiny_model, photo, tmp_path, option):
    rgb, src = photo
    middle = len(qlic_codec.encode(rgb, 5, tiny_model)) + 7
    value = middle if option == "--target-size" else 8 * middle / rgb.shape[0] / rgb.shape[1]
    out = run(["encode", src, "-o", tmp_path / "t.qlic", option, value, "--model", tiny_model,
               "--json"])
    record = json.loads(out.stdout)
    size = (tmp_path / "t.qlic").stat().st_size
    assert record["bytes"] == size and record["target_met"] is True
    assert abs(size - middle) <= 0.03 * middle and "warning" not in out.stderr
    assert (tmp_path / "t.qlic").read_bytes() == qlic_codec.encode(rgb, record["quality"],
                                                                   tiny_model)


def test_size_suffixes(tiny_model, photo, tmp_path):
    _, src = photo
    record = json.loads(run(["encode", src, "-o", tmp_path / "k.qlic", "--target-size",
                             "1.2k", "--model", tiny_model, "--json"]).stdout)
    assert record["target_bytes"] == 1200


def test_a_target_out_of_reach_writes_the_nearest_file_with_a_warning(tiny_model, photo,
                                                                     tmp_path):
    rgb, src = photo
    out = run(["encode", src, "-o", tmp_path / "w.qlic", "--target-size", "10",
               "--model", tiny_model])
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"qlic: warning: {src}: the target of 10 "
                                                   "bytes is out of reach: the smallest file")
    assert (tmp_path / "w.qlic").read_bytes() == qlic_codec.encode(rgb, 1, tiny_model)


@pytest.mark.parametrize("args, message", [
    (["-q", "4", "--target-size", "5k"], "-q and --target-size exclude each other"),
    (["--target-size", "5k", "--target-bpp", "1"], "--target-size and --target-bpp exclude"),
    (["--target-size", "5x"], "'5x' is not a size"),
    (["--target-size", "0"], "less than one byte"),
    (["--target-bpp", "0"], "--target-bpp"),
    (["-q", "8.5"], "choose a number from 1 to 8"),
    (["-q", "0.5"], "choose a number from 1 to 8"),
    (["-q", "nan"], "choose a number from 1 to 8"),
    (["-q", "high"], "'high' is not a number"),
])
def test_usage_errors_write_nothing(tiny_model, photo, tmp_path, args, message):
    _, src = photo
    out = run(["encode", src, "-o", tmp_path / "u.qlic", "--model", tiny_model, *args],
              code=2)
    assert message in out.stderr
    assert not (tmp_path / "u.qlic").exists()


@pytest.mark.parametrize("kilobytes", [10, 25, 45])
def test_targets_land_within_three_percent_on_validation_photos(kilobytes):
    """The bundled MSE model on two validation photos (768x512) at three sizes: every file
    within 3% of its target (``quality.TOLERANCE``)."""
    import os
    from pathlib import Path

    import numpy as np
    from PIL import Image

    import qlic_codec
    root = Path(os.environ.get("QLIC_DATA") or
                Path(__file__).resolve().parents[2] / "shared" / "data") / "val"
    photos = sorted(root.glob("*.png"))[:2] if root.is_dir() else []
    if len(photos) < 2:
        pytest.skip(f"no validation photos in {root}")
    for path in photos:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        result = qlic_codec.encode_to_target(rgb, target_size=kilobytes * 1000, model="mse")
        assert result.met, (path.name, len(result.data))
        assert abs(len(result.data) - kilobytes * 1000) <= 0.03 * kilobytes * 1000
        assert qlic_codec.decode(result.data).shape == rgb.shape
