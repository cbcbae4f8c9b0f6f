"""Run one step per file, in this process or in worker processes, and hand back what became
of each file in the order of the files.

``attempt`` turns whatever a step raises into an ``Outcome`` (done, skipped, failed, internal
error), the same way wherever it runs, so a batch reports the same lines with one process or
several. ``run`` with ``jobs > 1`` starts ``ProcessPoolExecutor`` workers with the ``spawn``
method (a fresh interpreter each: no Numba thread pool or lock inherited from a fork), each
running its kernels on ``threads`` threads.

Interruption: the workers ignore SIGINT, so a Ctrl-C on the terminal, which reaches the whole
process group, stops only the parent; the parent then cancels the files not started and sends
the workers SIGTERM. A worker busy with a file turns SIGTERM into ``KeyboardInterrupt``, which
unwinds the file's step (``fsio.atomic_write`` removes its temporary file), and exits; an idle
worker exits at once.
The parent waits for all of them before it raises ``KeyboardInterrupt`` to its caller.

This module imports nothing from qlic but ``errors`` and ``threads`` (which loads Numba only
when a thread count is set): the steps load the codec, in whichever process runs them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import traceback
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from . import allocator
from . import threads as kernel_threads
from .errors import OutputExistsError, QlicError

__all__ = ["Outcome", "attempt", "one_line", "run"]

EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Outcome:
    """What became of one file; picklable, so that a worker can send it back.

    ``status`` is ``"done"`` (``record`` is what the step returned), ``"skipped"`` (an
    output that ``--no-clobber`` keeps), ``"failed"`` (bad data or the environment: one-line
    ``message``) or ``"internal"`` (a bug: ``message`` is ``Type: text`` and ``traceback``
    the formatted traceback).
    """

    status: str
    message: str = ""
    record: Any = None
    traceback: str = ""
    broken_pipe: bool = False


def attempt(step: Callable[[], Any]) -> Outcome:
    """Run ``step`` and say what became of it; only ``BaseException``s that are not
    ``Exception``s (Ctrl-C, exit) go through."""
    try:
        record = step()
    except OutputExistsError as exc:
        return Outcome("skipped", one_line(exc))
    except (QlicError, OSError) as exc:
        # OSError: the environment failed (disk, pipe), not qlic: a failed file, not a bug.
        return Outcome("failed", one_line(exc), broken_pipe=_caused_by_broken_pipe(exc))
    except MemoryError:
        return Outcome("failed", "not enough memory")
    except Exception as exc:
        return Outcome("internal", f"{type(exc).__name__}: {one_line(exc)}",
                       traceback=traceback.format_exc())
    return Outcome("done", record=record)


def run(
    step: Callable[[Any], Any],
    items: Sequence[Any],
    jobs: int,
    threads: int | None,
    on_outcome: Callable[[int, Outcome], None],
    on_progress: Callable[[], None],
) -> None:
    """Call ``step(item)`` for every item and ``on_outcome(index, outcome)`` for each, in the
    order of ``items``; ``on_progress()`` once per item as it finishes.

    With ``jobs > 1`` and more than one item, the items run in ``min(jobs, len(items))``
    worker processes, so ``step`` and the items must be picklable; each worker runs its
    kernels on ``threads`` threads, by default ``max(1, limit // workers)`` where ``limit``
    is ``threads.limit()``. Otherwise they run here, on ``threads`` threads (None: as set).
    """
    if jobs <= 1 or len(items) <= 1:
        with kernel_threads.use(threads):
            for index, item in enumerate(items):
                outcome = attempt(lambda: step(item))
                on_progress()
                on_outcome(index, outcome)
        return
    workers = min(jobs, len(items))
    if threads is None:
        threads = max(1, kernel_threads.limit() // workers)
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(threads,))
    futures: list[Future] = []
    try:
        with _sigint_ignored_by_children():
            futures = [executor.submit(_attempt_in_worker, step, item) for item in items]
        reported = 0
        for _ in as_completed(futures):
            on_progress()
            # Results wait for the ones before them, so that lines keep the input order.
            while reported < len(futures) and futures[reported].done():
                on_outcome(reported, _outcome_of(futures[reported]))
                reported += 1
    except BaseException:
        _stop(executor, futures)
        raise
    executor.shutdown(wait=True)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _outcome_of(future: Future) -> Outcome:
    try:
        return future.result()
    except BrokenProcessPool:
        # A worker was killed (the kernel's out-of-memory killer, a signal): the pool cannot
        # go on, and every file it had not finished fails.
        return Outcome("failed", "a worker process stopped unexpectedly; the file was not done")
    except CancelledError:
        return Outcome("failed", "cancelled")


@contextlib.contextmanager
def _sigint_ignored_by_children() -> Iterator[None]:
    # Spawned workers start with the SIGINT disposition of this process: ignored, it stays
    # ignored in them from their first instruction (Python installs its KeyboardInterrupt
    # handler only where SIGINT is not ignored), so a Ctrl-C while they import the codec
    # prints no traceback. A Ctrl-C in this short window (starting the workers, queueing the
    # files) is lost. signal() works only in the main thread; elsewhere the worker's
    # initializer is the only guard.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop(executor: ProcessPoolExecutor, futures: list[Future]) -> None:
    """Stop the workers, let each remove its temporary file, and wait for them."""
    main_thread = threading.current_thread() is threading.main_thread()
    # A second Ctrl-C must not cut this short and leave workers behind.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        for future in futures:
            future.cancel()
        terminate = getattr(executor, "terminate_workers", None)  # Python 3.14+
        if terminate is not None:
            terminate()
        else:
            for process in list((getattr(executor, "_processes", None) or {}).values()):
                if process.is_alive():
                    process.terminate()
        executor.shutdown(wait=True, cancel_futures=True)
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)


# --- in the worker processes ---------------------------------------------------------------

_busy = False


def _start_worker(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides (see the docstring)
    signal.signal(signal.SIGTERM, _on_terminate)
    kernel_threads.set_count(threads)
    allocator.keep_freed_memory()  # a worker is qlic's own process, as the parent is


def _on_terminate(signum: int, frame: Any) -> None:
    if _busy:
        raise KeyboardInterrupt  # unwinds the step: atomic_write removes its temporary file
    os._exit(EXIT_INTERRUPTED)


def _attempt_in_worker(step: Callable[[Any], Any], item: Any) -> Outcome:
    global _busy
    try:
        _busy = True
        try:
            return attempt(lambda: step(item))
        finally:
            _busy = False
    except KeyboardInterrupt:
        os._exit(EXIT_INTERRUPTED)


def _caused_by_broken_pipe(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, BrokenPipeError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
