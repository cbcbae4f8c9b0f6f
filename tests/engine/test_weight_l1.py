"""The weight sums behind the loader's overflow proof (``engine.fixedpoint``) equal their
definition, in int64 throughout, on int8 weights with -128 (whose |w| int8 cannot hold) and
on wider ones, for convolutions and the four phases of a stride-2 transposed convolution."""

import numpy as np
import pytest

from qlic_codec.engine import fixedpoint


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32])
@pytest.mark.parametrize("shape", [(128, 5, 5, 192), (3, 5, 5, 128), (64, 3, 3, 240),
                                   (48, 1, 1, 64)])
def test_sums_are_their_definition(dtype, shape):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(shape[0])
    w = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    w[0] = info.min  # the extreme a narrow |w| would wrap
    a = np.abs(w.astype(np.int64))
    conv = a.reshape(shape[0], -1).sum(axis=1)
    deconv = np.max([a[:, py::2, px::2, :].reshape(shape[0], -1).sum(axis=1)
                     for py in range(2) for px in range(2)], axis=0)
    assert np.array_equal(fixedpoint.conv_weight_l1(w), conv)
    assert np.array_equal(fixedpoint.deconv_weight_l1(w), deconv)
    assert fixedpoint.conv_weight_l1(w).dtype == np.int64
    assert conv[0] == -int(info.min) * np.prod(shape[1:])
