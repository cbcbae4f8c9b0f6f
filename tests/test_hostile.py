"""Hostile inputs: resource limits, model integrity, no lost data, regressions from fuzzing.

The fuzzing harness itself is in ``tests/fuzz/`` (``test_fuzz_short.py`` runs it briefly).
"""

import hashlib
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import qlic_codec
from conftest import synthetic_photo
from qlic_codec import api, container, imageio
from qlic_codec.cli import main as cli_main
from qlic_codec.engine.graph import IntegerNetwork
from qlic_codec.entropy import coder
from qlic_codec.entropy.tables import CdfTables
from qlic_codec.errors import (CorruptStreamError, ModelFileError, QlicError,
                               ResourceLimitError)

HERE = Path(__file__).resolve().parent
REGRESSIONS = HERE / "regressions"


def qlic_file(model_id: bytes, width: int, height: int, streams=(b"", b""), level=48,
              chunks=()) -> bytes:
    """A file for the tiny model (16 sub-levels per quality: sub-level 48 is quality 4), in
    container format 2, whose fixed layout these tests edit (format 3's rules:
    ``test_container_v3.py``)."""
    header = container.Header(width=width, height=height, level=level, quality_steps=16,
                              metric="mse", chunks=chunks, version=2,
                              model_hash=model_id, stream_lengths=tuple(map(len, streams)))
    return container.pack(header, list(streams))


