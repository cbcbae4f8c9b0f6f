"""Shared fixtures: a synthetic photo generator and the tiny golden model."""

import importlib
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
TINY_MODEL = GOLDEN / "tiny-mse.qlicm"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def bench_module(name: str):
    """The module ``benchmarks/<name>.py``. The benchmarks are scripts, not a package, and
    import one another by name, so their folder goes on the import path once."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


def synthetic_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic, photo-like uint8 RGB image: smooth colour fields, edges and grain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3))
    for c in range(3):
        for _ in range(4):
            fy, fx, phase = rng.uniform(0.005, 0.08, 2).tolist() + [rng.uniform(0, 6.3)]
            img[..., c] += np.sin(yy * fy + xx * fx + phase)
    img += (xx > width * rng.uniform(0.3, 0.7))[..., None] * rng.uniform(-1.5, 1.5, 3)
    img = (img - img.min()) / max(np.ptp(img), 1e-9) * 220 + 18
    img += rng.normal(0, 4, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def tiny_cc_float_model():
    """A tiny float channel-conditional model (N=8, M=12, two levels, slices 2, 4, 6) with
    large gains and random last layers in its slice networks, so that every slice network
    moves the means, the tables and the latent (a new model's last layers start at zero)."""
    import torch

    from qlic_codec.train.slices import ChannelConditionalHyperprior
    torch.manual_seed(5)
    model = ChannelConditionalHyperprior(N=8, M=12, levels=2, slices=(2, 4, 6), hidden=8).eval()
    with torch.no_grad():
        model.log_gain.add_(2.0)
        for ctx in model.contexts:
            for net in (ctx.params, ctx.lrp):
                torch.nn.init.normal_(net[-1].weight, std=0.2)
    return model


@pytest.fixture(scope="session", autouse=True)
def ctrl_c_not_ignored():
    """The tests that press Ctrl-C need children that do not ignore it. A shell without job
    control starts a background command with SIGINT ignored, the children inherit that, and
    Python then never raises KeyboardInterrupt (which is right for a background job); a
    handled SIGINT in this process goes back to the default action in each child instead."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """Path of the committed tiny model (random weights with large gains, N=16, M=24)."""
    if not TINY_MODEL.is_file():
        pytest.fail(f"missing golden model {TINY_MODEL.name}; run python tests/golden/generate.py")
    return str(TINY_MODEL)


# --- kernel paths and thread counts ---------------------------------------------------------

@pytest.fixture(params=["portable", "avx2", "vnni", "amx"])
def kernel_path(request):
    """Each multiply path of the kernels in turn (skipped where the CPU lacks it); the ids
    are what the summary below counts."""
    from qlic_codec.engine import kernels
    if request.param not in kernels.available_paths():
        pytest.skip(f"no {request.param} path on this host")
    with kernels.use_path(request.param):
        yield request.param


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def threads(request):
    """The kernels' thread count, 1 and 2 (skipped where Numba allows fewer)."""
    import numba
    n = request.param
    if n > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS} < {n}")
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    yield n
    numba.set_num_threads(before)


# --- which kernel paths this run exercised ---------------------------------------------------

_KERNEL_PATHS = ("portable", "avx2", "vnni", "amx")
_path_outcomes: dict = {p: {"passed": 0, "failed": 0, "skipped": 0, "why": set()}
                        for p in _KERNEL_PATHS}


def _kernel_path_of(nodeid: str):
    if "[" not in nodeid:
        return None
    params = nodeid.rsplit("[", 1)[1].rstrip("]").split("-")
    found = [p for p in _KERNEL_PATHS if p in params]
    return found[0] if found else None


def pytest_runtest_logreport(report):
    path = _kernel_path_of(report.nodeid)
    if path is None:
        return
    counts = _path_outcomes[path]
    if report.skipped:
        counts["skipped"] += 1
        if isinstance(report.longrepr, tuple):
            counts["why"].add(report.longrepr[2].removeprefix("Skipped: "))
    elif report.when == "call":
        counts["passed" if report.passed else "failed"] += 1


def pytest_terminal_summary(terminalreporter):
    """Say which multiply paths the kernel, golden and engine tests ran, and which were
    skipped and why, so a run on a CPU without VNNI cannot pass for a full one."""
    if not any(c["passed"] + c["failed"] + c["skipped"] for c in _path_outcomes.values()):
        return  # no test of this run has a kernel path
    from qlic_codec.engine import kernels
    tr = terminalreporter
    tr.section("kernel paths")
    tr.write_line(f"host has: {', '.join(kernels.available_paths())}")
    for path, c in _path_outcomes.items():
        line = f"{path:>8}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"
        if c["why"]:
            line += f" ({'; '.join(sorted(c['why']))})"
        tr.write_line(line)
