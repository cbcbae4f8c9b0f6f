"""Validation BD-rate against training steps, from a run's ``losses.csv``.

    python benchmarks/training_curve.py models/qlic-mse-losses.csv
    python benchmarks/training_curve.py runs/mse6/losses.csv --plot benchmarks/figures/training.png
    python benchmarks/training_curve.py runs/msssim-cc/losses.csv --metric ms-ssim

For every step at which the run validated, the PSNR (or MS-SSIM, in dB as ``rd.py`` has
it) BD-rate of the float model (rates estimated from its likelihoods) against the first
validation in the file, on each validation set. The slope of the last few points says what
more steps would give.
"""

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bdrate import bd_rate  # noqa: E402


def quality(row, metric):
    """The row's quality in dB: its PSNR, or its MS-SSIM as -10 log10(1 - MS-SSIM)."""
    if metric == "psnr":
        return float(row["psnr"])
    return -10 * math.log10(max(1e-12, 1 - float(row["ms_ssim"])))


def curves(rows, metric="psnr"):
    """{split: [(step, [(bpp, quality) per level])]} for the validation sets, in step order."""
    points = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r["split"] != "train":
            points[r["split"]][int(r["step"])][int(r["level"])] = (float(r["bpp"]),
                                                                    quality(r, metric))
    return {split: [(step, [by_level[lv] for lv in sorted(by_level)])
                    for step, by_level in sorted(steps.items())]
            for split, steps in points.items()}


def bd_against_first(series):
    first = series[0][1]
    out = []
    for step, pts in series:
        if len(pts) != len(first):
            continue
        out.append((step, bd_rate([p[0] for p in first], [p[1] for p in first],
                                  [p[0] for p in pts], [p[1] for p in pts])))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", type=Path)
    p.add_argument("--plot", type=Path, default=None, help="write the curve as a PNG")
    p.add_argument("--metric", choices=("psnr", "ms-ssim"), default="psnr",
                   help="the quality of the BD-rate (default PSNR)")
    args = p.parse_args(argv)
    import csv
    with open(args.csv, newline="") as f:
        rows = list(csv.DictReader(f))
    series = curves(rows, "psnr" if args.metric == "psnr" else "ms_ssim")
    if not series:
        raise SystemExit(f"{args.csv} has no validation rows")
    table = {split: dict(bd_against_first(s)) for split, s in series.items()}
    steps = sorted({step for t in table.values() for step in t})
    splits = sorted(table)
    print("| step | " + " | ".join(f"BD-rate {s}" for s in splits) + " |")
    print("|---|" + "---|" * len(splits))
    for step in steps:
        cells = [f"{table[s][step]:+.2f}%" if step in table[s] else "" for s in splits]
        print(f"| {step} | " + " | ".join(cells) + " |")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for s in splits:
            xs = sorted(table[s])
            ax.plot(xs, [table[s][x] for x in xs], marker="o", label=s)
        ax.set_xlabel("training step")
        name = "PSNR" if args.metric == "psnr" else "MS-SSIM"
        ax.set_ylabel(f"{name} BD-rate vs step {steps[0]} (%)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"written {args.plot}")


if __name__ == "__main__":
    main()
