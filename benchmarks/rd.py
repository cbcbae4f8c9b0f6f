"""Rate-distortion of qlic (int8) and its float model against JPEG, WebP, AVIF, HEVC intra 4:4:4
and JPEG 2000 on a folder of PNGs: bpp, PSNR (8-bit RGB), MS-SSIM, BD-rates, RD curves.

    python benchmarks/rd.py                                   # ../shared/data/val, bundled model
    python benchmarks/rd.py --model tests/golden/tiny-mse.qlicm --limit 2 --codecs qlic jpeg
    python benchmarks/rd.py --float models/qlic-mse-float.pt  # adds the float model

Every classic codec goes through Pillow: encode to bytes, decode those bytes, measure. qlic's
pixels come from ``encode_and_reconstruct`` (the encoder runs the decoder's integer
synthesis; ``--check-decode`` also decodes each stream and checks the pixels are the same).
The float model's rate is estimated from its likelihoods (``train.loop.validate``).

Curves are averaged over images at each quality setting (mean bpp, mean PSNR, mean MS-SSIM of
the per-image points); BD-rates compare those average curves, PSNR in dB and MS-SSIM in dB
(-10 log10(1 - MS-SSIM)). Negative BD-rate: qlic needs fewer bits for the same quality.
Writes ``rd.json``, ``rd_psnr.png`` and ``rd_msssim.png`` to ``--out``, and one file per
codec (and per model) to ``--out/<dataset>/<codec-or-model>.json``: ``qlic-mse.json``,
``qlic-mse-float.json``, ``jpeg.json``, ... with bpp, PSNR and MS-SSIM of every image at every
setting and the averaged curve. ``<dataset>`` is the name of the ``--data`` folder (``val``);
a run on part of it (``--limit``, or not every quality level), or with the nearest symbols
(``--rounding nearest``, see ``qlic_codec.rdoq``), writes to
``<dataset>.partial/`` instead, which git ignores, so a quick look never overwrites the
committed results of a whole run.
"""

import argparse
import io
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "val"
sys.path.insert(0, str(HERE))

from bdrate import bd_rate, overlap  # noqa: E402

# Settings chosen to span roughly 0.1 to 3 bpp on photos.
JPEG_Q = [5, 10, 20, 35, 50, 65, 80, 90]
WEBP_Q = [0, 5, 15, 30, 50, 70, 85, 95]
AVIF_Q = [5, 15, 25, 35, 45, 55, 65, 75, 85]
HEVC_Q = [5, 15, 25, 35, 45, 55, 65]
J2K_RATIOS = [240, 160, 96, 64, 40, 24, 16, 10]  # compression ratios against 24 bpp
MIN_MSSSIM_SIDE = 161


def _pil_check(feature):
    def check():
        from PIL import features
        if not features.check(feature):
            return f"Pillow was built without {feature}"
        return None
    return check


def _heif_check():
    try:
        import pillow_heif
    except ImportError:
        return "pillow-heif is not installed (pip install pillow-heif)"
    encoders = pillow_heif.libheif_info().get("encoders", {})
    if "x265" not in encoders:
        return f"pillow-heif has no x265 encoder (encoders: {', '.join(encoders) or 'none'})"
    pillow_heif.register_heif_opener()
    return None


def _heif_version():
    import pillow_heif
    info = pillow_heif.libheif_info()
    return f"pillow-heif {pillow_heif.__version__}, libheif {info.get('libheif')}, " \
           f"{info.get('encoders', {}).get('x265', '')}"


def _pil_version(feature):
    def version():
        from PIL import features, __version__
        return f"Pillow {__version__}, {feature} {features.version(feature)}"
    return version


