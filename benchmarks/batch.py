"""Wall time of a whole `qlic encode -r DIR -o OUT` over many photos with one worker process
(`-j 1`) against two (`-j 2`), on the same files, in one run.

    python benchmarks/batch.py                          # 100 photos from ../shared/data
    python benchmarks/batch.py --count 40 --data DIR    # 40 images copied from DIR
    python benchmarks/batch.py --synthetic 512x384      # 100 synthetic photos (needs pytest)
    python benchmarks/batch.py --repeat 3 --jobs 1 2 4

Photos: ``--count`` image files copied from ``../shared/data/val`` and then
``../shared/data/train`` beside the repository (or from ``--data DIR``, walked recursively),
taken again from the start when there are fewer, into one folder per source; or
``--synthetic WxH`` photos made by the tests' generator (``tests/conftest.py``).

Every command is timed whole, as a user runs it (``python -m qlic_codec.cli encode -r
PHOTOS -o OUT -j N --quiet``): start-up, starting the workers, reading, encoding and writing
every file. One untimed encode of one photo first fills Numba's cache, so no timed command
compiles a kernel. Each repeat runs every ``--jobs`` value once, in turn, into a fresh
output folder; the outputs of every run are compared, byte for byte, with the first run's.
Prints each time, the best of the repeats per ``--jobs`` value, and the ratio of the first
value's best to each other's (above 1: faster than the first), with the CPU, the cores this
process may use and the load average before and after.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_SOURCES = [ROOT.parent / "shared" / "data" / "val",
                   ROOT.parent / "shared" / "data" / "train"]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from rd import cpu_name  # noqa: E402

from qlic_codec.batch import IMAGE_SUFFIXES  # noqa: E402
from qlic_codec.threads import available_cores  # noqa: E402


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def copy_photos(sources: list[Path], count: int, photos: Path) -> list[Path]:
    """Copy ``count`` images from ``sources`` (in order, again from the start when there are
    fewer) into ``photos/<source name>/``."""
    found = [(source, path) for source in sources if source.is_dir()
             for path in images_in(source)]
    if not found:
        names = " or ".join(str(s) for s in sources)
        raise SystemExit(f"batch.py: no images in {names}; pass --data DIR or --synthetic WxH")
    copied = []
    for i in range(count):
        source, path = found[i % len(found)]
        lap = i // len(found)
        name = path.name if lap == 0 else f"{path.stem}-{lap}{path.suffix}"
        target = photos / source.name / path.relative_to(source).parent / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        copied.append(target)
    return copied


def make_photos(size: str, count: int, photos: Path) -> list[Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import synthetic_photo
    from PIL import Image

    width, height = (int(v) for v in size.lower().split("x"))
    photos.mkdir(parents=True)
    made = []
    for i in range(count):
        path = photos / f"synthetic{i:04d}.png"
        Image.fromarray(synthetic_photo(height, width, seed=i)).save(path)
        made.append(path)
    return made


def qlic_encode(photos: Path, out: Path, jobs: int, quality: int, model: str | None) -> float:
    """Run one whole command; its wall time in seconds."""
    command = [sys.executable, "-m", "qlic_codec.cli", "encode", "-r", str(photos), "-o",
               str(out), "-j", str(jobs), "-q", str(quality), "--quiet"]
    if model:
        command += ["--model", model]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"batch.py: {' '.join(command[2:])} exited {done.returncode}: "
                         f"{done.stderr.strip()}")
    return seconds


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=100, help="number of photos (default 100)")
    p.add_argument("--data", type=Path, default=None,
                   help="folder to copy the images from (default: ../shared/data/val, then "
                        "../shared/data/train)")
    p.add_argument("--synthetic", metavar="WxH", default=None,
                   help="make synthetic photos of this size instead of copying")
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2],
                   help="the -j values to time (default: 1 2)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each -j value (default 1)")
    p.add_argument("--quality", type=int, default=4, help="qlic quality level (default 4)")
    p.add_argument("--model", default=None, help="model name or path (default: bundled)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="qlic-batch-bench-") as tmp:
        photos = Path(tmp) / "photos"
        if args.synthetic:
            files = make_photos(args.synthetic, args.count, photos)
            origin = f"synthetic {args.synthetic}"
        else:
            sources = [args.data] if args.data else DEFAULT_SOURCES
            files = copy_photos(sources, args.count, photos)
            origin = "copied from " + " and ".join(
                sorted({str(f.relative_to(photos).parts[0]) for f in files}))
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        print(f"photos: {len(files)} ({origin}), {megabytes:.1f} MB")
        print(f"CPU: {cpu_name()}; cores available: {available_cores()}; "
              f"model: {args.model or 'bundled default'}, quality {args.quality}")

        # Fill Numba's cache (and load the model once) outside the timings.
        warm = Path(tmp) / "warm"
        warm.mkdir()
        shutil.copyfile(files[0], warm / files[0].name)
        qlic_encode(warm, Path(tmp) / "warm-out", 1, args.quality, args.model)

        load_before = os.getloadavg()
        times: dict[int, list[float]] = {jobs: [] for jobs in args.jobs}
        reference = None
        for run in range(args.repeat):
            for jobs in args.jobs:
                out = Path(tmp) / f"out-{run}-j{jobs}"
                seconds = qlic_encode(photos, out, jobs, args.quality, args.model)
                times[jobs].append(seconds)
                print(f"run {run + 1}  -j {jobs}: {seconds:7.2f} s  "
                      f"({len(files) / seconds:.2f} files/s)")
                outputs = tree_bytes(out)
                if reference is None:
                    reference = outputs
                elif outputs != reference:
                    raise SystemExit(f"batch.py: -j {jobs} wrote other bytes than the first run")
                shutil.rmtree(out)
        load_after = os.getloadavg()

    first = args.jobs[0]
    print(f"outputs identical in every run: yes ({len(reference)} files)")
    print("load average (1, 5, 15 min) before: " + ", ".join(f"{v:.2f}" for v in load_before)
          + "; after: " + ", ".join(f"{v:.2f}" for v in load_after))
    for jobs in args.jobs:
        best = min(times[jobs])
        line = f"best  -j {jobs}: {best:7.2f} s"
        if jobs != first:
            line += f"   -j {first} / -j {jobs} = {min(times[first]) / best:.2f}x"
        print(line)


if __name__ == "__main__":
    main()
