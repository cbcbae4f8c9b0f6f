"""Fractional qualities on the model's sub-level grid and the search for a target size:
the mapping itself (``qlic_codec.quality``), then through the API with the tiny model."""

import warnings

import numpy as np
import pytest

import qlic_codec
from conftest import synthetic_photo
from qlic_codec import api, container
from qlic_codec.errors import InvalidArgumentError
from qlic_codec.quality import (TOLERANCE, parse_size, search_size, to_level, to_quality)

# --- the mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize("quality, level", [
    (1, 0), (1.0625, 1), (4.5, 56), (5, 64), (8, 112), (np.float32(4.5), 56), (np.int64(2), 16),
    # off the grid: the nearest sub-level, halves up
    (4.53, 56), (4.5312, 56), (4.53125, 57), (7.99, 112), (1.01, 0),
])
def test_quality_to_sub_level(quality, level):
    assert to_level(quality, 113, 16) == level


def test_sub_level_to_quality_is_a_plain_number():
    assert to_quality(56, 16) == 4.5 and to_quality(1, 16) == 1.0625
    assert to_quality(64, 16) == 5 and type(to_quality(64, 16)) is int
    assert [to_level(to_quality(k, 16), 113, 16) for k in range(113)] == list(range(113))


def test_a_model_without_a_grid_rounds_to_its_levels():
    assert [to_level(q, 8, 1) for q in (1, 4.49, 4.5, 8)] == [0, 3, 4, 7]


@pytest.mark.parametrize("quality", [0, 0.99, 8.01, 9, float("nan"), float("inf"), "5", None,
                                     True])
def test_bad_qualities_are_refused(quality):
    with pytest.raises(InvalidArgumentError):
        to_level(quality, 113, 16)


@pytest.mark.parametrize("text, size", [
    ("50000", 50000), ("50k", 50000), ("50K", 50000), ("1.5M", 1500000), ("64KiB", 65536),
    ("2Mi", 2 * 2**20), (" 12 kB ", 12000), ("0.5k", 500), ("1G", 10**9), (".5k", 500),
])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "k", "5x", "-5k", "1e3", "0", "0.4", "5 k b b", "nan"])
def test_bad_sizes(text):
    with pytest.raises(InvalidArgumentError):
        parse_size(text)


def _sizes(values):
    calls = []

    def size_of(level):
        calls.append(level)
        return values[level]
    return size_of, calls


def test_search_picks_the_nearest_size_in_few_tries():
    values = [1000 + 21 * k for k in range(113)]  # about 2% apart, like the real grid
    for target in (1000, 1500, 1511, 1520, 3352):
        size_of, calls = _sizes(values)
        found = search_size(size_of, 113, target)
        best = min(range(113), key=lambda k: (abs(values[k] - target), values[k]))
        assert (found.level, found.size, found.met) == (best, values[best], True)
        assert found.tries == len(set(calls)) <= 9


def test_search_reports_a_target_out_of_reach():
    values = [1000 + 10 * k for k in range(17)]
    low = search_size(_sizes(values)[0], 17, 500)
    assert (low.level, low.met) == (0, False)
    high = search_size(_sizes(values)[0], 17, 5000)
    assert (high.level, high.met) == (16, False)
    # Within the tolerance of the ends is still met.
    assert search_size(_sizes(values)[0], 17, round(1000 * (1 - TOLERANCE / 2))).met


def test_search_on_a_gap_wider_than_the_tolerance_says_so():
    values = [100, 200]
    found = search_size(_sizes(values)[0], 2, 150)
    assert (found.level, found.met) == (0, False)  # a tie goes to the smaller file


# --- through the API, with the tiny model (8 levels x 16 sub-levels) ------------------------


@pytest.fixture(scope="module")
def photo():
    return synthetic_photo(96, 160, seed=21)


def test_fractional_quality_is_stored_and_reported(tiny_model, photo):
    data = qlic_codec.encode(photo, 4.5, tiny_model)
    assert qlic_codec.read_info(data)["quality"] == 4.5
    header = container.read_header(data)
    assert (header.level, header.quality_steps) == (56, 16)
    # Off-grid values land on the nearest sub-level, and the same bytes.
    assert qlic_codec.encode(photo, 4.52, tiny_model) == data
    assert qlic_codec.read_info(qlic_codec.encode(photo, 4.54, tiny_model))["quality"] == 4.5625


def test_fractional_qualities_sit_between_their_levels(tiny_model, photo):
    sizes = {q: len(qlic_codec.encode(photo, q, tiny_model)) for q in (4, 4.25, 4.5, 5)}
    assert sizes[4] < sizes[4.5] < sizes[5], sizes
    data, recon = api.encode_and_reconstruct(photo, 4.25, tiny_model)
    np.testing.assert_array_equal(qlic_codec.decode(data, tiny_model), recon)


