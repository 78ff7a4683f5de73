"""`nanocodec.token_files`, the documented name of `nanocodec.fileio.token_files` (the same module object)."""
import sys

from .fileio import token_files as _module

sys.modules[__name__] = _module
