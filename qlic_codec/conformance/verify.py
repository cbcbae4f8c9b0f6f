"""Decode every conformance stream on every kernel path and thread count of this machine and
compare the pixels with the committed digests.

This is what a packager runs on a new machine (``qlic verify``): the integer decoder must give
the same pixels everywhere, and a compiler, CPU or library that breaks that shows here as a
failed stream, not later as a wrong image.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import threads, zoo
from .generate import pixel_digests
from .manifest import ConformanceError, Entry, folder, read


@dataclass(frozen=True)
class Result:
    """One stream decoded on one kernel path with one thread count (``path`` None: the stream
    itself is missing or damaged, so nothing was decoded)."""

    file: str
    path: str | None
    threads: int
    ok: bool
    reason: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        where = f"{self.path or '-':<8} {self.threads or '-':>2} thr"
        if self.ok:
            return f"OK    {self.file:<28} {where} {self.seconds:7.2f} s"
        return f"FAIL  {self.file:<28} {where}  {self.reason}"


@dataclass
class Report:
    """What ``verify`` did: every result, and the paths and thread counts it ran."""

    folder: Path
    streams: int
    paths: tuple
    thread_counts: tuple
    results: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    def summary(self) -> str:
        failed = sum(not r.ok for r in self.results)
        runs = (f"{self.streams} streams x kernel paths {', '.join(self.paths)} x threads "
                f"{', '.join(map(str, self.thread_counts))}")
        verdict = "all match" if self.ok else f"{failed} FAILED"
        return (f"{verdict}: {len(self.results) - failed} of {len(self.results)} decodes "
                f"matched ({runs}) in {self.seconds:.1f} s")


def verify(where: Path | str | None = None,
           on_result: Callable[[Result], None] | None = None) -> Report:
    """Decode every stream of the conformance folder on every kernel path this CPU has, with
    one thread and with the default number, and compare the decoded pixels' digests.

    Args:
        where: the conformance folder (default: ``manifest.folder()``).
        on_result: called with each result as soon as it is known (to print progress).

    Returns:
        The ``Report``; ``report.ok`` is True only if every decode matched.

    Raises:
        ConformanceError: the manifest is missing or damaged, or a bundled model it names is
            absent or has another model id (then no stream can match).
    """
    from .. import api
    from ..engine import kernels

    start = time.perf_counter()
    where = folder() if where is None else Path(where)
    entries = read(where)
    models = _models(entries)
    paths = tuple(kernels.available_paths())
    counts = tuple(sorted({1, threads.limit()}))
    report = Report(where, len(entries), paths, counts)

    def record(result: Result) -> None:
        report.results.append(result)
        if on_result is not None:
            on_result(result)

    for entry in entries:
        data, damage = _stream(where, entry)
        if damage:
            record(Result(entry.file, None, 0, False, damage))
            continue
        for path in paths:
            for count in counts:
                with kernels.use_path(path), threads.use(count):
                    record(_decode_one(api, data, entry, models[entry.model], path, count))
    report.seconds = time.perf_counter() - start
    return report


def _models(entries: list[Entry]) -> dict[str, str]:
    """The file of each bundled model the manifest names, after checking its id."""
    from .. import api

    found = {}
    for entry in entries:
        if entry.model in found:
            model_id = api.load_model(found[entry.model]).model_id.hex()
        else:
            path = str(zoo.resolve(entry.model))  # ModelFileError names where it looked
            model_id = api.load_model(path).model_id.hex()
            found[entry.model] = path
        if model_id != entry.model_id:
            raise ConformanceError(
                f"bundled model '{entry.model}' ({found[entry.model]}) has id {model_id}, but "
                f"{entry.file} was made with {entry.model_id}; install the models that came "
                "with these streams")
    return found


def _stream(where: Path, entry: Entry) -> tuple[bytes, str]:
    """The stream's bytes, or a reason why it cannot be decoded."""
    try:
        data = (where / entry.file).read_bytes()
    except OSError as exc:
        return b"", f"stream missing or unreadable: {exc.strerror or exc}"
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.stream_sha256:
        return b"", (f"stream damaged: SHA-256 {digest[:16]}..., manifest "
                     f"{entry.stream_sha256[:16]}...")
    return data, ""


def _decode_one(api, data: bytes, entry: Entry, model: str, path: str, count: int) -> Result:
    start = time.perf_counter()
    try:
        rgb = api.decode(data, model)
    except Exception as exc:  # a crash on one path is a failed check, not the end of the run
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        return Result(entry.file, path, count, False, reason)
    seconds = time.perf_counter() - start
    if rgb.shape != (entry.height, entry.width, 3):
        return Result(entry.file, path, count, False,
                      f"decoded {rgb.shape[1]}x{rgb.shape[0]}, expected "
                      f"{entry.width}x{entry.height}")
    got = pixel_digests(rgb)
    for key in ("pixels_md5", "pixels_sha256"):
        if got[key] != getattr(entry, key):
            return Result(entry.file, path, count, False,
                          f"pixels differ: {key} {got[key]}, expected {getattr(entry, key)}")
    return Result(entry.file, path, count, True, seconds=seconds)
