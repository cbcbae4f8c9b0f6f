"""The engine's start-up keeps SciPy out of Numba, whichever engine module is imported first.

Numba imports SciPy (its start-up, and ``scipy.linalg`` for BLAS) although the engine never
calls it; ``engine.cpu`` imports Numba behind an import hook that refuses SciPy, and every
kernel module imports ``cpu`` before Numba. A module that imported Numba first would load
SciPy again: each is imported alone here, in a fresh interpreter.
"""

import subprocess
import sys

import pytest

ENGINE_MODULES = ["kernels", "cpu", "microkernels", "packing", "convolution", "gdn", "roundkernel",
                  "elementwise"]

_SCRIPT = """
import importlib, sys
hooks = list(sys.meta_path)
importlib.import_module("qlic_codec.engine." + sys.argv[1])
# numba.np.arraymath is what asks for scipy.linalg at Numba's first compilation.
print("numba.np.arraymath" in sys.modules, "scipy" in sys.modules, sys.meta_path == hooks)
import scipy.linalg  # the hook is gone: SciPy itself stays importable
print("scipy.linalg" in sys.modules)
"""


@pytest.mark.parametrize("module", ENGINE_MODULES)
def test_engine_start_up_keeps_scipy_out_of_numba(module):
    pytest.importorskip("scipy")  # without SciPy there is nothing to keep out
    out = subprocess.run([sys.executable, "-c", _SCRIPT, module], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "True", "True"], out.stderr
