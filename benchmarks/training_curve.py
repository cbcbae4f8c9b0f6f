"""Validation BD-rate against training steps, from runs' ``losses.csv``.

    python benchmarks/training_curve.py models/qlic-mse-losses.csv
    python benchmarks/training_curve.py runs/mse6/losses.csv --plot benchmarks/figures/training.png
    python benchmarks/training_curve.py runs/msssim-cc/losses.csv --metric ms-ssim
    python benchmarks/training_curve.py models/qlic-mse-cc-losses.csv models/qlic-mse-even8-losses.csv \
        models/qlic-mse-anneals.csv --labels "five slices" "eight slices" "annealed" --plot training.png

For every step at which a run validated, the PSNR (or MS-SSIM, in dB as ``rd.py`` has it)
BD-rate of the float model (rates estimated from its likelihoods) against the first
validation of the first file, on each validation set. With several files (phases of one
campaign, or annealed copies of it), each is a series of its own, all against that one
reference. The slope of the last few points says what more steps would give.
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


def bd_against_first(series, first=None):
    """[(step, BD-rate)] of each point of ``series`` against ``first`` (per-level points;
    by default the series' own first), leaving out points with another number of levels."""
    first = series[0][1] if first is None else first
    out = []
    for step, pts in series:
        if len(pts) != len(first):
            continue
        out.append((step, bd_rate([p[0] for p in first], [p[1] for p in first],
                                  [p[0] for p in pts], [p[1] for p in pts])))
    return out


def read_series(path, metric):
    import csv
    with open(path, newline="") as f:
        return curves(list(csv.DictReader(f)), metric)


def bd_series(series, reference):
    """{split: {step: BD-rate}} of ``series`` against ``reference`` ({split: points}); splits
    that the reference lacks, or points with another number of levels, are left out."""
    table = {}
    for split, points in series.items():
        if split not in reference:
            continue
        table[split] = dict(bd_against_first(points, reference[split]))
    return table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv", type=Path, nargs="+")
    p.add_argument("--labels", nargs="+", default=None,
                   help="one name per file, for the tables and the plot's legend")
    p.add_argument("--plot", type=Path, default=None, help="write the curve as a PNG")
    p.add_argument("--metric", choices=("psnr", "ms-ssim"), default="psnr",
                   help="the quality of the BD-rate (default PSNR)")
    args = p.parse_args(argv)
    labels = args.labels or [str(c) for c in args.csv]
    if len(labels) != len(args.csv):
        p.error(f"--labels needs {len(args.csv)} names, one per file")
    metric = "psnr" if args.metric == "psnr" else "ms_ssim"
    all_series = []
    for path in args.csv:
        try:
            series = read_series(path, metric)
        except (OSError, KeyError, ValueError) as exc:
            p.error(f"{path}: not a losses.csv ({exc})")
        if not series:
            raise SystemExit(f"{path} has no validation rows")
        all_series.append(series)
    reference = {split: s[0][1] for split, s in all_series[0].items()}
    ref_step = min(s[0][0] for s in all_series[0].values())
    tables = [bd_series(s, reference) for s in all_series]
    splits = sorted(reference)
    for label, table in zip(labels, tables):
        if len(tables) > 1:
            print(f"\n{label}")
        steps = sorted({step for t in table.values() for step in t})
        print("| step | " + " | ".join(f"BD-rate {s}" for s in splits) + " |")
        print("|---|" + "---|" * len(splits))
        for step in steps:
            cells = [f"{table[s][step]:+.2f}%" if step in table.get(s, {}) else ""
                     for s in splits]
            print(f"| {step} | " + " | ".join(cells) + " |")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, len(splits), figsize=(5.5 * len(splits), 3.6),
                                 squeeze=False, sharey=True)
        name = "PSNR" if args.metric == "psnr" else "MS-SSIM"
        for ax, s in zip(axes[0], splits):
            for label, table in zip(labels, tables):
                xs = sorted(table.get(s, {}))
                if xs:
                    ax.plot(xs, [table[s][x] for x in xs], marker="o", label=label)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_title(s)
            ax.set_xlabel("training step")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(f"{name} BD-rate vs step {ref_step} (%)")
        axes[0][-1].legend(fontsize=8)
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"written {args.plot}")


if __name__ == "__main__":
    main()
