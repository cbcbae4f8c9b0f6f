"""A wider latent from a trained model (``train.widen``): the wider model reconstructs exactly
what the trained one did, its new channels can learn, and training starts from it."""

import pytest

torch = pytest.importorskip("torch")

from test_train import LAMBDAS, config, data_root  # noqa: E402,F401  (fixture)
from qlic_codec.train.checkpoint import load_float_model, save_float_model  # noqa: E402
from qlic_codec.train.loop import train  # noqa: E402
from qlic_codec.train.model import MeanScaleHyperprior  # noqa: E402
from qlic_codec.train.slices import ChannelConditionalHyperprior  # noqa: E402
from qlic_codec.train.widen import latent_channels, widen  # noqa: E402


def _trained_and_wide(M2=20):
    torch.manual_seed(0)
    narrow = MeanScaleHyperprior(8, 12, levels=2)
    with torch.no_grad():  # biases away from their zero init, so that each one is checked
        for p in narrow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    wide = MeanScaleHyperprior(8, M2, levels=2)
    wide.load_state_dict(widen(narrow.state_dict(), wide.state_dict()))
    return narrow.eval(), wide.eval()


def test_the_wider_model_reconstructs_what_the_trained_one_did():
    narrow, wide = _trained_and_wide()
    assert latent_channels(wide.state_dict()) == 20
    x = torch.rand(2, 3, 64, 64)
    level = torch.tensor([0.0, 1.0])
    with torch.no_grad():
        a, b = narrow(x, level), wide(x, level)
        torch.testing.assert_close(b["x_hat"], a["x_hat"], rtol=0, atol=1e-5)
        # The old channels' likelihoods are the same; the new ones add rate, and only that.
        torch.testing.assert_close(b["likelihoods"]["y"][:, :12], a["likelihoods"]["y"],
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(b["likelihoods"]["z"], a["likelihoods"]["z"], rtol=0,
                                   atol=1e-5)


def test_the_new_channels_cost_almost_nothing_and_get_gradients():
    """The new latents round to 0 under the smallest scale, and the rounding's
    straight-through estimate carries the synthesis' gradient to the analysis."""
    _, wide = _trained_and_wide()
    x, level = torch.rand(2, 3, 64, 64), torch.tensor([0.0, 1.0])
    with torch.no_grad():
        bits = -torch.log2(wide(x, level)["likelihoods"]["y"][:, 12:]).sum()
    assert float(bits) < 0.01 * 8 * 4 * 4 * 2  # under 0.01 bit per new latent
    wide.train()
    out = wide(x, level)
    loss = out["x_hat"].square().mean() - out["likelihoods"]["y"].log().mean()
    loss.backward()
    assert wide.g_a[6].weight.grad[12:].abs().sum() > 0
    assert wide.h_s[4].weight.grad[:, 18:].abs().sum() > 0


def test_the_new_latents_round_to_zero_at_a_trained_models_largest_gains():
    """A trained model's top log-gain is about 2.3 (the MSE model at quality 8): at e**3 the
    new latents of a photo-like input still round to 0, so the reconstruction is the same."""
    narrow, _ = _trained_and_wide()
    with torch.no_grad():
        narrow.log_gain[1] = 3.0
    wide = MeanScaleHyperprior(8, 20, levels=2)
    wide.load_state_dict(widen(narrow.state_dict(), wide.state_dict()))
    wide.eval()
    x = torch.rand(2, 3, 64, 64)
    level = torch.tensor([1.0, 1.0])
    with torch.no_grad():
        y_g = wide.g_a(x)[:, 12:] * wide.gains(level)[:, 12:, None, None]
        assert float(y_g.abs().max()) < 0.5
        torch.testing.assert_close(wide(x, level)["x_hat"], narrow(x, level)["x_hat"], rtol=0,
                                   atol=1e-5)


def test_a_checkpoint_that_does_not_fit_is_refused_by_name():
    narrow, wide = _trained_and_wide()
    weights = dict(narrow.state_dict())
    weights["g_a.9.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected"):
        widen(weights, wide.state_dict())
    del weights["g_a.9.weight"], weights["h_a.0.weight"]
    with pytest.raises(ValueError, match="missing"):
        widen(weights, wide.state_dict())


def test_a_narrower_latent_is_refused():
    narrow, wide = _trained_and_wide()
    with pytest.raises(ValueError, match="cannot narrow"):
        widen(wide.state_dict(), narrow.state_dict())


def test_training_starts_a_wider_channel_conditional_model_from_a_trained_one(tmp_path,
                                                                            data_root):  # noqa: F811
    narrow, _ = _trained_and_wide()
    save_float_model(narrow, tmp_path / "m12.pt", {"metric": "mse", "lambdas": list(LAMBDAS)})
    run, lines = tmp_path / "run", []
    train(config(run, data_root, steps=0, M=20, slices=(5, 5, 5, 5), slice_hidden=6,
                 init_from=str(tmp_path / "m12.pt")), log=lines.append)
    assert any("widened from M=12 to M=20" in line for line in lines)
    model, _ = load_float_model(run / "model_fp16.pt")
    assert isinstance(model, ChannelConditionalHyperprior) and model.M == 20
    torch.testing.assert_close(model.g_a[6].weight[:12], narrow.g_a[6].weight.half().float())

    assert float(model.g_a[6].weight.detach()[12:].abs().max()) < 0.1 * float(
        model.g_a[6].weight.detach()[:12].abs().max())


def test_a_wider_model_from_a_channel_conditional_one_starts_its_slices_fresh(tmp_path,
                                                                             data_root):  # noqa: F811
    """The slice networks follow the split of y: with a wider latent they cannot carry over."""
    torch.manual_seed(0)
    cc = ChannelConditionalHyperprior(8, 12, 2, slices=(6, 6), hidden=6)
    with torch.no_grad():
        for ctx in cc.contexts:
            torch.nn.init.normal_(ctx.params[-1].weight, std=0.2)
    save_float_model(cc, tmp_path / "cc.pt", {"metric": "mse", "lambdas": list(LAMBDAS)})
    run, lines = tmp_path / "run", []
    train(config(run, data_root, steps=0, M=20, slices=(5, 5, 5, 5), slice_hidden=6,
                 init_from=str(tmp_path / "cc.pt")), log=lines.append)
    assert any("widened" in line for line in lines)
    assert any("start fresh" in line for line in lines)
    model, _ = load_float_model(run / "model_fp16.pt")
    assert model.M == 20 and model.slices == (5, 5, 5, 5)
    assert all(float(p.detach().abs().sum()) == 0
               for ctx in model.contexts for p in ctx.params[-1].parameters())
