"""The speed benchmark's layer timer (benchmarks/speed.py, layer_times): fast, no timing
asserted."""

from conftest import bench_module


def _speed():
    return bench_module("speed")


class _Network:
    """Runs layers as the integer network does: a band's join passes ``out``."""

    def __init__(self):
        self.calls = []

    def _run_layer(self, layer, x, out=None):
        self.calls.append((layer["name"], out))
        return x + 1 if out is None else out


def test_layer_times_passes_out_through_and_unwraps():
    net = _Network()
    buffer = object()

    def run():
        net._run_layer({"name": "g_s.0"}, 1)
        net._run_layer({"name": "g_s.1"}, 2, out=buffer)
        net._run_layer({"name": "g_s.1"}, 3, out=buffer)

    times = _speed().layer_times(net, run, 2)
    assert sorted(times) == ["g_s.0", "g_s.1"] and all(t >= 0 for t in times.values())
    assert net.calls[:3] == [("g_s.0", None), ("g_s.1", buffer), ("g_s.1", buffer)]
    assert "_run_layer" not in vars(net)  # the instance's own runner is back
