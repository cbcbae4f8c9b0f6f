"""What a unit of error in each latent channel costs in pixels, per quality level: whether the
encoder's rounding rule (``qlic_codec.rdoq``) could gain from a lambda per channel or level.

    python benchmarks/latent_weights.py --float models/qlic-mse-float.pt
    python benchmarks/latent_weights.py --float CKPT.pt --data ../shared/data/train --every 40 --count 6

The rule weighs bits against squared error in units of the gained latent (``y * gain``), with
one lambda for every channel and level. That is right if a unit of error costs the same in
pixels everywhere. For each channel ``c`` the float synthesis is run with a small step added
to that channel at every fourth latent position (far enough apart that their pixels barely
overlap) of 256x256 crops; the squared pixel change per position and per unit step squared
is ``J[c]``, and a unit of the gained latent at level ``q`` costs ``J[c] / gain[q, c]**2``.
Printed: its spread over the channels at each level (percentiles of the ratio to the
median), and ``lambda[q]`` times its median (what the training objective charges for a unit
of error, up to a constant): if both are flat, one lambda serves all channels and levels.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "train"


def unit_distortion(model, images, spacing=4, step=0.25):
    """``J[c]``: squared pixel change per perturbed latent position and per unit step squared,
    channel by channel, averaged over ``images`` (float arrays in [0, 1], H x W x 3)."""
    import torch
    J = np.zeros(model.M)
    with torch.no_grad():
        for image in images:
            x = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None]
            y = model.g_a(x)
            base = model.g_s(y)
            mask = torch.zeros(1, 1, *y.shape[2:])
            mask[..., ::spacing, ::spacing] = 1
            n = mask.sum().item()
            for c in range(model.M):
                d = torch.zeros_like(y)
                d[:, c: c + 1] = mask * step
                J[c] += ((model.g_s(y + d) - base) ** 2).sum().item() / n / step**2
    return J / max(1, len(images))


def table(J, gains, lambdas):
    """Per level: percentiles 5, 25, 75, 95 of ``J / gain**2`` over channels (as ratios to the
    median) and ``lambda * median``."""
    rows = []
    for q in range(gains.shape[0]):
        w = J / gains[q] ** 2
        med = float(np.median(w))
        rows.append({"level": q + 1,
                     "spread": [float(np.percentile(w / med, p)) for p in (5, 25, 75, 95)],
                     "lambda_x_median": float(lambdas[q]) * med})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--float", dest="float_model", type=Path, required=True,
                   help="a float checkpoint (models/*-float.pt or a run's model_fp16.pt)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a folder of PNG photos")
    p.add_argument("--every", type=int, default=40, help="take every Nth photo (default 40)")
    p.add_argument("--count", type=int, default=6, help="photos at most (default 6)")
    p.add_argument("--crop", type=int, default=256, help="top-left crop side (default 256)")
    args = p.parse_args(argv)
    if args.every < 1 or args.count < 1 or args.crop < 64 or args.crop % 64:
        p.error("--every and --count must be positive, --crop a multiple of 64")
    import torch
    from PIL import Image

    from qlic_codec.train.checkpoint import load_float_model
    try:
        model, meta = load_float_model(args.float_model)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        p.error(f"{args.float_model}: not a float checkpoint ({exc})")
    model = model.float().eval()
    files = sorted(args.data.glob("*.png"))[:: args.every][: args.count]
    images = []
    for f in files:
        im = np.asarray(Image.open(f).convert("RGB"))[: args.crop, : args.crop] / 255.0
        if im.shape[0] == args.crop and im.shape[1] == args.crop:
            images.append(im)
    if not images:
        p.error(f"no PNG of at least {args.crop}x{args.crop} in {args.data}")
    J = unit_distortion(model, images)
    gains = torch.exp(model.log_gain).detach().numpy()
    shown = os.path.relpath(args.data, ROOT)  # as the README's commands name it
    print(f"{len(images)} crops of {args.crop}x{args.crop} from {shown}; {args.float_model}")
    print("level   spread of J/gain^2 over channels (p5 p25 p75 p95, ratio to median)"
          "   lambda x median")
    for r in table(J, gains, meta["lambdas"]):
        print(f"{r['level']:5d}   " + " ".join(f"{s:5.2f}" for s in r["spread"])
              + f"   {r['lambda_x_median']:.3g}")


if __name__ == "__main__":
    main()
