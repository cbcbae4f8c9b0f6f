"""The entropy-model ablation: candidates for ``y``'s model trained from one initialisation for
the same number of steps, then compared by BD-rate against the plain hyperprior trained alike.

    git show 8d5aa44:models/qlic-mse-float.pt > plain-37656.pt   # the plain hyperprior
    python benchmarks/entropy_ablation.py --init plain-37656.pt --steps 1500
    python benchmarks/entropy_ablation.py --only report        # the table from finished runs

Every candidate starts from the same float checkpoint (its transforms and hyperprior; the slice
networks start at zero output, i.e. exactly the initial model) and trains with the same seed,
crops, batch, learning rate and step count, in ``runs/ablation/<name>``. The control is the
plain hyperprior trained the same way, so the table isolates the entropy model from what the
extra steps on the training data give. Rates are estimated from the float model's likelihoods
(no entropy coder): the integer codec follows its float model within about 1.5%.

Decode time is the float decoder (hyper-synthesis, slice networks, synthesis) in PyTorch fp32
on one thread at 768x512, median of a few runs, with the multiply-adds it needs: the integer
engine does not run these candidates yet, and its time follows the multiply-adds.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bdrate import bd_rate  # noqa: E402
from qlic_codec.train.checkpoint import load_float_model  # noqa: E402
from qlic_codec.train.data import default_data_root, load_folder  # noqa: E402
from qlic_codec.train.loop import TrainConfig, train, validate  # noqa: E402
from qlic_codec.train.slices import checkerboard_anchor  # noqa: E402

CANDIDATES = {
    "control": {},
    "even4": {"slices": (48, 48, 48, 48)},
    "even8": {"slices": (24,) * 8},
    "elic5": {"slices": (16, 16, 32, 64, 64)},
    "elic5-checkerboard": {"slices": (16, 16, 32, 64, 64), "checkerboard": True},
    # A wider latent: the trained 192 channels carry over and 128 new ones start where they
    # change nothing but the rate (train.widen), so 1,500 steps test how fast they pay.
    "m320-even8": {"slices": (40,) * 8, "M": 320},
}


def decoder_time(model, height=512, width=768, repeats=3):
    """Median seconds of the float decoder from z_hat to pixels, one thread, fp32, and the
    multiply-adds per pixel that it ran (counted with forward hooks on every convolution)."""
    torch.set_num_threads(1)
    model.eval()
    x = torch.rand(1, 3, height, width)
    level = torch.tensor([4.0])
    macs = [0]

    def count(module, inputs, output):
        k = module.weight.shape
        per_out = k[1] * k[2] * k[3] if isinstance(module, torch.nn.Conv2d) else \
            k[0] * k[2] * k[3] / (module.stride[0] * module.stride[1])
        macs[0] += output.numel() / output.shape[0] * per_out

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    with torch.no_grad():
        y = model.g_a(x)
        z_hat = torch.round(model.h_a(y))
        times = []
        for _ in range(repeats):
            macs[0] = 0
            start = time.perf_counter()
            _decode(model, y, z_hat, level)
            times.append(time.perf_counter() - start)
    for h in hooks:
        h.remove()
    return statistics.median(times), macs[0] / (height * width)


def _decode(model, y, z_hat, level):
    """What a decoder runs: h_s, the slice networks in order, g_s (the values of ``y`` stand
    in for the decoded symbols; the arithmetic is the same)."""
    params = model.h_s(z_hat)
    mean, log_scale = params.chunk(2, dim=1)
    gain = model.gains(level)[:, :, None, None]
    if not getattr(model, "slices", None):
        return model.g_s(torch.round((y - mean) * gain) / gain + mean)
    decoded, start = [], 0
    for ctx in model.contexts:
        part = slice(start, start + ctx.size)
        start += ctx.size
        g = gain[:, part]
        support = torch.cat([mean[:, part], log_scale[:, part], *decoded], 1)
        if ctx.checkerboard:
            first = ctx.params(torch.cat([support, torch.zeros_like(y[:, part])], 1))
            second = ctx.params(torch.cat([support, y[:, part]], 1))
            mask = checkerboard_anchor(*y.shape[2:], y.device)
            d_mean = (first * mask + second * (1 - mask))[:, : ctx.size]
        else:
            d_mean = ctx.params(support)[:, : ctx.size]
        m = mean[:, part] + d_mean
        y_hat = torch.round((y[:, part] - m) * g) / g + m
        y_hat = y_hat + 0.5 * torch.tanh(ctx.lrp(torch.cat([support, y_hat], 1))) / g
        decoded.append(y_hat)
    return model.g_s(torch.cat(decoded, 1))


def run(args):
    root = Path(args.runs)
    data_root = args.data or str(default_data_root())
    for name, options in CANDIDATES.items():
        if args.only not in ("all", name):
            continue
        cfg = TrainConfig(run_dir=str(root / name), data_root=data_root, metric="mse",
                          steps=args.steps, batch=args.batch, crop=args.crop, lr=args.lr,
                          lr_drop_at=2.0, checkpoint_minutes=10, init_from=args.init,
                          lambdas=tuple(args.lambdas), seed=args.seed,
                          slices=options.get("slices", ()), M=options.get("M", 192),
                          checkerboard=options.get("checkerboard", False))
        train(cfg, log=lambda s: print(f"[{name}] {s}", flush=True))


def report(args):
    root = Path(args.runs)
    data_root = Path(args.data or default_data_root())
    sets = {s: load_folder(data_root / s) for s in ("val", "val-wide")}
    levels = [level - 1 for level in args.levels]
    out = root / "ablation.json"
    # Validation rows of an earlier report are kept for candidates trained alike (it takes
    # minutes per candidate); decode times are measured again for all, side by side.
    earlier = json.loads(out.read_text()) if out.exists() and not args.fresh else {}
    rows = {}
    for name in CANDIDATES:
        path = root / name / "model_fp16.pt"
        if not path.exists():
            continue
        model, meta = load_float_model(path)
        if meta.get("steps") != args.steps:
            # A run that stopped early would be compared at another budget.
            print(f"{name}: skipped, trained {meta.get('steps')} of {args.steps} steps")
            continue
        torch.set_num_threads(args.threads)
        row = {"steps": meta.get("steps"), "config": CANDIDATES[name]}
        old = earlier.get(name, {})
        for s, images in sets.items():
            same = old.get("steps") == row["steps"] and [p["level"] for p in old.get(s, [])] \
                == args.levels
            row[s] = old[s] if same else validate(model, images, levels)
        row["decode_seconds"], row["decode_macs_per_pixel"] = decoder_time(model)
        rows[name] = row
        print(f"{name}: done", flush=True)
    control = rows.get("control")
    for name, row in rows.items():
        for s in sets:
            if control is None:
                continue
            a, t = control[s], row[s]
            row[f"bd_{s}"] = bd_rate([p["bpp"] for p in a], [p["psnr"] for p in a],
                                     [p["bpp"] for p in t], [p["psnr"] for p in t])
    out.write_text(json.dumps(rows, indent=1))
    print("| candidate | slices | BD-rate val | BD-rate val-wide | decode (s, fp32, 1 thread) "
          "| MAC/pixel |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        slices = row["config"].get("slices", "-")
        print(f"| {name} | {slices} | {row.get('bd_val', float('nan')):+.2f}% "
              f"| {row.get('bd_val-wide', float('nan')):+.2f}% | {row['decode_seconds']:.3f} "
              f"| {row['decode_macs_per_pixel']:.0f} |")
    print(f"written {out}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", default=None,
                   help="the float checkpoint every candidate starts from (needed to train; "
                        "the committed table's: git show 8d5aa44:models/qlic-mse-float.pt)")
    p.add_argument("--runs", default=str(REPO / "runs" / "ablation"))
    p.add_argument("--data", default=None)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--lambdas", type=float, nargs="+",
                   default=[0.0004, 0.00096, 0.0023, 0.0055, 0.0131, 0.0315, 0.0754, 0.18])
    p.add_argument("--levels", type=int, nargs="+", default=[1, 3, 5, 7],
                   help="levels validated for the BD-rates (1-based)")
    p.add_argument("--threads", type=int, default=2, help="threads for validation")
    p.add_argument("--fresh", action="store_true",
                   help="validate every candidate again instead of reusing an earlier report")
    p.add_argument("--only", default="all",
                   help="'all', 'report', or one candidate's name (train only that one)")
    args = p.parse_args(argv)
    if args.only != "report" and not args.init:
        p.error("--init is needed to train the candidates")
    if args.only != "report":
        run(args)
    if args.only in ("all", "report"):
        report(args)


if __name__ == "__main__":
    main()
