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
        if "pair" in layer:  # a step of two layers, run one after the other
            return self._run_layer(layer["pair"][1], self._run_layer(layer["pair"][0], x),
                                   out=out)
        return x + 1 if out is None else out

    def _run_layer_joined(self, layer, x, head, skip, rows):
        return self._run_layer(layer, x, out=head)


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
    assert "_run_layer_joined" not in vars(net)


def test_a_step_of_two_layers_is_timed_as_the_step():
    net = _Network()
    step = {"name": "g_s.4+g_s.5", "pair": ({"name": "g_s.4"}, {"name": "g_s.5"})}

    def run():
        net._run_layer(step, 1)
        net._run_layer_joined(step, 2, object(), 0, 1)  # a band's join runs the step too

    times = _speed().layer_times(net, run, 1)
    assert list(times) == ["g_s.4+g_s.5"]
    assert [name for name, _ in net.calls] == ["g_s.4+g_s.5", "g_s.4", "g_s.5"] * 2
