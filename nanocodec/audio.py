"""`nanocodec.audio`, the documented name of `nanocodec.fileio.audio` (the same module object)."""
import sys

from .fileio import audio as _module

sys.modules[__name__] = _module
