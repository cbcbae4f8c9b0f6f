"""Conformance streams of the bundled models and the check that decodes them (``qlic verify``).

``verify()`` decodes every committed stream on every kernel path and thread count of this
machine and compares the pixels with the committed digests; ``generate`` writes the streams
(``python -m qlic_codec.conformance generate``). Importing this package loads neither the
codec nor Numba: ``verify`` does, when called.
"""

from .manifest import FOLDER_ENV, ConformanceError, Entry, folder, read
from .verify import Report, Result, verify

__all__ = ["FOLDER_ENV", "ConformanceError", "Entry", "Report", "Result", "folder", "read",
           "verify"]
