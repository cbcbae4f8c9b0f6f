"""The exceptions qlic raises. Every failure caused by bad data is a ``QlicError``.

This module imports nothing from qlic so that every layer can use it.
"""


class QlicError(Exception):
    """Base class of every error qlic raises on purpose."""


class InvalidImageError(QlicError):
    """An input image cannot be read or is not acceptable (mode, alpha, size)."""


class CorruptStreamError(QlicError):
    """A ``.qlic`` stream is truncated, corrupt or inconsistent."""


class ModelFileError(QlicError):
    """A model file is missing, corrupt, of the wrong version or fails validation."""


class UnsupportedError(QlicError):
    """A valid request that this version of qlic cannot serve (format version, option)."""


class InvalidArgumentError(QlicError, ValueError):
    """A call with an argument the codec or the model cannot take (quality level, option)."""


class ResourceLimitError(QlicError):
    """An input would need more pixels or memory than the configured limit allows."""


class OutputExistsError(QlicError):
    """An output file exists and the caller asked never to replace one (``--no-clobber``)."""


class TargetNotMetWarning(UserWarning):
    """No quality gives a file within 3% of the size asked for; the nearest was written."""
