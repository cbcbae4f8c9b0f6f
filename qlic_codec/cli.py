"""The ``qlic`` command line: ``encode``, ``decode`` and ``info``.

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
  output of the batch goes to stdout, so that it never mixes with the binary data.
- Binary data is not written to a terminal unless ``-f`` is given (as gzip and zstd do).

This module must stay light: ``qlic --help`` and ``qlic info`` must not import numba, so the
codec (``qlic_codec.api``) and the image module are imported inside the commands.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, NoReturn, Sequence

import click

from qlic_codec import fsio, zoo
from qlic_codec.container import DEFAULT_MAX_PIXELS
from qlic_codec.errors import QlicError

__all__ = ["main"]

STDIO = "-"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 123
EXIT_INTERRUPTED = 130

# --help shows zoo's levels (zoo is light; the codec, qlic_codec.api, must not load for --help);
# the command checks against the codec's QUALITY_LEVELS, which are zoo's.
_QUALITY_HELP = (f"quality level, {zoo.QUALITY_LEVELS[0]} (smallest file) to "
                 f"{zoo.QUALITY_LEVELS[-1]} (best picture)")

_CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _QlicGroup(click.Group):
    """A click group that turns Ctrl-C into exit status 130 without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        # click would print "Aborted!" and exit 1; scripts expect 130 (128 + SIGINT).
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("qlic: interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


@dataclass
class _Report:
    """Runs one step per file, prints the one-line errors and keeps the final exit status."""

    debug: bool
    failures: int = 0
    internal_errors: int = 0

    def run(self, name: str, step: Callable[[], None]) -> None:
        try:
            step()
        except QlicError as exc:
            self._failed(name, _one_line(exc), exc)
        except MemoryError:
            self._failed(name, "not enough memory", None)
        except OSError as exc:
            # The environment failed (disk, pipe), not qlic: a failed file, not a bug.
            self._failed(name, _one_line(exc), exc)
        except Exception as exc:
            self.internal_errors += 1
            if self.debug:
                click.echo(traceback.format_exc(), err=True, nl=False)
                hint = ""
            else:
                hint = " (re-run with --debug for a traceback)"
            click.echo(
                f"qlic: internal error: {name}: {type(exc).__name__}: {_one_line(exc)}{hint}",
                err=True,
            )

    @property
    def exit_code(self) -> int:
        if self.internal_errors:
            return EXIT_INTERNAL
        return EXIT_FAILED if self.failures else EXIT_OK

    def _failed(self, name: str, reason: str, exc: BaseException | None) -> None:
        self.failures += 1
        click.echo(f"qlic: error: {name}: {reason}", err=True)
        if _caused_by_broken_pipe(exc):
            _silence_stdout()


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
      qlic decode photo.qlic              # writes photo.png
      cat a.qlic | qlic decode - -o - > a.png
      qlic info photo.qlic

    Exit status: 0 ok, 1 some file failed, 2 usage error, 123 internal error.
    """


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="IN...",
                type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", type=click.Path(allow_dash=True),
              help="Output file, '-' for stdout, or an existing directory (which it must be "
                   "with several inputs).  [default: IN with the suffix .qlic; stdout for "
                   "stdin]")
@click.option("-q", "--quality", type=int, default=None,
              help=f"The {_QUALITY_HELP}.  [default: {zoo.DEFAULT_QUALITY}]")
@click.option("--model", metavar="NAME|PATH", default=None,
              help="A bundled model name (e.g. mse, msssim) or the path of a model file.  "
                   "[default: the default bundled model]")
@click.option("--drop-alpha", is_flag=True,
              help="Discard a transparent alpha channel instead of refusing the image.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON line per file on stdout (stderr when writing to stdout).")
@click.option("-f", "--force", is_flag=True,
              help="Write the stream to stdout even when it is a terminal.")
@click.option("--debug", is_flag=True, help="Print a traceback on an internal error.")
def encode(
    inputs: tuple[str, ...],
    output: str | None,
    quality: int | None,
    model: str | None,
    drop_alpha: bool,
    as_json: bool,
    force: bool,
    debug: bool,
) -> None:
    """Compress images to .qlic files.

    IN is any image Pillow reads, or '-' for stdin. Grayscale, palette and 16-bit images
    are converted to 8-bit RGB. An existing output file is replaced, atomically.
    """
    ctx = click.get_current_context()
    pairs = _plan_outputs(inputs, output, ".qlic")
    _refuse_binary_to_terminal(pairs, force)
    api = _import_codec_to_run(debug)
    if quality is None:
        quality = int(api.DEFAULT_QUALITY)
    elif quality not in api.QUALITY_LEVELS:
        levels = list(api.QUALITY_LEVELS)
        raise click.BadParameter(
            f"{quality} is not a quality level; choose {levels[0]} to {levels[-1]}",
            param_hint="'-q' / '--quality'",
        )
    imageio = _import_codec("qlic_codec.imageio", debug)
    json_to_stderr = _any_stdout(pairs)
    report = _Report(debug)

    def encode_one(input_path: str, output_path: str) -> None:
        start = time.perf_counter()
        _refuse_same_file(input_path, output_path)
        rgb = imageio.load_image(fsio.read_input(input_path), drop_alpha=drop_alpha)
        stream = api.encode(rgb, quality=quality, model=model)
        fsio.atomic_write(output_path, stream)
        if as_json:
            height, width = rgb.shape[:2]
            _emit_json(_file_record(input_path, output_path, width, height, len(stream),
                                    start, quality=quality), json_to_stderr)

    _run_batch(pairs, encode_one, report, "encoding")
    ctx.exit(report.exit_code)


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="IN...",
                type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-o", "--output", type=click.Path(allow_dash=True),
              help="Output image ('-' for PNG on stdout; format by extension: .png .jpg .webp "
                   ".bmp .tif .ppm), or an existing directory (which it must be with several "
                   "inputs).  [default: IN with the suffix .png; stdout for stdin]")
@click.option("--model", metavar="NAME|PATH", default=None,
              help="The model the stream was encoded with, when it is not a bundled one.  "
                   "[default: the bundled model the stream names]")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS,
              show_default=True, help="Refuse streams whose image has more pixels than this.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON line per file on stdout (stderr when writing to stdout).")
@click.option("-f", "--force", is_flag=True,
              help="Write the image to stdout even when it is a terminal.")
@click.option("--debug", is_flag=True, help="Print a traceback on an internal error.")
def decode(
    inputs: tuple[str, ...],
    output: str | None,
    model: str | None,
    max_pixels: int,
    as_json: bool,
    force: bool,
    debug: bool,
) -> None:
    """Decompress .qlic files to images.

    IN is a .qlic file, or '-' for stdin. An existing output file is replaced, atomically.
    """
    ctx = click.get_current_context()
    pairs = _plan_outputs(inputs, output, ".png")
    imageio = _import_codec("qlic_codec.imageio", debug)
    formats = {}
    for _, output_path in pairs:
        try:
            formats[output_path] = imageio.format_for_path(output_path)
        except QlicError as exc:
            raise click.BadParameter(_one_line(exc), param_hint="'-o' / '--output'") from None
    _refuse_binary_to_terminal(pairs, force)
    api = _import_codec_to_run(debug)
    json_to_stderr = _any_stdout(pairs)
    report = _Report(debug)

    def decode_one(input_path: str, output_path: str) -> None:
        start = time.perf_counter()
        _refuse_same_file(input_path, output_path)
        data = fsio.read_input(input_path)
        rgb = api.decode(data, model=model, max_pixels=max_pixels)
        fsio.atomic_write(output_path, imageio.save_image(rgb, formats[output_path]))
        if as_json:
            height, width = rgb.shape[:2]
            _emit_json(_file_record(input_path, output_path, width, height, len(data), start),
                       json_to_stderr)

    _run_batch(pairs, decode_one, report, "decoding")
    ctx.exit(report.exit_code)


@main.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...",
                type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line per file.")
@click.option("--debug", is_flag=True, help="Print a traceback on an internal error.")
def info(files: tuple[str, ...], as_json: bool, debug: bool) -> None:
    """Show the header of .qlic files without decoding them ('-' reads stdin)."""
    ctx = click.get_current_context()
    if files.count(STDIO) > 1:
        raise click.UsageError("'-' (stdin) can be given only once")
    api = _import_codec("qlic_codec.api", debug)
    report = _Report(debug)

    def info_one(path: str) -> None:
        fields = api.read_info(fsio.read_input(path))
        if as_json:
            _emit_json({"file": path, **fields}, to_stderr=False)
        else:
            click.echo(f"{_display(path)}: {_describe(fields)}")

    for path in files:
        report.run(_display(path), lambda path=path: info_one(path))
    ctx.exit(report.exit_code)


def _plan_outputs(
    inputs: Sequence[str], output: str | None, suffix: str
) -> list[tuple[str, str]]:
    # Every usage problem is found here, before any file is touched.
    if inputs.count(STDIO) > 1:
        raise click.UsageError("'-' (stdin) can be given only once")
    if "" in inputs:
        raise click.UsageError("an input path is empty")
    output_is_dir = output not in (None, STDIO) and os.path.isdir(output)
    if len(inputs) > 1 and output is not None and not output_is_dir:
        raise click.BadParameter(
            f"with several inputs, -o must be an existing directory, not {output!r}",
            param_hint="'-o' / '--output'",
        )
    pairs = []
    for input_path in inputs:
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
                f"{output_path!r}; encode them separately or use -o"
            )
        writers[key] = input_path
    return pairs


def _run_batch(
    pairs: list[tuple[str, str]],
    process: Callable[[str, str], None],
    report: _Report,
    label: str,
) -> None:
    if len(pairs) > 1 and _is_tty(sys.stderr):
        with click.progressbar(pairs, label=label, file=sys.stderr) as bar:
            for input_path, output_path in bar:
                report.run(_display(input_path), lambda: process(input_path, output_path))
    else:
        for input_path, output_path in pairs:
            report.run(_display(input_path), lambda: process(input_path, output_path))


def _import_codec(name: str, debug: bool) -> ModuleType:
    # importlib returns whatever sys.modules holds, so tests can substitute the codec.
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        # A missing dependency is an installation problem, not a bug in qlic.
        _fail_now(f"qlic: error: cannot load {name}: {_one_line(exc)}", EXIT_FAILED)
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
    return api


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


def _emit_json(record: dict[str, Any], to_stderr: bool) -> None:
    click.echo(json.dumps(record, default=_json_default), err=to_stderr)


def _json_default(value: Any) -> Any:
    # read_info may hand back numpy integers or tuples of them.
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def _describe(fields: dict[str, Any]) -> str:
    parts = [f"{fields.get('width')}x{fields.get('height')}"]
    parts.append(f"quality {fields.get('quality')} ({fields.get('metric')})")
    parts.append(f"{fields.get('bytes')} bytes")
    bpp = fields.get("bpp")
    parts.append(f"{bpp:.4f} bpp" if isinstance(bpp, (int, float)) else f"{bpp} bpp")
    parts.append(f"model {fields.get('model_hash')}")
    lengths = fields.get("stream_lengths")
    if lengths is not None:
        parts.append("streams " + "+".join(str(n) for n in lengths))
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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _caused_by_broken_pipe(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, BrokenPipeError):
            return True
        exc = exc.__cause__ or exc.__context__
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
