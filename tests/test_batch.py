"""Batches on Dask: a real LocalCluster of worker processes, the tiny model, real files."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import qlic_codec
from conftest import synthetic_photo
from qlic_codec import batch

distributed = pytest.importorskip("dask.distributed")


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    (root / "trip" / "day1").mkdir(parents=True)
    paths = [root / "a.png", root / "trip" / "b.png", root / "trip" / "day1" / "c.jpg",
             root / "trip" / "day1" / "d.png"]
    for i, p in enumerate(paths):
        Image.fromarray(synthetic_photo(40 + 8 * i, 56, seed=i)).save(p)
    (root / "trip" / "notes.txt").write_text("not an image")
    return root, paths


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            yield c


def test_plan_mirrors_the_tree_and_leaves_out_what_is_not_an_image(photos, tmp_path):
    root, _ = photos
    jobs = batch.plan([str(root)], str(tmp_path / "out"), "encode")
    outs = sorted(Path(j.output).relative_to(tmp_path / "out").as_posix() for j in jobs)
    assert outs == ["a.qlic", "trip/b.qlic", "trip/day1/c.qlic", "trip/day1/d.qlic"]
    left_out = []
    assert batch.plan([str(root)], str(tmp_path / "out"), "encode", left_out=left_out) == jobs
    assert left_out == [str(root / "trip" / "notes.txt")]
    with pytest.raises(ValueError, match="same output"):
        batch.plan([str(root / "a.png"), str(root / "a.png")], str(tmp_path / "o"), "encode")


def test_encode_then_decode_on_a_cluster_and_resume_skips_what_is_done(photos, tmp_path,
                                                                      client, tiny_model):
    root, paths = photos
    out = tmp_path / "out"
    jobs = batch.plan([str(root)], str(out), "encode")
    results = list(batch.run(jobs, "encode", client=client, quality=3, model=tiny_model))
    assert sorted(r["status"] for r in results) == ["done"] * 4
    for job in jobs:
        rgb = np.asarray(Image.open(job.input).convert("RGB"))
        assert Path(job.output).read_bytes() == qlic_codec.encode(rgb, 3, tiny_model)
    # Run again: everything is there, nothing is redone.
    again = list(batch.run(jobs, "encode", client=client, quality=3, model=tiny_model))
    assert [r["status"] for r in again] == ["skipped"] * 4
    # Decode the tree back to PNGs.
    back = batch.plan([str(out)], str(tmp_path / "png"), "decode")
    results = list(batch.run(back, "decode", client=client, model=tiny_model))
    assert sorted(r["status"] for r in results) == ["done"] * 4
    for job in back:
        expected = qlic_codec.decode(Path(job.input).read_bytes(), model=tiny_model)
        assert np.array_equal(np.asarray(Image.open(job.output)), expected)


def test_a_bad_file_fails_alone(photos, tmp_path, client, tiny_model):
    root, _ = photos
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    jobs = batch.plan([str(root)], str(tmp_path / "out"), "encode")
    results = {Path(r["input"]).name: r for r in
               batch.run(jobs, "encode", client=client, model=tiny_model)}
    assert results["broken.png"]["status"] == "failed" and results["broken.png"]["error"]
    assert sum(r["status"] == "done" for r in results.values()) == 4
    assert not (tmp_path / "out" / "broken.qlic").exists()


def _die_once(marker):
    """Kill the worker process this runs in, the first time only."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return "second try"


def test_a_worker_that_dies_loses_no_output(photos, tmp_path, tiny_model):
    root, _ = photos
    for i in range(8):
        Image.fromarray(synthetic_photo(64, 64, seed=10 + i)).save(root / f"more{i}.png")
    jobs = batch.plan([str(root)], str(tmp_path / "out"), "encode")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        victim = sorted(c.scheduler_info()["workers"])[0]
        results = batch.run(jobs, "encode", client=c, model=tiny_model)
        first = next(results)
        # The restarted worker has a new address: the retry may run anywhere.
        killer = c.submit(_die_once, str(tmp_path / "marker"), workers=[victim],
                          allow_other_workers=True, pure=False)
        rest = [first, *results]
        assert killer.result() == "second try"  # the worker died once and came back
    assert (tmp_path / "marker").exists()
    assert len(rest) == len(jobs)
    assert all(r["status"] in ("done", "skipped") for r in rest)
    for job in jobs:
        rgb = np.asarray(Image.open(job.input).convert("RGB"))
        assert Path(job.output).read_bytes() == qlic_codec.encode(rgb, 4, tiny_model)
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.is_file()
                 and p.suffix != ".qlic"]
    assert not leftovers


def test_its_own_local_cluster_runs_with_the_worker_plugin(photos, tmp_path, tiny_model):
    """Without a scheduler, run starts (and closes) its own cluster and installs the allocator
    plugin there (what the plugin does is the next test's); the files are the same bytes."""
    root, paths = photos
    jobs = batch.plan([str(paths[0])], str(tmp_path / "own"), "encode")
    results = list(batch.run(jobs, "encode", workers=1, quality=3, model=tiny_model))
    assert [r["status"] for r in results] == ["done"]
    rgb = np.asarray(Image.open(paths[0]).convert("RGB"))
    assert Path(jobs[0].output).read_bytes() == qlic_codec.encode(rgb, 3, tiny_model)


def _heap_serves_large_arrays():
    import mallinfo
    return mallinfo.mapped_by_a_large_array() == 0


def test_the_worker_plugin_keeps_freed_memory_in_every_worker():
    """The plugin that run installs on its own cluster applies the allocator policy in each
    worker process (glibc 2.33 or later, where mallinfo2 shows it)."""
    import mallinfo
    if not mallinfo.available():
        pytest.skip("needs glibc 2.33 or later")
    from qlic_codec.daskworker import KeepFreedMemory
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            assert not any(c.run(_heap_serves_large_arrays).values())
            c.register_plugin(KeepFreedMemory())
            assert all(c.run(_heap_serves_large_arrays).values())
