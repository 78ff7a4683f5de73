"""`nanocodec.nemo_compat`, the documented name of `nanocodec.compat.nemo` (the same module object)."""
import sys

from .compat import nemo as _module

sys.modules[__name__] = _module
