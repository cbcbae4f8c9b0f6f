"""How the processes that qlic owns (the command line, its worker processes, training) ask
the C allocator to keep the memory it frees.

A decode or encode allocates and frees the same large arrays band after band and layer after
layer: activations, their padded copies, accumulators. By default glibc's malloc serves every
block above a threshold (at most 32 MiB) with a fresh ``mmap`` and returns it with
``munmap`` when freed, and numpy asks the kernel for transparent huge pages on large arrays.
So every band faults its pages in again, and the kernel zeroes (and at times compacts) huge
pages for each: in a fresh process that decodes one 1920x1080 photo on two threads, 0.4 to
1.3 s of system time against about 0.5 s of work (``benchmarks/README.md``, "A whole
command, and the C allocator"). Served from the heap and kept when freed, the pages are
faulted once and reused.

Only the process's own allocator policy changes, not what is computed: files and pixels are
the same either way. The library itself leaves a host process's allocator alone; the command
line calls ``keep_freed_memory`` at start, as do its worker processes and the workers of the
Dask cluster that ``qlic batch`` starts for itself (``qlic_codec.daskworker``; not those of a
cluster given by address), and ``QLIC_MALLOC=system`` turns it off. Training and the
quantization-aware fine-tune (``python -m qlic_codec.train``, ``quantize.finetune``) call it
too: a training step frees and allocates the same activations, and on a CPU a step was
1.05-1.24x faster with them kept (``benchmarks/train_step.py``).
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
# Freed memory at the top of the heap is returned to the system only beyond this (the
# largest value mallopt takes): in a process that runs one command, never.
_TRIM = 2**31 - 1
# The heap grows in steps of at least this, so a band's arrays do not each move the break.
_TOP_PAD = 256 << 20

ENV = "QLIC_MALLOC"


def keep_freed_memory(environ=os.environ) -> bool:
    """Serve every allocation from the heap and keep what is freed, where the C library is
    glibc on Linux and ``QLIC_MALLOC`` is not ``system``. Returns whether it was applied."""
    if environ.get(ENV, "").strip().lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt): nothing to tune
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; all three or the policy is only partly what is described.
    return all(mallopt(p, v) == 1 for p, v in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM),
                                               (_M_TOP_PAD, _TOP_PAD)))
