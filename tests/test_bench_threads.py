"""benchmarks/threads.py: whole decodes in fresh processes taking turns, one thread against
several (the measurement, not its figures, is under test)."""

import pytest

from conftest import bench_module

threads = bench_module("threads")


def test_summary_of_the_pairs():
    s = threads.summary([2.0, 3.0, 2.2], [1.0, 2.0, 1.0])
    assert s["ratios"] == [2.0, 1.5, 2.2]
    assert s["median"] == 2.0
    assert s["fastest"] == 2.0


def test_one_pair_at_a_small_size(capsys):
    threads.main(["--size", "96x64", "--pairs", "1", "--repeat", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("96x64, quality 4") and "allocator" in lines[0]
    pair = lines[2].split()
    assert pair[0] == "1" and float(pair[1]) > 0 and float(pair[2]) > 0
    assert lines[-1].startswith("median of the pairs' ratios")


def test_refuses_one_thread():
    with pytest.raises(SystemExit):
        threads.main(["--threads", "1"])


def test_the_command_lines_allocator_policy(capsys):
    threads.main(["--size", "64x64", "--pairs", "1", "--repeat", "1", "--kept-memory"])
    assert "freed memory kept" in capsys.readouterr().out.splitlines()[0]
