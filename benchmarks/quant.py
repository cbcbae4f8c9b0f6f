"""The quantization study: what each step of 8-bit quantization costs against the float model.

    python benchmarks/quant.py --float models/qlic-mse-float.pt              # full table
    python benchmarks/quant.py ... --levels 1 3 5 8                          # 4-point curves, 2x faster
    python benchmarks/quant.py --float models/qlic-mse-float.pt --rows W A  # only some groups
    python benchmarks/quant.py ... --finetuned models/qlic-mse-clipft.pt    # + clipping fine-tune
    python benchmarks/quant.py ... --engine models/qlic-mse.qlicm           # + the shipped int8
    python benchmarks/quant.py ... --rows --ablate models/qlic-mse-qat.pt --levels 8  # where it goes
    python benchmarks/quant.py --float CTL.pt --rows --simulate QAT.pt WIDE.pt  # fine-tunes, simulated

Every row runs the float model with some parts quantized (``qlic_codec.quantize.simulate``)
on the validation photos at every quality level and prints its BD-rate against the float
model, in PSNR and in MS-SSIM (dB): positive = more bits for the same quality. Rates of the
simulated rows are estimated from likelihoods, as the float model's are; the ``engine`` row
runs the real integer codec (whole files, headers included).

Row groups: ``W`` weights only (grouping x scheme, clipping), ``A`` 8-bit activations on top of
the shipped weight scheme (ranges, multiplexed codebooks, mean removal), ``T`` the entropy
coder's fixed-point means and 64-level scale table, ``E`` the integer engine.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bdrate import bd_rate  # noqa: E402


def variants(shipped_weights):
    from qlic_codec.quantize.simulate import Variant
    W = shipped_weights
    return {
        "W": [
            Variant("W8 per layer, uniform", ("layer", "uniform")),
            Variant("W8 per channel, uniform", ("channel", "uniform")),
            Variant("W8 per layer, non-linear (Lloyd-Max)", ("layer", "lloyd")),
            Variant("W8 per channel, non-linear (Lloyd-Max)", ("channel", "lloyd")),
            Variant("W8 per channel, non-linear (log grid)", ("channel", "log")),
            Variant("W8 per channel, uniform, MSE-clipped ranges", ("channel", "uniform"),
                    clip=True),
        ],
        "A": [
            Variant("+ A8 per tensor, max range", W, acts="max"),
            Variant("+ A8 per channel, max range", W, acts="max", per_channel=True),
            Variant("+ A8 per channel, MSE-clipped range", W, acts="mse", per_channel=True),
            Variant("+ A8 per channel, max range, mean-removed y", W, acts="max",
                    per_channel=True, mean_removed=True),
            Variant("+ A8 per channel, multiplexer, mean-removed y", W, acts="mux",
                    per_channel=True, mean_removed=True),
        ],
        "T": [
            Variant("+ entropy tables, weights on the exported (folded) grid", W, acts="max",
                    per_channel=True, mean_removed=True, tables=True, fold=True),
        ],
    }


def curve(rows):
    return (np.array([r["bpp"] for r in rows]), np.array([r["psnr"] for r in rows]),
            np.array([-10 * np.log10(1 - r["ms_ssim"]) for r in rows]))


def bd_pair(anchor, test):
    ra, pa, ma = curve(anchor)
    rt, pt, mt = curve(test)
    return bd_rate(ra, pa, rt, pt), bd_rate(ra, ma, rt, mt)


def engine_rows(model_path, images, levels):
    from qlic_codec import api
    from qlic_codec.train.metrics import ms_ssim, psnr
    from qlic_codec.train.data import to_tensor
    rows = []
    for level in levels:
        acc = np.zeros(3)
        for rgb in images:
            data, pixels = api.encode_and_reconstruct(rgb, level + 1, str(model_path))
            x, x_hat = to_tensor(rgb), to_tensor(pixels)
            acc += (8 * len(data) / (rgb.shape[0] * rgb.shape[1]), psnr(x_hat, x).item(),
                    ms_ssim(x_hat, x).item())
        acc /= len(images)
        rows.append({"level": level + 1, "bpp": acc[0], "psnr": acc[1], "ms_ssim": acc[2]})
    return rows


# Activation groups of the ablation: a prefix of the quantizers' names (``g_s.3`` is the output
# of the fourth integer layer of the synthesis transform, ``ha_in`` the copy of y into h_a).
ABLATION_GROUPS = ("g_a", "h_", "ha_in", "g_s", "g_s.0", "g_s.1", "g_s.2", "g_s.3", "g_s.4",
                   "g_s.5")


def qat_parts(qat_path):
    """(float model, learned quantizers, model with weights on the exported grid) of a
    quantization-aware fine-tune with learned ranges."""
    from qlic_codec.quantize import simulate
    from qlic_codec.quantize.finetune import ranges_from_meta
    from qlic_codec.train.checkpoint import load_float_model

    model, meta = load_float_model(qat_path)
    ranges = (meta.get("quantization_finetune") or {}).get("activation_ranges")
    if not isinstance(ranges, dict):
        raise SystemExit(f"{qat_path} has no learned activation ranges (use --range-lr)")
    quants = ranges_from_meta(ranges)
    return model, quants, simulate.quantize_weights(model, "channel", "uniform", quants=quants)


def qat_simulation(qat_path):
    """The shipped simulation of a fine-tune with learned ranges (weights on the exported
    grid, its activation codes, entropy tables): what its export would do, and the only way
    to measure a fine-tune with 16-bit tensors, which cannot be exported."""
    from qlic_codec.quantize import simulate

    _, quants, weights_q = qat_parts(qat_path)
    wide = sorted(k for k, q in quants.items() if q.bits != 8)
    bits = sorted({q.bits for q in quants.values() if q.bits != 8})
    name = f"simulated {Path(qat_path).name}" + (
        f" ({'/'.join(map(str, bits))}-bit {', '.join(wide)})" if wide else "")
    return name, simulate.SimulatedModel(weights_q, quants, True)


def ablation(qat_path, images, levels, groups=ABLATION_GROUPS) -> list:
    """The shipped simulation of a fine-tuned checkpoint (learned ranges, weights on the
    exported grid, entropy tables) with one group of activations at a time in float.

    A group is a prefix of tensor names, or several joined by commas (all of them in float).
    """
    from qlic_codec.quantize import simulate
    from qlic_codec.train.loop import validate

    model, quants, weights_q = qat_parts(qat_path)

    def keep(name):  # the quantizers of ``name``'s group become the identity
        prefixes = tuple(name.split(","))
        return {k: ((lambda x: x) if name == "all" or k.startswith(prefixes) else q)
                for k, q in quants.items()}

    rows = [("float weights, float activations", model),
            ("int8 weights, float activations", simulate.SimulatedModel(weights_q, keep("all"), True)),
            ("int8 weights and activations", simulate.SimulatedModel(weights_q, quants, True))]
    rows += [(f"  ... {g} activations in float", simulate.SimulatedModel(weights_q, keep(g), True))
             for g in groups]
    print(f"\nablation of {qat_path}: bpp / PSNR per level")
    out = []
    for name, sim in rows:
        curve = validate(sim, images, levels)
        out.append({"name": name, "curve": curve})
        cells = "  ".join(f"q{r['level']} {r['bpp']:.4f} {r['psnr']:.3f}" for r in curve)
        print(f"{name:<40} {cells}", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--float", dest="float_ckpt", required=True)
    p.add_argument("--finetuned", default=None, help="clipping fine-tuned float checkpoint")
    p.add_argument("--engine", default=None, help="int8 model file (.qlicm) to measure")
    p.add_argument("--ablate", default=None, metavar="QAT_CKPT",
                   help="a quantization-aware fine-tune with learned ranges: simulate it with "
                        "one group of activations at a time left in float and print where "
                        "its loss comes from (bpp and PSNR per level)")
    p.add_argument("--ablate-groups", nargs="+", default=list(ABLATION_GROUPS), metavar="G",
                   help="the groups of --ablate: a tensor-name prefix each, or several joined "
                        "by commas to leave all of them in float (e.g. g_a.1,g_a.3)")
    p.add_argument("--simulate", nargs="+", default=[], metavar="QAT_CKPT",
                   help="fine-tunes with learned ranges: a row each for their simulation "
                        "(also those with 16-bit tensors, which cannot be exported)")
    p.add_argument("--data", default=None)
    p.add_argument("--rows", nargs="*", default=["W", "A", "T"], choices=["W", "A", "T"])
    p.add_argument("--limit", type=int, default=0, help="only the first N validation photos")
    p.add_argument("--levels", type=int, nargs="+", default=None,
                   help="quality levels (1-based) of the curves (default: all)")
    p.add_argument("--calibration-images", type=int, default=None,
                   help="training photos to calibrate on (default: as the exporter)")
    p.add_argument("--weights", default="channel/uniform",
                   help="weight scheme under the A and T rows (grouping/scheme)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quant.json"))
    args = p.parse_args(argv)

    import torch
    from qlic_codec.quantize.calibrate import calibration_images
    from qlic_codec.quantize.simulate import build, quantize_weights, SimulatedModel
    from qlic_codec.train.checkpoint import load_float_model
    from qlic_codec.train.data import default_data_root, load_folder
    from qlic_codec.train.loop import validate

    torch.set_grad_enabled(False)
    data = Path(args.data) if args.data else default_data_root()
    images = load_folder(data / "val")[: args.limit or None]
    calib = (calibration_images(data, args.calibration_images) if args.calibration_images
             else calibration_images(data))
    model, _ = load_float_model(args.float_ckpt)
    levels = [q - 1 for q in args.levels] if args.levels else list(range(model.levels))
    shipped = tuple(args.weights.split("/"))

    results = {"float": validate(model, images, levels), "rows": []}
    print(f"{len(images)} photos, levels {[q + 1 for q in levels]}, float model {args.float_ckpt}")
    print(f"{'row':<52} {'BD PSNR':>9} {'BD MS-SSIM':>11} {'s':>6}")

    def report(name, rows, started):
        bd_p, bd_m = bd_pair(results["float"], rows)
        results["rows"].append({"name": name, "bd_psnr": bd_p, "bd_msssim": bd_m,
                                "curve": rows})
        print(f"{name:<52} {bd_p:>8.2f}% {bd_m:>10.2f}% {time.time() - started:>6.0f}",
              flush=True)

    table = variants(shipped)
    for group in args.rows:
        for v in table[group]:
            t = time.time()
            report(v.name, validate(build(model, v, calib), images, levels), t)
    if args.finetuned:
        tuned, _ = load_float_model(args.finetuned)
        t = time.time()
        sim = SimulatedModel(quantize_weights(tuned, "channel", "uniform", clip=True))
        report("W8 per channel, clipping fine-tune", validate(sim, images, levels), t)
    for path in args.simulate:
        t = time.time()
        name, sim = qat_simulation(path)
        report(name, validate(sim, images, levels), t)
    if args.engine:
        t = time.time()
        report(f"integer engine ({Path(args.engine).name})",
               engine_rows(args.engine, images, levels), t)
    if args.ablate:
        results["ablation"] = ablation(args.ablate, images, levels, args.ablate_groups)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
