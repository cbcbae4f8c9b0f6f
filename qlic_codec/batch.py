"""Encode or decode many files on a Dask cluster (``pip install "qlic[distributed]"``).

    from qlic_codec import batch
    jobs = batch.plan(["photos/"], "out/", "encode")          # mirrors the folder tree
    for result in batch.run(jobs, "encode", scheduler="tcp://scheduler:8786", quality=5):
        print(result)                                           # one dict per file

Each file is one task. A task reads its input on the worker, runs the codec there and writes
its output atomically (a temporary file renamed onto the target, ``fsio.atomic_write``), so
the machines need a shared file system, and an output that exists is complete. A worker that
dies takes no output with it: the scheduler runs its tasks again elsewhere. A run that stops
can be started again with the same jobs: files whose output exists are skipped
(``resume=True``, the default), so only the rest is done.

Without a scheduler address, ``run`` starts a ``LocalCluster`` of worker processes on this
machine (one file at a time each, whose kernels share the cores among the workers: qlic's
kernels are parallel inside a file, but for many files one file per process is faster).

On the command line: ``qlic batch encode|decode INPUTS... -o DIR [--scheduler ADDRESS]``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .threads import available_cores
from .zoo import DEFAULT_QUALITY

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm",
                  ".gif"}
OPS = ("encode", "decode")


@dataclass(frozen=True)
class Job:
    input: str
    output: str


def _wanted(path: Path, op: str) -> bool:
    suffix = path.suffix.lower()
    return suffix == ".qlic" if op == "decode" else suffix in IMAGE_SUFFIXES


def default_suffix(op: str) -> str:
    """The suffix of ``op``'s outputs: ``.qlic`` for encode, ``.png`` for decode."""
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    return ".qlic" if op == "encode" else ".png"


def mirror(root: str, output_dir: str, op: str, suffix: str | None = None
           ) -> tuple[list[Job], list[str]]:
    """The jobs for the files under the folder ``root`` and its subfolders, sorted, with
    outputs at the same place under ``output_dir`` (``output_dir == root``: beside each
    input), and the files left out because they are not inputs of ``op`` (by suffix).
    Links to folders are not followed."""
    suffix = suffix or default_suffix(op)
    root_path, out = Path(root), Path(output_dir)
    jobs, left_out = [], []
    for path in sorted(p for p in root_path.rglob("*") if p.is_file()):
        if _wanted(path, op):
            target = out / path.relative_to(root_path).with_suffix(suffix)
            jobs.append(Job(str(path), str(target)))
        else:
            left_out.append(str(path))
    return jobs, left_out


def plan(inputs: Iterable[str], output_dir: str, op: str, suffix: str | None = None,
         left_out: list[str] | None = None) -> list[Job]:
    """Jobs for files and folders: a folder is walked recursively and its tree mirrored under
    ``output_dir`` (``mirror``); a file's output goes directly in ``output_dir``. Files that
    are not inputs of ``op`` (by suffix) are left out of folders, and appended to
    ``left_out`` when it is given; named files are always kept."""
    suffix = suffix or default_suffix(op)
    out = Path(output_dir)
    jobs = []
    for item in inputs:
        root = Path(item)
        if root.is_dir():
            found, others = mirror(item, output_dir, op, suffix)
            jobs.extend(found)
            if left_out is not None:
                left_out.extend(others)
        else:
            jobs.append(Job(str(root), str(out / (root.stem + suffix))))
    outputs = [j.output for j in jobs]
    if len(set(outputs)) != len(outputs):
        dup = next(o for o in outputs if outputs.count(o) > 1)
        raise ValueError(f"two inputs would write the same output {dup}")
    return jobs


def run_one(job: Job, op: str, quality: float = DEFAULT_QUALITY, model: str | None = None,
            drop_alpha: bool = False, resume: bool = True, threads: int | None = None,
            target_size: int | None = None, target_bpp: float | None = None,
            strip: bool = False) -> dict:
    """Do one job where this runs (a worker); never raises for a bad file. ``threads``: the
    kernels' threads for this file, at most what the worker has (None: the worker's
    default). ``target_size`` / ``target_bpp`` replace ``quality`` by a size target
    (``api.encode_to_target``: the result says the quality chosen and whether the file is
    within 3%); ``strip`` drops the metadata."""
    from . import api, fsio, imageio
    from . import threads as kernel_threads
    from .errors import QlicError
    start = time.perf_counter()
    result = {"input": job.input, "output": job.output, "op": op}
    if resume and os.path.exists(job.output):
        return {**result, "status": "skipped", "reason": "output exists"}
    if threads is not None:
        threads = min(threads, kernel_threads.limit())
    try:
        data = fsio.read_input(job.input)
        with kernel_threads.use(threads):
            # Metadata travels as it does with qlic encode / decode.
            if op == "encode":
                rgb, metadata = imageio.load_image_and_metadata(data, drop_alpha=drop_alpha)
                if strip:
                    metadata = None
                if target_size is None and target_bpp is None:
                    out = api.encode(rgb, quality=quality, model=model, metadata=metadata)
                else:
                    target = api.encode_to_target(rgb, target_size=target_size,
                                                  target_bpp=target_bpp, model=model,
                                                  metadata=metadata)
                    out = target.data
                    result.update(quality=target.quality, target_bytes=target.target_bytes,
                                  target_met=target.met)
            else:
                rgb, metadata = api.decode_with_metadata(data, model=model)
                out = imageio.save_image(rgb, imageio.format_for_path(job.output), metadata)
        fsio.make_parent_folders(job.output)
        fsio.atomic_write(job.output, out)
    except (QlicError, OSError) as exc:
        return {**result, "status": "failed", "error": str(exc).splitlines()[0]}
    return {**result, "status": "done", "bytes": len(out),
            "seconds": round(time.perf_counter() - start, 3)}


def run(jobs: list[Job], op: str, scheduler: str | None = None, client=None,
        workers: int | None = None, retries: int = 2, **options) -> Iterator[dict]:
    """Run ``jobs`` on a cluster and yield one result per job as each finishes.

    Args:
        jobs: from ``plan``.
        op: ``"encode"`` or ``"decode"``.
        scheduler: address of a running Dask scheduler (``tcp://host:8786``); None for a
            ``LocalCluster`` of ``workers`` processes on this machine.
        client: an existing ``dask.distributed.Client`` instead of either.
        retries: how often a task that raised is tried again (a worker's death is handled by
            the scheduler, which reschedules the task).
        options: ``quality``, ``model``, ``drop_alpha``, ``resume``, ``threads``,
            ``target_size``, ``target_bpp``, ``strip`` for ``run_one``; on a ``LocalCluster`` ``threads`` defaults to the cores divided
            among the workers.
    """
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise RuntimeError('batches on Dask need the distributed extra: '
                           'pip install "qlic[distributed]"') from None
    own = []
    if client is None:
        if scheduler is None:
            workers = workers or available_cores()
            # Numba's default in every worker would be all cores: divide them instead.
            options.setdefault("threads", max(1, available_cores() // workers))
            cluster = LocalCluster(n_workers=workers,
                                   threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            own.append(cluster)
            client = Client(cluster)
            from .daskworker import KeepFreedMemory
            client.register_plugin(KeepFreedMemory())
        else:
            client = Client(scheduler)
        own.insert(0, client)
    try:
        futures = client.map(run_one, jobs, op=op, pure=False, retries=retries, **options)
        for future in as_completed(futures):
            yield future.result()
    finally:
        for thing in own:
            thing.close()
