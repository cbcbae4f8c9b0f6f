"""Padding to the network's block size and cropping back (NumPy only)."""

import numpy as np
import pytest

from qlic_codec import padding

RNG = np.random.default_rng(1234)


def random_rgb(height: int, width: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [(1, 1), (333, 517), (64, 128), (65, 1)])
def test_pad_then_crop_round_trip(size: tuple[int, int]) -> None:
    rgb = random_rgb(*size)
    padded = padding.pad_to_multiple(rgb, 64)
    assert padded.shape[0] % 64 == 0 and padded.shape[1] % 64 == 0
    assert padded.shape[0] - size[0] < 64 and padded.shape[1] - size[1] < 64
    # Edge replication: the padding repeats the last row and column.
    np.testing.assert_array_equal(padded[size[0]:, : size[1]], np.broadcast_to(
        rgb[-1:], (padded.shape[0] - size[0], size[1], 3)))
    np.testing.assert_array_equal(padded[:, size[1]:], np.broadcast_to(
        padded[:, size[1] - 1: size[1]], (padded.shape[0], padded.shape[1] - size[1], 3)))
    out = padding.crop(padded, *size)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_pad_is_a_no_op_on_aligned_input_and_crop_checks_size() -> None:
    rgb = random_rgb(64, 128)
    assert padding.pad_to_multiple(rgb, 64) is rgb
    with pytest.raises(ValueError):
        padding.crop(rgb, 65, 10)
    with pytest.raises(ValueError):
        padding.pad_to_multiple(rgb, 0)


@pytest.mark.parametrize("size", [(1, 1), (65, 130), (200, 77), (128, 64)])
def test_padded_codes_are_rows_of_the_padded_image(size: tuple[int, int]) -> None:
    rgb = random_rgb(*size)
    codes = padding.pad_to_multiple(rgb, 64).astype(np.int16) - 128
    rows = codes.shape[0]
    for lo, hi in [(0, rows), (0, 1), (rows - 1, rows), (3, 70), (size[0], rows)]:
        if not 0 <= lo < hi <= rows:
            continue
        got = padding.padded_codes(rgb, lo, hi, 64)
        assert got.dtype == np.int8 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, codes[lo:hi])
