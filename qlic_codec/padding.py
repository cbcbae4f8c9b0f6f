"""Padding an image to the network's block size and cropping it back, in NumPy alone.

The codec pads every image before its network runs and crops what it decodes; both work on
arrays, so they live apart from the Pillow edge (``imageio``), which only reading and writing
image files needs: encoding an array or decoding a stream does not load Pillow.
"""

import numpy as np

__all__ = ["crop", "pad_to_multiple"]


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