def peak_traced(fn):
    """(exception raised by fn, peak bytes allocated while it ran, seconds)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        fn()
    except QlicError as exc:
        raised = exc
    else:
        raised = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return raised, peak, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------
# Resource limits

def test_tiny_file_claiming_a_huge_image_is_refused_at_once(tiny_model):
    model = api.load_model(tiny_model)
    data = qlic_file(model.model_id, 100_000, 100_000)
    assert len(data) == 42
    exc, peak, secs = peak_traced(lambda: qlic_codec.decode(data, tiny_model))
    assert isinstance(exc, ResourceLimitError) and "--max-pixels" in str(exc)
    assert peak < 4096 and secs < 60  # no more memory than a few copies of the file
    # The limit is the caller's: within it, the same kind of file fails for another reason.
    with pytest.raises(ResourceLimitError):
        qlic_codec.decode(qlic_file(model.model_id, 64, 65), tiny_model, max_pixels=64 * 64)


def test_cli_max_pixels(tiny_model, tmp_path):
    data = qlic_codec.encode(synthetic_photo(40, 30), 4, tiny_model)
    (tmp_path / "a.qlic").write_bytes(data)
    runner = CliRunner()
    args = ["decode", str(tmp_path / "a.qlic"), "--model", tiny_model, "-o",
            str(tmp_path / "a.png")]
    res = runner.invoke(cli_main, args + ["--max-pixels", "1199"])
    assert res.exit_code == 1 and "over the limit of 1199" in res.output
    assert not (tmp_path / "a.png").exists()
    assert runner.invoke(cli_main, args + ["--max-pixels", "1200"]).exit_code == 0


@pytest.mark.parametrize("z_words,y_words", [(0, 0), (2, 2), (0, 64)])
def test_big_claim_with_short_streams_fails_before_allocating(tiny_model, z_words, y_words):
    # 16000 x 16000 is within the default limit. The streams are far too short to hold the
    # ~1M hyper-latents and ~24M latents the header implies: refused before any buffer of
    # that size exists (the decoder used to decode such a file to 16000 x 16000 pixels).
    model = api.load_model(tiny_model)
    rng = np.random.default_rng(5)
    streams = tuple(rng.integers(0, 2**32, n, dtype=np.uint32).astype("<u4").tobytes()
                    for n in (z_words, y_words))
    data = qlic_file(model.model_id, 16000, 16000, streams)
    exc, peak, secs = peak_traced(lambda: qlic_codec.decode(data, tiny_model))
    assert isinstance(exc, CorruptStreamError), exc
    # Only the hyper-latent index array (~12 bytes per z element, 1/4096 of the pixels
    # times N) exists; decoding it in full would need ~31 bytes per pixel, ~8 GB.
    assert peak < 32 << 20, peak
    assert secs < 60  # a hang, not a speed target


def test_short_streams_for_a_small_image_are_refused(tiny_model):
    model = api.load_model(tiny_model)
    with pytest.raises(CorruptStreamError, match="too short|more information"):
        qlic_codec.decode(qlic_file(model.model_id, 1024, 1024), tiny_model)


def _all_modal(tables: CdfTables, indexes: np.ndarray) -> np.ndarray:
    modal = tables.cdf_counts.argmax(axis=1) + tables.offsets
    return modal[indexes].astype(np.int32)


def test_information_bound_accepts_every_real_stream(tiny_model):
    # The bound is exact for our encoder, so streams at both extremes decode: very many
    # likely symbols in a few words, and unlikely ones (escapes) everywhere.
    m = api.load_model(tiny_model)
    rng = np.random.default_rng(0)
    for tables in (m.z_tables, m.y_tables):
        idx = rng.integers(0, tables.num_tables, 300_000).astype(np.int32)
        for values in (_all_modal(tables, idx),
                       (tables.offsets[idx] - rng.integers(1, 2**20, idx.size)).astype(np.int32),
                       rng.integers(-3, 4, idx.size).astype(np.int32)):
            data = coder.encode_symbols(values, idx, tables)
            np.testing.assert_array_equal(coder.decode_symbols(data, idx, tables), values)
            if len(data) >= 8:  # one word less is refused or decodes to something else
                try:
                    out = coder.decode_symbols(data[:-4], idx, tables)
                except CorruptStreamError:
                    continue
                assert not np.array_equal(out, values) or len(data) <= 8


def test_garbage_stream_decoding_is_bounded(tiny_model):
    model = api.load_model(tiny_model)
    rng = np.random.default_rng(1)
    for _ in range(20):
        streams = tuple(rng.integers(0, 2**32, rng.integers(0, 300), dtype=np.uint32)
                        .astype("<u4").tobytes() for _ in range(2))
        data = qlic_file(model.model_id, int(rng.integers(1, 600)), int(rng.integers(1, 600)),
                         streams)
        t0 = time.perf_counter()
        try:
            qlic_codec.decode(data, tiny_model)
        except CorruptStreamError:
            pass
        assert time.perf_counter() - t0 < 60  # a hang, not a speed target


def test_out_of_memory_while_decoding_is_a_resource_limit(tiny_model, monkeypatch):
    data = qlic_codec.encode(synthetic_photo(20, 20), 4, tiny_model)

    def no_memory(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(IntegerNetwork, "synthesis_of_symbols", no_memory)
    with pytest.raises(ResourceLimitError, match="not enough memory"):
        qlic_codec.decode(data, tiny_model)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(100_000, 100_000), (15_000, 13_000)])
def test_image_bombs_are_refused_before_decoding(size):
    # The first is over qlic's limit; the second is under it but over Pillow's guard (kept on).
    data = _png_header_only(*size)
    imageio.load_image(imageio.save_image(np.zeros((2, 2, 3), np.uint8)))  # Pillow's imports
    exc, peak, secs = peak_traced(lambda: imageio.load_image(data))
    assert isinstance(exc, ResourceLimitError), exc
    assert peak < 1 << 20 and secs < 60


# ------------------------------------------------------------------------------------------
# Model integrity: refused with a one-line reason before any kernel runs

_PREFIX = struct.Struct("<8sII")


def _model_parts(data: bytes):
    jlen = _PREFIX.unpack_from(data)[2]
    header = json.loads(data[16:16 + jlen])
    start = 16 + jlen + (-(16 + jlen) % 8)
    return header, bytearray(data[start:-32]), data[:start]


def _set_array(data: bytes, name: str, fill) -> bytes:
    header, payload, head = _model_parts(data)
    e = header["arrays"][name]
    dtype = np.dtype(e["dtype"]).newbyteorder("<")
    n = int(np.prod(e["shape"]))
    a = np.frombuffer(bytes(payload), dtype, n, e["offset"]).copy()
    a[...] = fill(a)
    payload[e["offset"]:e["offset"] + a.nbytes] = a.tobytes()
    body = head + bytes(payload)
    return body + hashlib.sha256(body).digest()


@pytest.fixture
def no_kernels(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel ran on an invalid model")
    monkeypatch.setattr(IntegerNetwork, "_run", refuse)


def _refused(data: bytes, tmp_path: Path, match: str) -> str:
    path = tmp_path / "bad.qlicm"
    path.write_bytes(data)
    for load in (lambda: api.load_model(str(path)), lambda: api.load_model_bytes(data)):
        with pytest.raises(ModelFileError, match=match) as info:
            load()
        assert "\n" not in str(info.value)
    return str(info.value)


def test_model_with_a_wrong_hash_is_refused(tiny_model, tmp_path, no_kernels):
    data = bytearray(Path(tiny_model).read_bytes())
    data[len(data) // 2] ^= 1  # a weight or table bit, not re-sealed
    _refused(bytes(data), tmp_path, "hash mismatch")
    data = bytearray(Path(tiny_model).read_bytes())
    data[-1] ^= 0x80  # the hash itself
    _refused(bytes(data), tmp_path, "hash mismatch")


@pytest.mark.parametrize("name,fill,match", [
    ("g_s.0.bias", lambda a: 2**31 - 1, "could overflow"),
    ("h_s.0.bias", lambda a: -(2**31), "could overflow"),
    ("g_a.2.bias", lambda a: 2**31 - 1, "could overflow"),
    ("g_s.1.beta", lambda a: 0, "outside"),
    ("head.pixel.shift", lambda a: 63, "outside"),
    ("entropy.y.cdf_counts", lambda a: np.where(a > 0, a + 1, 0), "sums to"),
    ("entropy.z.sizes", lambda a: 1, "not in"),
])
def test_model_breaking_a_bound_is_refused(tiny_model, tmp_path, no_kernels, name, fill, match):
    _refused(_set_array(Path(tiny_model).read_bytes(), name, fill), tmp_path, match)


def test_model_whose_weights_push_an_accumulator_over_is_refused(tiny_model, tmp_path,
                                                                 no_kernels):
    # g_s.0 takes int16 codes up to 32767: full-scale weights (~9e8) plus a bias that is
    # fine on its own (2**31 - 5e8) overflow together.
    data = _set_array(Path(tiny_model).read_bytes(), "g_s.0.bias", lambda a: 2**31 - 5 * 10**8)
    api.load_model_bytes(data)
    data = _set_array(data, "g_s.0.weight", lambda a: 127)
    _refused(data, tmp_path, "could overflow")


def test_cli_reports_a_bad_model_in_one_line(tiny_model, tmp_path):
    data = bytearray(Path(tiny_model).read_bytes())
    data[100] ^= 4
    (tmp_path / "bad.qlicm").write_bytes(bytes(data))
    Image.fromarray(synthetic_photo(20, 20)).save(tmp_path / "a.png")
    res = CliRunner().invoke(cli_main, ["encode", str(tmp_path / "a.png"), "--model",
                                        str(tmp_path / "bad.qlicm")])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qlic: error:") and "hash mismatch" in lines[0]
    assert not (tmp_path / "a.qlic").exists()


# ------------------------------------------------------------------------------------------
# Regression files from fuzzing: each must end in a QlicError

def _regression_files():
    return sorted(p for p in REGRESSIONS.iterdir() if p.suffix in (".qlic", ".qlicm"))


# What each model file is refused for: its own defect, not its version (the files are model
# format 2, rewritten from the format-1 originals with the defect kept).
REGRESSION_REASONS = {
    "model-deeply-nested-json.qlicm": "malformed header",
    "model-h_a-stride-mismatch.qlicm": "transform 'h_a' has 1 stride-2 convolutions",
    "model-infinite-offset.qlicm": "malformed entry for array 'a'",
    "model-infinite-shape.qlicm": "malformed entry for array 'a'",
    "model-zero-and-huge-dims.qlicm": "array 'a' lies outside the payload",
    "model-zero-dim-beside-huge-campaign.qlicm": "array 'g_s.4.bias' lies outside the payload",
}


@pytest.mark.parametrize("path", _regression_files(), ids=lambda p: p.name)
def test_regression_file(tiny_model, path):
    data = path.read_bytes()
    with pytest.raises(QlicError) as info:
        if path.suffix == ".qlicm":
            api.load_model_bytes(data, path.name)
        else:
            qlic_codec.decode(data, tiny_model)
    if path.suffix == ".qlicm":
        assert REGRESSION_REASONS[path.name] in str(info.value)


# ------------------------------------------------------------------------------------------
# No lost data

def test_failing_runs_never_touch_an_existing_output(tiny_model, tmp_path):
    runner = CliRunner()
    (tmp_path / "junk.qlic").write_bytes(b"QLIC" + os.urandom(50))
    (tmp_path / "junk.png").write_bytes(b"not really a png")
    (tmp_path / "out.png").write_bytes(b"old image")
    (tmp_path / "out.qlic").write_bytes(b"old stream")
    dec = runner.invoke(cli_main, ["decode", str(tmp_path / "junk.qlic"), "-o",
                                   str(tmp_path / "out.png"), "--model", tiny_model])
    enc = runner.invoke(cli_main, ["encode", str(tmp_path / "junk.png"), "-o",
                                   str(tmp_path / "out.qlic"), "--model", tiny_model])
    assert dec.exit_code == 1 and enc.exit_code == 1
    assert (tmp_path / "out.png").read_bytes() == b"old image"
    assert (tmp_path / "out.qlic").read_bytes() == b"old stream"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.png", "junk.qlic", "out.png",
                                                          "out.qlic"]


def test_output_that_is_the_input_is_refused(tiny_model, tmp_path):
    runner = CliRunner()
    Image.fromarray(synthetic_photo(20, 20)).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    os.symlink(tmp_path / "a.png", tmp_path / "link.png")
    for target in ("a.png", "link.png"):
        res = runner.invoke(cli_main, ["encode", str(tmp_path / "a.png"), "-o",
                                       str(tmp_path / target), "--model", tiny_model])
        assert res.exit_code == 1 and "is the input file" in res.output
    data = qlic_codec.encode(synthetic_photo(20, 20), 4, tiny_model)
    (tmp_path / "b.qlic").write_bytes(data)
    os.link(tmp_path / "b.qlic", tmp_path / "hard.png")
    res = runner.invoke(cli_main, ["decode", str(tmp_path / "b.qlic"), "-o",
                                   str(tmp_path / "hard.png"), "--model", tiny_model])
    assert res.exit_code == 1 and "is the input file" in res.output
    assert (tmp_path / "a.png").read_bytes() == before
    assert (tmp_path / "b.qlic").read_bytes() == data


def test_batches_continue_past_a_bad_file(tiny_model, tmp_path):
    runner = CliRunner()
    for name, seed in (("a", 1), ("c", 2)):
        Image.fromarray(synthetic_photo(30, 40, seed)).save(tmp_path / f"{name}.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    out.mkdir()
    res = runner.invoke(cli_main, ["encode", *(str(tmp_path / f"{n}.png") for n in "abc"),
                                   "-o", str(out), "--model", tiny_model])
    assert res.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.qlic", "c.qlic"]
    assert res.output.count("qlic: error:") == 1 and "b.png" in res.output
    good = (out / "a.qlic").read_bytes()
    (out / "b.qlic").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    res = runner.invoke(cli_main, ["decode", *(str(out / f"{n}.qlic") for n in "abc"),
                                   "-o", str(out), "--model", tiny_model])
    assert res.exit_code == 1 and "checksum" in res.output
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "c.png"]


def test_killed_encode_leaves_the_old_or_the_complete_new_file(tiny_model, tmp_path):
    # A batch of three large-ish images, killed at random moments by SIGINT, SIGTERM and
    # SIGKILL: every output is either its old content or the complete new stream.
    names = ["p0", "p1", "p2"]
    expected = {}
    for i, n in enumerate(names):
        rgb = synthetic_photo(512, 768, seed=10 + i)
        Image.fromarray(rgb).save(tmp_path / f"{n}.png")
        expected[n] = qlic_codec.encode(rgb, 4, tiny_model)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "qlic_codec.cli", "encode",
           *(str(tmp_path / f"{n}.png") for n in names), "-o", str(out), "--model", tiny_model]

    def reset():
        for n in names:
            (out / f"{n}.qlic").write_bytes(b"old " + n.encode())

    reset()
    t0 = time.monotonic()
    full = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    total = time.monotonic() - t0
    assert full.returncode == 0, full.stderr
    for n in names:
        assert (out / f"{n}.qlic").read_bytes() == expected[n]

    rng = random.Random(20240611)
    leftovers = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        reset()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.3, 1.0) * total)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
        assert b"Traceback" not in err or sig != signal.SIGINT or proc.returncode != 130
        for n in names:
            got = (out / f"{n}.qlic").read_bytes()
            assert got in (b"old " + n.encode(), expected[n]), (sig, n, len(got))
        leftovers += [p.name for p in out.iterdir() if p.suffix == ".tmp"]
        for p in out.glob(".*.tmp"):  # only a SIGKILL mid-write can leave one
            p.unlink()
        if sig == signal.SIGINT and proc.returncode not in (0, -signal.SIGINT):
            assert proc.returncode == 130, err
    assert all(name.startswith(".p") for name in leftovers)


def test_thin_image_claims_are_refused_by_their_padded_area(tiny_model):
    # 1 x 2**28 pixels is within the nominal limit, but the network would work on 64 x 2**28.
    model = api.load_model(tiny_model)
    data = qlic_file(model.model_id, 2**28, 1)
    exc, peak, secs = peak_traced(lambda: qlic_codec.decode(data, tiny_model))
    assert isinstance(exc, ResourceLimitError) and "pads to" in str(exc)
    assert peak < 1 << 20


# ------------------------------------------------------------------------------------------
# Format 2: quality sub-levels and metadata chunks

def _cli_decode(tmp_path, data, tiny_model):
    (tmp_path / "in.qlic").write_bytes(data)
    result = CliRunner().invoke(cli_main, ["decode", str(tmp_path / "in.qlic"), "--model",
                                           tiny_model, "-o", str(tmp_path / "out.png")])
    assert not (tmp_path / "out.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name not in ("in.qlic",)]
    return result


def _one_error_line(result) -> str:
    lines = result.stderr.splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and "Traceback" not in result.output, \
        result.output
    return lines[0]


def test_a_sub_level_beyond_the_model_is_refused_in_one_line(tiny_model, tmp_path):
    model = api.load_model(tiny_model)
    good = qlic_codec.encode(synthetic_photo(20, 30), 4, tiny_model)
    header = container.read_header(good)
    for level, steps in ((model.network.levels, 16), (0, 1), (16, 8)):
        bad = container.pack(
            container.Header(width=30, height=20, level=level, quality_steps=steps,
                             metric="mse", model_hash=model.model_id,
                             stream_lengths=header.stream_lengths),
            container.parse(good)[1])
        with pytest.raises(CorruptStreamError, match="is not a level of the model"):
            qlic_codec.decode(bad, tiny_model)
        assert "is not a level of the model" in _one_error_line(
            _cli_decode(tmp_path, bad, tiny_model))


@pytest.mark.parametrize("chunks, message", [
    (((b"ICC ", b"x"),), "unknown metadata chunk"),
    (((b"EXIF", b"a"), (b"EXIF", b"b")), "appears twice"),
])
def test_bad_metadata_chunks_are_refused_in_one_line(tiny_model, tmp_path, chunks, message):
    # Forged by hand, with valid checksums: the container's rules refuse them, not a CRC.
    # In format 2, whose fixed layout is edited here (format 3: test_container_v3.py).
    written = qlic_codec.encode(synthetic_photo(20, 30), 4, tiny_model)
    header, streams = container.parse(written)
    good = container.pack(container.Header(**{**header.__dict__, "version": 2}), streams)
    n = len(header.stream_lengths)
    prefix = bytearray(good[:container.PREFIX_SIZE + 4 * n])
    prefix[9] = len(chunks)
    head = bytes(prefix) + b"".join(struct.pack("<4sI", tag, len(d)) for tag, d in chunks)
    head += b"".join(d for _, d in chunks)
    head += struct.pack("<I", zlib.crc32(head))
    body = head + b"".join(streams)
    bad = body + struct.pack("<I", zlib.crc32(body))
    with pytest.raises(CorruptStreamError, match=message):
        qlic_codec.decode(bad, tiny_model)
    assert message in _one_error_line(_cli_decode(tmp_path, bad, tiny_model))


def test_a_chunk_claiming_gigabytes_costs_no_memory(tiny_model):
    good = qlic_file(api.load_model(tiny_model).model_id, 64, 64)
    bad = bytearray(good)
    bad[9] = 1
    at = container.PREFIX_SIZE + 8
    bad[at:at] = struct.pack("<4sI", b"XMP ", 2**32 - 1)
    exc, peak, _ = peak_traced(lambda: qlic_codec.decode(bytes(bad), tiny_model))
    assert isinstance(exc, CorruptStreamError) and "over the limit" in str(exc)
    assert peak < 4096


def test_a_format_1_file_names_its_version_and_the_release_that_reads_it(tiny_model,
                                                                          tmp_path):
    old = bytes.fromhex("514c4943010107020300000002000000010203040506070802000000030000"
                        "00d0a1c27a7a7a797979c0f4eddd")
    line = _one_error_line(_cli_decode(tmp_path, old, tiny_model))
    assert line.endswith("this file is qlic format 1; this qlic reads formats 2 and 3: "
                         "decode it with qlic 0.1"), line
    result = CliRunner().invoke(cli_main, ["info", str(tmp_path / "in.qlic")])
    assert "format 1" in _one_error_line(result)
