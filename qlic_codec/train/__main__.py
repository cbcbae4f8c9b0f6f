"""``python -m qlic_codec.train``: train or resume a float model, or validate one.

Examples::

    python -m qlic_codec.train --run runs/mse --metric mse --steps 200000
    python -m qlic_codec.train --run runs/mse2 --init models/qlic-mse-float.pt --continue
    python -m qlic_codec.train --run runs/msssim --metric msssim --init models/qlic-mse-float.pt
    python -m qlic_codec.train --validate models/qlic-mse.pt
"""

import argparse
import json
import sys

import torch

from .. import allocator
from .checkpoint import load_float_model
from .data import default_data_root, load_folder
from .loop import TrainConfig, train, validate


def _lambdas(text: str) -> tuple:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}")
    if len(values) < 2 or any(v <= 0 for v in values) or list(values) != sorted(set(values)):
        raise argparse.ArgumentTypeError("need at least two positive, increasing lambdas")
    return values


def _decay(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError("a decay is at least 0 and below 1")
    return value


def _slices(text: str) -> tuple:
    try:
        values = tuple(int(v) for v in text.split(",")) if text else ()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("slice sizes must be positive")
    return values


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m qlic_codec.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/mse", help="run folder (checkpoints, log); resumes")
    p.add_argument("--data", default=None, help="folder with train/ and val/ (default $QLIC_DATA "
                   "or the shared data folder)")
    p.add_argument("--metric", choices=["mse", "msssim"], default="mse")
    p.add_argument("--steps", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=None,
                   help="crop side (default 128 for mse, 256 for msssim: MS-SSIM's five scales "
                        "need at least 161 px)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    p.add_argument("--time-limit", type=float, default=0.0, help="stop after this many minutes")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bf16 autocast on CPU (auto: only where the CPU has native bf16)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--N", type=int, default=128)
    p.add_argument("--M", type=int, default=192)
    p.add_argument("--init", default="", help="fp16 model to start from (fine-tuning)")
    p.add_argument("--continue", dest="continue_run", action="store_true",
                   help="with --init: continue that model's run (its step count and wall "
                        "time), e.g. a committed checkpoint in a new session")
    p.add_argument("--lambdas", type=_lambdas, default=(),
                   help="quality table, comma-separated, increasing (default: the metric's); "
                        "with --init from a model trained for another table, its gain vectors "
                        "are moved to the new one")
    p.add_argument("--slices", type=_slices, default=(),
                   help="channel-conditional entropy model: channels per slice, comma-separated, "
                        "summing to M (e.g. 16,16,32,64,64); default: the plain hyperprior")
    p.add_argument("--slice-hidden", type=int, default=64, help="width of the slice networks")
    p.add_argument("--checkerboard", action="store_true",
                   help="with --slices: a checkerboard split inside each slice")
    p.add_argument("--validate-minutes", type=float, default=0.0,
                   help="validate on val and val-wide every this many minutes (and at the "
                        "start and end), appending to losses.csv in the run folder; 0: never")
    p.add_argument("--wide-share", type=float, default=None,
                   help="share of the crops taken from the public photo sets (film scans, city "
                        "architecture, scenes; default: every training photo equally often)")
    p.add_argument("--ema", type=_decay, default=0.0, metavar="DECAY",
                   help="also keep an exponential moving average of the weights with this "
                        "decay (e.g. 0.999), validated beside them and saved as "
                        "model_ema_fp16.pt (default: none)")
    p.add_argument("--z-steps", action="store_true",
                   help="learn a quantization step of z per level and channel (they start at "
                        "1, so a model without them initialises one with them)")
    p.add_argument("--z-step-lr", type=float, default=1e-3,
                   help="learning rate of the z steps (their logarithms), which start where "
                        "the weights' rate would take thousands of steps to move them; it "
                        "follows the same warm-up and drop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--validate", default="", help="only validate this fp16 model and print JSON")
    args = p.parse_args(argv)
    # Every step allocates and frees the same activations; kept by the C allocator, their
    # pages are not faulted in again each step (1.05-1.24x faster on a CPU: benchmarks/README.md,
    # "Training speed").
    allocator.keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    data_root = args.data or str(default_data_root())
    if args.validate:
        model, meta = load_float_model(args.validate)
        rows = validate(model, load_folder(f"{data_root}/val"))
        print(json.dumps({"model": args.validate, "meta": meta, "val": rows}, indent=1))
        return 0
    if args.crop is None:
        args.crop = 256 if args.metric == "msssim" else 128
    cfg = TrainConfig(run_dir=args.run, data_root=data_root, metric=args.metric, steps=args.steps,
                      batch=args.batch, crop=args.crop, lr=args.lr,
                      checkpoint_minutes=args.checkpoint_minutes,
                      time_limit_minutes=args.time_limit, bf16=args.bf16,
                      device=args.device, seed=args.seed, N=args.N, M=args.M,
                      init_from=args.init, continue_run=args.continue_run,
                      log_every=args.log_every, lambdas=args.lambdas, slices=args.slices,
                      slice_hidden=args.slice_hidden, checkerboard=args.checkerboard,
                      validate_minutes=args.validate_minutes, wide_share=args.wide_share,
                      ema_decay=args.ema, z_steps=args.z_steps, z_step_lr=args.z_step_lr)
    train(cfg, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
