"""Where a codec gains or loses against another: BD-rate photo by photo, by group of photos,
and below and above a quality, from the per-codec results files that ``rd.py`` writes.

    python benchmarks/per_image.py benchmarks/results/val-wide/qlic-mse.json benchmarks/results/val-wide/webp.json
    python benchmarks/per_image.py TEST.json ANCHOR.json [ANCHOR.json ...] --split 32 --metric psnr

Each photo's BD-rate comes from its own points (one per setting). A group is the photos whose
names share the part before the first ``_`` (``urban100_img_006.png`` is in ``urban100``):
its row is the BD-rate of the group's mean curve (mean bpp and mean PSNR or MS-SSIM at each
setting, MS-SSIM then in dB), the averaging ``rd.py`` applies to the whole set. ``--split Q`` adds the BD-rate below and above quality ``Q`` (dB) of every row.
``--less-bytes N`` takes ``N`` bytes from each of the test codec's files: what a container
``N`` bytes smaller would give (against a float model, whose rate has no container at all,
``--less-bytes 42`` leaves what the streams alone lose).
Negative: the test codec needs fewer bits.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bdrate import bd_rate  # noqa: E402


def to_db(value: float, metric: str) -> float:
    """The quality axis of a BD-rate: PSNR as it is, MS-SSIM in dB as ``rd.py`` has it."""
    if metric == "psnr":
        return value
    return -10 * math.log10(max(1 - value, 1e-12))


def curves(results: dict, metric: str, less_bytes: int = 0) -> dict:
    """``{image: {setting: (bpp, PSNR or MS-SSIM)}}`` of one results file, with
    ``less_bytes`` taken from every file's size."""
    key = "psnr" if metric == "psnr" else "ms_ssim"
    pixels = {i["name"]: i["width"] * i["height"] for i in results.get("images", [])}
    out = defaultdict(dict)
    for p in results["points"]:
        bpp = p["bpp"]
        if less_bytes:
            if p.get("bytes") is None or p["image"] not in pixels:
                raise ValueError(f"{results.get('label', 'the test codec')} has no file sizes "
                                 "to take bytes from")
            bpp = (p["bytes"] - less_bytes) * 8 / pixels[p["image"]]
        out[p["image"]][p["setting"]] = (bpp, p[key])
    return out


def group_of(image: str) -> str:
    return image.split("_", 1)[0] if "_" in image else image


def mean_curve(per_image: dict, images: list, metric: str) -> tuple[list, list]:
    """The mean point of ``images`` at every setting they all have: mean bpp and mean PSNR
    or MS-SSIM (then in dB), as ``rd.py`` averages a set."""
    settings = set.intersection(*(set(per_image[i]) for i in images))
    rows = [np.mean([per_image[i][s] for i in images], axis=0) for s in sorted(settings)]
    return [r[0] for r in rows], [to_db(r[1], metric) for r in rows]


def table(test: dict, anchors: dict, metric: str, split: float | None,
          less_bytes: int = 0) -> list[dict]:
    """One row per photo, per group and for the whole set: the BD-rate against each anchor
    (``{label: value}``), and below / above ``split`` when given; ``less_bytes`` as in
    ``curves``, for the test codec."""
    t = curves(test, metric, less_bytes)
    a = {label: curves(r, metric) for label, r in anchors.items()}
    images = sorted(i for i in t if all(i in c for c in a.values()))
    groups = defaultdict(list)
    for image in images:
        groups[group_of(image)].append(image)
    units = [(image, [image]) for image in images]
    units += [(f"{g} ({len(m)})", m) for g, m in sorted(groups.items()) if len(groups) > 1]
    units.append((f"all ({len(images)})", images))
    rows = []
    for name, members in units:
        row = {"name": name, "bd": {}}
        tr, tq = mean_curve(t, members, metric)
        for label, curve in a.items():
            ar, aq = mean_curve(curve, members, metric)
            parts = {"all": bd_rate(ar, aq, tr, tq)}
            if split is not None:
                parts["below"] = bd_rate(ar, aq, tr, tq, within=(None, split))
                parts["above"] = bd_rate(ar, aq, tr, tq, within=(split, None))
            row["bd"][label] = parts
        rows.append(row)
    return rows


def _cell(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.1f}%"  # n/a: no shared quality there


def _label(results: dict, path: str) -> str:
    return results.get("codec") if results.get("codec") not in (None, "qlic") else Path(path).stem


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("test", help="results file of the codec under test")
    parser.add_argument("anchors", nargs="+", help="results files of the codecs it is put "
                        "against")
    parser.add_argument("--metric", choices=("psnr", "ms-ssim"), default="psnr")
    parser.add_argument("--split", type=float, help="also the BD-rate below and above this "
                        "quality (dB)")
    parser.add_argument("--less-bytes", type=int, default=0, metavar="N",
                        help="take N bytes from each of the test codec's files (a smaller "
                             "container)")
    args = parser.parse_args(argv)
    test = json.loads(Path(args.test).read_text())
    anchors = {}
    for path in args.anchors:
        results = json.loads(Path(path).read_text())
        anchors[_label(results, path)] = results
    try:
        rows = table(test, anchors, args.metric, args.split, args.less_bytes)
    except ValueError as exc:
        parser.error(str(exc))
    parts = ["all"] + (["below", "above"] if args.split is not None else [])
    head = "".join(f" {label + (' ' + p if p != 'all' else ''):>16s}"
                   for label in anchors for p in parts)
    print(f"BD-rate of {_label(test, args.test)} ({args.metric}) against each anchor; "
          + (f"below / above {args.split:g} dB; " if args.split is not None else "")
          + (f"{args.less_bytes} bytes less per file; " if args.less_bytes else "")
          + "negative: fewer bits")
    print(f"{'photo or group':44s}{head}")
    for row in rows:
        cells = "".join(f" {_cell(row['bd'][label][p]):>16s}" for label in anchors for p in parts)
        print(f"{row['name'][:44]:44s}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
