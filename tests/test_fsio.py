"""Tests for the file-system edge: ``-`` handling, atomic writes and path helpers."""

from __future__ import annotations

import io
import os
import stat
import sys
import types
from pathlib import Path

import pytest

from qlic_codec import fsio
from qlic_codec.errors import OutputExistsError, QlicError
from qlic_codec.fsio import atomic_write, default_output_path, read_input, same_file


def fake_stream(data: bytes = b"") -> types.SimpleNamespace:
    """A stand-in for sys.stdin/sys.stdout whose ``buffer`` is a BytesIO."""
    return types.SimpleNamespace(buffer=io.BytesIO(data))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# --- read_input -------------------------------------------------------------------------


def test_read_input_file(tmp_path: Path) -> None:
    path = tmp_path / "in.bin"
    path.write_bytes(b"\x00\x01\xff")
    assert read_input(str(path)) == b"\x00\x01\xff"


def test_read_input_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", fake_stream(b"\x89PNG\r\n\x1a\n"))
    assert read_input("-") == b"\x89PNG\r\n\x1a\n"


def test_read_input_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "x.png")
    with pytest.raises(QlicError) as info:
        read_input(path)
    assert str(info.value) == f"cannot read {path!r}: No such file or directory"


def test_read_input_directory(tmp_path: Path) -> None:
    with pytest.raises(QlicError, match="cannot read") as info:
        read_input(str(tmp_path))
    assert "\n" not in str(info.value)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="needs a non-root POSIX user"
)
def test_read_input_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    path.write_bytes(b"x")
    path.chmod(0)
    with pytest.raises(QlicError, match="Permission denied") as info:
        read_input(str(path))
    assert "\n" not in str(info.value)


def test_read_input_permission_denied_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs as root too, where chmod cannot make a file unreadable.
    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", denied)
    with pytest.raises(QlicError) as info:
        read_input("secret.png")
    assert str(info.value) == "cannot read 'secret.png': Permission denied"


# --- atomic_write -----------------------------------------------------------------------


def test_atomic_write_creates(tmp_path: Path) -> None:
    path = tmp_path / "out.qlic"
    atomic_write(str(path), b"new data")
    assert path.read_bytes() == b"new data"
    assert leftovers(tmp_path) == []


def test_atomic_write_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A bare file name has an empty dirname; the temp file must go to the current directory.
    monkeypatch.chdir(tmp_path)
    atomic_write("out.qlic", b"abc")
    assert (tmp_path / "out.qlic").read_bytes() == b"abc"
    assert leftovers(tmp_path) == []


def test_atomic_write_replaces(tmp_path: Path) -> None:
    path = tmp_path / "out.qlic"
    path.write_bytes(b"old data that is longer")
    atomic_write(str(path), b"new")
    assert path.read_bytes() == b"new"
    assert leftovers(tmp_path) == []


