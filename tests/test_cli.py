"""Tests for the qlic command line: exit codes, one-line errors, atomic outputs, stdio, --json.

The codec is replaced by a small fake ``qlic_codec.api`` so that these tests check the CLI's
contract alone, quickly, and whatever state the real codec is in.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from qlic_codec import cli
from qlic_codec.errors import CorruptStreamError, ModelFileError, ResourceLimitError

REPO_ROOT = Path(__file__).resolve().parents[1]
MAGIC = b"FAKE"
HEADER = struct.Struct("<4sIIB")


def make_fake_api() -> types.ModuleType:
    """A stand-in codec: the stream is a header plus the raw pixels."""
    api = types.ModuleType("qlic_codec.api")
    api.QUALITY_LEVELS = range(1, 9)
    api.DEFAULT_QUALITY = 4

    def encode(rgb: np.ndarray, quality: int = 4, model: str | None = None,
               metadata: object = None) -> bytes:
        if model == "missing":
            raise ModelFileError("no bundled model named 'missing'")
        height, width = rgb.shape[:2]
        return HEADER.pack(MAGIC, width, height, int(quality)) + rgb.tobytes()

    def parse(data: bytes) -> tuple[int, int, int]:
        if len(data) < HEADER.size or data[:4] != MAGIC:
            raise CorruptStreamError("not a qlic stream (bad magic)")
        _, width, height, quality = HEADER.unpack_from(data)
        return width, height, quality

    def decode(data: bytes, model: str | None = None, max_pixels: int = 2**28) -> np.ndarray:
        width, height, _ = parse(data)
        if width * height > max_pixels:
            raise ResourceLimitError(f"{width}x{height} is above the limit of {max_pixels}")
        if len(data) != HEADER.size + width * height * 3:
            raise CorruptStreamError("truncated stream")
        pixels = np.frombuffer(data, np.uint8, offset=HEADER.size)
        return pixels.reshape(height, width, 3).copy()

    def decode_with_metadata(data: bytes, model: str | None = None,
                             max_pixels: int = 2**28) -> tuple[np.ndarray, None]:
        return decode(data, model, max_pixels), None

    def read_info(data: bytes) -> dict:
        width, height, quality = parse(data)
        return {
            "width": width,
            "height": height,
            "quality": quality,
            "metric": "mse",
            "model_hash": "0123abcd",
            "bytes": len(data),
            "bpp": len(data) * 8 / (width * height),
            "stream_lengths": [len(data) - HEADER.size],
        }

    api.encode, api.decode, api.read_info = encode, decode, read_info
    api.decode_with_metadata = decode_with_metadata
    return api


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    fake = make_fake_api()
    monkeypatch.setitem(sys.modules, "qlic_codec.api", fake)
    return fake


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(args: list[str], exit_code: int, input: bytes | None = None) -> Result:
    result = CliRunner().invoke(cli.main, args, input=input)
    assert result.exit_code == exit_code, (result.exit_code, result.stderr, result.exception)
    assert "Traceback" not in result.stderr or "--debug" in args
    return result


def write_png(path: Path, height: int = 5, width: int = 7, seed: int = 0) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


def read_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def error_lines(result: Result) -> list[str]:
    return result.stderr.splitlines()


def test_encode_then_decode_round_trip_with_default_names(api, workdir: Path) -> None:
    rgb = write_png(workdir / "a.png")
    result = run(["encode", "a.png", "-q", "6"], 0)
    assert result.stdout == "" and result.stderr == ""
    assert (workdir / "a.qlic").read_bytes()[:4] == MAGIC
    assert HEADER.unpack_from((workdir / "a.qlic").read_bytes())[3] == 6
    (workdir / "a.png").unlink()
    run(["decode", "a.qlic"], 0)
    np.testing.assert_array_equal(read_png((workdir / "a.png").read_bytes()), rgb)
    run(["decode", "a.qlic", "-o", "b.bmp"], 0)
    np.testing.assert_array_equal(np.asarray(Image.open(workdir / "b.bmp")), rgb)


def test_batch_continues_past_bad_files_and_exits_1(api, workdir: Path) -> None:
    write_png(workdir / "a.png")
    (workdir / "bad.png").write_bytes(b"this is not an image")
    write_png(workdir / "c.png")
    result = run(["encode", "a.png", "bad.png", "missing.png", "c.png"], 1)
    lines = error_lines(result)
    assert len(lines) == 2
    assert lines[0].startswith("qlic: error: bad.png: ")
    assert lines[1].startswith("qlic: error: missing.png: ")
    assert (workdir / "a.qlic").exists() and (workdir / "c.qlic").exists()
    assert not (workdir / "bad.qlic").exists()


def test_decode_corrupt_stream_is_one_line(api, workdir: Path) -> None:
    (workdir / "x.qlic").write_bytes(b"garbage")
    result = run(["decode", "x.qlic"], 1)
    assert error_lines(result) == ["qlic: error: x.qlic: not a qlic stream (bad magic)"]
    assert sorted(os.listdir(workdir)) == ["x.qlic"]


def test_decode_max_pixels_and_model_are_passed(api, workdir: Path) -> None:
    write_png(workdir / "a.png", 10, 10)
    run(["encode", "a.png"], 0)
    result = run(["decode", "a.qlic", "--max-pixels", "99", "-o", "out.png"], 1)
    assert "above the limit of 99" in result.stderr
    run(["decode", "a.qlic", "--max-pixels", "100", "-o", "out.png"], 0)
    result = run(["encode", "a.png", "--model", "missing"], 1)
    assert error_lines(result) == ["qlic: error: a.png: no bundled model named 'missing'"]


@pytest.mark.parametrize(
    "args",
    [
        ["encode", "a.png", "b.png", "-o", "single.qlic"],
        ["encode", "a.png", "b.png", "-o", "no-such-dir/"],
        ["encode", "a.png", "-q", "0"],
        ["encode", "a.png", "-q", "9"],
        ["encode", "a.png", "--no-such-option"],
        ["encode"],
        ["encode", "-", "-"],
        ["encode", "a.png", "a.jpg"],
        ["decode", "a.qlic", "-o", "a.xyz"],
        ["decode", "a.qlic", "--max-pixels", "0"],
        ["nonsense"],
    ],
)
def test_usage_errors_exit_2_and_touch_nothing(api, workdir: Path, args: list[str]) -> None:
    write_png(workdir / "a.png")
    write_png(workdir / "b.png")
    before = sorted(os.listdir(workdir))
    run(args, 2)
    assert sorted(os.listdir(workdir)) == before


def test_internal_error_exits_123_without_traceback(api, workdir: Path, monkeypatch) -> None:
    def broken_encode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(api, "encode", broken_encode)
    write_png(workdir / "a.png")
    (workdir / "bad.png").write_bytes(b"junk")
    result = run(["encode", "a.png", "bad.png"], 123)
    assert error_lines(result) == [
        "qlic: internal error: a.png: RuntimeError: boom (re-run with --debug for a traceback)",
        error_lines(result)[1],
    ]
    assert error_lines(result)[1].startswith("qlic: error: bad.png: ")
    assert sorted(os.listdir(workdir)) == ["a.png", "bad.png"]

    result = run(["encode", "a.png", "--debug"], 123)
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: boom" in result.stderr
    assert result.stderr.splitlines()[-1] == "qlic: internal error: a.png: RuntimeError: boom"


def test_keyboard_interrupt_exits_130(api, workdir: Path, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "encode", interrupted)
    write_png(workdir / "a.png")
    write_png(workdir / "b.png")
    result = run(["encode", "a.png", "b.png"], 130)
    assert error_lines(result) == ["qlic: interrupted"]
    assert not (workdir / "a.qlic").exists()


def test_failed_encode_leaves_existing_output_untouched(api, workdir: Path) -> None:
    (workdir / "a.png").write_bytes(b"truncated or not an image")
    (workdir / "a.qlic").write_bytes(b"previous contents")
    run(["encode", "a.png"], 1)
    assert (workdir / "a.qlic").read_bytes() == b"previous contents"
    assert sorted(os.listdir(workdir)) == ["a.png", "a.qlic"]  # no temporary file left

    # On success an existing output is replaced.
    write_png(workdir / "a.png")
    run(["encode", "a.png"], 0)
    assert (workdir / "a.qlic").read_bytes()[:4] == MAGIC


def test_output_equal_to_input_is_refused(api, workdir: Path) -> None:
    write_png(workdir / "a.png")
    before = (workdir / "a.png").read_bytes()
    result = run(["encode", "a.png", "-o", "./a.png"], 1)
    assert error_lines(result)[0].startswith(
        "qlic: error: a.png: the output './a.png' is the input file"
    )
    assert (workdir / "a.png").read_bytes() == before


def test_alpha_policy_reaches_the_cli(api, workdir: Path) -> None:
    rgba = np.full((4, 4, 4), 200, np.uint8)
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(workdir / "t.png")
    result = run(["encode", "t.png"], 1)
    assert "--drop-alpha" in result.stderr and len(error_lines(result)) == 1
    run(["encode", "t.png", "--drop-alpha"], 0)


def test_stdin_to_stdout(api, workdir: Path) -> None:
    rgb = write_png(workdir / "a.png")
    result = run(["encode", "-", "-o", "-"], 0, input=(workdir / "a.png").read_bytes())
    stream = result.stdout_bytes
    assert stream[:4] == MAGIC
    # stdin with no -o also goes to stdout.
    assert run(["encode", "-"], 0, input=(workdir / "a.png").read_bytes()).stdout_bytes == stream
    result = run(["decode", "-"], 0, input=stream)
    np.testing.assert_array_equal(read_png(result.stdout_bytes), rgb)
    assert os.listdir(workdir) == ["a.png"]


def test_stdin_errors_are_named(api, workdir: Path) -> None:
    result = run(["decode", "-"], 1, input=b"nope")
    assert error_lines(result) == ["qlic: error: <stdin>: not a qlic stream (bad magic)"]
    assert result.stdout_bytes == b""


def test_binary_is_not_written_to_a_terminal(api, workdir: Path, monkeypatch) -> None:
    monkeypatch.setattr(cli, "_is_tty", lambda stream: True)
    png = workdir / "a.png"
    write_png(png)
    run(["encode", "-", "-o", "-"], 2, input=png.read_bytes())
    run(["encode", "-", "-o", "-", "-f"], 0, input=png.read_bytes())


def test_json_lines(api, workdir: Path) -> None:
    write_png(workdir / "a.png", 8, 4)
    write_png(workdir / "b.png", 2, 3)
    result = run(["encode", "a.png", "b.png", "--json", "-q", "2"], 0)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["input"] for r in records] == ["a.png", "b.png"]
    assert records[0]["output"] == "a.qlic"
    assert (records[0]["width"], records[0]["height"], records[0]["quality"]) == (4, 8, 2)
    assert records[0]["bytes"] == (workdir / "a.qlic").stat().st_size
    assert records[0]["bpp"] == pytest.approx(records[0]["bytes"] * 8 / 32)
    assert set(records[1]) == {
        "input", "output", "width", "height", "bytes", "bpp", "quality", "seconds"
    }

    result = run(["decode", "a.qlic", "--json"], 0)
    record = json.loads(result.stdout)
    assert (record["output"], record["width"], record["height"]) == ("a.png", 4, 8)

    # With the data on stdout the JSON line moves to stderr.
    result = run(["encode", "-", "--json"], 0, input=(workdir / "b.png").read_bytes())
    assert result.stdout_bytes[:4] == MAGIC
    assert json.loads(result.stderr)["output"] == "-"


def test_several_inputs_into_a_directory(api, workdir: Path) -> None:
    (workdir / "in").mkdir()
    (workdir / "out").mkdir()
    images = {name: write_png(workdir / "in" / f"{name}.png", seed=i)
              for i, name in enumerate(["x", "y", "z"])}
    run(["encode", *(f"in/{n}.png" for n in images), "-o", "out"], 0)
    assert sorted(os.listdir(workdir / "out")) == ["x.qlic", "y.qlic", "z.qlic"]
    run(["decode", "out/x.qlic", "out/y.qlic", "-o", "in"], 0)
    np.testing.assert_array_equal(read_png((workdir / "in" / "y.png").read_bytes()), images["y"])
    # A single input may also go into a directory.
    run(["encode", "in/z.png", "-o", "out/"], 0)


def test_progress_bar_only_on_a_terminal(api, workdir: Path, monkeypatch) -> None:
    write_png(workdir / "a.png")
    write_png(workdir / "b.png")
    assert "encoding" not in run(["encode", "a.png", "b.png"], 0).stderr
    monkeypatch.setattr(cli, "_is_tty", lambda stream: True)
    assert "encoding" in run(["encode", "a.png", "b.png"], 0).stderr


def test_info(api, workdir: Path) -> None:
    write_png(workdir / "a.png", 4, 8)
    run(["encode", "a.png", "-q", "3"], 0)
    (workdir / "bad.qlic").write_bytes(b"xx")
    result = run(["info", "a.qlic", "bad.qlic"], 1)
    assert result.stdout.startswith("a.qlic: 8x4, quality 3 (mse), ")
    assert "model 0123abcd" in result.stdout
    assert error_lines(result) == ["qlic: error: bad.qlic: not a qlic stream (bad magic)"]
    record = json.loads(run(["info", "--json", "a.qlic"], 0).stdout)
    assert record["file"] == "a.qlic" and record["quality"] == 3


def test_help_and_version(api) -> None:
    assert "encode" in run(["-h"], 0).stdout
    assert "--quality" in run(["encode", "--help"], 0).stdout
    assert run(["--version"], 0).stdout.startswith("qlic ")


def _child_env(**extra) -> dict:
    """The environment of a child Python that imports this checkout's qlic_codec."""
    return dict(os.environ, **extra, PYTHONPATH=os.pathsep.join(
        [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))


def test_cli_import_and_help_do_not_load_numba() -> None:
    code = (
        "import sys\n"
        "import qlic_codec.cli as cli\n"
        "assert 'numba' not in sys.modules, 'import'\n"
        "try:\n"
        "    cli.main(['--help'], prog_name='qlic')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "assert 'numba' not in sys.modules, '--help'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=_child_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_unknown_kernel_path_is_a_usage_error(tmp_path) -> None:
    """QLIC_KERNELS with a value qlic does not know is the user's setting to correct: one
    line naming the setting, exit 2, no traceback, and no output file."""
    from PIL import Image
    Image.new("RGB", (8, 8), (40, 90, 160)).save(tmp_path / "a.png")
    done = subprocess.run(
        [sys.executable, "-m", "qlic_codec.cli", "encode", "a.png", "-o", "a.qlic"],
        cwd=tmp_path, env=_child_env(QLIC_KERNELS="vnnii"), capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("qlic: error: QLIC_KERNELS must be "), lines[0]
    assert "'vnnii'" in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "a.qlic").exists()
