"""The command line's allocator policy (``qlic_codec.allocator``): on glibc, a large array
comes from the heap instead of its own ``mmap``, ``QLIC_MALLOC=system`` leaves the default,
and the command line and its workers apply it. Each check runs in a child process, so the
test process keeps its own allocator as it was."""

import ctypes
import os
import subprocess
import sys
import textwrap

import pytest

from qlic_codec import allocator

_PROBE = textwrap.dedent("""
    import ctypes, json, sys
    import numpy as np
    from qlic_codec import allocator

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Info
    applied = allocator.keep_freed_memory()
    before = libc.mallinfo2().hblkhd
    block = np.ones(64 << 20, np.uint8)  # above any mmap threshold glibc would pick
    mapped = libc.mallinfo2().hblkhd - before
    print(json.dumps({"applied": applied, "mapped": mapped}))
""")


def _glibc_with_mallinfo2():
    if not sys.platform.startswith("linux"):
        return False
    try:
        return hasattr(ctypes.CDLL(None), "mallinfo2")
    except OSError:
        return False


def _probe(**env):
    import json
    run = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs glibc 2.33 or later")
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
