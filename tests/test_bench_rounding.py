"""The rounding benchmark (benchmarks/rounding.py): BD-rate of the rule per lambda, from
whole files, against the nearest symbols; it leaves the rule as it found it."""


import pytest
from PIL import Image

from conftest import bench_module, synthetic_photo


def test_rounding_sweep(tmp_path, capsys):
    from qlic_codec import rdoq
    module = bench_module("rounding")
    for seed in range(2):
        Image.fromarray(synthetic_photo(80, 96, seed)).save(tmp_path / f"p{seed}.png")
    before = dict(rdoq.LAMBDA)
    assert module.main(["--data", str(tmp_path), "--every", "1", "--lambdas", "0", "28"]) == 0
    assert rdoq.LAMBDA == before
    rows = [line.split() for line in capsys.readouterr().out.splitlines()
            if line.split() and line.split()[0] in ("0", "28")]
    bd = {int(r[0]): float(r[1].rstrip("%")) for r in rows}
    # Lambda 0 takes every step toward the mean that saves any bit: far worse than nearest.
    assert bd[0] > 5 and bd[28] < 0
    assert module.main(["--data", str(tmp_path / "none"), "--lambdas", "28"]) == 2
    assert module.main(["--data", str(tmp_path), "--every", "1", "--model",
                        str(tmp_path / "p0.png"), "--lambdas", "28"]) == 2
    for bad in (["--every", "0", "--lambdas", "28"], ["--lambdas", "-1"],
                ["--lambdas", str(module.LAMBDA_MAX + 1)]):
        with pytest.raises(SystemExit) as exit_info:
            module.main(["--data", str(tmp_path)] + bad)
        assert exit_info.value.code == 2
