"""Learned quantization steps of z per level: a model with them starts exactly at the one
without, the prior's mass is taken over each symbol's interval of z, and a run initialised
from a model without them learns them at their own rate."""

import pytest

torch = pytest.importorskip("torch")

from test_train import LAMBDAS, config, data_root  # noqa: E402,F401  (fixture)
from qlic_codec.train.checkpoint import load_float_model, save_float_model  # noqa: E402
from qlic_codec.train.loop import train  # noqa: E402
from qlic_codec.train.slices import ChannelConditionalHyperprior  # noqa: E402

SLICES = (4, 4, 4)


def _models():
    torch.manual_seed(0)
    plain = ChannelConditionalHyperprior(8, 12, 2, slices=SLICES, hidden=6).eval()
    stepped = ChannelConditionalHyperprior(8, 12, 2, slices=SLICES, hidden=6,
                                           z_steps=True).eval()
    missing, unexpected = stepped.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["log_z_step"] and not unexpected
    return plain, stepped


@pytest.mark.parametrize("training", [False, True])
def test_steps_of_one_change_nothing(training):
    plain, stepped = _models()
    x = torch.rand(2, 3, 64, 128)
    level = torch.tensor([0.0, 0.6])
    plain.train(training)
    stepped.train(training)
    with torch.no_grad():
        torch.manual_seed(1)  # the same noise in both, where training draws it
        a = plain(x, level)
        torch.manual_seed(1)
        b = stepped(x, level)
    assert torch.equal(a["x_hat"], b["x_hat"])
    for name in ("y", "z"):
        assert torch.equal(a["likelihoods"][name], b["likelihoods"][name])


def test_each_level_has_its_own_steps_and_between_levels_their_geometric_mean():
    _, model = _models()
    with torch.no_grad():
        model.log_z_step.copy_(torch.log(torch.tensor([[1.0] * 8, [4.0] * 4 + [0.25] * 4])))
    steps = model.z_step(torch.tensor([0.0, 1.0, 0.5]))[:, :, 0, 0]
    torch.testing.assert_close(steps[0], torch.ones(8))
    torch.testing.assert_close(steps[1], torch.tensor([4.0] * 4 + [0.25] * 4))
    torch.testing.assert_close(steps[2], torch.tensor([2.0] * 4 + [0.5] * 4))
    # The level's steps are the ones its z is coded with: level 1's coarse channels cost
    # fewer bits than level 0's, its fine ones more.
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        lik = [model(x, torch.tensor([v]))["likelihoods"]["z"][0] for v in (0.0, 1.0)]
    bits = [-torch.log2(v).sum(dim=(1, 2)) for v in lik]
    assert torch.all(bits[1][:4] <= bits[0][:4]) and torch.all(bits[1][4:] >= bits[0][4:])


def test_the_mass_of_a_symbol_is_the_priors_over_its_interval():
    _, model = _models()
    prior = model.z_prior
    symbols = torch.arange(-6.0, 7.0).repeat(8, 1).T[:, :, None, None]  # (13, 8, 1, 1)
    step = torch.linspace(0.5, 3.0, 8)[None, :, None, None]
    mass = prior.likelihood(symbols, step)[:, :, 0, 0]
    cdf = torch.sigmoid(prior.logits_cdf(((symbols + 0.5) * step)[:, :, 0, 0].T[:, None, :]))
    cdf_lo = torch.sigmoid(prior.logits_cdf(((symbols - 0.5) * step)[:, :, 0, 0].T[:, None, :]))
    torch.testing.assert_close(mass, (cdf - cdf_lo)[:, 0, :].T)


def test_a_coarser_step_costs_fewer_bits_of_z():
    _, model = _models()
    x = torch.rand(1, 3, 128, 128)
    bits = []
    with torch.no_grad():
        for log_step in (0.0, 1.0):
            model.log_z_step.fill_(log_step)
            out = model(x, torch.tensor([0.0]))
            bits.append(float(-torch.log2(out["likelihoods"]["z"]).sum()))
    assert bits[1] < bits[0]


