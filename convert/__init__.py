"""The repository's entry to the converter, whose code ships in the wheel as `nanocodec.convert`.

`python -m convert SRC OUT ...` from a checkout runs `nanocodec.convert`; `import convert.archive`
(and the other submodules) gives the very module objects of `nanocodec.convert`, so a test that
patches a limit on one patches it on the other (contracts §3: one implementation).
"""
import sys

from nanocodec import convert as _convert
from nanocodec.convert import archive, cache, converter, identify, keymap, model_card, nemo_config, sources

__version__ = _convert.__version__
for _name, _module in {"archive": archive, "cache": cache, "converter": converter, "identify": identify,
                       "keymap": keymap, "model_card": model_card, "nemo_config": nemo_config,
                       "sources": sources}.items():
    sys.modules[f"{__name__}.{_name}"] = _module
