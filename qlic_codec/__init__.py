"""qlic: a learned image codec whose network runs in integers (8-bit weights, 8-bit
activations with 12-bit codes on nine tensors, int16 latents).

The public API is ``encode``, ``decode`` and ``read_info``; they import their modules lazily,
so ``import qlic_codec`` stays light (numba is loaded only when a network first runs).
"""

from .container import DEFAULT_MAX_PIXELS
from .errors import (CorruptStreamError, InvalidArgumentError, InvalidImageError,
                     ModelFileError, QlicError, ResourceLimitError, UnsupportedError)
from .zoo import DEFAULT_QUALITY

__version__ = "0.1.0"


def encode(rgb, quality: int = DEFAULT_QUALITY, model: str | None = None) -> bytes:
    """Compress a uint8 (H, W, 3) image; see ``qlic_codec.api.encode``."""
    from . import api
    return api.encode(rgb, quality, model)


def decode(data: bytes, model: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Decompress ``.qlic`` bytes to a uint8 (H, W, 3) image; see ``qlic_codec.api.decode``."""
    from . import api
    return api.decode(data, model, max_pixels)


def read_info(data: bytes) -> dict:
    """Header fields of a ``.qlic`` stream; see ``qlic_codec.api.read_info``."""
    from . import api
    return api.read_info(data)


__all__ = ["encode", "decode", "read_info", "QlicError", "InvalidImageError", "InvalidArgumentError",
           "CorruptStreamError", "ModelFileError", "UnsupportedError", "ResourceLimitError",
           "__version__"]
