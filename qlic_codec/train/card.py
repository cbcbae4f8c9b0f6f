"""Write the text card of a float checkpoint: how it was trained and its validation RD points.

    python -m qlic_codec.train.card models/qlic-mse-float.pt [--run runs/mse] -o models/qlic-mse-float.md
"""

import argparse
import json
import platform
from pathlib import Path

import torch

from .checkpoint import load_float_model, model_config
from .data import default_data_root, load_folder
from .loop import validate


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def architecture(config: dict) -> str:
    """One sentence naming the model a ``model_config`` describes."""
    shape = f"N={config['N']}, M={config['M']}, simplified GDN, gain units"
    if config.get("slices"):
        split = ", ".join(str(n) for n in config["slices"])
        extra = ", a checkerboard in each slice" if config.get("checkerboard") else ""
        return (f"Variable-rate mean-scale hyperprior with a channel-conditional entropy model "
                f"of `y` (slices {split}, latent residual prediction, slice networks "
                f"{config.get('hidden')} wide{extra}; {shape}), float weights stored as fp16.")
    return f"Variable-rate mean-scale hyperprior ({shape}), float weights stored as fp16."


def data_line(meta: dict, train_photos: int) -> str:
    share = meta.get("wide_share")
    mix = ("" if share is None else
           f"; the film scans, city architecture and scenes drawn for {share:.0%} of the crops")
    return (f"- data: `../shared/data/train` ({train_photos} photos), random crops and "
            f"flips{mix}")


def render(path: Path, meta: dict, tables: dict[str, list[dict]], history: list[dict],
           hardware: str, config: dict, train_photos: int) -> str:
    """The card's text; ``tables`` maps a validation folder's name to its rows per level."""
    lines = [f"# {path.name}", "", architecture(config), "", "## Training", ""]
    for key in ("metric", "lambdas", "steps", "batch", "crop", "wall_seconds"):
        if key in meta:
            lines.append(f"- {key}: {meta[key]}")
    lines += ["- optimiser: Adam, gradient norm clipped at 1.0",
              data_line(meta, train_photos),
              f"- hardware: {hardware}", ""]
    if history:
        last = history[-1]
        lines += [f"Last logged training window: step {last['step']}, loss {last['loss']:.4g}, "
                  f"bpp {last['bpp']:.4g}, lr {last['lr']:.3g}.", ""]
    for name, table in tables.items():
        lines += [f"## Validation (`../shared/data/{name}`, {table[0].get('images', '?')} "
                  "photos)", "",
                  "Estimated from the model's likelihoods (no entropy coder), float model.", "",
                  "| level | bpp | PSNR (dB) | MS-SSIM |", "|---|---|---|---|"]
        for r in table:
            lines.append(f"| {r['level']} | {r['bpp']:.4f} | {r['psnr']:.2f} | "
                         f"{r['ms_ssim']:.4f} |")
        lines.append("")
    lines += ["Reproduce: `python -m qlic_codec.train --validate " + str(path) + "`", ""]
    return "\n".join(lines)


def card_meta(meta: dict) -> dict:
    """``meta`` without the learned activation ranges (thousands of numbers that live in the
    checkpoint); the card names the tensors they cover instead."""
    out = dict(meta)
    qft = dict(out.get("quantization_finetune", {}))
    if "activation_ranges" in qft:
        count = len(qft["activation_ranges"])
        qft["activation_ranges"] = f"learned, {count} tensors (in the checkpoint)"
        out["quantization_finetune"] = qft
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m qlic_codec.train.card")
    p.add_argument("checkpoint")
    p.add_argument("--run", default=None, help="run folder whose last.pt has the history")
    p.add_argument("--data", default=None)
    p.add_argument("--hardware", default=None)
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args(argv)
    model, meta = load_float_model(args.checkpoint)
    root = Path(args.data or default_data_root())
    tables = {}
    for name in ("val", "val-wide"):
        if (root / name).is_dir():
            images = load_folder(root / name)
            tables[name] = [dict(r, images=len(images)) for r in validate(model, images)]
    train_photos = len(list((root / "train").glob("*.png")))
    history = []
    if args.run:
        blob = torch.load(Path(args.run) / "last.pt", map_location="cpu", weights_only=False)
        history = blob["state"]["history"]
    hardware = args.hardware or f"{cpu_name()}, {torch.get_num_threads()} threads, fp32"
    text = render(Path(args.checkpoint), meta, tables, history, hardware,
                  config=model_config(model), train_photos=train_photos)
    Path(args.output).write_text(text)
    Path(args.output).with_suffix(".json").write_text(json.dumps(
        {"meta": card_meta(meta), **tables}, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