def test_atomic_write_empty_data(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    atomic_write(str(path), b"")
    assert path.read_bytes() == b""


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_atomic_write_mode_respects_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path = tmp_path / "out.qlic"
        atomic_write(str(path), b"x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640


def test_atomic_write_temp_file_in_target_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    path = tmp_path / "out.qlic"
    atomic_write(str(path), b"x")
    [(src, dst)] = seen
    assert dst == str(path)
    assert os.path.dirname(src) == str(tmp_path)
    assert os.path.basename(src).startswith(".out.qlic.")
    assert src.endswith(".tmp")


def test_atomic_write_failed_replace_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.qlic"
    path.write_bytes(b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(QlicError) as info:
        atomic_write(str(path), b"new")
    assert str(info.value) == f"cannot write {str(path)!r}: No space left on device"
    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_atomic_write_keyboard_interrupt_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.qlic"
    path.write_bytes(b"old")

    def interrupted_fsync(fd: int) -> None:
        raise KeyboardInterrupt

    # fsync runs after the data is written, so the temp file exists and has content.
    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), b"new")
    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_atomic_write_keyboard_interrupt_mid_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.qlic"
    path.write_bytes(b"old")

    class HalfWriter(io.FileIO):
        def write(self, data: object) -> int:
            super().write(b"partial")
            raise KeyboardInterrupt

    def fdopen(fd: int, mode: str = "r", *args: object, **kwargs: object) -> io.FileIO:
        assert mode == "wb"
        return HalfWriter(fd, "wb")

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), b"new data")
    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_atomic_write_interrupt_without_old_file_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted_chmod(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "chmod", interrupted_chmod)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(tmp_path / "out.qlic"), b"new")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_without_replacing_creates_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "out.qlic"
    old = os.umask(0o027)
    try:
        atomic_write(str(path), b"new", replace=False)
    finally:
        os.umask(old)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_nlink == 1  # the temporary name is gone
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("existing", ["file", "dangling link", "directory"])
def test_atomic_write_without_replacing_keeps_what_exists(tmp_path: Path,
                                                          existing: str) -> None:
    path = tmp_path / "out.qlic"
    if existing == "file":
        path.write_bytes(b"old")
    elif existing == "dangling link":
        os.symlink("nowhere", path)
    else:
        path.mkdir()
    with pytest.raises(OutputExistsError, match="out.qlic' exists"):
        atomic_write(str(path), b"new", replace=False)
    assert os.path.lexists(path)
    if existing == "file":
        assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_atomic_write_without_replacing_a_file_that_appears_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.qlic"
    real_chmod = os.chmod

    def chmod_then_another_writer(target: str, mode: int) -> None:
        real_chmod(target, mode)
        path.write_bytes(b"theirs")

    monkeypatch.setattr(os, "chmod", chmod_then_another_writer)
    with pytest.raises(OutputExistsError):
        atomic_write(str(path), b"mine", replace=False)
    assert path.read_bytes() == b"theirs"
    assert leftovers(tmp_path) == []


def test_atomic_write_without_replacing_where_hard_links_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: str, dst: str) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    atomic_write(str(tmp_path / "out.qlic"), b"new", replace=False)
    assert (tmp_path / "out.qlic").read_bytes() == b"new"
    with pytest.raises(OutputExistsError):
        atomic_write(str(tmp_path / "out.qlic"), b"newer", replace=False)
    assert (tmp_path / "out.qlic").read_bytes() == b"new"
    assert leftovers(tmp_path) == []


def test_make_parent_folders(tmp_path: Path) -> None:
    fsio.make_parent_folders(str(tmp_path / "a" / "b" / "out.qlic"))
    assert (tmp_path / "a" / "b").is_dir()
    fsio.make_parent_folders("out.qlic")  # the current folder: nothing to do
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(QlicError, match="cannot create the folder .*file/sub'"):
        fsio.make_parent_folders(str(tmp_path / "file" / "sub" / "out.qlic"))


def test_atomic_write_missing_directory(tmp_path: Path) -> None:
    path = str(tmp_path / "no" / "such" / "out.qlic")
    with pytest.raises(QlicError, match="cannot write .*No such file or directory"):
        atomic_write(path, b"x")


def test_atomic_write_onto_directory(tmp_path: Path) -> None:
    target = tmp_path / "adir"
    target.mkdir()
    with pytest.raises(QlicError, match="cannot write"):
        atomic_write(str(target), b"x")
    assert target.is_dir()
    assert leftovers(tmp_path) == []


def test_atomic_write_into_a_named_pipe_writes_in_place(tmp_path: Path) -> None:
    # Renaming a temporary file onto a pipe (or a device: -o /dev/null as root) would replace
    # it; an output that is neither a regular file nor a directory is written in place.
    import threading

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    got = []
    reader = threading.Thread(target=lambda: got.append(pipe.read_bytes()), daemon=True)
    reader.start()
    atomic_write(str(pipe), b"through the pipe" * 1000)
    reader.join(60)
    assert got == [b"through the pipe" * 1000]
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="making a device node (a private /dev/full) needs root")
def test_atomic_write_into_a_full_device(tmp_path: Path) -> None:
    device = tmp_path / "full"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 7))
        device.open("wb").close()
    except OSError as exc:
        pytest.skip(f"cannot make or open a device node here: {exc}")
    with pytest.raises(QlicError, match=r"^cannot write '.*full': No space left on device$"):
        atomic_write(str(device), b"x" * 10000)
    assert stat.S_ISCHR(os.stat(device).st_mode)
    assert leftovers(tmp_path) == []


def test_atomic_write_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_stream()
    monkeypatch.setattr(sys, "stdout", fake)
    atomic_write("-", b"\x00binary\xff")
    assert fake.buffer.getvalue() == b"\x00binary\xff"


