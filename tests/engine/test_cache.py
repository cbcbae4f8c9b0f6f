"""Compiled kernels are cached even where the installed package folder is read-only.

Numba writes its cache beside the source (``__pycache__``) when it can and otherwise in the
user's cache folder (``$XDG_CACHE_HOME/numba``, else ``~/.cache/numba``). A system-wide or
packaged install is read-only to its users, so this test copies the package into a folder
without write permission and runs a kernel twice in fresh processes: the first run must
compile into the user cache without touching the package, the second must load from it.

Root ignores permission bits; as root the child runs without CAP_DAC_OVERRIDE (``setpriv``),
which makes it obey them like any user.
"""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import qlic_codec

PACKAGE = Path(qlic_codec.__file__).resolve().parent

SCRIPT = """
import numpy as np
from qlic_codec.engine import kernels
acc = np.arange(-40, 40, dtype=np.int32).reshape(1, 10, 8)
out = kernels.requantize(acc, np.full(8, 3, np.int32), np.full(8, 2, np.int32), 0, 0, -127, 127)
assert out.tolist() == ((acc * 3 + 2) >> 2).clip(-127, 127).tolist()
print("ok")
"""


def _without_permission_override() -> list:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permission bits cannot be enforced")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]


def _make_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def _tree(root: Path) -> set:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_kernels_cache_in_user_folder_when_package_is_read_only(tmp_path):
    prefix = _without_permission_override()
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "qlic_codec",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(PYTHONPATH=str(site), XDG_CACHE_HOME=str(cache), HOME=str(tmp_path),
               PYTHONDONTWRITEBYTECODE="1", NUMBA_DEBUG_CACHE="1")
    before = _tree(site)
    _make_read_only(site)
    try:
        # The probe really cannot write into the package folder.
        probe = subprocess.run([*prefix, sys.executable, "-c",
                                f"open({str(site / 'qlic_codec' / 'probe')!r}, 'w')"],
                               capture_output=True, env=env)
        assert probe.returncode != 0, "the package copy is still writable"
        runs = []
        for _ in range(2):
            r = subprocess.run([*prefix, sys.executable, "-c", SCRIPT], capture_output=True,
                               text=True, env=env, cwd=tmp_path, timeout=300)
            assert r.returncode == 0, r.stderr[-2000:]
            assert r.stdout.strip().splitlines()[-1] == "ok"
            runs.append(r.stdout)
    finally:
        _make_writable(site)
    assert _tree(site) == before, "the read-only package folder was written to"
    index_files = list(cache.rglob("*.nbi"))
    assert index_files, "nothing was cached in the user cache folder"
    assert all("numba" in p.relative_to(cache).parts[0] for p in index_files)
    # First process compiles and saves, the second loads what the first saved.
    assert "data saved" in runs[0]
    assert "data loaded" in runs[1] and "data saved" not in runs[1]
