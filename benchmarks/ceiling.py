"""How much quality the transforms of a float model can carry at all: the PSNR of the
synthesis run on the analysis' unquantized latent, against the PSNR of the top quality level.

A learned codec's quality at high rates is capped twice: by the quantization of the latent
(which the rate pays for) and by what the analysis and synthesis transforms can represent
(which no rate can buy back). With ``y = g_a(x)`` passed to ``g_s`` unrounded, the second
cap alone remains: no level of the model can decode above it, and the gap between it and the
top level is what a finer quantization could still gain. A ceiling close to the top level
says the top of the rate-distortion curve is set by the transforms' capacity, not by the
entropy model or the quality table.

Which transform sets the ceiling: with ``--optimise STEPS`` the latent is also fitted to the
synthesis alone (Adam on ``|g_s(y) - x|^2`` from ``y = g_a(x)``), on a centre crop of each
image. What that gains over ``g_s(g_a(x))`` on the same crop is what a better analysis
(encoder side only) could add; what it leaves is the synthesis' own limit.

    python benchmarks/ceiling.py models/qlic-mse-float.pt
    python benchmarks/ceiling.py OLD.pt NEW.pt --labels old new --data ../shared/data --sets val val-wide
    python benchmarks/ceiling.py models/qlic-mse-float.pt --optimise 300 --crop 256 --limit 3

Every image is padded to a multiple of 64 by edge replication as in validation, the output
cropped, clamped and rounded to 8 bits, PSNR on RGB averaged over the images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def ceiling_rows(model, images, top_level: int) -> dict:
    """Mean PSNR of the unquantized autoencoder (``ceiling``) and of level ``top_level``
    (0-based, the model's own forward pass: rounded latent, ``top``) over ``images``."""
    import torch
    from qlic_codec.train.data import to_tensor
    from qlic_codec.train.metrics import psnr

    ceiling, top = [], []
    with torch.no_grad():
        for image in images:
            x = to_tensor(image)
            h, w = x.shape[2:]
            xp = torch.nn.functional.pad(x, (0, (-w) % 64, 0, (-h) % 64), mode="replicate")

            def quality(x_hat):
                x_hat = x_hat[:, :, :h, :w].clamp(0, 1)
                return psnr(torch.round(x_hat * 255) / 255, x).item()

            ceiling.append(quality(model.g_s(model.g_a(xp))))
            top.append(quality(model(xp, torch.tensor([float(top_level)]))["x_hat"]))
    return {"images": len(images), "ceiling": float(np.mean(ceiling)),
            "top": float(np.mean(top))}


def fitted_latent_rows(model, images, steps: int, crop: int) -> dict:
    """Mean PSNR over the centre ``crop`` x ``crop`` of each image of ``g_s(g_a(x))``
    (``ceiling``) and of ``g_s(y)`` with ``y`` fitted to the synthesis by ``steps`` Adam
    steps from ``g_a(x)`` (``fitted``): lr 0.05, then 0.01 for the second half."""
    import torch
    from qlic_codec.train.data import to_tensor
    from qlic_codec.train.metrics import psnr

    for p in model.parameters():
        p.requires_grad_(False)
    start, fitted = [], []
    for image in images:
        x = to_tensor(image)
        h, w = x.shape[2:]
        size = min(crop, h, w) // 64 * 64
        top, left = (h - size) // 2, (w - size) // 2
        x = x[:, :, top: top + size, left: left + size]

        def quality(x_hat):
            return psnr(torch.round(x_hat.clamp(0, 1) * 255) / 255, x).item()

        with torch.no_grad():
            y = model.g_a(x)
            start.append(quality(model.g_s(y)))
        y = y.clone().requires_grad_(True)
        opt = torch.optim.Adam([y], lr=0.05)
        for step in range(steps):
            if step == steps // 2:
                for group in opt.param_groups:
                    group["lr"] = 0.01
            opt.zero_grad()
            torch.mean((model.g_s(y) - x) ** 2).backward()
            opt.step()
        with torch.no_grad():
            fitted.append(quality(model.g_s(y)))
    return {"images": len(images), "crop_ceiling": float(np.mean(start)),
            "fitted": float(np.mean(fitted))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="float models (models/*.pt) or "
                        "training checkpoints")
    parser.add_argument("--labels", nargs="+", help="one name per checkpoint (default: the "
                        "file names)")
    parser.add_argument("--data", default=os.environ.get("QLIC_DATA", str(ROOT.parent / "shared"
                                                                            / "data")))
    parser.add_argument("--sets", nargs="+", default=["val", "val-wide"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--optimise", type=int, default=0, metavar="STEPS",
                        help="also fit the latent to the synthesis for STEPS Adam steps")
    parser.add_argument("--crop", type=int, default=256, help="centre crop for --optimise")
    parser.add_argument("--limit", type=int, default=0, help="only the first N photos of "
                        "each set (sorted by name; 0: all)")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.checkpoints):
        parser.error("--labels needs one name per checkpoint")

    import torch
    from qlic_codec.train.checkpoint import load_float_model
    from qlic_codec.train.data import load_folder

    torch.set_num_threads(args.threads)
    sets = {name: load_folder(Path(args.data) / name) for name in args.sets}
    if args.limit:
        sets = {name: images[: args.limit] for name, images in sets.items()}
    labels = args.labels or [Path(c).name for c in args.checkpoints]
    rows = []
    print(f"{'model':24s} {'steps':>7s} {'set':9s} {'ceiling':>8s} {'top':>7s} {'gap':>6s}")
    for label, path in zip(labels, args.checkpoints):
        model, meta = load_float_model(Path(path))
        for name, images in sets.items():
            row = {"model": label, "path": str(path), "steps": meta.get("steps"),
                   "metric": meta.get("metric"), "set": name,
                   **ceiling_rows(model, images, model.levels - 1)}
            steps = "?" if row["steps"] is None else f"{row['steps']:,}"
            line = (f"{label:24s} {steps:>7s} {name:9s} {row['ceiling']:8.2f} {row['top']:7.2f} "
                    f"{row['ceiling'] - row['top']:6.2f}")
            if args.optimise:
                row.update(fitted_latent_rows(model, images, args.optimise, args.crop))
                line += (f"   crop: ceiling {row['crop_ceiling']:.2f}, fitted latent "
                         f"{row['fitted']:.2f} ({row['fitted'] - row['crop_ceiling']:+.2f})")
            rows.append(row)
            print(line, flush=True)
    print("(PSNR in dB: 'ceiling' with the latent unquantized, 'top' the model's top level, "
          "'gap' what finer quantization could still gain"
          + ("; 'fitted latent' the synthesis on a latent fitted to it" if args.optimise
             else "") + ")")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
