"""The engine's start-up (Numba without SciPy), the multiply paths this CPU can run, the one
that runs, and the jit options.

Every kernel module imports this one before Numba, so its start-up has run whoever uses the
engine: the command line, the API, a benchmark or a test.

SciPy: where it is installed, Numba imports it when it starts (a version check) and imports
``scipy.linalg`` in ``numba.np.arraymath`` (loaded by the first compilation or cache load) to
see whether BLAS is there, which the engine never uses; that took 0.1-0.2 s of a warm ``qlic
decode`` process. So Numba is imported here behind an import hook that refuses SciPy, and the
hook is removed right after: SciPy stays importable, and jitted ``np.dot`` / ``np.linalg``
still load it when they are first compiled, but jitted ``np.convolve`` / ``np.correlate`` in
this process use Numba's own loop instead of BLAS. A program that imports SciPy before the
engine keeps Numba as it is.

``amx`` is a path only where the CPU has AMX tiles (AMX-INT8) and Linux grants the process the
tile state (``_request_amx_tiles``); where either is missing, the host's fastest path is
``vnni`` and ``QLIC_KERNELS=amx`` falls back to it.

``available_paths`` lists what the host can run (slowest first); ``QLIC_KERNELS`` picks one at
start-up, ``set_path`` / ``use_path`` switch at run time (tests, benchmarks). The selected path
is this module's ``_path``; the other kernel modules read it through ``active_path()``, never
through a copy of their own, so a switch reaches all of them.
"""

import contextlib
import ctypes
import importlib
import os
import platform
import sys

from ..errors import UnsupportedError


class _WithoutScipy:
    """Meta-path finder that refuses SciPy while Numba is imported."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "scipy" or fullname.startswith("scipy."):
            raise ModuleNotFoundError(f"{fullname} is not needed by the qlic engine")
        return None


def _import_numba_without_scipy() -> None:
    if "scipy" in sys.modules or "numba.np.arraymath" in sys.modules:
        return  # SciPy is loaded already, or Numba has settled: nothing left to keep out
    finder = _WithoutScipy()
    sys.meta_path.insert(0, finder)
    try:
        # The module that asks for scipy.linalg is imported by Numba's first compilation or
        # cache load, later; importing it now, under the finder, settles it.
        importlib.import_module("numba.np.arraymath")
    finally:
        sys.meta_path.remove(finder)


_import_numba_without_scipy()

# The one place that sets jit options; no fastmath anywhere in the engine.
JIT = dict(cache=True, nogil=True)
JIT_PARALLEL = dict(cache=True, nogil=True, parallel=True)


def _host_features() -> dict:
    """The host CPU's features, or nothing when Numba compiles for another CPU."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    from numba import config
    if config.CPU_NAME not in (None, "host"):
        return {}  # compiling for another CPU (e.g. a portable cache): no host features
    try:
        import llvmlite.binding as llvm
        return dict(llvm.get_host_cpu_features())
    except Exception:  # pragma: no cover - an llvmlite without feature queries
        return {}


def _host_paths() -> tuple:
    features = _host_features()
    paths = ["portable"]
    if features.get("avx2", False):
        paths.append("avx2")
        if all(features.get(f, False) for f in ("avx512f", "avx512bw", "avx512vnni")):
            paths.append("vnni")
            if features.get("amx-tile", False) and features.get("amx-int8", False) \
                    and _request_amx_tiles():
                paths.append("amx")
    return tuple(paths)


# Linux gives a process the AMX tile state only when it asks: arch_prctl(ARCH_REQ_XCOMP_PERM,
# XFEATURE_XTILEDATA). Until then the first tile instruction would kill it with SIGILL.
_SYS_ARCH_PRCTL = 158  # x86-64
_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18


def _request_amx_tiles() -> bool:
    """Ask the kernel for the AMX tile state (per process, inherited by its threads and
    children); False where it refuses, or where this is not Linux."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(ctypes.c_long(_SYS_ARCH_PRCTL), ctypes.c_long(_ARCH_REQ_XCOMP_PERM),
                            ctypes.c_long(_XFEATURE_XTILEDATA)) == 0
    except (OSError, AttributeError):  # pragma: no cover - no C library to call through
        return False


PATHS = _host_paths()
_ALL_PATHS = ("portable", "avx2", "vnni", "amx")


def _initial_path() -> str:
    wanted = os.environ.get("QLIC_KERNELS", "").strip().lower()
    if wanted in ("", "auto"):
        return PATHS[-1]
    if wanted not in _ALL_PATHS:
        raise UnsupportedError(f"QLIC_KERNELS must be 'portable', 'avx2', 'vnni', 'amx' or "
                               f"'auto', got {wanted!r}")
    # A path the host lacks falls back to the fastest it has below it.
    return max((p for p in PATHS if _ALL_PATHS.index(p) <= _ALL_PATHS.index(wanted)),
               key=_ALL_PATHS.index)


_path = _initial_path()


def available_paths() -> tuple:
    """The multiply paths this host can run, slowest first."""
    return PATHS


def active_path() -> str:
    return _path


def set_path(name: str) -> None:
    """Select the multiply path of the convolution and GDN kernels (see ``available_paths``)."""
    global _path
    if name not in PATHS:
        raise ValueError(f"kernel path {name!r} is not available here (have {PATHS})")
    _path = name


@contextlib.contextmanager
def use_path(name: str):
    before = _path
    set_path(name)
    try:
        yield
    finally:
        set_path(before)
