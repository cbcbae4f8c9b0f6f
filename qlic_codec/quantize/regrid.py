"""Give a model file of integer levels a sub-level grid, from its own heads.

Usage::

    python -m qlic_codec.quantize.regrid models/qlic-mse.qlicm -o models/qlic-mse.qlicm

A model exported before the grid (model format 1, or format 2 without ``quality_steps``) has
one row of heads per quality level. Every per-level head is a fixed-point rescale that is
proportional to the level's gain (``head.y``, ``head.mean``, and a channel-conditional
model's ``cc.i.mean``), to its inverse (``head.ys``, ``cc.ctx``), or linear in its logarithm
(``head.scale.offset``), and the exporter interpolates the gains geometrically between
levels (``MeanScaleHyperprior.gains``). So the rows of the sub-levels follow from the rows of
the levels around them: geometric interpolation of the rescales' real values, linear
interpolation of the offsets. The rows of the integer levels are kept bit for bit, so a
stream at an integer quality is the same as before apart from the header and the model id.

This is how the bundled models got their grid without a new export, which would calibrate
some ranges again on today's photos and change every quality slightly. Reading format 1
needs no trust in the old reader: the file's own SHA-256 is checked first.
"""

import argparse
import hashlib
import struct
from pathlib import Path

import numpy as np

from .. import modelfile
from ..engine import fixedpoint
from ..errors import ModelFileError

QUALITY_STEPS = 16
# Per-level rescales (mult/shift pairs) and additive offsets, by array name.
GEOMETRIC = ("head.y", "head.mean", "head.ys", "cc.ctx")
LINEAR = ("head.scale.offset",)


def _is_per_level(name: str) -> bool:
    return name in GEOMETRIC or (name.startswith("cc.") and name.endswith(".mean"))


def read_any_format(data: bytes, source: str) -> tuple[dict, dict]:
    """Manifest and arrays of a model file of any format (format 1: its seal is checked,
    then it is read as the current format, whose layout is the same)."""
    if len(data) < 48:
        raise ModelFileError(f"{source}: too short to be a qlic model file")
    if struct.unpack_from("<I", data, 8)[0] == 1:
        if hashlib.sha256(data[:-32]).digest() != data[-32:]:
            raise ModelFileError(f"{source}: content hash mismatch (the file is corrupt)")
        body = bytearray(data[:-32])
        struct.pack_into("<I", body, 8, modelfile.FORMAT_VERSION)
        data = bytes(body) + hashlib.sha256(bytes(body)).digest()
    manifest, arrays, _ = modelfile.unpack(data, source)
    return manifest, arrays


def _fractions(steps: int) -> np.ndarray:
    return np.arange(steps) / steps


def _geometric(mult: np.ndarray, shift: np.ndarray, steps: int):
    real = mult.astype(np.float64) / 2.0 ** shift.astype(np.float64)
    rows_m, rows_s = [], []
    for lo in range(real.shape[0] - 1):
        a, b = real[lo], real[lo + 1]
        for k, t in enumerate(_fractions(steps)):
            if k == 0:  # the trained level itself, kept as it is
                rows_m.append(mult[lo].astype(np.int64))
                rows_s.append(shift[lo].astype(np.int32))
                continue
            both = (a > 0) & (b > 0)
            r = np.where(both, np.exp((1 - t) * np.log(np.where(both, a, 1.0))
                                      + t * np.log(np.where(both, b, 1.0))),
                         (1 - t) * a + t * b)
            m, s = fixedpoint.multiplier_from_real(r)
            rows_m.append(m)
            rows_s.append(s)
    rows_m.append(mult[-1].astype(np.int64))
    rows_s.append(shift[-1].astype(np.int32))
    return np.stack(rows_m).astype(np.int32), np.stack(rows_s).astype(np.int32)


def _linear(offset: np.ndarray, steps: int) -> np.ndarray:
    rows = []
    for lo in range(offset.shape[0] - 1):
        a, b = offset[lo].astype(np.float64), offset[lo + 1].astype(np.float64)
        for k, t in enumerate(_fractions(steps)):
            rows.append(offset[lo] if k == 0 else np.round((1 - t) * a + t * b).astype(np.int64))
    rows.append(offset[-1])
    return np.stack(rows).astype(np.int64)


def regrid(manifest: dict, arrays: dict, steps: int = QUALITY_STEPS) -> tuple[dict, dict]:
    """The manifest and arrays with ``steps`` sub-levels per quality level."""
    if manifest.get("quality_steps", 1) != 1:
        raise ValueError("the model already has a sub-level grid")
    if not 1 <= steps <= 32:
        raise ValueError("quality steps must be in 1..32")
    levels = int(manifest["levels"])
    arrays = dict(arrays)
    for name in list(arrays):
        if not name.endswith(".mult"):
            continue
        base = name[: -len(".mult")]
        if _is_per_level(base):
            if arrays[name].shape[0] != levels:
                raise ValueError(f"'{base}' does not have one row per level")
            arrays[name], arrays[f"{base}.shift"] = _geometric(arrays[name],
                                                               arrays[f"{base}.shift"], steps)
    for base in LINEAR:
        arrays[base] = _linear(arrays[base], steps)
    manifest = {**manifest, "levels": (levels - 1) * steps + 1, "quality_steps": steps}
    return manifest, arrays


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m qlic_codec.quantize.regrid",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model file with integer levels (format 1 or 2)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--quality-steps", type=int, default=QUALITY_STEPS)
    args = p.parse_args(argv)
    try:
        manifest, arrays = read_any_format(Path(args.model).read_bytes(), args.model)
        manifest, arrays = regrid(manifest, arrays, args.quality_steps)
        # The loader's checks run before the file is written (as the exporter does).
        from ..engine import reference
        from ..engine.graph import IntegerNetwork, ModelSpec
        IntegerNetwork(ModelSpec(manifest, arrays), kernels=reference)
    except (ModelFileError, ValueError, OSError) as exc:
        raise SystemExit(f"error: {exc}") from None
    mid = modelfile.write(args.output, manifest, arrays)
    print(f"wrote {args.output} ({manifest['levels']} sub-levels, id {mid.hex()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
