"""Batches of files through the real command line and the real codec (the tiny model):
--threads, -j/--jobs, -r/--recursive, -n/--no-clobber, --max-pixels on encode, --quiet, the
progress bar, and Ctrl-C with worker processes.

Runs of -j 2 start two worker processes that each load the codec, a second or two apiece, so
the tests share few of them.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

import qlic_codec
from conftest import synthetic_photo
from qlic_codec import cli
from qlic_codec import threads as kernel_threads


def qlic(*args: str, exit_code: int) -> Result:
    """The command line in this process, with stdout and stderr apart."""
    result = CliRunner().invoke(cli.main, list(args))
    assert result.exit_code == exit_code, (result.exit_code, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    return result


def qlic_process(*args: str, cwd: Path, env: dict | None = None, **kwargs
                 ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qlic_codec.cli", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300, **kwargs)


def save(path: Path, height: int, width: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(synthetic_photo(height, width, seed)).save(path)


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def without_seconds(stdout: str) -> list[dict]:
    records = [json.loads(line) for line in stdout.splitlines()]
    for record in records:
        record.pop("seconds")
    return records


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """photos/ with images two folders deep, a broken PNG, a text file and a hidden file; the
    current directory is tmp_path."""
    monkeypatch.chdir(tmp_path)
    save(tmp_path / "photos" / "a.png", 40, 56, 0)
    save(tmp_path / "photos" / "trip" / "b.png", 48, 40, 1)
    save(tmp_path / "photos" / "trip" / "day1" / "c.jpg", 33, 70, 2)
    save(tmp_path / "photos" / "trip" / "day1" / "d.png", 64, 64, 3)
    (tmp_path / "photos" / "trip" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (tmp_path / "photos" / "trip" / "notes.txt").write_text("not an image")
    (tmp_path / "photos" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return tmp_path


def test_threads_1_and_2_give_the_same_bytes_and_pixels(tiny_model, tmp_path, monkeypatch):
    if kernel_threads.limit() < 2:
        pytest.skip(f"the kernels may use only {kernel_threads.limit()} thread here")
    monkeypatch.chdir(tmp_path)
    save(tmp_path / "a.png", 96, 136, 5)
    for n in ("1", "2"):
        qlic("encode", "a.png", "-o", f"a{n}.qlic", "--threads", n, "--model", tiny_model,
             exit_code=0)
        qlic("decode", f"a{n}.qlic", "-o", f"a{n}.png", "--threads", n, "--model", tiny_model,
             exit_code=0)
    assert (tmp_path / "a1.qlic").read_bytes() == (tmp_path / "a2.qlic").read_bytes()
    assert (tmp_path / "a1.png").read_bytes() == (tmp_path / "a2.png").read_bytes()
    expected = qlic_codec.decode((tmp_path / "a1.qlic").read_bytes(), tiny_model)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a2.png")), expected)


def test_threads_above_numba_num_threads_is_a_one_line_usage_error(tiny_model, tmp_path):
    save(tmp_path / "a.png", 20, 20, 0)
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    for command in ("encode", "decode"):
        done = qlic_process(command, "a.png", "--threads", "2", "--model", tiny_model,
                            cwd=tmp_path, env=env)
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines() == [
            "qlic: error: --threads 2 is more than the 1 threads the kernels may use here "
            "(NUMBA_NUM_THREADS, or the number of cores when it is unset)"]
    assert sorted(os.listdir(tmp_path)) == ["a.png"]


def test_jobs_2_writes_what_jobs_1_writes_and_reports_in_input_order(tiny_model, tree):
    runs = {}
    for jobs in ("1", "2"):
        result = qlic("encode", "-r", "photos", "-o", f"out{jobs}", "-j", jobs, "--json",
                      "-q", "3", "--model", tiny_model, exit_code=1)
        runs[jobs] = result
    one, two = files_under(tree / "out1"), files_under(tree / "out2")
    assert sorted(one) == ["a.qlic", "trip/b.qlic", "trip/day1/c.qlic", "trip/day1/d.qlic"]
    assert one == two
    for name, data in one.items():
        source = next((tree / "photos" / name).parent.glob(Path(name).stem + ".*"))
        rgb = np.asarray(Image.open(source).convert("RGB"))
        assert data == qlic_codec.encode(rgb, 3, tiny_model), name
    # The same lines, in the order of the inputs: JSON on stdout, notes and errors on stderr.
    assert without_seconds(runs["1"].stdout) == [
        {**r, "output": r["output"].replace("out2", "out1")}
        for r in without_seconds(runs["2"].stdout)]
    assert [r["input"] for r in without_seconds(runs["2"].stdout)] == [
        "photos/a.png", "photos/trip/b.png", "photos/trip/day1/c.jpg", "photos/trip/day1/d.png"]
    assert runs["1"].stderr == runs["2"].stderr
    lines = runs["2"].stderr.splitlines()
    assert lines[:2] == ["qlic: note: photos/.DS_Store: skipped, not an image",
                         "qlic: note: photos/trip/notes.txt: skipped, not an image"]
    assert len(lines) == 3 and lines[2].startswith("qlic: error: photos/trip/broken.png: ")
    assert not [p for p in tree.rglob("*") if p.name.endswith(".tmp")]

    # Decode the tree back with two workers: the pixels every decoder gives.
    result = qlic("decode", "-r", "out2", "-o", "back", "-j", "2", "--model", tiny_model,
                  exit_code=0)
    assert result.stderr == ""
    back = files_under(tree / "back")
    assert sorted(back) == ["a.png", "trip/b.png", "trip/day1/c.png", "trip/day1/d.png"]
    for name in back:
        stream = (tree / "out2" / name).with_suffix(".qlic").read_bytes()
        np.testing.assert_array_equal(np.asarray(Image.open(tree / "back" / name)),
                                      qlic_codec.decode(stream, tiny_model))


def test_recursive_without_o_writes_beside_and_quiet_silences_the_notes(tiny_model, tree):
    result = qlic("encode", "-r", "photos/trip", "--quiet", "--model", tiny_model,
                  exit_code=1)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("qlic: error: photos/trip/broken.png: ")
    assert (tree / "photos" / "trip" / "b.qlic").is_file()
    assert (tree / "photos" / "trip" / "day1" / "c.qlic").is_file()
    assert not (tree / "photos" / "a.qlic").exists()
    # Decoding the .qlic files back beside them skips the images, with a note each.
    (tree / "photos" / "trip" / "broken.png").unlink()
    result = qlic("decode", "-r", "photos/trip", "-o", "pngs", "--model", tiny_model,
                  exit_code=0)
    assert result.stderr.splitlines() == [
        "qlic: note: photos/trip/b.png: skipped, not a .qlic file",
        "qlic: note: photos/trip/day1/c.jpg: skipped, not a .qlic file",
        "qlic: note: photos/trip/day1/d.png: skipped, not a .qlic file",
        "qlic: note: photos/trip/notes.txt: skipped, not a .qlic file",
    ]
    assert sorted(files_under(tree / "pngs")) == ["b.png", "day1/c.png", "day1/d.png"]


@pytest.mark.parametrize("args, message", [
    (["encode", "photos"], "'photos' is a folder; add -r to encode the files in it"),
    (["decode", "photos", "x.qlic"], "'photos' is a folder; add -r to decode the files in it"),
    (["encode", "-r", "photos", "-o", "photos/a.png"],
     "with -r, -o must name a folder, not 'photos/a.png'"),
    (["encode", "-r", "photos", "-o", "-"], "with -r, -o must name a folder, not '-'"),
])
def test_folder_usage_errors_are_one_line(tiny_model, tree, args, message):
    before = files_under(tree)
    result = qlic(*args, "--model", tiny_model, exit_code=2)
    assert result.stderr.splitlines() == [f"qlic: error: {message}"]
    assert files_under(tree) == before


def test_no_clobber_skips_existing_outputs_with_a_note(tiny_model, tree):
    (tree / "out" / "trip").mkdir(parents=True)
    (tree / "out" / "trip" / "b.qlic").write_bytes(b"precious")
    os.symlink("nowhere", tree / "out" / "a.qlic")  # a dangling link is an output too
    (tree / "photos" / "trip" / "broken.png").unlink()
    result = qlic("encode", "-r", "photos", "-o", "out", "-n", "--model", tiny_model,
                  exit_code=0)
    assert result.stderr.splitlines()[-2:] == [
        "qlic: note: photos/a.png: skipped, 'out/a.qlic' exists",
        "qlic: note: photos/trip/b.png: skipped, 'out/trip/b.qlic' exists",
    ]
    assert (tree / "out" / "trip" / "b.qlic").read_bytes() == b"precious"
    assert os.readlink(tree / "out" / "a.qlic") == "nowhere"
    assert (tree / "out" / "trip" / "day1" / "c.qlic").is_file()
    # Without -n the outputs are replaced, as before.
    qlic("encode", "photos/trip/b.png", "-o", "out/trip/b.qlic", "--model", tiny_model,
         exit_code=0)
    assert (tree / "out" / "trip" / "b.qlic").read_bytes()[:4] == b"QLIC"


def test_max_pixels_refuses_a_larger_image_before_encoding(tiny_model, tmp_path,
                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    save(tmp_path / "a.png", 30, 40, 0)
    result = qlic("encode", "a.png", "--max-pixels", "1199", "--model", tiny_model,
                  exit_code=1)
    assert result.stderr.splitlines() == [
        "qlic: error: a.png: image is 40x30 = 1200 pixels, above the limit of 1199"]
    assert not (tmp_path / "a.qlic").exists()
    qlic("encode", "a.png", "--max-pixels", "1200", "--model", tiny_model, exit_code=0)


def test_a_reader_of_stdout_that_goes_away_fails_one_file_and_the_batch_goes_on(tiny_model,
                                                                               tree):
    process = subprocess.Popen(
        [sys.executable, "-m", "qlic_codec.cli", "encode", "-r", "photos/trip/day1", "-o",
         "out", "--json", "-j", "2", "--model", tiny_model], cwd=tree,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # as `| head -0` would
    stderr = process.stderr.read()
    assert process.wait(timeout=300) == 1
    assert stderr == "qlic: error: photos/trip/day1/c.jpg: [Errno 32] Broken pipe\n"
    assert sorted(files_under(tree / "out")) == ["c.qlic", "d.qlic"]


def _stderr_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run qlic with stderr on a pseudo-terminal; its exit status and what it drew there."""
    master, slave = pty.openpty()
    # A new pseudo-terminal is 0 columns wide; a bar has no room there.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "qlic_codec.cli", *args], cwd=cwd,
                               stdout=subprocess.DEVNULL, stderr=slave)
    # This process keeps the terminal open, so what the child wrote stays readable after it
    # exits (a hung-up terminal may drop it).
    chunks = []
    try:
        while True:
            if select.select([master], [], [], 0.1)[0]:
                chunks.append(os.read(master, 4096))
            elif process.poll() is not None:
                break
    finally:
        os.close(slave)
        os.close(master)
    return process.wait(timeout=300), b"".join(chunks).decode(errors="replace")


