"""Module boundaries of docs/DESIGN.md section 8, checked on the source: who may import what."""

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "qlic_codec"


def _imports(path: Path) -> set[str]:
    text = path.read_text()
    names = re.findall(r"^\s*(?:from|import)\s+([A-Za-z_][\w.]*)", text, flags=re.M)
    return {name.split(".")[0] for name in names}


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def test_torch_only_under_train_and_quantize():
    for path in _modules():
        if "torch" in _imports(path):
            assert _relative(path).startswith(("train/", "quantize/")), _relative(path)


def test_numba_only_under_engine():
    # threads.py sets the kernels' thread count (numba.set_num_threads), and nothing else.
    for path in _modules():
        if {"numba", "llvmlite"} & _imports(path):
            assert _relative(path).startswith("engine/") or _relative(path) == "threads.py", \
                _relative(path)


def test_pillow_only_at_the_image_file_edges():
    # Encoding an array or decoding a stream must not need Pillow (tests/test_api.py runs it).
    for path in _modules():
        if "PIL" in _imports(path):
            assert _relative(path) in ("imageio.py", "pillow.py") or \
                _relative(path).startswith("train/"), _relative(path)


def _package_imports(path: Path) -> set[str]:
    """The qlic_codec modules that ``path`` (one level below the package) imports."""
    text = path.read_text()
    names = set(re.findall(r"^\s*from\s+\.\.(\w+)", text, flags=re.M))
    for group in re.findall(r"^\s*from\s+\.\.\s+import\s+([\w, ]+)", text, flags=re.M):
        names |= {name.strip() for name in group.split(",")}
    names |= set(re.findall(r"^\s*(?:from|import)\s+qlic_codec\.(\w+)", text, flags=re.M))
    return names


def test_engine_knows_nothing_of_files_or_the_command_line():
    outside = {"api", "batch", "cli", "container", "fsio", "imageio", "modelfile", "pillow",
               "zoo"}
    for path in (PACKAGE / "engine").glob("*.py"):
        assert not _package_imports(path) & outside, _relative(path)


def test_constriction_only_in_the_coder():
    for path in _modules():
        if "constriction" in _imports(path):
            assert _relative(path) == "entropy/coder.py", _relative(path)


def test_no_fastmath_and_no_pickle_on_the_codec_path():
    for path in _modules():
        text = path.read_text()
        assert "fastmath" not in text.replace("no fastmath", ""), _relative(path)
        if not _relative(path).startswith(("train/", "quantize/")):
            assert "pickle" not in _imports(path), _relative(path)
