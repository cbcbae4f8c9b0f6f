"""The allocator policy (``qlic_codec.allocator``): on glibc, a large array comes from the
heap instead of its own ``mmap``, ``QLIC_MALLOC=system`` leaves the default, and the command
line, its workers, training and the fine-tune apply it. Each check runs in a child process,
so the test process keeps its own allocator as it was."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mallinfo
import pytest

from qlic_codec import allocator

TESTS = Path(__file__).resolve().parent
_PROBE = textwrap.dedent(f"""
    import json, sys
    sys.path.insert(0, {str(TESTS)!r})
    import mallinfo
    from qlic_codec import allocator
    applied = allocator.keep_freed_memory()
    print(json.dumps({{"applied": applied, "mapped": mallinfo.mapped_by_a_large_array()}}))
""")


def _probe(**env):
    import json
    run = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.skipif(not mallinfo.available(), reason="needs glibc 2.33 or later")
def test_large_arrays_come_from_the_heap_unless_turned_off():
    tuned = _probe()
    assert tuned["applied"] is True and tuned["mapped"] == 0
    default = _probe(QLIC_MALLOC="system")
    assert default["applied"] is False and default["mapped"] >= 64 << 20


def test_turned_off_or_elsewhere_it_does_nothing(monkeypatch):
    assert allocator.keep_freed_memory({"QLIC_MALLOC": "System "}) is False
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory({}) is False


def test_the_command_line_and_its_workers_apply_it(monkeypatch):
    from click.testing import CliRunner

    from qlic_codec import cli, workers
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    result = CliRunner().invoke(cli.main, ["info", os.devnull])
    assert calls, result.output
    calls.clear()
    # The worker's start-up also sets signal handlers and the kernels' threads: patched, so
    # that this process keeps its own.
    monkeypatch.setattr(workers.signal, "signal", lambda *args: None)
    monkeypatch.setattr(workers.kernel_threads, "set_count", lambda n: n)
    workers._start_worker(1)
    assert calls


def test_training_and_the_fine_tune_apply_it(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    from qlic_codec.quantize import finetune
    from qlic_codec.train import __main__ as train_main
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    missing = str(tmp_path / "missing.pt")
    # Both stop at the missing model, after the policy is set.
    with pytest.raises(FileNotFoundError):
        train_main.main(["--validate", missing])
    assert calls == [1]
    with pytest.raises(FileNotFoundError):
        finetune.main([missing, "-o", str(tmp_path / "out.pt")])
    assert calls == [1, 1]
