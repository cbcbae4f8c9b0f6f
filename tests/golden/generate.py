"""Regenerate the golden files: ``python tests/golden/generate.py`` (needs the training extra
only with ``--new-model``).

The golden test (``tests/test_golden.py``) only compares against these files; it never writes
them. Regenerating is a deliberate format or behaviour change: run this command, review the
diff of ``expected.json``, and say why in the commit.

By default the command keeps the committed tiny model (``tiny-mse.qlicm``) and recomputes
``expected.json`` from it with the codec as it is now; a committed model of model format 1 is
first rewritten in format 2 with the same weights (``upgrade_format_1``), so the decoded
pixels stay the same and only the model id, hence the stream bytes, change. ``--new-model``
also exports new tiny models from their seeds with the exporter as it is now (every hash
changes). They were last made so when the model files gained the sub-level grid (16
sub-levels per quality). The tiny model has random weights and large gains so that its
latents are non-trivial; it is a
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


def upgrade_format_1(path: Path) -> bool:
    """Rewrite a format-1 model file in format 2, keeping what it decodes to; False if the
    file is not format 1.

    Format 2 has format 1's layout and requires ``head.ha_in.offset``, which format 1 read
    as zeros when it was missing; the file's ``card`` and every other key stay as they are.
    """
    import struct

    import numpy as np

    from qlic_codec import modelfile
    from qlic_codec.quantize.regrid import read_any_format

    data = path.read_bytes()
    if struct.unpack_from("<I", data, 8)[0] != 1:
        return False
    manifest, arrays = read_any_format(data, str(path))
    arrays.setdefault("head.ha_in.offset", np.zeros(int(manifest["M"]), np.int32))
    modelfile.write(path, manifest, arrays)
    return True


def _tiny_cc_float_model():
    """The tiny model's transforms, four slices, and slice networks whose last layers are
    random instead of zero, so that every slice's mean, scale and latent residual depend on
    the slices before it."""
    import torch

    from qlic_codec.train.slices import ChannelConditionalHyperprior

    torch.manual_seed(1234)
    model = ChannelConditionalHyperprior(N=16, M=24, levels=8, slices=(4, 4, 8, 8),
                                         hidden=8).eval()
    with torch.no_grad():
        model.log_gain.add_(3.0)
        for ctx in model.contexts:
            for net in (ctx.params, ctx.lrp):
                torch.nn.init.normal_(net[-1].weight, std=0.3)
    return model


def make_tiny_cc_model(path: Path) -> None:
    """A tiny channel-conditional model (``_tiny_cc_float_model``), 8-bit context codes."""
    from conftest import synthetic_photo
    from qlic_codec.quantize.export import export

    images = [synthetic_photo(128, 128, seed) for seed in range(3)]
    export(_tiny_cc_float_model(), images, path, {
        "metric": "mse", "source": "tiny random channel-conditional test model"},
        scale_max=32.0)


def make_tiny_cc12_model(path: Path) -> None:
    """The same with 12-bit context codes (model format 3): its activation ranges are fitted
    as the exporter fits them, then ``cc.ctx`` gets 12 bits, as ``finetune --wide-tensors
    cc.ctx --wide-bits 12`` trains them."""
    from conftest import synthetic_photo
    from qlic_codec.quantize import simulate
    from qlic_codec.quantize.activations import ActQuant
    from qlic_codec.quantize.export import export

    model = _tiny_cc_float_model()
    images = [synthetic_photo(128, 128, seed) for seed in range(3)]
    quants = simulate.fit_quants(simulate.collect(model, images), "max", per_channel=True,
                                 mean_removed=True)
    q = quants["cc.ctx"]
    quants["cc.ctx"] = ActQuant(q.range, q.power, q.offset, 12)
    export(model, images, path, {"metric": "mse", "source": "tiny random channel-conditional "
                                 "test model, 12-bit context codes"}, scale_max=32.0,
           learned=quants)


# Golden model files, their makers and the expectations computed from them.
MODELS = {"tiny-mse.qlicm": (make_tiny_model, "expected.json"),
          "tiny-cc.qlicm": (make_tiny_cc_model, "expected-cc.json"),
          "tiny-cc12.qlicm": (make_tiny_cc12_model, "expected-cc12.json")}


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
    """Write the expectations of every golden model into ``folder`` (and the model when
    ``new_model``, when it is missing there, or when ``folder`` is not this one: a copy of the
    committed model)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for name, (make, expected_name) in MODELS.items():
        model = folder / name
        if new_model or not (HERE / name).is_file():
            make(model)
        elif model.resolve() != (HERE / name).resolve():
            shutil.copyfile(HERE / name, model)
        if upgrade_format_1(model):
            print(f"rewrote {model} from model format 1 to 2")
        expected = expected_outputs(model)
        (folder / expected_name).write_text(json.dumps(expected, indent=1, sort_keys=True)
                                            + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE,
                        help="folder to write into (default: tests/golden itself)")
    parser.add_argument("--new-model", action="store_true",
                        help="also export a new tiny model from its seed (changes every hash)")
    args = parser.parse_args(argv)
    regenerate(args.out, args.new_model)
    written = [expected for _, expected in MODELS.values()]
    if args.new_model:
        written += list(MODELS)
    print(f"wrote {', '.join(str(args.out / name) for name in written)}")


if __name__ == "__main__":
    main()
