"""Minutes of a CUDA GPU added to the same training run that goes on on the CPU.

A lent GPU machine sees only a copy of the working tree (64 MiB in all, carried folders
included) and hands back files of at most 16 MiB. So the run crosses as fp16 weights, the
training photos as a compact copy, and the weights come back split into parts::

    # here: the photos as JPEG (quality 95, no chroma subsampling) and the run's weights
    python -m qlic_codec.train.gpu pack --run runs/mse6 --out devdata/gpu
    # on the GPU machine, carrying devdata/gpu: train for 8 minutes, weights under $OUT
    python -m qlic_codec.train.gpu train --pack devdata/gpu --minutes 8 --out "$OUT"
    # here: the GPU's steps become the CPU run's (weights, step count, losses.csv)
    python -m qlic_codec.train.gpu join FOLDER_OF_RETURNED_FILES --run runs/mse6

The GPU trains with the run's own settings (batch, crop, lambdas, slices, learning-rate
schedule at the run's step count), so each of its steps counts as a step of the run. Adam's
moments do not travel (they are twice the weights); the GPU run starts with a warm-up, and
the CPU run keeps its own moments and warms up again after the join.
"""

import argparse
import io
import json
import sys
from pathlib import Path

import torch
from PIL import Image

from .checkpoint import load_float_model, save_atomic
from .data import default_data_root
from .loop import TrainConfig, train

PART_BYTES = 16 * 2**20 - 4096  # the largest file a GPU machine hands back, with room to spare
TRAVEL_BYTES = 64 * 2**20


