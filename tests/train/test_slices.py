"""The channel-conditional entropy model: it starts exactly at the hyperprior it is
initialised from, and no slice's parameters depend on what the decoder has not decoded yet."""

import pytest

torch = pytest.importorskip("torch")

from test_train import LAMBDAS, config, data_root  # noqa: E402,F401  (fixture)
from qlic_codec.train.checkpoint import load_float_model, save_float_model  # noqa: E402
from qlic_codec.train.loop import train  # noqa: E402
from qlic_codec.train.model import MeanScaleHyperprior  # noqa: E402
from qlic_codec.train.slices import ChannelConditionalHyperprior, checkerboard_anchor  # noqa: E402

SLICES = (2, 2, 4, 4)  # M=12, uneven as in ELIC


def _models(checkerboard=False):
    torch.manual_seed(0)
    plain = MeanScaleHyperprior(8, 12, levels=2).eval()
    cc = ChannelConditionalHyperprior(8, 12, 2, slices=SLICES, hidden=6,
                                      checkerboard=checkerboard).eval()
    missing, unexpected = cc.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("contexts.") for k in missing)
    return plain, cc


@pytest.mark.parametrize("checkerboard", [False, True])
def test_starts_exactly_at_the_plain_hyperprior(checkerboard):
    plain, cc = _models(checkerboard)
    x = torch.rand(2, 3, 64, 128)
    level = torch.tensor([0.0, 0.6])
    with torch.no_grad():
        a, b = plain(x, level), cc(x, level)
    assert torch.equal(a["x_hat"], b["x_hat"])
    for name in ("y", "z"):
        assert torch.equal(a["likelihoods"][name], b["likelihoods"][name])


class _Fixed(torch.nn.Module):
    """A stand-in transform that returns a given tensor."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, _):
        return self.value


def _parameters_with_slice_changed(cc, x, level, k):
    """(means, scales) of the model on ``x``, and again with slice ``k`` of ``y`` changed and
    the hyper-latent held fixed (as the decoder holds it)."""
    y = cc.g_a(x)
    z = cc.h_a(y)
    changed = y.clone()
    start = sum(SLICES[:k])
    part = slice(start, start + SLICES[k])
    changed[:, part] += 3.0 * torch.randn_like(changed[:, part])
    g_a, h_a = cc.g_a, cc.h_a
    try:
        cc.h_a = _Fixed(z)
        results = []
        for latent in (y, changed):
            cc.g_a = _Fixed(latent)
            out = cc(x, level)
            results.append((out["mean"], out["scale"]))
    finally:
        cc.g_a, cc.h_a = g_a, h_a
    return results


@pytest.mark.parametrize("checkerboard", [False, True])
@pytest.mark.parametrize("k", range(len(SLICES)))
def test_a_slice_is_predicted_only_from_what_is_decoded_before_it(checkerboard, k):
    _, cc = _models(checkerboard)
    torch.manual_seed(k)
    with torch.no_grad():
        for p in cc.contexts.parameters():
            p.add_(0.3 * torch.randn_like(p))  # non-zero slice networks
    x = torch.rand(1, 3, 128, 128)
    level = torch.tensor([1.0])
    with torch.no_grad():
        (m0, s0), (m1, s1) = _parameters_with_slice_changed(cc, x, level, k)
    start, end = sum(SLICES[:k]), sum(SLICES[: k + 1])
    # Earlier slices never see slice k.
    assert torch.equal(m0[:, :start], m1[:, :start]) and torch.equal(s0[:, :start], s1[:, :start])
    own = (slice(None), slice(start, end))
    if checkerboard:
        # The anchors of slice k are decoded before any of its values are known; the other
        # half sees the anchors, so it may change.
        anchor = checkerboard_anchor(*m0.shape[2:], m0.device).bool().expand_as(m0[own])
        assert torch.equal(m0[own][anchor], m1[own][anchor])
        assert torch.equal(s0[own][anchor], s1[own][anchor])
        assert not torch.equal(m0[own][~anchor], m1[own][~anchor])
    else:
        assert torch.equal(m0[own], m1[own]) and torch.equal(s0[own], s1[own])
    if end < m0.shape[1]:
        assert not torch.equal(m0[:, end:], m1[:, end:])  # later slices do use it


def test_trains_from_a_plain_checkpoint_and_saves_its_slices(tmp_path, data_root):  # noqa: F811
    plain, _ = _models()
    save_float_model(plain, tmp_path / "plain.pt", {"metric": "mse", "lambdas": list(LAMBDAS)})
    run = tmp_path / "run"
    state = train(config(run, data_root, steps=6, slices=SLICES, slice_hidden=6,
                         init_from=str(tmp_path / "plain.pt")), log=lambda line: None)
    assert state["step"] == 6
    model, _ = load_float_model(run / "model_fp16.pt")
    assert isinstance(model, ChannelConditionalHyperprior)
    assert model.slices == SLICES and model.hidden == 6
    assert any(p.abs().sum() > 0 for p in model.contexts[1].params[-1].parameters())


def test_another_split_starts_from_a_channel_conditional_checkpoints_transforms(tmp_path,
                                                                             data_root):  # noqa: F811
    """Eight even slices from a checkpoint with ELIC's uneven ones: the transforms carry over,
    the slice networks start fresh (zero output), nothing else is lost."""
    _, cc = _models()
    with torch.no_grad():  # trained slice networks, so that starting fresh shows
        for ctx in cc.contexts:
            torch.nn.init.normal_(ctx.params[-1].weight, std=0.2)
    save_float_model(cc, tmp_path / "cc.pt", {"metric": "mse", "lambdas": list(LAMBDAS)})
    run, lines = tmp_path / "run", []
    train(config(run, data_root, steps=0, slices=(3, 3, 3, 3), slice_hidden=6,
                 init_from=str(tmp_path / "cc.pt")), log=lines.append)
    assert any("start fresh" in line for line in lines)
    model, _ = load_float_model(run / "model_fp16.pt")
    assert model.slices == (3, 3, 3, 3)
    for name, value in cc.g_s.state_dict().items():
        torch.testing.assert_close(model.g_s.state_dict()[name], value.half().float())
    assert all(float(p.detach().abs().sum()) == 0
               for ctx in model.contexts for p in ctx.params[-1].parameters())


def test_a_plain_model_is_not_initialised_from_slice_networks(tmp_path, data_root):  # noqa: F811
    """Without --slices a channel-conditional checkpoint does not fit: refused, not cut."""
    _, cc = _models()
    save_float_model(cc, tmp_path / "cc.pt", {"metric": "mse", "lambdas": list(LAMBDAS)})
    with pytest.raises(ValueError, match="does not fit this model"):
        train(config(tmp_path / "run", data_root, steps=0, init_from=str(tmp_path / "cc.pt")),
              log=lambda line: None)
