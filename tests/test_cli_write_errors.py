"""Outputs that cannot be written, through the real command line (a subprocess, the tiny model).

Whatever stops the write (a full disk, a file size limit, a read-only file system, a device
that refuses data, a path that is a directory or lies under a file), the file fails with one
line on stderr, ``qlic: error: <input>: cannot write '<output>': <reason>``, the exit status
is 1, no temporary file is left beside the output, and the batch goes on with its next file.

The tests run as root on some machines, and root ignores permission bits (``chmod 555`` does
not stop it). So each test uses a mechanism that stops root too: a tmpfs of a few pages
mounted in a private mount namespace (``unshare --mount``, nothing outside the test's
subprocess sees it) for a full disk and for a read-only file system, the process's file size
limit (``RLIMIT_FSIZE``), a character device like ``/dev/full``, and paths the file system
itself refuses. A test skips, saying why, only where its mechanism is missing.
"""

import os
import resource
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import qlic_codec
from conftest import synthetic_photo

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def qlic(*args, cwd, **kwargs):
    return subprocess.run([sys.executable, "-m", "qlic_codec.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, **kwargs)


def leftovers(folder: Path) -> list[str]:
    """Temporary files of ``fsio.atomic_write`` (``.<name>.<random>.tmp``) in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def assert_failed_once(result, input_name: str, output: str, reason: str) -> None:
    """Exit status 1 and exactly one error line, naming the input, the output and why."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == f"qlic: error: {input_name}: cannot write {output!r}: {reason}", lines[0]


@pytest.fixture
def work(tmp_path: Path, tiny_model: str) -> Path:
    """a.png and b.png (64x96), a.qlic and b.qlic made from them, big.qlic (a 128x160 photo,
    whose PNG is larger than a page) and the PNG the decoder makes of each."""
    for name, (h, w), seed in (("a", (64, 96), 1), ("b", (64, 96), 2), ("big", (128, 160), 3)):
        image = synthetic_photo(h, w, seed)
        Image.fromarray(image).save(tmp_path / f"{name}.png")
        (tmp_path / f"{name}.qlic").write_bytes(qlic_codec.encode(image, 4, tiny_model))
    # Decoding once here compiles (or loads) every kernel and fills Numba's cache, so that the
    # subprocesses below, some under a file size limit, only read the cache.
    qlic_codec.decode((tmp_path / "a.qlic").read_bytes(), tiny_model)
    return tmp_path


def _private_mounts_work() -> str | None:
    """None if this process may mount a tmpfs in a private mount namespace, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    try:
        probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                "mount -t tmpfs probe /mnt"],
                               capture_output=True, text=True, timeout=60)
    except OSError as exc:
        return f"unshare failed: {exc}"
    if probe.returncode != 0:
        return f"cannot mount a tmpfs in a private mount namespace: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def private_mounts():
    why = _private_mounts_work()
    if why is not None:
        pytest.skip(why)


def in_private_tmpfs(script: str, folder: Path, size: str, env: dict, cwd: Path):
    """Run ``script`` (sh) with a tmpfs of ``size`` mounted on ``folder``, in a private mount
    namespace; ``$PY`` is this Python. The mount ends with the script."""
    folder.mkdir()
    setup = f'set -eu\nmount -t tmpfs -o size={size},mode=0755 qlic-test "$TMPFS"\n'
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", setup + script],
        cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, **env, "TMPFS": str(folder), "PY": sys.executable})


# --- disk full --------------------------------------------------------------------------------

def test_disk_full_fails_the_file_and_the_batch_goes_on(work, tiny_model, private_mounts):
    """A disk with no free block (a 64 KiB tmpfs filled up): creating the temporary file
    works (an inode), writing to it fails with ENOSPC; the temporary file is removed and the
    next input is encoded."""
    script = """
cp a.png "$TMPFS/a.png"
head -c 1048576 /dev/zero > "$TMPFS/filler" 2>/dev/null || true
set +e
"$PY" -m qlic_codec.cli encode "$TMPFS/a.png" b.png --model "$MODEL"
rc=$?
ls -A "$TMPFS" > listing.txt
exit $rc
"""
    (work / "b.qlic").unlink()
    result = in_private_tmpfs(script, work / "full", "64k", {"MODEL": tiny_model}, work)
    full_png = str(work / "full" / "a.png")
    assert_failed_once(result, full_png, full_png[:-4] + ".qlic", "No space left on device")
    assert (work / "listing.txt").read_text().split() == ["a.png", "filler"]
    assert qlic_codec.decode((work / "b.qlic").read_bytes(), tiny_model).shape == (64, 96, 3)


def test_disk_full_in_the_middle_of_a_file(work, tiny_model, private_mounts):
    """The decoder's PNG is larger than the one free page: the first page is written, the
    next write fails with ENOSPC, and the partial temporary file is removed. The batch goes on
    with b.qlic."""
    decoded = work / "expected.png"
    assert qlic("decode", "big.qlic", "-o", str(decoded), "--model", tiny_model,
                cwd=work).returncode == 0
    assert decoded.stat().st_size > 2 * 4096  # more than the one free page
    (work / "b.png").unlink()
    script = """
cp big.qlic "$TMPFS/big.qlic"
set +e
"$PY" -m qlic_codec.cli decode "$TMPFS/big.qlic" b.qlic --model "$MODEL"
rc=$?
ls -A "$TMPFS" > listing.txt
exit $rc
"""
    result = in_private_tmpfs(script, work / "full", "8k", {"MODEL": tiny_model}, work)
    big = str(work / "full" / "big.qlic")
    assert_failed_once(result, big, big[:-5] + ".png", "No space left on device")
    assert (work / "listing.txt").read_text().split() == ["big.qlic"]
    assert np.asarray(Image.open(work / "b.png")).shape == (64, 96, 3)


def test_file_size_limit_in_the_middle_of_a_file(work, tiny_model):
    """The process's file size limit (RLIMIT_FSIZE, which binds root too; Python ignores
    SIGXFSZ, so the write fails with EFBIG instead of killing the process) lets b.png through
    but stops big.png part of the way: its partial temporary file is removed and the batch
    goes on with b.qlic."""
    from qlic_codec import imageio

    png = imageio.format_for_path("x.png")
    sizes = {name: len(imageio.save_image(qlic_codec.decode(
        (work / f"{name}.qlic").read_bytes(), tiny_model), png)) for name in ("big", "b")}
    cap = (sizes["big"] + sizes["b"]) // 2
    assert sizes["b"] < cap - 1000 and sizes["big"] > cap + 1000, sizes
    (work / "b.png").unlink()

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (cap, cap))

    result = qlic("decode", "big.qlic", "b.qlic", "--model", tiny_model, cwd=work,
                  preexec_fn=limit)
    assert_failed_once(result, "big.qlic", "big.png", "File too large")
    assert leftovers(work) == []
    # big.png, the input photo of the fixture, is left as it was.
    assert Image.open(work / "big.png").tobytes() == Image.fromarray(
        synthetic_photo(128, 160, 3)).tobytes()
    assert (work / "b.png").stat().st_size == sizes["b"]


def _full_device(folder: Path) -> str:
    """A character device that refuses every write with ENOSPC, like /dev/full: a private
    node made with mknod (root), so that a regression that renamed a file onto it could not
    replace the system's /dev/full; otherwise /dev/full itself, which a non-root process
    cannot replace."""
    if IS_ROOT:
        path = folder / "full.png"
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))
            with open(path, "wb"):
                pass
            return str(path)
        except OSError as exc:
            path.unlink(missing_ok=True)
            pytest.skip(f"cannot make or open a device node here: {exc}")
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    return "/dev/full"


def test_device_that_is_full(work, tiny_model):
    """``-o /dev/full``: the device is written in place (renaming a file onto it would replace
    the device), the write fails with ENOSPC, and the device is still a device."""
    device = _full_device(work)
    # The decoder picks the image format by extension, which only the private node has.
    runs = [("encode", "a.png")] + ([("decode", "a.qlic")] if device.endswith(".png") else [])
    for command, name in runs:
        result = qlic(command, name, "-o", device, "--model", tiny_model, cwd=work)
        assert_failed_once(result, name, device, "No space left on device")
        assert stat.S_ISCHR(os.stat(device).st_mode)
    assert leftovers(work) == []


def test_pipe_output_is_written_in_place(work, tiny_model):
    """A named pipe as the output receives the stream (as with ``cat > pipe``) and stays a
    pipe."""
    pipe = work / "pipe.qlic"
    os.mkfifo(pipe)
    reader = subprocess.Popen(["cat", str(pipe)], stdout=subprocess.PIPE)
    try:
        result = qlic("encode", "a.png", "-o", str(pipe), "--model", tiny_model, cwd=work)
        data, _ = reader.communicate(timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)
    assert data == (work / "a.qlic").read_bytes()


# --- read-only and impossible paths ---------------------------------------------------------

def test_read_only_file_system(work, tiny_model):
    """A folder on a read-only file system (a tmpfs remounted read-only, which stops root;
    for other users a folder without write permission): the temporary file cannot be made,
    the file fails with EROFS (or EACCES) and the next input is encoded."""
    (work / "b.qlic").unlink()
    if not IS_ROOT:
        ro = work / "ro"
        ro.mkdir()
        shutil.copy(work / "a.png", ro / "a.png")
        ro.chmod(0o555)
        try:
            result = qlic("encode", "ro/a.png", "b.png", "--model", tiny_model, cwd=work)
        finally:
            ro.chmod(0o755)
        assert_failed_once(result, "ro/a.png", "ro/a.qlic", "Permission denied")
        assert sorted(os.listdir(ro)) == ["a.png"]
    else:
        why = _private_mounts_work()
        if why is not None:
            pytest.skip(why)
        script = """
cp a.png "$TMPFS/a.png"
mount -o remount,ro "$TMPFS"
set +e
"$PY" -m qlic_codec.cli encode "$TMPFS/a.png" b.png --model "$MODEL"
rc=$?
ls -A "$TMPFS" > listing.txt
exit $rc
"""
        result = in_private_tmpfs(script, work / "ro", "64k", {"MODEL": tiny_model}, work)
        ro_png = str(work / "ro" / "a.png")
        assert_failed_once(result, ro_png, ro_png[:-4] + ".qlic", "Read-only file system")
        assert (work / "listing.txt").read_text().split() == ["a.png"]
    assert qlic_codec.decode((work / "b.qlic").read_bytes(), tiny_model).shape == (64, 96, 3)


def test_output_that_is_a_directory(work, tiny_model):
    """The output name of the first input is a directory: that file fails with EISDIR (the
    rename is refused), the temporary file is removed, the directory is left as it was, and
    the next input is encoded."""
    (work / "a.qlic").unlink()
    (work / "b.qlic").unlink()
    (work / "a.qlic").mkdir()
    (work / "a.qlic" / "keep").write_bytes(b"x")
    result = qlic("encode", "a.png", "b.png", "--model", tiny_model, cwd=work)
    assert_failed_once(result, "a.png", "a.qlic", "Is a directory")
    assert os.listdir(work / "a.qlic") == ["keep"]
    assert leftovers(work) == []
    assert qlic_codec.decode((work / "b.qlic").read_bytes(), tiny_model).shape == (64, 96, 3)


def test_output_under_a_regular_file(work, tiny_model):
    """An output path whose parent is a regular file: ENOTDIR, nothing is created, and the
    next file of the batch (into a real folder) is decoded."""
    (work / "out").mkdir()
    result = qlic("decode", "a.qlic", "-o", "a.png/x.png", "--model", tiny_model, cwd=work)
    assert_failed_once(result, "a.qlic", "a.png/x.png", "Not a directory")
    batch = qlic("decode", "a.qlic", "b.qlic", "-o", "out", "--model", tiny_model, cwd=work)
    assert batch.returncode == 0, batch.stderr
    assert sorted(os.listdir(work / "out")) == ["a.png", "b.png"]
