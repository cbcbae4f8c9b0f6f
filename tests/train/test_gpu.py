"""The GPU round trip, run on the CPU: pack a run, train it elsewhere for a while, join the
weights back, and the run goes on from there."""

import pytest

torch = pytest.importorskip("torch")

from test_train import config, data_root  # noqa: E402,F401  (fixture)
from qlic_codec.train import gpu  # noqa: E402
from qlic_codec.train.loop import train  # noqa: E402


def test_parts_are_small_and_join_back(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "PART_BYTES", 1000)
    obj = {"w": torch.arange(2000, dtype=torch.float16)}
    parts = gpu.save_parts(obj, tmp_path, "x")
    assert len(parts) > 3 and all(p.stat().st_size <= 1000 for p in parts)
    assert torch.equal(gpu.load_parts(tmp_path, "x")["w"], obj["w"])
    parts[1].write_bytes(parts[1].read_bytes()[:-1])
    with pytest.raises(ValueError, match="bytes"):
        gpu.load_parts(tmp_path, "x")


def test_pack_train_elsewhere_join_and_resume(tmp_path, data_root):  # noqa: F811
    run = tmp_path / "run"
    train(config(run, data_root, steps=3, lr_drop_at=1.0, ema_decay=0.9), log=lambda line: None)
    assert "ema" in torch.load(run / "last.pt", weights_only=False)
    packed, returned = tmp_path / "pack", tmp_path / "out"
    gpu.pack(run, packed, data_root, quality=95)
    assert len(list((packed / "train").glob("*.jpg"))) == 4
    # "train" needs the run's step target above its step count.
    blob = torch.load(run / "last.pt", weights_only=False)
    blob["config"]["steps"] = 1000
    torch.save(blob, run / "last.pt")
    gpu.pack(run, packed, data_root, quality=95)
    gpu.train_on_gpu(packed, minutes=0.01, out=returned, device="cpu")
    assert sorted(p.name for p in returned.iterdir()) == ["gpu.part0", "gpu.parts.json"]
    got = gpu.load_parts(returned, "gpu")
    assert got["from_step"] == 3 and got["state"]["step"] > 3
    gpu.join(returned, run)
    blob = torch.load(run / "last.pt", weights_only=False)
    assert blob["state"]["step"] == got["state"]["step"]
    assert all(torch.equal(blob["model"][k], v.float()) for k, v in got["weights"].items())
    assert "ema" not in blob  # the CPU run's average did not see the GPU's steps
    # A second join of the same weights is refused: the run is no longer where they started.
    with pytest.raises(SystemExit, match="stop the CPU run"):
        gpu.join(returned, run)
    state = train(config(run, data_root, steps=got["state"]["step"] + 2, lr_drop_at=1.0),
                  log=lambda line: None)
    assert state["step"] == got["state"]["step"] + 2
