"""The file-system edge: ``-`` for stdin/stdout, whole-file reads and atomic writes.

``atomic_write`` writes to a temporary file in the target's directory and renames it onto
the target, so a failed or interrupted write never leaves a partial file and never touches
an existing one. The module knows nothing about images or bitstreams.

This module imports nothing from qlic except ``errors``.
"""

from __future__ import annotations

import os
import stat
import sys
import secrets

from qlic_codec.errors import OutputExistsError, QlicError

__all__ = [
    "atomic_write", "default_output_path", "make_parent_folders", "read_input", "refuse_existing",
    "same_file",
]

STDIO = "-"


def read_input(path: str) -> bytes:
    """Read a whole input file, or binary stdin for ``"-"``.

    Args:
        path: A file path, or ``"-"`` for standard input.

    Returns:
        The file's bytes.

    Raises:
        QlicError: If the file cannot be read (missing, a directory, no permission), with a
            one-line message such as ``cannot read 'x.png': No such file or directory``.
    """
    if path == STDIO:
        try:
            return sys.stdin.buffer.read()
        except OSError as exc:
            raise QlicError(f"cannot read standard input: {_reason(exc)}") from exc
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise QlicError(f"cannot read {path!r}: {_reason(exc)}") from exc


def _write_all(stream, data: bytes) -> None:
    # A pipe whose reader went away can accept part of the data and report a short count
    # instead of raising; losing the rest silently would be a corrupt output.
    view = memoryview(data)
    while view:
        written = stream.write(view)
        if not written:
            raise OSError("short write: the reader closed the pipe")
        view = view[written:]


