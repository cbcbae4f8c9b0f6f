"""benchmarks/threads.py: whole decodes in fresh processes taking turns, one thread against
several (the measurement, not its figures, is under test; the child's decodes run in this
process here, so that the test does not wait for new processes to load the kernels)."""

import numpy as np
import pytest

from conftest import bench_module, synthetic_photo

threads = bench_module("threads")


def test_summary_of_the_pairs():
    s = threads.summary([2.0, 3.0, 2.2], [1.0, 2.0, 1.0])
    assert s["ratios"] == [2.0, 1.5, 2.2]
    assert s["median"] == 2.0
    assert s["fastest"] == 2.0


def test_a_child_decodes_the_file_on_the_threads_it_is_given(tmp_path, monkeypatch):
    import numba
    from qlic_codec import api
    path = tmp_path / "a.qlic"
    path.write_bytes(api.encode(synthetic_photo(64, 96, 1), quality=3))
    seen = []
    decode = api.decode

    def watched(data):
        seen.append(numba.get_num_threads())
        return decode(data)

    monkeypatch.setattr(api, "decode", watched)
    before = numba.get_num_threads()
    try:
        seconds = threads.child(str(path), 1, 3, kept_memory=False)
    finally:
        numba.set_num_threads(before)
    assert seconds > 0
    assert seen == [1] * 4  # a warm-up, then the decodes timed


def test_pairs_take_turns_and_report_the_median(monkeypatch, capsys):
    calls = []

    def fake(path, n, repeat, kept_memory):
        calls.append((n, repeat, kept_memory))
        return {1: 0.2, 2: 0.1}[n] * (1 + 0.01 * len(calls))

    monkeypatch.setattr(threads, "run_child", fake)
    threads.main(["--size", "96x64", "--pairs", "2", "--repeat", "3", "--kept-memory"])
    assert calls == [(1, 3, True), (2, 3, True)] * 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("96x64, quality 4") and "freed memory kept" in lines[0]
    assert [line.split()[0] for line in lines[2:4]] == ["1", "2"]
    ratios = [float(line.split()[-1]) for line in lines[2:4]]
    assert np.allclose(ratios, [0.2 * 1.01 / (0.1 * 1.02), 0.2 * 1.03 / (0.1 * 1.04)], atol=0.006)
    assert lines[-1].startswith("median of the pairs' ratios")


def test_refuses_one_thread():
    with pytest.raises(SystemExit):
        threads.main(["--threads", "1"])
