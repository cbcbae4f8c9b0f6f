"""MAC counting of the speed benchmark (benchmarks/speed.py, decoder_macs): shapes only, fast."""

from pathlib import Path

import numpy as np

from qlic_codec import modelfile

from conftest import bench_module

ROOT = Path(__file__).resolve().parents[1]


def _speed():
    return bench_module("speed")


def _layers(names_ops):
    return [dict(name=n, op=op, stride=s) for n, op, s in names_ops]


def _network(n, m):
    """A manifest and weight shapes of the mean-scale hyperprior with N=n, M=m."""
    conv2 = [("conv", 2)]
    transforms = {
        "g_a": _layers([(f"g_a.{i}", op, s) for i, (op, s) in
                        enumerate((conv2 + [("gdn", 1)]) * 3 + conv2)]),
        "h_a": _layers([("h_a.0", "conv", 1), ("h_a.1", "conv", 2), ("h_a.2", "conv", 2)]),
        "h_s": _layers([("h_s.0", "deconv", 2), ("h_s.1", "deconv", 2), ("h_s.2", "conv", 1)]),
        "g_s": _layers([(f"g_s.{i}", op, s) for i, (op, s) in
                        enumerate(([("deconv", 2), ("igdn", 1)]) * 3 + [("deconv", 2)])]),
    }
    shapes = {"h_s.0.weight": (m, 5, 5, n), "h_s.1.weight": (m * 3 // 2, 5, 5, m),
              "h_s.2.weight": (2 * m, 3, 3, m * 3 // 2), "g_s.0.weight": (n, 5, 5, m),
              "g_s.2.weight": (n, 5, 5, n), "g_s.4.weight": (n, 5, 5, n),
              "g_s.6.weight": (3, 5, 5, n)}
    shapes.update({f"g_s.{i}.gamma": (n, n) for i in (1, 3, 5)})
    return {"transforms": transforms}, {k: np.empty(v, np.int8) for k, v in shapes.items()}


def _expected(n, m, zh, zw):
    """The decoder's MACs written out by hand; z is zh x zw, y is 4zh x 4zw."""
    yh, yw = 4 * zh, 4 * zw
    return [
        ("h_s.0", zh * zw * 25 * n * m),                           # transposed 5x5/2
        ("h_s.1", 2 * zh * 2 * zw * 25 * m * (m * 3 // 2)),        # transposed 5x5/2
        ("h_s.2", yh * yw * 9 * (m * 3 // 2) * 2 * m),             # conv 3x3/1
        ("g_s.0", yh * yw * 25 * m * n),
        ("g_s.1", 2 * yh * 2 * yw * n * n),                        # inverse GDN, 1x1
        ("g_s.2", 2 * yh * 2 * yw * 25 * n * n),
        ("g_s.3", 4 * yh * 4 * yw * n * n),
        ("g_s.4", 4 * yh * 4 * yw * 25 * n * n),
        ("g_s.5", 8 * yh * 8 * yw * n * n),
        ("g_s.6", 8 * yh * 8 * yw * 25 * n * 3),
    ]


def test_full_size_network_768x512():
    manifest, arrays = _network(128, 192)
    layers = _speed().decoder_macs(manifest, arrays, 512, 768)
    assert layers == _expected(128, 192, 8, 12)
    # g_s alone: the 7 layers benchmarks/kernels.py sums (4 transposed convs, 3 inverse GDNs)
    gs = sum(m for name, m in layers if name.startswith("g_s"))
    assert gs == (48 * 32 * 25 * 192 * 128 + 96 * 64 * 128 * 128 + 96 * 64 * 25 * 128 * 128
                  + 192 * 128 * 128 * 128 + 192 * 128 * 25 * 128 * 128
                  + 384 * 256 * 128 * 128 + 384 * 256 * 25 * 128 * 3)


def test_padding_to_the_block():
    # 1920x1080 is padded to 1920x1088 (multiples of 64): z is 17 x 30
    manifest, arrays = _network(128, 192)
    assert _speed().decoder_macs(manifest, arrays, 1080, 1920) == _expected(128, 192, 17, 30)
    assert _speed().decoder_macs(manifest, arrays, 1, 1) == _expected(128, 192, 1, 1)


def test_tiny_model_file():
    manifest, arrays, _ = modelfile.read(ROOT / "tests" / "golden" / "tiny-mse.qlicm")
    n, m = manifest["N"], manifest["M"]
    assert _speed().decoder_macs(manifest, arrays, 200, 300) == _expected(n, m, 4, 5)


def test_baseline_timing_takes_turns_and_keeps_each_best(monkeypatch):
    """``--baseline``: the two models' calls alternate in every round, and each gets its own
    best time."""
    speed = _speed()
    order = []
    clock = iter([0.0, 3.0, 3.0, 4.0, 10.0, 12.0, 12.0, 12.5])
    monkeypatch.setattr(speed.time, "perf_counter", lambda: next(clock))
    best = speed.interleaved_best([lambda: order.append("a"), lambda: order.append("b")], 2)
    assert order == ["a", "b", "a", "b"]
    assert best == [2.0, 0.5]
