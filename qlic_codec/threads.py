"""How many threads the engine's kernels use for one image.

The kernels run ``parallel`` over output rows, and every output element is computed by one
thread in integer arithmetic, so the thread count changes the time, never the result.
Numba's thread pool has ``NUMBA_NUM_THREADS`` threads (by default one per core this process
may run on), fixed when Numba is imported; ``use`` picks how many of them run a kernel.

``limit`` answers without importing Numba, so that the command line can check ``--threads``
before it loads the engine (``qlic --help`` must stay light).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

__all__ = ["available_cores", "limit", "set_count", "use"]


def available_cores() -> int:
    """The number of cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def limit() -> int:
    """The most threads a kernel can run on in this process: ``NUMBA_NUM_THREADS``, or the
    number of available cores when it is not set (Numba's own default)."""
    numba = sys.modules.get("numba")
    if numba is not None:
        # Once Numba is loaded its pool is fixed; a later change of the variable is ignored.
        return int(numba.config.NUMBA_NUM_THREADS)
    try:
        value = int(os.environ.get("NUMBA_NUM_THREADS", ""))
    except ValueError:
        value = 0  # unset or not a number: Numba warns and uses its default
    return value if value >= 1 else available_cores()


def set_count(threads: int) -> int:
    """Run the kernels called from this thread on ``threads`` threads from now on.

    Returns:
        The previous count.

    Raises:
        ValueError: ``threads`` is below 1 or above ``limit()``.
    """
    if not 1 <= threads <= limit():
        raise ValueError(f"threads must be 1 to {limit()}, got {threads}")
    # The engine imports Numba behind its SciPy guard (engine/cpu.py): load it first.
    from .engine import cpu  # noqa: F401
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    return before


@contextlib.contextmanager
def use(threads: int | None) -> Iterator[None]:
    """``set_count(threads)`` inside the block and the previous count after it; None leaves
    the count as it is."""
    if threads is None:
        yield
        return
    before = set_count(threads)
    try:
        yield
    finally:
        set_count(before)
