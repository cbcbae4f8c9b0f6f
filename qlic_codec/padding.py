"""Padding an image to the network's block size and cropping it back, in NumPy alone.

The codec pads every image before its network runs and crops what it decodes; both work on
arrays, so they live apart from the Pillow edge (``imageio``), which only reading and writing
image files needs: encoding an array or decoding a stream does not load Pillow.
"""

import numpy as np

__all__ = ["crop", "pad_to_multiple", "padded_codes"]


def pad_to_multiple(rgb: np.ndarray, multiple: int = 64) -> np.ndarray:
    """Pad the bottom and right edges so that height and width are multiples of ``multiple``.

    The padding repeats the last row and column: a flat continuation costs almost no bits,
    where zeros would add a sharp edge for the codec to spend bits on.

    Args:
        rgb: An array of shape ``(height, width, ...)``.
        multiple: The block size, at least 1.

    Returns:
        The padded array, or ``rgb`` itself when no padding is needed.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be at least 1, got {multiple}")
    if rgb.ndim < 2:
        raise ValueError(f"expected an array of shape (height, width, ...), got {rgb.shape}")
    height, width = rgb.shape[:2]
    pad_bottom = -height % multiple
    pad_right = -width % multiple
    if pad_bottom == 0 and pad_right == 0:
        return rgb
    widths = [(0, pad_bottom), (0, pad_right)] + [(0, 0)] * (rgb.ndim - 2)
    return np.pad(rgb, widths, mode="edge")


def padded_codes(rgb: np.ndarray, lo: int, hi: int, multiple: int = 64) -> np.ndarray:
    """Rows ``lo .. hi - 1`` of ``pad_to_multiple(rgb, multiple)`` as the network's input
    codes ``pixel - 128`` (int8), without padding the whole image: the analysis reads its
    input band by band.

    Args:
        rgb: uint8 (H, W, C).
        lo, hi: rows of the padded image, ``0 <= lo < hi``.
        multiple: the block size of ``pad_to_multiple``.

    Returns:
        int8 (hi - lo, W padded to ``multiple``, C), C-contiguous.
    """
    height, width = rgb.shape[:2]
    padded_width = width + -width % multiple
    out = np.empty((hi - lo, padded_width) + rgb.shape[2:], np.int8)
    # pixel - 128 as int8 is the pixel with its top bit flipped, read as signed.
    top = min(hi, height)
    if lo < top:
        out[: top - lo, :width] = (rgb[lo:top] ^ np.uint8(128)).view(np.int8)
        out[top - lo:, :width] = out[top - lo - 1, :width]
    else:  # a band wholly in the bottom padding repeats the last row
        out[:, :width] = (rgb[height - 1] ^ np.uint8(128)).view(np.int8)
    out[:, width:] = out[:, width - 1: width]
    return out


def crop(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Keep the top-left ``height x width`` pixels (undoes ``pad_to_multiple``).

    Args:
        rgb: An array of shape ``(H, W, ...)`` with ``H >= height`` and ``W >= width``.
        height: Rows to keep, at least 1.
        width: Columns to keep, at least 1.

    Returns:
        A C-contiguous array of shape ``(height, width, ...)``.
    """
    if rgb.ndim < 2:
        raise ValueError(f"expected an array of shape (height, width, ...), got {rgb.shape}")
    if not (1 <= height <= rgb.shape[0] and 1 <= width <= rgb.shape[1]):
        raise ValueError(
            f"cannot crop an array of shape {rgb.shape} to {height}x{width} (height x width)"
        )
    return np.ascontiguousarray(rgb[:height, :width])