def save_parts(obj, folder: Path, stem: str) -> list[Path]:
    """``torch.save`` of ``obj`` as ``stem.part0``, ``stem.part1``, ... of at most
    ``PART_BYTES`` each, plus ``stem.parts.json`` naming them in order."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(0, max(len(data), 1), PART_BYTES):
        path = folder / f"{stem}.part{len(paths)}"
        path.write_bytes(data[i : i + PART_BYTES])
        paths.append(path)
    (folder / f"{stem}.parts.json").write_text(
        json.dumps({"parts": [p.name for p in paths], "bytes": len(data)}))
    return paths


def load_parts(folder: Path, stem: str):
    index = json.loads((folder / f"{stem}.parts.json").read_text())
    data = b"".join((folder / name).read_bytes() for name in index["parts"])
    if len(data) != index["bytes"]:
        raise ValueError(f"{stem}: {len(data)} bytes in its parts, {index['bytes']} expected")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _tree_bytes(repo: Path) -> int:
    """Bytes of the tracked files of the working tree (what travels besides carried paths)."""
    import subprocess
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True,
                               check=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum((repo / n.decode()).stat().st_size for n in names
               if n and (repo / n.decode()).is_file())


def pack(run: Path, out: Path, data_root: Path, quality: int) -> None:
    blob = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train").mkdir(exist_ok=True)
    photos = sorted(p for p in (data_root / "train").iterdir()
                    if p.suffix.lower() in {".png", ".jpg"})
    for p in photos:
        Image.open(p).convert("RGB").save(out / "train" / f"{p.stem}.jpg", quality=quality,
                                          subsampling=0)
    weights = {k: v.detach().to(torch.float16) for k, v in blob["model"].items()}
    config = dict(blob["config"])
    state = {"step": blob["state"]["step"], "wall_seconds": blob["state"]["wall_seconds"]}
    save_parts({"weights": weights, "model_config": blob["model_config"], "config": config,
                "state": state}, out, "run")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    tree = _tree_bytes(Path(__file__).resolve().parents[2])
    print(f"packed {len(photos)} photos and the weights at step {state['step']} into {out}: "
          f"{size / 2**20:.1f} MiB; with the tracked tree ({tree / 2**20:.1f} MiB) "
          f"{(size + tree) / 2**20:.1f} MiB of the {TRAVEL_BYTES / 2**20:.0f} MiB that travel")
    if size + tree > TRAVEL_BYTES:
        print("too large to travel: lower --quality, or keep fewer large files in the tree",
              file=sys.stderr)


def train_on_gpu(pack_dir: Path, minutes: float, out: Path, device: str) -> None:
    packed = load_parts(pack_dir, "run")
    config = packed["config"]
    work = out / "work"
    init = work / "init.pt"
    meta = {"metric": config["metric"], "lambdas": config["lambdas"],
            "steps": packed["state"]["step"], "wall_seconds": packed["state"]["wall_seconds"]}
    save_atomic({"config": packed["model_config"], "state_dict": packed["weights"],
                 "meta": meta}, init)
    model_config = packed["model_config"]
    cfg = TrainConfig(run_dir=str(work / "run"), data_root=str(pack_dir), metric=config["metric"],
                      steps=config["steps"], batch=config["batch"], crop=config["crop"],
                      lr=config["lr"], lr_drop_at=config.get("lr_drop_at", 0.9),
                      checkpoint_minutes=minutes + 1, time_limit_minutes=minutes,
                      bf16="off", device=device, seed=config["seed"] + meta["steps"],
                      N=model_config["N"], M=model_config["M"], init_from=str(init),
                      continue_run=True, lambdas=tuple(config["lambdas"]),
                      slices=tuple(model_config.get("slices") or ()),
                      slice_hidden=model_config.get("hidden", 64),
                      checkerboard=model_config.get("checkerboard", False),
                      z_steps=model_config.get("z_steps", False),
                      z_step_lr=config.get("z_step_lr", 1e-3))
    state = train(cfg, log=lambda s: print(s, flush=True))
    blob = torch.load(work / "run" / "last.pt", map_location="cpu", weights_only=False)
    weights = {k: v.detach().to(torch.float16) for k, v in blob["model"].items()}
    save_parts({"weights": weights, "state": {"step": state["step"],
                                              "wall_seconds": state["wall_seconds"]},
                "from_step": meta["steps"], "device": torch.cuda.get_device_name()
                if device.startswith("cuda") else device}, out, "gpu")
    csv = work / "run" / "losses.csv"
    if csv.exists():
        (out / "gpu-losses.csv").write_bytes(csv.read_bytes())
    # Only the parts and the losses come back; the working copy stays on the machine.
    for f in sorted(work.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    work.rmdir()
    print(f"trained from step {meta['steps']} to {state['step']}; weights in {out}")


def join(returned: Path, run: Path) -> None:
    got = load_parts(returned, "gpu")
    path = run / "last.pt"
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if got["from_step"] != blob["state"]["step"]:
        raise SystemExit(f"the GPU trained from step {got['from_step']}, but {path} is at step "
                         f"{blob['state']['step']}: stop the CPU run before packing, and join "
                         f"before resuming it")
    blob["model"] = {k: v.float() for k, v in got["weights"].items()}
    blob["state"]["step"] = got["state"]["step"]
    blob["state"]["wall_seconds"] = got["state"]["wall_seconds"]
    blob["state"]["warmup_from"] = got["state"]["step"]  # the moments are from older weights
    # A weight average of the CPU run did not follow the GPU's steps: it starts again from
    # the joined weights rather than pull them back toward older ones.
    blob.pop("ema", None)
    blob["state"].setdefault("history", []).append(
        {"step": got["state"]["step"], "gpu_steps": got["state"]["step"] - got["from_step"],
         "device": got["device"]})
    save_atomic(blob, path)
    csv = returned / "gpu-losses.csv"
    if csv.exists():
        lines = csv.read_text().splitlines(keepends=True)
        target = run / "losses.csv"
        with open(target, "a") as f:
            f.writelines(lines if not target.exists() else lines[1:])
    print(f"{path}: now at step {got['state']['step']} "
          f"({got['state']['step'] - got['from_step']} steps on {got['device']})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m qlic_codec.train.gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack", help="here: compact photos and the run's weights to carry")
    a.add_argument("--run", required=True, type=Path)
    a.add_argument("--out", default=Path("devdata/gpu"), type=Path)
    a.add_argument("--data", default=None, type=Path)
    a.add_argument("--quality", type=int, default=95)
    b = sub.add_parser("train", help="on the GPU machine: train for some minutes")
    b.add_argument("--pack", default=Path("devdata/gpu"), type=Path)
    b.add_argument("--minutes", type=float, required=True)
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--device", default="cuda")
    c = sub.add_parser("join", help="here: make the GPU's steps the run's")
    c.add_argument("returned", type=Path)
    c.add_argument("--run", required=True, type=Path)
    args = p.parse_args(argv)
    if args.command == "pack":
        pack(args.run, args.out, args.data or default_data_root(), args.quality)
    elif args.command == "train":
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit("no CUDA device here")
        train_on_gpu(args.pack, args.minutes, args.out, args.device)
    else:
        join(args.returned, args.run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
