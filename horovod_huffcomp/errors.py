"""Exceptions raised by horovod_huffcomp."""


class PayloadError(ValueError):
    """A payload handed to :func:`decode` or :func:`inspect` is malformed.

    Raised for truncated, corrupted (checksum mismatch), length-lying or otherwise
    inconsistent payloads. The message says which field or check failed.
    """


class NonFiniteError(ValueError):
    """The input tensor holds NaN or Inf and ``nonfinite="raise"`` was asked for."""