# name -> label, the setting swept, its values, Pillow save options, availability check.
CLASSIC = {
    "jpeg": dict(label="JPEG 4:2:0", setting="quality", values=JPEG_Q,
                 save=lambda q: dict(format="JPEG", quality=q, subsampling=2, optimize=True),
                 check=_pil_check("jpg"), version=_pil_version("libjpeg_turbo")),
    "jpeg444": dict(label="JPEG 4:4:4", setting="quality", values=JPEG_Q,
                    save=lambda q: dict(format="JPEG", quality=q, subsampling=0, optimize=True),
                    check=_pil_check("jpg"), version=_pil_version("libjpeg_turbo")),
    "webp": dict(label="WebP", setting="quality", values=WEBP_Q,
                 save=lambda q: dict(format="WEBP", quality=q, method=6),
                 check=_pil_check("webp"), version=_pil_version("webp")),
    "avif": dict(label="AVIF 4:4:4", setting="quality", values=AVIF_Q,
                 save=lambda q: dict(format="AVIF", quality=q, subsampling="4:4:4", speed=6),
                 check=_pil_check("avif"), version=_pil_version("avif")),
    "hevc444": dict(label="HEVC intra 4:4:4 (x265)", setting="quality", values=HEVC_Q,
                    save=lambda q: dict(format="HEIF", quality=q, chroma=444),
                    check=_heif_check, version=_heif_version),
    "jpeg2000": dict(label="JPEG 2000", setting="ratio", values=J2K_RATIOS,
                     save=lambda r: dict(format="JPEG2000", quality_mode="rates",
                                         quality_layers=[r], irreversible=True, mct=1,
                                         no_jp2=True),
                     check=_pil_check("jpg_2000"), version=_pil_version("jpg_2000")),
}
ALL_CODECS = ["qlic", *CLASSIC]


