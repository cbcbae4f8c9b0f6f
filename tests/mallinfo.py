"""What glibc's malloc has mapped on its own (``mallinfo2().hblkhd``), for the tests of the
allocator policy (``qlic_codec.allocator``): a large array that the heap serves maps
nothing. Used in the test process, in child processes and in Dask workers."""

import ctypes
import sys

import numpy as np

_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
           "fordblks", "keepcost")


class _Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS]


def available() -> bool:
    """glibc 2.33 or later on Linux, where mallinfo2 exists."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return hasattr(ctypes.CDLL(None), "mallinfo2")
    except OSError:
        return False


def mapped_by_a_large_array() -> int:
    """Bytes that allocating a 64 MiB array (above any mmap threshold glibc picks by itself)
    adds to what malloc has mapped on its own: 0 when the heap serves it."""
    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = _Info
    before = mallinfo2().hblkhd
    block = np.ones(64 << 20, np.uint8)
    mapped = mallinfo2().hblkhd - before
    del block
    return mapped
