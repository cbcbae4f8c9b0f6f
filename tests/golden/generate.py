"""Regenerate the golden files: ``python tests/golden/generate.py`` (needs the training extra
only with ``--new-model``).

The golden test (``tests/test_golden.py``) only compares against these files; it never writes
them. Regenerating is a deliberate format or behaviour change: run this command, review the
diff of ``expected.json``, and say why in the commit.

By default the command keeps the committed tiny model (``tiny-mse.qlicm``) and recomputes
``expected.json`` from it with the codec as it is now. ``--new-model`` also exports a new tiny
model from its seed with the exporter as it is now (every hash changes). It was last made so
when the model files gained the sub-level grid (16 sub-levels per quality). The tiny model has random weights and large gains so that its latents are non-trivial; it is a
test fixture, not a codec. ``--out DIR`` writes to another folder instead, to see what a
regeneration would produce without touching the committed files.
"""

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# ``conftest.synthetic_photo`` makes the golden image; it lives one folder up.
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

# What the golden test encodes: the image and the qualities (4.5: a sub-level between two
# trained levels).
IMAGE_SHAPE, IMAGE_SEED = (72, 80), 7
QUALITIES = (1, 4, 4.5, 8)


def make_tiny_model(path: Path) -> None:
    import torch

    from conftest import synthetic_photo
    from qlic_codec.quantize.export import export
    from qlic_codec.train.model import MeanScaleHyperprior

    torch.manual_seed(1234)
    model = MeanScaleHyperprior(N=16, M=24, levels=8).eval()
    with torch.no_grad():
        model.log_gain.add_(3.0)
    images = [synthetic_photo(128, 128, seed) for seed in range(3)]
    export(model, images, path, {"metric": "mse", "source": "tiny random test model"},
           scale_max=32.0)


def expected_outputs(model_path: Path) -> dict:
    import hashlib

    import qlic_codec
    from conftest import synthetic_photo

    image = synthetic_photo(*IMAGE_SHAPE, seed=IMAGE_SEED)
    out = {}
    for quality in QUALITIES:
        data = qlic_codec.encode(image, quality, str(model_path))
        pixels = qlic_codec.decode(data, str(model_path))
        out[f"q{quality}"] = {"stream_sha256": hashlib.sha256(data).hexdigest(),
                              "bytes": len(data),
                              "pixels_sha256": hashlib.sha256(pixels.tobytes()).hexdigest()}
    return out


def regenerate(folder: Path = HERE, new_model: bool = False) -> None:
    """Write ``expected.json`` into ``folder`` (and ``tiny-mse.qlicm`` when ``new_model``,
    when it is missing there, or when ``folder`` is not this one: a copy of the committed
    model)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "tiny-mse.qlicm"
    if new_model or not (HERE / "tiny-mse.qlicm").is_file():
        make_tiny_model(model)
    elif model.resolve() != (HERE / "tiny-mse.qlicm").resolve():
        shutil.copyfile(HERE / "tiny-mse.qlicm", model)
    expected = expected_outputs(model)
    (folder / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE,
                        help="folder to write into (default: tests/golden itself)")
    parser.add_argument("--new-model", action="store_true",
                        help="also export a new tiny model from its seed (changes every hash)")
    args = parser.parse_args(argv)
    regenerate(args.out, args.new_model)
    print(f"wrote {args.out / 'expected.json'}"
          + (f" and {args.out / 'tiny-mse.qlicm'}" if args.new_model else ""))


if __name__ == "__main__":
    main()
