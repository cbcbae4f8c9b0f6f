"""Two threads against one over whole decodes, each measured in its own process, in turns.

    python benchmarks/threads.py                          # 1920x1080, 1 and 2 threads, 4 pairs
    python benchmarks/threads.py --size 768x512 --pairs 6 --repeat 9

On a shared machine a process's speed moves by several percent from one process to the
next, more than the difference being measured, and a ratio of two figures taken minutes
apart is mostly that noise. So every figure here is a fresh process (Python, Numba's cached
kernels, the model) that decodes the same file ``--repeat`` times after one warm-up decode and
reports its fastest; the processes run one thread, then ``--threads`` threads, then one
again, and so on, and each pair gives one ratio. The median of the pairs' ratios and the
ratio of the fastest figures are printed with every pair.

``--kept-memory`` gives every process the command line's allocator policy
(``qlic_codec.allocator.keep_freed_memory``: freed memory kept and reused, so that the
decodes after the first do not fault their pages in again); without it the processes
keep the C library's defaults, as a Python program that imports qlic does.

The image is the first PNG of ``../shared/data/val`` resized (Lanczos) to ``--size``, or a
synthetic photo when that folder is missing, encoded once at ``--quality``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


sys.path.insert(0, str(REPO / "benchmarks"))
from speed import parse_size, photo  # noqa: E402  (the speed benchmark's size and image)


def child(path: str, threads: int, repeat: int, kept_memory: bool) -> float:
    """Seconds of the fastest of ``repeat`` decodes of the file at ``path`` on ``threads``."""
    import time

    import numba

    from qlic_codec import allocator, api
    if kept_memory:
        allocator.keep_freed_memory()
    data = Path(path).read_bytes()
    numba.set_num_threads(threads)
    api.decode(data)  # warm-up: kernels loaded, buffers made
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        api.decode(data)
        best = min(best, time.perf_counter() - start)
    return best


def run_child(path: Path, threads: int, repeat: int, kept_memory: bool) -> float:
    # The repository first on the child's path, installed or not (as batch.py's workers).
    path_now = os.environ.get("PYTHONPATH")
    env = {**os.environ, "NUMBA_NUM_THREADS": str(max(threads, 1)),
           "PYTHONPATH": str(REPO) + (os.pathsep + path_now if path_now else "")}
    out = subprocess.run([sys.executable, __file__, "--child", str(path), str(threads),
                          str(repeat), str(int(kept_memory))], capture_output=True, text=True,
                         env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def summary(one: list[float], many: list[float]) -> dict:
    """Per-pair ratios, their median and the ratio of the fastest figures."""
    ratios = [a / b for a, b in zip(one, many)]
    return {"ratios": ratios, "median": statistics.median(ratios),
            "fastest": min(one) / min(many)}


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=parse_size, default=(1920, 1080), metavar="WxH")
    p.add_argument("--threads", type=int, default=2, help="against one thread (default 2)")
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--quality", type=float, default=4)
    p.add_argument("--kept-memory", action="store_true",
                   help="the command line's allocator policy in every process")
    args = p.parse_args(argv)
    if args.threads < 2 or args.pairs < 1 or args.repeat < 1:
        p.error("--threads must be at least 2, --pairs and --repeat at least 1")
    sys.path.insert(0, str(REPO))
    from qlic_codec import api

    width, height = args.size
    data = api.encode(photo(height, width), quality=args.quality)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "image.qlic"
        path.write_bytes(data)
        one, many = [], []
        policy = "freed memory kept" if args.kept_memory else "the C library's allocator"
        print(f"{width}x{height}, quality {args.quality:g}, {len(data)} bytes, {policy}; "
              f"seconds, the fastest of {args.repeat} decodes per process")
        print(f"{'pair':>4s} {'1 thread':>9s} {f'{args.threads} threads':>10s} {'ratio':>6s}")
        for pair in range(1, args.pairs + 1):
            one.append(run_child(path, 1, args.repeat, args.kept_memory))
            many.append(run_child(path, args.threads, args.repeat, args.kept_memory))
            print(f"{pair:4d} {one[-1]:9.4f} {many[-1]:10.4f} {one[-1] / many[-1]:6.2f}",
                  flush=True)
    s = summary(one, many)
    print(f"median of the pairs' ratios {s['median']:.2f}x; fastest against fastest "
          f"{s['fastest']:.2f}x; pairs {min(s['ratios']):.2f}-{max(s['ratios']):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
