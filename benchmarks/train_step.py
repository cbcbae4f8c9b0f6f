"""The time of one training step on this CPU, with the C allocator's default policy and with
the one that training applies (``qlic_codec.allocator.keep_freed_memory``).

Each policy runs in its own child process (a policy cannot be undone in a process), which
builds the model of a float checkpoint, takes real training crops, and times full steps
(``train.loop.optimiser_step``: forward, backward, clipping, Adam), bf16 where the CPU has
native bf16::

    python benchmarks/train_step.py                        # the shipped MSE model, 1 thread
    python benchmarks/train_step.py --threads 2 --steps 10
    python benchmarks/train_step.py --float models/qlic-msssim-float.pt --metric msssim

The learning rate is tiny and nothing is saved: only the time is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def time_steps(checkpoint: str, data: str, metric: str, crop: int, batch: int, steps: int,
               warmup: int, threads: int, keep: bool) -> dict:
    """Seconds of each timed step, in this process (the policy applied first when ``keep``)."""
    import time

    from qlic_codec import allocator
    applied = allocator.keep_freed_memory() if keep else False

    import torch

    from qlic_codec.train.checkpoint import load_float_model
    from qlic_codec.train.data import CropSampler, load_folder
    from qlic_codec.train.loop import native_bf16, optimiser_step

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, meta = load_float_model(Path(checkpoint))
    model = model.to(memory_format=torch.channels_last).train()
    lambdas = torch.tensor(meta["lambdas"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-9)
    sampler = CropSampler(load_folder(Path(data) / "train"), crop, seed=0)
    bf16 = native_bf16()
    seconds = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        x = sampler.batch(batch).contiguous(memory_format=torch.channels_last)
        level = torch.arange(batch).remainder(len(lambdas)).float()
        optimiser_step(model, opt, x, level, lambdas, metric, bf16)
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return {"keep": keep, "applied": applied, "bf16": bf16, "seconds": seconds}


def run_child(args, keep: bool) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import train_step; "
            f"print(json.dumps(train_step.time_steps({args.float!r}, {args.data!r}, "
            f"{args.metric!r}, {args.crop}, {args.batch}, {args.steps}, {args.warmup}, "
            f"{args.threads}, {keep})))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("QLIC_MALLOC", None)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise SystemExit(f"the step timing failed:\n{run.stderr.strip()[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--float", default=str(ROOT / "models" / "qlic-mse-float.pt"))
    p.add_argument("--data", default=os.environ.get("QLIC_DATA",
                                                    str(ROOT.parent / "shared" / "data")))
    p.add_argument("--metric", choices=["mse", "msssim"], default="mse")
    p.add_argument("--crop", type=int, default=192)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2,
                   help="each policy this many times, turn about")
    args = p.parse_args(argv)
    results = {False: [], True: []}
    for _ in range(args.rounds):
        for keep in (False, True):
            results[keep].append(run_child(args, keep))
    print(f"{Path(args.float).name}, batch {args.batch} of {args.crop}x{args.crop}, "
          f"{args.threads} thread(s), bf16 {results[True][0]['bf16']}: seconds a step "
          f"(median of {args.steps}, each of {args.rounds} rounds)")
    medians = {}
    for keep in (False, True):
        rows = [sorted(r["seconds"])[len(r["seconds"]) // 2] for r in results[keep]]
        medians[keep] = min(rows)
        label = ("freed memory kept (training's policy)" if keep
                 else "the C library's default")
        print(f"  {label:40s} " + "  ".join(f"{s:.3f}" for s in rows))
    print(f"kept against default: {medians[False] / medians[True]:.2f}x faster "
          f"(best round's median each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
