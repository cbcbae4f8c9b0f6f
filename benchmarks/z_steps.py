"""What quantization steps of ``z`` per level could save, with everything else fixed.

    python benchmarks/z_steps.py models/qlic-mse-float.pt --steps 300 --lr 0.02

The hyper-latent ``z`` does not depend on the quality level (the hyper-analysis sees the
un-gained ``y``), so every level pays the same bits for it. This trains only the
per-level, per-channel steps of ``z`` (``MeanScaleHyperprior.z_step``, starting at 1) on the
rate-distortion loss of the training crops, every other weight frozen, and prints the PSNR
BD-rate of the model with the learned steps against the model without them on each
validation set, with the rates and PSNR per level (float models, rates from the
likelihoods). With the hyperprior's transforms frozen it is what the steps alone give; a
training run with ``--z-steps`` lets the transforms adapt to them too.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bdrate import bd_rate  # noqa: E402
from qlic_codec.train.checkpoint import build_model, load_float_model, model_config  # noqa: E402
from qlic_codec.train.data import (CropSampler, default_data_root, load_folder,  # noqa: E402
                                   wide_share_weights)
from qlic_codec.train.loop import native_bf16, rd_terms, validate  # noqa: E402
from qlic_codec.train.model import MSE_LAMBDAS, MSSSIM_LAMBDAS  # noqa: E402


def with_z_steps(base):
    """A copy of ``base`` with z steps (all 1) and nothing else trainable."""
    config = model_config(base)
    config["z_steps"] = True
    model = build_model(config)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert missing == ["log_z_step"] and not unexpected
    for name, p in model.named_parameters():
        p.requires_grad_(name == "log_z_step")
    return model


def learn_steps(model, meta, data_root: Path, steps: int, lr: float, batch: int, crop: int,
                wide_share: float, seed: int, log=print) -> None:
    metric = meta.get("metric", "mse")
    lambdas = torch.tensor(meta.get("lambdas") or
                           (MSE_LAMBDAS if metric == "mse" else MSSSIM_LAMBDAS))
    folder = data_root / "train"
    sampler = CropSampler(load_folder(folder), crop, seed=seed,
                          weights=wide_share_weights(folder, wide_share))
    opt = torch.optim.Adam([model.log_z_step], lr=lr)
    bf16 = native_bf16()
    model.train()
    start = time.monotonic()
    for step in range(1, steps + 1):
        x = sampler.batch(batch)
        level = torch.randint(0, len(lambdas), (batch,)).float()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = rd_terms(model, x, level, lambdas, metric)[0].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps:
            log(f"step {step} loss {loss.item():.4f} {time.monotonic() - start:.0f} s")
    model.eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="float model (models/*.pt) without z steps")
    p.add_argument("--data", default=None)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=192)
    p.add_argument("--wide-share", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sets", nargs="+", default=["val", "val-wide"])
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data_root = Path(args.data) if args.data else default_data_root()
    base, meta = load_float_model(Path(args.checkpoint))
    if getattr(base, "z_steps", False):
        p.error(f"{args.checkpoint} already has z steps")
    model = with_z_steps(base)
    learn_steps(model, meta, data_root, args.steps, args.lr, args.batch, args.crop,
                args.wide_share, args.seed)
    steps = model.log_z_step.detach().exp()
    print("learned steps of z per level (median, smallest, largest over the channels):")
    for level, row in enumerate(steps, 1):
        print(f"  {level}: {row.median():.3f} {row.min():.3f} {row.max():.3f}")
    metric = meta.get("metric", "mse")
    for name in args.sets:
        images = load_folder(data_root / name)
        with torch.no_grad():
            before = validate(base, images, metric=metric)
            after = validate(model, images, metric=metric)
        rate = bd_rate([r["bpp"] for r in before], [r["psnr"] for r in before],
                       [r["bpp"] for r in after], [r["psnr"] for r in after])
        print(f"{name}: PSNR BD-rate {rate:+.2f}% with the learned steps")
        for a, b in zip(before, after):
            print(f"  level {a['level']}: {a['bpp']:.4f} bpp {a['psnr']:.3f} dB -> "
                  f"{b['bpp']:.4f} bpp {b['psnr']:.3f} dB ({100 * (b['bpp'] / a['bpp'] - 1):+.2f}% "
                  "bits)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