def test_a_run_learns_them_from_a_model_without(tmp_path, data_root):  # noqa: F811
    plain, _ = _models()
    save_float_model(plain, tmp_path / "plain.pt", {"metric": "mse", "lambdas": list(LAMBDAS)})
    run = tmp_path / "run"
    # The weights barely move at this rate; the steps move at theirs.
    train(config(run, data_root, steps=4, lr=1e-9, slices=SLICES, slice_hidden=6,
                 z_steps=True, z_step_lr=1e-2, init_from=str(tmp_path / "plain.pt")),
          log=lambda line: None)
    model, _ = load_float_model(run / "model_fp16.pt")
    assert model.z_steps
    moved = model.log_z_step.detach().abs()
    assert moved.max() > 1e-3
    torch.testing.assert_close(model.g_s[0].weight, plain.g_s[0].weight.half().float(),
                               atol=1e-6, rtol=0)
    blob = torch.load(run / "last.pt", weights_only=False)
    scales = [g.get("lr_scale") for g in blob["optimizer"]["param_groups"]]
    assert scales == [None, pytest.approx(1e7)]


def test_the_integer_tools_refuse_a_model_with_steps(tmp_path, monkeypatch):
    from qlic_codec import allocator
    from qlic_codec.quantize import export, finetune, simulate
    # The fine-tune's command sets the allocator policy first; not in the test process.
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: True)
    _, model = _models()
    with pytest.raises(ValueError, match="steps of z"):
        simulate.SimulatedModel(model)
    with pytest.raises(ValueError, match="steps of z"):
        export.build(model, {}, {}, {})
    save_float_model(model, tmp_path / "m.pt", {"metric": "mse", "lambdas": list(LAMBDAS)})
    with pytest.raises(SystemExit):
        finetune.main([str(tmp_path / "m.pt"), "-o", str(tmp_path / "q.pt")])


def _steps_run(tmp_path, data_root, **changes):  # noqa: F811
    plain, _ = _models()
    save_float_model(plain, tmp_path / "plain.pt", {"metric": "mse", "lambdas": list(LAMBDAS)})
    settings = dict(steps=2, slices=SLICES, slice_hidden=6, z_steps=True, z_step_lr=1e-2,
                    init_from=str(tmp_path / "plain.pt"))
    settings.update(changes)
    return config(tmp_path / "run", data_root, **settings)


def test_a_resumed_run_takes_this_runs_rate_for_the_steps(tmp_path, data_root):  # noqa: F811
    train(_steps_run(tmp_path, data_root), log=lambda line: None)
    lines = []
    train(_steps_run(tmp_path, data_root, steps=3, z_step_lr=3e-2), log=lines.append)
    assert any("resumed" in line for line in lines)
    blob = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert blob["optimizer"]["param_groups"][1]["lr_scale"] == pytest.approx(3e-2 / 3e-3)


def test_a_run_resumed_without_the_steps_says_so(tmp_path, data_root):  # noqa: F811
    train(_steps_run(tmp_path, data_root), log=lambda line: None)
    with pytest.raises(ValueError, match="--z-steps"):
        train(_steps_run(tmp_path, data_root, steps=3, z_steps=False), log=lambda line: None)


def test_a_new_quality_table_moves_the_steps_with_the_gains(tmp_path, data_root):  # noqa: F811
    _, model = _models()
    with torch.no_grad():
        model.log_z_step.copy_(torch.tensor([[0.0] * 8, [1.0] * 8]))
    save_float_model(model, tmp_path / "m.pt", {"metric": "mse", "lambdas": [0.01, 0.04]})
    run = tmp_path / "run"
    # 0.02 lies halfway between 0.01 and 0.04 on the log axis.
    train(config(run, data_root, steps=0, slices=SLICES, slice_hidden=6, z_steps=True,
                 lambdas=(0.01, 0.02), init_from=str(tmp_path / "m.pt")),
          log=lambda line: None)
    moved, _ = load_float_model(run / "model_fp16.pt")
    torch.testing.assert_close(moved.log_z_step[1], torch.full((8,), 0.5), atol=1e-3, rtol=0)


def test_a_wider_latent_starts_with_steps_of_one(tmp_path, data_root):  # noqa: F811
    plain, _ = _models()
    save_float_model(plain, tmp_path / "plain.pt", {"metric": "mse", "lambdas": list(LAMBDAS)})
    run = tmp_path / "run"
    train(config(run, data_root, steps=0, M=16, slices=(4, 4, 4, 4), slice_hidden=6,
                 z_steps=True, init_from=str(tmp_path / "plain.pt")), log=lambda line: None)
    model, _ = load_float_model(run / "model_fp16.pt")
    assert model.M == 16 and float(model.log_z_step.detach().abs().sum()) == 0
