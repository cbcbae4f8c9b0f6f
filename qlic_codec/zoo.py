"""Bundled models: names, where they live, and the quality levels. Nothing is downloaded.

A model is named (``mse``, ``msssim``) or given as a path to a ``.qlicm`` file. Named models
are looked up in ``$QLIC_MODEL_DIR`` (if set) and then in the ``models/`` folder of the source
tree this package runs from (``pip install -e .``).
"""

import os
from pathlib import Path

from .errors import ModelFileError

MODEL_DIR_ENV = "QLIC_MODEL_DIR"
BUNDLED = {"mse": "qlic-mse.qlicm", "msssim": "qlic-msssim.qlicm"}
DEFAULT_MODEL = "mse"
QUALITY_LEVELS = range(1, 9)
DEFAULT_QUALITY = 4


def model_dirs() -> list[Path]:
    dirs = []
    if os.environ.get(MODEL_DIR_ENV):
        dirs.append(Path(os.environ[MODEL_DIR_ENV]))
    dirs.append(Path(__file__).resolve().parent.parent / "models")
    return dirs


def resolve(model: str | None) -> Path:
    """Path of the model file for a name, a path, or None (the default model)."""
    name = DEFAULT_MODEL if model is None else model
    if name in BUNDLED:
        for folder in model_dirs():
            path = folder / BUNDLED[name]
            if path.is_file():
                return path
        raise ModelFileError(f"bundled model '{name}' ({BUNDLED[name]}) not found in "
                             f"{', '.join(str(d) for d in model_dirs())}; set {MODEL_DIR_ENV}")
    path = Path(name)
    if not path.is_file():
        raise ModelFileError(f"model '{name}' is neither a bundled name "
                             f"({', '.join(BUNDLED)}) nor a file")
    return path


def bundled_paths() -> list[Path]:
    """Every bundled model file present, for finding the model a stream was made with."""
    found = []
    for folder in model_dirs():
        for filename in BUNDLED.values():
            if (folder / filename).is_file():
                found.append(folder / filename)
    return found