def test_progress_bar_only_on_a_terminal_and_not_with_quiet(tiny_model, tree):
    args = ["encode", "photos/a.png", "photos/trip/b.png", "-o", "photos", "--model",
            tiny_model]
    status, drawn = _stderr_on_a_terminal(args, tree)
    assert status == 0 and "encoding" in drawn and "2/2" in drawn, drawn
    status, drawn = _stderr_on_a_terminal([*args, "--quiet"], tree)
    assert status == 0 and drawn == ""
    done = qlic_process(*args, cwd=tree)  # stderr is a pipe: no bar
    assert done.returncode == 0 and done.stderr == ""


def _live_processes_in_group(group: int) -> list[int]:
    """Processes of a process group that are running (zombies are finished)."""
    live = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == group and fields[0] != "Z":
            live.append(int(entry))
    return live


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("target", ["the terminal's process group", "the parent only"])
def test_ctrl_c_stops_the_workers_and_leaves_no_temporary_file(tiny_model, tmp_path, target):
    names = [f"p{i:02d}" for i in range(80)]
    for i, name in enumerate(names):
        save(tmp_path / "in" / f"{name}.png", 256, 256, i)
    process = subprocess.Popen(
        [sys.executable, "-m", "qlic_codec.cli", "encode", "-r", "in", "-o", "out", "-j", "2",
         "--model", tiny_model], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    out = tmp_path / "out"
    deadline = time.monotonic() + 240
    while not (out.is_dir() and any(p.suffix == ".qlic" for p in out.iterdir())):
        assert process.poll() is None and time.monotonic() < deadline, "no output came"
        time.sleep(0.01)
    time.sleep(0.05)
    if target == "the parent only":
        os.kill(process.pid, signal.SIGINT)
    else:
        os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr == "qlic: interrupted\n" and stdout == ""
    deadline = time.monotonic() + 30
    while _live_processes_in_group(process.pid):
        assert time.monotonic() < deadline, "a worker is still running"
        time.sleep(0.1)
    written = sorted(p.name for p in out.iterdir())
    assert all(name.endswith(".qlic") for name in written), written  # no temporary file
    assert 0 < len(written) < len(names)
    for name in written[:3]:
        rgb = np.asarray(Image.open(tmp_path / "in" / name.replace(".qlic", ".png")))
        assert (out / name).read_bytes() == qlic_codec.encode(rgb, 4, tiny_model)


def test_a_ctrl_c_inside_a_finalizer_still_interrupts_without_a_traceback():
    # Seen as "Exception ignored in: <function ObjectRef.__del__>" from llvmlite when Ctrl-C
    # came while Numba was loading: the interpreter prints such an interrupt and drops it.
    code = (
        "import sys, time\n"
        "from qlic_codec import cli\n"
        "sys.unraisablehook = cli._deliver_interrupts\n"
        "class Finalized:\n"
        "    def __del__(self):\n"
        "        raise KeyboardInterrupt\n"
        "try:\n"
        "    Finalized()\n"
        "    time.sleep(5)\n"
        "    print('lost')\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout == "interrupted\n" and done.stderr == ""
