"""A second qlic decoder, written from docs/FORMAT.md alone: pure Python and NumPy, slow,
and importing nothing from ``qlic_codec``. Its tests check that it decodes qlic's streams to
exactly qlic's pixels, which checks the document as much as the code.

Modules follow the document's sections: ``modelfile`` (1, 2), ``layers`` (3.1-3.5),
``network`` (3.6-3.9), ``slices`` (2.6, 3.11: the channel-conditional model), ``rangecoder``
and ``symbols`` (4), ``container`` (5 and 5.1: formats 2 and 3), and ``decode`` ties them together.
"""

from .decode import decode  # noqa: F401
from .modelfile import FormatError, Model, read_model  # noqa: F401
