"""The ONNX peer of benchmarks/speed.py: the exported decoder computes what PyTorch computes."""


import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from conftest import bench_module  # noqa: E402
from qlic_codec.train.model import MeanScaleHyperprior  # noqa: E402

onnx_peer = bench_module("onnx_peer")


def tiny_model():
    torch.manual_seed(0)
    model = MeanScaleHyperprior(8, 12, 2).eval()
    with torch.no_grad():  # away from the identity GDN of the initialisation
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_phase_deconvs_compute_the_same_function():
    model = tiny_model()
    phases = onnx_peer.with_phase_deconvs(model)
    y = torch.randn(1, 12, 5, 7)
    z = torch.randn(1, 8, 3, 2)
    with torch.no_grad():
        np.testing.assert_allclose(phases.g_s(y).numpy(), model.g_s(y).numpy(), atol=1e-5)
        np.testing.assert_allclose(phases.h_s(z).numpy(), model.h_s(z).numpy(), atol=1e-5)


@pytest.mark.parametrize("phases", [False, True])
def test_onnx_export_matches_pytorch_at_another_size(tmp_path, phases):
    model = tiny_model()
    exported = onnx_peer.with_phase_deconvs(model) if phases else model
    path = onnx_peer.export_decoder(exported, tmp_path / "d.onnx", torch.randn(1, 8, 1, 1),
                                    torch.randn(1, 12, 4, 4))
    z = torch.round(2 * torch.randn(1, 8, 2, 3))  # not the example's size: dynamic axes
    y = torch.round(4 * torch.randn(1, 12, 8, 12))
    _, (params, x_hat) = onnx_peer.run_session(path, {"z_hat": z.numpy(), "y_hat": y.numpy()},
                                               threads=1, repeat=1)
    with torch.no_grad():
        np.testing.assert_allclose(params, model.h_s(z).numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(x_hat, model.g_s(y).numpy(), rtol=1e-4, atol=1e-4)
