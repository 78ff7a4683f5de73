"""The exception types of nanocodec's public API (contracts §4).

Every message says what is wrong and how to fix it. No other exception type escapes the
public API for bad input.
"""


class NanoCodecError(Exception):
    """Base of every error nanocodec raises on purpose."""


class InvalidInputError(NanoCodecError, ValueError):
    """Bad audio, tokens, lengths or shapes, or empty items."""


class CheckpointError(NanoCodecError):
    """Missing, unexpected or wrong-shape tensors, a bad config, a file in the wrong format."""


class UnsafeCheckpointError(CheckpointError):
    """Anything that could run code or write outside its place (links, '..', pickled code)."""


class NotSupportedError(NanoCodecError):
    """A valid request this model cannot serve (e.g. streaming a non-causal decoder)."""
