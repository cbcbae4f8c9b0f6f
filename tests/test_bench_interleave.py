"""benchmarks/interleave.py: one range-coder stream against two interleaved ones, on the y
symbols of a real encode; both decode to the encoder's symbols (no timing asserted)."""

from pathlib import Path

import numpy as np
from PIL import Image

from conftest import GOLDEN, bench_module, synthetic_photo

interleave = bench_module("interleave")


def test_split_alternates_within_each_table():
    indexes = np.array([3, 1, 3, 3, 1, 0, 0, 3], np.int32)
    side = interleave.split_alternate(indexes, 4)
    for t in range(4):
        runs = side[indexes == t]
        assert list(runs) == [i & 1 for i in range(runs.size)]


def test_both_ways_decode_the_encoders_symbols(tmp_path: Path, capsys):
    image = synthetic_photo(96, 128, seed=3)
    symbols, indexes, tables = interleave.capture_y(image, 6, str(GOLDEN / "tiny-cc12.qlicm"))
    assert symbols.size == indexes.size > 0
    # A few values far outside every table: escapes are part of the sequences too.
    symbols = symbols.copy()
    symbols[::37] = 10_000
    r = interleave.measure(symbols, indexes, tables, repeat=1)  # raises if any symbol differs
    assert r["symbols"] == symbols.size and min(r["split"]) > 0
    assert r["two_bytes"] == sum(r["split"])

    Image.fromarray(image).save(tmp_path / "p.png")
    assert interleave.main(["--data", str(tmp_path), "--size", "128x96", "--model",
                            str(GOLDEN / "tiny-cc12.qlicm"), "--repeat", "1"]) == 0
    assert "two against one" in capsys.readouterr().out