def test_target_size_lands_within_three_percent(tiny_model, photo):
    lo, hi = (len(qlic_codec.encode(photo, q, tiny_model)) for q in (1, 8))
    for target in (round(lo * 1.1), (lo + hi) // 2, round(hi * 0.95)):
        result = qlic_codec.encode_to_target(photo, target_size=target, model=tiny_model)
        assert result.met and abs(len(result.data) - target) <= 0.03 * target, (target, result)
        # The file is what encoding at the chosen quality gives, and decodes.
        assert qlic_codec.encode(photo, result.quality, tiny_model) == result.data
        assert qlic_codec.read_info(result.data)["quality"] == result.quality
        assert qlic_codec.decode(result.data, tiny_model).shape == photo.shape


def test_target_bpp_is_the_size_of_the_whole_file(tiny_model, photo):
    mid = qlic_codec.encode(photo, 5, tiny_model)
    bpp = 8 * len(mid) / (photo.shape[0] * photo.shape[1])
    result = qlic_codec.encode_to_target(photo, target_bpp=bpp, model=tiny_model)
    assert result.target_bytes == len(mid) and result.met
    assert abs(qlic_codec.read_info(result.data)["bpp"] - bpp) <= 0.03 * bpp


def test_a_target_out_of_reach_warns_and_gives_the_nearest_file(tiny_model, photo):
    with pytest.warns(qlic_codec.TargetNotMetWarning, match="smallest file"):
        data = qlic_codec.encode(photo, target_size=10, model=tiny_model)
    assert data == qlic_codec.encode(photo, 1, tiny_model)
    with pytest.warns(qlic_codec.TargetNotMetWarning, match="largest file"):
        data = qlic_codec.encode(photo, target_bpp=100.0, model=tiny_model)
    assert data == qlic_codec.encode(photo, 8, tiny_model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a target in reach does not warn
        qlic_codec.encode(photo, target_size=len(data) - 5, model=tiny_model)


def test_target_runs_the_network_once(tiny_model, photo, monkeypatch):
    """Counted on the real network: the transforms run once, only the heads per try."""
    target = sum(len(qlic_codec.encode(photo, q, tiny_model)) for q in (1, 8)) // 2
    network = api.load_model(tiny_model).network
    calls = {"g_a": 0, "h_s": 0, "heads": 0}
    run, heads = network._in_bands, network.hyper_heads

    def counting_run(transform, *args):  # every transform runs in bands
        calls[transform] = calls.get(transform, 0) + 1
        return run(transform, *args)

    def counting_heads(acc, level):
        calls["heads"] += 1
        return heads(acc, level)
    monkeypatch.setattr(network, "_in_bands", counting_run)
    monkeypatch.setattr(network, "hyper_heads", counting_heads)
    assert qlic_codec.encode_to_target(photo, target_size=target, model=tiny_model).met
    assert calls["g_a"] == calls["h_a"] == calls["h_s"] == 1
    assert "g_s" not in calls
    assert 5 <= calls["heads"] <= 9, calls


@pytest.mark.parametrize("kwargs", [
    dict(quality=4, target_size=1000), dict(target_size=1000, target_bpp=1.0),
    dict(target_size=0), dict(target_size=1.5), dict(target_bpp=0.0), dict(target_bpp=-1.0),
    dict(target_bpp=float("nan")), dict(target_bpp="1"), dict(quality=4.6, metadata=b"icc"),
])
def test_bad_target_arguments(tiny_model, kwargs):
    with pytest.raises(InvalidArgumentError):
        qlic_codec.encode(synthetic_photo(8, 8), model=tiny_model, **kwargs)


def test_integer_qualities_keep_their_meaning_on_a_model_without_a_grid(tiny_model, tmp_path,
                                                                        photo):
    """A model file from before the grid (no ``quality_steps``: integer levels only) still
    loads, and 4.5 rounds to its level 5."""
    from qlic_codec import modelfile
    manifest, arrays, _ = modelfile.unpack(open(tiny_model, "rb").read())
    del manifest["quality_steps"]
    manifest["levels"] = 8
    for key in ("y", "mean", "ys"):
        for part in ("mult", "shift"):
            arrays[f"head.{key}.{part}"] = arrays[f"head.{key}.{part}"][::16].copy()
    arrays["head.scale.offset"] = arrays["head.scale.offset"][::16].copy()
    old = tmp_path / "old.qlicm"
    modelfile.write(old, manifest, arrays)
    model = api.load_model(str(old))
    assert (model.quality_steps, model.top_quality) == (1, 8)
    data = qlic_codec.encode(photo, 4.5, str(old))
    assert qlic_codec.read_info(data)["quality"] == 5
    grid = qlic_codec.encode(photo, 5, tiny_model)
    head = container.read_header(data).header_size
    assert data[head:] != b"" and data[head:-4] == grid[head:-4]