def note(msg):
    print(f"note: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- measurement

def psnr_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over all pixels and the three channels of two uint8 images."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ms_ssim_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two uint8 images (``qlic_codec.train.metrics.ms_ssim``); nan if too small."""
    if min(a.shape[:2]) < MIN_MSSSIM_SIDE:
        return math.nan
    import torch
    from qlic_codec.train.metrics import ms_ssim

    def t(x):
        return torch.from_numpy(np.array(x)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        return float(ms_ssim(t(b), t(a))[0])


def msssim_db(value: float) -> float:
    if not math.isfinite(value):
        return math.nan
    return math.inf if value >= 1 else -10 * math.log10(1 - value)


def measure(rgb, decoded, nbytes) -> dict:
    if decoded.shape != rgb.shape:
        raise ValueError(f"decoded shape {decoded.shape} != {rgb.shape}")
    h, w = rgb.shape[:2]
    return {"bytes": int(nbytes), "bpp": 8.0 * nbytes / (h * w),
            "psnr": psnr_rgb(rgb, decoded), "ms_ssim": ms_ssim_rgb(rgb, decoded)}


def classic_point(spec, rgb, value):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, **spec["save"](value))
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        decoded = np.asarray(im.convert("RGB"))
    return measure(rgb, decoded, len(data))


def available_classic(names):
    """The classic codecs that can encode and decode here; a note for each that cannot."""
    probe = (np.arange(48 * 40 * 3) % 251).astype(np.uint8).reshape(48, 40, 3)
    ok = {}
    for name in names:
        spec = CLASSIC[name]
        try:
            why = spec["check"]()
            if why is None:
                classic_point(spec, probe, spec["values"][len(spec["values"]) // 2])
        except Exception as exc:  # a codec that fails its probe is skipped, never fatal
            why = f"{type(exc).__name__}: {exc}"
        if why:
            note(f"skipping {name}: {why}")
        else:
            ok[name] = spec
    return ok


def qlic_points(rgb, model, levels, check_decode):
    import qlic_codec
    from qlic_codec import api
    for level in levels:
        data, pixels = api.encode_and_reconstruct(rgb, level, model)
        if check_decode and not np.array_equal(qlic_codec.decode(data, model), pixels):
            raise RuntimeError(f"quality {level}: decode() differs from encode_and_reconstruct")
        yield level, measure(rgb, pixels, len(data))


def float_points(ckpt, images, levels):
    """Per image and level: bpp estimated from the float model's likelihoods, PSNR, MS-SSIM."""
    from qlic_codec.train.checkpoint import load_float_model
    from qlic_codec.train.loop import validate
    model, _ = load_float_model(Path(ckpt))
    bad = [q for q in levels if not 1 <= q <= model.levels]
    if bad:
        raise ValueError(f"float model has {model.levels} levels, not {bad}")
    for name, rgb in images:
        rows = validate(model, [rgb], levels=[q - 1 for q in levels])
        for row in rows:
            yield name, row["level"], {"bytes": None, "bpp": row["bpp"], "psnr": row["psnr"],
                                       "ms_ssim": row["ms_ssim"]}


# --------------------------------------------------------------------------- averaging

def average_curves(points, image_names):
    """Per codec, the mean of the per-image points at each setting present for every image."""
    curves = {}
    by_codec = {}
    for p in points:
        by_codec.setdefault(p["codec"], {}).setdefault(p["setting"], []).append(p)
    for codec, settings in by_codec.items():
        rows = []
        for setting, ps in settings.items():
            if len({p["image"] for p in ps}) != len(image_names):
                note(f"{codec} {setting}: measured on {len(ps)} of {len(image_names)} images, "
                     "left out of the average")
                continue
            row = {"setting": setting, "images": len(ps)}
            for key in ("bpp", "psnr", "ms_ssim"):
                row[key] = float(np.mean([p[key] for p in ps]))
            row["ms_ssim_db"] = msssim_db(row["ms_ssim"])
            rows.append(row)
        rows.sort(key=lambda r: r["bpp"])
        curves[codec] = rows
    return curves


def bd_table(curves, test, method, min_overlap):
    """BD-rate of ``test`` against every other curve, on PSNR and MS-SSIM (dB); None where the
    curves share less than ``min_overlap`` dB of quality (too little to compare)."""
    if test not in curves:
        return {}
    t = curves[test]
    table = {}
    for anchor, a in curves.items():
        if anchor == test:
            continue
        entry = {}
        for metric in ("psnr", "ms_ssim_db"):
            ra, ma = [r["bpp"] for r in a], [r[metric] for r in a]
            rt, mt = [r["bpp"] for r in t], [r[metric] for r in t]
            span = overlap(ma, mt)
            value = bd_rate(ra, ma, rt, mt, method)
            too_small = span is None or span[1] - span[0] < min_overlap
            entry[metric] = None if math.isnan(value) or too_small else value
            entry[f"{metric}_overlap"] = span
        table[anchor] = entry
    return table


# --------------------------------------------------------------------------- output

def _fmt(v, spec):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a" if v is None or math.isnan(v) else ("inf" if v > 0 else "-inf")
    return format(v, spec)


def print_curves(curves, labels):
    print(f"\n{'codec':<10} {'setting':>8} {'bpp':>7} {'PSNR':>7} {'MS-SSIM':>8} {'dB':>6}")
    for codec, rows in curves.items():
        for r in rows:
            print(f"{codec:<10} {r['setting']:>8} {_fmt(r['bpp'], '.4f'):>7} "
                  f"{_fmt(r['psnr'], '.2f'):>7} {_fmt(r['ms_ssim'], '.5f'):>8} "
                  f"{_fmt(r['ms_ssim_db'], '.2f'):>6}")


def print_bd(table, test, labels, method):
    if not table:
        return
    print(f"\nBD-rate of {test} against each anchor ({method}; negative: {test} needs fewer "
          "bits)")
    print(f"{'anchor':<10} {'label':<26} {'BD PSNR':>9} {'over dB':>13} {'BD MS-SSIM':>11} "
          f"{'over dB':>13}")
    for anchor, e in table.items():
        def ov(key):
            o = e[key]
            return "none" if o is None else f"{o[0]:.1f}-{o[1]:.1f}"
        print(f"{anchor:<10} {labels.get(anchor, anchor):<26} "
              f"{_fmt(e['psnr'], '+.1f') + ('%' if e['psnr'] is not None else ''):>9} "
              f"{ov('psnr_overlap'):>13} "
              f"{_fmt(e['ms_ssim_db'], '+.1f') + ('%' if e['ms_ssim_db'] is not None else ''):>11}"
              f" {ov('ms_ssim_db_overlap'):>13}")


def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def plot(curves, labels, out: Path, title: str) -> list[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        note("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    paths = []
    styles = {"qlic": dict(color="black", marker="o", linewidth=2),
              "float": dict(color="black", marker="x", linestyle="--")}
    for metric, ylabel, filename in (("psnr", "PSNR RGB (dB)", "rd_psnr.png"),
                                     ("ms_ssim_db", "MS-SSIM (dB, -10 log10(1 - MS-SSIM))",
                                      "rd_msssim.png")):
        fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=100)
        for codec, rows in curves.items():
            rows = [r for r in rows if r["bpp"] <= 3.0 and math.isfinite(r[metric])]
            if not rows:
                continue
            ax.plot([r["bpp"] for r in rows], [r[metric] for r in rows],
                    label=labels.get(codec, codec), markersize=3.5,
                    **styles.get(codec, dict(marker=".")))
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / filename
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- main

def _portable(path) -> str:
    """A path as a results file records it: relative to the repository when absolute."""
    text = str(path)
    return os.path.relpath(text, ROOT) if os.path.isabs(text) else text


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def result_name(codec: str, codec_meta: dict) -> str:
    """The file name (without .json) of one codec's results: the codec, or for qlic and its
    float model the model file's name (``qlic-mse``, ``qlic-mse-float``)."""
    source = codec_meta.get("model_path") or codec_meta.get("checkpoint")
    if codec not in ("qlic", "float") or not source:
        return codec
    stem = Path(source).stem
    return stem if stem.startswith("qlic-") else f"{codec}-{stem}"


def write_codec_results(folder: Path, points, curves, meta, command: str) -> list[Path]:
    """One JSON file per codec in ``folder``: its settings, every per-image point and the
    averaged curve, with the data set, the command and the CPU that made them."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for codec, codec_meta in meta["codecs"].items():
        rows = [{k: p[k] for k in ("image", "setting", "bytes", "bpp", "psnr", "ms_ssim")}
                for p in points if p["codec"] == codec]
        if not rows:
            continue
        record = {
            "codec": codec, **codec_meta,
            "dataset": meta["dataset"], "data": meta["data_relative"],
            "images": meta["images"], "command": command, "cpu": meta["cpu"],
            "python": meta["python"], "date": meta["date"],
            "curve": curves.get(codec, []), "points": rows,
        }
        path = folder / f"{result_name(codec, codec_meta)}.json"
        path.write_text(json.dumps(_jsonable(record), indent=1) + "\n")
        written.append(path)
    return written


def load_images(folder: Path, limit):
    from PIL import Image
    files = sorted(p for p in folder.glob("*.png") if p.is_file())
    if limit:
        files = files[:limit]
    images = []
    for p in files:
        with Image.open(p) as im:
            images.append((p.name, np.array(im.convert("RGB"))))
    return images


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of PNGs")
    p.add_argument("--model", default=None,
                   help="qlic model name or .qlicm path (default: the bundled default)")
    p.add_argument("--float", dest="float_ckpt", default=None,
                   help="float checkpoint (models/*.pt or a training checkpoint) to add")
    p.add_argument("--out", type=Path, default=HERE / "results", help="folder for JSON and PNGs")
    p.add_argument("--codecs", nargs="+", default=ALL_CODECS, choices=ALL_CODECS, metavar="C",
                   help=f"any of {' '.join(ALL_CODECS)} (default: all)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--levels", type=int, nargs="+", default=None,
                   help="qlic/float quality levels (default: all)")
    p.add_argument("--bd-method", choices=["pchip", "poly"], default="pchip")
    p.add_argument("--min-overlap", type=float, default=0.5,
                   help="BD-rate only where the curves share this many dB (default 0.5)")
    p.add_argument("--check-decode", action="store_true",
                   help="also decode every qlic stream and check the pixels")
    p.add_argument("--rounding", choices=["rd", "nearest"], default="rd",
                   help="qlic's choice of symbols: the encoder's rate-distortion rule "
                        "(default) or the nearest symbols, to measure what the rule gains or "
                        "quantization alone against the float model (written as a partial run)")
    args = p.parse_args(argv)

    from qlic_codec import api, rdoq
    saved = dict(rdoq.LAMBDA)
    if args.rounding == "nearest":
        rdoq.LAMBDA.update(dict.fromkeys(rdoq.LAMBDA))  # None: the nearest symbols
    try:
        return _run(args, api, argv)
    finally:
        rdoq.LAMBDA.update(saved)


def _run(args, api, argv) -> int:
    levels = list(args.levels or api.QUALITY_LEVELS)

    if not args.data.is_dir():
        print(f"error: no folder {args.data} (use --data)", file=sys.stderr)
        return 2
    images = load_images(args.data, args.limit)
    if not images:
        print(f"error: no PNG files in {args.data}", file=sys.stderr)
        return 2
    image_names = [n for n, _ in images]

    labels = {name: spec["label"] for name, spec in CLASSIC.items()}
    labels["qlic"] = "qlic int8"
    labels["float"] = "qlic float model (est.)"
    meta = {"python": platform.python_version(), "data": str(args.data),
            "images": [{"name": n, "width": a.shape[1], "height": a.shape[0]} for n, a in images],
            "bd_method": args.bd_method, "min_overlap_db": args.min_overlap, "levels": levels,
            "codecs": {}}

    use_qlic = "qlic" in args.codecs
    if use_qlic:
        try:
            model = api.load_model(args.model)
            meta["codecs"]["qlic"] = {"label": labels["qlic"], "setting": "quality",
                                      "rounding": args.rounding,
                                      "model": args.model or "(bundled default)",
                                      "model_path": _portable(model.path),
                                      "model_id": model.model_id.hex(), "metric": model.metric}
            bad = [q for q in levels if not 1 <= q <= model.top_quality]
            if bad:
                raise ValueError(f"model has qualities 1..{model.top_quality}, not {bad}")
        except Exception as exc:
            note(f"skipping qlic: {exc}")
            use_qlic = False
    classic = available_classic([c for c in args.codecs if c in CLASSIC])
    for name, spec in classic.items():
        try:
            version = spec["version"]()
        except Exception:
            version = None
        meta["codecs"][name] = {"label": spec["label"], "setting": spec["setting"],
                                "values": spec["values"], "version": version,
                                "options": {k: v for k, v in spec["save"](0).items()
                                            if k not in ("quality", "quality_layers")}}

    print(f"{len(images)} images from {args.data}; codecs: "
          f"{', '.join((['qlic'] if use_qlic else []) + list(classic))}"
          f"{' + float model' if args.float_ckpt else ''}", flush=True)

    points = []
    t0 = time.perf_counter()
    for i, (name, rgb) in enumerate(images):
        print(f"[{i + 1}/{len(images)}] {name} {rgb.shape[1]}x{rgb.shape[0]}", flush=True)
        if use_qlic:
            try:
                for level, m in qlic_points(rgb, args.model, levels, args.check_decode):
                    points.append({"codec": "qlic", "image": name, "setting": level, **m})
            except Exception as exc:
                note(f"qlic failed on {name}: {type(exc).__name__}: {exc}")
        for codec, spec in classic.items():
            for value in spec["values"]:
                try:
                    m = classic_point(spec, rgb, value)
                except Exception as exc:
                    note(f"{codec} {spec['setting']}={value} failed on {name}: "
                         f"{type(exc).__name__}: {exc}")
                    continue
                points.append({"codec": codec, "image": name, "setting": value, **m})
    if args.float_ckpt:
        print("float model ...", flush=True)
        try:
            for name, level, m in float_points(args.float_ckpt, images, levels):
                points.append({"codec": "float", "image": name, "setting": level, **m})
            meta["codecs"]["float"] = {"label": labels["float"], "setting": "quality",
                                       "checkpoint": _portable(args.float_ckpt),
                                       "rate": "estimated from likelihoods"}
        except Exception as exc:
            note(f"skipping the float model: {type(exc).__name__}: {exc}")
    meta["wall_seconds"] = round(time.perf_counter() - t0, 1)

    curves = average_curves(points, image_names)
    print_curves(curves, labels)
    bd = bd_table(curves, "qlic", args.bd_method, args.min_overlap)
    print_bd(bd, "qlic", labels, args.bd_method)
    bd_float = bd_table({k: v for k, v in curves.items() if k != "qlic"}, "float",
                        args.bd_method, args.min_overlap) if "float" in curves else {}
    print_bd(bd_float, "float", labels, args.bd_method)

    args.out.mkdir(parents=True, exist_ok=True)
    result = {"meta": meta, "points": points, "curves": curves,
              "bd_rate": {"qlic": bd, "float": bd_float}}
    (args.out / "rd.json").write_text(json.dumps(_jsonable(result), indent=1) + "\n")
    title = (f"{len(images)} image{'s' if len(images) != 1 else ''} from {args.data.name}/, "
             "averaged per setting")
    written = plot(curves, labels, args.out, title)
    print(f"\nwrote {args.out / 'rd.json'}" + "".join(f", {p.name}" for p in written))

    # Per-codec results: a whole data set under its name, part of one under <name>.partial.
    total = len([q for q in args.data.glob("*.png") if q.is_file()])
    partial = (len(images) < total or sorted(levels) != list(api.QUALITY_LEVELS)
               or args.rounding != "rd")
    meta.update(dataset=args.data.resolve().name, data_relative=_portable(args.data),
                cpu=cpu_name(), date=time.strftime("%Y-%m-%d"))
    folder = args.out / (meta["dataset"] + (".partial" if partial else ""))
    command = " ".join(["python benchmarks/rd.py"] + [
        _portable(a) if os.path.isabs(a) else a for a in (sys.argv[1:] if argv is None
                                                           else argv)])
    files = write_codec_results(folder, points, curves, meta, command)
    if files:
        print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