def test_atomic_write_stdout_broken_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    class BrokenPipe(io.BytesIO):
        def write(self, data: object) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", types.SimpleNamespace(buffer=BrokenPipe()))
    with pytest.raises(QlicError, match="cannot write standard output: Broken pipe"):
        atomic_write("-", b"x")


def test_atomic_write_does_not_create_dash_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdout", fake_stream())
    atomic_write("-", b"x")
    assert list(tmp_path.iterdir()) == []


# --- same_file --------------------------------------------------------------------------


def test_same_file(tmp_path: Path) -> None:
    a = tmp_path / "a.png"
    b = tmp_path / "b.png"
    a.write_bytes(b"1")
    b.write_bytes(b"1")
    assert same_file(str(a), str(a))
    assert same_file(str(a), str(tmp_path / "." / "a.png"))
    assert not same_file(str(a), str(b))
    assert not same_file(str(a), str(tmp_path / "missing"))
    assert not same_file(str(tmp_path / "missing"), str(tmp_path / "missing"))
    assert not same_file("-", "-")
    assert not same_file("-", str(a))
    assert not same_file(str(a), "-")


@pytest.mark.skipif(not hasattr(os, "link"), reason="needs hard links")
def test_same_file_hard_link(tmp_path: Path) -> None:
    a = tmp_path / "a.png"
    a.write_bytes(b"1")
    os.link(a, tmp_path / "b.png")
    assert same_file(str(a), str(tmp_path / "b.png"))


# --- default_output_path ----------------------------------------------------------------


@pytest.mark.parametrize(
    "input_path, suffix, expected",
    [
        ("a/b.png", ".qlic", "a/b.qlic"),
        ("b.png", ".qlic", "b.qlic"),
        ("a/b", ".qlic", "a/b.qlic"),
        ("a/b.qlic", ".png", "a/b.png"),
        ("a/b.tar.gz", ".qlic", "a/b.tar.qlic"),
        ("a.d/b", ".qlic", "a.d/b.qlic"),
        (".hidden", ".qlic", ".hidden.qlic"),
        ("a/b.png", "qlic", "a/b.qlic"),
    ],
)
def test_default_output_path(input_path: str, suffix: str, expected: str) -> None:
    assert default_output_path(input_path, suffix) == expected


@pytest.mark.parametrize("input_path, suffix", [("-", ".qlic"), ("", ".qlic"), ("a.png", "")])
def test_default_output_path_rejects(input_path: str, suffix: str) -> None:
    with pytest.raises(ValueError):
        default_output_path(input_path, suffix)


def test_module_imports_nothing_from_qlic_but_errors() -> None:
    source = Path(fsio.__file__).read_text()
    imports = [line for line in source.splitlines() if "qlic_codec" in line and "import" in line]
    assert imports == ["from qlic_codec.errors import OutputExistsError, QlicError"]


def test_stdout_short_writes_are_completed_or_reported(monkeypatch):
    import io
    import sys

    import pytest

    from qlic_codec import fsio
    from qlic_codec.errors import OutputExistsError, QlicError

    class Trickle(io.RawIOBase):
        """Accepts at most 7 bytes per call, then (when ``stop`` is set) nothing at all."""

        def __init__(self, stop_after=None):
            self.data, self.stop_after = bytearray(), stop_after

        def writable(self):
            return True

        def write(self, b):
            if self.stop_after is not None and len(self.data) >= self.stop_after:
                return 0
            chunk = bytes(b[:7])
            self.data += chunk
            return len(chunk)

    class FakeStdout:
        def __init__(self, raw):
            self.buffer = raw

    ok = Trickle()
    monkeypatch.setattr(sys, "stdout", FakeStdout(ok))
    fsio.atomic_write("-", b"0123456789" * 5)
    assert bytes(ok.data) == b"0123456789" * 5
    monkeypatch.setattr(sys, "stdout", FakeStdout(Trickle(stop_after=14)))
    with pytest.raises(QlicError):
        fsio.atomic_write("-", b"0123456789" * 5)


def test_replacing_keeps_the_existing_files_mode(tmp_path):
    import os
    import stat

    from qlic_codec import fsio

    target = tmp_path / "private.png"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    fsio.atomic_write(str(target), b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
