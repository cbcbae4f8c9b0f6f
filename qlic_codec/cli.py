"""The ``qlic`` command line: ``encode``, ``decode``, ``info``, ``verify`` (the conformance
streams) and ``batch`` (on Dask).

The contract scripts rely on:

- Exit status: 0 when every file succeeded; 1 when any file failed (bad image, corrupt stream,
  missing model, unwritable output): the batch goes on past it; 2 for a usage error (nothing
  is processed); 123 when qlic hit an internal error (a bug); 130 on Ctrl-C. 123 wins over 1.
- Each failing file prints exactly one line on stderr, ``qlic: error: <file>: <reason>``, or
  ``qlic: internal error: <file>: <type>: <message> (...)`` for a bug; ``--debug`` adds the
  traceback of internal errors. No traceback otherwise.
- ``-`` is binary stdin (as an input) or stdout (as ``-o``). Output files are written to a
  temporary file and renamed, so a failure never leaves a partial file and never damages an
  existing one. An existing output is overwritten, as ``cwebp`` and ``cjxl`` do; an output that
  is the input itself, or two inputs that would write the same output, are refused.
- ``--json`` prints one JSON object per successful file on stdout, or on stderr when some
  output of the batch goes to stdout, so that it never mixes with the binary data. JSON lines
  and error lines come in the order of the inputs, also with ``-j``.
- Binary data is not written to a terminal unless ``-f`` is given (as gzip and zstd do).
- Files that are skipped (not an input of the command, in a folder walked by ``-r``; an
  output that ``-n`` keeps) print one note each on stderr, ``qlic: note: <file>: skipped,
  <why>``, unless ``--quiet``; they are not failures.
- ``-j N`` runs files in N worker processes (``workers.py``); ``--threads`` sets the kernels'
  threads for one file (``threads.py``). Neither changes a byte of any output.

This module must stay light: ``qlic --help`` and ``qlic info`` must not import numba, so the
codec (``qlic_codec.api``) and the image module are imported inside the commands (and inside
the steps that encode or decode one file, which may run in a worker process).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, fields
from types import ModuleType
from typing import Any, Callable, Iterator, NoReturn, Sequence

import click

from qlic_codec import allocator, batch, fsio, workers, zoo
from qlic_codec import quality as quality_grid
from qlic_codec import threads as kernel_threads
from qlic_codec.container import DEFAULT_MAX_PIXELS
from qlic_codec.errors import QlicError
from qlic_codec.workers import Outcome
from qlic_codec.workers import one_line as _one_line

__all__ = ["main"]

STDIO = "-"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 123
EXIT_INTERRUPTED = 130

# --help shows zoo's levels (zoo is light; the codec, qlic_codec.api, must not load for --help);
# the command checks against the codec's QUALITY_LEVELS, which are zoo's.
_QUALITY_HELP = (f"quality, {zoo.QUALITY_LEVELS[0]} (smallest file) to "
                 f"{zoo.QUALITY_LEVELS[-1]} (best picture); fractions such as 4.5 too, "
                 "rounded to the nearest sixteenth (the bundled models' grid)")


class _Quality(click.ParamType):
    """A quality number: an int where it is whole (so JSON says 5, not 5.0), else a float."""

    name = "Q"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a number", param, ctx)
        low, high = zoo.QUALITY_LEVELS[0], zoo.QUALITY_LEVELS[-1]
        if not low <= number <= high:  # NaN fails too
            self.fail(f"{value} is not a quality; choose a number from {low} to {high}",
                      param, ctx)
        return int(number) if number.is_integer() else number


class _Size(click.ParamType):
    """A size in bytes: 50000, 50k, 1.5M, 64KiB (``quality.parse_size``)."""

    name = "SIZE"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return quality_grid.parse_size(value)
        except QlicError as exc:
            self.fail(_one_line(exc), param, ctx)

# The progress bar's label, and why a file of a walked folder is skipped.
_OPS = {"encode": ("encoding", "not an image"), "decode": ("decoding", "not a .qlic file")}

_CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _deliver_interrupts(unraisable: Any) -> None:
    """``sys.unraisablehook``: a Ctrl-C that lands inside a finalizer (llvmlite's, while Numba
    loads or compiles) would be printed as "Exception ignored" with a traceback and then lost;
    raise it in the main thread instead, where the group turns it into exit status 130."""
    if isinstance(unraisable.exc_type, type) and issubclass(unraisable.exc_type,
                                                            KeyboardInterrupt):
        import _thread
        # From another thread, a moment later: raised in this hook, it would only be
        # "ignored" again (threading.Thread.start would wait for the thread, and be hit).
        _thread.start_new_thread(_interrupt_main_soon, ())
        return
    sys.__unraisablehook__(unraisable)


def _interrupt_main_soon() -> None:
    import _thread
    time.sleep(0.01)
    _thread.interrupt_main()


class _QlicGroup(click.Group):
    """A click group that turns Ctrl-C into exit status 130 without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        # click would print "Aborted!" and exit 1; scripts expect 130 (128 + SIGINT).
        sys.unraisablehook = _deliver_interrupts
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("qlic: interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


class _UsageLine(click.UsageError):
    """A usage error printed as one line, ``qlic: error: <message>``, exit status 2."""

    def show(self, file: Any = None) -> None:
        click.echo(f"qlic: error: {self.format_message()}", err=True)


class _Console:
    """stderr notes and errors, and the progress bar they must not break."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._bar: Any = None

    def note(self, message: str) -> None:
        if not self.quiet:
            self.echo(f"qlic: note: {message}", err=True)

    def echo(self, text: str, err: bool) -> None:
        if self._bar is None:
            click.echo(text, err=err)
            return
        # The bar is cleared, the line written, the bar drawn again below it.
        with self._bar.external_write_mode(file=sys.stderr):
            click.echo(text, err=err)

    @contextlib.contextmanager
    def progress(self, total: int, label: str) -> Iterator[Callable[[], None]]:
        """A callable that advances a bar of ``total`` files; the bar shows only for several
        files on a terminal, and never with ``--quiet``."""
        if total < 2 or self.quiet or not _is_tty(sys.stderr):
            yield lambda: None
            return
        from tqdm import tqdm

        # A file takes far longer than a redraw: draw every step (tqdm's default skips
        # updates within 0.1 s of the last, so a fast batch could end without its last count).
        self._bar = tqdm(total=total, desc=label, unit="file", file=sys.stderr, leave=False,
                         disable=False, mininterval=0, miniters=1)
        try:
            yield self._bar.update
        finally:
            self._bar.close()
            self._bar = None


@dataclass
class _Report:
    """Prints what became of each file (an error or a note) and keeps the exit status."""

    debug: bool
    console: _Console
    failures: int = 0
    internal_errors: int = 0

    def run(self, name: str, step: Callable[[], None]) -> None:
        self.record(name, workers.attempt(step))

    def record(self, name: str, outcome: Outcome) -> None:
        warning = outcome.record.get("warning") if isinstance(outcome.record, dict) else None
        if outcome.status == "done" and warning:
            # Not a failure: the file was written (a size target out of the model's reach).
            self.console.echo(f"qlic: warning: {name}: {warning}", err=True)
        if outcome.status == "skipped":
            self.console.note(f"{name}: skipped, {outcome.message}")
        elif outcome.status == "failed":
            self.failures += 1
            self.console.echo(f"qlic: error: {name}: {outcome.message}", err=True)
            if outcome.broken_pipe:
                _silence_stdout()
        elif outcome.status == "internal":
            self.internal_errors += 1
            if self.debug:
                self.console.echo(outcome.traceback.rstrip("\n"), err=True)
                hint = ""
            else:
                hint = " (re-run with --debug for a traceback)"
            self.console.echo(f"qlic: internal error: {name}: {outcome.message}{hint}", err=True)

    @property
    def exit_code(self) -> int:
        if self.internal_errors:
            return EXIT_INTERNAL
        return EXIT_FAILED if self.failures else EXIT_OK


@click.group(cls=_QlicGroup, context_settings=_CONTEXT_SETTINGS)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, param, value: _print_version(ctx, value),
    help="Show the version and exit.",
)
def main() -> None:
    """qlic: a learned image codec whose network runs in integers (8-bit weights, 8-bit and
    12-bit activations).

    \b
    Examples:
      qlic encode photo.png -q 5          # writes photo.qlic
      qlic encode *.png -o out/ --json    # one JSON line per file
      qlic encode -r photos/ -o out/ -j 2 # a folder tree, two files at a time
      qlic decode photo.qlic              # writes photo.png
      cat a.qlic | qlic decode - -o - > a.png
      qlic info photo.qlic
      qlic verify                         # this machine decodes exactly

    Exit status: 0 ok, 1 some file failed, 2 usage error, 123 internal error.
    """
    # This process is qlic's own: keep freed memory for the next band (qlic_codec.allocator).
    allocator.keep_freed_memory()


def _file_options(verb: str, what: str, too_large: str) -> Callable[[Callable], Callable]:
    """The options encode and decode share for batches of files."""
    options = [
        click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS,
                     show_default=True, metavar="N",
                     help=f"Refuse {too_large} more pixels than this, before decoding them."),
        click.option("-r", "--recursive", is_flag=True,
                     help=f"{verb} the {what} in folders given as IN and in their subfolders "
                          "(other files are skipped with a note). With -o DIR the tree is "
                          "mirrored under DIR, created as needed; without -o each output "
                          "goes beside its input."),
        click.option("-n", "--no-clobber", is_flag=True,
                     help="Never replace an existing output: its input is skipped with a "
                          "note, which is not a failure."),
        click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
                     metavar="N",
                     help="Files at once, each in a worker process (no more workers than "
                          "files; '-' runs in this process). JSON and error lines keep the "
                          "order of the inputs."),
        click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Threads the kernels use for one file, at most NUMBA_NUM_THREADS "
                          "(the number of cores when unset); any N gives the same output.  "
                          "[default: all cores; with -j N, cores / N]"),
        click.option("--quiet", is_flag=True,
                     help="No progress bar and no notes; errors still print."),
    ]

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def with_file_options(**kwargs: Any) -> Any:
            files = _FileOptions(**{name: kwargs.pop(name) for name in _FileOptions.names()})
            return command(files=files, **kwargs)

        for option in reversed(options):
            with_file_options = option(with_file_options)
        return with_file_options

    return decorate


@dataclass(frozen=True)
class _FileOptions:
    """The values of ``_file_options``."""

    max_pixels: int
    recursive: bool
    no_clobber: bool
    jobs: int
    threads: int | None
    quiet: bool

    @classmethod
    def names(cls) -> list[str]:
        return [field.name for field in fields(cls)]


@dataclass(frozen=True)
class _FileStep:
    """Encodes or decodes one (input, output) pair and returns its ``--json`` record.
    Picklable (plain fields, module-level classes), so that a worker process can run it;
    the codec is imported where it runs."""

    no_clobber: bool
    make_folders: bool

    def __call__(self, pair: tuple[str, str]) -> dict:
        input_path, output_path = pair
        start = time.perf_counter()
        _refuse_same_file(input_path, output_path)
        if self.no_clobber:
            fsio.refuse_existing(output_path)  # before the work, not only at the write
        output, width, height, stream_bytes, extra = self.convert(
            fsio.read_input(input_path), output_path)
        if self.make_folders:
            fsio.make_parent_folders(output_path)
        fsio.atomic_write(output_path, output, replace=not self.no_clobber)
        return _file_record(input_path, output_path, width, height, stream_bytes, start,
                            **extra)

    def convert(self, data: bytes, output_path: str) -> tuple[bytes, int, int, int, dict]:
        """(output bytes, width, height, size of the stream, extra --json fields)."""
        raise NotImplementedError


@dataclass(frozen=True)
class _EncodeStep(_FileStep):
    quality: int | float
    model: str | None
    drop_alpha: bool
    max_pixels: int
    target_size: int | None = None
    target_bpp: float | None = None
    strip: bool = False

    def convert(self, data: bytes, output_path: str) -> tuple[bytes, int, int, int, dict]:
        # importlib returns whatever sys.modules holds, so tests can substitute the codec.
        api = importlib.import_module("qlic_codec.api")
        imageio = importlib.import_module("qlic_codec.imageio")
        if self.strip:
            rgb = imageio.load_image(data, drop_alpha=self.drop_alpha,
                                     max_pixels=self.max_pixels)
            metadata = None
        else:
            rgb, metadata = imageio.load_image_and_metadata(
                data, drop_alpha=self.drop_alpha, max_pixels=self.max_pixels)
        extra: dict[str, Any] = {}
        if self.target_size is None and self.target_bpp is None:
            stream = api.encode(rgb, quality=self.quality, model=self.model, metadata=metadata)
        else:
            result = api.encode_to_target(rgb, target_size=self.target_size,
                                          target_bpp=self.target_bpp, model=self.model,
                                          metadata=metadata)
            stream = result.data
            extra = {"target_bytes": result.target_bytes, "target_met": result.met}
            if not result.met:
                extra["warning"] = result.describe_miss()
        height, width = rgb.shape[:2]
        # The quality used: a fraction off the model's grid was rounded to it.
        quality = api.read_info(stream)["quality"]
        return stream, width, height, len(stream), {"quality": quality, **extra}


@dataclass(frozen=True)
class _DecodeStep(_FileStep):
    model: str | None
    max_pixels: int

    def convert(self, data: bytes, output_path: str) -> tuple[bytes, int, int, int, dict]:
        api = importlib.import_module("qlic_codec.api")
        imageio = importlib.import_module("qlic_codec.imageio")
        rgb, metadata = api.decode_with_metadata(data, model=self.model,
                                                 max_pixels=self.max_pixels)
        height, width = rgb.shape[:2]
        image = imageio.save_image(rgb, imageio.format_for_path(output_path),
                                   metadata=metadata)
        return image, width, height, len(data), {}


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="IN...",
                type=click.Path(allow_dash=True))
@click.option("-o", "--output", type=click.Path(allow_dash=True),
              help="Output file, '-' for stdout, or an existing directory (which it must be "
                   "with several inputs; with -r, a folder created as needed).  [default: IN "
                   "with the suffix .qlic; stdout for stdin]")
@click.option("-q", "--quality", type=_Quality(), default=None,
              help=f"The {_QUALITY_HELP}.  [default: {zoo.DEFAULT_QUALITY}]")
@click.option("--target-size", type=_Size(), default=None,
              help="Instead of -q: the file size to aim for, in bytes (50000, 50k, 1.5M, "
                   "64KiB). The quality whose file is nearest is chosen; one more than 3% "
                   "away prints a warning (the file is still written).")
@click.option("--target-bpp", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="X",
              help="Instead of -q: the bits per pixel to aim for (file bytes x 8 / pixels), "
                   "as --target-size.")
@click.option("--strip", is_flag=True,
              help="Leave out the image's ICC profile, EXIF and XMP (by default they are "
                   "carried and written back on decode).")
@click.option("--model", metavar="NAME|PATH", default=None,
              help="A bundled model name (e.g. mse, msssim) or the path of a model file.  "
                   "[default: the default bundled model]")
@click.option("--drop-alpha", is_flag=True,
              help="Discard a transparent alpha channel instead of refusing the image.")
@_file_options("Encode", "images", "images with")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON line per file on stdout (stderr when writing to stdout).")
@click.option("-f", "--force", is_flag=True,
              help="Write the stream to stdout even when it is a terminal.")
@click.option("--debug", is_flag=True, help="Print a traceback on an internal error.")
def encode(
    inputs: tuple[str, ...],
    output: str | None,
    quality: int | float | None,
    target_size: int | None,
    target_bpp: float | None,
    strip: bool,
    model: str | None,
    drop_alpha: bool,
    files: _FileOptions,
    as_json: bool,
    force: bool,
    debug: bool,
) -> None:
    """Compress images to .qlic files.

    IN is any image Pillow reads, '-' for stdin, or a folder with -r. Grayscale, palette and
    16-bit images are converted to 8-bit RGB. The EXIF orientation is applied to the pixels,
    and the ICC profile, EXIF (its orientation then reset to 1) and XMP are carried unless
    --strip. An existing output file is replaced, atomically (never with -n).
    """
    ctx = click.get_current_context()
    given = [name for name, value in (("-q", quality), ("--target-size", target_size),
                                      ("--target-bpp", target_bpp)) if value is not None]
    if len(given) > 1:
        raise _UsageLine(f"{' and '.join(given)} exclude each other: give one")
    pairs, left_out = _plan_outputs(inputs, output, "encode", files.recursive)
    _check_threads(files.threads)
    _refuse_binary_to_terminal(pairs, force)
    api = _import_codec_to_run(debug)
    if quality is None:
        quality = api.DEFAULT_QUALITY
    _import_codec("qlic_codec.imageio", debug)
    step = _EncodeStep(files.no_clobber, files.recursive, quality, model, drop_alpha,
                       files.max_pixels, target_size, target_bpp, strip)
    ctx.exit(_run_files(pairs, left_out, step, "encode", files, as_json, debug))


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="IN...",
                type=click.Path(allow_dash=True))
@click.option("-o", "--output", type=click.Path(allow_dash=True),
              help="Output image ('-' for PNG on stdout; format by extension: .png .jpg .webp "
                   ".bmp .tif .ppm), or an existing directory (which it must be with several "
                   "inputs; with -r, a folder created as needed, and the images are PNG).  "
                   "[default: IN with the suffix .png; stdout for stdin]")
@click.option("--model", metavar="NAME|PATH", default=None,
              help="The model the stream was encoded with, when it is not a bundled one.  "
                   "[default: the bundled model the stream names]")
@_file_options("Decode", "streams", "streams whose image has")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON line per file on stdout (stderr when writing to stdout).")
@click.option("-f", "--force", is_flag=True,
              help="Write the image to stdout even when it is a terminal.")
@click.option("--debug", is_flag=True, help="Print a traceback on an internal error.")
def decode(
    inputs: tuple[str, ...],
    output: str | None,
    model: str | None,
    files: _FileOptions,
    as_json: bool,
    force: bool,
    debug: bool,
) -> None:
    """Decompress .qlic files to images.

    IN is a .qlic file, '-' for stdin, or a folder with -r. An existing output file is
    replaced, atomically (never with -n).
    """
    ctx = click.get_current_context()
    pairs, left_out = _plan_outputs(inputs, output, "decode", files.recursive)
    imageio = _import_codec("qlic_codec.imageio", debug)
    for _, output_path in pairs:
        try:
            imageio.format_for_path(output_path)
        except QlicError as exc:
            raise click.BadParameter(_one_line(exc), param_hint="'-o' / '--output'") from None
    _check_threads(files.threads)
    _refuse_binary_to_terminal(pairs, force)
    _import_codec_to_run(debug)
    step = _DecodeStep(files.no_clobber, files.recursive, model, files.max_pixels)
    ctx.exit(_run_files(pairs, left_out, step, "decode", files, as_json, debug))


@main.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...",
                type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line per file.")
@click.option("--debug", is_flag=True, help="Print a traceback on an internal error.")
def info(files: tuple[str, ...], as_json: bool, debug: bool) -> None:
    """Show the header of .qlic files without decoding them ('-' reads stdin).

    Given a .qlicm model file, shows what it is: format, id, metric, levels, entropy model.
    """
    ctx = click.get_current_context()
    if files.count(STDIO) > 1:
        raise click.UsageError("'-' (stdin) can be given only once")
    api = _import_codec("qlic_codec.api", debug)
    report = _Report(debug, _Console(quiet=False))

    def info_one(path: str) -> None:
        fields = api.read_info(fsio.read_input(path))
        if as_json:
            click.echo(_json_line({"file": path, **fields}))
        else:
            click.echo(f"{_display(path)}: {_describe(fields)}")

    for path in files:
        report.run(_display(path), lambda path=path: info_one(path))
    ctx.exit(report.exit_code)


@main.command()
@click.option("--folder", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="The conformance folder.  [default: $QLIC_CONFORMANCE_DIR, else "
                   "conformance/ in the source tree]")
@click.option("--debug", is_flag=True, help="Print a traceback on an internal error.")
def verify(folder: str | None, debug: bool) -> None:
    """Check that this machine decodes the bundled models' conformance streams exactly.

    Decodes every stream of the conformance folder on every kernel path this CPU has, with
    one thread and with the default number, and compares the decoded pixels with the
    committed MD5 and SHA-256. Prints one line per stream, path and thread count, then a
    summary. Exit status 0 only if every decode matched; 1 if one did not, or the manifest,
    a stream or a bundled model is missing or damaged.
    """
    ctx = click.get_current_context()
    conformance = _import_codec("qlic_codec.conformance", debug)
    _import_codec_to_run(debug)

    def show(result: Any) -> None:
        click.echo(result.line())

    try:
        report = conformance.verify(folder, on_result=show)
    except QlicError as exc:
        _fail_now(f"qlic: error: {_one_line(exc)}", EXIT_FAILED)
    click.echo(f"qlic verify: {report.summary()}")
    ctx.exit(EXIT_OK if report.ok else EXIT_FAILED)


@main.group("batch", context_settings=_CONTEXT_SETTINGS)
def batch_group() -> None:
    """Encode or decode many files on a Dask cluster (pip install "qlic[distributed]").

    One task per file, run by the cluster's workers: each reads its input and writes its
    output atomically, so all machines need the same shared file system and paths. Folders
    are walked and their tree mirrored under -o DIR; files whose output exists are skipped,
    so running the same command again resumes a run that stopped. Prints one JSON line per
    file on stdout as the files finish (status done, skipped or failed); exit status 1 if
    any file failed.

    \b
    On a cluster:
      dask scheduler                     # on one machine; listens on tcp://HOST:8786
      dask worker tcp://HOST:8786        # on every machine
      qlic batch encode photos/ -o out/ --scheduler tcp://HOST:8786
    Without --scheduler, a cluster of worker processes runs on this machine. Paths are
    made absolute, in the JSON lines too.
    """


def _cluster_options(command: Callable) -> Callable:
    """The options batch encode and batch decode share."""
    options = [
        click.option("-o", "--output", required=True, metavar="DIR",
                     type=click.Path(file_okay=False),
                     help="The folder the outputs go in (created as needed)."),
        click.option("--model", metavar="NAME|PATH", default=None,
                     help="A bundled model name or a model file path that every worker can "
                          "read.  [default: encode: the default bundled model; decode: the "
                          "one the stream names]"),
        click.option("--scheduler", metavar="ADDRESS", default=None,
                     help="A running Dask scheduler, e.g. tcp://HOST:8786.  [default: start "
                          "a cluster on this machine]"),
        click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Worker processes of the cluster started on this machine.  "
                          "[default: one per core]"),
        click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Threads the kernels use for one file on a worker (at most what "
                          "the worker has).  [default: on this machine, cores / workers; on "
                          "a scheduler's workers, their own default]"),
        click.option("--quiet", is_flag=True, help="No notes; errors still print."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@batch_group.command("encode")
@click.argument("inputs", nargs=-1, required=True, metavar="IN...", type=click.Path())
@click.option("-q", "--quality", type=_Quality(), default=None,
              help=f"The {_QUALITY_HELP}.  [default: {zoo.DEFAULT_QUALITY}]")
@click.option("--target-size", type=_Size(), default=None, metavar="SIZE",
              help="Aim every file at this many bytes (50000, 50k, 1.5M), as with qlic encode.")
@click.option("--target-bpp", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="X", help="Aim every file at X bits per pixel, as --target-size.")
@click.option("--strip", is_flag=True, help="Leave out the ICC profile, EXIF and XMP.")
@click.option("--drop-alpha", is_flag=True,
              help="Discard a transparent alpha channel instead of refusing the image.")
@_cluster_options
def batch_encode(inputs: tuple[str, ...], quality: int | float | None,
                 target_size: int | None, target_bpp: float | None, strip: bool,
                 drop_alpha: bool, **cluster) -> None:
    """Compress images (files, or folders walked recursively) to .qlic files on a cluster.

    A file that misses its size target by more than 3% is written at the nearest quality;
    its JSON line says so ("target_met": false)."""
    given = [name for name, value in (("-q", quality), ("--target-size", target_size),
                                      ("--target-bpp", target_bpp)) if value is not None]
    if len(given) > 1:
        raise _UsageLine(f"{' and '.join(given)} exclude each other: give one")
    quality = zoo.DEFAULT_QUALITY if quality is None else quality
    _run_on_cluster("encode", inputs, quality=quality, drop_alpha=drop_alpha,
                    target_size=target_size, target_bpp=target_bpp, strip=strip, **cluster)


@batch_group.command("decode")
@click.argument("inputs", nargs=-1, required=True, metavar="IN...", type=click.Path())
@_cluster_options
def batch_decode(inputs: tuple[str, ...], **cluster) -> None:
    """Decompress .qlic files (files, or folders walked recursively) to PNG on a cluster."""
    _run_on_cluster("decode", inputs, **cluster)


def _run_on_cluster(op: str, inputs: tuple[str, ...], output: str, scheduler: str | None,
                    workers: int | None, threads: int | None, quiet: bool,
                    **options: Any) -> None:
    ctx = click.get_current_context()
    try:
        distributed = importlib.import_module("dask.distributed")
    except ImportError:
        raise _UsageLine('qlic batch needs Dask: pip install "qlic[distributed]"') from None
    left_out: list[str] = []
    try:
        # Absolute paths: the workers do not run in this folder, nor perhaps on this machine.
        jobs = batch.plan([os.path.abspath(path) for path in inputs], os.path.abspath(output),
                          op, left_out=left_out)
    except ValueError as exc:
        raise _UsageLine(_one_line(exc)) from None
    if threads is not None:
        options["threads"] = threads
    with contextlib.ExitStack() as stack:
        client = None
        if scheduler is not None:
            client = stack.enter_context(_connect(distributed, scheduler))
        console = _Console(quiet)
        for path in left_out:
            console.note(f"{path}: skipped, {_OPS[op][1]}")
        report = _Report(debug=False, console=console)
        try:
            for result in batch.run(jobs, op, client=client, workers=workers, **options):
                click.echo(_json_line(result))
                if result["status"] == "failed":
                    report.record(result["input"], Outcome("failed", result["error"]))
        except Exception as exc:
            # The cluster, not a file: a lost scheduler, workers killed again and again.
            _fail_now(f"qlic: error: the batch stopped: {type(exc).__name__}: "
                      f"{_one_line(exc)}", EXIT_FAILED)
    ctx.exit(report.exit_code)


def _connect(distributed: ModuleType, scheduler: str) -> Any:
    try:
        return distributed.Client(scheduler)
    except ValueError as exc:  # not an address: unknown scheme, no port
        raise _UsageLine(f"--scheduler {scheduler!r}: {_one_line(exc)}") from None
    except OSError as exc:  # TimeoutError included: nothing answers at that address
        _fail_now(f"qlic: error: cannot reach the scheduler {scheduler}: {_one_line(exc)}",
                  EXIT_FAILED)


def _plan_outputs(
    inputs: Sequence[str], output: str | None, op: str, recursive: bool
) -> tuple[list[tuple[str, str]], list[str]]:
    """The (input, output) pairs, and the files of walked folders that are left out."""
    # Every usage problem is found here, before any file is touched.
    if inputs.count(STDIO) > 1:
        raise click.UsageError("'-' (stdin) can be given only once")
    if "" in inputs:
        raise click.UsageError("an input path is empty")
    suffix = batch.default_suffix(op)
    if recursive:
        if output == STDIO or (output is not None and os.path.exists(output)
                               and not os.path.isdir(output)):
            raise _UsageLine(f"with -r, -o must name a folder, not {output!r}")
        output_is_dir = output is not None
    else:
        output_is_dir = output not in (None, STDIO) and os.path.isdir(output)
    if len(inputs) > 1 and output is not None and not output_is_dir:
        raise click.BadParameter(
            f"with several inputs, -o must be an existing directory, not {output!r}",
            param_hint="'-o' / '--output'",
        )
    pairs: list[tuple[str, str]] = []
    left_out: list[str] = []
    for input_path in inputs:
        if input_path != STDIO and os.path.isdir(input_path):
            if not recursive:
                raise _UsageLine(f"{input_path!r} is a folder; add -r to {op} the files in it")
            # The folder's tree goes under -o, or onto itself (each output beside its input).
            jobs, others = batch.mirror(input_path, output if output_is_dir else input_path,
                                        op, suffix)
            pairs.extend((job.input, job.output) for job in jobs)
            left_out.extend(others)
            continue
        if output is None:
            if input_path == STDIO:
                output_path = STDIO
            else:
                output_path = fsio.default_output_path(input_path, suffix)
        elif output_is_dir:
            if input_path == STDIO:
                raise click.UsageError(
                    "stdin has no name to put in the output directory; give -o a file name"
                )
            name = os.path.basename(fsio.default_output_path(input_path, suffix))
            output_path = os.path.join(output, name)
        else:
            output_path = output
        pairs.append((input_path, output_path))

    # Two inputs with the same stem (a.png, a.jpg) would silently overwrite each other.
    writers: dict[str, str] = {}
    for input_path, output_path in pairs:
        if output_path == STDIO:
            continue
        key = os.path.normcase(os.path.realpath(output_path))
        if key in writers:
            raise click.UsageError(
                f"{writers[key]!r} and {input_path!r} would both be written to "
                f"{output_path!r}; {op} them separately or use -o"
            )
        writers[key] = input_path
    return pairs, left_out


def _check_threads(threads: int | None) -> None:
    most = kernel_threads.limit()
    if threads is not None and threads > most:
        raise _UsageLine(f"--threads {threads} is more than the {most} threads the kernels may "
                         "use here (NUMBA_NUM_THREADS, or the number of cores when it is unset)")


def _run_files(
    pairs: list[tuple[str, str]],
    left_out: list[str],
    step: _FileStep,
    op: str,
    files: _FileOptions,
    as_json: bool,
    debug: bool,
) -> int:
    """Run ``step`` on every pair, print what became of each; the exit status."""
    console = _Console(files.quiet)
    report = _Report(debug, console)
    label, not_an_input = _OPS[op]
    for path in left_out:
        console.note(f"{path}: skipped, {not_an_input}")
    if not pairs:
        console.note(f"nothing to {op}")
        return report.exit_code
    jobs = files.jobs
    if any(STDIO in pair for pair in pairs):
        jobs = 1  # a worker process cannot read this process's stdin or write its stdout
    json_to_stderr = _any_stdout(pairs)

    def on_outcome(index: int, outcome: Outcome) -> None:
        if outcome.status == "done" and as_json:
            # A reader of stdout that went away fails this file, as a failed write would.
            printed = workers.attempt(
                lambda: console.echo(_json_line(outcome.record), err=json_to_stderr))
            if printed.status != "done":
                outcome = printed
        report.record(_display(pairs[index][0]), outcome)

    with console.progress(len(pairs), label) as advance:
        workers.run(step, pairs, jobs, files.threads, on_outcome, advance)
    return report.exit_code


def _import_codec(name: str, debug: bool) -> ModuleType:
    # importlib returns whatever sys.modules holds, so tests can substitute the codec.
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        # A missing dependency is an installation problem, not a bug in qlic.
        _fail_now(f"qlic: error: cannot load {name}: {_one_line(exc)}", EXIT_FAILED)
    except QlicError as exc:
        # The environment asked for something qlic refuses (QLIC_KERNELS=typo): the user's
        # setting to correct, as an unknown option would be, not a bug to report.
        _fail_now(f"qlic: error: {_one_line(exc)}", EXIT_USAGE)
    except Exception as exc:
        if debug:
            click.echo(traceback.format_exc(), err=True, nl=False)
        _fail_now(
            f"qlic: internal error: cannot load {name}: {type(exc).__name__}: "
            f"{_one_line(exc)}" + ("" if debug else " (re-run with --debug for a traceback)"),
            EXIT_INTERNAL,
        )


def _import_codec_to_run(debug: bool) -> ModuleType:
    """The codec for a command that runs the network (encode, decode): the engine's kernels,
    and with them Numba, load now, so that a broken installation stops the command before its
    first file."""
    api = _import_codec("qlic_codec.api", debug)
    _import_codec("qlic_codec.engine.kernels", debug)
    _freeze_imports()
    return api


@functools.cache
def _freeze_imports() -> None:
    """Moves every object that exists now (the imports: about 100,000, most of them Numba's,
    which live as long as the process) out of the garbage collector's way, once per process
    (``gc.freeze``): its full collections then scan only what came after. A full collection
    of them took about 32 ms, and a ``qlic decode`` of a 1920x1080 photo ran two; with them
    frozen the command took 1.39-1.58 s against 1.58-1.67 s, the same peak memory
    (``benchmarks/README.md``). The collector still runs, so cycles made later are freed."""
    gc.freeze()


def _fail_now(message: str, code: int) -> NoReturn:
    click.echo(message, err=True)
    raise click.exceptions.Exit(code)


def _refuse_same_file(input_path: str, output_path: str) -> None:
    if fsio.same_file(input_path, output_path):
        raise QlicError(f"the output {output_path!r} is the input file; choose another -o")


def _refuse_binary_to_terminal(pairs: list[tuple[str, str]], force: bool) -> None:
    if not force and _any_stdout(pairs) and _is_tty(sys.stdout):
        raise click.UsageError(
            "refusing to write binary data to a terminal; redirect stdout, give -o FILE, "
            "or pass -f"
        )


def _any_stdout(pairs: list[tuple[str, str]]) -> bool:
    return any(output_path == STDIO for _, output_path in pairs)


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, default=_json_default)


def _json_default(value: Any) -> Any:
    # read_info may hand back numpy integers or tuples of them.
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def _describe_model(fields: dict[str, Any]) -> str:
    parts = [f"qlic model, format {fields.get('format')}", f"id {fields.get('model_id')}",
             str(fields.get("metric")),
             f"quality 1 to {fields.get('top_quality')} in steps of "
             f"1/{fields.get('quality_steps')}",
             f"N={fields.get('N')} M={fields.get('M')}"]
    if fields.get("entropy_model") == "channel-conditional":
        slices = fields.get("slices")
        sizes = "+".join(str(n) for n in slices) if isinstance(slices, list) else str(slices)
        parts.append(f"channel-conditional (slices {sizes}, "
                     f"{fields.get('context_bits')}-bit context codes)")
    else:
        parts.append("hyperprior")
    parts.append(f"{fields.get('bytes')} bytes")
    return ", ".join(parts)


def _describe(fields: dict[str, Any]) -> str:
    if fields.get("kind") == "model":
        return _describe_model(fields)
    parts = [f"{fields.get('width')}x{fields.get('height')}"]
    parts.append(f"quality {fields.get('quality')} ({fields.get('metric')})")
    parts.append(f"{fields.get('bytes')} bytes")
    bpp = fields.get("bpp")
    parts.append(f"{bpp:.4f} bpp" if isinstance(bpp, (int, float)) else f"{bpp} bpp")
    parts.append(f"model {fields.get('model_hash')}")
    lengths = fields.get("stream_lengths")
    if lengths is not None:
        parts.append("streams " + "+".join(str(n) for n in lengths))
    metadata = fields.get("metadata")
    if metadata:
        parts.append("metadata " + " + ".join(f"{name} {size}" for name, size in
                                               metadata.items()))
    return ", ".join(parts)


def _file_record(input_path: str, output_path: str, width: int, height: int, nbytes: int,
                 start: float, **extra) -> dict:
    """The ``--json`` line of one encoded or decoded file; ``nbytes`` is the stream's size."""
    record = {"input": input_path, "output": output_path, "width": width, "height": height,
              "bytes": nbytes, "bpp": _bpp(nbytes, width, height), **extra}
    record["seconds"] = round(time.perf_counter() - start, 4)
    return record


def _bpp(num_bytes: int, width: int, height: int) -> float:
    return round(num_bytes * 8 / (width * height), 6)


def _display(path: str) -> str:
    return "<stdin>" if path == STDIO else path


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _silence_stdout() -> None:
    # The reader of stdout went away (`qlic decode - -o - | head`). Point stdout at devnull so
    # that Python's flush at exit does not print a second error.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass


def _print_version(ctx: click.Context, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"qlic {_version()}")
    ctx.exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qlic")
    except PackageNotFoundError:
        # Running from a source tree that was not pip-installed.
        package = sys.modules.get("qlic_codec")
        return str(getattr(package, "__version__", "unknown"))


if __name__ == "__main__":
    main(prog_name="qlic")
