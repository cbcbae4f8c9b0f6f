"""The float model and its training loop, on a tiny model and a generated image set.

Everything here is sized to run in seconds on a shared CPU: N=8, M=12, two levels,
64x64 crops, batch 2.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

import qlic_codec  # noqa: E402
from conftest import synthetic_photo  # noqa: E402
from qlic_codec import api  # noqa: E402
from qlic_codec.quantize.export import export  # noqa: E402
from qlic_codec.train.checkpoint import load_float_model  # noqa: E402
from qlic_codec.train.loop import TrainConfig, rd_loss, train  # noqa: E402
from qlic_codec.train.metrics import ms_ssim, psnr  # noqa: E402
from qlic_codec.train.model import MeanScaleHyperprior  # noqa: E402
from qlic_codec.train.priors import FactorizedPrior  # noqa: E402

LAMBDAS = (0.01, 0.05)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: the runs are tiny, and the results do not depend on the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "train").mkdir()
    for seed in range(4):
        Image.fromarray(synthetic_photo(96, 96, seed)).save(root / "train" / f"{seed:02d}.png")
    return root


def config(run_dir, data_root, **changes) -> TrainConfig:
    settings = dict(run_dir=str(run_dir), data_root=str(data_root), steps=30, batch=2, crop=64,
                    lr=3e-3, log_every=1, checkpoint_minutes=60.0, bf16="off", device="cpu",
                    N=8, M=12, lambdas=LAMBDAS, seed=0, warmup_steps=0)
    settings.update(changes)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root):
    """A 30-step run: (run folder, final state)."""
    run = tmp_path_factory.mktemp("run")
    state = train(config(run, data_root), log=lambda line: None)
    return run, state


def test_loss_falls(trained):
    run, state = trained
    assert state["step"] == 30
    losses = [entry["loss"] for entry in state["history"]]
    assert [entry["step"] for entry in state["history"]] == list(range(1, 31))
    assert all(np.isfinite(losses))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.5 * first, (first, last)
    assert (run / "last.pt").is_file() and (run / "model_fp16.pt").is_file()
    assert not list(run.glob("*.tmp"))


def test_rd_loss_in_own_loop():
    torch.manual_seed(0)
    model = MeanScaleHyperprior(N=8, M=12, levels=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = torch.from_numpy(synthetic_photo(64, 64, 11)).permute(2, 0, 1)[None].float() / 255
    x = x.repeat(2, 1, 1, 1)
    level = torch.tensor([0.0, 1.0])
    lambdas = torch.tensor(LAMBDAS)
    losses = []
    for _ in range(15):
        loss, bpp, dist = rd_loss(model, x, level, lambdas, "mse")
        assert bpp > 0 and dist > 0
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    # MS-SSIM needs at least 161 pixels a side (five scales of an 11-tap window).
    big = torch.from_numpy(synthetic_photo(192, 192, 12)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        loss, bpp, dist = rd_loss(model, big, torch.tensor([1.0]), torch.tensor((2.4, 4.6)),
                                  "msssim")
    assert torch.isfinite(loss) and bpp > 0 and 0 < dist < 4.6


def test_time_limit_then_resume(tmp_path, data_root):
    run = tmp_path / "run"
    lines = []
    # A time limit far below one step's duration stops the run at once, with a checkpoint.
    state = train(config(run, data_root, steps=1000, time_limit_minutes=1e-9), log=lines.append)
    stopped_at = state["step"]
    assert stopped_at < 3
    assert (run / "last.pt").is_file()

    lines.clear()
    state = train(config(run, data_root, steps=4, lr_drop_at=1.0), log=lines.append)
    assert any(f"at step {stopped_at}" in line and "resumed" in line for line in lines)
    assert state["step"] == 4

    lines.clear()
    state = train(config(run, data_root, steps=7, lr_drop_at=1.0), log=lines.append)
    assert any("resumed" in line and "at step 4" in line for line in lines)
    assert state["step"] == 7
    assert [entry["step"] for entry in state["history"]] == list(range(stopped_at + 1, 8))
    blob = torch.load(run / "last.pt", weights_only=False)
    assert blob["state"]["step"] == 7

    # Finished: running again with the same step count does no step.
    lines.clear()
    assert train(config(run, data_root, steps=7, lr_drop_at=1.0), log=lines.append)["step"] == 7
    assert not any(line.startswith("step=") for line in lines)

    # The resumed run ends with the weights of an uninterrupted one (optimizer, sampler and
    # noise generator state all travel in the checkpoint).
    straight = tmp_path / "straight"
    train(config(straight, data_root, steps=7, lr_drop_at=1.0), log=lambda line: None)
    a = torch.load(run / "model_fp16.pt", weights_only=True)["state_dict"]
    b = torch.load(straight / "model_fp16.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def _outputs(model, x, level):
    torch.manual_seed(0)
    with torch.no_grad():
        out = model(x, level)
    return out["x_hat"], out["likelihoods"]["y"], out["likelihoods"]["z"]


def test_checkpoint_round_trip(trained):
    run, _ = trained
    loaded, meta = load_float_model(run / "model_fp16.pt")
    assert not loaded.training
    assert (loaded.N, loaded.M, loaded.levels) == (8, 12, 2)
    assert meta["steps"] == 30 and meta["lambdas"] == list(LAMBDAS) and meta["metric"] == "mse"

    blob = torch.load(run / "last.pt", weights_only=False)
    rounded = MeanScaleHyperprior(N=8, M=12, levels=2)
    rounded.load_state_dict({k: v.half().float() for k, v in blob["model"].items()})
    rounded.eval()
    full = MeanScaleHyperprior(N=8, M=12, levels=2)
    full.load_state_dict(blob["model"])
    full.eval()

    x = torch.from_numpy(synthetic_photo(64, 128, 4)).permute(2, 0, 1)[None].float() / 255
    x = x.repeat(3, 1, 1, 1)
    level = torch.tensor([0.0, 0.5, 1.0])
    for a, b in zip(_outputs(loaded, x, level), _outputs(rounded, x, level)):
        assert torch.equal(a, b)
    # The fp16 file is a rounding of the trained weights, not a copy of other ones: the same
    # pictures and rates. (A latent at a rounding boundary can flip to the next integer and
    # change its own likelihood a lot, so the likelihoods are compared on average.)
    (x_a, *lik_a), (x_b, *lik_b) = _outputs(loaded, x, level), _outputs(full, x, level)
    assert torch.allclose(x_a, x_b, atol=0.05)
    for a, b in zip(lik_a, lik_b):
        assert (a - b).abs().mean() < 0.01
        bits_a, bits_b = -torch.log2(a).sum(), -torch.log2(b).sum()
        assert abs(bits_a - bits_b) < 0.01 * bits_b

    # A training checkpoint loads too, in full precision.
    from_ckpt, _ = load_float_model(run / "last.pt")
    for a, b in zip(_outputs(from_ckpt, x, level), _outputs(full, x, level)):
        assert torch.equal(a, b)


# -------------------------------------------------------------------------------------------
# Metrics


def _batch(*images):
    return torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images])


def test_ms_ssim_identity_and_noise():
    image = synthetic_photo(176, 192, 2)
    x = _batch(image, image)
    assert ms_ssim(x, x).shape == (2,)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2), atol=1e-6)
    g = torch.Generator().manual_seed(0)
    scores = []
    for sigma in (0.01, 0.03, 0.1, 0.3):
        noisy = (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)
        scores.append(float(ms_ssim(noisy, x)[0]))
    assert all(0 < s < 1 for s in scores)
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.95 and scores[-1] < 0.8
    # Symmetric, and data_range scales with the data.
    noisy = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert torch.allclose(ms_ssim(noisy, x), ms_ssim(x, noisy), atol=1e-6)
    assert torch.allclose(ms_ssim(noisy * 255, x * 255, data_range=255.0), ms_ssim(noisy, x),
                          atol=1e-4)



def test_ms_ssim_inside_bf16_autocast_is_computed_in_float32():
    # Training runs under bf16 autocast; MS-SSIM's variance terms must not be computed in bf16.
    image = synthetic_photo(176, 192, 3)
    x = _batch(image)
    g = torch.Generator().manual_seed(1)
    noisy = (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1).requires_grad_(True)
    reference = ms_ssim(noisy, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = ms_ssim(noisy, x)
    assert inside.dtype == torch.float32
    assert torch.equal(inside, reference)
    inside.sum().backward()
    assert torch.isfinite(noisy.grad).all()

def test_psnr_known_values():
    x = torch.zeros(2, 3, 8, 8)
    y = x.clone()
    y[0] += 0.1  # mse 0.01: 20 dB
    y[1, :, :4] += 0.5  # mse 0.125: 9.03 dB
    values = psnr(y, x)
    assert values.shape == (2,)
    assert torch.allclose(values, torch.tensor([20.0, 10 * np.log10(8.0)], dtype=torch.float32),
                          atol=1e-4)
    assert torch.allclose(psnr(y * 255, x * 255, data_range=255.0), values, atol=1e-4)
    # Identical images: capped, not infinite.
    assert torch.allclose(psnr(x, x), torch.full((2,), 120.0))


# -------------------------------------------------------------------------------------------
# The factorized prior's probability tables


@pytest.mark.parametrize("tail_mass", [1e-9, 1e-3])
def test_pmf_table_sums_to_one_minus_tail(tail_mass):
    torch.manual_seed(3)
    prior = FactorizedPrior(5)
    with torch.no_grad():
        for m in prior.matrices:
            m.add_(0.3 * torch.randn_like(m))
    pmfs, offsets, tails = prior.pmf_table(tail_mass=tail_mass)
    assert len(pmfs) == len(offsets) == len(tails) == 5
    for pmf, offset, tail in zip(pmfs, offsets, tails):
        assert pmf.dtype == np.float64 and len(pmf) > 1 and isinstance(offset, int)
        assert np.all(pmf >= 0)
        assert 0 <= tail <= tail_mass + 1e-7
        assert abs(pmf.sum() + tail - 1) < 1e-5
    # The table is the training-time likelihood of each integer.
    for c, (pmf, offset) in enumerate(zip(pmfs, offsets)):
        z = torch.zeros(1, 5, 1, len(pmf))
        z[0, c, 0] = torch.arange(offset, offset + len(pmf), dtype=torch.float32)
        lik = prior.likelihood(z)[0, c, 0].detach().double().numpy()
        np.testing.assert_allclose(lik, np.maximum(pmf, 1e-9), atol=2e-7)
    narrow = prior.pmf_table(tail_mass=1e-2)[0]
    wide = prior.pmf_table(tail_mass=1e-9)[0]
    assert all(len(a) <= len(b) for a, b in zip(narrow, wide))


# -------------------------------------------------------------------------------------------
# Export to an integer model and a full encode/decode


def test_export_and_round_trip(trained, tmp_path):
    run, _ = trained
    model, meta = load_float_model(run / "model_fp16.pt")
    path = tmp_path / "tiny.qlicm"
    images = [synthetic_photo(64, 64, 20), synthetic_photo(128, 64, 21)]
    mid = export(model, images, path, {"metric": "mse", **meta}, scale_max=32.0)
    assert len(mid) == 8

    loaded = api.load_model(str(path))
    assert loaded.model_id == mid and loaded.metric == "mse"
    # 2 trained levels on the exporter's grid of 16 sub-levels per quality: 17 rows.
    assert (loaded.network.N, loaded.network.M, loaded.network.levels) == (8, 12, 17)
    assert (loaded.quality_steps, loaded.top_quality) == (16, 2)

    image = synthetic_photo(50, 70, 3)
    sizes = []
    for quality in (1, 2):
        data = qlic_codec.encode(image, quality, str(path))
        pixels = qlic_codec.decode(data, str(path))
        assert pixels.shape == image.shape and pixels.dtype == np.uint8
        _, reconstruction = api.encode_and_reconstruct(image, quality, str(path))
        np.testing.assert_array_equal(pixels, reconstruction)
        sizes.append(len(data))
    assert sizes[0] < sizes[1]  # the higher level has the larger gain: finer latents
    with pytest.raises(ValueError, match="out of range"):
        qlic_codec.encode(image, 3, str(path))


def test_a_fresh_optimiser_warms_up_and_a_resume_keeps_its_place(tmp_path, data_root):
    run = tmp_path / "run"
    lines = []
    train(config(run, data_root, steps=2, warmup_steps=4, lr=1e-3, lr_drop_at=1.0),
          log=lines.append)
    train(config(run, data_root, steps=6, warmup_steps=4, lr=1e-3, lr_drop_at=1.0),
          log=lines.append)
    rates = [float(line.split("lr=")[1].split()[0]) for line in lines if line.startswith("step=")]
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_continue_a_committed_checkpoint_in_a_new_run(trained, tmp_path, data_root):
    run, state = trained
    lines = []
    again = train(config(tmp_path / "next", data_root, steps=state["step"] + 2,
                         init_from=str(run / "model_fp16.pt"), continue_run=True),
                  log=lines.append)
    assert any(f"continuing from step {state['step']}" in line for line in lines)
    assert again["step"] == state["step"] + 2
    # Without --continue the same file only initialises the weights: the count starts at 0.
    fresh = train(config(tmp_path / "fresh", data_root, steps=2,
                         init_from=str(run / "model_fp16.pt")), log=lambda line: None)
    assert fresh["step"] == 2


def test_card_names_learned_ranges_instead_of_listing_them():
    from qlic_codec.train.card import card_meta
    meta = {"metric": "mse", "quantization_finetune": {
        "steps": 400, "activation_ranges": {"g_a.0": {"range": [1.0] * 128,
                                                      "offset": [0.0] * 128}}}}
    out = card_meta(meta)
    assert out["quantization_finetune"]["steps"] == 400
    assert out["quantization_finetune"]["activation_ranges"] == \
        "learned, 1 tensors (in the checkpoint)"
    # The checkpoint's own metadata is untouched.
    assert isinstance(meta["quantization_finetune"]["activation_ranges"], dict)
    assert card_meta({"metric": "mse"}) == {"metric": "mse"}


def test_card_describes_the_architecture_data_and_both_validation_sets():
    from pathlib import Path

    from qlic_codec.train.card import render
    rows = [{"level": 1, "bpp": 0.1, "psnr": 25.0, "ms_ssim": 0.86, "images": 11}]
    wide = [{"level": 1, "bpp": 0.13, "psnr": 23.6, "ms_ssim": 0.80, "images": 18}]
    text = render(Path("m.pt"), {"metric": "mse", "wide_share": 0.5},
                  {"val": rows, "val-wide": wide}, [], "cpu",
                  config={"N": 128, "M": 192, "slices": [16, 16, 32, 64, 64], "hidden": 96},
                  train_photos=358)
    assert "channel-conditional" in text and "slices 16, 16, 32, 64, 64" in text
    assert "(358 photos)" in text and "50% of the crops" in text
    assert "`../shared/data/val`, 11 photos" in text
    assert "`../shared/data/val-wide`, 18 photos" in text and "| 1 | 0.1300 | 23.60 |" in text
    plain = render(Path("m.pt"), {"metric": "mse"}, {"val": rows}, [], "cpu",
                   config={"N": 128, "M": 192}, train_photos=128)
    assert "channel-conditional" not in plain and "val-wide" not in plain
    assert "(128 photos), random crops and flips\n" in plain


def test_retargeting_the_quality_table_follows_log_lambda():
    from qlic_codec.train.model import retarget_log_gains
    old = (0.001, 0.004, 0.016)
    # Log-gains exactly linear in log-lambda stay on that line, inside and outside the table.
    log_gain = torch.tensor([[0.0, 1.0], [1.0, 3.0], [2.0, 5.0]])
    new = retarget_log_gains(log_gain, old, (0.0005, 0.002, 0.016, 0.064))
    expected = torch.tensor([[-0.5, 0.0], [0.5, 2.0], [2.0, 5.0], [3.0, 7.0]])
    torch.testing.assert_close(new, expected)
    assert torch.equal(retarget_log_gains(log_gain, old, old), log_gain)
    with pytest.raises(ValueError, match="increasing"):
        retarget_log_gains(log_gain, old, (0.01, 0.001))
    with pytest.raises(ValueError, match="gain vectors"):
        retarget_log_gains(log_gain[:2], old, old)


def test_a_new_quality_table_moves_the_gains_and_a_resume_must_keep_it(trained, tmp_path,
                                                                      data_root):
    run, state = trained
    before, _ = load_float_model(run / "model_fp16.pt")
    shifted = (LAMBDAS[0] / 4, LAMBDAS[1])
    lines = []
    train(config(tmp_path / "shifted", data_root, steps=state["step"], lambdas=shifted,
                 init_from=str(run / "model_fp16.pt"), continue_run=True), log=lines.append)
    assert any("quality table moved" in line for line in lines)
    after, meta = load_float_model(tmp_path / "shifted" / "model_fp16.pt")
    assert meta["lambdas"] == list(shifted)
    # No step was taken: the top level is unchanged, the bottom one is coarser (smaller gains).
    torch.testing.assert_close(after.log_gain[1], before.log_gain[1], atol=1e-3, rtol=0)
    assert after.log_gain[0].mean() < before.log_gain[0].mean() - 0.1
    with pytest.raises(ValueError, match="same --lambdas"):
        train(config(tmp_path / "shifted", data_root, steps=state["step"] + 1),
              log=lambda line: None)


def test_an_msssim_run_from_an_mse_model_keeps_each_levels_gains(trained, tmp_path):
    # MSE and MS-SSIM lambdas are in different units: lining them up by value would push every
    # level far off the end of the MSE table. Levels are matched by rank instead.
    run, _ = trained
    data_root = tmp_path / "data"
    (data_root / "train").mkdir(parents=True)
    Image.fromarray(synthetic_photo(192, 192, 0)).save(data_root / "train" / "00.png")
    before, _ = load_float_model(run / "model_fp16.pt")
    lines = []
    train(config(tmp_path / "msssim", data_root, steps=0, metric="msssim", crop=192,
                 lambdas=(2.0, 60.0), init_from=str(run / "model_fp16.pt")),
          log=lines.append)
    assert any("by rank" in line for line in lines)
    after, meta = load_float_model(tmp_path / "msssim" / "model_fp16.pt")
    assert meta["metric"] == "msssim" and meta["lambdas"] == [2.0, 60.0]
    torch.testing.assert_close(after.log_gain, before.log_gain, atol=1e-3, rtol=0)
    # A longer table interpolates between the ends by rank.
    train(config(tmp_path / "msssim3", data_root, steps=0, metric="msssim", crop=192,
                 lambdas=(2.0, 10.0, 60.0), init_from=str(run / "model_fp16.pt")),
          log=lambda line: None)
    three, _ = load_float_model(tmp_path / "msssim3" / "model_fp16.pt")
    torch.testing.assert_close(three.log_gain[0], before.log_gain[0], atol=1e-3, rtol=0)
    torch.testing.assert_close(three.log_gain[2], before.log_gain[1], atol=1e-3, rtol=0)
    middle = three.log_gain[1]
    low = torch.minimum(before.log_gain[0], before.log_gain[1]) - 1e-3
    high = torch.maximum(before.log_gain[0], before.log_gain[1]) + 1e-3
    assert bool(((middle >= low) & (middle <= high)).all())


def test_losses_csv_has_train_and_both_validation_sets_per_level(tmp_path, data_root):
    for name in ("val", "val-wide"):
        (data_root / name).mkdir(exist_ok=True)
        # MS-SSIM's five scales need at least 161 px a side.
        Image.fromarray(synthetic_photo(176, 192, 7)).save(data_root / name / "a.png")
    run = tmp_path / "run"
    train(config(run, data_root, steps=4, validate_minutes=1e-6), log=lambda line: None)
    from qlic_codec.train.losslog import read
    rows = read(run / "losses.csv")
    steps = sorted({int(r["step"]) for r in rows})
    assert steps[0] == 0 and steps[-1] == 4
    for split in ("val", "val-wide"):
        at_end = [r for r in rows if r["split"] == split and r["step"] == "4"]
        assert [int(r["level"]) for r in at_end] == [1, 2]
        for r in at_end:
            assert float(r["loss"]) > float(r["bpp"]) > 0 and float(r["psnr"]) > 0
    trained_levels = {r["level"] for r in rows if r["split"] == "train"}
    assert trained_levels <= {"1", "2"} and trained_levels
    # A resumed run appends to the same log and does not validate its start twice.
    train(config(run, data_root, steps=6, validate_minutes=1e-6), log=lambda line: None)
    again = read(run / "losses.csv")
    assert again[: len(rows)] == rows
    assert sum(r["split"] == "val" and r["step"] == "4" for r in again) == 2


def test_wide_share_draws_that_share_of_crops_from_the_public_sets(tmp_path):
    from qlic_codec.train.data import CropSampler, load_folder, wide_share_weights
    folder = tmp_path / "train"
    folder.mkdir()
    names = ["bsd68_a", "urban100_b", "sunhays_c", "wall1", "wall2", "wall3", "wall4", "wall5"]
    for i, name in enumerate(names):
        Image.fromarray(np.full((32, 32, 3), i * 30, np.uint8)).save(folder / f"{name}.png")
    weights = wide_share_weights(folder, 0.25)
    assert weights[[0, 6, 7]].tolist() == pytest.approx([0.25 / 3, 0.75 / 5, 0.75 / 5])
    sampler = CropSampler(load_folder(folder), 16, seed=1, weights=weights)
    crops = np.concatenate([sampler.batch(64).numpy() for _ in range(40)])
    first_pixel = np.round(crops[:, 0, 0, 0] * 255).astype(int) // 30
    assert abs(np.mean(first_pixel <= 2) - 0.25) < 0.03
    with pytest.raises(ValueError):
        wide_share_weights(folder, 1.5)


def test_weight_average_is_validated_saved_and_resumed_exactly(tmp_path, data_root):
    for name in ("val", "val-wide"):
        (data_root / name).mkdir(exist_ok=True)
        Image.fromarray(synthetic_photo(176, 192, 7)).save(data_root / name / "a.png")
    run, straight = tmp_path / "run", tmp_path / "straight"
    settings = dict(lr_drop_at=1.0, ema_decay=0.9)
    train(config(run, data_root, steps=3, validate_minutes=1e-6, **settings),
          log=lambda line: None)
    train(config(run, data_root, steps=6, validate_minutes=1e-6, **settings),
          log=lambda line: None)
    train(config(straight, data_root, steps=6, **settings), log=lambda line: None)

    def weights(path):
        return torch.load(path, weights_only=True)["state_dict"]

    average, raw = weights(run / "model_ema_fp16.pt"), weights(run / "model_fp16.pt")
    assert average.keys() == raw.keys()
    assert any(not torch.equal(average[k], raw[k]) for k in raw)
    # The average of a resumed run is that of an uninterrupted one: it travels in last.pt.
    again = weights(straight / "model_ema_fp16.pt")
    assert all(torch.equal(average[k], again[k]) for k in average)
    meta = torch.load(run / "model_ema_fp16.pt", weights_only=True)["meta"]
    assert meta["ema_decay"] == 0.9 and meta["steps"] == 6

    blob = torch.load(run / "last.pt", weights_only=False)
    assert int(blob["ema"]["n_averaged"]) == 6  # one update a step, across the resume

    from qlic_codec.train.losslog import read
    rows = read(run / "losses.csv")
    for name in ("val", "val-wide"):
        steps = [r["step"] for r in rows if r["split"] == name]
        assert {"0", "3", "6"} <= set(steps)
        # Not at step 0: before its first update the average is the weights.
        assert [r["step"] for r in rows if r["split"] == f"{name}-ema"] == [
            s for s in steps if s != "0"]

