"""The encoder's rounding rule (``qlic_codec.rdoq``) against the nearest symbols, for a range
of its lambda: BD-rate of whole files, and how far each quality level's point lies above the
curve of the nearest symbols. Lambda is chosen with this on training photos.

    python benchmarks/rounding.py --data ../shared/data/train --every 12 --lambdas 16 24 28 32 48
    python benchmarks/rounding.py --data ../shared/data/train --every 12 --model msssim --metric ms-ssim --lambdas 24 48 96

Curves: mean bpp and the quality of the mean distortion (PSNR of the mean MSE over the
photos, or the MS-SSIM in dB of the mean MS-SSIM) at each of the model's levels. The pixels
are the encoder's own reconstruction, which every decoder gives (``encode_and_reconstruct``).
"""

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bdrate import bd_rate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def quality_of(rgb, pixels, metric):
    if metric == "psnr":
        return float(np.mean((pixels.astype(np.float64) - rgb) ** 2))
    from rd import ms_ssim_rgb
    return ms_ssim_rgb(rgb, pixels)


def curve(images, model, levels, metric):
    """[(bpp, dB)] per level, with the rounding rule ``rdoq.LAMBDA`` holds now."""
    from qlic_codec import api
    points = []
    for level in levels:
        bits = pixels = 0
        distortion = []
        for rgb in images:
            data, decoded = api.encode_and_reconstruct(rgb, quality=level, model=model)
            bits += 8 * len(data)
            pixels += rgb.shape[0] * rgb.shape[1]
            distortion.append(quality_of(rgb, decoded, metric))
        mean = float(np.mean(distortion))
        db = 10 * math.log10(255**2 / mean) if metric == "psnr" else -10 * math.log10(1 - mean)
        points.append((bits / pixels, db))
    return points


def above(base, point):
    """dB of ``point`` above the base curve at its rate (log-rate interpolation, the ends
    extended linearly)."""
    rates = np.log([p[0] for p in base])
    dbs = np.array([p[1] for p in base])
    r = math.log(point[0])
    i = int(np.clip(np.searchsorted(rates, r) - 1, 0, len(rates) - 2))
    t = (r - rates[i]) / (rates[i + 1] - rates[i])
    return point[1] - (dbs[i] + t * (dbs[i + 1] - dbs[i]))


# Lambda times the error added (below 2**(mean_bits + 1), mean_bits at most 8 by the model
# loader) times 2**16 stays far inside int64.
LAMBDA_MAX = 4096


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _lambda(text):
    value = int(text)
    if not 0 <= value <= LAMBDA_MAX:
        raise argparse.ArgumentTypeError(f"must be in 0..{LAMBDA_MAX}")
    return value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "train")
    p.add_argument("--every", type=_positive, default=12,
                   help="every n-th PNG of --data (sorted)")
    p.add_argument("--model", default="mse", help="model name or .qlicm path")
    p.add_argument("--metric", choices=("psnr", "ms-ssim"), default="psnr")
    p.add_argument("--lambdas", type=_lambda, nargs="+", required=True,
                   help=f"bits per squared latent unit to try (0..{LAMBDA_MAX})")
    args = p.parse_args(argv)

    from qlic_codec import api, rdoq
    from qlic_codec.errors import QlicError
    files = sorted(args.data.glob("*.png"))[::args.every]
    if len(files) < 2:
        print(f"error: fewer than 2 photos from {args.data}", file=sys.stderr)
        return 2
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    try:
        model = api.load_model(args.model)
    except QlicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    levels = list(range(1, int(model.top_quality) + 1))
    metric = "psnr" if args.metric == "psnr" else "msssim"
    saved = dict(rdoq.LAMBDA)
    try:
        rdoq.LAMBDA[model.metric] = None
        base = curve(images, args.model, levels, metric)
        print(f"{len(images)} photos from {args.data}, model {args.model} ({model.metric}), "
              f"{args.metric}; nearest symbols:")
        print("  " + "  ".join(f"{b:.4f} bpp {q:.3f} dB" for b, q in base))
        print(f"{'lambda':>7} {'BD-rate':>8}   dB above the nearest symbols' curve, per level")
        for lam in args.lambdas:
            rdoq.LAMBDA[model.metric] = lam
            points = curve(images, args.model, levels, metric)
            bd = bd_rate([b for b, _ in base], [q for _, q in base],
                         [b for b, _ in points], [q for _, q in points])
            print(f"{lam:7d} {bd:+7.2f}%   " + " ".join(f"{above(base, pt):+.3f}"
                                                       for pt in points), flush=True)
    finally:
        rdoq.LAMBDA.update(saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