_TEMPORARY_TRIES = 100
_TEMPORARY_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def atomic_write(path: str, data: bytes, replace: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the new one.

    For ``"-"`` the data goes to binary stdout, which is flushed. Otherwise the data is
    written to a temporary file in the same directory (same file system, so the rename is
    atomic), fsynced, given the mode a plain ``open`` would give (``0o666 & ~umask``) and
    renamed onto ``path`` with ``os.replace``. On any failure, including
    ``KeyboardInterrupt``, the temporary file is removed and an existing ``path`` is left
    untouched.

    An existing ``path`` that is neither a regular file nor a directory (a device such as
    ``/dev/null`` or ``/dev/full``, a named pipe) is written in place, as ``cat > path``
    would: it cannot be replaced atomically, and renaming a file onto it would destroy the
    device or pipe (for root, ``-o /dev/null`` would replace ``/dev/null`` itself).

    With ``replace=False`` an existing ``path`` (of any kind, a dangling link included) is
    never replaced: the new file is published with a hard link, which fails if the name
    exists, so a file that appears while the data is written is kept too.

    Args:
        path: The target file path, or ``"-"`` for standard output.
        data: The bytes to write.
        replace: Whether an existing ``path`` may be replaced.

    Raises:
        OutputExistsError: ``replace`` is False and ``path`` exists.
        QlicError: If the file cannot be written, with a one-line message.
    """
    if path == STDIO:
        try:
            _write_all(sys.stdout.buffer, data)
            sys.stdout.buffer.flush()
        except OSError as exc:
            raise QlicError(f"cannot write standard output: {_reason(exc)}") from exc
        return

    if not replace:
        refuse_existing(path)
    if _is_special_file(path):
        _write_in_place(path, data)
        return

    directory = os.path.dirname(path) or "."
    tmp_path = None
    try:
        # The temporary file's name is chosen before it is created (mkstemp returned it only
        # after), so that an interrupt inside the creation (a worker's SIGTERM turned into
        # KeyboardInterrupt) still finds the file to remove.
        for _ in range(_TEMPORARY_TRIES):
            tmp_path = os.path.join(
                directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
            try:
                fd = os.open(tmp_path, _TEMPORARY_FLAGS, 0o600)
                break
            except FileExistsError:
                tmp_path = None  # another file's name: never removed
        else:
            raise FileExistsError(f"no free temporary name beside {path!r}")
        # fdopen takes ownership of fd, so the with-block closes it on every path.
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            # Make the data durable before the rename publishes it; otherwise a crash
            # could leave an empty file under the final name.
            os.fsync(f.fileno())
        # The file is created 0600. A replaced file keeps its own mode (a private file stays
        # private); a new one gets the mode a normal open() would give.
        os.chmod(tmp_path, _existing_mode(path))
        if replace:
            os.replace(tmp_path, path)
        else:
            _publish_new(tmp_path, path)
    except BaseException as exc:
        # BaseException: a Ctrl-C mid-write must not leave a stray temporary file.
        if tmp_path is not None:
            try:
                os.unlink(tmp_path)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise QlicError(f"cannot write {path!r}: {_reason(exc)}") from exc
        raise
    _fsync_directory(directory)


def _publish_new(tmp_path: str, path: str) -> None:
    # link() fails if the name exists, where rename() would replace it.
    try:
        os.link(tmp_path, path)
    except FileExistsError:
        raise _exists(path) from None
    except OSError:
        # No hard links on this file system (FAT, some network ones): check, then rename.
        # Only another writer racing for the same name in between could be replaced.
        if os.path.lexists(path):
            raise _exists(path) from None
        os.rename(tmp_path, path)
        return
    os.unlink(tmp_path)


def refuse_existing(path: str) -> None:
    """Raise ``OutputExistsError`` if ``path`` exists (a dangling link counts); ``"-"``
    (stdout) never does."""
    if path != STDIO and os.path.lexists(path):
        raise _exists(path)


def _exists(path: str) -> OutputExistsError:
    return OutputExistsError(f"{path!r} exists")


def make_parent_folders(path: str) -> None:
    """Create the folder ``path`` goes in, and the folders above it, as needed.

    Raises:
        QlicError: If a folder cannot be created (a file in the way, no permission), with a
            one-line message.
    """
    directory = os.path.dirname(path)
    if not directory or path == STDIO:
        return
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise QlicError(f"cannot create the folder {directory!r}: {_reason(exc)}") from exc


def _is_special_file(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # missing (the usual case) or unreachable: the normal path reports it
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _write_in_place(path: str, data: bytes) -> None:
    try:
        # Unbuffered, so that an error (ENOSPC from /dev/full, EPIPE from a pipe) surfaces
        # in the write itself and not in a close that could hide it.
        with open(path, "wb", buffering=0) as f:
            _write_all(f, data)
    except OSError as exc:
        raise QlicError(f"cannot write {path!r}: {_reason(exc)}") from exc


def same_file(a: str, b: str) -> bool:
    """Tell whether two paths name the same existing file.

    Used to refuse an output path that would overwrite the input.

    Args:
        a: A path, or ``"-"``.
        b: A path, or ``"-"``.

    Returns:
        True if both exist and are the same file (``os.path.samefile``); False otherwise,
        and always False if either is ``"-"``.
    """
    if a == STDIO or b == STDIO:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def default_output_path(input_path: str, new_suffix: str) -> str:
    """Derive an output path by replacing the input's suffix.

    ``a/b.png`` becomes ``a/b.qlic``; a name without a suffix (``a/b``, ``.hidden``) gets
    the new suffix appended.

    Args:
        input_path: The input file path (not ``"-"``).
        new_suffix: The new suffix, with or without its leading dot (``".qlic"``).

    Returns:
        The output path.

    Raises:
        ValueError: If ``input_path`` is ``"-"`` or empty, or ``new_suffix`` is empty.
    """
    if input_path in ("", STDIO):
        raise ValueError(f"cannot derive an output name from {input_path!r}; pass -o")
    suffix = new_suffix if new_suffix.startswith(".") else "." + new_suffix
    if suffix == ".":
        raise ValueError(f"new_suffix must not be empty, got {new_suffix!r}")
    root, _ = os.path.splitext(input_path)
    return root + suffix


def _reason(exc: OSError) -> str:
    # strerror is the short human text ("No such file or directory"); keep it to one line.
    text = exc.strerror or str(exc) or type(exc).__name__
    return " ".join(text.split())


def _existing_mode(path: str) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_current_umask()


def _current_umask() -> int:
    # The only portable way to read the umask is to set it and restore it. The window is a
    # few instructions long; qlic does not create files from other threads meanwhile.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory: str) -> None:
    # Persist the rename itself. Best effort: some platforms (Windows) and file systems
    # cannot open or fsync a directory, and the file is already in place.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
