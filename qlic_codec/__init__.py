"""qlic: a learned image codec whose network runs in integers (8-bit weights, 8-bit
activations with 12-bit codes on ten tensors, int16 latents).

The public API is ``encode``, ``encode_to_target``, ``decode``, ``decode_with_metadata``,
``read_info`` and ``Metadata``; they import their modules lazily, so ``import qlic_codec``
stays light (numba is loaded only when a network first runs).
"""

from .container import DEFAULT_MAX_PIXELS
from .errors import (CorruptStreamError, InvalidArgumentError, InvalidImageError,
                     ModelFileError, QlicError, ResourceLimitError, TargetNotMetWarning,
                     UnsupportedError)
from .metadata import Metadata
from .zoo import DEFAULT_QUALITY

__version__ = "0.1.0"


def encode(rgb, quality: float | None = None, model: str | None = None, *,
           metadata: Metadata | None = None, target_size: int | None = None,
           target_bpp: float | None = None) -> bytes:
    """Compress a uint8 (H, W, 3) image at a quality (default 4; 4.5 is fine) or to a
    target size; see ``qlic_codec.api.encode``."""
    from . import api
    return api.encode(rgb, quality, model, metadata=metadata, target_size=target_size,
                      target_bpp=target_bpp)


def encode_to_target(rgb, *, target_size: int | None = None, target_bpp: float | None = None,
                     model: str | None = None, metadata: Metadata | None = None):
    """Compress to the quality whose file is nearest a size; see
    ``qlic_codec.api.encode_to_target`` (returns the file, the quality and whether the
    target was met)."""
    from . import api
    return api.encode_to_target(rgb, target_size=target_size, target_bpp=target_bpp,
                                model=model, metadata=metadata)


def decode(data: bytes, model: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Decompress ``.qlic`` bytes to a uint8 (H, W, 3) image; see ``qlic_codec.api.decode``."""
    from . import api
    return api.decode(data, model, max_pixels)


def decode_with_metadata(data: bytes, model: str | None = None,
                         max_pixels: int = DEFAULT_MAX_PIXELS):
    """``decode`` and the file's ``Metadata``; see ``qlic_codec.api.decode_with_metadata``."""
    from . import api
    return api.decode_with_metadata(data, model, max_pixels)


def read_info(data: bytes) -> dict:
    """Header fields of a ``.qlic`` stream; see ``qlic_codec.api.read_info``."""
    from . import api
    return api.read_info(data)


__all__ = ["encode", "encode_to_target", "decode", "decode_with_metadata", "read_info",
           "Metadata", "TargetNotMetWarning", "QlicError", "InvalidImageError", "InvalidArgumentError",
           "CorruptStreamError", "ModelFileError", "UnsupportedError", "ResourceLimitError",
           "__version__"]
